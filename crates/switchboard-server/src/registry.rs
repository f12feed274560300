//! The in-memory view of registered apps and of the keys seen, used for routing and auth on
//! every request. Apps are loaded at start and reloaded after every change (made here, or
//! announced by another node through the store's wake-ups).
//!
//! Keys: a key is looked up in the store the first time it is seen and then served from
//! memory, checked against the store again at most once a minute (so a node that missed a
//! revocation notice stops honouring the key within that). A revocation made here, or
//! announced by another node, empties the cache at once. Uses are recorded in memory and
//! written to the store in batches (`flush_uses`): at most one write per key per minute per
//! node, never on the request path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use switchboard_core::Timestamp;
use switchboard_core::event::App;
use switchboard_store::{KeyHash, KeyOwner, Store, StoreError};

/// How long a cached key is trusted before the store is asked again.
pub const KEY_RECHECK_MS: i64 = 60_000;
/// A key's use is recorded at most this often (per key, per node).
pub const KEY_TOUCH_MS: i64 = 60_000;

struct CachedKey {
    owner: KeyOwner,
    key_id: String,
    checked_at: i64,
    touched_at: AtomicI64,
}

pub struct Registry {
    apps: RwLock<Arc<Vec<App>>>,
    keys: RwLock<HashMap<KeyHash, Arc<CachedKey>>>,
    /// Bumped whenever the key cache is emptied, so a lookup that raced a revocation does
    /// not put the revoked key back.
    generation: AtomicU64,
    /// Key uses not yet written: key id → last use.
    uses: Mutex<HashMap<String, Timestamp>>,
}

impl Registry {
    pub async fn load(store: &dyn Store) -> Result<Registry, StoreError> {
        let apps = store.list_apps().await?;
        Ok(Registry {
            apps: RwLock::new(Arc::new(apps)),
            keys: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            uses: Mutex::new(HashMap::new()),
        })
    }

    /// Reloads the apps and forgets every cached key (keys may have been revoked).
    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        self.forget_keys();
        let apps = store.list_apps().await?;
        *self.apps.write().expect("registry lock") = Arc::new(apps);
        Ok(())
    }

    /// Every app, sorted by id.
    pub fn apps(&self) -> Arc<Vec<App>> {
        self.apps.read().expect("registry lock").clone()
    }

    /// Empties the key cache: the next request with each key asks the store.
    pub fn forget_keys(&self) {
        let mut keys = self.keys.write().expect("registry lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        keys.clear();
    }

    /// The owner of the live key with `hash`, from memory when it was checked recently.
    pub async fn resolve(
        &self,
        store: &dyn Store,
        hash: KeyHash,
        now: Timestamp,
    ) -> Result<Option<KeyOwner>, StoreError> {
        let cached = self.keys.read().expect("registry lock").get(&hash).cloned();
        if let Some(key) = cached
            && now.millis() - key.checked_at < KEY_RECHECK_MS
        {
            self.used(&key, now);
            return Ok(Some(key.owner.clone()));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let Some(grant) = store.resolve_key(hash).await? else {
            self.keys.write().expect("registry lock").remove(&hash);
            return Ok(None);
        };
        let key = Arc::new(CachedKey {
            owner: grant.owner,
            key_id: grant.key_id,
            checked_at: now.millis(),
            touched_at: AtomicI64::new(i64::MIN),
        });
        self.used(&key, now);
        let mut keys = self.keys.write().expect("registry lock");
        if self.generation.load(Ordering::Acquire) == generation {
            keys.insert(hash, key.clone());
        }
        Ok(Some(key.owner.clone()))
    }

    /// Notes a use of `key`, at most once per `KEY_TOUCH_MS`.
    fn used(&self, key: &CachedKey, now: Timestamp) {
        let last = key.touched_at.load(Ordering::Relaxed);
        if now.millis().saturating_sub(last) < KEY_TOUCH_MS {
            return;
        }
        if key
            .touched_at
            .compare_exchange(last, now.millis(), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.uses
                .lock()
                .expect("uses lock")
                .insert(key.key_id.clone(), now);
        }
    }

    /// Writes the key uses noted since the last flush.
    pub async fn flush_uses(&self, store: &dyn Store) -> Result<(), StoreError> {
        let uses: Vec<(String, Timestamp)> = self.uses.lock().expect("uses lock").drain().collect();
        if uses.is_empty() {
            return Ok(());
        }
        store.touch_keys(uses).await
    }
}

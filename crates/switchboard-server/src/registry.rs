//! The in-memory view of registered apps and key hashes, used for routing and auth on every
//! request. Loaded from the store at start and reloaded after every app change made through
//! this server; a key unknown here is looked up in the store before being refused.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use switchboard_core::AppId;
use switchboard_core::event::App;
use switchboard_store::{KeyHash, Store, StoreError};

pub struct Registry {
    apps: RwLock<Arc<Vec<App>>>,
    keys: RwLock<HashMap<KeyHash, AppId>>,
}

impl Registry {
    pub async fn load(store: &dyn Store) -> Result<Registry, StoreError> {
        let apps = store.list_apps().await?;
        Ok(Registry {
            apps: RwLock::new(Arc::new(apps)),
            keys: RwLock::new(HashMap::new()),
        })
    }

    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        let apps = store.list_apps().await?;
        *self.apps.write().expect("registry lock") = Arc::new(apps);
        Ok(())
    }

    /// Every app, sorted by id.
    pub fn apps(&self) -> Arc<Vec<App>> {
        self.apps.read().expect("registry lock").clone()
    }

    pub async fn app_for_key(
        &self,
        store: &dyn Store,
        hash: KeyHash,
    ) -> Result<Option<AppId>, StoreError> {
        if let Some(app) = self.keys.read().expect("registry lock").get(&hash) {
            return Ok(Some(app.clone()));
        }
        let found = store.app_for_key(hash).await?;
        if let Some(app) = &found {
            self.keys
                .write()
                .expect("registry lock")
                .insert(hash, app.clone());
        }
        Ok(found)
    }
}

//! API keys on Redis: resolving a hash, adding, revoking, listing and recording use. Each
//! change is one script (`lua/*_key*.lua`); a revocation tells every node to drop its cached
//! keys. Only SHA-256 hashes of keys are stored.

use std::collections::HashMap;

use switchboard_core::{TenantId, Timestamp};

use super::write::invoke;
use super::{RedisStore, codec, keys, unavailable};
use crate::{KeyGrant, KeyHash, KeyInfo, KeyOwner, NewKey, Result, StoreError};

fn owner_from(stored: &str) -> Result<KeyOwner> {
    if let Some(app) = stored.strip_prefix("app:") {
        return Ok(KeyOwner::App(codec::app_id(app)?));
    }
    if let Some(tenant) = stored.strip_prefix("tenant:") {
        return TenantId::parse(tenant)
            .map(KeyOwner::TenantReader)
            .map_err(|_| StoreError::Internal("stored key owner has an invalid tenant".into()));
    }
    Err(StoreError::Internal("stored key owner is malformed".into()))
}

impl RedisStore {
    pub(super) async fn do_resolve_key(&self, hash: KeyHash) -> Result<Option<KeyGrant>> {
        let mut conn = self.conn()?;
        let mut inv = self.scripts.resolve_key.prepare_invoke();
        inv.arg(codec::hex(&hash.0));
        let found: Vec<String> = invoke(&mut conn, &inv).await?;
        match found.as_slice() {
            [key_id, owner] => Ok(Some(KeyGrant {
                key_id: key_id.clone(),
                owner: owner_from(owner)?,
            })),
            _ => Ok(None),
        }
    }

    pub(super) async fn do_add_key(
        &self,
        owner: KeyOwner,
        key: NewKey,
        now: Timestamp,
    ) -> Result<KeyInfo> {
        let mut conn = self.conn()?;
        let app = match &owner {
            KeyOwner::App(app) => app.as_str(),
            KeyOwner::TenantReader(_) => "",
        };
        let mut inv = self.scripts.add_key.prepare_invoke();
        inv.arg(keys::key_owner(&owner))
            .arg(keys::owner_keys(&owner))
            .arg(&key.key_id)
            .arg(codec::hex(&key.hash.0))
            .arg(now.millis())
            .arg(app);
        let done: i64 = invoke(&mut conn, &inv).await?;
        match (done, owner) {
            (0, KeyOwner::App(app)) => Err(StoreError::UnknownApp(app)),
            _ => Ok(KeyInfo {
                key_id: key.key_id,
                created_at: now,
                last_used_at: None,
            }),
        }
    }

    pub(super) async fn do_revoke_key(&self, owner: KeyOwner, key_id: String) -> Result<()> {
        let mut conn = self.conn()?;
        let mut inv = self.scripts.revoke_key.prepare_invoke();
        inv.arg(&key_id)
            .arg(keys::key_owner(&owner))
            .arg(keys::owner_keys(&owner));
        let done: i64 = invoke(&mut conn, &inv).await?;
        if done == 0 {
            return Err(StoreError::UnknownKey(key_id));
        }
        Ok(())
    }

    pub(super) async fn do_keys(&self, owner: KeyOwner) -> Result<Vec<KeyInfo>> {
        let mut conn = self.conn()?;
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::owner_keys(&owner))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(keys::key(id));
        }
        let hashes: Vec<HashMap<String, String>> =
            pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let millis = |h: &HashMap<String, String>, f: &str| -> Option<Timestamp> {
            h.get(f).and_then(|v| v.parse().ok()).map(Timestamp)
        };
        let mut out: Vec<KeyInfo> = ids
            .into_iter()
            .zip(hashes)
            .filter(|(_, h)| !h.is_empty())
            .map(|(key_id, h)| KeyInfo {
                key_id,
                created_at: millis(&h, "c").unwrap_or(Timestamp(0)),
                last_used_at: millis(&h, "u"),
            })
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.key_id).cmp(&(b.created_at, &b.key_id)));
        Ok(out)
    }

    pub(super) async fn do_touch_keys(&self, used: Vec<(String, Timestamp)>) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let mut inv = self.scripts.touch_keys.prepare_invoke();
        for (key_id, at) in &used {
            inv.arg(key_id).arg(at.millis());
        }
        let _: i64 = invoke(&mut conn, &inv).await?;
        Ok(())
    }
}

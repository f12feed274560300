//! API keys in the `app_keys` table: resolving a hash, adding, revoking, listing and
//! recording use. Only SHA-256 hashes of keys are stored. A tenant reader's key has
//! `app_id` '' and its `tenant` set; an app's key has `tenant` NULL.

use rusqlite::{Connection, OptionalExtension, params};
use switchboard_core::Timestamp;

use super::rows::{self, load_app};
use super::writer::WriteCtx;
use crate::{KeyGrant, KeyHash, KeyInfo, KeyOwner, NewKey, StoreError};

/// The (`app_id`, `tenant`) columns that name `owner`.
fn columns(owner: &KeyOwner) -> (&str, Option<&str>) {
    match owner {
        KeyOwner::App(app) => (app.as_str(), None),
        KeyOwner::TenantReader(tenant) => ("", Some(tenant.as_str())),
    }
}

pub fn resolve(conn: &Connection, hash: KeyHash) -> Result<Option<KeyGrant>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT key_id, app_id, tenant FROM app_keys WHERE hash = ?1 AND revoked_at IS NULL",
    )?;
    let row = stmt
        .query_row(params![&hash.0[..]], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .optional()?;
    let Some((key_id, app, tenant)) = row else {
        return Ok(None);
    };
    let owner = match tenant {
        Some(t) => KeyOwner::TenantReader(rows::tenant(&t)?),
        None => KeyOwner::App(rows::app_id(&app)?),
    };
    Ok(Some(KeyGrant { key_id, owner }))
}

pub fn list(conn: &Connection, owner: &KeyOwner) -> Result<Vec<KeyInfo>, StoreError> {
    let (app, tenant) = columns(owner);
    let mut stmt = conn.prepare_cached(
        "SELECT key_id, created_at, last_used_at FROM app_keys \
         WHERE app_id = ?1 AND tenant IS ?2 AND revoked_at IS NULL ORDER BY created_at, key_id",
    )?;
    let keys = stmt
        .query_map(params![app, tenant], |r| {
            Ok(KeyInfo {
                key_id: r.get(0)?,
                created_at: Timestamp(r.get(1)?),
                last_used_at: r.get::<_, Option<i64>>(2)?.map(Timestamp),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(keys)
}

pub fn add(
    ctx: &mut WriteCtx,
    owner: &KeyOwner,
    key: NewKey,
    now: Timestamp,
) -> Result<KeyInfo, StoreError> {
    let conn = &ctx.conn;
    if let KeyOwner::App(app) = owner
        && load_app(conn, app)?.is_none()
    {
        return Err(StoreError::UnknownApp(app.clone()));
    }
    let (app, tenant) = columns(owner);
    conn.execute(
        "INSERT INTO app_keys (key_id, app_id, tenant, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![key.key_id, app, tenant, &key.hash.0[..], now.millis()],
    )?;
    Ok(KeyInfo {
        key_id: key.key_id,
        created_at: now,
        last_used_at: None,
    })
}

pub fn revoke(
    ctx: &mut WriteCtx,
    owner: &KeyOwner,
    key_id: String,
    now: Timestamp,
) -> Result<(), StoreError> {
    let (app, tenant) = columns(owner);
    let changed = ctx.conn.execute(
        "UPDATE app_keys SET revoked_at = ?4 \
         WHERE key_id = ?1 AND app_id = ?2 AND tenant IS ?3 AND revoked_at IS NULL",
        params![key_id, app, tenant, now.millis()],
    )?;
    if changed == 0 {
        return Err(StoreError::UnknownKey(key_id));
    }
    Ok(())
}

pub fn touch(ctx: &mut WriteCtx, used: Vec<(String, Timestamp)>) -> Result<(), StoreError> {
    let mut stmt = ctx.conn.prepare_cached(
        "UPDATE app_keys SET last_used_at = max(coalesce(last_used_at, 0), ?2) \
         WHERE key_id = ?1 AND revoked_at IS NULL",
    )?;
    for (key_id, at) in used {
        stmt.execute(params![key_id, at.millis()])?;
    }
    Ok(())
}

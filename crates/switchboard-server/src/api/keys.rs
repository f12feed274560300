//! Keys (admin only): an app's keys for rotation, and tenant readers (read-only keys of one
//! tenant, for a tenant's own dashboard). A new key is shown once, in the reply to its
//! creation; listings show key ids and times, never keys. A revocation takes effect on this
//! node at once (the key cache is emptied) and on the others as soon as the store tells them.

use std::sync::Arc;

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use switchboard_core::{AppId, TenantId, Timestamp};
use switchboard_store::{KeyInfo, KeyOwner, NewKey};

use super::json_response;
use crate::State;
use crate::auth::{generate_key, hash_key};
use crate::clock;
use crate::error::ApiError;

#[derive(Serialize)]
struct KeyView<'a> {
    key_id: &'a str,
    created_at: Timestamp,
    last_used_at: Option<Timestamp>,
}

impl<'a> KeyView<'a> {
    fn of(k: &'a KeyInfo) -> KeyView<'a> {
        KeyView {
            key_id: &k.key_id,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
        }
    }
}

fn app_param(state: &State, id: &str) -> Result<AppId, ApiError> {
    let id = AppId::parse(id).map_err(|e| ApiError::field("id", e.0))?;
    if !state.registry.apps().iter().any(|a| a.id == id) {
        return Err(ApiError::not_found(
            "unknown_app",
            format!("unknown app: {id}"),
        ));
    }
    Ok(id)
}

fn tenant_param(tenant: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(tenant).map_err(|e| ApiError::field("tenant", e.0))
}

fn key_id_param(key_id: &str) -> Result<String, ApiError> {
    let ok = !key_id.is_empty()
        && key_id.len() <= 64
        && key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(ApiError::field(
            "key_id",
            "is not a key id: use one from the key listing, like `key_1a2b3c4d5e6f7a8b`",
        ));
    }
    Ok(key_id.to_owned())
}

/// Creates a key for `owner` and returns it, once, with its id.
async fn add(state: &State, owner: KeyOwner) -> Result<(KeyInfo, String), ApiError> {
    let (api_key, key_id) = generate_key();
    let info = state
        .store
        .add_key(
            owner,
            NewKey {
                key_id,
                hash: hash_key(&api_key),
            },
            clock::now(),
        )
        .await?;
    Ok((info, api_key))
}

async fn revoke(state: &State, owner: KeyOwner, key_id: String) -> Result<Response, ApiError> {
    state
        .store
        .revoke_key(owner, key_id.clone(), clock::now())
        .await?;
    state.registry.forget_keys();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "revoked": key_id }),
    ))
}

async fn list(state: &State, owner: KeyOwner) -> Result<Vec<KeyInfo>, ApiError> {
    // Uses noted in memory first, so the listing is current for this node.
    state.registry.flush_uses(&*state.store).await?;
    Ok(state.store.keys(owner).await?)
}

/// `POST /v1/apps/{id}/keys`: another live key for the app (rotation: hand it out, then
/// revoke the old one).
pub async fn add_app_key(
    AxState(state): AxState<Arc<State>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let app = app_param(&state, &id)?;
    let (info, api_key) = add(&state, KeyOwner::App(app.clone())).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({
            "app": app,
            "key_id": info.key_id,
            "api_key": api_key,
            "created_at": info.created_at,
        }),
    ))
}

/// `GET /v1/apps/{id}/keys`: the app's live keys (ids and times).
pub async fn list_app_keys(
    AxState(state): AxState<Arc<State>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let app = app_param(&state, &id)?;
    let keys = list(&state, KeyOwner::App(app.clone())).await?;
    let views: Vec<KeyView> = keys.iter().map(KeyView::of).collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "app": app, "keys": views }),
    ))
}

/// `DELETE /v1/apps/{id}/keys/{key_id}`: revokes one key of the app, at once.
pub async fn revoke_app_key(
    AxState(state): AxState<Arc<State>>,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let app = app_param(&state, &id)?;
    let key_id = key_id_param(&key_id)?;
    revoke(&state, KeyOwner::App(app), key_id).await
}

/// `POST /v1/tenants/{tenant}/readers`: a read-only key for one tenant.
pub async fn add_reader(
    AxState(state): AxState<Arc<State>>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant_param(&tenant)?;
    let (info, api_key) = add(&state, KeyOwner::TenantReader(tenant.clone())).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({
            "tenant": tenant,
            "key_id": info.key_id,
            "api_key": api_key,
            "created_at": info.created_at,
        }),
    ))
}

/// `GET /v1/tenants/{tenant}/readers`: the tenant's live reader keys (ids and times).
pub async fn list_readers(
    AxState(state): AxState<Arc<State>>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant_param(&tenant)?;
    let keys = list(&state, KeyOwner::TenantReader(tenant.clone())).await?;
    let views: Vec<KeyView> = keys.iter().map(KeyView::of).collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "tenant": tenant, "readers": views }),
    ))
}

/// `DELETE /v1/tenants/{tenant}/readers/{key_id}`: revokes a reader key, at once.
pub async fn revoke_reader(
    AxState(state): AxState<Arc<State>>,
    Path((tenant, key_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenant = tenant_param(&tenant)?;
    let key_id = key_id_param(&key_id)?;
    revoke(&state, KeyOwner::TenantReader(tenant), key_id).await
}

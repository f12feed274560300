//! API keys: generation, hashing, and the `Caller` extractor that turns a bearer key into
//! who is calling. Keys are 32 random bytes; only their SHA-256 is stored, and the admin key
//! is compared by digest in constant time.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use switchboard_core::AppId;
use switchboard_store::KeyHash;

use crate::State;
use crate::error::ApiError;

/// Who is calling: decided by the key, never by a request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    App(AppId),
}

impl Caller {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::App(app) => Err(ApiError::forbidden(format!(
                "this needs the admin key; the key you sent belongs to app {app}"
            ))),
        }
    }

    pub fn require_app(&self, what: &str) -> Result<&AppId, ApiError> {
        match self {
            Caller::App(app) => Ok(app),
            Caller::Admin => Err(ApiError::forbidden(format!(
                "{what} needs an app's key: the key decides the app; the admin key belongs to no app"
            ))),
        }
    }
}

pub fn hash_key(key: &str) -> KeyHash {
    KeyHash(Sha256::digest(key.as_bytes()).into())
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source works");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new API key (`sb_` + 64 hex characters) and its key id (`key_` + 16 hex characters).
pub fn generate_key() -> (String, String) {
    (
        format!("sb_{}", random_hex(32)),
        format!("key_{}", random_hex(8)),
    )
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<Arc<State>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Caller, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "missing Authorization header: send `Authorization: Bearer <key>`",
                )
            })?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "malformed Authorization header: use `Authorization: Bearer <key>`",
                )
            })?;
        let hash = hash_key(key);
        if constant_time_eq(&hash.0, &hash_key(&state.config.admin_key).0) {
            return Ok(Caller::Admin);
        }
        match state.registry.app_for_key(&*state.store, hash).await? {
            Some(app) => Ok(Caller::App(app)),
            None => Err(ApiError::unauthorized(
                "unknown or revoked API key: check the key, or ask the admin for a new one",
            )),
        }
    }
}

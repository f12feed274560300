//! API keys and who may call what. Keys are 32 random bytes shown once; only their SHA-256
//! is stored. [`authorize`] is the one place that turns a bearer key into a [`Caller`] and
//! checks it against the route's [`Scope`] (from [`crate::routes::ROUTES`]), before any
//! handler runs; handlers then narrow what the caller sees (its app, its tenant).

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State as AxState};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use switchboard_core::{AppId, TenantId};
use switchboard_store::{KeyHash, KeyOwner};

use crate::State;
use crate::clock;
use crate::error::ApiError;
use crate::routes::Scope;

/// Who is calling: decided by the key, never by a request field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// Everything, but belongs to no app (cannot publish or consume).
    Admin,
    /// Publishes as this app, consumes its deliveries, reads what it published or received.
    App(AppId),
    /// Reads one tenant's events, deliveries and figures; changes nothing.
    TenantReader(TenantId),
}

impl Caller {
    fn of(owner: KeyOwner) -> Caller {
        match owner {
            KeyOwner::App(app) => Caller::App(app),
            KeyOwner::TenantReader(tenant) => Caller::TenantReader(tenant),
        }
    }

    fn describe(&self) -> String {
        match self {
            Caller::Admin => "the admin key".to_owned(),
            Caller::App(app) => format!("the key of app {app}"),
            Caller::TenantReader(t) => format!("a read-only key of tenant {t}"),
        }
    }

    /// Whether `scope` lets this caller in at all (what it then sees is the handler's job).
    pub fn allowed(&self, scope: Scope) -> bool {
        match (scope, self) {
            (Scope::Public | Scope::Read, _) => true,
            (Scope::App, Caller::App(_)) => true,
            (Scope::App, _) => false,
            (Scope::Admin | Scope::AdminOrApp, Caller::Admin) => true,
            (Scope::AdminOrApp, Caller::App(_)) => true,
            (Scope::Admin | Scope::AdminOrApp, _) => false,
        }
    }

    fn refusal(&self, scope: Scope) -> ApiError {
        let needs = match scope {
            Scope::Admin => "the admin key",
            Scope::App => "an app's key (the key decides the app; the admin key belongs to no app)",
            Scope::AdminOrApp => "the admin key or an app's key",
            Scope::Read | Scope::Public => "another key",
        };
        ApiError::forbidden(format!("this needs {needs}; you sent {}", self.describe()))
    }

    pub fn require_app(&self, what: &str) -> Result<&AppId, ApiError> {
        match self {
            Caller::App(app) => Ok(app),
            other => Err(ApiError::forbidden(format!(
                "{what} needs an app's key: the key decides the app; you sent {}",
                other.describe()
            ))),
        }
    }

    /// The app whose view this caller has: `None` for the admin and tenant readers.
    pub fn app(&self) -> Option<&AppId> {
        match self {
            Caller::App(app) => Some(app),
            _ => None,
        }
    }

    /// Refuses (403) a tenant reader asking about another tenant.
    pub fn check_tenant(&self, tenant: &TenantId) -> Result<(), ApiError> {
        match self {
            Caller::TenantReader(own) if own != tenant => Err(ApiError::forbidden(format!(
                "this key reads tenant {own} only"
            ))),
            _ => Ok(()),
        }
    }

    /// The tenant filter to apply: a tenant reader's own tenant (403 if it asked for
    /// another), else what was asked.
    pub fn tenant_filter(&self, asked: Option<TenantId>) -> Result<Option<TenantId>, ApiError> {
        match (self, asked) {
            (Caller::TenantReader(own), None) => Ok(Some(own.clone())),
            (Caller::TenantReader(_), Some(t)) => {
                self.check_tenant(&t)?;
                Ok(Some(t))
            }
            (_, asked) => Ok(asked),
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

/// A new API key (`sb_` + 64 hex characters: 32 random bytes) and its key id (`key_` + 16
/// hex characters).
pub fn generate_key() -> (String, String) {
    (
        format!("sb_{}", random_hex(32)),
        format!("key_{}", random_hex(8)),
    )
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who the bearer key in `headers` belongs to, or a 401.
async fn caller(state: &State, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let header = headers
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
    // The admin key is compared by digest in constant time. App and reader keys are found by
    // their digest in a map: what a timing difference could reveal is about SHA-256
    // digests, which tells nothing about any key.
    if constant_time_eq(&hash.0, &state.admin_hash.0) {
        return Ok(Caller::Admin);
    }
    match state
        .registry
        .resolve(&*state.store, hash, clock::now())
        .await?
    {
        Some(owner) => Ok(Caller::of(owner)),
        None => Err(ApiError::unauthorized(
            "unknown or revoked API key: check the key, or ask the admin for a new one",
        )),
    }
}

/// The route layer of every keyed route: resolves the caller, checks the route's scope and
/// the caller's rate limit, and hands the caller to the handler.
pub async fn authorize(
    AxState((state, scope)): AxState<(Arc<State>, Scope)>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = match caller(&state, req.headers()).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if !caller.allowed(scope) {
        return caller.refusal(scope).into_response();
    }
    if let Some(limiter) = &state.limiter
        && let Err(e) = limiter.take(&caller)
    {
        return e.into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::internal(&"a keyed handler ran on a route without the authorize layer")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_let_in_whom_they_should() {
        let app = Caller::App(AppId::parse("crm").unwrap());
        let reader = Caller::TenantReader(TenantId::parse("acme").unwrap());
        for (scope, admin, by_app, by_reader) in [
            (Scope::Public, true, true, true),
            (Scope::Admin, true, false, false),
            (Scope::App, false, true, false),
            (Scope::AdminOrApp, true, true, false),
            (Scope::Read, true, true, true),
        ] {
            assert_eq!(Caller::Admin.allowed(scope), admin, "{scope:?}");
            assert_eq!(app.allowed(scope), by_app, "{scope:?}");
            assert_eq!(reader.allowed(scope), by_reader, "{scope:?}");
        }
    }

    #[test]
    fn a_reader_is_held_to_its_tenant() {
        let acme = TenantId::parse("acme").unwrap();
        let globex = TenantId::parse("globex").unwrap();
        let reader = Caller::TenantReader(acme.clone());
        assert_eq!(reader.tenant_filter(None).unwrap(), Some(acme.clone()));
        assert_eq!(
            reader.tenant_filter(Some(acme.clone())).unwrap(),
            Some(acme.clone())
        );
        assert_eq!(
            reader
                .tenant_filter(Some(globex.clone()))
                .unwrap_err()
                .status,
            403
        );
        assert!(reader.check_tenant(&globex).is_err());
        assert!(reader.check_tenant(&acme).is_ok());
        assert_eq!(Caller::Admin.tenant_filter(None).unwrap(), None);
    }

    #[test]
    fn keys_are_long_and_random() {
        let (a, id_a) = generate_key();
        let (b, _) = generate_key();
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 64);
        assert_eq!(id_a.len(), 4 + 16);
        assert!(constant_time_eq(&hash_key(&a).0, &hash_key(&a).0));
        assert!(!constant_time_eq(&hash_key(&a).0, &hash_key(&b).0));
    }
}

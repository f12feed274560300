//! The HTTP surface: routes, the JSON body extractor and shared parsing helpers. Handlers are
//! thin: parse and validate, call the store, shape the reply.

mod apps;
mod consume;
mod dead_letters;
mod inspect;
mod publish;
mod stream;
mod tenants;
mod transparency;
mod views;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Query, Request};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use crate::State;
use crate::error::{ApiError, FieldError};

pub fn router(state: Arc<State>) -> Router {
    let limit = state.config.limits.max_body_bytes;
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/v1/apps", post(apps::create).get(apps::list))
        .route("/v1/apps/{id}", axum::routing::patch(apps::update))
        .route("/v1/events", post(publish::publish).get(inspect::list))
        .route("/v1/events/{id}", get(inspect::one))
        .route("/v1/consume", post(consume::consume))
        .route("/v1/ack", post(consume::ack))
        .route("/v1/nack", post(consume::nack))
        .route("/v1/deliveries/{id}/extend", post(consume::extend))
        .route("/v1/dead-letters", get(dead_letters::list))
        .route("/v1/dead-letters/requeue", post(dead_letters::requeue))
        .route(
            "/v1/tenants/{tenant}/unacknowledged",
            get(tenants::unacknowledged),
        )
        .route("/v1/tenants/{tenant}/matrix", get(transparency::matrix))
        .route("/v1/tenants/{tenant}/health", get(transparency::health))
        .route("/v1/matrix", get(transparency::suite_matrix))
        .route("/v1/stats", get(transparency::stats))
        .route("/v1/stream", get(stream::stream))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::not_found(
                "not_found",
                "no such endpoint: see the API reference in the README",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serializes `body` as the JSON reply with `status`.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> axum::response::Response {
    use axum::response::IntoResponse;
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reply serialization failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The raw request body, with a body-size rejection turned into our error shape.
pub struct Body(pub Bytes);

impl FromRequest<Arc<State>> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<State>) -> Result<Body, ApiError> {
        let limit = state.config.limits.max_body_bytes;
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the request body is over the {limit}-byte limit: send fewer events per batch or smaller data"
                ),
            )),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("could not read the request body: {e}"),
            )),
        }
    }
}

/// Parses a JSON body into `T`, naming what is wrong when it does not fit.
pub fn parse_json<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
    what: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let msg = e.to_string();
        // serde_json appends " at line L column C"; keep it, it helps find the spot.
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not a valid {what}: {msg}"),
        )
    })
}

/// An optional JSON body: empty means the defaults.
pub fn parse_json_or_default<T: DeserializeOwned + Default>(
    bytes: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(bytes, what)
}

/// Query parameters, refusing any not in `allowed` (a typo should not silently widen a
/// filter).
pub fn query_params(
    Query(params): Query<HashMap<String, String>>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let unknown: Vec<FieldError> = params
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| FieldError {
            field: k.clone(),
            message: format!(
                "unknown query parameter: the accepted ones are {}",
                allowed.join(", ")
            ),
        })
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::invalid(unknown));
    }
    Ok(params)
}

/// Collects field problems so one reply can name them all.
#[derive(Default)]
pub struct Problems(pub Vec<FieldError>);

impl Problems {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Keeps the value, or records the problem under `field`.
    pub fn check<T>(
        &mut self,
        field: impl Into<String>,
        r: Result<T, switchboard_core::InvalidValue>,
    ) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e.0);
                None
            }
        }
    }

    pub fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(ApiError::invalid(self.0))
    }
}

/// Checks `value` against `min..=max` for `field`, with the limit in the message.
pub fn in_range(problems: &mut Problems, field: &str, value: u64, min: u64, max: u64) {
    if value < min || value > max {
        problems.add(
            field,
            format!("{value} is out of range: use {min} to {max}"),
        );
    }
}

/// The `limit` query parameter: 1 to `max`, `default` when absent.
pub fn page_limit(p: &mut Problems, value: Option<&str>, default: u32, max: u32) -> u32 {
    match value.map(str::parse::<u32>) {
        None => default,
        Some(Ok(n)) if (1..=max).contains(&n) => n,
        Some(_) => {
            p.add("limit", format!("must be a number from 1 to {max}"));
            default
        }
    }
}

/// `GET /metrics`: Prometheus text. Per-app pending and in-flight gauges are read from the
/// store at scrape time.
async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.store.app_activity().await {
        Ok(activity) => {
            for a in activity {
                metrics::gauge!("switchboard_deliveries_pending", "app" => a.app.to_string())
                    .set(a.pending as f64);
                metrics::gauge!("switchboard_deliveries_in_flight", "app" => a.app.to_string())
                    .set(a.in_flight as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read app gauges for /metrics"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::observe::prometheus().render(),
    )
        .into_response()
}

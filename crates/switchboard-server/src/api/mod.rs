//! The HTTP surface: routes, the JSON body extractor and shared parsing helpers. Handlers are
//! thin: parse and validate, call the store, shape the reply.

mod ack_body;
mod apps;
mod bytes;
mod consume;
mod dead_letters;
mod hot;
mod inspect;
mod keys;
mod publish;
mod stream;
mod tenants;
mod transparency;
mod views;

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use self::bytes::opening_brackets;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Query, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use tower_http::catch_panic::{CatchPanic, ResponseForPanic};

use crate::State;
use crate::error::{ApiError, FieldError};
use crate::routes::{ROUTES, Route, Scope};

/// The handler of each route of [`ROUTES`]; a route without one panics at start (and in
/// every test).
fn handler(route: &Route) -> MethodRouter<Arc<State>> {
    match (route.method, route.path) {
        ("GET", "/healthz") => get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        ("GET", "/metrics") => get(metrics),
        ("POST", "/v1/apps") => post(apps::create),
        ("GET", "/v1/apps") => get(apps::list),
        ("PATCH", "/v1/apps/{id}") => patch(apps::update),
        ("POST", "/v1/apps/{id}/keys") => post(keys::add_app_key),
        ("GET", "/v1/apps/{id}/keys") => get(keys::list_app_keys),
        ("DELETE", "/v1/apps/{id}/keys/{key_id}") => delete(keys::revoke_app_key),
        ("POST", "/v1/tenants/{tenant}/readers") => post(keys::add_reader),
        ("GET", "/v1/tenants/{tenant}/readers") => get(keys::list_readers),
        ("DELETE", "/v1/tenants/{tenant}/readers/{key_id}") => delete(keys::revoke_reader),
        ("POST", "/v1/events") => post(publish::publish),
        ("GET", "/v1/events") => get(inspect::list),
        ("GET", "/v1/events/{id}") => get(inspect::one),
        ("POST", "/v1/consume") => post(consume::consume),
        ("POST", "/v1/ack") => post(consume::ack),
        ("POST", "/v1/nack") => post(consume::nack),
        ("POST", "/v1/deliveries/{id}/extend") => post(consume::extend),
        ("GET", "/v1/dead-letters") => get(dead_letters::list),
        ("POST", "/v1/dead-letters/requeue") => post(dead_letters::requeue),
        ("GET", "/v1/tenants/{tenant}/unacknowledged") => get(tenants::unacknowledged),
        ("GET", "/v1/tenants/{tenant}/matrix") => get(transparency::matrix),
        ("GET", "/v1/tenants/{tenant}/health") => get(transparency::health),
        ("GET", "/v1/matrix") => get(transparency::suite_matrix),
        ("GET", "/v1/stats") => get(transparency::stats),
        ("GET", "/v1/stream") => get(stream::stream),
        (method, path) => panic!("route {method} {path} is in ROUTES but has no handler"),
    }
}

/// What serves every connection: the routes, and one panic guard around all of them (a
/// layer on the router would wrap each route on its own, and cost every request a boxed
/// clone and a boxed future per level).
pub type App = CatchPanic<Router, Panicked>;

/// Every route of [`ROUTES`] with its handler behind the `authorize` layer of its scope; a
/// handler that panics answers 500 and the server goes on.
pub fn app(state: Arc<State>) -> App {
    let mut router = Router::new();
    for route in ROUTES {
        let mut endpoint = handler(route);
        if route.scope != Scope::Public {
            endpoint = endpoint.route_layer(axum::middleware::from_fn_with_state(
                (state.clone(), route.scope),
                crate::auth::authorize,
            ));
        }
        router = router.route(route.path, endpoint);
    }
    let router = router
        .fallback(|| async {
            ApiError::not_found(
                "not_found",
                "no such endpoint: see the API reference in the README",
            )
        })
        .with_state(state);
    CatchPanic::custom(router, Panicked)
}

/// The answer to a request whose handler panicked: a 500 that says no more.
#[derive(Clone, Copy)]
pub struct Panicked;

impl ResponseForPanic for Panicked {
    type ResponseBody = axum::body::Body;

    fn response_for_panic(&mut self, _: Box<dyn Any + Send>) -> Response {
        ApiError::internal(&"a handler panicked").into_response()
    }
}

/// How deeply `json` (valid JSON text) nests objects and arrays.
pub fn json_depth(json: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Refuses `data` nested deeper than the `max_data_depth` limit.
pub fn check_depth(p: &mut Problems, field: impl Into<String>, json: &str, max: usize) {
    // Each level opens a bracket: text with no more brackets than the limit (the usual
    // event) cannot nest deeper, so only counting them is needed, not the scan.
    if opening_brackets(json.as_bytes()) <= max {
        return;
    }
    let depth = json_depth(json);
    if depth > max {
        p.add(
            field,
            format!("nests {depth} levels deep; the limit (max_data_depth) is {max}: flatten it"),
        );
    }
}

/// Serializes `body` as the JSON reply with `status`.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> axum::response::Response {
    use axum::response::IntoResponse;
    match serde_json::to_vec(body) {
        Ok(bytes) => json_bytes(status, bytes),
        Err(e) => {
            tracing::error!(error = %e, "reply serialization failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A reply of JSON written already (see hot.rs).
pub fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response()
}

/// The raw request body, with a body-size rejection turned into our error shape.
pub struct Body(pub Bytes);

impl FromRequest<Arc<State>> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<State>) -> Result<Body, ApiError> {
        let limits = &state.config.limits;
        let limit = limits.max_body_bytes;
        let read = tokio::time::timeout(
            limits.body_timeout,
            Limited::new(req.into_body(), limit).collect(),
        );
        match read.await {
            Ok(Ok(collected)) => Ok(Body(collected.to_bytes())),
            Ok(Err(e)) if e.is::<LengthLimitError>() => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the request body is over the {limit}-byte limit (max_body_bytes): send fewer events per batch or smaller data"
                ),
            )),
            Ok(Err(_)) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "could not read the request body: the connection failed or the body was malformed",
            )),
            Err(_) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} ms (body_timeout_ms)",
                    limits.body_timeout.as_millis()
                ),
            )),
        }
    }
}

/// Parses a JSON body into `T`, naming what is wrong when it does not fit.
///
/// The body is checked to be UTF-8 once, whole (a word at a time over ASCII); parsed from bytes,
/// serde_json would check every string and every raw `data` again, one by one (6% of an
/// HTTP worker's instructions on a full cycle, callgrind).
pub fn parse_json<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
    what: &str,
) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!(
                "the body is not a valid {what}: it is not UTF-8 from byte {} on (JSON is UTF-8)",
                e.valid_up_to()
            ),
        )
    })?;
    serde_json::from_str(text).map_err(|e| {
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

/// The name of a field in a problem: `type`, or `events[3].type` in a batch, `acks[3].delivery_id`.
/// Built only when a problem is recorded (formatting names for every item was a quarter of a
/// publish batch's handling, and 5% of an HTTP worker's instructions for the acks in the full
/// cycle).
#[derive(Clone, Copy)]
pub struct ItemField {
    /// The list the item is in.
    pub list: &'static str,
    /// The item's place in `list`; `None` for a body that is the one item itself.
    pub index: Option<usize>,
    pub name: &'static str,
}

impl From<ItemField> for String {
    fn from(f: ItemField) -> String {
        match f.index {
            Some(i) => format!("{}[{i}].{}", f.list, f.name),
            None => f.name.to_owned(),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_problems(json: &str, max: usize) -> Vec<String> {
        let mut p = Problems::default();
        check_depth(&mut p, "data", json, max);
        p.0.into_iter().map(|e| e.message).collect()
    }

    #[test]
    fn data_is_refused_only_when_it_nests_past_the_limit() {
        assert!(depth_problems(r#"{"a":{"b":{}}}"#, 3).is_empty());
        let too_deep = depth_problems(r#"{"a":{"b":{"c":[]}}}"#, 3);
        assert_eq!(too_deep.len(), 1);
        assert!(
            too_deep[0].starts_with("nests 4 levels deep"),
            "{too_deep:?}"
        );
        // Brackets inside strings count for nothing, however many.
        let shallow = format!(r#"{{"a":"{}"}}"#, "[{".repeat(50));
        assert!(depth_problems(&shallow, 3).is_empty());
    }
}

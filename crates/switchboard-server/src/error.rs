//! API errors and the one place that maps every error to an HTTP status and body:
//! `{"error":{"code","message","details"}}`. Messages say what to fix; a 5xx carries only
//! a request id, the cause goes to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchboard_store::StoreError;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<FieldError>,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
        }
    }

    /// A 400 about one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::invalid(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// A 400 listing every bad field; the message names the first.
    pub fn invalid(details: Vec<FieldError>) -> ApiError {
        let message = match details.as_slice() {
            [] => "the request is invalid".to_owned(),
            [one] => format!("{}: {}", one.field, one.message),
            [first, rest @ ..] => format!(
                "{}: {} (and {} more problem{})",
                first.field,
                first.message,
                rest.len(),
                if rest.len() == 1 { "" } else { "s" }
            ),
        };
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "validation_failed",
            message,
            details,
            retry_after: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A 429 saying when to come back.
    pub fn rate_limited(retry_after_secs: u64, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        e.retry_after = Some(retry_after_secs);
        e
    }

    /// A 500 carrying only a request id; the cause goes to the log under that id.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        let request_id = crate::auth::random_hex(8);
        tracing::error!(%request_id, %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error, request id {request_id}: the cause is in the server log"),
        )
    }

    /// A 503 for a store that cannot answer now: the client gets a request id and a hint,
    /// the log gets the detail (which may name hosts, files or database errors).
    fn unavailable(cause: &dyn std::fmt::Display) -> ApiError {
        let request_id = crate::auth::random_hex(8);
        tracing::warn!(%request_id, %cause, "store unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!(
                "the storage is unavailable right now, request id {request_id}: try again shortly"
            ),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let (status, code) = match &e {
            StoreError::UnknownApp(_) => (StatusCode::NOT_FOUND, "unknown_app"),
            StoreError::UnknownKey(_) => (StatusCode::NOT_FOUND, "unknown_key"),
            StoreError::AppExists(_) => (StatusCode::CONFLICT, "app_exists"),
            StoreError::UnknownDelivery(_) => (StatusCode::NOT_FOUND, "unknown_delivery"),
            StoreError::NotInFlight { .. } => (StatusCode::CONFLICT, "not_in_flight"),
            StoreError::LeaseLost { .. } => (StatusCode::CONFLICT, "lease_lost"),
            StoreError::NotDead { .. } => (StatusCode::CONFLICT, "not_dead"),
            StoreError::InvalidCursor => {
                return ApiError::field("cursor", e.to_string());
            }
            StoreError::Closed => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            StoreError::Unavailable(_) => return ApiError::unavailable(&e),
            StoreError::Internal(_) => return ApiError::internal(&e),
        };
        ApiError::new(status, code, e.to_string())
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    details: &'a [FieldError],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                details: &self.details,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

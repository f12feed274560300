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
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
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

    fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        let request_id = crate::auth::random_hex(8);
        tracing::error!(%request_id, %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error, request id {request_id}: the cause is in the server log"),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let (status, code) = match &e {
            StoreError::UnknownApp(_) => (StatusCode::NOT_FOUND, "unknown_app"),
            StoreError::AppExists(_) => (StatusCode::CONFLICT, "app_exists"),
            StoreError::UnknownDelivery(_) => (StatusCode::NOT_FOUND, "unknown_delivery"),
            StoreError::NotInFlight { .. } => (StatusCode::CONFLICT, "not_in_flight"),
            StoreError::LeaseLost { .. } => (StatusCode::CONFLICT, "lease_lost"),
            StoreError::NotDead { .. } => (StatusCode::CONFLICT, "not_dead"),
            StoreError::InvalidCursor => {
                return ApiError::field("cursor", e.to_string());
            }
            StoreError::Closed => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "store unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
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
        (self.status, axum::Json(body)).into_response()
    }
}

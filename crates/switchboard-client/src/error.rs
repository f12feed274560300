//! The one error type of the SDK and the parsing of the server's error bodies.
//! It must not retry, log or otherwise act on errors; callers decide what an error means.

use serde::{Deserialize, Serialize};

/// Everything that can go wrong when talking to a switchboard server.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The server answered with a non-2xx status.
    ///
    /// `code` and `message` come from the server's `{"error":{..}}` body. When the body is not
    /// in that shape (a proxy's HTML page, say), `code` is `"http_error"` and `message` holds
    /// the start of the body (or the status' reason phrase when the body is empty).
    #[error("{status} {code}: {message}")]
    Api {
        /// The HTTP status code.
        status: u16,
        /// Machine-readable error code, e.g. `validation_failed`.
        code: String,
        /// Human-readable message.
        message: String,
        /// Per-field problems; empty when the server sent none.
        details: Vec<FieldError>,
    },
    /// The request did not get a response: connection refused, timeout, reset, ...
    #[error("transport error: {0}")]
    Transport(String),
    /// A 2xx response whose body could not be decoded into the expected shape.
    #[error("cannot decode response: {0}")]
    Decode(String),
}

impl Error {
    /// The HTTP status of an [`Error::Api`], `None` for other variants.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's error code of an [`Error::Api`], `None` for other variants.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// One field-level problem reported by the server, e.g. `events[0].type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Path of the offending field in the request body.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorInner,
}

#[derive(Deserialize)]
struct ErrorInner {
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Option<Vec<FieldError>>,
}

/// How much of an unparseable error body ends up in [`Error::Api::message`].
const MAX_RAW_MESSAGE: usize = 200;

/// Builds the [`Error::Api`] for a non-2xx response with `status` and `body`.
pub(crate) fn api_error(status: u16, body: &[u8]) -> Error {
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        return Error::Api {
            status,
            code: parsed.error.code,
            message: parsed.error.message,
            details: parsed.error.details.unwrap_or_default(),
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        hyper::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("unexpected status")
            .to_lowercase()
    } else {
        truncate(text, MAX_RAW_MESSAGE)
    };
    Error::Api {
        status,
        code: "http_error".to_owned(),
        message,
        details: Vec::new(),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_error_body() {
        let body = br#"{"error":{"code":"validation_failed","message":"bad event",
            "details":[{"field":"events[0].type","message":"must not be empty"}]}}"#;
        let err = api_error(422, body);
        assert_eq!(
            err,
            Error::Api {
                status: 422,
                code: "validation_failed".into(),
                message: "bad event".into(),
                details: vec![FieldError {
                    field: "events[0].type".into(),
                    message: "must not be empty".into(),
                }],
            }
        );
        assert_eq!(err.to_string(), "422 validation_failed: bad event");
        assert_eq!(err.status(), Some(422));
        assert_eq!(err.code(), Some("validation_failed"));
    }

    #[test]
    fn details_may_be_absent_empty_or_null() {
        for body in [
            r#"{"error":{"code":"not_found","message":"no such event"}}"#,
            r#"{"error":{"code":"not_found","message":"no such event","details":[]}}"#,
            r#"{"error":{"code":"not_found","message":"no such event","details":null}}"#,
        ] {
            let err = api_error(404, body.as_bytes());
            assert_eq!(err.to_string(), "404 not_found: no such event");
            let Error::Api { details, .. } = err else {
                panic!("expected an api error");
            };
            assert!(details.is_empty());
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let body = br#"{"error":{"code":"conflict","message":"lease lost","extra":1},"trace":"x"}"#;
        assert_eq!(api_error(409, body).to_string(), "409 conflict: lease lost");
    }

    #[test]
    fn non_json_body_becomes_http_error() {
        let err = api_error(502, b"<html>bad gateway</html>");
        assert_eq!(err.to_string(), "502 http_error: <html>bad gateway</html>");
    }

    #[test]
    fn empty_body_uses_reason_phrase() {
        assert_eq!(
            api_error(503, b"").to_string(),
            "503 http_error: service unavailable"
        );
        assert_eq!(
            api_error(599, b"  ").to_string(),
            "599 http_error: unexpected status"
        );
    }

    #[test]
    fn long_body_is_truncated_on_a_char_boundary() {
        let body = "é".repeat(300);
        let Error::Api { message, .. } = api_error(500, body.as_bytes()) else {
            panic!("expected an api error");
        };
        assert!(message.ends_with('…'));
        assert!(message.len() <= MAX_RAW_MESSAGE + '…'.len_utf8());
    }

    #[test]
    fn other_variants_display() {
        assert_eq!(
            Error::Transport("connection refused".into()).to_string(),
            "transport error: connection refused"
        );
        assert_eq!(
            Error::Decode("expected value".into()).to_string(),
            "cannot decode response: expected value"
        );
        assert_eq!(Error::Decode(String::new()).status(), None);
    }
}

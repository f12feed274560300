//! What a consumer handler returns when it fails, and how that failure should be retried.
//! It must not talk to the server; the consumer turns it into a nack.

use std::fmt;

/// A failed delivery handler: its message becomes the nack's `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// What went wrong; stored by the server as the attempt's error.
    pub message: String,
    /// Retry after this long instead of the app's backoff.
    pub retry_in_ms: Option<u64>,
    /// Do not retry: the delivery goes dead.
    pub permanent: bool,
}

impl HandlerError {
    /// A failure retried per the app's backoff.
    pub fn new(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            retry_in_ms: None,
            permanent: false,
        }
    }

    /// A failure that must not be retried.
    pub fn permanent(message: impl Into<String>) -> HandlerError {
        HandlerError {
            permanent: true,
            ..HandlerError::new(message)
        }
    }

    /// Asks for the next attempt after `ms` milliseconds.
    pub fn retry_in(mut self, ms: u64) -> Self {
        self.retry_in_ms = Some(ms);
        self
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        HandlerError::new(message)
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        HandlerError::new(message)
    }
}

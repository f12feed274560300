//! The wall clock, read in one place so that everything else takes `now` as a value.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use switchboard_core::Timestamp;

pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp(ms)
}

/// The monotonic clock, for rate limits.
pub fn instant() -> Instant {
    Instant::now()
}

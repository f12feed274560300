//! From the store's counters to the health rules' inputs: one channel's figures at `now`.
//! Shared by the health endpoints and the alert watcher, so both judge alike.

use std::collections::HashMap;

use switchboard_core::health::ChannelFigures;
use switchboard_core::{AppId, Timestamp};
use switchboard_store::{AppActivity, ChannelStats};

/// How long each app has not consumed (`None`: never), from the store's activity.
pub fn silence(activity: &[AppActivity], now: Timestamp) -> HashMap<&AppId, Option<u64>> {
    activity
        .iter()
        .map(|a| (&a.app, a.last_consumed_at.map(|at| now.since(at))))
        .collect()
}

pub fn figures(
    c: &ChannelStats,
    now: Timestamp,
    silent: &HashMap<&AppId, Option<u64>>,
) -> ChannelFigures {
    ChannelFigures {
        source: c.source.to_string(),
        target: c.target.to_string(),
        acked_in_window: c.acknowledged,
        failed_attempts_in_window: c.failed_attempts,
        failures_last_hour: c.failures_last_hour,
        pending: c.pending,
        in_flight: c.in_flight,
        oldest_open_ms: c.oldest_open_at.map(|at| now.since(at)),
        target_silent_ms: silent.get(&c.target).copied().flatten(),
    }
}

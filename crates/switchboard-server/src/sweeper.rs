//! The lease sweeper: a background worker that returns expired leases to pending (or dead),
//! in bounded batches, waking at the earliest lease deadline. Owned by `run`'s JoinSet and
//! stopped by the shutdown token; it never holds a request open. Paced: while a backlog of
//! expired leases lasts, it rests twice as long as each batch took, so it never takes more
//! than about a third of the store's writer from the requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use switchboard_core::Timestamp;
use tokio::sync::Notify;

use crate::{State, clock};

/// Leases expired per store call: small enough that a request queued behind one batch waits
/// a few milliseconds at most.
const BATCH: usize = 500;
/// The sweeper looks at least this often, for leases it was not told about.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Lets lease handlers tell the sweeper about a deadline earlier than its next wake-up.
#[derive(Default)]
pub struct Signal {
    next_wake: AtomicI64,
    notify: Notify,
}

impl Signal {
    pub fn lease_deadline(&self, deadline: Timestamp) {
        if deadline.millis() < self.next_wake.load(Ordering::Acquire) {
            self.notify.notify_one();
        }
    }
}

pub async fn run(state: Arc<State>) {
    let signal = &state.sweeper;
    loop {
        let now = clock::now();
        let started = std::time::Instant::now();
        let next_deadline = match state.store.expire_leases(now, BATCH).await {
            Ok(expired) => {
                if expired.count > 0 {
                    tracing::debug!(count = expired.count, "expired leases");
                    state.wake.wake(&expired.apps);
                    state.observe.changed(&expired.changes, true, now);
                }
                if expired.count == BATCH {
                    // More are waiting: go again after resting twice as long as the batch
                    // took, so publishes and acks keep about two thirds of the writer.
                    tokio::select! {
                        _ = state.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(2 * started.elapsed()) => {}
                    }
                    continue;
                }
                expired.next_deadline
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease sweep failed");
                None
            }
        };
        let max_wake = now.plus_ms(MAX_SLEEP.as_millis() as u64);
        let wake_at = next_deadline.map_or(max_wake, |d| d.min(max_wake));
        signal.next_wake.store(wake_at.millis(), Ordering::Release);
        let sleep = Duration::from_millis(wake_at.since(clock::now()));
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(sleep) => {}
            _ = signal.notify.notified() => {}
        }
    }
}

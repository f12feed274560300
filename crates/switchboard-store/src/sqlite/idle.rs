//! How the writer waits for its next job: on the CPU for a moment while it is lightly loaded,
//! else asleep. Must not block, and must never spin while the writer is busy.
//!
//! A writer that sleeps as soon as its queue is empty is woken by the next job, and on a
//! virtual machine that wake-up is tens of microseconds, several times per event (a
//! publish, a lease, an ack). A lightly loaded writer has time to spare, so it first polls
//! its queue for a moment ([`DEFAULT_SPIN`] unless configured), yielding the core to any
//! other runnable thread at every poll. Under load the writer rarely waits, and every core it
//! would spin on is wanted by the HTTP workers that feed it, so it spins only while its
//! recent busy share is low.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest the writer polls its queue before sleeping, unless configured otherwise.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(200);
/// The period over which the writer's busy share is measured.
const WINDOW: Duration = Duration::from_millis(100);
/// The writer spins only while it was busy at most this share of the last window.
const LIGHT: f64 = 0.35;

/// The writer's busy share over the last full window, from the time it spent waiting.
#[derive(Debug)]
pub struct Load {
    window_start: Instant,
    waited: Duration,
    light: bool,
}

impl Load {
    pub fn new(now: Instant) -> Load {
        Load {
            window_start: now,
            waited: Duration::ZERO,
            light: false,
        }
    }

    /// Records a wait for a job that ended at `now`.
    pub fn waited(&mut self, waited: Duration, now: Instant) {
        self.waited += waited;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < WINDOW {
            return;
        }
        let busy = elapsed.saturating_sub(self.waited);
        self.light = busy.as_secs_f64() <= LIGHT * elapsed.as_secs_f64();
        self.window_start = now;
        self.waited = Duration::ZERO;
    }

    /// Whether the last full window was light enough to spin in.
    pub fn light(&self) -> bool {
        self.light
    }
}

/// Since when the writer has been waiting with nothing to do (no group open, no fsync under
/// way), for the callers that queue its jobs (`SqliteStore::together`).
#[derive(Debug)]
pub struct IdleSince {
    epoch: Instant,
    /// When the wait began, in nanoseconds after `epoch`; [`BUSY`] while the writer has
    /// something to do.
    since: AtomicU64,
}

const BUSY: u64 = u64::MAX;

impl IdleSince {
    pub fn new(epoch: Instant) -> IdleSince {
        IdleSince {
            epoch,
            since: AtomicU64::new(BUSY),
        }
    }

    /// The writer began waiting with nothing to do at `now`.
    pub fn waiting(&self, now: Instant) {
        let since = now.saturating_duration_since(self.epoch).as_nanos();
        self.since
            .store(u64::try_from(since).unwrap_or(BUSY - 1), Ordering::Relaxed);
    }

    /// The writer has something to do.
    pub fn busy(&self) {
        self.since.store(BUSY, Ordering::Relaxed);
    }

    /// How long the writer has been waiting with nothing to do at `now`, if it is.
    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        match self.since.load(Ordering::Relaxed) {
            BUSY => None,
            since => Some(
                now.saturating_duration_since(self.epoch)
                    .saturating_sub(Duration::from_nanos(since)),
            ),
        }
    }
}

/// Polls `try_next` until it yields something or `limit` has passed (at least once), yielding
/// the core between polls.
pub fn spin<T>(limit: Duration, mut try_next: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + limit;
    loop {
        if let Some(next) = try_next() {
            return Some(next);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_is_idle_from_its_wait_until_it_is_busy() {
        let t0 = Instant::now();
        let idle = IdleSince::new(t0);
        let later = |us| t0 + Duration::from_micros(us);
        assert_eq!(idle.idle_for(later(10)), None, "busy until it first waits");
        idle.waiting(later(100));
        assert_eq!(idle.idle_for(later(250)), Some(Duration::from_micros(150)));
        assert_eq!(idle.idle_for(later(50)), Some(Duration::ZERO));
        idle.busy();
        assert_eq!(idle.idle_for(later(300)), None);
    }

    /// Feeds `Load` one window as waits of `waited_ms` each ending `every_ms` apart, and
    /// returns whether it then counts as light.
    fn check_load(every_ms: u64, waited_ms: u64) -> bool {
        let t0 = Instant::now();
        let mut load = Load::new(t0);
        let mut t = t0;
        while t.duration_since(t0) <= WINDOW {
            t += Duration::from_millis(every_ms);
            load.waited(Duration::from_millis(waited_ms), t);
        }
        load.light()
    }

    #[test]
    fn a_writer_that_mostly_waits_is_light() {
        assert!(check_load(10, 9), "busy 10%");
        assert!(check_load(10, 7), "busy 30%");
    }

    #[test]
    fn a_busy_writer_is_not_light() {
        assert!(!check_load(10, 5), "busy 50%");
        assert!(!check_load(10, 0), "never waits");
    }

    #[test]
    fn a_new_writer_sleeps_until_it_has_measured_a_window() {
        let t0 = Instant::now();
        let mut load = Load::new(t0);
        load.waited(Duration::from_millis(50), t0 + Duration::from_millis(50));
        assert!(!load.light());
    }

    #[test]
    fn spin_returns_what_arrives_and_gives_up_when_nothing_does() {
        let mut polls = 0;
        let got = spin(Duration::from_secs(60), || {
            polls += 1;
            (polls == 3).then_some("job")
        });
        assert_eq!(got, Some("job"));
        assert_eq!(polls, 3);
        assert_eq!(spin(DEFAULT_SPIN, || None::<()>), None);
        let mut polls = 0;
        let none = spin(Duration::ZERO, || {
            polls += 1;
            None::<()>
        });
        assert_eq!((none, polls), (None, 1), "no spin: one poll");
    }
}

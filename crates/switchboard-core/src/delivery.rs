//! The delivery state machine: pending → in_flight → acknowledged, with failures going back to
//! pending (after a backoff) or to dead. Stores apply these rules; they do not invent others.

use std::fmt;

use serde::Serialize;

use crate::event::AppSettings;
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for a consumer, possibly until a retry time.
    Pending,
    /// Leased to a consumer until a deadline.
    InFlight,
    /// Done; the consumer may have left ack data.
    Acknowledged,
    /// Out of attempts, or failed permanently: in the dead-letter list.
    Dead,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Pending,
        DeliveryStatus::InFlight,
        DeliveryStatus::Acknowledged,
        DeliveryStatus::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::InFlight => "in_flight",
            DeliveryStatus::Acknowledged => "acknowledged",
            DeliveryStatus::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A stable small integer for storage.
    pub fn code(self) -> i64 {
        match self {
            DeliveryStatus::Pending => 0,
            DeliveryStatus::InFlight => 1,
            DeliveryStatus::Acknowledged => 2,
            DeliveryStatus::Dead => 3,
        }
    }

    pub fn from_code(code: i64) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|st| st.code() == code)
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one attempt ended. An attempt still leased has no outcome yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Acknowledged,
    Failed,
    TimedOut,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Acknowledged => "acknowledged",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::TimedOut => "timed_out",
        }
    }

    pub fn parse(s: &str) -> Option<AttemptOutcome> {
        [
            AttemptOutcome::Acknowledged,
            AttemptOutcome::Failed,
            AttemptOutcome::TimedOut,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The consumer said no. `retry_in_ms` overrides the backoff for this attempt; `permanent`
    /// sends the delivery straight to the dead letters.
    Nack {
        retry_in_ms: Option<u64>,
        permanent: bool,
    },
    /// The lease ran out without an ack or nack.
    LeaseExpired,
}

impl Failure {
    pub fn outcome(self) -> AttemptOutcome {
        match self {
            Failure::Nack { .. } => AttemptOutcome::Failed,
            Failure::LeaseExpired => AttemptOutcome::TimedOut,
        }
    }
}

/// What happens to a delivery after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Back to pending, available again at this time.
    Retry {
        at: Timestamp,
    },
    Dead,
}

impl AfterFailure {
    pub fn status(self) -> DeliveryStatus {
        match self {
            AfterFailure::Retry { .. } => DeliveryStatus::Pending,
            AfterFailure::Dead => DeliveryStatus::Dead,
        }
    }
}

/// The rule after a failure of attempt number `attempts` (1-based, the one that just failed,
/// counted since the delivery was last requeued: a requeue gives a fresh budget):
/// dead on a permanent nack or once `max_attempts` are used, else a retry after the policy's
/// backoff (or the nack's `retry_in_ms`).
pub fn after_failure(
    attempts: u32,
    failure: Failure,
    settings: &AppSettings,
    now: Timestamp,
    jitter: f64,
) -> AfterFailure {
    if let Failure::Nack {
        permanent: true, ..
    } = failure
    {
        return AfterFailure::Dead;
    }
    if attempts >= settings.max_attempts {
        return AfterFailure::Dead;
    }
    let delay = match failure {
        Failure::Nack {
            retry_in_ms: Some(ms),
            ..
        } => ms,
        _ => settings.retry.delay_ms(attempts, jitter),
    };
    AfterFailure::Retry {
        at: now.plus_ms(delay),
    }
}

/// The transitions a store may make. Anything else is a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Lease,
    Ack,
    Fail(AfterFailure),
    Requeue,
}

/// The status after `transition` from `from`, or `None` when the transition is not allowed
/// from there (ack of a delivery that is not in flight, requeue of one that is not dead...).
pub fn next_status(from: DeliveryStatus, transition: Transition) -> Option<DeliveryStatus> {
    use DeliveryStatus::*;
    match (from, transition) {
        (Pending, Transition::Lease) => Some(InFlight),
        (InFlight, Transition::Ack) => Some(Acknowledged),
        (InFlight, Transition::Fail(after)) => Some(after.status()),
        (Dead, Transition::Requeue) => Some(Pending),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::RetryPolicy;
    use DeliveryStatus::*;

    fn settings(max_attempts: u32) -> AppSettings {
        AppSettings {
            max_attempts,
            retry: RetryPolicy::Schedule(vec![1000, 5000]),
        }
    }

    #[test]
    fn the_happy_path() {
        assert_eq!(next_status(Pending, Transition::Lease), Some(InFlight));
        assert_eq!(next_status(InFlight, Transition::Ack), Some(Acknowledged));
    }

    #[test]
    fn only_allowed_transitions() {
        let retry = Transition::Fail(AfterFailure::Retry { at: Timestamp(5) });
        let all = [
            Transition::Lease,
            Transition::Ack,
            retry,
            Transition::Fail(AfterFailure::Dead),
            Transition::Requeue,
        ];
        let mut allowed = Vec::new();
        for from in DeliveryStatus::ALL {
            for t in all {
                if let Some(to) = next_status(from, t) {
                    allowed.push((from, to));
                }
            }
        }
        assert_eq!(
            allowed,
            [
                (Pending, InFlight),
                (InFlight, Acknowledged),
                (InFlight, Pending),
                (InFlight, Dead),
                (Dead, Pending)
            ]
        );
    }

    #[test]
    fn failures_back_off_then_die() {
        let s = settings(3);
        let now = Timestamp(10_000);
        let nack = Failure::Nack {
            retry_in_ms: None,
            permanent: false,
        };
        assert_eq!(
            after_failure(1, nack, &s, now, 0.0),
            AfterFailure::Retry {
                at: Timestamp(11_000)
            }
        );
        assert_eq!(
            after_failure(2, Failure::LeaseExpired, &s, now, 0.0),
            AfterFailure::Retry {
                at: Timestamp(15_000)
            }
        );
        assert_eq!(after_failure(3, nack, &s, now, 0.0), AfterFailure::Dead);
    }

    #[test]
    fn nack_overrides() {
        let s = settings(8);
        let now = Timestamp(0);
        let soon = Failure::Nack {
            retry_in_ms: Some(42),
            permanent: false,
        };
        assert_eq!(
            after_failure(1, soon, &s, now, 0.5),
            AfterFailure::Retry { at: Timestamp(42) }
        );
        let permanent = Failure::Nack {
            retry_in_ms: Some(42),
            permanent: true,
        };
        assert_eq!(
            after_failure(1, permanent, &s, now, 0.0),
            AfterFailure::Dead
        );
    }

    #[test]
    fn status_codes_round_trip() {
        for st in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::from_code(st.code()), Some(st));
            assert_eq!(DeliveryStatus::parse(st.as_str()), Some(st));
        }
    }
}

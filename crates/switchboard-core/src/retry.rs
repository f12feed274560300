//! Retry policy: how long a delivery waits before its next attempt after a failure.
//! Jitter is an input (a number in `[0, 1)`), never drawn here.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::ids::InvalidValue;
use crate::time::{format_duration_ms, parse_duration_ms};

/// Up to this fraction of each delay is taken off at random, so that consumers failing
/// together do not retry together.
pub const JITTER_FRACTION: f64 = 0.2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryPolicy {
    /// `initial_ms`, doubled after each failure, capped at `max_ms`.
    Exponential { initial_ms: u64, max_ms: u64 },
    /// An explicit list; the last delay repeats.
    Schedule(Vec<u64>),
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::Exponential {
            initial_ms: 1000,
            max_ms: 600_000,
        }
    }
}

impl RetryPolicy {
    /// The delay before the attempt after failed attempt number `failed_attempt` (1-based),
    /// with `jitter` in `[0, 1)` removing up to [`JITTER_FRACTION`] of it.
    pub fn delay_ms(&self, failed_attempt: u32, jitter: f64) -> u64 {
        let n = failed_attempt.max(1);
        let base = match self {
            RetryPolicy::Exponential { initial_ms, max_ms } => {
                let shift = (n - 1).min(40);
                initial_ms.saturating_mul(1u64 << shift).min(*max_ms)
            }
            RetryPolicy::Schedule(delays) => {
                let i = (n as usize - 1).min(delays.len().saturating_sub(1));
                delays.get(i).copied().unwrap_or(0)
            }
        };
        let jitter = jitter.clamp(0.0, 1.0);
        base - (base as f64 * JITTER_FRACTION * jitter) as u64
    }

    /// `exponential 1s..10m` or a list `1s,5s,30s,2m,10m`.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let s = s.trim();
        if let Some(range) = s.strip_prefix("exponential") {
            let bad = || {
                InvalidValue(format!(
                    "`{s}` is not a backoff: write `exponential 1s..10m` or a list like `1s,5s,30s`"
                ))
            };
            let (from, to) = range.trim().split_once("..").ok_or_else(bad)?;
            let initial_ms = parse_duration_ms(from)?;
            let max_ms = parse_duration_ms(to)?;
            if initial_ms == 0 || max_ms < initial_ms {
                return Err(InvalidValue(format!(
                    "`{s}`: the first delay must be above zero and not above the cap"
                )));
            }
            return Ok(RetryPolicy::Exponential { initial_ms, max_ms });
        }
        let delays: Vec<u64> = s
            .split(',')
            .map(parse_duration_ms)
            .collect::<Result<_, _>>()?;
        if delays.len() > 100 {
            return Err(InvalidValue("a backoff list has at most 100 delays".into()));
        }
        Ok(RetryPolicy::Schedule(delays))
    }
}

impl fmt::Display for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryPolicy::Exponential { initial_ms, max_ms } => write!(
                f,
                "exponential {}..{}",
                format_duration_ms(*initial_ms),
                format_duration_ms(*max_ms)
            ),
            RetryPolicy::Schedule(delays) => {
                let parts: Vec<String> = delays.iter().map(|d| format_duration_ms(*d)).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

impl Serialize for RetryPolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_exponential_from_one_second_capped_at_ten_minutes() {
        let p = RetryPolicy::default();
        let delays: Vec<u64> = (1..=12).map(|n| p.delay_ms(n, 0.0)).collect();
        assert_eq!(
            delays,
            [
                1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 512000, 600000, 600000
            ]
        );
        assert_eq!(p.delay_ms(1000, 0.0), 600_000);
    }

    #[test]
    fn jitter_only_shortens_and_by_at_most_a_fifth() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_ms(3, 0.999_999), 3201);
        for j in [0.0, 0.3, 0.7, 0.99] {
            let d = p.delay_ms(11, j);
            assert!((480_000..=600_000).contains(&d), "{d}");
        }
    }

    #[test]
    fn schedule_repeats_its_last_delay() {
        let p = RetryPolicy::parse("1s,5s,30s,2m,10m").unwrap();
        let delays: Vec<u64> = (1..=7).map(|n| p.delay_ms(n, 0.0)).collect();
        assert_eq!(delays, [1000, 5000, 30000, 120000, 600000, 600000, 600000]);
        assert_eq!(p.to_string(), "1s,5s,30s,2m,10m");
    }

    #[test]
    fn parse_and_display_round_trip() {
        for s in [
            "exponential 1s..10m",
            "exponential 250ms..1m",
            "0ms",
            "1s,1s",
        ] {
            assert_eq!(RetryPolicy::parse(s).unwrap().to_string(), s);
        }
        for bad in ["exponential", "exponential 10m..1s", "1s,,2s", "fast"] {
            assert!(RetryPolicy::parse(bad).is_err(), "{bad}");
        }
    }
}

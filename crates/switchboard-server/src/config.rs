//! Server configuration: the admin key, request limits, health thresholds and retention.
//! Plain data; the binary fills it from flags and the environment.

use std::time::Duration;

use switchboard_core::health::HealthRules;

/// Bounds on what one request may ask. Each is refused with a 4xx naming it.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch: usize,
    pub max_consume: u32,
    pub max_wait_ms: u64,
    pub min_lease_ms: u64,
    pub max_lease_ms: u64,
    pub max_acks: usize,
    pub max_error_len: usize,
    pub max_retry_in_ms: u64,
    pub max_page: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            max_batch: 1000,
            max_consume: 1000,
            max_wait_ms: 60_000,
            min_lease_ms: 100,
            max_lease_ms: 12 * 3_600_000,
            max_acks: 1000,
            max_error_len: 4096,
            max_retry_in_ms: 7 * 24 * 3_600_000,
            max_page: 1000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The admin key in clear (from the environment or the data directory).
    pub admin_key: String,
    pub limits: Limits,
    /// The thresholds of the health verdicts.
    pub health: HealthRules,
    /// How often channel health is checked for alerts; `None` turns alerts off.
    pub alert_interval: Option<Duration>,
    /// Per-minute counters are kept this long (per-hour ones: `hour_counters_for`).
    pub minute_counters_for: Duration,
    pub hour_counters_for: Duration,
}

impl Config {
    pub fn new(admin_key: impl Into<String>) -> Config {
        Config {
            admin_key: admin_key.into(),
            limits: Limits::default(),
            health: HealthRules::default(),
            alert_interval: Some(Duration::from_secs(15)),
            minute_counters_for: Duration::from_secs(3 * 3600),
            hour_counters_for: Duration::from_secs(90 * 86_400),
        }
    }
}

//! Server configuration: the admin key, request limits and timeouts, rate limits, TLS,
//! health thresholds and retention.
//! Plain data; the binary fills it from flags and the environment.

use std::time::Duration;

use switchboard_core::health::HealthRules;

/// Bounds on what one request may ask. Each is refused with a 4xx naming it. (The lengths of
/// types, tenants and ids are fixed by the data model: see `switchboard_core::ids`.)
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// How deep `data` (and ack data) may nest objects and arrays.
    pub max_data_depth: usize,
    /// Most target apps one event may name.
    pub max_targets: usize,
    /// Largest request head (request line and headers); larger gets a 431.
    pub max_header_bytes: usize,
    /// How long a client may take to send a request head, and how long a connection may sit
    /// idle between requests; then it is closed. Also bounds a TLS handshake.
    pub header_timeout: Duration,
    /// How long a client may take to send a request body; then 408.
    pub body_timeout: Duration,
    /// Per-app (and per tenant reader) request rate; `None` (the default) is unlimited.
    pub rate_limit: Option<RateLimit>,
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
            max_data_depth: 32,
            max_targets: 100,
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            rate_limit: None,
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

/// A token bucket: `per_second` requests on average, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
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
    /// Serve HTTPS with this certificate and key; `None` serves plain HTTP.
    pub tls: Option<crate::tls::Tls>,
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
            tls: None,
        }
    }
}

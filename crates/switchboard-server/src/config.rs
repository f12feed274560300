//! Server configuration: the admin key and the request limits. Plain data; the binary fills
//! it from flags and the environment.

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
}

impl Config {
    pub fn new(admin_key: impl Into<String>) -> Config {
        Config {
            admin_key: admin_key.into(),
            limits: Limits::default(),
        }
    }
}

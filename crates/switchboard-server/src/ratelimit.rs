//! Per-app request rate limits: a token bucket per app (and per tenant reader), refilled at
//! `per_second` up to `burst`. Off unless configured; the admin key is never limited. A
//! refused request gets 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::auth::Caller;
use crate::clock;
use crate::config::RateLimit;
use crate::error::ApiError;

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Limiter {
    rate: RateLimit,
    buckets: Mutex<HashMap<Caller, Bucket>>,
}

impl Limiter {
    pub fn new(rate: RateLimit) -> Limiter {
        Limiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from the caller's bucket, or says when one will be there.
    pub fn take(&self, caller: &Caller) -> Result<(), ApiError> {
        if *caller == Caller::Admin {
            return Ok(());
        }
        self.take_at(caller, clock::instant())
    }

    fn take_at(&self, caller: &Caller, now: Instant) -> Result<(), ApiError> {
        let burst = f64::from(self.rate.burst.max(1));
        let mut buckets = self.buckets.lock().expect("limiter lock");
        let bucket = buckets.entry(caller.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate.per_second).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = if self.rate.per_second > 0.0 {
            ((1.0 - bucket.tokens) / self.rate.per_second).ceil() as u64
        } else {
            3600
        };
        Err(ApiError::rate_limited(
            wait.max(1),
            format!(
                "rate limit of {} requests per second (bursts of {}) reached for this key's app: retry after {} s",
                self.rate.per_second,
                self.rate.burst.max(1),
                wait.max(1)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchboard_core::AppId;

    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let limiter = Limiter::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        let crm = Caller::App(AppId::parse("crm").unwrap());
        let hr = Caller::App(AppId::parse("hr").unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.take_at(&crm, t0).unwrap();
        }
        let refused = limiter.take_at(&crm, t0).unwrap_err();
        assert_eq!(refused.status, 429);
        assert_eq!(refused.retry_after, Some(1));
        // Another app has its own bucket.
        limiter.take_at(&hr, t0).unwrap();
        // Half a second later one token is back, not two.
        let later = t0 + Duration::from_millis(500);
        limiter.take_at(&crm, later).unwrap();
        assert!(limiter.take_at(&crm, later).is_err());
        // Never more than the burst, however long the wait.
        let much_later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            limiter.take_at(&crm, much_later).unwrap();
        }
        assert!(limiter.take_at(&crm, much_later).is_err());
    }
}

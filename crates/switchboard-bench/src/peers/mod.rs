//! The systems users would pick instead of switchboard, as benchmark targets (issue 7): Redis
//! Streams on a `redis-server` the benchmark starts itself, RabbitMQ and NATS JetStream on the
//! servers already running on this machine, and switchboard on a Redis of its own. Peers are
//! driven through their ordinary client crates; nothing of theirs is vendored.
//!
//! Every peer carries the same message body: the JSON envelope switchboard stores for an event
//! (`type`, `tenant`, `data`), so payload sizes match. A sink is the peer's own notion of an
//! independent subscriber: a consumer group (Redis), a durable queue (RabbitMQ), a durable pull
//! consumer (JetStream).

pub mod nats;
pub mod rabbitmq;
pub mod redis_server;
pub mod redis_streams;
pub mod switchboard_redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::target::{EVENT_TYPE, TENANT};

/// How long a peer may take to accept a connection before it counts as not running.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The message body for one event: the envelope switchboard stores, `data` being a JSON
/// object's text.
pub fn envelope(data: &str) -> Vec<u8> {
    format!(r#"{{"type":"{EVENT_TYPE}","tenant":"{TENANT}","data":{data}}}"#).into_bytes()
}

/// The `sent_ns` number of an envelope's data (the first `"sent_ns":` in the body), without
/// parsing the whole JSON: the latency consumer reads it for every delivery.
pub fn sent_ns_in(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = br#""sent_ns":"#;
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// A name no other run of this process or another used: `prefix` plus the process id and a
/// counter, for the queues, exchanges and streams a run declares on a shared broker.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::event_data;

    #[test]
    fn envelopes_carry_the_sent_time() {
        let body = envelope(&event_data(7, Some(123_456_789)));
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["type"], EVENT_TYPE);
        assert_eq!(value["tenant"], TENANT);
        assert_eq!(value["data"]["user_id"], "u-00000007");
        assert_eq!(sent_ns_in(&body), Some(123_456_789));
        assert_eq!(sent_ns_in(&envelope(&event_data(7, None))), None);
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("q"), unique_name("q"));
    }
}

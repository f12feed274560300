//! Fuzzing the request bodies of publish, consume, ack and nack, and type patterns, with
//! arbitrary JSON (free-form and near-valid) and arbitrary bytes: the server never panics,
//! never answers 5xx, and a refused request stores nothing.
//!
//! Bounded for the normal test run (`PROPTEST_CASES` per target, default 256); run longer by
//! hand with e.g. `PROPTEST_CASES=20000 cargo test -p switchboard --test it fuzz`.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{Map, Value, json};
use switchboard_client::{Client, EventsQuery};
use switchboard_server::Config;

use crate::harness::{ADMIN_KEY, Hub};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

const FIELDS: &[&str] = &[
    "type",
    "tenant",
    "data",
    "target",
    "id",
    "entity_id",
    "correlation_id",
    "causation_id",
    "events",
    "max",
    "wait_ms",
    "lease_ms",
    "acks",
    "delivery_id",
    "attempt",
    "error",
    "retry_in_ms",
    "permanent",
    "pattern",
    "ordered",
];

const STRINGS: &[&str] = &[
    "",
    "a.b",
    "user.created",
    "acme",
    "hr",
    "crm",
    "*",
    "order.*",
    "*.x",
    "a..b",
    "A.B",
    "dlv_1",
    "dlv_0",
    "dlv_-1",
    "dlv_99999999999999999999",
    "evt_x",
    "\u{0}",
    "é.ü",
    " ",
    "a.b.",
    ".a",
    "'; DROP TABLE events; --",
    "{t}",
    "%7B",
    "\\",
    "\"",
];

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(STRINGS).prop_map(str::to_owned),
        2 => "[a-z.*_-]{0,12}",
        1 => any::<String>(),
        1 => (0usize..300).prop_map(|n| "x".repeat(n)),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        3 => prop::sample::select(FIELDS).prop_map(str::to_owned),
                        1 => string(),
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A valid body with one field replaced by arbitrary JSON, or removed.
fn near(valid: Value) -> impl Strategy<Value = Value> {
    let keys: Vec<String> = valid.as_object().unwrap().keys().cloned().collect();
    (
        prop::sample::select(keys),
        prop::option::of(json()),
        prop::option::of((prop::sample::select(FIELDS), json())),
    )
        .prop_map(move |(key, replacement, extra)| {
            let mut v = valid.clone();
            let o = v.as_object_mut().unwrap();
            match replacement {
                Some(r) => o.insert(key, r),
                None => o.remove(&key),
            };
            if let Some((k, x)) = extra {
                o.insert(k.to_owned(), x);
            }
            v
        })
}

/// A body: near-valid JSON, free-form JSON, or raw bytes.
fn body(valid: Value) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => near(valid).prop_map(|v| serde_json::to_vec(&v).unwrap()),
        3 => json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        2 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

struct Target {
    runtime: tokio::runtime::Runtime,
    hub: Hub,
    crm: Client,
    hr: Client,
}

impl Target {
    fn start() -> Target {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (hub, crm, hr) = runtime.block_on(async {
            let mut config = Config::new(ADMIN_KEY);
            // Long-polls must not slow the fuzzing down, and alert events (the watcher
            // publishes them) must not look like events stored by a refused request.
            config.limits.max_wait_ms = 20;
            config.alert_interval = None;
            let hub = Hub::start_with(config).await;
            let crm = hub.app("crm", &[]).await;
            let hr = hub.app("hr", &["*"]).await;
            (hub, crm, hr)
        });
        Target {
            runtime,
            hub,
            crm,
            hr,
        }
    }

    async fn newest(&self) -> Option<String> {
        let page = self
            .hub
            .admin
            .events(&EventsQuery {
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        page.events.first().map(|e| e.event.id.clone())
    }

    /// Sends `body` to `path` as `client`: no 5xx, and a refusal stores no event.
    fn check(
        &self,
        client: &Client,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(), TestCaseError> {
        self.runtime.block_on(async {
            let before = self.newest().await;
            let (status, reply) = client
                .raw(method, path, body.clone())
                .await
                .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
            let shown = body
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned());
            prop_assert!(status < 500, "{path} {shown:?}: {status} {reply}");
            if !(200..300).contains(&status) {
                prop_assert!(reply["error"]["code"].is_string(), "{reply}");
                prop_assert_eq!(
                    self.newest().await,
                    before,
                    "a refused request stored an event"
                );
            }
            Ok(())
        })
    }

    fn run(self, strategy: impl Strategy<Value = Vec<u8>>, who: &Client, path: &str) {
        let mut runner = TestRunner::new(ProptestConfig {
            cases: cases(),
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let result = runner.run(&strategy, |b| self.check(who, Method::POST, path, Some(b)));
        let Target { runtime, hub, .. } = self;
        runtime.block_on(hub.stop());
        result.unwrap();
    }
}

#[test]
fn fuzz_publish() {
    let t = Target::start();
    let valid = json!({"type": "user.created", "tenant": "acme", "data": {"n": 1},
        "target": "hr", "id": "k1", "entity_id": "e1"});
    let batch = json!({"events": [valid.clone(), valid.clone()]});
    let strategy = prop_oneof![body(valid), body(batch)];
    let crm = t.crm.clone();
    t.run(strategy, &crm, "/v1/events");
}

#[test]
fn fuzz_consume() {
    let t = Target::start();
    let hr = t.hr.clone();
    t.run(
        body(json!({"max": 1, "wait_ms": 0, "lease_ms": 30000})),
        &hr,
        "/v1/consume",
    );
}

#[test]
fn fuzz_ack() {
    let t = Target::start();
    let valid = json!({"acks": [{"delivery_id": "dlv_1", "attempt": 1, "data": {"x": 1}}]});
    let hr = t.hr.clone();
    t.run(body(valid), &hr, "/v1/ack");
}

#[test]
fn fuzz_nack() {
    let t = Target::start();
    let valid = json!({"delivery_id": "dlv_1", "attempt": 1, "error": "x",
        "retry_in_ms": 10, "permanent": false});
    let hr = t.hr.clone();
    t.run(body(valid), &hr, "/v1/nack");
}

/// Type patterns, where they are parsed: event filters and subscriptions.
#[test]
fn fuzz_type_patterns() {
    let t = Target::start();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let admin = t.hub.admin.clone();
    let result = runner.run(&(string(), json()), |(pattern, sub)| {
        let query: String = url_encode(&pattern);
        t.check(
            &admin,
            Method::GET,
            &format!("/v1/events?type={query}"),
            None,
        )?;
        t.check(
            &admin,
            Method::GET,
            &format!("/v1/dead-letters?type={query}"),
            None,
        )?;
        let patch = json!({"subscriptions": [pattern, sub]});
        t.check(
            &admin,
            Method::PATCH,
            "/v1/apps/hr",
            Some(serde_json::to_vec(&patch).unwrap()),
        )
    });
    let Target { runtime, hub, .. } = t;
    runtime.block_on(hub.stop());
    result.unwrap();
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

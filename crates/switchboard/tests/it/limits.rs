//! Limits: each configurable, each refused with a 4xx naming it; per-app rate limits;
//! slow or oversized requests cut off by the server's timeouts while long-polls still work;
//! and errors that leak nothing about the server's insides.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use switchboard_client::{Client, ConsumeRequest, NewApp};
use switchboard_server::{Config, RateLimit};
use switchboard_store::redis::RedisStore;
use switchboard_store::testing::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{ADMIN_KEY, Hub, assert_rejected, event, publish, stored_count};

fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!({ "a": v });
    }
    v
}

/// Posts `body` and returns the status and the error message.
async fn post(client: &Client, path: &str, body: Value) -> (u16, String) {
    let (status, reply) = client
        .raw(Method::POST, path, Some(serde_json::to_vec(&body).unwrap()))
        .await
        .unwrap();
    let message = reply["error"]["message"].as_str().unwrap_or("").to_owned();
    (status, message)
}

#[tokio::test]
async fn data_nesting_is_bounded() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let ok = json!({"type": "a.b", "tenant": "t", "data": nested(31)});
    assert_eq!(post(&crm, "/v1/events", ok).await.0, 201);
    let deep = json!({"type": "a.b", "tenant": "t", "data": nested(40)});
    let (status, message) = post(&crm, "/v1/events", deep).await;
    assert_eq!(status, 400);
    assert!(
        message.contains("max_data_depth") && message.contains("32"),
        "{message}"
    );
    // Deeper than the JSON parser goes: still a clean 400.
    let very_deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, _) = crm
        .raw(Method::POST, "/v1/events", Some(very_deep.into_bytes()))
        .await
        .unwrap();
    assert_eq!(status, 400);
    let ack = json!({"acks": [{"delivery_id": "dlv_1", "data": nested(40)}]});
    let (status, message) = post(&crm, "/v1/ack", ack).await;
    assert_eq!(status, 400);
    assert!(message.contains("acks[0].data"), "{message}");
    assert_eq!(stored_count(&hub).await, 1);
    hub.stop().await;
}

#[tokio::test]
async fn each_limit_is_configurable_and_named_when_hit() {
    let mut config = Config::new(ADMIN_KEY);
    config.limits.max_batch = 2;
    config.limits.max_targets = 1;
    config.limits.max_data_depth = 2;
    config.limits.max_wait_ms = 100;
    config.limits.max_consume = 10;
    config.limits.max_lease_ms = 30_000;
    config.limits.max_acks = 1;
    config.limits.max_error_len = 3;
    config.limits.max_body_bytes = 2_000;
    let hub = Hub::start_with(config).await;
    let crm = hub.app("crm", &[]).await;
    hub.app("hr", &[]).await;
    hub.app("billing", &[]).await;
    let e = json!({"type": "a.b", "tenant": "t", "data": {}});
    let cases = [
        ("/v1/events", json!({"events": [e, e, e]}), "limit of 2"),
        (
            "/v1/events",
            json!({"type": "a.b", "tenant": "t", "data": {}, "target": ["hr", "billing"]}),
            "max_targets",
        ),
        (
            "/v1/events",
            json!({"type": "a.b", "tenant": "t", "data": nested(3)}),
            "max_data_depth",
        ),
        (
            "/v1/events",
            json!({"type": "a.b", "tenant": "t", "data": {"x": "y".repeat(3_000)}}),
            "max_body_bytes",
        ),
        ("/v1/consume", json!({"wait_ms": 101}), "0 to 100"),
        ("/v1/consume", json!({"max": 11}), "1 to 10"),
        ("/v1/consume", json!({"lease_ms": 30_001}), "to 30000"),
        (
            "/v1/ack",
            json!({"acks": [{"delivery_id": "dlv_1"}, {"delivery_id": "dlv_2"}]}),
            "limit of 1",
        ),
        (
            "/v1/nack",
            json!({"delivery_id": "dlv_1", "error": "long"}),
            "limit is 3",
        ),
    ];
    for (path, body, named) in cases {
        let (status, message) = post(&crm, path, body.clone()).await;
        assert!((400..500).contains(&status), "{path} {body}: {status}");
        assert!(
            message.contains(named),
            "{path}: `{message}` should name `{named}`"
        );
    }
    assert_eq!(stored_count(&hub).await, 0);
    hub.stop().await;
}

#[tokio::test]
async fn a_rate_limited_app_gets_429_with_retry_after() {
    let mut config = Config::new(ADMIN_KEY);
    config.limits.rate_limit = Some(RateLimit {
        per_second: 0.01,
        burst: 2,
    });
    let hub = Hub::start_with(config).await;
    let crm_key = hub
        .admin
        .create_app(&NewApp::new("crm", Vec::<String>::new()))
        .await
        .unwrap()
        .api_key;
    let crm = Client::new(&hub.url, &crm_key);
    let hr = hub.app("hr", &[]).await;
    publish(&crm, event("a.b", "t")).await;
    publish(&crm, event("a.b", "t")).await;
    let res = reqwest::Client::new()
        .post(format!("{}/v1/events", hub.url))
        .bearer_auth(&crm_key)
        .json(&json!({"type": "a.b", "tenant": "t", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&retry), "{retry}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Other apps have their own bucket; the admin has none.
    publish(&hr, event("a.b", "t")).await;
    for _ in 0..5 {
        hub.admin.list_apps().await.unwrap();
    }
    assert_eq!(stored_count(&hub).await, 3);
    hub.stop().await;
}

fn quick_timeouts() -> Config {
    let mut config = Config::new(ADMIN_KEY);
    config.limits.header_timeout = Duration::from_millis(300);
    config.limits.body_timeout = Duration::from_millis(300);
    config.limits.max_header_bytes = 4096;
    config
}

/// Writes `bytes` on a fresh connection and reads until the server closes it.
async fn exchange(hub: &Hub, bytes: &[u8]) -> String {
    let addr = hub.url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    // A safety net only: the server closes first (its timeouts are 300 ms).
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut out))
        .await
        .expect("the server closes a slow connection")
        .unwrap_or_default();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn slow_and_oversized_requests_are_cut_off_and_long_polls_are_not() {
    let hub = Hub::start_with(quick_timeouts()).await;
    let hr = hub.app("hr", &[]).await;
    // A head that never ends: the connection is closed without a response.
    let reply = exchange(&hub, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    assert!(!reply.contains("200"), "{reply}");
    // A head over the size limit: 431.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(8_000)
    );
    let reply = exchange(&hub, big.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    // A body that never arrives in full: 408 naming the limit. (The admin client's pooled
    // connection has been idle past the header timeout by now, so the server has closed it:
    // the SDK must send this request again on a new connection.)
    let key = hub.admin.add_app_key("hr").await.unwrap().api_key;
    let slow_body = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"type\""
    );
    let reply = exchange(&hub, slow_body.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("body_timeout_ms"), "{reply}");
    // A long-poll longer than every timeout above still gets its (empty) answer.
    let got = hr
        .consume(&ConsumeRequest {
            max: 1,
            wait_ms: 700,
            lease_ms: 30_000,
        })
        .await
        .unwrap();
    assert!(got.is_empty());
    assert_eq!(stored_count(&hub).await, 0);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_tells_the_client_nothing_about_the_store() {
    let mut redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let hub = Hub::start_on(Arc::new(store)).await;
    let crm = hub.app("crm", &[]).await;
    redis.kill();
    let (status, reply) = crm
        .raw(
            Method::POST,
            "/v1/events",
            Some(br#"{"type":"a.b","tenant":"t","data":{}}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(status, 503, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    let port = redis.url().rsplit(':').next().unwrap().to_owned();
    for leak in [
        "redis",
        "127.0.0.1",
        port.trim_end_matches("/0"),
        "/tmp",
        "sqlite",
    ] {
        assert!(
            !message.to_lowercase().contains(leak),
            "`{leak}` in {message}"
        );
    }
    assert!(message.contains("request id"), "{message}");
    assert_rejected(
        crm.publish(&event("a.b", "t")).await,
        503,
        "store_unavailable",
        None,
    );
    hub.stop().await;
}

//! Bad input: every refusal is a 4xx that names the field, and changes nothing.

use reqwest::Method;
use serde_json::{Value, json};
use switchboard_client::{Ack, ConsumeRequest, Nack, NewApp};

use crate::harness::{Hub, assert_rejected, event, stored_count};

/// Sends `body` to `path` as `client` and checks the status, code and named field.
async fn check_refused(
    client: &switchboard_client::Client,
    path: &str,
    body: Vec<u8>,
    status: u16,
    code: &str,
    field: Option<&str>,
) -> Value {
    let (got, reply) = client
        .raw(Method::POST, path, Some(body.clone()))
        .await
        .unwrap();
    let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    assert_eq!(got, status, "{path} {shown}: {reply}");
    assert_eq!(reply["error"]["code"], code, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{reply}");
    assert!(
        !message.contains("SELECT") && !message.contains("sqlite"),
        "{message}"
    );
    if let Some(field) = field {
        let details = reply["error"]["details"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            details.iter().any(|d| d["field"] == field),
            "expected `{field}` in {reply}"
        );
    }
    reply
}

fn body(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn bad_events_are_refused_naming_the_field_and_nothing_is_stored() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    hub.app("hr", &["*"]).await;
    let ok = json!({"type": "user.created", "tenant": "acme", "data": {}});
    let with = |k: &str, v: Value| {
        let mut e = ok.clone();
        e[k] = v;
        body(e)
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (with("type", json!("UserCreated")), "type"),
        (with("type", json!("user")), "type"),
        (with("type", json!(42)), "type"),
        (with("type", json!({"name": "user.created"})), "type"),
        (with("type", json!(["user.created"])), "type"),
        (with("tenant", json!("")), "tenant"),
        (with("tenant", json!(true)), "tenant"),
        (with("tenant", json!(null)), "tenant"),
        (with("tenant", json!(1.5)), "tenant"),
        (
            with("entity_id", json!({"id": [1, {"x": null}]})),
            "entity_id",
        ),
        (with("correlation_id", json!(-7)), "correlation_id"),
        (with("data", json!([1, 2])), "data"),
        (with("data", json!("text")), "data"),
        (with("target", json!("payroll")), "target"),
        (with("target", json!(["hr", "Bad App"])), "target"),
        (with("id", json!("")), "id"),
        (body(json!({"tenant": "acme", "data": {}})), "type"),
        (body(json!({"type": "user.created", "data": {}})), "tenant"),
        (
            body(json!({"type": "user.created", "tenant": "acme"})),
            "data",
        ),
    ];
    for (b, field) in cases {
        check_refused(&crm, "/v1/events", b, 400, "validation_failed", Some(field)).await;
    }
    // One bad event spoils the whole batch, and the error says which one.
    let batch = json!({"events": [ok, {"type": "nope", "tenant": "acme", "data": {}}, ok]});
    check_refused(
        &crm,
        "/v1/events",
        body(batch),
        400,
        "validation_failed",
        Some("events[1].type"),
    )
    .await;
    assert_eq!(stored_count(&hub).await, 0);
    hub.stop().await;
}

#[tokio::test]
async fn malformed_bodies_are_refused() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    check_refused(
        &crm,
        "/v1/events",
        b"{not json".to_vec(),
        400,
        "invalid_json",
        None,
    )
    .await;
    let reply = check_refused(
        &crm,
        "/v1/events",
        body(json!({"type": "user.created", "tenantId": "acme", "data": {}})),
        400,
        "invalid_json",
        None,
    )
    .await;
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenantId"),
        "{reply}"
    );
    // A byte that is not UTF-8, inside `data`'s text: refused, naming where.
    let mut latin1 =
        br#"{"type": "user.created", "tenant": "acme", "data": {"name": "Ren"#.to_vec();
    let at = latin1.len();
    latin1.extend_from_slice(b"\xe9\"}}");
    let reply = check_refused(&crm, "/v1/events", latin1, 400, "invalid_json", None).await;
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("not UTF-8 from byte {at}")),
        "{reply}"
    );
    let mixed = json!({"events": [], "type": "user.created"});
    check_refused(
        &crm,
        "/v1/events",
        body(mixed),
        400,
        "validation_failed",
        Some("events"),
    )
    .await;
    check_refused(
        &crm,
        "/v1/events",
        body(json!({"events": []})),
        400,
        "validation_failed",
        Some("events"),
    )
    .await;
    assert_eq!(stored_count(&hub).await, 0);
    hub.stop().await;
}

#[tokio::test]
async fn size_and_batch_limits() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let big = "x".repeat(1024 * 1024);
    let too_big = body(json!({"type": "user.created", "tenant": "acme", "data": {"blob": big}}));
    check_refused(&crm, "/v1/events", too_big, 413, "payload_too_large", None).await;
    let events: Vec<Value> = (0..1001)
        .map(|_| json!({"type": "a.b", "tenant": "t", "data": {}}))
        .collect();
    check_refused(
        &crm,
        "/v1/events",
        body(json!({"events": events})),
        400,
        "validation_failed",
        Some("events"),
    )
    .await;
    assert_eq!(stored_count(&hub).await, 0);
    hub.stop().await;
}

#[tokio::test]
async fn bad_consume_ack_and_nack_requests() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["*"]).await;
    for (req, field) in [
        (json!({"max": 0}), "max"),
        (json!({"max": 1001}), "max"),
        (json!({"wait_ms": 3_600_000}), "wait_ms"),
        (json!({"lease_ms": 5}), "lease_ms"),
    ] {
        check_refused(
            &hr,
            "/v1/consume",
            body(req),
            400,
            "validation_failed",
            Some(field),
        )
        .await;
    }
    check_refused(
        &hr,
        "/v1/consume",
        body(json!({"maxx": 1})),
        400,
        "invalid_json",
        None,
    )
    .await;
    check_refused(
        &hr,
        "/v1/ack",
        body(json!({"acks": []})),
        400,
        "validation_failed",
        Some("acks"),
    )
    .await;
    check_refused(
        &hr,
        "/v1/ack",
        body(json!({"acks": [{"delivery_id": "dlv_1"}, {"delivery_id": ""}]})),
        400,
        "validation_failed",
        Some("acks[1].delivery_id"),
    )
    .await;
    check_refused(
        &hr,
        "/v1/dead-letters/requeue",
        body(json!({"delivery_ids": ["dlv_1", "dlv 2"]})),
        400,
        "validation_failed",
        Some("delivery_ids[1]"),
    )
    .await;
    let unknown = Ack {
        delivery_id: "dlv_424242".into(),
        attempt: None,
        data: None,
    };
    assert_rejected(hr.ack(&[unknown]).await, 404, "unknown_delivery", None);

    crm.publish(&event("user.created", "acme")).await.unwrap();
    let got = hr
        .consume(&ConsumeRequest {
            max: 1,
            wait_ms: 0,
            lease_ms: 30_000,
        })
        .await
        .unwrap();
    hr.ack(&[Ack::of(&got[0])]).await.unwrap();
    // A nack after the ack: the delivery is no longer in flight.
    assert_rejected(
        hr.nack(&Nack::of(&got[0], "too late")).await,
        409,
        "not_in_flight",
        None,
    );
    let neg = json!({"delivery_id": got[0].delivery_id, "error": "x", "retry_in_ms": -1});
    check_refused(&hr, "/v1/nack", body(neg), 400, "invalid_json", None).await;
    hub.stop().await;
}

#[tokio::test]
async fn bad_app_registrations() {
    let hub = Hub::start().await;
    for (app, field) in [
        (json!({"id": "HR"}), "id"),
        (
            json!({"id": "hr", "subscriptions": ["*.created"]}),
            "subscriptions[0]",
        ),
        (json!({"id": "hr", "max_attempts": 0}), "max_attempts"),
        (json!({"id": "hr", "backoff": "soonish"}), "backoff"),
        (json!({"id": "switchboard"}), "id"),
    ] {
        check_refused(
            &hub.admin,
            "/v1/apps",
            body(app),
            400,
            "validation_failed",
            Some(field),
        )
        .await;
    }
    assert!(hub.admin.list_apps().await.unwrap().is_empty());
    hub.admin
        .create_app(&NewApp::new("hr", ["*"]))
        .await
        .unwrap();
    assert_rejected(
        hub.admin.create_app(&NewApp::new("hr", ["*"])).await,
        409,
        "app_exists",
        None,
    );
    hub.stop().await;
}

#[tokio::test]
async fn bad_query_parameters() {
    let hub = Hub::start().await;
    for (query, field) in [
        ("status=done", "status"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
        ("type=*.created", "type"),
        ("cursor=zzz", "cursor"),
        ("tenat=acme", "tenat"),
    ] {
        let (status, reply) = hub
            .admin
            .raw(Method::GET, &format!("/v1/events?{query}"), None)
            .await
            .unwrap();
        assert_eq!(status, 400, "{query}: {reply}");
        let details = reply["error"]["details"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            details.iter().any(|d| d["field"] == field),
            "{query}: {reply}"
        );
    }
    hub.stop().await;
}

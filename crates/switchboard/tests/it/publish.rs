//! Publishing: routing, idempotency, batches.

use serde_json::json;
use switchboard_client::{DeliveryStatus, NewEvent};

use crate::harness::{Hub, event, lookup, publish, stored_count};

/// Registers `subs` (app, patterns), publishes `ty` from `source` (to `named` targets when
/// given) and checks who gets a delivery.
async fn check_routing(
    subs: &[(&str, &[&str])],
    source: &str,
    ty: &str,
    named: Option<&[&str]>,
    expect: &[&str],
) {
    let hub = Hub::start().await;
    let mut clients = std::collections::HashMap::new();
    for (app, patterns) in subs {
        clients.insert(*app, hub.app(app, patterns).await);
    }
    let mut ev = event(ty, "acme");
    if let Some(named) = named {
        ev = ev.to_many(named.iter().copied());
    }
    let published = publish(&clients[source], ev).await;
    let targets: Vec<&str> = published
        .deliveries
        .iter()
        .map(|d| d.target.as_str())
        .collect();
    assert_eq!(targets, expect, "{ty} from {source}");
    assert!(
        published
            .deliveries
            .iter()
            .all(|d| d.status == DeliveryStatus::Pending)
    );
    let stored = lookup(&clients[source], &published.id).await;
    let stored_targets: Vec<&str> = stored
        .deliveries
        .iter()
        .map(|d| d.target.as_str())
        .collect();
    assert_eq!(stored_targets, expect);
    hub.stop().await;
}

const SUITE: &[(&str, &[&str])] = &[
    ("crm", &["credit.*"]),
    ("hr", &["user.created", "credit.*"]),
    ("audit", &["*"]),
    ("billing", &["order.*"]),
];

#[tokio::test]
async fn routes_by_subscription_never_to_the_source() {
    check_routing(SUITE, "crm", "user.created", None, &["audit", "hr"]).await;
}

#[tokio::test]
async fn prefix_patterns_match_deeper_types() {
    check_routing(
        SUITE,
        "crm",
        "order.item.added",
        None,
        &["audit", "billing"],
    )
    .await;
}

#[tokio::test]
async fn named_targets_get_it_exactly() {
    check_routing(
        SUITE,
        "crm",
        "user.created",
        Some(&["billing", "crm"]),
        &["billing", "crm"],
    )
    .await;
}

#[tokio::test]
async fn an_event_nobody_wants_is_stored_with_no_deliveries() {
    check_routing(
        &[("crm", &[]), ("hr", &["user.created"])],
        "crm",
        "nobody.cares",
        None,
        &[],
    )
    .await;
}

#[tokio::test]
async fn the_same_id_twice_is_published_once() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    hub.app("hr", &["*"]).await;
    let shop = hub.app("shop", &[]).await;
    let first = publish(&crm, event("user.created", "acme").id("user-42-created")).await;
    let again = publish(&crm, event("user.created", "acme").id("user-42-created")).await;
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.id, first.id);
    assert_eq!(again.deliveries, first.deliveries);
    // The key is per source app: another app may use the same id.
    let other = publish(&shop, event("user.created", "acme").id("user-42-created")).await;
    assert!(!other.duplicate);
    assert_ne!(other.id, first.id);
    assert_eq!(stored_count(&hub).await, 2);
    hub.stop().await;
}

#[tokio::test]
async fn a_batch_is_stored_in_order() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    hub.app("hr", &["user.*"]).await;
    let events: Vec<NewEvent> = (0..100)
        .map(|i| NewEvent::new("user.created", "acme", json!({"i": i})).entity(format!("u{i}")))
        .collect();
    let published = crm.publish_batch(&events).await.unwrap();
    assert_eq!(published.len(), 100);
    for p in &published {
        assert_eq!(p.deliveries.len(), 1);
    }
    let ev = lookup(&crm, &published[57].id).await;
    assert_eq!(ev.event.data, json!({"i": 57}));
    assert_eq!(ev.event.entity_id.as_deref(), Some("u57"));
    assert_eq!(stored_count(&hub).await, 100);
    hub.stop().await;
}

#[tokio::test]
async fn each_event_of_a_batch_keeps_its_own_type_and_tenant() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    hub.app("hr", &["user.*"]).await;
    // Repeats, changes and an escaped spelling of the same text (`\u0061` is `a`).
    let batch = br#"{"events":[
        {"type":"user.created","tenant":"acme","data":{}},
        {"type":"user.created","tenant":"acme","data":{}},
        {"type":"user.deleted","tenant":"globex","data":{}},
        {"type":"user.created","tenant":"\u0061cme","data":{}},
        {"type":"user.created","tenant":"acme\/eu","data":{}}]}"#
        .to_vec();
    let published = crm.publish_json(batch).await.unwrap();
    let expected = [
        ("user.created", "acme"),
        ("user.created", "acme"),
        ("user.deleted", "globex"),
        ("user.created", "acme"),
        ("user.created", "acme/eu"),
    ];
    assert_eq!(published.len(), expected.len());
    for (p, (ty, tenant)) in published.iter().zip(expected) {
        let stored = lookup(&crm, &p.id).await;
        assert_eq!(
            (
                stored.event.event_type.as_str(),
                stored.event.tenant.as_str()
            ),
            (ty, tenant)
        );
    }
    hub.stop().await;
}

#[tokio::test]
async fn events_already_in_json_are_published_as_sent() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    hub.app("hr", &["user.*"]).await;
    let one = br#"{"type":"user.created","tenant":"acme","data":{"i":0}}"#.to_vec();
    let published = crm.publish_json(one).await.unwrap();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].deliveries[0].target, "hr");
    let batch = br#"{"events":[
        {"type":"user.created","tenant":"acme","data":{"i":1}},
        {"type":"user.deleted","tenant":"acme","data":{"i":2}}]}"#
        .to_vec();
    let published = crm.publish_json(batch).await.unwrap();
    assert_eq!(published.len(), 2);
    let second = lookup(&crm, &published[1].id).await;
    assert_eq!(
        (second.event.event_type.as_str(), &second.event.data),
        ("user.deleted", &json!({"i": 2}))
    );
    // A body that is not a valid event is refused like any other, naming the field.
    let refused = crm
        .publish_json(br#"{"type":"User","tenant":"acme","data":{}}"#.to_vec())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("type"), "{refused}");
    assert_eq!(stored_count(&hub).await, 3);
    hub.stop().await;
}

#[tokio::test]
async fn event_fields_come_back_as_sent() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["*"]).await;
    let sent = NewEvent::new(
        "user.created",
        "tenant-7",
        json!({"user": {"id": 42, "tags": ["a", "b"]}, "ok": true}),
    )
    .id("k1")
    .entity("user-42")
    .correlation("corr-1")
    .causation("cause-1");
    let p = publish(&crm, sent).await;
    let got = hr
        .consume(&switchboard_client::ConsumeRequest {
            max: 1,
            wait_ms: 0,
            lease_ms: 30_000,
        })
        .await
        .unwrap();
    let e = &got[0].event;
    assert_eq!(e.id, p.id);
    assert_eq!(e.tenant, "tenant-7");
    assert_eq!(e.event_type, "user.created");
    assert_eq!(e.source, "crm");
    assert_eq!(
        e.data,
        json!({"user": {"id": 42, "tags": ["a", "b"]}, "ok": true})
    );
    assert_eq!(e.idempotency_key.as_deref(), Some("k1"));
    assert_eq!(e.entity_id.as_deref(), Some("user-42"));
    assert_eq!(e.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(e.causation_id.as_deref(), Some("cause-1"));
    assert!(!e.historical);
    assert!(e.time.ends_with('Z'));
    hub.stop().await;
}

//! Delivery you can trust: dead letters and requeue, per-entity ordering, consumer failure,
//! lease extension, backlog isolation and the reconciliation view.

use std::collections::HashMap;

use serde_json::json;
use switchboard_client::{
    Ack, Client, ConsumeRequest, Consumer, DeadFilter, DeliveryStatus, Nack, NewApp, NewEvent,
    Subscription,
};
use tokio_util::sync::CancellationToken;

use crate::harness::{Hub, assert_rejected, event, lookup, publish};

fn poll(max: u32, wait_ms: u64, lease_ms: u64) -> ConsumeRequest {
    ConsumeRequest {
        max,
        wait_ms,
        lease_ms,
    }
}

/// Publishes `n` events of `ty` for `tenant` in batches of up to 1000.
async fn publish_many(client: &Client, n: usize, ty: &str, tenant: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for start in (0..n).step_by(1000) {
        let batch: Vec<NewEvent> = (start..n.min(start + 1000))
            .map(|i| NewEvent::new(ty, tenant, json!({"i": i})))
            .collect();
        ids.extend(
            client
                .publish_batch(&batch)
                .await
                .unwrap()
                .into_iter()
                .map(|p| p.id),
        );
    }
    ids
}

#[tokio::test]
async fn dead_then_requeued_then_acknowledged() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub
        .app_with(NewApp {
            max_attempts: Some(2),
            backoff: Some("0ms".into()),
            ..NewApp::new("hr", ["*"])
        })
        .await;
    let p = publish(&crm, event("user.created", "acme")).await;
    for attempt in 1..=2 {
        let got = hr.consume(&poll(1, 5_000, 30_000)).await.unwrap();
        hr.nack(&Nack::of(&got[0], format!("schema mismatch {attempt}")))
            .await
            .unwrap();
    }
    let dead = hub
        .admin
        .dead_letters(&DeadFilter::default(), None, None)
        .await
        .unwrap();
    assert_eq!(dead.dead_letters.len(), 1);
    let d = &dead.dead_letters[0];
    assert_eq!(d.event.id, p.id);
    assert_eq!(d.delivery.status, DeliveryStatus::Dead);
    assert_eq!(d.delivery.last_error.as_deref(), Some("schema mismatch 2"));
    assert_eq!(d.delivery.history.len(), 2);

    let moved = hub
        .admin
        .requeue(std::slice::from_ref(&d.delivery.delivery_id))
        .await
        .unwrap();
    assert_eq!(moved, 1);
    let again = hr.consume(&poll(1, 5_000, 30_000)).await.unwrap();
    assert_eq!(again[0].attempt, 3);
    hr.ack(&[Ack::of(&again[0])]).await.unwrap();

    let seen = lookup(&crm, &p.id).await;
    let delivery = &seen.deliveries[0];
    assert_eq!(delivery.status, DeliveryStatus::Acknowledged);
    let kinds: Vec<&str> = delivery.history.iter().map(|h| h.kind.as_str()).collect();
    assert_eq!(kinds, ["attempt", "attempt", "requeue", "attempt"]);
    assert_eq!(delivery.history[2].by.as_deref(), Some("admin"));
    assert!(
        hub.admin
            .dead_letters(&DeadFilter::default(), None, None)
            .await
            .unwrap()
            .dead_letters
            .is_empty()
    );
    hub.stop().await;
}

#[tokio::test]
async fn requeue_by_filter_moves_five_thousand() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["*"]).await;
    publish_many(&crm, 5_000, "user.created", "acme").await;
    publish_many(&crm, 10, "user.created", "globex").await;
    // Kill every delivery with a permanent nack, 16 at a time.
    let mut killed = 0;
    while killed < 5_010 {
        let got = hr.consume(&poll(1000, 0, 300_000)).await.unwrap();
        assert!(!got.is_empty());
        let mut nacks = tokio::task::JoinSet::new();
        for chunk in got.chunks(got.len().div_ceil(16)) {
            let hr = hr.clone();
            let chunk = chunk.to_vec();
            nacks.spawn(async move {
                for d in &chunk {
                    hr.nack(&Nack {
                        permanent: true,
                        ..Nack::of(d, "poison")
                    })
                    .await
                    .unwrap();
                }
                chunk.len()
            });
        }
        while let Some(n) = nacks.join_next().await {
            killed += n.unwrap();
        }
    }
    let acme = DeadFilter {
        tenant: Some("acme".into()),
        ..Default::default()
    };
    assert_eq!(hub.admin.requeue_matching(&acme).await.unwrap(), 5_000);
    assert_eq!(hub.admin.requeue_matching(&acme).await.unwrap(), 0);
    let left = hub
        .admin
        .dead_letters(&DeadFilter::default(), Some(1000), None)
        .await
        .unwrap();
    assert_eq!(left.dead_letters.len(), 10, "globex stays dead");
    assert!(left.dead_letters.iter().all(|d| d.event.tenant == "globex"));
    let pending = hub
        .admin
        .unacknowledged("acme", 0, Some(1000), None)
        .await
        .unwrap();
    assert_eq!(pending.unacknowledged.len(), 1000);
    assert!(pending.next_cursor.is_some());
    hub.stop().await;
}

#[tokio::test]
async fn ordered_subscription_keeps_each_entitys_order_without_blocking_others() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub
        .app_with(NewApp {
            backoff: Some("0ms".into()),
            ..NewApp::new("hr", [Subscription::ordered("user.*")])
        })
        .await;
    // Interleaved: a0 b0 a1 b1 a2 b2 ...
    let mut batch = Vec::new();
    for i in 0..5 {
        for entity in ["a", "b"] {
            batch.push(
                NewEvent::new("user.updated", "acme", json!({"entity": entity, "seq": i}))
                    .entity(entity),
            );
        }
    }
    crm.publish_batch(&batch).await.unwrap();
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    let mut failed_a_once = false;
    while seen.values().map(Vec::len).sum::<usize>() < 10 {
        let got = hr.consume(&poll(10, 5_000, 30_000)).await.unwrap();
        let mut entities: Vec<&str> = got
            .iter()
            .map(|d| d.event.entity_id.as_deref().unwrap())
            .collect();
        entities.sort();
        entities.dedup();
        assert_eq!(
            entities.len(),
            got.len(),
            "at most one delivery per entity at a time"
        );
        for d in &got {
            let entity = d.event.entity_id.clone().unwrap();
            let seq = d.event.data["seq"].as_i64().unwrap();
            if entity == "a" && seq == 1 && !failed_a_once {
                // a1 fails once: b keeps flowing, a2 waits for a1.
                failed_a_once = true;
                hr.nack(&Nack {
                    retry_in_ms: Some(0),
                    ..Nack::of(d, "try again")
                })
                .await
                .unwrap();
                continue;
            }
            hr.ack(&[Ack::of(d)]).await.unwrap();
            seen.entry(entity).or_default().push(seq);
        }
    }
    assert_eq!(seen["a"], [0, 1, 2, 3, 4]);
    assert_eq!(seen["b"], [0, 1, 2, 3, 4]);
    assert!(failed_a_once);
    hub.stop().await;
}

#[tokio::test]
async fn a_consumer_that_dies_holding_a_lease_loses_nothing() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub
        .app_with(NewApp {
            backoff: Some("0ms".into()),
            ..NewApp::new("hr", ["*"])
        })
        .await;
    let p = publish(&crm, event("user.created", "acme")).await;
    // Consumer one takes the delivery and hangs in its handler; then it is killed.
    let (took_tx, took_rx) = tokio::sync::oneshot::channel();
    let took_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(took_tx)));
    let doomed = tokio::spawn(Consumer::new(hr.clone()).lease_ms(200).wait_ms(5_000).run(
        CancellationToken::new(),
        move |d| {
            let took_tx = took_tx.clone();
            async move {
                if let Some(tx) = took_tx.lock().unwrap().take() {
                    let _ = tx.send(d.delivery_id.clone());
                }
                std::future::pending::<()>().await;
                Ok(None)
            }
        },
    ));
    let taken = took_rx.await.unwrap();
    doomed.abort();
    let _ = doomed.await;
    // Consumer two gets it once the lease runs out.
    let got = hr.consume(&poll(1, 30_000, 30_000)).await.unwrap();
    assert_eq!(got[0].delivery_id, taken);
    assert_eq!(got[0].attempt, 2);
    hr.ack(&[Ack::of(&got[0])]).await.unwrap();
    let d = &lookup(&crm, &p.id).await.deliveries[0];
    assert_eq!(d.status, DeliveryStatus::Acknowledged);
    assert_eq!(d.history[0].outcome.as_deref(), Some("timed_out"));
    hub.stop().await;
}

#[tokio::test]
async fn an_extended_lease_holds() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["*"]).await;
    let p = publish(&crm, event("user.created", "acme")).await;
    let mine = hr.consume(&poll(1, 0, 300)).await.unwrap().remove(0);
    let until = hr.extend(&mine, 60_000).await.unwrap();
    assert!(until > mine.lease_expires_at);
    // Another consumer waits well past the original 300 ms lease and gets nothing.
    assert!(
        hr.consume(&poll(1, 1_000, 30_000))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        lookup(&crm, &p.id).await.deliveries[0]
            .lease_expires_at
            .as_deref(),
        Some(until.as_str())
    );
    hr.ack(&[Ack::of(&mine)]).await.unwrap();
    // After the ack there is no lease to extend.
    assert_rejected(hr.extend(&mine, 1_000).await, 409, "not_in_flight", None);
    hub.stop().await;
}

#[tokio::test]
async fn a_down_app_with_a_backlog_does_not_hold_up_the_others() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    hub.app("down", &["*"]).await;
    let up = hub.app("up", &["order.*"]).await;
    publish_many(&crm, 10_000, "user.created", "acme").await;
    let backlog = hub
        .admin
        .unacknowledged("acme", 0, Some(1), None)
        .await
        .unwrap();
    assert_eq!(backlog.unacknowledged[0].delivery.target, "down");
    for i in 0..20 {
        let p = publish(
            &crm,
            NewEvent::new("order.created", "acme", json!({"i": i})),
        )
        .await;
        let got = up.consume(&poll(10, 30_000, 30_000)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event.id, p.id);
        up.ack(&[Ack::of(&got[0])]).await.unwrap();
    }
    hub.stop().await;
}

#[tokio::test]
async fn the_reconciliation_view_shows_what_is_not_acknowledged() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["user.*"]).await;
    let billing = hub.app("billing", &["order.*"]).await;
    let pending = publish(&crm, event("user.created", "acme")).await;
    let failing = publish(&crm, event("order.created", "acme")).await;
    let done = publish(&crm, event("user.deleted", "acme")).await;
    publish(&crm, event("user.created", "globex")).await;
    let got = billing.consume(&poll(1, 0, 30_000)).await.unwrap();
    billing
        .nack(&Nack::of(&got[0], "ledger locked"))
        .await
        .unwrap();
    let hr_got = hr.consume(&poll(10, 0, 30_000)).await.unwrap();
    let to_ack = hr_got.iter().find(|d| d.event.id == done.id).unwrap();
    hr.ack(&[Ack::of(to_ack)]).await.unwrap();
    let view = hub
        .admin
        .unacknowledged("acme", 0, None, None)
        .await
        .unwrap();
    let rows: Vec<(&str, &str, DeliveryStatus, u32)> = view
        .unacknowledged
        .iter()
        .map(|r| {
            (
                r.event.id.as_str(),
                r.delivery.target.as_str(),
                r.delivery.status,
                r.delivery.attempts,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (pending.id.as_str(), "hr", DeliveryStatus::InFlight, 1),
            (failing.id.as_str(), "billing", DeliveryStatus::Pending, 1)
        ]
    );
    assert_eq!(
        view.unacknowledged[1].delivery.last_error.as_deref(),
        Some("ledger locked")
    );
    // Nothing is an hour old yet.
    assert!(
        hub.admin
            .unacknowledged("acme", 3_600_000, None, None)
            .await
            .unwrap()
            .unacknowledged
            .is_empty()
    );
    // An app sees only its own part.
    let mine = billing.unacknowledged("acme", 0, None, None).await.unwrap();
    assert_eq!(mine.unacknowledged.len(), 1);
    hub.stop().await;
}

#[tokio::test]
async fn bad_requests_on_dead_letters_and_leases() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["*"]).await;
    let p = publish(&crm, event("user.created", "acme")).await;
    // Requeue of a delivery that is not dead: 409, nothing changes.
    let live = p.deliveries[0].delivery_id.clone();
    assert_rejected(
        hub.admin.requeue(std::slice::from_ref(&live)).await,
        409,
        "not_dead",
        None,
    );
    assert_rejected(
        hub.admin.requeue(&["dlv_999999".to_owned()]).await,
        404,
        "unknown_delivery",
        None,
    );
    let bad_time = DeadFilter {
        since: Some("last tuesday".into()),
        ..Default::default()
    };
    assert_rejected(
        hub.admin.dead_letters(&bad_time, None, None).await,
        400,
        "validation_failed",
        Some("since"),
    );
    assert_rejected(
        hub.admin.requeue_matching(&bad_time).await,
        400,
        "validation_failed",
        Some("filter.since"),
    );
    let (status, reply) = hub
        .admin
        .raw(
            reqwest::Method::POST,
            "/v1/dead-letters/requeue",
            Some(b"{}".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{reply}");
    // Extend of a lease not held: another app's delivery looks unknown.
    let got = hr.consume(&poll(1, 0, 30_000)).await.unwrap();
    assert_rejected(
        crm.extend(&got[0], 1_000).await,
        404,
        "unknown_delivery",
        None,
    );
    let stale = switchboard_client::Delivery {
        attempt: 9,
        ..got[0].clone()
    };
    assert_rejected(hr.extend(&stale, 1_000).await, 409, "lease_lost", None);
    let (status, _) = hr
        .raw(
            reqwest::Method::POST,
            &format!("/v1/deliveries/{live}/extend"),
            Some(br#"{"lease_ms": 1}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert_eq!(
        lookup(&crm, &p.id).await.deliveries[0].status,
        DeliveryStatus::InFlight
    );
    hub.stop().await;
}

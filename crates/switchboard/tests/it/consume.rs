//! Consuming: long-poll wake-up, leases, ack, nack, retries, dead letters, the SDK consumer.

use std::time::Duration;

use serde_json::json;
use switchboard_client::{
    Ack, ConsumeRequest, Consumer, DeliveryStatus, HandlerError, Nack, NewApp, NewEvent,
};
use tokio_util::sync::CancellationToken;

use crate::harness::{Hub, assert_rejected, event, lookup, publish};

fn poll(wait_ms: u64, lease_ms: u64) -> ConsumeRequest {
    ConsumeRequest {
        max: 10,
        wait_ms,
        lease_ms,
    }
}

#[tokio::test]
async fn a_waiting_consumer_wakes_on_publish() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["user.*"]).await;
    // Long-poll first (far longer than the test needs), then publish.
    let waiting = tokio::spawn({
        let hr = hr.clone();
        async move { hr.consume(&poll(60_000, 30_000)).await.unwrap() }
    });
    // The poll must be parked before the publish for this to test the wake-up; an empty
    // first lease is what the server does, so publishing any time after spawn is valid: if
    // the publish wins the race the poll simply finds it at once.
    let p = publish(&crm, event("user.created", "acme")).await;
    let got = waiting.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event.id, p.id);
    assert_eq!(got[0].attempt, 1);
    hub.stop().await;
}

/// The fields of a `user.created` the consumer below reads; the rest of the data is skipped.
#[derive(Debug, PartialEq, serde::Deserialize)]
struct UserCreated {
    user_id: u64,
    email: String,
}

#[tokio::test]
async fn consume_as_reads_each_events_data_into_the_callers_type() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["user.*"]).await;
    let data = json!({"user_id": 42, "email": "ada@example.com", "tags": ["a", {"b": null}]});
    let p = publish(&crm, NewEvent::new("user.created", "acme", data)).await;
    let got = hr
        .consume_as::<UserCreated>(&poll(0, 30_000))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event.id, p.id);
    let expected = UserCreated {
        user_id: 42,
        email: "ada@example.com".into(),
    };
    assert_eq!(got[0].event.data, expected);
    assert_eq!(hr.ack(&[Ack::of(&got[0])]).await.unwrap(), 1);
    hub.stop().await;
}

#[tokio::test]
async fn consume_as_a_type_the_data_does_not_fit_fails_and_leaves_the_lease_to_expire() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["user.*"]).await;
    publish(&crm, event("user.created", "acme")).await;
    let err = hr
        .consume_as::<UserCreated>(&poll(0, 100))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, switchboard_client::Error::Decode(m) if m.contains("user_id")),
        "{err:?}"
    );
    // The lease was taken: the delivery comes back on its next attempt once it expires.
    let again = hr.consume(&poll(5_000, 30_000)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    hub.stop().await;
}

#[tokio::test]
async fn an_empty_poll_returns_an_empty_list() {
    let hub = Hub::start().await;
    let hr = hub.app("hr", &["*"]).await;
    assert!(hr.consume(&poll(20, 30_000)).await.unwrap().is_empty());
    assert!(hr.consume(&poll(0, 30_000)).await.unwrap().is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn ack_is_recorded_with_data_and_latency() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["*"]).await;
    let p = publish(&crm, event("user.created", "acme")).await;
    let got = hr.consume(&poll(0, 30_000)).await.unwrap();
    let n = hr
        .ack(&[Ack::of(&got[0]).with_data(json!({"employee_id": 7}))])
        .await
        .unwrap();
    assert_eq!(n, 1);
    let seen = lookup(&crm, &p.id).await;
    let d = &seen.deliveries[0];
    assert_eq!(d.status, DeliveryStatus::Acknowledged);
    assert_eq!(d.ack_data, Some(json!({"employee_id": 7})));
    assert!(d.latency_ms.is_some());
    assert!(d.acknowledged_at.is_some());
    assert_eq!(d.history.len(), 1);
    assert_eq!(d.history[0].outcome.as_deref(), Some("acknowledged"));
    // Nothing more to hand out.
    assert!(hr.consume(&poll(0, 30_000)).await.unwrap().is_empty());
    // A repeated ack is harmless.
    assert_eq!(hr.ack(&[Ack::of(&got[0])]).await.unwrap(), 0);
    hub.stop().await;
}

#[tokio::test]
async fn an_expired_lease_is_redelivered() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub
        .app_with(NewApp {
            backoff: Some("0ms".into()),
            ..NewApp::new("hr", ["*"])
        })
        .await;
    let p = publish(&crm, event("user.created", "acme")).await;
    let first = hr.consume(&poll(0, 100)).await.unwrap();
    assert_eq!(first.len(), 1);
    // Do not ack: the sweeper returns it when the 100 ms lease ends, and the long-poll wakes.
    let second = hr.consume(&poll(30_000, 30_000)).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].delivery_id, first[0].delivery_id);
    assert_eq!(second[0].attempt, 2);
    // The old lease holder cannot ack any more.
    assert_rejected(hr.ack(&[Ack::of(&first[0])]).await, 409, "lease_lost", None);
    hr.ack(&[Ack::of(&second[0])]).await.unwrap();
    let seen = lookup(&crm, &p.id).await;
    let outcomes: Vec<Option<&str>> = seen.deliveries[0]
        .history
        .iter()
        .map(|a| a.outcome.as_deref())
        .collect();
    assert_eq!(outcomes, [Some("timed_out"), Some("acknowledged")]);
    hub.stop().await;
}

#[tokio::test]
async fn nack_retries_then_dead_after_max_attempts() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub
        .app_with(NewApp {
            max_attempts: Some(3),
            backoff: Some("0ms".into()),
            ..NewApp::new("hr", ["*"])
        })
        .await;
    let p = publish(&crm, event("user.created", "acme")).await;
    for attempt in 1..=3 {
        let got = hr.consume(&poll(5_000, 30_000)).await.unwrap();
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(got[0].attempt, attempt);
        let outcome = hr
            .nack(&Nack::of(&got[0], format!("database down ({attempt})")))
            .await
            .unwrap();
        let expect = if attempt < 3 {
            DeliveryStatus::Pending
        } else {
            DeliveryStatus::Dead
        };
        assert_eq!(outcome.status, expect);
    }
    assert!(hr.consume(&poll(0, 30_000)).await.unwrap().is_empty());
    let seen = lookup(&crm, &p.id).await;
    let d = &seen.deliveries[0];
    assert_eq!(d.status, DeliveryStatus::Dead);
    assert_eq!(d.attempts, 3);
    assert_eq!(d.last_error.as_deref(), Some("database down (3)"));
    assert_eq!(d.history.len(), 3);
    hub.stop().await;
}

#[tokio::test]
async fn a_permanent_nack_is_dead_at_once() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["*"]).await;
    let p = publish(&crm, event("user.created", "acme")).await;
    let got = hr.consume(&poll(0, 30_000)).await.unwrap();
    let nack = Nack {
        permanent: true,
        ..Nack::of(&got[0], "unknown user schema")
    };
    assert_eq!(hr.nack(&nack).await.unwrap().status, DeliveryStatus::Dead);
    assert_eq!(
        lookup(&crm, &p.id).await.deliveries[0].status,
        DeliveryStatus::Dead
    );
    hub.stop().await;
}

#[tokio::test]
async fn nack_retry_in_delays_the_next_attempt() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["*"]).await;
    publish(&crm, event("user.created", "acme")).await;
    let got = hr.consume(&poll(0, 30_000)).await.unwrap();
    let nack = Nack {
        retry_in_ms: Some(3_600_000),
        ..Nack::of(&got[0], "later")
    };
    let outcome = hr.nack(&nack).await.unwrap();
    assert_eq!(outcome.status, DeliveryStatus::Pending);
    assert!(outcome.retry_at.is_some());
    assert!(
        hr.consume(&poll(0, 30_000)).await.unwrap().is_empty(),
        "not before an hour"
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_long_poll_wakes_when_a_retry_is_due() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["*"]).await;
    publish(&crm, event("user.created", "acme")).await;
    let got = hr.consume(&poll(0, 30_000)).await.unwrap();
    hr.nack(&Nack {
        retry_in_ms: Some(200),
        ..Nack::of(&got[0], "soon")
    })
    .await
    .unwrap();
    let again = hr.consume(&poll(30_000, 30_000)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    hub.stop().await;
}

#[tokio::test]
async fn two_consumers_of_one_app_never_share_a_lease() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["*"]).await;
    let batch: Vec<_> = (0..50).map(|_| event("user.created", "acme")).collect();
    crm.publish_batch(&batch).await.unwrap();
    let (a, b) = tokio::join!(
        hr.consume(&ConsumeRequest {
            max: 30,
            wait_ms: 0,
            lease_ms: 30_000
        }),
        hr.consume(&ConsumeRequest {
            max: 30,
            wait_ms: 0,
            lease_ms: 30_000
        })
    );
    let mut ids: Vec<String> = a
        .unwrap()
        .into_iter()
        .chain(b.unwrap())
        .map(|d| d.delivery_id)
        .collect();
    assert_eq!(ids.len(), 50);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50, "no delivery handed out twice");
    hub.stop().await;
}

#[tokio::test]
async fn the_sdk_consumer_acks_ok_and_nacks_errors() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub
        .app_with(NewApp {
            backoff: Some("0ms".into()),
            ..NewApp::new("hr", ["*"])
        })
        .await;
    let batch: Vec<_> = (0..20)
        .map(|i| switchboard_client::NewEvent::new("user.created", "acme", json!({"i": i})))
        .collect();
    let published = crm.publish_batch(&batch).await.unwrap();

    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(Consumer::new(hr.clone()).max(8).wait_ms(10_000).run(
        shutdown.clone(),
        move |d| {
            let seen_tx = seen_tx.clone();
            async move {
                // Every odd event fails its first attempt.
                let odd = d.event.data["i"].as_i64().unwrap_or(0) % 2 == 1;
                if odd && d.attempt == 1 {
                    return Err(HandlerError::new("flaky downstream"));
                }
                seen_tx.send(d.event.id.clone()).unwrap();
                Ok(Some(json!({"handled": true})))
            }
        },
    ));
    let mut handled = std::collections::HashSet::new();
    while handled.len() < 20 {
        let id = tokio::time::timeout(Duration::from_secs(30), seen_rx.recv())
            .await
            .unwrap()
            .unwrap();
        handled.insert(id);
    }
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    for (i, p) in published.iter().enumerate() {
        let d = &lookup(&crm, &p.id).await.deliveries[0];
        assert_eq!(d.status, DeliveryStatus::Acknowledged, "event {i}");
        assert_eq!(d.ack_data, Some(json!({"handled": true})));
        let expected_attempts = if i % 2 == 1 { 2 } else { 1 };
        assert_eq!(d.attempts, expected_attempts, "event {i}");
        if i % 2 == 1 {
            assert_eq!(d.history[0].error.as_deref(), Some("flaky downstream"));
        }
    }
    hub.stop().await;
}

#[tokio::test]
async fn a_typed_consumer_dead_letters_data_that_does_not_fit_and_handles_the_rest() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["user.*"]).await;
    let fits = json!({"user_id": 7, "email": "ada@example.com", "extra": [1, 2]});
    let batch = [
        NewEvent::new("user.created", "acme", fits),
        NewEvent::new("user.created", "acme", json!({"user_id": "seven"})),
    ];
    let published = crm.publish_batch(&batch).await.unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(Consumer::new(hr.clone()).wait_ms(10_000).run_as(
        shutdown.clone(),
        move |d: switchboard_client::Delivery<UserCreated>| {
            let seen_tx = seen_tx.clone();
            async move {
                seen_tx.send(d.event.data).unwrap();
                Ok(None)
            }
        },
    ));
    let handled = tokio::time::timeout(Duration::from_secs(30), seen_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        handled,
        UserCreated {
            user_id: 7,
            email: "ada@example.com".into()
        }
    );
    // The batch in progress is settled before `run_as` returns: the fit's ack, the misfit's
    // nack.
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    let fit = lookup(&crm, &published[0].id).await.deliveries.remove(0);
    assert_eq!(fit.status, DeliveryStatus::Acknowledged);
    let misfit = lookup(&crm, &published[1].id).await.deliveries.remove(0);
    assert_eq!(misfit.status, DeliveryStatus::Dead);
    assert_eq!(misfit.attempts, 1, "never retried");
    let error = misfit.last_error.unwrap_or_default();
    assert!(
        error.starts_with("data does not fit the consumer's type: invalid type: string \"seven\""),
        "{error}"
    );
    assert!(seen_rx.try_recv().is_err(), "the handler saw only the fit");
    hub.stop().await;
}

#[tokio::test]
async fn shutdown_ends_a_long_poll_in_progress() {
    let hub = Hub::start().await;
    let hr = hub.app("hr", &["*"]).await;
    let waiting = tokio::spawn(async move { hr.consume(&poll(60_000, 30_000)).await });
    // Make sure the poll is in before stopping: a second request on another connection is
    // answered only after the first has been accepted by the same server.
    hub.admin.health().await.unwrap();
    hub.stop().await;
    // The poll either came back empty (shutdown answered it) or was cut; it did not hang
    // for 60 s, or `stop` above would not have returned.
    match waiting.await.unwrap() {
        Ok(list) => assert!(list.is_empty()),
        Err(e) => assert!(
            matches!(e, switchboard_client::Error::Transport(_)),
            "{e:?}"
        ),
    }
}

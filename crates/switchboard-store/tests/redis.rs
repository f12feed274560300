//! The Redis backend against the conformance suite, each case on a `redis-server` of its own
//! (free loopback port, temp dir, `appendfsync always`), plus what only Redis has: several
//! stores on one Redis, wake-ups between them, surviving a Redis restart.

use std::sync::Arc;

use switchboard_store::conformance::{self, Fixture, T0};
use switchboard_store::redis::RedisStore;
use switchboard_store::testing::RedisServer;
use switchboard_store::{Store, StoreError};

async fn redis_fixture() -> Fixture {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    Fixture {
        store: Arc::new(store),
        guard: Box::new(server),
    }
}

switchboard_store::conformance_tests!(redis_fixture);

#[tokio::test]
async fn a_publish_on_one_store_wakes_the_other() {
    let server = RedisServer::start();
    let a = RedisStore::connect(&server.url()).await.unwrap();
    let b = RedisStore::connect(&server.url()).await.unwrap();
    let mut wakeups = b.wakeups().expect("redis tells other nodes");
    // The subscription is live once a wake-up sent after it arrives: publish until one does
    // (each publish is a real event; the first usually suffices).
    let mut published = 0;
    let woken = loop {
        let ev = conformance::event("crm", "acme", "user.created", T0);
        conformance::publish_to(&a, ev, &["hr"]).await;
        published += 1;
        match tokio::time::timeout(std::time::Duration::from_millis(200), wakeups.recv()).await {
            Ok(app) => break app.unwrap(),
            Err(_) => assert!(published < 50, "no wake-up reached the other store"),
        }
    };
    assert_eq!(woken, conformance::app("hr"));
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn redis_down_is_unavailable_and_the_store_reconnects() {
    let mut server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let ev = conformance::event("crm", "acme", "user.created", T0);
    let first = conformance::publish_to(&store, ev, &["hr"]).await;
    server.kill();
    let down = store.event(first.id.clone()).await;
    assert!(matches!(down, Err(StoreError::Unavailable(_))), "{down:?}");
    server.restart();
    // The first calls after the restart may still meet the old connection: bounded retry.
    let mut tries = 0;
    let back = loop {
        match store.event(first.id.clone()).await {
            Ok(found) => break found,
            Err(StoreError::Unavailable(_)) if tries < 100 => tries += 1,
            Err(e) => panic!("the store did not reconnect: {e}"),
        }
    };
    assert!(
        back.is_some(),
        "the event survived the kill (appendfsync always)"
    );
    store.close().await;
}

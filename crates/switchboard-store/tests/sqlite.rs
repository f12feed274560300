//! The SQLite backend against the conformance suite, plus what only SQLite has (files,
//! migrations, reopening).

use std::sync::Arc;

use std::time::Duration;

use switchboard_core::{DeliveryStatus, Timestamp};
use switchboard_store::conformance::{self, Fixture, T0};
use switchboard_store::sqlite::{SqliteOptions, SqliteStore};
use switchboard_store::{AckItem, ChannelQuery, EventQuery, ExtendItem, LeaseRequest, Store};

async fn sqlite_fixture() -> Fixture {
    fixture_with(&SqliteOptions::default())
}

/// A store in a directory of its own, opened with `options`.
fn fixture_with(options: &SqliteOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with(dir.path(), options).unwrap();
    Fixture {
        store: Arc::new(store),
        guard: Box::new(dir),
    }
}

switchboard_store::conformance_tests!(sqlite_fixture);

/// The suite again on a store whose table of open deliveries leaves out only the newest
/// delivery: its mark moves at nearly every commit, so every read of the open deliveries
/// sees both the table and the rows above the mark.
mod with_a_short_open_tail {
    use super::*;

    async fn fixture() -> Fixture {
        fixture_with(&SqliteOptions {
            open_tail: 2,
            ..SqliteOptions::default()
        })
    }

    switchboard_store::conformance_tests!(fixture);
}

/// A store that queues each write at its first poll (`together` off), for tests that order
/// writes by starting each in turn (`conformance::start`).
fn in_order(dir: &std::path::Path) -> SqliteStore {
    let options = SqliteOptions {
        together: false,
        ..SqliteOptions::default()
    };
    SqliteStore::open_with(dir, &options).unwrap()
}

/// A connection of the test's own to the store's database file in `dir`.
fn database(dir: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(switchboard_store::sqlite::DB_FILE)).unwrap()
}

#[tokio::test]
async fn a_lease_of_remembered_and_forgotten_events_hands_each_its_own() {
    // The store keeps the latest events in memory for leases and reads the others: one
    // lease that takes both gets every event right, in order.
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        recent_events: 4,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(dir.path(), &options).unwrap();
    conformance::register(&store, "hr", &["*"], 8).await;
    let mut published = Vec::new();
    for n in 0..10 {
        let ev = conformance::event("crm", "acme", "user.created", T0.plus_ms(n));
        published.push(conformance::publish_to(&store, ev, &["hr"]).await.id);
    }
    let leased = conformance::lease(&store, "hr", 10, T0.plus_ms(10)).await;
    let ids: Vec<_> = leased.iter().map(|d| d.event.id.clone()).collect();
    assert_eq!(ids, published);
    for d in &leased {
        let stored = store
            .event(d.event.id.clone())
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(d.event.data, stored.event.data);
        assert_eq!(d.event.time, stored.event.time);
    }
    store.close().await;
}

#[tokio::test]
async fn a_publish_out_of_step_with_the_events_table_fails_whole_and_the_next_is_stored() {
    // The writer gives event seqs in memory and SQLite assigns them (see `insert_events`): an
    // event written behind the writer's back puts the two out of step. The publish that finds
    // it out fails and leaves nothing; the next one reads the table again.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    conformance::register(&store, "hr", &["*"], 8).await;
    let publish = |n: u64| conformance::event("crm", "acme", "user.created", T0.plus_ms(n));
    conformance::publish_to(&store, publish(0), &["hr"]).await;
    let behind = database(dir.path());
    behind.busy_timeout(Duration::from_secs(5)).unwrap();
    behind
        .execute(
            "INSERT INTO events (id, tenant, type, source, time, data) \
             VALUES ('01BEHINDTHEWRITERSBACK0000', 'acme', 'user.created', 'crm', 0, '{}')",
            [],
        )
        .unwrap();
    let out_of_step = store
        .publish(
            vec![switchboard_store::NewEvent {
                event: publish(1),
                targets: vec![conformance::route("hr")],
            }],
            T0.plus_ms(1),
        )
        .await;
    assert!(out_of_step.is_err(), "{out_of_step:?}");
    let next = conformance::publish_to(&store, publish(2), &["hr"]).await;
    let stored = store.event(next.id).await.unwrap().expect("stored");
    assert_eq!(stored.deliveries.len(), 1);
    let page = store
        .events(EventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 3, "the first, the one behind, the next");
    let leased = conformance::lease(&store, "hr", 10, T0.plus_ms(3)).await;
    assert_eq!(leased.len(), 2, "each delivery with its own event");
    assert!(leased.iter().all(|d| d.event.tenant.as_str() == "acme"));
    store.close().await;
}

/// Checks that each delivery of `published` has the id the publish answered with; returns
/// them as (id, target).
async fn check_answered_ids_are_stored(
    store: &SqliteStore,
    published: &[switchboard_store::Published],
) -> Vec<(String, String)> {
    let mut answered = Vec::new();
    for p in published {
        let record = store.event(p.id.clone()).await.unwrap().expect("stored");
        let mut stored: Vec<(String, String)> = record
            .deliveries
            .iter()
            .map(|d| (d.id.to_string(), d.target.to_string()))
            .collect();
        let mut told: Vec<(String, String)> = p
            .deliveries
            .iter()
            .map(|d| (d.id.to_string(), d.target.to_string()))
            .collect();
        stored.sort();
        told.sort();
        assert_eq!(stored, told, "the ids the publish answered are the rows'");
        answered.extend(told);
    }
    answered
}

/// Three events of entities `user-0` to `user-2`, each to `targets`.
fn overtaking_batch(targets: &[&str]) -> Vec<switchboard_store::NewEvent> {
    (0..3)
        .map(|n| {
            let mut event = conformance::event("crm", "acme", "user.created", T0.plus_ms(n));
            event.entity_id = Some(format!("user-{n}"));
            switchboard_store::NewEvent {
                event,
                targets: targets.iter().map(|t| conformance::route(t)).collect(),
            }
        })
        .collect()
}

// A publish holds its unordered deliveries back to insert them together, their ids left to
// SQLite, unless one inserted at once (ordered, or handed to a waiting consumer) took a
// larger id meanwhile. In both tests every event's held-back delivery is overtaken.

#[tokio::test]
async fn deliveries_held_back_keep_their_ids_when_an_ordered_one_overtakes_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    conformance::register(&store, "billing", &["*"], 8).await;
    conformance::register(&store, "hr", &["*"], 8).await;
    let published = store
        .publish(overtaking_batch(&["billing", "!hr"]), T0)
        .await
        .unwrap();
    let answered = check_answered_ids_are_stored(&store, &published).await;
    let expected: Vec<_> = published.iter().map(|p| p.id.clone()).collect();
    for app in ["billing", "hr"] {
        let leased = conformance::lease(&store, app, 10, T0.plus_ms(10)).await;
        let events: Vec<_> = leased.iter().map(|d| d.event.id.clone()).collect();
        assert_eq!(events, expected, "{app} leases each event once, in order");
        for d in &leased {
            assert!(answered.contains(&(d.id.to_string(), app.to_owned())));
        }
    }
    store.close().await;
}

#[tokio::test]
async fn deliveries_held_back_keep_their_ids_when_a_handed_one_overtakes_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = in_order(dir.path());
    conformance::register(&store, "billing", &["*"], 8).await;
    conformance::register(&store, "hr", &["*"], 8).await;
    let never = std::pin::pin!(std::future::pending());
    let mut waiting = store.lease_waiting(lease_request(10, T0), Duration::from_secs(10), never);
    conformance::start(&mut waiting).await;
    let published = store
        .publish(overtaking_batch(&["billing", "hr"]), T0)
        .await
        .unwrap();
    let answered = check_answered_ids_are_stored(&store, &published).await;
    let handed = waiting.await.unwrap();
    assert_eq!(
        handed.deliveries.len(),
        3,
        "hr's waiting consumer took them"
    );
    for d in &handed.deliveries {
        assert!(answered.contains(&(d.id.to_string(), "hr".to_owned())));
    }
    let billing = conformance::lease(&store, "billing", 10, T0.plus_ms(10)).await;
    let expected: Vec<_> = published.iter().map(|p| p.id.clone()).collect();
    let events: Vec<_> = billing.iter().map(|d| d.event.id.clone()).collect();
    assert_eq!(events, expected);
    store.close().await;
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    conformance::register(&store, "hr", &["*"], 8).await;
    let ev = conformance::event("crm", "acme", "user.created", T0);
    let p = conformance::publish_to(&store, ev, &["hr"]).await;
    store.close().await;

    let reopened = SqliteStore::open(dir.path()).unwrap();
    let record = reopened.event(p.id).await.unwrap().expect("event survives");
    assert_eq!(record.deliveries.len(), 1);
    assert_eq!(reopened.list_apps().await.unwrap().len(), 1);
    let page = reopened
        .events(EventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);
    reopened.close().await;
}

#[tokio::test]
async fn delivery_ids_continue_after_reopening() {
    // The writer keeps the next delivery id in memory once read: a reopened store must read
    // it again, not start over.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let event = |n: u64| conformance::event("crm", "acme", "user.created", T0.plus_ms(n));
    let targets = ["hr", "billing"];
    let first = conformance::publish_to(&store, event(0), &targets).await;
    let second = conformance::publish_to(&store, event(1), &targets).await;
    store.close().await;
    let reopened = SqliteStore::open(dir.path()).unwrap();
    let third = conformance::publish_to(&reopened, event(2), &targets).await;
    let ids: Vec<String> = [first, second, third]
        .iter()
        .flat_map(|p| p.deliveries.iter().map(|d| d.id.to_string()))
        .collect();
    assert_eq!(ids, ["dlv_1", "dlv_2", "dlv_3", "dlv_4", "dlv_5", "dlv_6"]);
    reopened.close().await;
}

#[tokio::test]
async fn leases_expire_on_their_deadlines_after_reopening() {
    // Lease deadlines are kept in the writer's memory: a reopened store loads them again.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    conformance::register(&store, "hr", &["*"], 8).await;
    for n in 0..3 {
        let ev = conformance::event("crm", "acme", "user.created", T0.plus_ms(n));
        conformance::publish_to(&store, ev, &["hr"]).await;
    }
    let leased = conformance::lease(&store, "hr", 3, T0.plus_ms(2)).await;
    let deadline = leased[0].lease_expires_at;
    let extended = store
        .extend_lease(
            conformance::app("hr"),
            ExtendItem {
                id: leased[1].id.clone(),
                attempt: Some(1),
                lease_ms: 120_000,
            },
            T0,
        )
        .await
        .unwrap();
    let acked = vec![AckItem {
        id: leased[2].id.clone(),
        attempt: Some(1),
        data: None,
    }];
    store.ack(conformance::app("hr"), acked, T0).await.unwrap();
    store.close().await;

    let reopened = SqliteStore::open(dir.path()).unwrap();
    let early = reopened
        .expire_leases(Timestamp(deadline.millis() - 1), 100)
        .await
        .unwrap();
    assert_eq!((early.count, early.next_deadline), (0, Some(deadline)));
    let due = reopened.expire_leases(deadline, 100).await.unwrap();
    assert_eq!(due.changes.len(), 1);
    assert_eq!(
        due.changes[0].id, leased[0].id,
        "the lease that was not extended"
    );
    assert_eq!(due.next_deadline, Some(extended));
    let last = reopened.expire_leases(extended, 100).await.unwrap();
    assert_eq!(last.changes.len(), 1);
    assert_eq!(
        last.changes[0].id, leased[1].id,
        "the extended lease, at its new deadline"
    );
    assert_eq!(last.next_deadline, None, "the acked one never expires");
    reopened.close().await;
}

#[tokio::test]
async fn deliveries_pending_at_an_upgrade_from_schema_7_stay_leasable() {
    // Schema 8 moved the ready queue from an index into the writer's memory: a data
    // directory written before it (its index back, its version 7) is upgraded on open, and
    // what was pending, or pending a retry, is leased in its order.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    conformance::register(&store, "hr", &["*"], 8).await;
    let mut published = Vec::new();
    for n in 0..3 {
        let ev = conformance::event("crm", "acme", "user.created", T0.plus_ms(n));
        published.push(conformance::publish_to(&store, ev, &["hr"]).await);
    }
    let first = conformance::lease(&store, "hr", 1, T0.plus_ms(3)).await;
    let nack = switchboard_store::NackItem {
        id: first[0].id.clone(),
        attempt: Some(1),
        error: "later".into(),
        retry_in_ms: Some(60_000),
        permanent: false,
    };
    store
        .nack(conformance::app("hr"), nack, T0.plus_ms(4))
        .await
        .unwrap();
    store.close().await;
    downgrade(dir.path(), 7);

    let upgraded = SqliteStore::open(dir.path()).unwrap();
    let now = T0.plus_ms(5);
    let leased = conformance::lease(&upgraded, "hr", 10, now).await;
    let ids: Vec<_> = leased.iter().map(|d| d.id.clone()).collect();
    let later: Vec<_> = published[1..]
        .iter()
        .map(|p| p.deliveries[0].id.clone())
        .collect();
    assert_eq!(ids, later, "the pending ones, in publish order");
    let retried = conformance::lease(&upgraded, "hr", 10, now.plus_ms(60_000)).await;
    assert_eq!(retried.len(), 1, "the nacked one, at its retry");
    assert_eq!((&retried[0].id, retried[0].attempt), (&first[0].id, 2));
    upgraded.close().await;
}

/// Turns the database in `dir` back into schema `version` (8 or 7), as a build of that
/// version left it: migrations 15 (every open delivery in `open_deliveries` again), 14 (the unique index on event ids again), 13 (acks folded into their rows, the open deliveries' index
/// again), 12 (the index on `event_seq` again, no delivery ranges on
/// events), 11 (the dead-letter and entity-order indexes on `status` again), 10 and 9 undone (the open deliveries' index on channel names, no channel ids)
/// and, for 7, migration 8 (the index of ready deliveries back).
fn downgrade(dir: &std::path::Path, version: u32) {
    let db = database(dir);
    db.execute_batch(
        "INSERT INTO open_deliveries (channel, id) SELECT d.channel, d.id FROM deliveries d \
         WHERE d.id > (SELECT below FROM open_mark) AND d.finished_at IS NULL \
         AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.id = d.id);
         DROP TABLE open_mark;",
    )
    .unwrap();
    db.execute_batch(
        "CREATE TABLE events_old (
             seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL,
             type TEXT NOT NULL, source TEXT NOT NULL, time INTEGER NOT NULL, idem_key TEXT,
             named_targets TEXT, entity_id TEXT, correlation_id TEXT, causation_id TEXT,
             historical INTEGER NOT NULL DEFAULT 0, data TEXT NOT NULL,
             first_delivery INTEGER NOT NULL DEFAULT 1, last_delivery INTEGER NOT NULL DEFAULT 0);
         INSERT INTO events_old SELECT * FROM events;
         DROP TABLE events; DROP TABLE event_ids;
         ALTER TABLE events_old RENAME TO events;
         CREATE UNIQUE INDEX events_idem ON events(source, idem_key) WHERE idem_key IS NOT NULL;
         CREATE INDEX events_tenant ON events(tenant, seq);",
    )
    .unwrap();
    db.execute_batch(
        "DROP VIEW delivery_rows;
         UPDATE deliveries SET status = 2, attempts = a.attempt,
             leased_at = coalesce(a.leased_at, deliveries.leased_at), ack_data = a.data,
             acked_at = a.acked_at, updated_at = a.acked_at, finished_at = a.acked_at,
             lease_expires_at = NULL
             FROM acks a WHERE a.id = deliveries.id;
         DROP TABLE acks; DROP TABLE open_deliveries;
         CREATE INDEX deliveries_channel_open ON deliveries(channel, id) WHERE finished_at IS NULL;",
    )
    .unwrap();
    db.execute_batch(
        "CREATE INDEX deliveries_event ON deliveries(event_seq);
         ALTER TABLE events DROP COLUMN first_delivery;
         ALTER TABLE events DROP COLUMN last_delivery;",
    )
    .unwrap();
    db.execute_batch(
        "DROP INDEX deliveries_dead; DROP INDEX deliveries_order;
         ALTER TABLE deliveries DROP COLUMN dead_at; ALTER TABLE deliveries DROP COLUMN open_order;
         CREATE INDEX deliveries_dead ON deliveries(id) WHERE status = 3;
         CREATE INDEX deliveries_order ON deliveries(target, order_key, id)
             WHERE order_key IS NOT NULL AND status IN (0, 1);",
    )
    .unwrap();
    // A closed store's lease log is empty: its leases are written into their rows.
    db.execute_batch(
        "DROP TABLE lease_log; DROP INDEX deliveries_channel_open; DROP INDEX channels_id;
         ALTER TABLE deliveries DROP COLUMN channel; ALTER TABLE channels DROP COLUMN id;
         CREATE INDEX deliveries_channel_open ON deliveries(tenant, source, target, id)
             WHERE finished_at IS NULL;
         PRAGMA user_version = 8;",
    )
    .unwrap();
    if version == 7 {
        db.execute_batch(
            "CREATE INDEX deliveries_ready ON deliveries(target, available_at, id) \
             WHERE status = 0 AND blocked = 0; PRAGMA user_version = 7;",
        )
        .unwrap();
    }
}

#[tokio::test]
async fn open_and_dead_deliveries_at_an_upgrade_from_schema_8_are_found_by_channel() {
    // Schema 9 keys the index of open deliveries on a channel id: a data directory written
    // before it is upgraded on open, and each channel's open deliveries are found through
    // the id its channel got, dead ones too once requeued, and new channels get new ids.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    for target in ["hr", "billing"] {
        conformance::register(&store, target, &["*"], 8).await;
    }
    let mut published = Vec::new();
    for n in 0..3 {
        let ev = conformance::event("crm", "acme", "user.created", T0.plus_ms(n));
        published.push(conformance::publish_to(&store, ev, &["hr", "billing"]).await);
    }
    // hr acks its first delivery; billing's first dies.
    let hr = conformance::lease(&store, "hr", 1, T0.plus_ms(3)).await;
    let acked = vec![AckItem {
        id: hr[0].id.clone(),
        attempt: Some(1),
        data: None,
    }];
    store
        .ack(conformance::app("hr"), acked, T0.plus_ms(3))
        .await
        .unwrap();
    let billing = conformance::lease(&store, "billing", 1, T0.plus_ms(3)).await;
    let dead = switchboard_store::NackItem {
        id: billing[0].id.clone(),
        attempt: Some(1),
        error: "bad".into(),
        retry_in_ms: None,
        permanent: true,
    };
    store
        .nack(conformance::app("billing"), dead, T0.plus_ms(3))
        .await
        .unwrap();
    store.close().await;
    downgrade(dir.path(), 8);

    let upgraded = SqliteStore::open(dir.path()).unwrap();
    let now = T0.plus_ms(10);
    let open_in_acme = |store: SqliteStore| async move {
        let page = store
            .unacknowledged(switchboard_store::UnackedQuery {
                tenant: switchboard_core::TenantId::parse("acme").unwrap(),
                visible_to: None,
                created_before: now,
                limit: 100,
                cursor: None,
            })
            .await
            .unwrap();
        let ids: Vec<_> = page.items.into_iter().map(|r| r.delivery.id).collect();
        (store, ids)
    };
    let delivery = |event: usize, target: usize| published[event].deliveries[target].id.clone();
    let (upgraded, open) = open_in_acme(upgraded).await;
    let mut expected = vec![
        delivery(1, 0),
        delivery(1, 1),
        delivery(2, 0),
        delivery(2, 1),
    ];
    assert_eq!(
        open, expected,
        "every open delivery of both channels, oldest first"
    );

    let requeued = upgraded
        .requeue(switchboard_store::RequeueRequest {
            selector: switchboard_store::RequeueSelector::Ids(vec![delivery(0, 1)]),
            by: "admin".into(),
            visible_to: None,
            now,
        })
        .await
        .unwrap();
    assert_eq!(requeued.count, 1);
    let ev = conformance::event("crm", "globex", "user.created", now);
    let later = conformance::publish_to(&upgraded, ev, &["hr"]).await;
    let (upgraded, open) = open_in_acme(upgraded).await;
    expected.insert(0, delivery(0, 1));
    assert_eq!(open, expected, "the requeued dead one too, in its place");

    let channels = upgraded
        .channels(ChannelQuery {
            tenant: None,
            since: T0,
            now,
        })
        .await
        .unwrap();
    let oldest: Vec<(String, String, Option<Timestamp>)> = channels
        .iter()
        .map(|c| (c.tenant.to_string(), c.target.to_string(), c.oldest_open_at))
        .collect();
    let mut expected_oldest = vec![
        ("acme".to_string(), "billing".to_string(), Some(T0)),
        ("acme".to_string(), "hr".to_string(), Some(T0.plus_ms(1))),
        ("globex".to_string(), "hr".to_string(), Some(now)),
    ];
    let mut oldest = oldest;
    oldest.sort();
    expected_oldest.sort();
    assert_eq!(
        oldest, expected_oldest,
        "each channel's oldest open delivery"
    );
    assert_eq!(later.deliveries.len(), 1);
    upgraded.close().await;
}

fn lease_request(max: u32, now: Timestamp) -> LeaseRequest {
    LeaseRequest {
        app: conformance::app("hr"),
        max,
        lease_ms: 30_000,
        now,
    }
}

#[tokio::test]
async fn a_waiting_consumer_is_handed_the_next_publish() {
    let dir = tempfile::tempdir().unwrap();
    let store = in_order(dir.path());
    conformance::register(&store, "hr", &["*"], 8).await;
    let never = std::pin::pin!(std::future::pending());
    let mut waiting = store.lease_waiting(lease_request(10, T0), Duration::from_secs(10), never);
    // Its lease finds nothing and waits before the publish runs (the writer keeps order).
    conformance::start(&mut waiting).await;
    let published_at = T0.plus_ms(500);
    let ev = conformance::event("crm", "acme", "user.created", published_at);
    let p = conformance::publish_to(&store, ev, &["hr"]).await;

    assert_eq!(
        p.deliveries[0].status,
        DeliveryStatus::InFlight,
        "the publish says where its delivery went"
    );
    let handed = waiting.await.unwrap();
    assert_eq!(handed.deliveries.len(), 1);
    let d = &handed.deliveries[0];
    assert_eq!((&d.id, d.attempt), (&p.deliveries[0].id, 1));
    assert_eq!(d.event.id, p.id);
    assert_eq!(
        d.lease_expires_at,
        published_at.plus_ms(30_000),
        "leased by the publish itself"
    );
    let record = store.event(p.id.clone()).await.unwrap().unwrap();
    assert_eq!(record.deliveries[0].status, DeliveryStatus::InFlight);
    let channels = store
        .channels(ChannelQuery {
            tenant: None,
            since: Timestamp(0),
            now: published_at,
        })
        .await
        .unwrap();
    let c = &channels[0];
    assert_eq!((c.published, c.pending, c.in_flight), (1, 0, 1));
    let ack = AckItem {
        id: d.id.clone(),
        attempt: Some(1),
        data: None,
    };
    store
        .ack(conformance::app("hr"), vec![ack], published_at.plus_ms(1))
        .await
        .unwrap();
    let expired = store
        .expire_leases(published_at.plus_ms(60_000), 100)
        .await
        .unwrap();
    assert_eq!(expired.count, 0, "an acked hand-off never expires");
    store.close().await;
}

#[tokio::test]
async fn a_consumer_that_stopped_waiting_is_handed_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    conformance::register(&store, "hr", &["*"], 8).await;
    let gave_up = store
        .lease_waiting(
            lease_request(10, T0),
            Duration::from_millis(1),
            std::pin::pin!(std::future::pending()),
        )
        .await
        .unwrap();
    assert!(gave_up.deliveries.is_empty());
    let ev = conformance::event("crm", "acme", "user.created", T0.plus_ms(5));
    let p = conformance::publish_to(&store, ev, &["hr"]).await;
    let record = store.event(p.id).await.unwrap().unwrap();
    assert_eq!(record.deliveries[0].status, DeliveryStatus::Pending);
    let leased = store
        .lease(lease_request(10, T0.plus_ms(10)))
        .await
        .unwrap();
    assert_eq!(leased.deliveries.len(), 1);
    assert_eq!(leased.deliveries[0].lease_expires_at, T0.plus_ms(30_010));
    store.close().await;
}

#[tokio::test]
async fn a_wake_up_ends_the_wait_and_nothing_is_handed_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    conformance::register(&store, "hr", &["*"], 8).await;
    let woken = std::pin::pin!(std::future::ready(()));
    let left = store
        .lease_waiting(lease_request(10, T0), Duration::from_secs(3600), woken)
        .await
        .unwrap();
    assert!(left.deliveries.is_empty());
    let ev = conformance::event("crm", "acme", "user.created", T0.plus_ms(5));
    let p = conformance::publish_to(&store, ev, &["hr"]).await;
    let record = store.event(p.id).await.unwrap().unwrap();
    assert_eq!(record.deliveries[0].status, DeliveryStatus::Pending);
    store.close().await;
}

/// Ends the wait it is given to, on its first poll, once a publish to `hr` has run to its
/// answer, by which time that publish has handed its delivery to the consumer waiting: the
/// hand-off lands after the wait last looked for one and before it gives up.
struct WokenAfterAPublish<'a> {
    store: &'a SqliteStore,
    published: &'a std::sync::OnceLock<switchboard_store::Published>,
}

impl std::future::Future for WokenAfterAPublish<'_> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let store = self.store;
        // Blocks this poll (the test's only task) while a runtime of its own publishes.
        let published = std::thread::scope(|s| {
            s.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let ev = conformance::event("crm", "acme", "user.created", T0.plus_ms(5));
                runtime.block_on(conformance::publish_to(store, ev, &["hr"]))
            })
            .join()
            .unwrap()
        });
        self.published.set(published).expect("polled once");
        std::task::Poll::Ready(())
    }
}

#[tokio::test]
async fn a_hand_off_that_lands_as_the_wait_ends_reaches_the_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    conformance::register(&store, "hr", &["*"], 8).await;
    let published = std::sync::OnceLock::new();
    let woken = std::pin::pin!(WokenAfterAPublish {
        store: &store,
        published: &published,
    });
    // Parked (the wake-up is first polled once the lease found nothing), the hand-off not
    // there yet when the wait looks; the wake-up runs the publish and ends the wait.
    let left = store
        .lease_waiting(lease_request(10, T0), Duration::from_secs(3600), woken)
        .await
        .unwrap();
    let published = published.get().expect("the wake-up ran the publish");
    assert_eq!(
        published.deliveries[0].status,
        DeliveryStatus::InFlight,
        "the publish handed its delivery over"
    );
    assert_eq!(left.deliveries.len(), 1, "and the consumer got it");
    assert_eq!(left.deliveries[0].id, published.deliveries[0].id);
    store.close().await;
}

#[tokio::test]
async fn concurrent_writers_are_grouped_and_all_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        let store = store.clone();
        tasks.spawn(async move {
            let ev = conformance::event("crm", "acme", "user.created", T0.plus_ms(i));
            conformance::publish_to(&*store, ev, &["hr"]).await.id
        });
    }
    let mut ids = Vec::new();
    while let Some(id) = tasks.join_next().await {
        ids.push(id.unwrap());
    }
    store.close().await;
    let reopened = SqliteStore::open(dir.path()).unwrap();
    for id in ids {
        assert!(reopened.event(id).await.unwrap().is_some());
    }
    reopened.close().await;
}

mod counters {
    //! The counters against a full recount of the stored deliveries, after random work; and
    //! the lease deadlines and leasable deliveries kept in memory against the table.

    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use switchboard_core::{DeliveryId, Timestamp};
    use switchboard_store::conformance::{self, T0, app};
    use switchboard_store::sqlite::SqliteStore;
    use switchboard_store::{
        AckItem, ChannelQuery, DeadFilter, ExtendItem, NackItem, RequeueRequest, RequeueSelector,
        Store,
    };

    const APPS: [&str; 3] = ["hr", "billing", "audit"];

    #[derive(Debug, Clone)]
    enum Op {
        Publish {
            tenant: u8,
            targets: u8,
        },
        Lease {
            app: usize,
            max: u32,
            lease_ms: u64,
        },
        Ack {
            app: usize,
            n: usize,
        },
        Nack {
            app: usize,
            n: usize,
            permanent: bool,
        },
        Extend {
            app: usize,
            lease_ms: u64,
        },
        Advance {
            ms: u64,
        },
        Requeue,
        /// Close the store and open it again on the same files.
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..2, 1u8..8).prop_map(|(tenant, targets)| Op::Publish { tenant, targets }),
            3 => (0usize..3, 1u32..5, prop_oneof![Just(50u64), Just(60_000)])
                .prop_map(|(app, max, lease_ms)| Op::Lease { app, max, lease_ms }),
            2 => (0usize..3, 1usize..3).prop_map(|(app, n)| Op::Ack { app, n }),
            2 => (0usize..3, 1usize..3, any::<bool>())
                .prop_map(|(app, n, permanent)| Op::Nack { app, n, permanent }),
            1 => (0usize..3, prop_oneof![Just(50u64), Just(60_000)])
                .prop_map(|(app, lease_ms)| Op::Extend { app, lease_ms }),
            1 => (1u64..200).prop_map(|ms| Op::Advance { ms }),
            1 => Just(Op::Requeue),
            1 => Just(Op::Reopen),
        ]
    }

    /// (pending, in_flight, failing, dead, published, acknowledged, failed_attempts, latencies)
    type Figures = [u64; 8];

    /// What a run ends with: the counters, a recount of the rows, how many deliveries were
    /// in flight against how many leases expire once every deadline has passed, and how many
    /// are then pending against how many a lease takes once every retry is due.
    struct Ending {
        counted: BTreeMap<String, Figures>,
        recounted: BTreeMap<String, Figures>,
        in_flight: u64,
        open_disagreements: i64,
        expired_at_last: usize,
        pending_at_last: u64,
        leased_at_last: usize,
    }

    /// Runs `ops` on a store whose table of open deliveries may leave out the newest
    /// `open_tail`.
    async fn run(ops: Vec<Op>, open_tail: u64) -> Ending {
        let dir = tempfile::tempdir().unwrap();
        let options = super::SqliteOptions {
            open_tail,
            ..super::SqliteOptions::default()
        };
        let mut store = SqliteStore::open_with(dir.path(), &options).unwrap();
        for a in APPS {
            conformance::register(&store, a, &["*"], 3).await;
        }
        let mut now = T0;
        let mut held: Vec<Vec<(DeliveryId, u32)>> = vec![Vec::new(); 3];
        for op in ops {
            now = now.plus_ms(1);
            match op {
                Op::Publish { tenant, targets } => {
                    let tenant = ["acme", "globex"][tenant as usize];
                    let to: Vec<&str> = (0..3)
                        .filter(|i| targets & (1 << i) != 0)
                        .map(|i| APPS[i])
                        .collect();
                    let ev = conformance::event("crm", tenant, "user.created", now);
                    conformance::publish_to(&store, ev, &to).await;
                }
                Op::Lease {
                    app: a,
                    max,
                    lease_ms,
                } => {
                    let got = store
                        .lease(switchboard_store::LeaseRequest {
                            app: app(APPS[a]),
                            max,
                            lease_ms,
                            now,
                        })
                        .await
                        .unwrap();
                    held[a].extend(got.deliveries.into_iter().map(|d| (d.id, d.attempt)));
                }
                Op::Ack { app: a, n } => {
                    let take = n.min(held[a].len());
                    for (id, attempt) in held[a].drain(..take).collect::<Vec<_>>() {
                        // A lease may have expired meanwhile: a refusal is fine here.
                        let _ = store
                            .ack(
                                app(APPS[a]),
                                vec![AckItem {
                                    id,
                                    attempt: Some(attempt),
                                    data: None,
                                }],
                                now,
                            )
                            .await;
                    }
                }
                Op::Nack {
                    app: a,
                    n,
                    permanent,
                } => {
                    let take = n.min(held[a].len());
                    for (id, attempt) in held[a].drain(..take).collect::<Vec<_>>() {
                        let nack = NackItem {
                            id,
                            attempt: Some(attempt),
                            error: "x".into(),
                            retry_in_ms: Some(0),
                            permanent,
                        };
                        let _ = store.nack(app(APPS[a]), nack, now).await;
                    }
                }
                Op::Extend { app: a, lease_ms } => {
                    if let Some((id, attempt)) = held[a].first().cloned() {
                        let item = ExtendItem {
                            id,
                            attempt: Some(attempt),
                            lease_ms,
                        };
                        // Refused if the lease expired meanwhile: fine here.
                        let _ = store.extend_lease(app(APPS[a]), item, now).await;
                    }
                }
                Op::Reopen => {
                    store.close().await;
                    store = SqliteStore::open_with(dir.path(), &options).unwrap();
                }
                Op::Advance { ms } => {
                    now = now.plus_ms(ms);
                    store.expire_leases(now, 1000).await.unwrap();
                }
                Op::Requeue => {
                    store
                        .requeue(RequeueRequest {
                            selector: RequeueSelector::Filter {
                                filter: DeadFilter::default(),
                                limit: 1000,
                            },
                            by: "admin".into(),
                            visible_to: None,
                            now,
                        })
                        .await
                        .unwrap();
                }
            }
        }
        let counted: BTreeMap<String, Figures> = store
            .channels(ChannelQuery {
                tenant: None,
                since: Timestamp(0),
                now,
            })
            .await
            .unwrap()
            .into_iter()
            .map(|c| {
                let key = format!("{}/{}/{}", c.tenant, c.source, c.target);
                let figures = [
                    c.pending,
                    c.in_flight,
                    c.failing,
                    c.dead,
                    c.published,
                    c.acknowledged,
                    c.failed_attempts,
                    c.latency.count(),
                ];
                (key, figures)
            })
            .collect();
        store.settle_leases().await.unwrap();
        let recounted = recount(dir.path());
        let open_disagreements = open_disagreements(dir.path());
        let in_flight = counted.values().map(|f| f[1]).sum();
        // Every lease ends: each delivery in flight comes back once its deadline passed.
        let expired_at_last = store
            .expire_leases(now.plus_ms(86_400_000), 100_000)
            .await
            .unwrap()
            .count;
        // Every pending delivery is leasable once its retry is due.
        store.settle_leases().await.unwrap();
        let pending_at_last = recount(dir.path()).values().map(|f| f[0]).sum();
        let mut leased_at_last = 0;
        for a in APPS {
            let request = switchboard_store::LeaseRequest {
                app: app(a),
                max: 100_000,
                lease_ms: 1000,
                now: now.plus_ms(2 * 86_400_000),
            };
            leased_at_last += store.lease(request).await.unwrap().deliveries.len();
        }
        store.close().await;
        Ending {
            counted,
            recounted,
            in_flight,
            open_disagreements,
            expired_at_last,
            pending_at_last,
            leased_at_last,
        }
    }

    /// Deliveries whose entry among the open ones disagrees with their state: at or below
    /// the mark, open (pending or in flight) without one, or finished with one; above it,
    /// any with one.
    fn open_disagreements(dir: &std::path::Path) -> i64 {
        super::database(dir)
            .query_row(
                "SELECT count(*) FROM delivery_rows d WHERE \
                 CASE WHEN d.id <= (SELECT below FROM open_mark) THEN d.status IN (0, 1) \
                 ELSE 0 END != EXISTS (SELECT 1 FROM open_deliveries o \
                 WHERE o.channel = d.channel AND o.id = d.id)",
                [],
                |r| r.get(0),
            )
            .unwrap()
    }

    /// The same figures, counted from the deliveries and attempts themselves.
    fn recount(dir: &std::path::Path) -> BTreeMap<String, Figures> {
        let conn = super::database(dir);
        let mut stmt = conn
            .prepare(
                "SELECT d.tenant || '/' || d.source || '/' || d.target,
                        sum(d.status = 0), sum(d.status = 1),
                        sum(d.status IN (0, 1) AND EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = d.id
                            AND a.outcome IN ('failed', 'timed_out'))),
                        sum(d.status = 3), count(*), sum(d.status = 2),
                        (SELECT count(*) FROM attempts a JOIN delivery_rows x ON x.id = a.delivery_id
                          WHERE x.tenant = d.tenant AND x.source = d.source AND x.target = d.target
                          AND a.outcome IN ('failed', 'timed_out')),
                        sum(d.status = 2)
                 FROM delivery_rows d GROUP BY d.tenant, d.source, d.target",
            )
            .unwrap();
        stmt.query_map([], |r| {
            let mut f = [0u64; 8];
            for (i, slot) in f.iter_mut().enumerate() {
                *slot = r.get::<_, i64>(i + 1)? as u64;
            }
            Ok((r.get::<_, String>(0)?, f))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn counters_match_a_recount(
            ops in prop::collection::vec(op(), 1..60),
            open_tail in prop_oneof![Just(0u64), Just(3), Just(8_192)],
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let ending = runtime.block_on(run(ops, open_tail));
            prop_assert_eq!(ending.counted, ending.recounted);
            prop_assert_eq!(ending.open_disagreements, 0);
            prop_assert_eq!(ending.expired_at_last as u64, ending.in_flight);
            prop_assert_eq!(ending.leased_at_last as u64, ending.pending_at_last);
        }
    }
}

/// A copy of the store's database and WAL files as they are now: what a crash (kill -9)
/// would leave behind, the committed writes in the WAL included.
fn crash_image(dir: &std::path::Path) -> tempfile::TempDir {
    let image = tempfile::tempdir().unwrap();
    let db = switchboard_store::sqlite::DB_FILE;
    for name in [db.to_owned(), format!("{db}-wal")] {
        std::fs::copy(dir.join(&name), image.path().join(&name)).unwrap();
    }
    image
}

/// The status and attempts of delivery `id`'s row, as the database file has it.
fn row_of(dir: &std::path::Path, id: &switchboard_core::DeliveryId) -> (i64, i64) {
    database(dir)
        .query_row(
            "SELECT status, attempts FROM deliveries WHERE id = ?1",
            [id.number().expect("a numbered id") as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

/// How many rows the lease log has in the database file.
fn lease_log_rows(dir: &std::path::Path) -> i64 {
    database(dir)
        .query_row("SELECT count(*) FROM lease_log", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn the_wal_is_a_rounds_length_from_the_start_and_a_crash_reads_it_to_its_last_commit() {
    // The store lengthens the WAL with zeros as it opens (checkpoint.rs, `presize_wal`): the
    // first commits overwrite the file rather than grow it, and after a crash the zeros past
    // SQLite's frames read as the end of the log.
    let dir = tempfile::tempdir().unwrap();
    let wal_len = |dir: &std::path::Path| {
        let wal = format!("{}-wal", switchboard_store::sqlite::DB_FILE);
        std::fs::metadata(dir.join(wal)).unwrap().len()
    };
    let store = SqliteStore::open(dir.path()).unwrap();
    let presized = wal_len(dir.path());
    assert!(presized >= 16 << 20, "the WAL has {presized} bytes");
    conformance::register(&store, "hr", &["*"], 8).await;
    let mut published = Vec::new();
    for n in 0..50 {
        let ev = conformance::event("crm", "acme", "user.created", T0.plus_ms(n));
        published.push(conformance::publish_to(&store, ev, &["hr"]).await.id);
    }
    assert_eq!(wal_len(dir.path()), presized, "commits overwrote the zeros");
    let image = crash_image(dir.path());
    store.close().await;

    let restarted = SqliteStore::open(image.path()).unwrap();
    for id in published {
        let record = restarted.event(id.clone()).await.unwrap();
        assert!(record.is_some(), "{id} was committed before the crash");
    }
    restarted.close().await;
}

#[tokio::test]
async fn a_lease_held_at_a_crash_comes_back_after_its_expiry_on_the_next_attempt() {
    // An unordered delivery's lease changes no row: the writer keeps it in memory and in the
    // lease log, which a store opened after a crash writes into the rows (unwritten.rs).
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    conformance::register(&store, "hr", &["*"], 8).await;
    let ev = conformance::event("crm", "acme", "user.created", T0);
    let published = conformance::publish_to(&store, ev, &["hr"]).await;
    let request = |now, lease_ms| LeaseRequest {
        app: conformance::app("hr"),
        max: 10,
        lease_ms,
        now,
    };
    let leased = store.lease(request(T0.plus_ms(1), 1_000)).await.unwrap();
    assert_eq!(leased.deliveries.len(), 1);
    let id = leased.deliveries[0].id.clone();
    assert_eq!(
        row_of(dir.path(), &id),
        (0, 0),
        "the lease is not in the row"
    );
    let image = crash_image(dir.path());
    store.close().await;

    let restarted = SqliteStore::open(image.path()).unwrap();
    assert_eq!(row_of(image.path(), &id), (1, 1));
    assert_eq!(lease_log_rows(image.path()), 0);
    let record = restarted.event(published.id).await.unwrap().unwrap();
    let d = &record.deliveries[0];
    assert_eq!(d.status, DeliveryStatus::InFlight);
    assert_eq!(d.lease_expires_at, Some(T0.plus_ms(1_001)));
    let early = restarted.lease(request(T0.plus_ms(2), 30_000)).await;
    assert!(
        early.unwrap().deliveries.is_empty(),
        "held until it expires"
    );
    let expired = restarted.expire_leases(T0.plus_ms(1_001), 10).await;
    assert_eq!(expired.unwrap().count, 1);
    let later = T0.plus_ms(3_600_000);
    let again = restarted.lease(request(later, 30_000)).await.unwrap();
    assert_eq!(again.deliveries.len(), 1);
    assert_eq!(again.deliveries[0].id, id);
    assert_eq!(again.deliveries[0].attempt, 2);
    restarted.close().await;
}

#[tokio::test]
async fn an_ack_of_a_logged_lease_stays_acknowledged_after_a_crash() {
    // The ack is a row of `acks` and leaves the delivery's row pending; the lease log still
    // holds the lease, and replaying it must not make the row say in flight.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    conformance::register(&store, "hr", &["*"], 8).await;
    let ev = conformance::event("crm", "acme", "user.created", T0);
    let published = conformance::publish_to(&store, ev, &["hr"]).await;
    let leased = conformance::lease(&store, "hr", 10, T0.plus_ms(1)).await;
    let id = leased[0].id.clone();
    let ack = switchboard_store::AckItem {
        id: id.clone(),
        attempt: Some(1),
        data: Some("done".into()),
    };
    let acked = store
        .ack(conformance::app("hr"), vec![ack], T0.plus_ms(5))
        .await;
    assert_eq!(acked.unwrap().len(), 1);
    assert_eq!(lease_log_rows(dir.path()), 1, "the lease is still logged");
    let image = crash_image(dir.path());
    store.close().await;

    let restarted = SqliteStore::open(image.path()).unwrap();
    assert_eq!(row_of(image.path(), &id), (0, 0), "the row never moved on");
    let record = restarted.event(published.id).await.unwrap().unwrap();
    let d = &record.deliveries[0];
    assert_eq!(d.status, DeliveryStatus::Acknowledged);
    assert_eq!((d.attempts, d.ack_data.as_deref()), (1, Some("done")));
    let expired = restarted.expire_leases(T0.plus_ms(3_600_000), 10).await;
    assert_eq!(expired.unwrap().count, 0, "nothing in flight to expire");
    let again = conformance::lease(&restarted, "hr", 10, T0.plus_ms(3_600_000)).await;
    assert!(again.is_empty(), "nothing to deliver again");
    restarted.close().await;
}

#[tokio::test]
async fn a_lease_kept_a_second_is_written_by_the_next_lease_which_empties_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    conformance::register(&store, "hr", &["*"], 8).await;
    let mut ids = Vec::new();
    for n in 0..2 {
        let at = T0.plus_ms(n * 1_000);
        let ev = conformance::event("crm", "acme", "user.created", at);
        conformance::publish_to(&store, ev, &["hr"]).await;
        let leased = conformance::lease(&store, "hr", 1, at.plus_ms(1)).await;
        ids.push(leased[0].id.clone());
    }
    assert_eq!(
        row_of(dir.path(), &ids[0]),
        (1, 1),
        "written after a second"
    );
    assert_eq!(row_of(dir.path(), &ids[1]), (0, 0), "kept");
    assert_eq!(lease_log_rows(dir.path()), 1, "only the second lease's");
    store.close().await;
    assert_eq!(row_of(dir.path(), &ids[1]), (1, 1), "written on close");
    assert_eq!(lease_log_rows(dir.path()), 0);
}

/// A delivery that dies and is requeued while above the open deliveries' mark (so no entry
/// changes) gets its entry once the mark passes it, while the later ones, acknowledged at
/// once, get none: it is still listed among the open ones, the only one.
#[tokio::test]
async fn a_delivery_requeued_above_the_mark_gets_its_entry_when_the_mark_passes_it() {
    use switchboard_store::{DeadFilter, NackItem, RequeueRequest, RequeueSelector, UnackedQuery};
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        open_tail: 8,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(dir.path(), &options).unwrap();
    conformance::register(&store, "hr", &["*"], 8).await;
    let event = |n| conformance::event("crm", "acme", "user.created", T0.plus_ms(n));
    let first = conformance::publish_to(&store, event(0), &["hr"]).await;
    let leased = conformance::lease(&store, "hr", 1, T0.plus_ms(1)).await;
    let nack = NackItem {
        id: leased[0].id.clone(),
        attempt: Some(leased[0].attempt),
        error: "bad".into(),
        retry_in_ms: None,
        permanent: true,
    };
    store
        .nack(conformance::app("hr"), nack, T0.plus_ms(2))
        .await
        .unwrap();
    let requeue = RequeueRequest {
        selector: RequeueSelector::Filter {
            filter: DeadFilter::default(),
            limit: 10,
        },
        by: "admin".into(),
        visible_to: None,
        now: T0.plus_ms(3),
    };
    assert_eq!(store.requeue(requeue).await.unwrap().count, 1);
    let again = conformance::lease(&store, "hr", 1, T0.plus_ms(4)).await;
    assert_eq!(again[0].id, leased[0].id);
    // Enough later deliveries, each acknowledged at once, for the mark to pass the first.
    for n in 1..=9 {
        conformance::publish_to(&store, event(n), &["hr"]).await;
        let leased = conformance::lease(&store, "hr", 1, T0.plus_ms(n)).await;
        let ack = AckItem {
            id: leased[0].id.clone(),
            attempt: Some(leased[0].attempt),
            data: None,
        };
        store
            .ack(conformance::app("hr"), vec![ack], T0.plus_ms(n))
            .await
            .unwrap();
    }
    let marked: i64 = database(dir.path())
        .query_row("SELECT below FROM open_mark", [], |r| r.get(0))
        .unwrap();
    assert!(marked >= 1, "the mark passed it: {marked}");
    let page = store
        .unacknowledged(UnackedQuery {
            tenant: switchboard_core::TenantId::parse("acme").unwrap(),
            visible_to: None,
            created_before: T0.plus_ms(100),
            limit: 10,
            cursor: None,
        })
        .await
        .unwrap();
    let listed: Vec<_> = page.items.iter().map(|r| r.event.id.clone()).collect();
    assert_eq!(listed, vec![first.id], "the requeued one, in flight");
    store.close().await;
}

/// A read of the open deliveries while many lie above the mark first has the writer move
/// the mark to the newest one; the read still lists them all, and at rest the next read
/// has no rows above the mark to read.
#[tokio::test]
async fn a_read_of_the_open_deliveries_moves_a_long_tail_under_the_mark() {
    use switchboard_store::{NewEvent, UnackedQuery};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    conformance::register(&store, "hr", &["*"], 8).await;
    let batch: Vec<NewEvent> = (0..1_500)
        .map(|n| NewEvent {
            event: conformance::event("crm", "acme", "user.created", T0.plus_ms(n)),
            targets: vec![conformance::route("hr")],
        })
        .collect();
    store.publish(batch, T0).await.unwrap();
    let mark = || -> i64 {
        database(dir.path())
            .query_row("SELECT below FROM open_mark", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(mark(), 0, "a tail shorter than allowed");
    let page = store
        .unacknowledged(UnackedQuery {
            tenant: switchboard_core::TenantId::parse("acme").unwrap(),
            visible_to: None,
            created_before: T0.plus_ms(10_000),
            limit: 2_000,
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1_500);
    assert_eq!(mark(), 1_500, "moved to the newest before the read");
    let channels = store
        .channels(ChannelQuery {
            tenant: None,
            since: Timestamp(0),
            now: T0,
        })
        .await
        .unwrap();
    assert_eq!(channels[0].oldest_open_at, Some(T0));
    store.close().await;
}

//! The SQLite backend against the conformance suite, plus what only SQLite has (files,
//! migrations, reopening).

use std::sync::Arc;

use switchboard_store::conformance::{self, Fixture, T0};
use switchboard_store::sqlite::SqliteStore;
use switchboard_store::{EventQuery, Store};

async fn sqlite_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    Fixture {
        store: Arc::new(store),
        guard: Box::new(dir),
    }
}

switchboard_store::conformance_tests!(sqlite_fixture);

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

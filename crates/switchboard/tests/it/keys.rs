//! Keys: rotation (several live keys per app, revocation at once, on every node), key
//! listings that never show a key, and tenant reader keys held to their tenant.

use std::sync::Arc;

use reqwest::Method;
use switchboard_client::{Client, EventsQuery, NewApp};
use switchboard_store::redis::RedisStore;
use switchboard_store::testing::RedisServer;

use crate::harness::{Hub, assert_rejected, event, lookup, publish};

#[tokio::test]
async fn an_app_rotates_its_key_and_the_old_one_stops_at_once() {
    let hub = Hub::start().await;
    let first = hub
        .admin
        .create_app(&NewApp::new("crm", ["x.*"]))
        .await
        .unwrap();
    let old = Client::new(&hub.url, &first.api_key);
    publish(&old, event("user.created", "acme")).await;

    let added = hub.admin.add_app_key("crm").await.unwrap();
    assert_eq!(added.app.as_deref(), Some("crm"));
    assert_ne!(added.api_key, first.api_key);
    assert!(added.api_key.len() >= 64, "at least 32 random bytes");
    let new = Client::new(&hub.url, &added.api_key);
    // Both work until the old one is revoked.
    publish(&new, event("user.created", "acme")).await;
    publish(&old, event("user.created", "acme")).await;

    // The listing shows ids and times, never a key.
    let (status, listing) = hub
        .admin
        .raw(Method::GET, "/v1/apps/crm/keys", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let text = listing.to_string();
    assert!(!text.contains(&first.api_key) && !text.contains(&added.api_key));
    assert!(
        !text.contains("api_key") && !text.contains("hash"),
        "{text}"
    );
    let keys = hub.admin.app_keys("crm").await.unwrap();
    let ids: Vec<&str> = keys.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(ids, [first.key_id.as_str(), added.key_id.as_str()]);
    assert!(keys.iter().all(|k| k.last_used_at.is_some()), "{keys:?}");

    hub.admin
        .revoke_app_key("crm", &first.key_id)
        .await
        .unwrap();
    assert_rejected(
        old.publish(&event("user.created", "acme")).await,
        401,
        "unauthorized",
        None,
    );
    publish(&new, event("user.created", "acme")).await;
    let ids: Vec<String> = hub
        .admin
        .app_keys("crm")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(ids, std::slice::from_ref(&added.key_id));
    // Revoking again, or a key of another app, or for an unknown app: 404.
    assert_rejected(
        hub.admin.revoke_app_key("crm", &first.key_id).await,
        404,
        "unknown_key",
        None,
    );
    hub.app("hr", &[]).await;
    assert_rejected(
        hub.admin.revoke_app_key("hr", &added.key_id).await,
        404,
        "unknown_key",
        None,
    );
    assert_rejected(
        hub.admin.add_app_key("nobody").await,
        404,
        "unknown_app",
        None,
    );
    assert_rejected(
        hub.admin.revoke_app_key("crm", "not a key id").await,
        400,
        "validation_failed",
        Some("key_id"),
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_key_never_used_has_no_last_use() {
    let hub = Hub::start().await;
    hub.app("crm", &[]).await;
    let keys = hub.admin.app_keys("crm").await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].last_used_at, None);
    hub.stop().await;
}

#[tokio::test]
async fn a_tenant_reader_reads_its_tenant_and_nothing_else() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["user.*"]).await;
    let acme_event = publish(&crm, event("user.created", "acme")).await;
    let globex_event = publish(&crm, event("user.created", "globex")).await;
    let created = hub.admin.add_tenant_reader("acme").await.unwrap();
    assert_eq!(created.tenant.as_deref(), Some("acme"));
    let reader = Client::new(&hub.url, &created.api_key);

    // Its tenant: events (forced to acme when no tenant is given), lookup, views.
    let page = reader.events(&EventsQuery::default()).await.unwrap();
    let ids: Vec<&str> = page.events.iter().map(|e| e.event.id.as_str()).collect();
    assert_eq!(ids, [acme_event.id.as_str()]);
    assert_eq!(lookup(&reader, &acme_event.id).await.event.tenant, "acme");
    reader.matrix("acme", None).await.unwrap();
    reader.health_of("acme", None).await.unwrap();
    reader.unacknowledged("acme", 0, None, None).await.unwrap();
    let stats = reader.stats(None, "type", None, None).await.unwrap();
    assert_eq!(stats.rows.iter().map(|r| r.published).sum::<u64>(), 1);

    // Another tenant: a 404 for its event, a 403 for its views.
    assert_rejected(
        reader.event(&globex_event.id).await,
        404,
        "unknown_event",
        None,
    );
    assert_rejected(reader.matrix("globex", None).await, 403, "forbidden", None);
    assert_rejected(
        reader
            .events(&EventsQuery {
                tenant: Some("globex".into()),
                ..Default::default()
            })
            .await,
        403,
        "forbidden",
        None,
    );
    // Read-only: no publishing, consuming, requeueing, managing or streaming.
    assert_rejected(
        reader.publish(&event("user.created", "acme")).await,
        403,
        "forbidden",
        None,
    );
    assert_rejected(reader.list_apps().await, 403, "forbidden", None);
    assert_rejected(
        reader.add_tenant_reader("acme").await,
        403,
        "forbidden",
        None,
    );
    assert!(reader.stream(Some("acme"), None).await.is_err());

    // Listed by id, revoked at once.
    let readers = hub.admin.tenant_readers("acme").await.unwrap();
    assert_eq!(readers.len(), 1);
    assert_eq!(readers[0].key_id, created.key_id);
    assert!(hub.admin.tenant_readers("globex").await.unwrap().is_empty());
    hub.admin
        .revoke_tenant_reader("acme", &created.key_id)
        .await
        .unwrap();
    assert_rejected(reader.matrix("acme", None).await, 401, "unauthorized", None);
    // hr's own key is unaffected.
    lookup(&hr, &acme_event.id).await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_node_fails_on_every_node() {
    let redis = RedisServer::start();
    let node = |url: String| async move {
        let store = RedisStore::connect(&url).await.unwrap();
        Hub::start_on(Arc::new(store)).await
    };
    let a = node(redis.url()).await;
    let b = node(redis.url()).await;
    let first = a
        .admin
        .create_app(&NewApp::new("crm", ["x.*"]))
        .await
        .unwrap();
    let second = a.admin.add_app_key("crm").await.unwrap();
    // Node B has both keys in its cache.
    let old_on_b = Client::new(&b.url, &first.api_key);
    let new_on_b = Client::new(&b.url, &second.api_key);
    publish(&old_on_b, event("user.created", "acme")).await;
    publish(&new_on_b, event("user.created", "acme")).await;

    a.admin.revoke_app_key("crm", &first.key_id).await.unwrap();
    // At once on A.
    assert_rejected(
        Client::new(&a.url, &first.api_key)
            .publish(&event("user.created", "acme"))
            .await,
        401,
        "unauthorized",
        None,
    );
    // On B as soon as Redis' notice arrives: each try is a real request (bounded).
    let mut tries = 0;
    loop {
        match old_on_b.list_apps().await {
            Err(e) if e.status() == Some(401) => break,
            Err(e) if e.status() == Some(403) => {
                tries += 1;
                assert!(tries < 5_000, "node B still honours the revoked key");
            }
            other => panic!("unexpected: {other:?}"),
        }
    }
    publish(&new_on_b, event("user.created", "acme")).await;
    a.stop().await;
    b.stop().await;
}

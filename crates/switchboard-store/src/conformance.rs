//! The conformance suite: what every backend must do, written against [`Store`] alone.
//! Each backend's tests run every case with `conformance_tests!(make_fixture)`. Time is
//! driven through the `now` arguments, so nothing here waits on a clock.

use std::any::Any;
use std::sync::Arc;

use switchboard_core::event::Event;
use switchboard_core::{
    AppId, AppSettings, AttemptOutcome, DeliveryId, DeliveryStatus, EventId, EventType,
    RetryPolicy, Route, Subscription, TenantId, Timestamp, TypePattern,
};

use crate::{
    AckItem, AlertChange, AlertState, AppUpdate, ChannelQuery, ChannelStats, DeadFilter,
    DeadLetterQuery, EventQuery, ExtendItem, GroupBy, KeyGrant, KeyHash, KeyOwner, LeaseRequest,
    NackItem, NewApp, NewEvent, NewKey, Published, RequeueRequest, RequeueSelector, StatsQuery,
    Store, StoreError, UnackedQuery,
};

/// A store under test and whatever must live as long as it (a temp dir, a server process).
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub guard: Box<dyn Any + Send + Sync>,
}

/// Runs every conformance case as its own `#[tokio::test]`. `$make` is an async fn returning
/// a fresh [`Fixture`].
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@cases $make;
            apps_register_list_and_resolve_keys,
            app_keys_rotate_and_revoke_at_once,
            tenant_reader_keys_belong_to_one_tenant,
            key_use_is_recorded_and_never_moves_back,
            duplicate_app_is_refused,
            update_app_changes_what_happens_next,
            publish_creates_pending_deliveries,
            event_without_targets_is_still_stored,
            idempotency_key_is_per_source,
            idempotency_within_one_batch,
            lease_hands_out_oldest_first_without_duplicates,
            lease_is_per_target_app,
            ack_records_data_and_latency,
            many_leased_and_acked_at_once_are_each_described,
            repeated_ack_changes_nothing,
            ack_batch_is_all_or_nothing,
            another_apps_delivery_looks_unknown,
            nack_backs_off_then_redelivers,
            nack_retry_in_overrides_backoff,
            permanent_nack_is_dead,
            dead_after_max_attempts,
            expired_lease_returns_to_pending,
            stale_lease_cannot_ack,
            reads_show_a_leased_delivery_in_flight,
            event_query_filters,
            event_query_pages_newest_first,
            event_query_visibility_for_an_app,
            ordered_deliveries_go_one_at_a_time_per_entity,
            ordered_deliveries_within_one_batch,
            a_dead_delivery_releases_the_next_of_its_entity,
            extend_lease_pushes_the_deadline,
            dead_letters_list_with_filters_and_pages,
            requeue_by_ids_gives_a_fresh_budget,
            requeue_of_a_live_delivery_changes_nothing,
            requeue_by_filter_moves_a_bounded_batch,
            requeue_by_an_app_is_limited_to_its_deliveries,
            unacknowledged_lists_open_deliveries_oldest_first,
            channel_counters_follow_every_change,
            channel_windows_and_tenants_stay_apart,
            app_activity_records_consumers,
            alerts_are_recorded_with_their_event,
            stats_group_by_source_target_type_and_hour,
            prune_drops_old_counters,
            closed_store_refuses_work
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let fixture = $make().await;
                $crate::conformance::$case(&*fixture.store).await;
                fixture.store.close().await;
            }
        )*
    };
}

pub const T0: Timestamp = Timestamp(1_795_343_460_000);

pub fn app(id: &str) -> AppId {
    AppId::parse(id).unwrap()
}

fn key_hash(app: &str, n: u8) -> KeyHash {
    let mut h = [n; 32];
    for (i, b) in app.bytes().enumerate().take(31) {
        h[i + 1] = b;
    }
    KeyHash(h)
}

/// Registers `id` subscribed to `patterns` (`!order.*` is an ordered subscription), with
/// `max_attempts` and a 1 s then 5 s backoff.
pub async fn register(store: &dyn Store, id: &str, patterns: &[&str], max_attempts: u32) {
    let subscriptions = patterns
        .iter()
        .map(|p| match p.strip_prefix('!') {
            Some(p) => Subscription {
                pattern: TypePattern::parse(p).unwrap(),
                ordered: true,
            },
            None => Subscription::unordered(TypePattern::parse(p).unwrap()),
        })
        .collect();
    store
        .create_app(NewApp {
            id: app(id),
            subscriptions,
            settings: AppSettings {
                max_attempts,
                retry: RetryPolicy::Schedule(vec![1000, 5000]),
            },
            key: NewKey {
                key_id: format!("key_{id}"),
                hash: key_hash(id, 1),
            },
            now: T0,
        })
        .await
        .unwrap();
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub fn event(source: &str, tenant: &str, ty: &str, time: Timestamp) -> Event {
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut entropy = [0u8; 10];
    entropy[2..].copy_from_slice(&n.to_be_bytes());
    Event {
        id: EventId::generate(time.millis(), entropy),
        tenant: TenantId::parse(tenant).unwrap(),
        event_type: EventType::parse(ty).unwrap(),
        source: app(source),
        time,
        data: format!(r#"{{"n":{n}}}"#),
        idempotency_key: None,
        named_targets: None,
        entity_id: None,
        correlation_id: None,
        causation_id: None,
        historical: false,
    }
}

/// A route to `target`; `!hr` is an ordered route.
pub fn route(target: &str) -> Route {
    match target.strip_prefix('!') {
        Some(t) => Route {
            app: app(t),
            ordered: true,
        },
        None => Route {
            app: app(target),
            ordered: false,
        },
    }
}

/// Starts a store call without waiting for it: polls `f` once, enough for it to queue its
/// work (with SQLite, its job with the writer, which runs jobs in the order they came; the
/// store must be opened with `together` off, or a write could be waiting for its turn).
pub async fn start<F: std::future::Future + Unpin>(f: &mut F) {
    std::future::poll_fn(|cx| {
        let _ = std::pin::Pin::new(&mut *f).poll(cx);
        std::task::Poll::Ready(())
    })
    .await
}

/// Publishes one event to `targets` (`!hr` for an ordered route) at `time`.
pub async fn publish_to(store: &dyn Store, ev: Event, targets: &[&str]) -> Published {
    let time = ev.time;
    let targets = targets.iter().map(|t| route(t)).collect();
    let mut out = store
        .publish(vec![NewEvent { event: ev, targets }], time)
        .await
        .unwrap();
    out.remove(0)
}

pub async fn lease(
    store: &dyn Store,
    who: &str,
    max: u32,
    now: Timestamp,
) -> Vec<crate::LeasedDelivery> {
    store
        .lease(LeaseRequest {
            app: app(who),
            max,
            lease_ms: 30_000,
            now,
        })
        .await
        .unwrap()
        .deliveries
}

fn ack_item(id: &DeliveryId, attempt: u32, data: Option<&str>) -> AckItem {
    AckItem {
        id: id.clone(),
        attempt: Some(attempt),
        data: data.map(str::to_owned),
    }
}

fn nack_item(id: &DeliveryId, attempt: u32, permanent: bool, retry_in_ms: Option<u64>) -> NackItem {
    NackItem {
        id: id.clone(),
        attempt: Some(attempt),
        error: "boom".into(),
        retry_in_ms,
        permanent,
    }
}

/// The status of `target`'s delivery of event `id`.
pub async fn status_of(store: &dyn Store, id: &EventId, target: &str) -> DeliveryStatus {
    let record = store
        .event(id.clone())
        .await
        .unwrap()
        .expect("event stored");
    record
        .deliveries
        .iter()
        .find(|d| d.target == app(target))
        .expect("delivery to target")
        .status
}

pub async fn apps_register_list_and_resolve_keys(store: &dyn Store) {
    register(store, "hr", &["user.created", "credit.*"], 8).await;
    register(store, "crm", &["*"], 3).await;
    let apps = store.list_apps().await.unwrap();
    let ids: Vec<&str> = apps.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["crm", "hr"]);
    let hr = &apps[1];
    let patterns: Vec<String> = hr
        .subscriptions
        .iter()
        .map(|s| s.pattern.to_string())
        .collect();
    assert_eq!(patterns, ["user.created", "credit.*"]);
    assert_eq!(hr.settings.max_attempts, 8);
    assert_eq!(hr.settings.retry.to_string(), "1s,5s");
    assert_eq!(
        store.resolve_key(key_hash("hr", 1)).await.unwrap(),
        Some(KeyGrant {
            key_id: "key_hr".into(),
            owner: KeyOwner::App(app("hr")),
        })
    );
    assert_eq!(store.resolve_key(key_hash("hr", 2)).await.unwrap(), None);
}

fn new_key(key_id: &str, hash: KeyHash) -> NewKey {
    NewKey {
        key_id: key_id.into(),
        hash,
    }
}

async fn owner_of(store: &dyn Store, hash: KeyHash) -> Option<KeyOwner> {
    store.resolve_key(hash).await.unwrap().map(|g| g.owner)
}

async fn key_ids(store: &dyn Store, owner: &KeyOwner) -> Vec<String> {
    let keys = store.keys(owner.clone()).await.unwrap();
    keys.into_iter().map(|k| k.key_id).collect()
}

pub async fn app_keys_rotate_and_revoke_at_once(store: &dyn Store) {
    register(store, "hr", &["*"], 8).await;
    register(store, "crm", &[], 8).await;
    let hr = KeyOwner::App(app("hr"));
    let added = store
        .add_key(
            hr.clone(),
            new_key("key_hr2", key_hash("hr", 2)),
            T0.plus_ms(5),
        )
        .await
        .unwrap();
    assert_eq!(added.key_id, "key_hr2");
    assert_eq!(added.created_at, T0.plus_ms(5));
    assert_eq!(added.last_used_at, None);
    // Both keys are live: the old one until it is revoked.
    assert_eq!(owner_of(store, key_hash("hr", 1)).await, Some(hr.clone()));
    assert_eq!(owner_of(store, key_hash("hr", 2)).await, Some(hr.clone()));
    assert_eq!(key_ids(store, &hr).await, ["key_hr", "key_hr2"]);
    assert_eq!(
        key_ids(store, &KeyOwner::App(app("crm"))).await,
        ["key_crm"]
    );
    // Another owner cannot revoke hr's key; an unknown id is unknown.
    let crm = KeyOwner::App(app("crm"));
    assert_eq!(
        store
            .revoke_key(crm, "key_hr".into(), T0)
            .await
            .unwrap_err(),
        StoreError::UnknownKey("key_hr".into())
    );
    assert_eq!(
        store
            .revoke_key(hr.clone(), "key_nope".into(), T0)
            .await
            .unwrap_err(),
        StoreError::UnknownKey("key_nope".into())
    );
    store
        .revoke_key(hr.clone(), "key_hr".into(), T0.plus_ms(6))
        .await
        .unwrap();
    assert_eq!(owner_of(store, key_hash("hr", 1)).await, None);
    assert_eq!(owner_of(store, key_hash("hr", 2)).await, Some(hr.clone()));
    assert_eq!(key_ids(store, &hr).await, ["key_hr2"]);
    // Revoking twice is an unknown key the second time.
    assert_eq!(
        store
            .revoke_key(hr.clone(), "key_hr".into(), T0.plus_ms(7))
            .await
            .unwrap_err(),
        StoreError::UnknownKey("key_hr".into())
    );
    // Keys only for registered apps.
    let unknown = store
        .add_key(
            KeyOwner::App(app("nobody")),
            new_key("key_x", key_hash("nobody", 1)),
            T0,
        )
        .await;
    assert_eq!(unknown.unwrap_err(), StoreError::UnknownApp(app("nobody")));
    assert_eq!(owner_of(store, key_hash("nobody", 1)).await, None);
}

pub async fn tenant_reader_keys_belong_to_one_tenant(store: &dyn Store) {
    let acme = KeyOwner::TenantReader(TenantId::parse("acme").unwrap());
    let globex = KeyOwner::TenantReader(TenantId::parse("globex").unwrap());
    // A tenant with characters that need care in key names.
    let odd = KeyOwner::TenantReader(TenantId::parse("a}b:{c%").unwrap());
    store
        .add_key(acme.clone(), new_key("key_r1", key_hash("r", 1)), T0)
        .await
        .unwrap();
    store
        .add_key(
            acme.clone(),
            new_key("key_r2", key_hash("r", 2)),
            T0.plus_ms(1),
        )
        .await
        .unwrap();
    store
        .add_key(odd.clone(), new_key("key_r3", key_hash("r", 3)), T0)
        .await
        .unwrap();
    assert_eq!(owner_of(store, key_hash("r", 1)).await, Some(acme.clone()));
    assert_eq!(owner_of(store, key_hash("r", 3)).await, Some(odd.clone()));
    assert_eq!(key_ids(store, &acme).await, ["key_r1", "key_r2"]);
    assert_eq!(key_ids(store, &odd).await, ["key_r3"]);
    assert!(key_ids(store, &globex).await.is_empty());
    assert_eq!(
        store
            .revoke_key(globex, "key_r1".into(), T0)
            .await
            .unwrap_err(),
        StoreError::UnknownKey("key_r1".into())
    );
    // A reader key is not an app key of an app with the same name.
    assert_eq!(
        store
            .revoke_key(KeyOwner::App(app("acme")), "key_r1".into(), T0)
            .await
            .unwrap_err(),
        StoreError::UnknownKey("key_r1".into())
    );
    store
        .revoke_key(acme.clone(), "key_r1".into(), T0)
        .await
        .unwrap();
    assert_eq!(owner_of(store, key_hash("r", 1)).await, None);
    assert_eq!(key_ids(store, &acme).await, ["key_r2"]);
}

pub async fn key_use_is_recorded_and_never_moves_back(store: &dyn Store) {
    register(store, "hr", &["*"], 8).await;
    let hr = KeyOwner::App(app("hr"));
    store
        .touch_keys(vec![
            ("key_hr".into(), T0.plus_ms(500)),
            ("key_unknown".into(), T0),
        ])
        .await
        .unwrap();
    store
        .touch_keys(vec![("key_hr".into(), T0.plus_ms(100))])
        .await
        .unwrap();
    store.touch_keys(vec![]).await.unwrap();
    let keys = store.keys(hr.clone()).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].created_at, T0);
    assert_eq!(keys[0].last_used_at, Some(T0.plus_ms(500)));
    // A revoked key is not brought back by a late touch.
    store
        .revoke_key(hr.clone(), "key_hr".into(), T0.plus_ms(600))
        .await
        .unwrap();
    store
        .touch_keys(vec![("key_hr".into(), T0.plus_ms(700))])
        .await
        .unwrap();
    assert!(store.keys(hr).await.unwrap().is_empty());
    assert_eq!(owner_of(store, key_hash("hr", 1)).await, None);
}

pub async fn duplicate_app_is_refused(store: &dyn Store) {
    register(store, "hr", &["*"], 8).await;
    let again = store
        .create_app(NewApp {
            id: app("hr"),
            subscriptions: vec![],
            settings: AppSettings::default(),
            key: NewKey {
                key_id: "other".into(),
                hash: key_hash("hr", 9),
            },
            now: T0,
        })
        .await;
    assert_eq!(again.unwrap_err(), StoreError::AppExists(app("hr")));
    assert_eq!(store.list_apps().await.unwrap().len(), 1);
    assert_eq!(store.resolve_key(key_hash("hr", 9)).await.unwrap(), None);
}

pub async fn update_app_changes_what_happens_next(store: &dyn Store) {
    register(store, "hr", &["*"], 8).await;
    let updated = store
        .update_app(AppUpdate {
            id: app("hr"),
            subscriptions: None,
            settings: Some(AppSettings {
                max_attempts: 1,
                retry: RetryPolicy::Schedule(vec![0]),
            }),
        })
        .await
        .unwrap();
    assert_eq!(updated.settings.max_attempts, 1);
    assert_eq!(updated.subscriptions.len(), 1);
    let p = publish_to(store, event("crm", "t1", "user.created", T0), &["hr"]).await;
    let leased = lease(store, "hr", 1, T0).await;
    let result = store
        .nack(app("hr"), nack_item(&leased[0].id, 1, false, None), T0)
        .await
        .unwrap();
    assert_eq!(
        result.status,
        DeliveryStatus::Dead,
        "one attempt allowed now"
    );
    assert_eq!(status_of(store, &p.id, "hr").await, DeliveryStatus::Dead);
    let unknown = store
        .update_app(AppUpdate {
            id: app("nobody"),
            subscriptions: None,
            settings: None,
        })
        .await;
    assert_eq!(unknown.unwrap_err(), StoreError::UnknownApp(app("nobody")));
}

pub async fn publish_creates_pending_deliveries(store: &dyn Store) {
    let mut ev = event("crm", "acme", "user.created", T0);
    ev.entity_id = Some("user-1".into());
    ev.correlation_id = Some("corr-1".into());
    ev.named_targets = Some(vec![app("hr"), app("billing")]);
    let mut sent = ev.clone();
    let p = publish_to(store, ev, &["billing", "hr"]).await;
    assert!(!p.duplicate);
    // Stored as sent, under the id the result gives (a store may give its own).
    sent.id = p.id.clone();
    let targets: Vec<(&str, DeliveryStatus)> = p
        .deliveries
        .iter()
        .map(|d| (d.target.as_str(), d.status))
        .collect();
    assert_eq!(
        targets,
        [
            ("billing", DeliveryStatus::Pending),
            ("hr", DeliveryStatus::Pending)
        ]
    );
    let record = store.event(p.id.clone()).await.unwrap().unwrap();
    assert_eq!(record.event, sent);
    assert_eq!(record.deliveries.len(), 2);
    for d in &record.deliveries {
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(d.attempts, 0);
        assert!(d.history.is_empty());
        assert_eq!(d.created_at, T0);
    }
    let ids: Vec<&DeliveryId> = record.deliveries.iter().map(|d| &d.id).collect();
    assert_ne!(ids[0], ids[1]);
    let missing = EventId::parse("evt_missing").unwrap();
    assert_eq!(store.event(missing).await.unwrap(), None);
}

pub async fn event_without_targets_is_still_stored(store: &dyn Store) {
    let p = publish_to(store, event("crm", "acme", "nobody.cares", T0), &[]).await;
    assert!(p.deliveries.is_empty());
    let record = store.event(p.id).await.unwrap().unwrap();
    assert!(record.deliveries.is_empty());
}

pub async fn idempotency_key_is_per_source(store: &dyn Store) {
    let mut first = event("crm", "acme", "user.created", T0);
    first.idempotency_key = Some("k-1".into());
    let p1 = publish_to(store, first, &["hr"]).await;
    let mut again = event("crm", "acme", "user.created", T0.plus_ms(5));
    again.idempotency_key = Some("k-1".into());
    let p2 = publish_to(store, again, &["hr", "billing"]).await;
    assert!(p2.duplicate);
    assert_eq!(p2.id, p1.id);
    assert_eq!(p2.deliveries, p1.deliveries, "the first result, unchanged");
    let mut other_source = event("shop", "acme", "user.created", T0);
    other_source.idempotency_key = Some("k-1".into());
    let p3 = publish_to(store, other_source, &["hr"]).await;
    assert!(!p3.duplicate);
    assert_ne!(p3.id, p1.id);
    let all = store
        .events(EventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.events.len(), 2);
}

/// Every read that shows a delivery's state shows a lease as soon as it is answered (the
/// embedded store keeps it out of the row for a while, see unwritten.rs): each read below
/// follows a lease of its own.
pub async fn reads_show_a_leased_delivery_in_flight(store: &dyn Store) {
    let mut published = Vec::new();
    for n in 0..4 {
        let mut ev = event("crm", "acme", "user.created", T0.plus_ms(n));
        ev.idempotency_key = Some(format!("leased-{n}"));
        published.push((publish_to(store, ev.clone(), &["hr"]).await.id, ev));
    }
    let lease_next = |at: u64| lease(store, "hr", 1, T0.plus_ms(10 + at));
    assert_eq!(lease_next(0).await.len(), 1);
    let record = store.event(published[0].0.clone()).await.unwrap().unwrap();
    let d = &record.deliveries[0];
    assert_eq!((d.status, d.attempts), (DeliveryStatus::InFlight, 1));
    assert_eq!(d.lease_expires_at, Some(T0.plus_ms(30_010)));

    assert_eq!(lease_next(1).await.len(), 1);
    let in_flight = store
        .events(EventQuery {
            status: Some(DeliveryStatus::InFlight),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<EventId> = in_flight.events.into_iter().map(|e| e.event.id).collect();
    assert_eq!(ids, [published[1].0.clone(), published[0].0.clone()]);

    assert_eq!(lease_next(2).await.len(), 1);
    let open = store
        .unacknowledged(UnackedQuery {
            tenant: TenantId::parse("acme").unwrap(),
            visible_to: None,
            created_before: T0.plus_ms(10),
            limit: 10,
            cursor: None,
        })
        .await
        .unwrap();
    let states: Vec<DeliveryStatus> = open.items.iter().map(|i| i.delivery.status).collect();
    use DeliveryStatus::{InFlight, Pending};
    assert_eq!(states, [InFlight, InFlight, InFlight, Pending]);

    assert_eq!(lease_next(3).await.len(), 1);
    let again = publish_to(store, published[3].1.clone(), &["hr"]).await;
    assert!(again.duplicate);
    assert_eq!(again.deliveries[0].status, InFlight);
}

pub async fn idempotency_within_one_batch(store: &dyn Store) {
    let mut a = event("crm", "acme", "user.created", T0);
    a.idempotency_key = Some("same".into());
    let mut b = event("crm", "acme", "user.created", T0);
    b.idempotency_key = Some("same".into());
    let out = store
        .publish(
            vec![
                NewEvent {
                    event: a,
                    targets: vec![route("hr")],
                },
                NewEvent {
                    event: b,
                    targets: vec![route("hr")],
                },
            ],
            T0,
        )
        .await
        .unwrap();
    assert!(!out[0].duplicate);
    assert!(out[1].duplicate);
    assert_eq!(out[0].id, out[1].id);
    assert_eq!(out[0].deliveries.len(), 1);
    assert_eq!(
        out[1].deliveries, out[0].deliveries,
        "the repeat answers the first's deliveries"
    );
}

pub async fn lease_hands_out_oldest_first_without_duplicates(store: &dyn Store) {
    let mut published = Vec::new();
    for i in 0..5 {
        let p = publish_to(
            store,
            event("crm", "acme", "user.created", T0.plus_ms(i)),
            &["hr"],
        )
        .await;
        published.push(p.id);
    }
    let now = T0.plus_ms(10);
    let first = lease(store, "hr", 3, now).await;
    let second = lease(store, "hr", 3, now).await;
    let third = lease(store, "hr", 3, now).await;
    let got: Vec<EventId> = first
        .iter()
        .chain(&second)
        .map(|d| d.event.id.clone())
        .collect();
    assert_eq!(got, published);
    assert!(third.is_empty());
    for d in first.iter().chain(&second) {
        assert_eq!(d.attempt, 1);
        assert_eq!(d.lease_expires_at, now.plus_ms(30_000));
    }
    let record = store.event(published[0].clone()).await.unwrap().unwrap();
    let d = &record.deliveries[0];
    assert_eq!(d.status, DeliveryStatus::InFlight);
    assert_eq!(d.lease_expires_at, Some(now.plus_ms(30_000)));
    assert_eq!(d.history.len(), 1);
    assert_eq!(d.history[0].started_at, now);
    assert_eq!(d.history[0].outcome, None);
}

pub async fn lease_is_per_target_app(store: &dyn Store) {
    publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    assert!(lease(store, "billing", 10, T0).await.is_empty());
    assert!(lease(store, "crm", 10, T0).await.is_empty());
    assert_eq!(lease(store, "hr", 10, T0).await.len(), 1);
}

pub async fn ack_records_data_and_latency(store: &dyn Store) {
    let p = publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    let leased = lease(store, "hr", 1, T0.plus_ms(3)).await;
    let n = store
        .ack(
            app("hr"),
            vec![ack_item(&leased[0].id, 1, Some(r#"{"employee_id":42}"#))],
            T0.plus_ms(7),
        )
        .await
        .unwrap();
    assert_eq!(
        n,
        [crate::DeliveryChange {
            id: leased[0].id.clone(),
            event_id: p.id.clone(),
            tenant: TenantId::parse("acme").unwrap(),
            event_type: EventType::parse("user.created").unwrap(),
            source: app("crm"),
            target: app("hr"),
            status: DeliveryStatus::Acknowledged,
            attempt: 1,
            latency_ms: Some(7),
            error: None,
        }]
    );
    let record = store.event(p.id).await.unwrap().unwrap();
    let d = &record.deliveries[0];
    assert_eq!(d.status, DeliveryStatus::Acknowledged);
    assert_eq!(d.ack_data.as_deref(), Some(r#"{"employee_id":42}"#));
    assert_eq!(d.acknowledged_at, Some(T0.plus_ms(7)));
    assert_eq!(d.latency_ms(record.event.time), Some(7));
    assert_eq!(d.lease_expires_at, None);
    assert_eq!(d.history[0].outcome, Some(AttemptOutcome::Acknowledged));
    assert_eq!(d.history[0].ended_at, Some(T0.plus_ms(7)));
    assert!(lease(store, "hr", 1, T0.plus_ms(100_000)).await.is_empty());
}

/// A lease and an ack of many deliveries describe each one as its own (the embedded store
/// reads such descriptions on the calling thread up to 16 rows, on its blocking pool beyond).
pub async fn many_leased_and_acked_at_once_are_each_described(store: &dyn Store) {
    // 70: more rows than one multi-row statement of the embedded store holds (64 + 4 + 1 + 1).
    let events: Vec<NewEvent> = (0..70)
        .map(|i| {
            let tenant = ["acme", "globex"][i % 2];
            NewEvent {
                event: event("crm", tenant, "user.created", T0.plus_ms(i as u64)),
                targets: vec![route("hr")],
            }
        })
        .collect();
    let tenants: Vec<TenantId> = events.iter().map(|e| e.event.tenant.clone()).collect();
    let published: Vec<(EventId, TenantId)> = store
        .publish(events, T0)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .zip(tenants)
        .collect();
    let leased = lease(store, "hr", 100, T0.plus_ms(50)).await;
    let leased_events: Vec<(EventId, TenantId)> = leased
        .iter()
        .map(|d| (d.event.id.clone(), d.event.tenant.clone()))
        .collect();
    assert_eq!(
        leased_events, published,
        "oldest first, each with its event"
    );
    // Every third ack carries data, each its own.
    let data_of = |i: usize| i.is_multiple_of(3).then(|| format!(r#"{{"n":{i}}}"#));
    let acks = leased
        .iter()
        .enumerate()
        .map(|(i, d)| ack_item(&d.id, 1, data_of(i).as_deref()))
        .collect();
    let changes = store.ack(app("hr"), acks, T0.plus_ms(60)).await.unwrap();
    let described: Vec<(DeliveryId, EventId, TenantId, Option<u64>)> = changes
        .into_iter()
        .map(|c| (c.id, c.event_id, c.tenant, c.latency_ms))
        .collect();
    let expected: Vec<(DeliveryId, EventId, TenantId, Option<u64>)> = leased
        .iter()
        .map(|d| {
            (
                d.id.clone(),
                d.event.id.clone(),
                d.event.tenant.clone(),
                Some(60),
            )
        })
        .collect();
    assert_eq!(described, expected);
    for (i, d) in leased.iter().enumerate() {
        let record = store.event(d.event.id.clone()).await.unwrap().unwrap();
        let stored = &record.deliveries[0];
        assert_eq!(
            (
                stored.status,
                stored.ack_data.clone(),
                stored.acknowledged_at
            ),
            (
                DeliveryStatus::Acknowledged,
                data_of(i),
                Some(T0.plus_ms(60))
            ),
            "ack {i}"
        );
    }
}

pub async fn repeated_ack_changes_nothing(store: &dyn Store) {
    publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    let leased = lease(store, "hr", 1, T0).await;
    let item = ack_item(&leased[0].id, 1, None);
    assert_eq!(
        store
            .ack(app("hr"), vec![item.clone(), item.clone()], T0)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .ack(app("hr"), vec![item], T0)
            .await
            .unwrap()
            .is_empty()
    );
    let nack = store
        .nack(app("hr"), nack_item(&leased[0].id, 1, false, None), T0)
        .await;
    assert!(matches!(
        nack,
        Err(StoreError::NotInFlight {
            status: DeliveryStatus::Acknowledged,
            ..
        })
    ));
}

pub async fn ack_batch_is_all_or_nothing(store: &dyn Store) {
    let p = publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    let leased = lease(store, "hr", 1, T0).await;
    let bogus = DeliveryId::parse("dlv_999999").unwrap();
    let result = store
        .ack(
            app("hr"),
            vec![ack_item(&leased[0].id, 1, None), ack_item(&bogus, 1, None)],
            T0,
        )
        .await;
    assert_eq!(result.unwrap_err(), StoreError::UnknownDelivery(bogus));
    assert_eq!(
        status_of(store, &p.id, "hr").await,
        DeliveryStatus::InFlight
    );
    let garbage = DeliveryId::parse("not-a-delivery").unwrap();
    let result = store
        .ack(app("hr"), vec![ack_item(&garbage, 1, None)], T0)
        .await;
    assert_eq!(result.unwrap_err(), StoreError::UnknownDelivery(garbage));
}

pub async fn another_apps_delivery_looks_unknown(store: &dyn Store) {
    let p = publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    let leased = lease(store, "hr", 1, T0).await;
    let id = leased[0].id.clone();
    let ack = store
        .ack(app("billing"), vec![ack_item(&id, 1, None)], T0)
        .await;
    assert_eq!(ack.unwrap_err(), StoreError::UnknownDelivery(id.clone()));
    let nack = store
        .nack(app("crm"), nack_item(&id, 1, true, None), T0)
        .await;
    assert_eq!(nack.unwrap_err(), StoreError::UnknownDelivery(id));
    assert_eq!(
        status_of(store, &p.id, "hr").await,
        DeliveryStatus::InFlight
    );
}

pub async fn nack_backs_off_then_redelivers(store: &dyn Store) {
    register(store, "hr", &["*"], 8).await;
    let p = publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    let leased = lease(store, "hr", 1, T0).await;
    let result = store
        .nack(app("hr"), nack_item(&leased[0].id, 1, false, None), T0)
        .await
        .unwrap();
    assert_eq!(result.status, DeliveryStatus::Pending);
    let retry_at = result.retry_at.expect("a retry time");
    // The first backoff is 1 s, less up to 20 % jitter.
    assert!(
        (T0.plus_ms(800)..=T0.plus_ms(1000)).contains(&retry_at),
        "{retry_at:?}"
    );
    let early = store
        .lease(LeaseRequest {
            app: app("hr"),
            max: 1,
            lease_ms: 1000,
            now: T0.plus_ms(1),
        })
        .await
        .unwrap();
    assert!(early.deliveries.is_empty());
    assert_eq!(early.next_ready_at, Some(retry_at));
    let again = lease(store, "hr", 1, retry_at).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    let record = store.event(p.id).await.unwrap().unwrap();
    let d = &record.deliveries[0];
    assert_eq!(d.last_error.as_deref(), Some("boom"));
    let outcomes: Vec<Option<AttemptOutcome>> = d.history.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Some(AttemptOutcome::Failed), None]);
    assert_eq!(d.history[0].error.as_deref(), Some("boom"));
}

pub async fn nack_retry_in_overrides_backoff(store: &dyn Store) {
    register(store, "hr", &["*"], 8).await;
    publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    let leased = lease(store, "hr", 1, T0).await;
    let result = store
        .nack(
            app("hr"),
            nack_item(&leased[0].id, 1, false, Some(60_000)),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(result.retry_at, Some(T0.plus_ms(60_000)));
    assert!(lease(store, "hr", 1, T0.plus_ms(59_999)).await.is_empty());
    assert_eq!(lease(store, "hr", 1, T0.plus_ms(60_000)).await.len(), 1);
}

pub async fn permanent_nack_is_dead(store: &dyn Store) {
    register(store, "hr", &["*"], 8).await;
    let p = publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    let leased = lease(store, "hr", 1, T0).await;
    let result = store
        .nack(app("hr"), nack_item(&leased[0].id, 1, true, None), T0)
        .await
        .unwrap();
    assert_eq!(
        (result.status, result.retry_at),
        (DeliveryStatus::Dead, None)
    );
    assert_eq!(result.change.status, DeliveryStatus::Dead);
    assert_eq!(result.change.error.as_deref(), Some("boom"));
    assert_eq!(result.change.attempt, 1);
    assert_eq!(status_of(store, &p.id, "hr").await, DeliveryStatus::Dead);
    assert!(
        lease(store, "hr", 1, T0.plus_ms(10_000_000))
            .await
            .is_empty()
    );
}

pub async fn dead_after_max_attempts(store: &dyn Store) {
    register(store, "hr", &["*"], 3).await;
    let p = publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    let mut now = T0;
    for attempt in 1..=3 {
        let leased = lease(store, "hr", 1, now).await;
        assert_eq!(leased.len(), 1, "attempt {attempt}");
        assert_eq!(leased[0].attempt, attempt);
        let r = store
            .nack(
                app("hr"),
                nack_item(&leased[0].id, attempt, false, Some(0)),
                now,
            )
            .await
            .unwrap();
        let expect = if attempt < 3 {
            DeliveryStatus::Pending
        } else {
            DeliveryStatus::Dead
        };
        assert_eq!(r.status, expect);
        now = now.plus_ms(1);
    }
    let record = store.event(p.id).await.unwrap().unwrap();
    assert_eq!(record.deliveries[0].status, DeliveryStatus::Dead);
    assert_eq!(record.deliveries[0].attempts, 3);
    assert_eq!(record.deliveries[0].history.len(), 3);
}

pub async fn expired_lease_returns_to_pending(store: &dyn Store) {
    register(store, "hr", &["*"], 8).await;
    let p = publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    let leased = lease(store, "hr", 1, T0).await;
    let deadline = leased[0].lease_expires_at;
    let early = store
        .expire_leases(Timestamp(deadline.millis() - 1), 100)
        .await
        .unwrap();
    assert_eq!(early.count, 0);
    assert_eq!(early.next_deadline, Some(deadline));
    // At the deadline itself the lease is over.
    let expired = store.expire_leases(deadline, 100).await.unwrap();
    assert_eq!(expired.count, 1);
    assert_eq!(expired.apps, [app("hr")]);
    assert_eq!(expired.next_deadline, None);
    let record = store.event(p.id.clone()).await.unwrap().unwrap();
    let d = &record.deliveries[0];
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.history[0].outcome, Some(AttemptOutcome::TimedOut));
    assert!(
        d.available_at > deadline,
        "a backoff applies after a timeout"
    );
    let nothing = store.expire_leases(deadline.plus_ms(1), 100).await.unwrap();
    assert_eq!(nothing.count, 0);
}

pub async fn stale_lease_cannot_ack(store: &dyn Store) {
    register(store, "hr", &["*"], 8).await;
    let p = publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    let first = lease(store, "hr", 1, T0).await.remove(0);
    let later = first.lease_expires_at;
    store.expire_leases(later, 100).await.unwrap();
    let second = lease(store, "hr", 1, later.plus_ms(10_000)).await.remove(0);
    assert_eq!(second.id, first.id);
    assert_eq!(second.attempt, 2);
    let stale = store
        .ack(
            app("hr"),
            vec![ack_item(&first.id, 1, None)],
            later.plus_ms(10_001),
        )
        .await;
    assert_eq!(
        stale.unwrap_err(),
        StoreError::LeaseLost {
            id: first.id.clone(),
            given: 1,
            current: 2
        }
    );
    assert_eq!(
        status_of(store, &p.id, "hr").await,
        DeliveryStatus::InFlight
    );
    let fresh = store
        .ack(
            app("hr"),
            vec![ack_item(&second.id, 2, None)],
            later.plus_ms(10_002),
        )
        .await
        .unwrap();
    assert_eq!(fresh.len(), 1);
}

async fn ids(store: &dyn Store, q: EventQuery) -> Vec<EventId> {
    let page = store.events(EventQuery { limit: 100, ..q }).await.unwrap();
    page.events.into_iter().map(|r| r.event.id).collect()
}

pub async fn event_query_filters(store: &dyn Store) {
    let a = publish_to(store, event("crm", "acme", "user.created", T0), &["hr"])
        .await
        .id;
    let b = publish_to(
        store,
        event("crm", "globex", "user.created", T0.plus_ms(10)),
        &["hr", "billing"],
    )
    .await
    .id;
    let c = publish_to(
        store,
        event("shop", "acme", "order.created", T0.plus_ms(20)),
        &["billing"],
    )
    .await
    .id;
    let d = publish_to(
        store,
        event("shop", "acme", "order.item.added", T0.plus_ms(30)),
        &[],
    )
    .await
    .id;
    let tenant = |t: &str| Some(TenantId::parse(t).unwrap());
    let pattern = |p: &str| Some(TypePattern::parse(p).unwrap());
    assert_eq!(
        ids(store, EventQuery::default()).await,
        [d.clone(), c.clone(), b.clone(), a.clone()]
    );
    assert_eq!(
        ids(
            store,
            EventQuery {
                tenant: tenant("acme"),
                ..Default::default()
            }
        )
        .await,
        [d.clone(), c.clone(), a.clone()]
    );
    assert_eq!(
        ids(
            store,
            EventQuery {
                event_type: pattern("order.*"),
                ..Default::default()
            }
        )
        .await,
        [d.clone(), c.clone()]
    );
    assert_eq!(
        ids(
            store,
            EventQuery {
                event_type: pattern("user.created"),
                ..Default::default()
            }
        )
        .await,
        [b.clone(), a.clone()]
    );
    assert_eq!(
        ids(
            store,
            EventQuery {
                source: Some(app("shop")),
                ..Default::default()
            }
        )
        .await,
        [d.clone(), c.clone()]
    );
    assert_eq!(
        ids(
            store,
            EventQuery {
                target: Some(app("billing")),
                ..Default::default()
            }
        )
        .await,
        [c.clone(), b.clone()]
    );
    assert_eq!(
        ids(
            store,
            EventQuery {
                since: Some(T0.plus_ms(10)),
                until: Some(T0.plus_ms(30)),
                ..Default::default()
            }
        )
        .await,
        [c.clone(), b.clone()]
    );
    // Lease and ack hr's delivery of `a`: the status filter follows.
    let leased = lease(store, "hr", 1, T0.plus_ms(40)).await;
    assert_eq!(leased[0].event.id, a);
    store
        .ack(
            app("hr"),
            vec![ack_item(&leased[0].id, 1, None)],
            T0.plus_ms(41),
        )
        .await
        .unwrap();
    let acked = Some(DeliveryStatus::Acknowledged);
    assert_eq!(
        ids(
            store,
            EventQuery {
                status: acked,
                ..Default::default()
            }
        )
        .await,
        [a]
    );
    assert_eq!(
        ids(
            store,
            EventQuery {
                status: Some(DeliveryStatus::Pending),
                ..Default::default()
            }
        )
        .await,
        [c.clone(), b.clone()]
    );
    assert_eq!(
        ids(
            store,
            EventQuery {
                status: Some(DeliveryStatus::Pending),
                target: Some(app("hr")),
                ..Default::default()
            }
        )
        .await,
        [b]
    );
}

pub async fn event_query_pages_newest_first(store: &dyn Store) {
    let mut all = Vec::new();
    for i in 0..7 {
        all.push(
            publish_to(
                store,
                event("crm", "acme", "user.created", T0.plus_ms(i)),
                &["hr"],
            )
            .await
            .id,
        );
    }
    all.reverse();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .events(EventQuery {
                limit: 3,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.events.len() <= 3);
        seen.extend(page.events.into_iter().map(|r| r.event.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, all);
    let bad = store
        .events(EventQuery {
            limit: 3,
            cursor: Some("garbage".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(bad.unwrap_err(), StoreError::InvalidCursor);
}

pub async fn event_query_visibility_for_an_app(store: &dyn Store) {
    let to_hr = publish_to(store, event("crm", "acme", "user.created", T0), &["hr"])
        .await
        .id;
    let from_hr = publish_to(
        store,
        event("hr", "acme", "employee.hired", T0.plus_ms(1)),
        &["billing"],
    )
    .await
    .id;
    let unrelated = publish_to(
        store,
        event("crm", "acme", "user.created", T0.plus_ms(2)),
        &["billing"],
    )
    .await
    .id;
    let visible = |who: &str| EventQuery {
        visible_to: Some(app(who)),
        ..Default::default()
    };
    assert_eq!(
        ids(store, visible("hr")).await,
        [from_hr.clone(), to_hr.clone()]
    );
    assert_eq!(
        ids(store, visible("billing")).await,
        [unrelated.clone(), from_hr.clone()]
    );
    assert_eq!(ids(store, visible("crm")).await, [unrelated, to_hr]);
    assert!(ids(store, visible("nobody")).await.is_empty());
}

pub async fn closed_store_refuses_work(store: &dyn Store) {
    publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    store.close().await;
    let result = store
        .publish(
            vec![NewEvent {
                event: event("crm", "acme", "user.created", T0),
                targets: vec![],
            }],
            T0,
        )
        .await;
    assert_eq!(result.unwrap_err(), StoreError::Closed);
}

/// Leases everything ready for `who` at `now` and returns the event ids, in order.
async fn lease_ids(
    store: &dyn Store,
    who: &str,
    now: Timestamp,
) -> Vec<(EventId, DeliveryId, u32)> {
    lease(store, who, 100, now)
        .await
        .into_iter()
        .map(|d| (d.event.id.clone(), d.id, d.attempt))
        .collect()
}

fn of_entity(entity: Option<&str>, time: Timestamp) -> Event {
    let mut ev = event("crm", "acme", "user.updated", time);
    ev.entity_id = entity.map(str::to_owned);
    ev
}

pub async fn ordered_deliveries_go_one_at_a_time_per_entity(store: &dyn Store) {
    register(store, "hr", &["!user.*"], 8).await;
    let a1 = publish_to(store, of_entity(Some("a"), T0), &["!hr"])
        .await
        .id;
    let b1 = publish_to(store, of_entity(Some("b"), T0.plus_ms(1)), &["!hr"])
        .await
        .id;
    let a2 = publish_to(store, of_entity(Some("a"), T0.plus_ms(2)), &["!hr"])
        .await
        .id;
    let loose = publish_to(store, of_entity(None, T0.plus_ms(3)), &["!hr"])
        .await
        .id;
    let a3 = publish_to(store, of_entity(Some("a"), T0.plus_ms(4)), &["!hr"])
        .await
        .id;
    let now = T0.plus_ms(10);
    let first: Vec<EventId> = lease_ids(store, "hr", now)
        .await
        .into_iter()
        .map(|l| l.0)
        .collect();
    assert_eq!(
        first,
        [a1.clone(), b1.clone(), loose],
        "one per entity; no entity, no order"
    );
    assert!(
        lease_ids(store, "hr", now).await.is_empty(),
        "a2 waits for a1"
    );
    // a1 fails and is retried: a2 still waits, b is not held back by a.
    let a1_delivery = store.event(a1.clone()).await.unwrap().unwrap().deliveries[0]
        .id
        .clone();
    store
        .nack(app("hr"), nack_item(&a1_delivery, 1, false, Some(0)), now)
        .await
        .unwrap();
    let b2 = publish_to(store, of_entity(Some("b"), now), &["!hr"])
        .await
        .id;
    let b1_delivery = store.event(b1).await.unwrap().unwrap().deliveries[0]
        .id
        .clone();
    store
        .ack(app("hr"), vec![ack_item(&b1_delivery, 1, None)], now)
        .await
        .unwrap();
    let second: Vec<EventId> = lease_ids(store, "hr", now)
        .await
        .into_iter()
        .map(|l| l.0)
        .collect();
    assert_eq!(
        second,
        [a1.clone(), b2],
        "a1 again (attempt 2), and b2 after b1's ack"
    );
    store
        .ack(app("hr"), vec![ack_item(&a1_delivery, 2, None)], now)
        .await
        .unwrap();
    let third: Vec<EventId> = lease_ids(store, "hr", now)
        .await
        .into_iter()
        .map(|l| l.0)
        .collect();
    assert_eq!(third, std::slice::from_ref(&a2));
    let a2_delivery = store.event(a2).await.unwrap().unwrap().deliveries[0]
        .id
        .clone();
    store
        .ack(app("hr"), vec![ack_item(&a2_delivery, 1, None)], now)
        .await
        .unwrap();
    let fourth: Vec<EventId> = lease_ids(store, "hr", now)
        .await
        .into_iter()
        .map(|l| l.0)
        .collect();
    assert_eq!(fourth, [a3]);
}

pub async fn ordered_deliveries_within_one_batch(store: &dyn Store) {
    register(store, "hr", &["!user.*"], 8).await;
    let batch: Vec<NewEvent> = (0..3)
        .map(|i| NewEvent {
            event: of_entity(Some("a"), T0.plus_ms(i)),
            targets: vec![route("!hr")],
        })
        .collect();
    let ids: Vec<EventId> = store
        .publish(batch, T0)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    for expected in &ids {
        let got = lease_ids(store, "hr", T0).await;
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].0, expected);
        store
            .ack(app("hr"), vec![ack_item(&got[0].1, 1, None)], T0)
            .await
            .unwrap();
    }
}

pub async fn a_dead_delivery_releases_the_next_of_its_entity(store: &dyn Store) {
    register(store, "hr", &["!user.*"], 8).await;
    let a1 = publish_to(store, of_entity(Some("a"), T0), &["!hr"])
        .await
        .id;
    let a2 = publish_to(store, of_entity(Some("a"), T0.plus_ms(1)), &["!hr"])
        .await
        .id;
    let got = lease_ids(store, "hr", T0).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, a1);
    store
        .nack(app("hr"), nack_item(&got[0].1, 1, true, None), T0)
        .await
        .unwrap();
    let next = lease_ids(store, "hr", T0.plus_ms(5)).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].0, a2);
}

pub async fn extend_lease_pushes_the_deadline(store: &dyn Store) {
    register(store, "hr", &["*"], 8).await;
    let p = publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    let leased = lease(store, "hr", 1, T0).await.remove(0);
    let extend = |attempt, lease_ms| ExtendItem {
        id: leased.id.clone(),
        attempt: Some(attempt),
        lease_ms,
    };
    let until = store
        .extend_lease(app("hr"), extend(1, 120_000), T0.plus_ms(1000))
        .await
        .unwrap();
    assert_eq!(until, T0.plus_ms(121_000));
    assert_eq!(
        store
            .expire_leases(leased.lease_expires_at, 100)
            .await
            .unwrap()
            .count,
        0
    );
    let record = store.event(p.id.clone()).await.unwrap().unwrap();
    assert_eq!(record.deliveries[0].lease_expires_at, Some(until));
    let stale = store.extend_lease(app("hr"), extend(7, 1000), T0).await;
    assert!(
        matches!(
            stale,
            Err(StoreError::LeaseLost {
                given: 7,
                current: 1,
                ..
            })
        ),
        "{stale:?}"
    );
    let other = store
        .extend_lease(app("billing"), extend(1, 1000), T0)
        .await;
    assert_eq!(
        other.unwrap_err(),
        StoreError::UnknownDelivery(leased.id.clone())
    );
    store
        .ack(
            app("hr"),
            vec![ack_item(&leased.id, 1, None)],
            T0.plus_ms(2000),
        )
        .await
        .unwrap();
    let done = store
        .extend_lease(app("hr"), extend(1, 1000), T0.plus_ms(3000))
        .await;
    assert!(matches!(
        done,
        Err(StoreError::NotInFlight {
            status: DeliveryStatus::Acknowledged,
            ..
        })
    ));
}

/// Publishes an event of `ty` for `tenant` to `target` and kills its delivery at `now`
/// with a permanent nack.
async fn make_dead(
    store: &dyn Store,
    tenant: &str,
    ty: &str,
    target: &str,
    now: Timestamp,
) -> DeliveryId {
    publish_to(store, event("crm", tenant, ty, now), &[target]).await;
    let leased = lease(store, target, 1, now).await.remove(0);
    store
        .nack(app(target), nack_item(&leased.id, 1, true, None), now)
        .await
        .unwrap();
    leased.id
}

async fn dead_ids(store: &dyn Store, filter: DeadFilter) -> Vec<DeliveryId> {
    let page = store
        .dead_letters(DeadLetterQuery {
            filter,
            limit: 100,
            cursor: None,
        })
        .await
        .unwrap();
    page.items.into_iter().map(|r| r.delivery.id).collect()
}

pub async fn dead_letters_list_with_filters_and_pages(store: &dyn Store) {
    let a = make_dead(store, "acme", "user.created", "hr", T0).await;
    let b = make_dead(store, "globex", "user.created", "hr", T0.plus_ms(10)).await;
    let c = make_dead(store, "acme", "order.created", "billing", T0.plus_ms(20)).await;
    publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await; // alive
    assert_eq!(
        dead_ids(store, DeadFilter::default()).await,
        [c.clone(), b.clone(), a.clone()]
    );
    let tenant = Some(TenantId::parse("acme").unwrap());
    assert_eq!(
        dead_ids(
            store,
            DeadFilter {
                tenant,
                ..Default::default()
            }
        )
        .await,
        [c.clone(), a.clone()]
    );
    assert_eq!(
        dead_ids(
            store,
            DeadFilter {
                target: Some(app("hr")),
                ..Default::default()
            }
        )
        .await,
        [b.clone(), a.clone()]
    );
    let orders = Some(TypePattern::parse("order.*").unwrap());
    assert_eq!(
        dead_ids(
            store,
            DeadFilter {
                event_type: orders,
                ..Default::default()
            }
        )
        .await,
        std::slice::from_ref(&c)
    );
    let window = DeadFilter {
        since: Some(T0.plus_ms(10)),
        until: Some(T0.plus_ms(20)),
        ..Default::default()
    };
    assert_eq!(dead_ids(store, window).await, std::slice::from_ref(&b));
    assert_eq!(
        dead_ids(
            store,
            DeadFilter {
                visible_to: Some(app("billing")),
                ..Default::default()
            }
        )
        .await,
        std::slice::from_ref(&c)
    );
    let page = store
        .dead_letters(DeadLetterQuery {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    let rest = store
        .dead_letters(DeadLetterQuery {
            limit: 2,
            cursor: page.next_cursor,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.next_cursor, None);
    let item = &rest.items[0];
    assert_eq!(item.delivery.id, a);
    assert_eq!(item.event.event_type.as_str(), "user.created");
    assert_eq!(item.delivery.last_error.as_deref(), Some("boom"));
    assert_eq!(item.delivery.history.len(), 1);
}

pub async fn requeue_by_ids_gives_a_fresh_budget(store: &dyn Store) {
    register(store, "hr", &["*"], 1).await;
    let p = publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    let leased = lease(store, "hr", 1, T0).await.remove(0);
    let dead = store
        .nack(app("hr"), nack_item(&leased.id, 1, false, None), T0)
        .await
        .unwrap();
    assert_eq!(dead.status, DeliveryStatus::Dead);
    let requeued = store
        .requeue(RequeueRequest {
            selector: RequeueSelector::Ids(vec![leased.id.clone()]),
            by: "admin".into(),
            visible_to: None,
            now: T0.plus_ms(5),
        })
        .await
        .unwrap();
    assert_eq!(requeued.count, 1);
    assert_eq!(requeued.apps, [app("hr")]);
    let again = lease(store, "hr", 1, T0.plus_ms(5)).await.remove(0);
    assert_eq!(again.attempt, 2);
    // The budget is fresh: one more attempt, then dead again.
    let r = store
        .nack(
            app("hr"),
            nack_item(&again.id, 2, false, None),
            T0.plus_ms(6),
        )
        .await
        .unwrap();
    assert_eq!(r.status, DeliveryStatus::Dead);
    let d = &store.event(p.id).await.unwrap().unwrap().deliveries[0];
    assert_eq!(d.history.len(), 2, "the attempt history is kept");
    assert_eq!(
        d.requeues,
        [switchboard_core::event::Requeue {
            at: T0.plus_ms(5),
            by: "admin".into()
        }]
    );
}

pub async fn requeue_of_a_live_delivery_changes_nothing(store: &dyn Store) {
    let dead = make_dead(store, "acme", "user.created", "hr", T0).await;
    let live = publish_to(store, event("crm", "acme", "user.created", T0), &["hr"])
        .await
        .deliveries[0]
        .id
        .clone();
    let result = store
        .requeue(RequeueRequest {
            selector: RequeueSelector::Ids(vec![dead.clone(), live.clone()]),
            by: "admin".into(),
            visible_to: None,
            now: T0,
        })
        .await;
    assert_eq!(
        result.unwrap_err(),
        StoreError::NotDead {
            id: live,
            status: DeliveryStatus::Pending
        }
    );
    assert_eq!(dead_ids(store, DeadFilter::default()).await, [dead]);
    let unknown = DeliveryId::parse("dlv_77777").unwrap();
    let result = store
        .requeue(RequeueRequest {
            selector: RequeueSelector::Ids(vec![unknown.clone()]),
            by: "admin".into(),
            visible_to: None,
            now: T0,
        })
        .await;
    assert_eq!(result.unwrap_err(), StoreError::UnknownDelivery(unknown));
}

pub async fn requeue_by_filter_moves_a_bounded_batch(store: &dyn Store) {
    for i in 0..12 {
        make_dead(store, "acme", "user.created", "hr", T0.plus_ms(i)).await;
    }
    let other = make_dead(store, "globex", "user.created", "hr", T0).await;
    let filter = DeadFilter {
        tenant: Some(TenantId::parse("acme").unwrap()),
        ..Default::default()
    };
    let by_filter = |limit| RequeueRequest {
        selector: RequeueSelector::Filter {
            filter: filter.clone(),
            limit,
        },
        by: "admin".into(),
        visible_to: None,
        now: T0.plus_ms(100),
    };
    assert_eq!(store.requeue(by_filter(5)).await.unwrap().count, 5);
    assert_eq!(store.requeue(by_filter(5)).await.unwrap().count, 5);
    assert_eq!(store.requeue(by_filter(5)).await.unwrap().count, 2);
    assert_eq!(store.requeue(by_filter(5)).await.unwrap().count, 0);
    assert_eq!(dead_ids(store, DeadFilter::default()).await, [other]);
    assert_eq!(lease(store, "hr", 100, T0.plus_ms(100)).await.len(), 12);
}

pub async fn requeue_by_an_app_is_limited_to_its_deliveries(store: &dyn Store) {
    let hr_dead = make_dead(store, "acme", "user.created", "hr", T0).await;
    let billing_dead = make_dead(store, "acme", "user.created", "billing", T0).await;
    // A dead delivery hr published (to billing): hr sees it, but may not requeue it.
    publish_to(
        store,
        event("hr", "acme", "employee.hired", T0),
        &["billing"],
    )
    .await;
    let published_dead = lease(store, "billing", 1, T0).await.remove(0).id;
    store
        .nack(
            app("billing"),
            nack_item(&published_dead, 1, true, None),
            T0,
        )
        .await
        .unwrap();
    let as_hr = |selector| RequeueRequest {
        selector,
        by: "hr".into(),
        visible_to: Some(app("hr")),
        now: T0,
    };
    let refused = store
        .requeue(as_hr(RequeueSelector::Ids(vec![billing_dead.clone()])))
        .await;
    assert_eq!(
        refused.unwrap_err(),
        StoreError::UnknownDelivery(billing_dead.clone())
    );
    let all = RequeueSelector::Filter {
        filter: DeadFilter::default(),
        limit: 100,
    };
    assert_eq!(store.requeue(as_hr(all)).await.unwrap().count, 1);
    assert_eq!(
        dead_ids(store, DeadFilter::default()).await,
        [published_dead, billing_dead]
    );
    let back = lease(store, "hr", 1, T0).await;
    assert_eq!(back[0].id, hr_dead);
}

/// Publishes a `user.created` of `crm` in tenant `acme` at `T0 + ms` to `target` alone;
/// returns its delivery.
async fn acme_delivery_to(store: &dyn Store, target: &str, ms: u64) -> DeliveryId {
    let ev = event("crm", "acme", "user.created", T0.plus_ms(ms));
    publish_to(store, ev, &[target]).await.deliveries[0]
        .id
        .clone()
}

pub async fn unacknowledged_lists_open_deliveries_oldest_first(store: &dyn Store) {
    register(store, "hr", &["*"], 8).await;
    let pending = acme_delivery_to(store, "hr", 0).await;
    let in_flight = acme_delivery_to(store, "billing", 1).await;
    lease(store, "billing", 1, T0.plus_ms(1)).await;
    let failing = acme_delivery_to(store, "audit", 2).await;
    let l = lease(store, "audit", 1, T0.plus_ms(2)).await.remove(0);
    store
        .nack(
            app("audit"),
            nack_item(&l.id, 1, false, None),
            T0.plus_ms(2),
        )
        .await
        .unwrap();
    make_dead(store, "acme", "user.created", "crm", T0.plus_ms(3)).await;
    // A second open delivery on the first channel, after the others.
    let later = acme_delivery_to(store, "hr", 4).await;
    publish_to(store, event("crm", "globex", "user.created", T0), &["hr"]).await;
    let query = |visible_to: Option<&str>, created_before, limit, cursor| UnackedQuery {
        tenant: TenantId::parse("acme").unwrap(),
        visible_to: visible_to.map(app),
        created_before,
        limit,
        cursor,
    };
    let ids_of = |page: &crate::DeliveryPage| -> Vec<DeliveryId> {
        page.items.iter().map(|r| r.delivery.id.clone()).collect()
    };
    let page = store
        .unacknowledged(query(None, T0.plus_ms(10), 100, None))
        .await
        .unwrap();
    assert_eq!(
        ids_of(&page),
        [
            pending.clone(),
            in_flight.clone(),
            failing.clone(),
            later.clone()
        ]
    );
    assert_eq!(page.items[2].delivery.last_error.as_deref(), Some("boom"));
    assert_eq!(page.items[2].delivery.attempts, 1);
    let older = store
        .unacknowledged(query(None, T0.plus_ms(1), 100, None))
        .await
        .unwrap();
    assert_eq!(ids_of(&older), [pending.clone(), in_flight.clone()]);
    let first = store
        .unacknowledged(query(None, T0.plus_ms(10), 2, None))
        .await
        .unwrap();
    assert_eq!(ids_of(&first), [pending.clone(), in_flight.clone()]);
    let rest = store
        .unacknowledged(query(None, T0.plus_ms(10), 2, first.next_cursor))
        .await
        .unwrap();
    assert_eq!(ids_of(&rest), [failing.clone(), later.clone()]);
    // An app sees what was sent to it, and what it published.
    let to_hr = store
        .unacknowledged(query(Some("hr"), T0.plus_ms(10), 100, None))
        .await
        .unwrap();
    assert_eq!(ids_of(&to_hr), [pending.clone(), later.clone()]);
    let from_crm = store
        .unacknowledged(query(Some("crm"), T0.plus_ms(10), 100, None))
        .await
        .unwrap();
    assert_eq!(ids_of(&from_crm), [pending, in_flight, failing, later]);
}

/// The channels of `tenant` over the window since `since`, as (source, target) → stats.
pub async fn channels_of(
    store: &dyn Store,
    tenant: &str,
    since: Timestamp,
    now: Timestamp,
) -> std::collections::BTreeMap<(String, String), ChannelStats> {
    let rows = store
        .channels(ChannelQuery {
            tenant: Some(TenantId::parse(tenant).unwrap()),
            since,
            now,
        })
        .await
        .unwrap();
    rows.into_iter()
        .map(|c| ((c.source.to_string(), c.target.to_string()), c))
        .collect()
}

/// (published, acknowledged, failed_attempts, died, pending, in_flight, failing, dead)
fn figures(c: &ChannelStats) -> [u64; 8] {
    [
        c.published,
        c.acknowledged,
        c.failed_attempts,
        c.died,
        c.pending,
        c.in_flight,
        c.failing,
        c.dead,
    ]
}

pub async fn channel_counters_follow_every_change(store: &dyn Store) {
    register(store, "hr", &["*"], 2).await;
    register(store, "billing", &["*"], 8).await;
    let t = |ms| T0.plus_ms(ms);
    // Five events crm → hr and billing.
    for i in 0..5 {
        publish_to(
            store,
            event("crm", "acme", "user.created", t(i)),
            &["billing", "hr"],
        )
        .await;
    }
    let now = t(10);
    let c = channels_of(store, "acme", T0, now).await;
    assert_eq!(
        figures(&c[&("crm".into(), "hr".into())]),
        [5, 0, 0, 0, 5, 0, 0, 0]
    );
    let hr = lease(store, "hr", 4, now).await;
    // ack one 100 ms after publish, nack one (retry), nack one to death (2 attempts), leave one in flight.
    store
        .ack(app("hr"), vec![ack_item(&hr[0].id, 1, None)], t(100))
        .await
        .unwrap();
    store
        .nack(app("hr"), nack_item(&hr[1].id, 1, false, Some(0)), t(100))
        .await
        .unwrap();
    store
        .nack(app("hr"), nack_item(&hr[2].id, 1, false, Some(0)), t(100))
        .await
        .unwrap();
    let again = lease(store, "hr", 10, t(101)).await;
    assert_eq!(again.len(), 3, "the two nacked and the one never leased");
    let second_of_2 = again.iter().find(|d| d.id == hr[2].id).unwrap();
    store
        .nack(
            app("hr"),
            nack_item(&second_of_2.id, 2, false, None),
            t(102),
        )
        .await
        .unwrap();
    let c = channels_of(store, "acme", T0, t(200)).await;
    let hr_row = &c[&("crm".into(), "hr".into())];
    // published 5; acked 1; failed attempts 3; died 1; pending 0; in flight 3 (hr[1] again,
    // hr[3], the fifth); failing 1 (hr[1] in flight after a failure); dead 1.
    assert_eq!(figures(hr_row), [5, 1, 3, 1, 0, 3, 1, 1]);
    assert_eq!(hr_row.failures_last_hour, 4);
    assert_eq!(hr_row.latency.count(), 1);
    let p50 = hr_row.latency.quantile(0.5).unwrap();
    assert!((90..=112).contains(&p50), "{p50}");
    assert_eq!(hr_row.oldest_open_at, Some(t(1)));
    let billing_row = &c[&("crm".into(), "billing".into())];
    assert_eq!(figures(billing_row), [5, 0, 0, 0, 5, 0, 0, 0]);
    assert_eq!(billing_row.oldest_open_at, Some(T0));
    // Expire the leases: timed-out attempts count as failures.
    let expired = store.expire_leases(t(1_000_000), 100).await.unwrap();
    assert_eq!(expired.count, 3);
    let c = channels_of(store, "acme", T0, t(1_000_000)).await;
    let hr_row = &c[&("crm".into(), "hr".into())];
    // hr[1] was on attempt 2 of 2: dead now. The other two back to pending, failing.
    assert_eq!(figures(hr_row), [5, 1, 6, 2, 2, 0, 2, 2]);
    // Requeue the dead: pending again, still failing.
    store
        .requeue(RequeueRequest {
            selector: RequeueSelector::Filter {
                filter: DeadFilter::default(),
                limit: 100,
            },
            by: "admin".into(),
            visible_to: None,
            now: t(1_000_001),
        })
        .await
        .unwrap();
    let c = channels_of(store, "acme", T0, t(1_000_001)).await;
    assert_eq!(
        figures(&c[&("crm".into(), "hr".into())]),
        [5, 1, 6, 2, 4, 0, 4, 0]
    );
}

pub async fn channel_windows_and_tenants_stay_apart(store: &dyn Store) {
    register(store, "hr", &["*"], 8).await;
    let day = 86_400_000;
    publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    publish_to(
        store,
        event("crm", "acme", "user.created", T0.plus_ms(2 * day)),
        &["hr"],
    )
    .await;
    publish_to(
        store,
        event("crm", "globex", "user.created", T0.plus_ms(2 * day)),
        &["hr"],
    )
    .await;
    let now = T0.plus_ms(2 * day + 1000);
    let last_hour = channels_of(store, "acme", Timestamp(now.millis() - 3_600_000), now).await;
    let row = &last_hour[&("crm".into(), "hr".into())];
    assert_eq!(row.published, 1, "only the recent one is in the 1 h window");
    assert_eq!(row.pending, 2, "gauges are not windowed");
    let all = channels_of(store, "acme", Timestamp(0), now).await;
    assert_eq!(all[&("crm".into(), "hr".into())].published, 2);
    let globex = channels_of(store, "globex", Timestamp(0), now).await;
    assert_eq!(globex[&("crm".into(), "hr".into())].published, 1);
    assert_eq!(globex[&("crm".into(), "hr".into())].pending, 1);
    let everyone = store
        .channels(ChannelQuery {
            tenant: None,
            since: Timestamp(0),
            now,
        })
        .await
        .unwrap();
    assert_eq!(everyone.len(), 2);
    assert!(
        channels_of(store, "initech", Timestamp(0), now)
            .await
            .is_empty()
    );
}

pub async fn app_activity_records_consumers(store: &dyn Store) {
    register(store, "hr", &["*"], 8).await;
    register(store, "billing", &["*"], 8).await;
    publish_to(
        store,
        event("crm", "acme", "user.created", T0),
        &["hr", "billing"],
    )
    .await;
    publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    lease(store, "hr", 1, T0.plus_ms(5)).await;
    let activity = store.app_activity().await.unwrap();
    let by_app: std::collections::HashMap<&str, &crate::AppActivity> =
        activity.iter().map(|a| (a.app.as_str(), a)).collect();
    assert_eq!(by_app["hr"].last_consumed_at, Some(T0.plus_ms(5)));
    assert_eq!((by_app["hr"].pending, by_app["hr"].in_flight), (1, 1));
    assert_eq!(by_app["billing"].last_consumed_at, None);
    assert_eq!(
        (by_app["billing"].pending, by_app["billing"].in_flight),
        (1, 0)
    );
}

pub async fn alerts_are_recorded_with_their_event(store: &dyn Store) {
    let state = AlertState {
        tenant: TenantId::parse("acme").unwrap(),
        source: app("crm"),
        target: app("hr"),
        rule: "oldest_open".into(),
        raised_at: T0,
    };
    let mut ev = event("switchboard", "acme", "switchboard.alert.raised", T0);
    ev.data = r#"{"rule":"oldest_open"}"#.into();
    let published = store
        .record_alert(
            AlertChange::Raised(state.clone()),
            NewEvent {
                event: ev,
                targets: vec![route("ops")],
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!(published.deliveries.len(), 1);
    assert_eq!(store.alerts().await.unwrap(), std::slice::from_ref(&state));
    let cleared = event(
        "switchboard",
        "acme",
        "switchboard.alert.cleared",
        T0.plus_ms(1),
    );
    store
        .record_alert(
            AlertChange::Cleared(state),
            NewEvent {
                event: cleared,
                targets: vec![],
            },
            T0.plus_ms(1),
        )
        .await
        .unwrap();
    assert!(store.alerts().await.unwrap().is_empty());
    let page = store
        .events(EventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let types: Vec<&str> = page
        .events
        .iter()
        .map(|r| r.event.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        ["switchboard.alert.cleared", "switchboard.alert.raised"]
    );
}

pub async fn stats_group_by_source_target_type_and_hour(store: &dyn Store) {
    register(store, "hr", &["*"], 8).await;
    publish_to(
        store,
        event("crm", "acme", "user.created", T0),
        &["hr", "billing"],
    )
    .await;
    publish_to(
        store,
        event("shop", "acme", "order.created", T0),
        &["billing"],
    )
    .await;
    publish_to(store, event("crm", "globex", "user.created", T0), &["hr"]).await;
    let l = lease(store, "hr", 1, T0).await.remove(0);
    assert_eq!(l.event.tenant.as_str(), "acme");
    store
        .ack(app("hr"), vec![ack_item(&l.id, 1, None)], T0.plus_ms(1))
        .await
        .unwrap();
    let stats = |group_by| StatsQuery {
        tenant: Some(TenantId::parse("acme").unwrap()),
        visible_to: None,
        since: T0,
        until: T0.plus_ms(3_600_000),
        group_by,
    };
    let rows = |r: Vec<crate::StatsRow>| -> Vec<(String, u64, u64)> {
        r.into_iter()
            .map(|r| (r.key, r.published, r.acknowledged))
            .collect()
    };
    assert_eq!(
        rows(store.stats(stats(GroupBy::Source)).await.unwrap()),
        [("crm".into(), 2, 1), ("shop".into(), 1, 0)]
    );
    assert_eq!(
        rows(store.stats(stats(GroupBy::Target)).await.unwrap()),
        [("billing".into(), 2, 0), ("hr".into(), 1, 1)]
    );
    assert_eq!(
        rows(store.stats(stats(GroupBy::Type)).await.unwrap()),
        [
            ("order.created".into(), 1, 0),
            ("user.created".into(), 2, 1)
        ]
    );
    let hours = store.stats(stats(GroupBy::Hour)).await.unwrap();
    assert_eq!(hours.len(), 1);
    assert_eq!(hours[0].published, 3);
    assert!(hours[0].key.ends_with(":00:00.000Z"), "{}", hours[0].key);
}

pub async fn prune_drops_old_counters(store: &dyn Store) {
    publish_to(store, event("crm", "acme", "user.created", T0), &["hr"]).await;
    let later = T0.plus_ms(10 * 3_600_000);
    let removed = store.prune_stats(later, Timestamp(0)).await.unwrap();
    assert!(removed >= 1, "the minute rows went");
    let c = channels_of(store, "acme", T0, T0.plus_ms(60_000)).await;
    assert_eq!(
        c[&("crm".into(), "hr".into())].published,
        0,
        "minute counters are gone"
    );
    let c = channels_of(store, "acme", T0, later).await;
    assert_eq!(
        c[&("crm".into(), "hr".into())].published,
        1,
        "hour counters stay"
    );
    assert_eq!(c[&("crm".into(), "hr".into())].pending, 1);
}

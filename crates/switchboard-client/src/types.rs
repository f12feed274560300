//! Plain data sent to and received from the server, mirroring its JSON contract.
//! No IO and no behaviour beyond small constructors; timestamps stay RFC 3339 strings.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a delivery is in its life: pending → in_flight → acknowledged, or dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for a consumer, possibly until a retry time.
    Pending,
    /// Leased to a consumer until a deadline.
    InFlight,
    /// Done; the consumer may have left ack data.
    Acknowledged,
    /// Out of attempts, or failed permanently.
    Dead,
}

impl DeliveryStatus {
    /// The wire name, e.g. `in_flight`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::InFlight => "in_flight",
            DeliveryStatus::Acknowledged => "acknowledged",
            DeliveryStatus::Dead => "dead",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Apps
// ---------------------------------------------------------------------------------------------

/// Body of `POST /v1/apps`: registers an app and its subscriptions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewApp {
    /// The app's id, e.g. `hr`.
    pub id: String,
    /// Event type patterns, e.g. `user.created` or `credit.*`, possibly ordered.
    pub subscriptions: Vec<Subscription>,
    /// Attempts before a delivery goes dead; server default when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Retry backoff, e.g. `exponential 1s..10m`; server default when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

impl NewApp {
    /// An app with `id` and `subscriptions`, using the server's retry defaults.
    pub fn new<S: Into<Subscription>>(
        id: impl Into<String>,
        subscriptions: impl IntoIterator<Item = S>,
    ) -> NewApp {
        NewApp {
            id: id.into(),
            subscriptions: subscriptions.into_iter().map(Into::into).collect(),
            max_attempts: None,
            backoff: None,
        }
    }
}

/// One subscription: a pattern (`order.*`), or a pattern with per-entity ordering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Subscription {
    /// `user.created`, `order.*` or `*`.
    Pattern(String),
    /// With `ordered: true`, deliveries of one entity (tenant + `entity_id`) are handed out one
    /// at a time, in publish order.
    Detailed {
        /// The pattern.
        pattern: String,
        /// Per-entity ordering.
        #[serde(default)]
        ordered: bool,
    },
}

impl Subscription {
    /// An ordered subscription to `pattern`.
    pub fn ordered(pattern: impl Into<String>) -> Subscription {
        Subscription::Detailed {
            pattern: pattern.into(),
            ordered: true,
        }
    }
}

impl From<&str> for Subscription {
    fn from(pattern: &str) -> Subscription {
        Subscription::Pattern(pattern.to_owned())
    }
}

impl From<String> for Subscription {
    fn from(pattern: String) -> Subscription {
        Subscription::Pattern(pattern)
    }
}

/// Response of `POST /v1/apps`: the app plus its freshly minted API key (shown once).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CreatedApp {
    /// The app's id.
    pub id: String,
    /// The secret API key for the app; the server does not show it again.
    pub api_key: String,
    /// Public identifier of the key.
    pub key_id: String,
    /// Event type patterns the app subscribes to.
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
    /// Attempts before a delivery goes dead.
    pub max_attempts: u32,
    /// Retry backoff description.
    pub backoff: String,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// An app as listed by `GET /v1/apps` and returned by `PATCH /v1/apps/{id}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AppInfo {
    /// The app's id.
    pub id: String,
    /// Event type patterns the app subscribes to.
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
    /// Attempts before a delivery goes dead.
    pub max_attempts: u32,
    /// Retry backoff description.
    pub backoff: String,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// Body of `PATCH /v1/apps/{id}`: only the `Some` fields change.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AppUpdate {
    /// New subscriptions, replacing the old ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<Vec<String>>,
    /// New attempt limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// New retry backoff, e.g. `exponential 1s..10m`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct AppList {
    #[serde(default)]
    pub(crate) apps: Vec<AppInfo>,
}

// ---------------------------------------------------------------------------------------------
// Publishing
// ---------------------------------------------------------------------------------------------

/// Who an event is addressed to: one app or several. Absent means every subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Target {
    /// A single app id.
    One(String),
    /// Several app ids.
    Many(Vec<String>),
}

/// An event to publish with `POST /v1/events`. Build it with [`NewEvent::new`] and the
/// chained helpers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewEvent {
    /// The event type, e.g. `user.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The tenant the event belongs to.
    pub tenant: String,
    /// The payload; must be a JSON object.
    pub data: Value,
    /// Restricts delivery to these apps; every subscriber when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Publisher idempotency key: publishing the same key again is reported as a duplicate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Id of the entity the event is about, for ordering and lookup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<String>,
    /// Id shared by all events of one logical flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Id of the event that caused this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
}

impl NewEvent {
    /// An event of `event_type` for `tenant` carrying `data` (a JSON object), sent to every
    /// subscriber.
    pub fn new(event_type: impl Into<String>, tenant: impl Into<String>, data: Value) -> NewEvent {
        NewEvent {
            event_type: event_type.into(),
            tenant: tenant.into(),
            data,
            target: None,
            id: None,
            entity_id: None,
            correlation_id: None,
            causation_id: None,
        }
    }

    /// Addresses the event to the single app `target`.
    pub fn to(mut self, target: impl Into<String>) -> Self {
        self.target = Some(Target::One(target.into()));
        self
    }

    /// Addresses the event to the apps in `targets`.
    pub fn to_many<S: Into<String>>(mut self, targets: impl IntoIterator<Item = S>) -> Self {
        self.target = Some(Target::Many(targets.into_iter().map(Into::into).collect()));
        self
    }

    /// Sets the publisher idempotency key.
    pub fn id(mut self, key: impl Into<String>) -> Self {
        self.id = Some(key.into());
        self
    }

    /// Sets the entity id.
    pub fn entity(mut self, id: impl Into<String>) -> Self {
        self.entity_id = Some(id.into());
        self
    }

    /// Sets the correlation id.
    pub fn correlation(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    pub fn causation(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }
}

#[derive(Serialize)]
pub(crate) struct EventBatch<'a> {
    pub(crate) events: &'a [NewEvent],
}

/// The server's answer for one published event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PublishedEvent {
    /// The event's id (the stored event's id when this was a duplicate).
    pub id: String,
    /// True when the idempotency key had been seen before and nothing new was stored.
    #[serde(default)]
    pub duplicate: bool,
    /// The deliveries created for the event, one per receiving app.
    #[serde(default)]
    pub deliveries: Vec<PublishedDelivery>,
}

/// A delivery created by publishing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PublishedDelivery {
    /// The delivery's id.
    pub delivery_id: String,
    /// The receiving app.
    pub target: String,
    /// Its status right after publishing.
    pub status: DeliveryStatus,
}

#[derive(Deserialize)]
pub(crate) struct PublishResponse {
    #[serde(default)]
    pub(crate) events: Vec<PublishedEvent>,
}

// ---------------------------------------------------------------------------------------------
// Consuming
// ---------------------------------------------------------------------------------------------

/// Body of `POST /v1/consume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConsumeRequest {
    /// At most this many deliveries per call.
    pub max: u32,
    /// How long the server may hold the request open waiting for deliveries.
    pub wait_ms: u64,
    /// How long the consumer owns each returned delivery before it is handed out again.
    pub lease_ms: u64,
}

impl Default for ConsumeRequest {
    /// `max` 10, `wait_ms` 20 000, `lease_ms` 30 000.
    fn default() -> Self {
        ConsumeRequest {
            max: 10,
            wait_ms: 20_000,
            lease_ms: 30_000,
        }
    }
}

/// An event as stored by the server. `D` is what its `data` is read into: a JSON [`Value`]
/// unless the caller asks for its own type ([`Client::consume_as`](crate::Client::consume_as)),
/// which skips building a `Value` for data the caller reads once into a struct, or not at all.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Event<D = Value> {
    /// The event's id.
    pub id: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The event type, e.g. `user.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The publishing app.
    pub source: String,
    /// RFC 3339 time the server accepted the event.
    pub time: String,
    /// The payload (the server always sends it).
    pub data: D,
    /// The apps it was addressed to; `None` for every subscriber.
    #[serde(default)]
    pub target: Option<Vec<String>>,
    /// The publisher's idempotency key, if it gave one.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Entity id, if set.
    #[serde(default)]
    pub entity_id: Option<String>,
    /// Correlation id, if set.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Causation id, if set.
    #[serde(default)]
    pub causation_id: Option<String>,
    /// True when the delivery was created for an event published before the app subscribed.
    #[serde(default)]
    pub historical: bool,
}

impl<D> Event<D> {
    /// The same event with `data` in place of its own (e.g. read into a type of the
    /// consumer's).
    pub fn with_data<E>(self, data: E) -> Event<E> {
        Event {
            id: self.id,
            tenant: self.tenant,
            event_type: self.event_type,
            source: self.source,
            time: self.time,
            data,
            target: self.target,
            idempotency_key: self.idempotency_key,
            entity_id: self.entity_id,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            historical: self.historical,
        }
    }
}

/// One leased delivery returned by `POST /v1/consume`; `D` as in [`Event`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Delivery<D = Value> {
    /// The delivery's id; ack or nack with it.
    pub delivery_id: String,
    /// Which attempt this is, starting at 1.
    pub attempt: u32,
    /// RFC 3339 end of the lease.
    pub lease_expires_at: String,
    /// The event being delivered.
    pub event: Event<D>,
}

#[derive(Deserialize)]
pub(crate) struct ConsumeResponse<D> {
    #[serde(default = "Vec::new")]
    pub(crate) deliveries: Vec<Delivery<D>>,
}

/// One acknowledgement for `POST /v1/ack`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ack {
    /// The delivery being acknowledged.
    pub delivery_id: String,
    /// The attempt being acknowledged; the server rejects a stale attempt when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Result data to store with the delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl Ack {
    /// Acknowledges this attempt of `delivery`, without data.
    pub fn of<D>(delivery: &Delivery<D>) -> Ack {
        Ack {
            delivery_id: delivery.delivery_id.clone(),
            attempt: Some(delivery.attempt),
            data: None,
        }
    }

    /// Attaches result data.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

#[derive(Serialize)]
pub(crate) struct AckRequest<'a> {
    pub(crate) acks: &'a [Ack],
}

#[derive(Deserialize)]
pub(crate) struct AckResponse {
    pub(crate) acknowledged: u64,
}

/// A failure report for `POST /v1/nack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nack {
    /// The delivery that failed.
    pub delivery_id: String,
    /// The attempt that failed; the server rejects a stale attempt when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// What went wrong.
    pub error: String,
    /// Retry after this long instead of the app's backoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    /// Do not retry: the delivery goes dead.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub permanent: bool,
}

impl Nack {
    /// Reports this attempt of `delivery` as failed with `error`, retried per the app's backoff.
    pub fn of<D>(delivery: &Delivery<D>, error: impl Into<String>) -> Nack {
        Nack {
            delivery_id: delivery.delivery_id.clone(),
            attempt: Some(delivery.attempt),
            error: error.into(),
            retry_in_ms: None,
            permanent: false,
        }
    }
}

/// The server's answer to a nack.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NackOutcome {
    /// The delivery.
    pub delivery_id: String,
    /// `pending` when it will be retried, `dead` when not.
    pub status: DeliveryStatus,
    /// RFC 3339 time of the next attempt, when pending.
    #[serde(default)]
    pub retry_at: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Inspecting
// ---------------------------------------------------------------------------------------------

/// An event with all its deliveries, from `GET /v1/events/{id}` and `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventView {
    /// The event itself.
    #[serde(flatten)]
    pub event: Event,
    /// One delivery per receiving app.
    #[serde(default)]
    pub deliveries: Vec<DeliveryView>,
}

/// A delivery's full state and attempt history.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DeliveryView {
    /// The delivery's id.
    pub delivery_id: String,
    /// The receiving app.
    pub target: String,
    /// Current status.
    pub status: DeliveryStatus,
    /// Attempts started so far.
    #[serde(default)]
    pub attempts: u32,
    /// Error of the last failed attempt.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Data the consumer stored with its ack.
    #[serde(default)]
    pub ack_data: Option<Value>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last change.
    pub updated_at: String,
    /// RFC 3339 time from which a pending delivery can be handed out (again); absent for
    /// other statuses.
    #[serde(default)]
    pub available_at: Option<String>,
    /// RFC 3339 end of the current lease, when in flight.
    #[serde(default)]
    pub lease_expires_at: Option<String>,
    /// RFC 3339 time of the ack, when acknowledged.
    #[serde(default)]
    pub acknowledged_at: Option<String>,
    /// Milliseconds from publish to ack, when acknowledged.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Every attempt, oldest first.
    #[serde(default)]
    pub history: Vec<AttemptView>,
}

/// One entry of a delivery's history: an attempt (`kind` = `attempt`) or a requeue from the
/// dead letters (`kind` = `requeue`, with `at` and `by`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AttemptView {
    /// `attempt` or `requeue`.
    #[serde(default = "attempt_kind")]
    pub kind: String,
    /// Attempt number, starting at 1 (0 for a requeue).
    #[serde(default)]
    pub attempt: u32,
    /// RFC 3339 time it was handed out (empty for a requeue).
    #[serde(default)]
    pub started_at: String,
    /// For a requeue: RFC 3339 time.
    #[serde(default)]
    pub at: Option<String>,
    /// For a requeue: who asked (`admin` or an app id).
    #[serde(default)]
    pub by: Option<String>,
    /// RFC 3339 time it ended, when it has.
    #[serde(default)]
    pub ended_at: Option<String>,
    /// How it ended (e.g. `acknowledged`, `failed`, `timed_out`), when it has.
    #[serde(default)]
    pub outcome: Option<String>,
    /// The error reported for it, if any.
    #[serde(default)]
    pub error: Option<String>,
}

/// Filters for `GET /v1/events`; `None` fields are not sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsQuery {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only events published by this app.
    pub source: Option<String>,
    /// Only events with a delivery to this app.
    pub target: Option<String>,
    /// Only events with a delivery in this status.
    pub status: Option<DeliveryStatus>,
    /// RFC 3339 lower time bound.
    pub since: Option<String>,
    /// RFC 3339 upper time bound.
    pub until: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
    /// Continue after this cursor (an [`EventsPage::next_cursor`]).
    pub cursor: Option<String>,
}

/// One page of `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventsPage {
    /// The events on this page.
    #[serde(default)]
    pub events: Vec<EventView>,
    /// Pass as [`EventsQuery::cursor`] for the next page; `None` on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct Health {
    pub(crate) status: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn new_event_omits_absent_fields() {
        let event = NewEvent::new("user.created", "acme", json!({"id": 1}));
        assert_eq!(
            serde_json::to_value(&event).ok(),
            Some(json!({"type": "user.created", "tenant": "acme", "data": {"id": 1}}))
        );
        let event = event
            .to("hr")
            .id("k1")
            .entity("e")
            .correlation("c")
            .causation("p");
        assert_eq!(
            serde_json::to_value(&event).ok(),
            Some(
                json!({"type": "user.created", "tenant": "acme", "data": {"id": 1},
                "target": "hr", "id": "k1", "entity_id": "e", "correlation_id": "c",
                "causation_id": "p"})
            )
        );
        let event = event.to_many(["hr", "billing"]);
        assert_eq!(
            serde_json::to_value(&event)
                .ok()
                .map(|v| v["target"].clone()),
            Some(json!(["hr", "billing"]))
        );
    }

    #[test]
    fn nack_sends_permanent_only_when_set() {
        let mut nack = Nack {
            delivery_id: "d1".into(),
            attempt: Some(2),
            error: "boom".into(),
            retry_in_ms: None,
            permanent: false,
        };
        assert_eq!(
            serde_json::to_value(&nack).ok(),
            Some(json!({"delivery_id": "d1", "attempt": 2, "error": "boom"}))
        );
        nack.permanent = true;
        assert_eq!(
            serde_json::to_value(&nack)
                .ok()
                .map(|v| v["permanent"].clone()),
            Some(json!(true))
        );
    }

    #[test]
    fn event_view_reads_minimal_and_full_bodies() {
        let minimal = json!({
            "id": "ev1", "tenant": "acme", "type": "user.created", "source": "hr",
            "time": "2024-01-01T00:00:00Z", "data": {}, "unknown": [1, 2],
            "deliveries": [{
                "delivery_id": "d1", "target": "billing", "status": "in_flight",
                "attempts": 1, "created_at": "t", "updated_at": "t", "available_at": "t",
                "history": [{"attempt": 1, "started_at": "t"}]
            }]
        });
        let view: EventView = serde_json::from_value(minimal).expect("decodes");
        assert_eq!(view.event.event_type, "user.created");
        assert!(!view.event.historical);
        assert_eq!(view.event.target, None);
        assert_eq!(view.deliveries[0].status, DeliveryStatus::InFlight);
        assert_eq!(view.deliveries[0].ack_data, None);
        assert_eq!(view.deliveries[0].history[0].outcome, None);

        let page = json!({"events": [{
            "id": "ev1", "tenant": "acme", "type": "t", "source": "hr", "time": "t",
            "data": {"a": 1}, "target": ["billing"], "idempotency_key": "k",
            "historical": true, "deliveries": [{
                "delivery_id": "d1", "target": "billing", "status": "acknowledged",
                "attempts": 2, "last_error": "boom", "ack_data": {"ok": true},
                "created_at": "t", "updated_at": "t", "available_at": "t",
                "acknowledged_at": "t", "latency_ms": 12,
                "history": [{"attempt": 1, "started_at": "t", "ended_at": "t",
                    "outcome": "failed", "error": "boom"}]
            }]
        }], "next_cursor": null});
        let page: EventsPage = serde_json::from_value(page).expect("decodes");
        assert_eq!(page.next_cursor, None);
        let view = &page.events[0];
        assert_eq!(view.event.target, Some(vec!["billing".to_owned()]));
        assert!(view.event.historical);
        assert_eq!(view.deliveries[0].ack_data, Some(json!({"ok": true})));
        assert_eq!(view.deliveries[0].latency_ms, Some(12));
    }
}

fn attempt_kind() -> String {
    "attempt".to_owned()
}

/// A dead or unacknowledged delivery with its event, from `GET /v1/dead-letters` and
/// `GET /v1/tenants/{tenant}/unacknowledged`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DeliveryRecord {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: DeliveryView,
    /// Milliseconds since the delivery was created.
    #[serde(default)]
    pub age_ms: u64,
    /// Its event.
    pub event: Event,
}

/// One page of `GET /v1/dead-letters`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DeadLettersPage {
    /// Dead deliveries, newest first.
    #[serde(default)]
    pub dead_letters: Vec<DeliveryRecord>,
    /// Pass as the next query's cursor; `None` on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// One page of `GET /v1/tenants/{tenant}/unacknowledged`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UnacknowledgedPage {
    /// Open deliveries, oldest first.
    #[serde(default)]
    pub unacknowledged: Vec<DeliveryRecord>,
    /// Pass as the next query's cursor; `None` on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Which dead deliveries: every set field narrows (`event_type` may be a pattern).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeadFilter {
    /// Only this tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Only deliveries to this app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Only events of this type or pattern.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Died at or after (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Died before (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// A key just created: shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CreatedKey {
    /// The app it belongs to, for an app key.
    #[serde(default)]
    pub app: Option<String>,
    /// The tenant it reads, for a tenant reader key.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Public identifier of the key (to list or revoke it).
    pub key_id: String,
    /// The secret key; the server keeps only its hash.
    pub api_key: String,
    /// RFC 3339.
    pub created_at: String,
}

/// A live key as listed: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KeyInfo {
    pub key_id: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; to within about a minute. `None` when never used.
    pub last_used_at: Option<String>,
}

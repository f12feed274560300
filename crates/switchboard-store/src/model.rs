//! The plain data that crosses the storage interface.

use switchboard_core::event::{Delivery, Event};
use switchboard_core::histogram::Histogram;
use switchboard_core::{
    AppId, AppSettings, DeliveryId, DeliveryStatus, EventId, EventType, Route, Subscription,
    TenantId, Timestamp, TypePattern,
};

/// SHA-256 of an API key. Keys themselves are never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

#[derive(Debug, Clone)]
pub struct NewKey {
    pub key_id: String,
    pub hash: KeyHash,
}

/// Who a key belongs to: an app (publish, consume, read its own), or a tenant's read-only
/// dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyOwner {
    App(AppId),
    TenantReader(TenantId),
}

/// What a live key resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrant {
    pub key_id: String,
    pub owner: KeyOwner,
}

/// A live key as listed: its id and times, never the key nor its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub key_id: String,
    pub created_at: Timestamp,
    /// When a request last used it, to within the server's touch interval.
    pub last_used_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct NewApp {
    pub id: AppId,
    pub subscriptions: Vec<Subscription>,
    pub settings: AppSettings,
    pub key: NewKey,
    pub now: Timestamp,
}

#[derive(Debug, Clone)]
pub struct AppUpdate {
    pub id: AppId,
    pub subscriptions: Option<Vec<Subscription>>,
    pub settings: Option<AppSettings>,
}

/// An event to store with the targets routing chose for it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event: Event,
    pub targets: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryState {
    pub id: DeliveryId,
    pub target: AppId,
    pub status: DeliveryStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: EventId,
    /// True when the idempotency key was seen before and nothing was stored.
    pub duplicate: bool,
    pub deliveries: Vec<DeliveryState>,
}

#[derive(Debug, Clone)]
pub struct LeaseRequest {
    pub app: AppId,
    pub max: u32,
    pub lease_ms: u64,
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedDelivery {
    pub id: DeliveryId,
    pub attempt: u32,
    pub lease_expires_at: Timestamp,
    /// Shared: the SQLite store hands out the events it keeps in memory without copying them.
    pub event: std::sync::Arc<Event>,
}

#[derive(Debug, Clone, Default)]
pub struct Leased {
    pub deliveries: Vec<LeasedDelivery>,
    /// When nothing was ready: the earliest time a pending delivery of this app becomes
    /// ready (a retry waiting for its backoff), so a long-poll can wake up then.
    pub next_ready_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct AckItem {
    pub id: DeliveryId,
    /// The attempt the consumer was handed. When given, an ack for an older attempt is refused
    /// with `LeaseLost`.
    pub attempt: Option<u32>,
    /// JSON text.
    pub data: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NackItem {
    pub id: DeliveryId,
    pub attempt: Option<u32>,
    pub error: String,
    pub retry_in_ms: Option<u64>,
    pub permanent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NackResult {
    pub status: DeliveryStatus,
    /// When the next attempt may start, if there is one.
    pub retry_at: Option<Timestamp>,
    pub change: DeliveryChange,
}

/// What changed for one delivery: for the live stream, metrics and wake-ups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryChange {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub tenant: TenantId,
    pub event_type: EventType,
    pub source: AppId,
    pub target: AppId,
    /// The status after the change.
    pub status: DeliveryStatus,
    /// The attempt that ended (or 0 for changes outside an attempt).
    pub attempt: u32,
    /// Publish → ack, for an ack.
    pub latency_ms: Option<u64>,
    /// The error of a failed attempt.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Expired {
    pub count: usize,
    /// Apps that got deliveries back to pending: their long-polls should wake.
    pub apps: Vec<AppId>,
    /// The earliest lease deadline still standing.
    pub next_deadline: Option<Timestamp>,
    pub changes: Vec<DeliveryChange>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub event: Event,
    pub deliveries: Vec<Delivery>,
}

#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events this app published or received (app keys); `None` for the admin.
    pub visible_to: Option<AppId>,
    pub tenant: Option<TenantId>,
    pub event_type: Option<TypePattern>,
    pub source: Option<AppId>,
    pub target: Option<AppId>,
    /// Events with at least one delivery (to `target`, when given) in this status.
    pub status: Option<DeliveryStatus>,
    /// Inclusive.
    pub since: Option<Timestamp>,
    /// Exclusive.
    pub until: Option<Timestamp>,
    pub limit: u32,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    pub events: Vec<EventRecord>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ExtendItem {
    pub id: DeliveryId,
    pub attempt: Option<u32>,
    /// The new lease runs this long from `now`.
    pub lease_ms: u64,
}

/// A delivery with its event: one row of the dead-letter and unacknowledged lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub event: Event,
    pub delivery: Delivery,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryRecord>,
    pub next_cursor: Option<String>,
}

/// Which dead deliveries: every field narrows.
#[derive(Debug, Clone, Default)]
pub struct DeadFilter {
    /// Only deliveries to or from this app (app keys); `None` for the admin.
    pub visible_to: Option<AppId>,
    pub tenant: Option<TenantId>,
    pub target: Option<AppId>,
    pub event_type: Option<TypePattern>,
    /// Died at or after (inclusive).
    pub since: Option<Timestamp>,
    /// Died before (exclusive).
    pub until: Option<Timestamp>,
}

#[derive(Debug, Clone, Default)]
pub struct DeadLetterQuery {
    pub filter: DeadFilter,
    pub limit: u32,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub enum RequeueSelector {
    /// Exactly these; all must be dead and visible, or nothing moves.
    Ids(Vec<DeliveryId>),
    /// Up to `limit` dead deliveries matching the filter, oldest first.
    Filter { filter: DeadFilter, limit: usize },
}

#[derive(Debug, Clone)]
pub struct RequeueRequest {
    pub selector: RequeueSelector,
    /// `admin` or the app asking, recorded in the history.
    pub by: String,
    /// For app keys: only their own deliveries (as target).
    pub visible_to: Option<AppId>,
    pub now: Timestamp,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requeued {
    pub count: usize,
    /// Apps that got deliveries back: their long-polls should wake.
    pub apps: Vec<AppId>,
}

/// Deliveries of a tenant not acknowledged yet (pending, failing or in flight), oldest first.
#[derive(Debug, Clone)]
pub struct UnackedQuery {
    pub tenant: TenantId,
    pub visible_to: Option<AppId>,
    /// Only deliveries created at or before this time.
    pub created_before: Timestamp,
    pub limit: u32,
    pub cursor: Option<String>,
}

/// One channel (tenant, source → target): windowed flows from the counters, current gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStats {
    pub tenant: TenantId,
    pub source: AppId,
    pub target: AppId,
    /// Deliveries created in the window.
    pub published: u64,
    /// Deliveries acknowledged in the window.
    pub acknowledged: u64,
    /// Failed attempts (nacks and expired leases) in the window.
    pub failed_attempts: u64,
    /// Deliveries that went dead in the window.
    pub died: u64,
    /// Failed attempts plus deaths in the last hour, whatever the window.
    pub failures_last_hour: u64,
    pub pending: u64,
    pub in_flight: u64,
    /// Open deliveries that had at least one failed attempt (retrying).
    pub failing: u64,
    /// In the dead letters now.
    pub dead: u64,
    /// When the oldest pending or in-flight delivery was created.
    pub oldest_open_at: Option<Timestamp>,
    /// Publish → ack latencies of the window.
    pub latency: Histogram,
}

#[derive(Debug, Clone)]
pub struct ChannelQuery {
    /// `None`: every tenant.
    pub tenant: Option<TenantId>,
    /// Start of the window. Windows up to two hours are counted by the minute, longer ones by
    /// the hour (from the start of `since`'s hour).
    pub since: Timestamp,
    pub now: Timestamp,
}

/// When an app last consumed, and its open deliveries (all tenants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppActivity {
    pub app: AppId,
    pub last_consumed_at: Option<Timestamp>,
    pub pending: u64,
    pub in_flight: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Type,
    Source,
    Target,
    Hour,
}

#[derive(Debug, Clone)]
pub struct StatsQuery {
    pub tenant: Option<TenantId>,
    /// Only deliveries to or from this app (app keys).
    pub visible_to: Option<AppId>,
    pub since: Timestamp,
    pub until: Timestamp,
    pub group_by: GroupBy,
}

/// Counts for one group. By source, target or hour they come from the hourly counters (flows
/// in the range, to the hour); by type from the events published in the range (their
/// deliveries' outcomes so far).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsRow {
    pub key: String,
    pub published: u64,
    pub acknowledged: u64,
    pub failed_attempts: u64,
    pub dead: u64,
}

/// An alert that is raised and not yet cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertState {
    pub tenant: TenantId,
    pub source: AppId,
    pub target: AppId,
    pub rule: String,
    pub raised_at: Timestamp,
}

#[derive(Debug, Clone)]
pub enum AlertChange {
    Raised(AlertState),
    Cleared(AlertState),
}

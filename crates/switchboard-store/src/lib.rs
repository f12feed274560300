//! The storage interface of switchboard ([`Store`]), the plain data it takes and returns, and
//! its backends. Every state change goes through here; a backend must never reply before the
//! change is durable. Backends take `now` from the caller and never read a clock for state.

mod error;
mod model;
pub mod redis;
pub mod sqlite;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod testing;

use std::future::Future;
use std::pin::Pin;

pub use error::StoreError;
pub use model::*;
use switchboard_core::event::App;
use switchboard_core::{AppId, EventId, Timestamp};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything switchboard keeps. Implemented by the SQLite backend (and later Redis); the
/// conformance suite (feature `conformance`) holds each to the same behaviour.
pub trait Store: Send + Sync + 'static {
    /// Registers an app with its first key. Fails with `AppExists` when the id is taken.
    fn create_app(&self, app: NewApp) -> BoxFuture<'_, Result<App>>;

    /// Replaces an app's subscriptions and/or settings; applies to what happens next.
    fn update_app(&self, update: AppUpdate) -> BoxFuture<'_, Result<App>>;

    fn list_apps(&self) -> BoxFuture<'_, Result<Vec<App>>>;

    /// The owner and id of the live (not revoked) key with this hash.
    fn resolve_key(&self, hash: KeyHash) -> BoxFuture<'_, Result<Option<KeyGrant>>>;

    /// Adds a live key for `owner` (an app's second key, for rotation, or a tenant reader's
    /// key). Fails with `UnknownApp` for an app not registered.
    fn add_key(
        &self,
        owner: KeyOwner,
        key: NewKey,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<KeyInfo>>;

    /// Revokes a live key of `owner` at once: it no longer resolves. Fails with `UnknownKey`
    /// when `owner` has no live key with this id.
    fn revoke_key(
        &self,
        owner: KeyOwner,
        key_id: String,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<()>>;

    /// The live keys of `owner`, oldest first.
    fn keys(&self, owner: KeyOwner) -> BoxFuture<'_, Result<Vec<KeyInfo>>>;

    /// Records when keys were last used (`key_id`, time); never moves a time backwards and
    /// ignores keys that are gone.
    fn touch_keys(&self, used: Vec<(String, Timestamp)>) -> BoxFuture<'_, Result<()>>;

    /// Stores events and their deliveries, all or nothing. An event whose idempotency key was
    /// seen before from the same source is not stored again: its first result comes back
    /// with `duplicate: true`. A store may store an event under an id of its own (the
    /// embedded one gives ids that hold its event numbers): the result's id is the event's.
    fn publish(
        &self,
        events: Vec<NewEvent>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Vec<Published>>>;

    /// Leases up to `max` ready deliveries of `app`, oldest first.
    fn lease(&self, req: LeaseRequest) -> BoxFuture<'_, Result<Leased>>;

    /// Like [`lease`](Store::lease), but when nothing is ready it may wait, up to `wait` or
    /// until `woken` completes, for deliveries a publish hands over directly (stored in
    /// flight, answered once the publish is durable). A backend that cannot returns at once,
    /// like `lease`, and the caller waits for `woken` itself. The lease itself is never cut
    /// short: only the wait after it is (dropping a lease in progress would lose what it
    /// took until its lease expires).
    fn lease_waiting<'a>(
        &'a self,
        req: LeaseRequest,
        wait: std::time::Duration,
        woken: Pin<&'a mut (dyn Future<Output = ()> + Send + 'a)>,
    ) -> BoxFuture<'a, Result<Leased>> {
        let _ = (wait, woken);
        self.lease(req)
    }

    /// Acknowledges deliveries held by `app`, all or nothing; returns those that changed
    /// (a repeated ack of the same attempt changes nothing and is not an error).
    fn ack(
        &self,
        app: AppId,
        acks: Vec<AckItem>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Vec<DeliveryChange>>>;

    /// Records a failed attempt of a delivery held by `app`.
    fn nack(&self, app: AppId, nack: NackItem, now: Timestamp)
    -> BoxFuture<'_, Result<NackResult>>;

    /// Returns up to `limit` expired leases to pending (or dead), recording a timed-out
    /// attempt for each.
    fn expire_leases(&self, now: Timestamp, limit: usize) -> BoxFuture<'_, Result<Expired>>;

    /// Pushes the lease deadline of a delivery `app` holds to `now + lease_ms`; returns it.
    fn extend_lease(
        &self,
        app: AppId,
        item: ExtendItem,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Timestamp>>;

    /// Dead deliveries with their events, newest first, one page at a time.
    fn dead_letters(&self, query: DeadLetterQuery) -> BoxFuture<'_, Result<DeliveryPage>>;

    /// Returns dead deliveries to pending with a fresh attempt budget, recording who asked.
    fn requeue(&self, req: RequeueRequest) -> BoxFuture<'_, Result<Requeued>>;

    /// A tenant's deliveries not yet acknowledged nor dead, oldest first.
    fn unacknowledged(&self, query: UnackedQuery) -> BoxFuture<'_, Result<DeliveryPage>>;

    fn event(&self, id: EventId) -> BoxFuture<'_, Result<Option<EventRecord>>>;

    /// Every channel of a tenant (or of all), from the counters: never a scan of deliveries.
    fn channels(&self, query: ChannelQuery) -> BoxFuture<'_, Result<Vec<ChannelStats>>>;

    /// Per app: when it last consumed and its open deliveries.
    fn app_activity(&self) -> BoxFuture<'_, Result<Vec<AppActivity>>>;

    /// Event counts and outcomes, grouped.
    fn stats(&self, query: StatsQuery) -> BoxFuture<'_, Result<Vec<StatsRow>>>;

    /// Drops per-minute counters older than `minutes_before` and per-hour ones older than
    /// `hours_before`; returns how many rows went.
    fn prune_stats(
        &self,
        minutes_before: Timestamp,
        hours_before: Timestamp,
    ) -> BoxFuture<'_, Result<usize>>;

    /// Alerts raised and not cleared.
    fn alerts(&self) -> BoxFuture<'_, Result<Vec<AlertState>>>;

    /// Records an alert change and publishes its event in the same transaction, so an alert
    /// is announced exactly once per change.
    fn record_alert(
        &self,
        change: AlertChange,
        event: NewEvent,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Published>>;

    /// Events newest first, filtered, one page at a time.
    fn events(&self, query: EventQuery) -> BoxFuture<'_, Result<EventPage>>;

    /// Wake-ups from other nodes sharing this store: ids of apps whose deliveries became
    /// ready elsewhere, so long-polls here look again; the reserved id `switchboard` says the
    /// registered apps changed (reload them). `None` when only this process writes.
    fn wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<AppId>> {
        None
    }

    /// Finishes pending writes and releases the files. Later calls fail with `Closed`.
    fn close(&self) -> BoxFuture<'_, ()>;
}

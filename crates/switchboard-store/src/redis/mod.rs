//! The Redis backend: several switchboard nodes share one Redis. Deliveries wait on one
//! stream per target app (consumer group `switchboard`); a lease is an entry in the group's
//! PEL plus a deadline in `sb:leases`; events and deliveries are hashes; every state change
//! is one Lua script (`lua/`), so a crash never leaves half of one. Time is the caller's
//! `now`, never Redis' clock. See ARCHITECTURE.md ("Redis backend") for the key layout.
//!
//! Durable on reply only as far as Redis' persistence goes: with `appendonly yes` and
//! `appendfsync always`, Redis fsyncs the AOF before it answers a script.

mod codec;
mod counters;
mod credentials;
mod keys;
mod read;
mod scripts;
mod write;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, ServerErrorKind};
use switchboard_core::event::App;
use switchboard_core::{AppId, EventId, Timestamp};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use self::scripts::Scripts;
use crate::{
    AckItem, AlertChange, AlertState, AppActivity, AppUpdate, BoxFuture, ChannelQuery,
    ChannelStats, DeadLetterQuery, DeliveryChange, DeliveryPage, EventPage, EventQuery,
    EventRecord, Expired, ExtendItem, KeyGrant, KeyHash, KeyInfo, KeyOwner, LeaseRequest, Leased,
    NackItem, NackResult, NewApp, NewEvent, NewKey, Published, RequeueRequest, Requeued, Result,
    StatsQuery, StatsRow, Store, StoreError, UnackedQuery,
};

/// How long one command or script may take before the store reports Redis unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Wake-ups buffered per receiver; a slow receiver skips some (they are only hints).
const WAKE_BUFFER: usize = 1024;

pub struct RedisStore {
    conn: ConnectionManager,
    scripts: Scripts,
    closed: AtomicBool,
    wake: broadcast::Sender<AppId>,
    listener: Mutex<Option<JoinHandle<()>>>,
    /// SplitMix64 state for retry jitter.
    rng: Mutex<u64>,
}

impl RedisStore {
    /// Connects to Redis at `url` (`redis://host:port/db`), loads the scripts and starts
    /// listening for wake-ups from other nodes. Warns when Redis' persistence settings do not
    /// make a reply mean durable.
    pub async fn connect(url: &str) -> Result<RedisStore> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid redis url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let mut conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(unavailable)?;
        let scripts = Scripts::new();
        scripts.load(&mut conn).await.map_err(unavailable)?;
        warn_unless_durable(&mut conn).await;
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| StoreError::Internal(e.to_string()))?;
        let (wake, _) = broadcast::channel(WAKE_BUFFER);
        let listener = tokio::spawn(listen(client, conn.clone(), wake.clone()));
        Ok(RedisStore {
            conn,
            scripts,
            closed: AtomicBool::new(false),
            wake,
            listener: Mutex::new(Some(listener)),
            rng: Mutex::new(u64::from_le_bytes(seed)),
        })
    }

    /// A connection handle for one operation (a cheap clone of the shared, multiplexed,
    /// self-reconnecting connection), or `Closed`.
    fn conn(&self) -> Result<ConnectionManager> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(self.conn.clone())
    }

    /// A number in `[0, 1)` for retry jitter.
    fn jitter(&self) -> f64 {
        let mut state = self.rng.lock().expect("rng lock");
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        if let Some(task) = self.listener.lock().expect("listener lock").take() {
            task.abort();
        }
    }
}

/// Maps a Redis failure to the store's error: Redis down, slow, out of memory or unable to
/// persist is `Unavailable` (503, try again); anything else is a bug, `Internal`.
pub(crate) fn unavailable(e: RedisError) -> StoreError {
    let message = if e.is_timeout() {
        Some("redis did not answer in time")
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        Some("redis is unreachable")
    } else {
        match (e.kind(), e.code()) {
            (_, Some("OOM")) => Some("redis is out of memory (maxmemory reached)"),
            (_, Some("MISCONF")) => Some("redis cannot persist to disk"),
            (_, Some("BUSY")) => Some("redis is busy running a script"),
            (_, Some("NOREPLICAS")) => Some("redis has not enough replicas"),
            (ErrorKind::Server(ServerErrorKind::BusyLoading), _) => {
                Some("redis is loading its data")
            }
            (ErrorKind::Server(ServerErrorKind::ReadOnly), _) => {
                Some("redis is read-only (a replica?)")
            }
            (ErrorKind::Server(ServerErrorKind::MasterDown), _)
            | (ErrorKind::Server(ServerErrorKind::ClusterDown), _)
            | (ErrorKind::Server(ServerErrorKind::TryAgain), _) => Some("redis is not ready"),
            _ => None,
        }
    };
    match message {
        Some(m) => {
            tracing::warn!(error = %e, "redis unavailable");
            StoreError::Unavailable(m.to_owned())
        }
        None => StoreError::Internal(format!("redis: {e}")),
    }
}

/// Logs a warning when Redis would acknowledge writes it may lose in a crash.
async fn warn_unless_durable(conn: &mut ConnectionManager) {
    let setting = |name: &'static str| {
        let mut conn = conn.clone();
        async move {
            let pair: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut conn)
                .await;
            pair.ok().and_then(|p| p.get(1).cloned())
        }
    };
    let appendonly = setting("appendonly").await;
    let appendfsync = setting("appendfsync").await;
    match (appendonly.as_deref(), appendfsync.as_deref()) {
        (Some("yes"), Some("always")) => {}
        (None, _) | (_, None) => tracing::warn!(
            "cannot read redis' persistence settings (CONFIG GET refused): a publish is durable \
             only with appendonly yes and appendfsync always"
        ),
        (aof, fsync) => tracing::warn!(
            appendonly = aof,
            appendfsync = fsync,
            "redis may lose acknowledged writes in a crash: set appendonly yes and appendfsync \
             always for a 2xx on publish to mean durable"
        ),
    }
}

/// Forwards wake-ups published by any node (`sb:wake`) to this node's receivers, on a
/// dedicated pub/sub connection (no response timeout: it only listens). Reconnects with a
/// backoff when Redis goes away; after a reconnect it wakes every app, since wake-ups may
/// have been missed meanwhile.
async fn listen(
    client: redis::Client,
    mut conn: ConnectionManager,
    wake: broadcast::Sender<AppId>,
) {
    let mut delay = Duration::from_millis(50);
    let mut reconnected = false;
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(keys::WAKE_CHANNEL).await {
                Ok(()) => {
                    delay = Duration::from_millis(50);
                    if reconnected {
                        // Apps or keys may have changed meanwhile: reload them, and look
                        // again for every app's deliveries.
                        if let Ok(hub) = AppId::parse("switchboard") {
                            let _ = wake.send(hub);
                        }
                        let apps: Vec<String> = redis::cmd("HKEYS")
                            .arg(keys::APPS)
                            .query_async(&mut conn)
                            .await
                            .unwrap_or_default();
                        for app in apps.iter().filter_map(|a| AppId::parse(a).ok()) {
                            let _ = wake.send(app);
                        }
                    }
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        if let Ok(app) = msg.get_payload::<String>()
                            && let Ok(app) = AppId::parse(&app)
                        {
                            // No receiver is fine: nobody is long-polling on this node.
                            let _ = wake.send(app);
                        }
                    }
                    tracing::warn!("lost the redis wake-up subscription; reconnecting");
                }
                Err(e) => tracing::debug!(error = %e, "cannot subscribe to redis wake-ups"),
            },
            Err(e) => tracing::debug!(error = %e, "cannot connect to redis for wake-ups"),
        }
        reconnected = true;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

impl Store for RedisStore {
    fn create_app(&self, app: NewApp) -> BoxFuture<'_, Result<App>> {
        Box::pin(self.do_create_app(app))
    }

    fn update_app(&self, update: AppUpdate) -> BoxFuture<'_, Result<App>> {
        Box::pin(self.do_update_app(update))
    }

    fn list_apps(&self) -> BoxFuture<'_, Result<Vec<App>>> {
        Box::pin(self.do_list_apps())
    }

    fn resolve_key(&self, hash: KeyHash) -> BoxFuture<'_, Result<Option<KeyGrant>>> {
        Box::pin(self.do_resolve_key(hash))
    }

    fn add_key(
        &self,
        owner: KeyOwner,
        key: NewKey,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<KeyInfo>> {
        Box::pin(self.do_add_key(owner, key, now))
    }

    fn revoke_key(
        &self,
        owner: KeyOwner,
        key_id: String,
        _now: Timestamp,
    ) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.do_revoke_key(owner, key_id))
    }

    fn keys(&self, owner: KeyOwner) -> BoxFuture<'_, Result<Vec<KeyInfo>>> {
        Box::pin(self.do_keys(owner))
    }

    fn touch_keys(&self, used: Vec<(String, Timestamp)>) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.do_touch_keys(used))
    }

    fn publish(
        &self,
        events: Vec<NewEvent>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Vec<Published>>> {
        Box::pin(self.do_publish(events, now))
    }

    fn lease(&self, req: LeaseRequest) -> BoxFuture<'_, Result<Leased>> {
        Box::pin(self.do_lease(req))
    }

    fn ack(
        &self,
        app: AppId,
        acks: Vec<AckItem>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Vec<DeliveryChange>>> {
        Box::pin(self.do_ack(app, acks, now))
    }

    fn nack(
        &self,
        app: AppId,
        nack: NackItem,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<NackResult>> {
        Box::pin(self.do_nack(app, nack, now))
    }

    fn expire_leases(&self, now: Timestamp, limit: usize) -> BoxFuture<'_, Result<Expired>> {
        Box::pin(self.do_expire_leases(now, limit))
    }

    fn extend_lease(
        &self,
        app: AppId,
        item: ExtendItem,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Timestamp>> {
        Box::pin(self.do_extend_lease(app, item, now))
    }

    fn dead_letters(&self, query: DeadLetterQuery) -> BoxFuture<'_, Result<DeliveryPage>> {
        Box::pin(self.do_dead_letters(query))
    }

    fn requeue(&self, req: RequeueRequest) -> BoxFuture<'_, Result<Requeued>> {
        Box::pin(self.do_requeue(req))
    }

    fn unacknowledged(&self, query: UnackedQuery) -> BoxFuture<'_, Result<DeliveryPage>> {
        Box::pin(self.do_unacknowledged(query))
    }

    fn event(&self, id: EventId) -> BoxFuture<'_, Result<Option<EventRecord>>> {
        Box::pin(self.do_event(id))
    }

    fn events(&self, query: EventQuery) -> BoxFuture<'_, Result<EventPage>> {
        Box::pin(self.do_events(query))
    }

    fn channels(&self, query: ChannelQuery) -> BoxFuture<'_, Result<Vec<ChannelStats>>> {
        Box::pin(self.do_channels(query))
    }

    fn app_activity(&self) -> BoxFuture<'_, Result<Vec<AppActivity>>> {
        Box::pin(self.do_app_activity())
    }

    fn stats(&self, query: StatsQuery) -> BoxFuture<'_, Result<Vec<StatsRow>>> {
        Box::pin(self.do_stats(query))
    }

    fn prune_stats(
        &self,
        minutes_before: Timestamp,
        hours_before: Timestamp,
    ) -> BoxFuture<'_, Result<usize>> {
        Box::pin(self.do_prune_stats(minutes_before, hours_before))
    }

    fn alerts(&self) -> BoxFuture<'_, Result<Vec<AlertState>>> {
        Box::pin(self.do_alerts())
    }

    fn record_alert(
        &self,
        change: AlertChange,
        event: NewEvent,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Published>> {
        Box::pin(self.do_record_alert(change, event, now))
    }

    fn wakeups(&self) -> Option<broadcast::Receiver<AppId>> {
        Some(self.wake.subscribe())
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.closed.store(true, Ordering::Release);
            let task = self.listener.lock().expect("listener lock").take();
            if let Some(task) = task {
                task.abort();
                let _ = task.await;
            }
        })
    }
}

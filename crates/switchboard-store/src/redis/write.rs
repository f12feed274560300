//! The write operations. Decisions that belong to the core (`after_failure`, `next_status`)
//! and every error a caller can get are made here in Rust, from a read of the deliveries;
//! the Lua scripts then apply the change atomically, but only if the deliveries are still in
//! the state that was read (compare-and-set), else the operation reads again. So two nodes
//! acting on one delivery at once cannot both win.

use std::collections::{BTreeSet, HashMap, HashSet};

use redis::FromRedisValue;
use redis::aio::ConnectionManager;
use switchboard_core::delivery::{Failure, Transition, after_failure, next_status};
use switchboard_core::event::App;
use switchboard_core::histogram::bucket_of;
use switchboard_core::{
    AfterFailure, AppId, AppSettings, AttemptOutcome, DeliveryId, DeliveryStatus, EventId,
    EventType, TenantId, Timestamp,
};

use super::codec::{self, Hash};
use super::{RedisStore, keys, unavailable};
use crate::{
    AckItem, AppUpdate, DeliveryChange, DeliveryState, Expired, ExtendItem, LeaseRequest, Leased,
    LeasedDelivery, NackItem, NackResult, NewApp, NewEvent, Published, RequeueRequest,
    RequeueSelector, Requeued, Result, StoreError,
};

/// `publish.lua`'s reply per event: id, duplicate (0|1), deliveries (n, target, status).
type PublishReply = (String, i64, Vec<(u64, String, String)>);

/// Compare-and-set rounds before giving up on a delivery others keep changing.
const TRIES: usize = 16;

fn contended() -> StoreError {
    StoreError::Unavailable("too many concurrent changes to the same deliveries: retry".into())
}

/// A delivery as its target app sees it when acting on it.
pub(super) struct Held {
    pub n: u64,
    pub target: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub budget_base: u32,
    pub event_id: String,
    pub tenant: String,
    pub event_type: String,
    pub source: String,
    pub created_at: Timestamp,
}

impl Held {
    fn change(
        &self,
        status: DeliveryStatus,
        latency_ms: Option<u64>,
        error: Option<&str>,
    ) -> Result<DeliveryChange> {
        let bad = |what: &str| StoreError::Internal(format!("stored {what} is invalid"));
        Ok(DeliveryChange {
            id: keys::delivery_id(self.n),
            event_id: EventId::parse(&self.event_id).map_err(|_| bad("event id"))?,
            tenant: TenantId::parse(&self.tenant).map_err(|_| bad("tenant"))?,
            event_type: EventType::parse(&self.event_type).map_err(|_| bad("type"))?,
            source: codec::app_id(&self.source)?,
            target: codec::app_id(&self.target)?,
            status,
            attempt: self.attempts,
            latency_ms,
            error: error.map(str::to_owned),
        })
    }
}

/// Checks that the caller holds the current lease: in flight, and on the attempt it names.
fn check_lease(id: &DeliveryId, given: Option<u32>, held: &Held) -> Result<()> {
    if let Some(given) = given
        && given != held.attempts
    {
        return Err(StoreError::LeaseLost {
            id: id.clone(),
            given,
            current: held.attempts,
        });
    }
    if held.status != DeliveryStatus::InFlight {
        return Err(StoreError::NotInFlight {
            id: id.clone(),
            status: held.status,
        });
    }
    Ok(())
}

pub(super) async fn invoke<T: FromRedisValue>(
    conn: &mut ConnectionManager,
    inv: &redis::ScriptInvocation<'_>,
) -> Result<T> {
    inv.invoke_async(conn).await.map_err(unavailable)
}

/// Whether a CAS script applied (`ok`, then what it returns) or found a change.
fn applied(reply: Vec<String>) -> Result<Option<Vec<String>>> {
    match reply.split_first() {
        Some((first, rest)) if first == "ok" => Ok(Some(rest.to_vec())),
        Some((first, _)) if first == "changed" => Ok(None),
        _ => Err(StoreError::Internal(format!(
            "unexpected script reply: {reply:?}"
        ))),
    }
}

impl RedisStore {
    /// Reads the deliveries numbered `ns` (0 for an id this store never made: missing).
    pub(super) async fn held(
        &self,
        conn: &mut ConnectionManager,
        ns: &[u64],
    ) -> Result<Vec<Option<Held>>> {
        if ns.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for n in ns {
            pipe.cmd("HMGET")
                .arg(keys::delivery(*n))
                .arg(&["t", "st", "at", "bb", "e", "tn", "ty", "src", "cr"]);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(conn).await.map_err(unavailable)?;
        ns.iter()
            .zip(rows)
            .map(|(n, row)| {
                let [Some(t), Some(st), Some(at), bb, e, tn, ty, src, cr] =
                    <[Option<String>; 9]>::try_from(row)
                        .map_err(|_| StoreError::Internal("short HMGET reply".into()))?
                else {
                    return Ok(None);
                };
                let number = |v: &str| {
                    v.parse::<u32>()
                        .map_err(|_| StoreError::Internal(format!("stored count is invalid: {v}")))
                };
                Ok(Some(Held {
                    n: *n,
                    target: t,
                    status: codec::status(&st)?,
                    attempts: number(&at)?,
                    budget_base: number(bb.as_deref().unwrap_or("0"))?,
                    event_id: e.unwrap_or_default(),
                    tenant: tn.unwrap_or_default(),
                    event_type: ty.unwrap_or_default(),
                    source: src.unwrap_or_default(),
                    created_at: Timestamp(cr.and_then(|c| c.parse().ok()).unwrap_or(0)),
                }))
            })
            .collect()
    }

    /// Reads one delivery `app` may act on (`None`: any app); another app's delivery is
    /// reported exactly like a missing one.
    async fn held_by(
        &self,
        conn: &mut ConnectionManager,
        app: Option<&AppId>,
        id: &DeliveryId,
    ) -> Result<Held> {
        let n = keys::delivery_number(id).unwrap_or(0);
        let found = if n == 0 {
            None
        } else {
            self.held(conn, &[n]).await?.pop().flatten()
        };
        match found {
            Some(h) if app.is_none_or(|a| a.as_str() == h.target) => Ok(h),
            _ => Err(StoreError::UnknownDelivery(id.clone())),
        }
    }

    /// The settings of each app in `apps` (defaults for an app not registered).
    async fn settings_of(
        &self,
        conn: &mut ConnectionManager,
        apps: &[String],
    ) -> Result<HashMap<String, AppSettings>> {
        if apps.is_empty() {
            return Ok(HashMap::new());
        }
        let found: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(keys::APPS)
            .arg(apps)
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        apps.iter()
            .zip(found)
            .map(|(id, json)| {
                let settings = match json {
                    Some(json) => codec::app_from_json(id, &json)?.settings,
                    None => AppSettings::default(),
                };
                Ok((id.clone(), settings))
            })
            .collect()
    }

    pub(super) async fn do_create_app(&self, app: NewApp) -> Result<App> {
        let mut conn = self.conn()?;
        let created = App {
            id: app.id,
            subscriptions: app.subscriptions,
            settings: app.settings,
            created_at: app.now,
        };
        let mut inv = self.scripts.create_app.prepare_invoke();
        inv.arg(created.id.as_str())
            .arg(codec::app_json(&created))
            .arg(codec::hex(&app.key.hash.0))
            .arg(&app.key.key_id)
            .arg(app.now.millis());
        let done: i64 = invoke(&mut conn, &inv).await?;
        if done == 0 {
            return Err(StoreError::AppExists(created.id));
        }
        Ok(created)
    }

    pub(super) async fn do_update_app(&self, update: AppUpdate) -> Result<App> {
        let mut conn = self.conn()?;
        for _ in 0..TRIES {
            let json: Option<String> = redis::cmd("HGET")
                .arg(keys::APPS)
                .arg(update.id.as_str())
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let Some(json) = json else {
                return Err(StoreError::UnknownApp(update.id));
            };
            let mut app = codec::app_from_json(update.id.as_str(), &json)?;
            if let Some(subs) = &update.subscriptions {
                app.subscriptions = subs.clone();
            }
            if let Some(settings) = &update.settings {
                app.settings = settings.clone();
            }
            let mut inv = self.scripts.update_app.prepare_invoke();
            inv.arg(app.id.as_str())
                .arg(&json)
                .arg(codec::app_json(&app));
            let done: i64 = invoke(&mut conn, &inv).await?;
            if done == 1 {
                return Ok(app);
            }
        }
        Err(contended())
    }

    pub(super) async fn do_publish(
        &self,
        events: Vec<NewEvent>,
        now: Timestamp,
    ) -> Result<Vec<Published>> {
        self.publish_with(events, now, None).await
    }

    /// Publishes `events` and, in the same script, applies an alert change
    /// (`set`|`del`, field, JSON).
    pub(super) async fn publish_with(
        &self,
        events: Vec<NewEvent>,
        now: Timestamp,
        alert: Option<(&str, String, String)>,
    ) -> Result<Vec<Published>> {
        let mut conn = self.conn()?;
        let mut inv = self.scripts.publish.prepare_invoke();
        inv.arg(now.millis()).arg(events.len());
        for NewEvent { event, targets } in &events {
            let tag = keys::tenant_tag(&event.tenant);
            let idem = event
                .idempotency_key
                .as_ref()
                .map(|k| keys::idempotency(&event.source, k))
                .unwrap_or_default();
            inv.arg(idem)
                .arg(event.id.as_str())
                .arg(event.tenant.as_str())
                .arg(&tag)
                .arg(event.source.as_str())
                .arg(event.event_type.as_str());
            let fields = codec::event_fields(event);
            inv.arg(fields.len());
            for (name, value) in fields {
                inv.arg(name).arg(value);
            }
            inv.arg(targets.len());
            for route in targets {
                let order_set = match (route.ordered, &event.entity_id) {
                    (true, Some(entity)) => keys::order_set(&tag, &route.app, entity),
                    _ => String::new(),
                };
                inv.arg(route.app.as_str()).arg(order_set);
            }
        }
        if let Some((op, field, json)) = alert {
            inv.arg(op).arg(field).arg(json);
        }
        let out: Vec<PublishReply> = invoke(&mut conn, &inv).await?;
        out.into_iter()
            .map(|(id, duplicate, deliveries)| {
                let mut deliveries = deliveries
                    .into_iter()
                    .map(|(n, target, status)| {
                        Ok(DeliveryState {
                            id: keys::delivery_id(n),
                            target: codec::app_id(&target)?,
                            status: codec::status(&status)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                if duplicate == 1 {
                    deliveries.sort_by(|a, b| a.target.cmp(&b.target));
                }
                Ok(Published {
                    id: EventId::parse(&id).map_err(|e| StoreError::Internal(e.0))?,
                    duplicate: duplicate == 1,
                    deliveries,
                })
            })
            .collect()
    }

    pub(super) async fn do_lease(&self, req: LeaseRequest) -> Result<Leased> {
        let mut conn = self.conn()?;
        let deadline = req.now.plus_ms(req.lease_ms);
        let mut inv = self.scripts.lease.prepare_invoke();
        inv.arg(req.app.as_str())
            .arg(req.now.millis())
            .arg(req.max)
            .arg(deadline.millis());
        let (picked, next_ready): (Vec<(u64, u32, String)>, String) =
            invoke(&mut conn, &inv).await?;
        let ids: Vec<&str> = picked.iter().map(|(_, _, e)| e.as_str()).collect();
        let events = self.load_events(&mut conn, &ids).await?;
        let deliveries = picked
            .iter()
            .map(|(n, attempt, event_id)| {
                let event = events.get(event_id).ok_or_else(|| {
                    StoreError::Internal(format!("delivery {n} has no event {event_id}"))
                })?;
                Ok(LeasedDelivery {
                    id: keys::delivery_id(*n),
                    attempt: *attempt,
                    lease_expires_at: deadline,
                    event: std::sync::Arc::new(event.0.clone()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let next_ready_at = match next_ready.as_str() {
            "" => None,
            ms => Some(Timestamp(ms.parse().map_err(|_| {
                StoreError::Internal(format!("bad retry time {ms}"))
            })?)),
        };
        Ok(Leased {
            deliveries,
            next_ready_at,
        })
    }

    /// Loads event hashes by id (each once): event and delivery numbers.
    pub(super) async fn load_events(
        &self,
        conn: &mut ConnectionManager,
        ids: &[&str],
    ) -> Result<HashMap<String, (switchboard_core::event::Event, Vec<u64>)>> {
        let unique: Vec<&str> = ids
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if unique.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for id in &unique {
            pipe.cmd("HGETALL").arg(keys::event(id));
        }
        let hashes: Vec<Hash> = pipe.query_async(conn).await.map_err(unavailable)?;
        let mut out = HashMap::with_capacity(unique.len());
        for (id, h) in unique.into_iter().zip(hashes) {
            if !h.is_empty() {
                out.insert(id.to_owned(), codec::event_from_hash(&h)?);
            }
        }
        Ok(out)
    }

    pub(super) async fn do_ack(
        &self,
        app: AppId,
        acks: Vec<AckItem>,
        now: Timestamp,
    ) -> Result<Vec<DeliveryChange>> {
        let mut conn = self.conn()?;
        let mut seen = HashSet::new();
        let acks: Vec<AckItem> = acks
            .into_iter()
            .filter(|a| seen.insert(a.id.clone()))
            .collect();
        for _ in 0..TRIES {
            let ns: Vec<u64> = acks
                .iter()
                .map(|a| keys::delivery_number(&a.id).unwrap_or(0))
                .collect();
            let held = self.held(&mut conn, &ns).await?;
            let mut items = Vec::new();
            for (item, held) in acks.iter().zip(held) {
                let held = match held {
                    Some(h) if h.target == app.as_str() => h,
                    _ => return Err(StoreError::UnknownDelivery(item.id.clone())),
                };
                let repeated = held.status == DeliveryStatus::Acknowledged
                    && item.attempt.is_none_or(|a| a == held.attempts);
                if repeated {
                    continue;
                }
                check_lease(&item.id, item.attempt, &held)?;
                debug_assert_eq!(
                    next_status(held.status, Transition::Ack),
                    Some(DeliveryStatus::Acknowledged)
                );
                items.push((held, item.data.as_deref()));
            }
            if items.is_empty() {
                return Ok(Vec::new());
            }
            let mut inv = self.scripts.ack.prepare_invoke();
            inv.arg(now.millis()).arg(items.len());
            for (held, data) in &items {
                let data = data.map(|d| format!("={d}")).unwrap_or_default();
                let latency = now.since(held.created_at);
                inv.arg(held.n)
                    .arg(held.attempts)
                    .arg(data)
                    .arg(latency)
                    .arg(bucket_of(latency));
            }
            if applied(invoke(&mut conn, &inv).await?)?.is_some() {
                return items
                    .iter()
                    .map(|(held, _)| {
                        let latency = now.since(held.created_at);
                        held.change(DeliveryStatus::Acknowledged, Some(latency), None)
                    })
                    .collect();
            }
        }
        Err(contended())
    }

    pub(super) async fn do_nack(
        &self,
        app: AppId,
        nack: NackItem,
        now: Timestamp,
    ) -> Result<NackResult> {
        let mut conn = self.conn()?;
        let failure = Failure::Nack {
            retry_in_ms: nack.retry_in_ms,
            permanent: nack.permanent,
        };
        for _ in 0..TRIES {
            let held = self.held_by(&mut conn, Some(&app), &nack.id).await?;
            check_lease(&nack.id, nack.attempt, &held)?;
            let settings = self
                .settings_of(&mut conn, std::slice::from_ref(&held.target))
                .await?;
            let after = self.after(&held, failure, &settings[&held.target], now);
            let outcome = failure.outcome();
            let reply = self
                .fail(
                    &mut conn,
                    now,
                    true,
                    outcome,
                    &[(&held, after, &nack.error)],
                )
                .await?;
            if reply.is_some() {
                return Ok(NackResult {
                    status: after.status(),
                    retry_at: match after {
                        AfterFailure::Retry { at } => Some(at),
                        AfterFailure::Dead => None,
                    },
                    change: held.change(after.status(), None, Some(&nack.error))?,
                });
            }
        }
        Err(contended())
    }

    /// The core's verdict on a failed attempt, counting attempts since the last requeue.
    fn after(
        &self,
        held: &Held,
        failure: Failure,
        settings: &AppSettings,
        now: Timestamp,
    ) -> AfterFailure {
        let in_budget = held.attempts.saturating_sub(held.budget_base);
        after_failure(in_budget, failure, settings, now, self.jitter())
    }

    /// Runs `fail.lua`: `strict` for a nack (all or 'changed'), lenient for expiry (items no
    /// longer expired are skipped). Returns the delivery numbers applied.
    async fn fail(
        &self,
        conn: &mut ConnectionManager,
        now: Timestamp,
        strict: bool,
        outcome: AttemptOutcome,
        items: &[(&Held, AfterFailure, &str)],
    ) -> Result<Option<Vec<String>>> {
        let mut inv = self.scripts.fail.prepare_invoke();
        inv.arg(now.millis())
            .arg(if strict { "1" } else { "0" })
            .arg(if strict { "0" } else { "1" })
            .arg(outcome.as_str())
            .arg(items.len());
        for (held, after, error) in items {
            let (status, retry_at) = match after {
                AfterFailure::Retry { at } => (DeliveryStatus::Pending, *at),
                AfterFailure::Dead => (DeliveryStatus::Dead, now),
            };
            inv.arg(held.n)
                .arg(held.attempts)
                .arg(status.code())
                .arg(retry_at.millis())
                .arg(*error);
        }
        applied(invoke(conn, &inv).await?)
    }

    pub(super) async fn do_expire_leases(&self, now: Timestamp, limit: usize) -> Result<Expired> {
        let mut conn = self.conn()?;
        let due: Vec<u64> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys::LEASES)
            .arg("-inf")
            .arg(now.millis())
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut count = 0;
        let mut apps = BTreeSet::new();
        let mut changes = Vec::new();
        if !due.is_empty() {
            let held: Vec<Held> = self
                .held(&mut conn, &due)
                .await?
                .into_iter()
                .flatten()
                .collect();
            let targets: Vec<String> = held
                .iter()
                .map(|h| h.target.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let settings = self.settings_of(&mut conn, &targets).await?;
            let error = "lease expired before the consumer acked or nacked";
            let items: Vec<(&Held, AfterFailure, &str)> = held
                .iter()
                .map(|h| {
                    let after = self.after(h, Failure::LeaseExpired, &settings[&h.target], now);
                    (h, after, error)
                })
                .collect();
            let verdicts: HashMap<u64, DeliveryStatus> = items
                .iter()
                .map(|(h, after, _)| (h.n, after.status()))
                .collect();
            let done = self
                .fail(&mut conn, now, false, AttemptOutcome::TimedOut, &items)
                .await?
                .unwrap_or_default();
            let done: HashSet<&str> = done.iter().map(String::as_str).collect();
            for h in &held {
                if done.contains(h.n.to_string().as_str()) {
                    count += 1;
                    apps.insert(codec::app_id(&h.target)?);
                    changes.push(h.change(verdicts[&h.n], None, Some(error))?);
                }
            }
        }
        let first: Vec<(u64, i64)> = redis::cmd("ZRANGE")
            .arg(keys::LEASES)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(Expired {
            count,
            apps: apps.into_iter().collect(),
            next_deadline: first.first().map(|(_, at)| Timestamp(*at)),
            changes,
        })
    }

    pub(super) async fn do_extend_lease(
        &self,
        app: AppId,
        item: ExtendItem,
        now: Timestamp,
    ) -> Result<Timestamp> {
        let mut conn = self.conn()?;
        let until = now.plus_ms(item.lease_ms);
        for _ in 0..TRIES {
            let held = self.held_by(&mut conn, Some(&app), &item.id).await?;
            check_lease(&item.id, item.attempt, &held)?;
            let mut inv = self.scripts.extend.prepare_invoke();
            inv.arg(held.n)
                .arg(held.attempts)
                .arg(until.millis())
                .arg(now.millis());
            let reply: String = invoke(&mut conn, &inv).await?;
            if reply == "ok" {
                return Ok(until);
            }
        }
        Err(contended())
    }

    pub(super) async fn do_requeue(&self, req: RequeueRequest) -> Result<Requeued> {
        let mut conn = self.conn()?;
        match &req.selector {
            RequeueSelector::Ids(ids) => {
                for _ in 0..TRIES {
                    let mut seen = HashSet::new();
                    let mut items = Vec::new();
                    for id in ids {
                        // An app may requeue only deliveries sent to it.
                        let held = self.held_by(&mut conn, req.visible_to.as_ref(), id).await?;
                        if !seen.insert(held.n) {
                            continue;
                        }
                        if next_status(held.status, Transition::Requeue).is_none() {
                            return Err(StoreError::NotDead {
                                id: id.clone(),
                                status: held.status,
                            });
                        }
                        items.push(held);
                    }
                    if let Some(done) = self.run_requeue(&mut conn, &req, true, &items).await? {
                        return Ok(done);
                    }
                }
                Err(contended())
            }
            RequeueSelector::Filter { filter, limit } => {
                let ns = self
                    .dead_matching(&mut conn, filter, req.visible_to.as_ref(), *limit)
                    .await?;
                let items: Vec<Held> = self
                    .held(&mut conn, &ns)
                    .await?
                    .into_iter()
                    .flatten()
                    .collect();
                Ok(self
                    .run_requeue(&mut conn, &req, false, &items)
                    .await?
                    .unwrap_or_default())
            }
        }
    }

    async fn run_requeue(
        &self,
        conn: &mut ConnectionManager,
        req: &RequeueRequest,
        strict: bool,
        items: &[Held],
    ) -> Result<Option<Requeued>> {
        if items.is_empty() {
            return Ok(Some(Requeued::default()));
        }
        let mut inv = self.scripts.requeue.prepare_invoke();
        inv.arg(req.now.millis())
            .arg(&req.by)
            .arg(if strict { "1" } else { "0" })
            .arg(items.len());
        for held in items {
            inv.arg(held.n).arg(held.attempts);
        }
        let Some(done) = applied(invoke(conn, &inv).await?)? else {
            return Ok(None);
        };
        let done: HashSet<&str> = done.iter().map(String::as_str).collect();
        let mut apps = BTreeSet::new();
        for h in items {
            if done.contains(h.n.to_string().as_str()) {
                apps.insert(codec::app_id(&h.target)?);
            }
        }
        Ok(Some(Requeued {
            count: done.len(),
            apps: apps.into_iter().collect(),
        }))
    }
}

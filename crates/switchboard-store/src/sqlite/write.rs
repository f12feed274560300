//! The write operations, each run by the writer inside one savepoint of a group transaction.
//! They apply the core's state machine; they must not decide delivery rules of their own.

use std::collections::{BTreeSet, HashMap};

use rusqlite::{OptionalExtension, params};
use switchboard_core::delivery::{Failure, Transition, after_failure, next_status};
use switchboard_core::event::App;
use switchboard_core::{AppId, AppSettings, AttemptOutcome, DeliveryStatus, Timestamp};

use super::rows::{
    self, EVENT_COLS, delivery_id, delivery_rowid, event_from_row, join_targets, load_app,
    subscriptions_json,
};
use super::writer::WriteCtx;
use crate::{
    AckItem, AppUpdate, DeliveryState, Expired, LeaseRequest, Leased, LeasedDelivery, NackItem,
    NackResult, NewApp, NewEvent, Published, StoreError,
};

pub fn create_app(ctx: &mut WriteCtx, app: NewApp) -> Result<App, StoreError> {
    let conn = &ctx.conn;
    if load_app(conn, &app.id)?.is_some() {
        return Err(StoreError::AppExists(app.id));
    }
    conn.execute(
        "INSERT INTO apps (id, subscriptions, max_attempts, retry, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            app.id.as_str(),
            subscriptions_json(&app.subscriptions),
            app.settings.max_attempts,
            app.settings.retry.to_string(),
            app.now.millis()
        ],
    )?;
    conn.execute(
        "INSERT INTO app_keys (key_id, app_id, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            app.key.key_id,
            app.id.as_str(),
            &app.key.hash.0[..],
            app.now.millis()
        ],
    )?;
    Ok(App {
        id: app.id,
        subscriptions: app.subscriptions,
        settings: app.settings,
        created_at: app.now,
    })
}

pub fn update_app(ctx: &mut WriteCtx, update: AppUpdate) -> Result<App, StoreError> {
    let conn = &ctx.conn;
    let mut app = load_app(conn, &update.id)?.ok_or(StoreError::UnknownApp(update.id))?;
    if let Some(subs) = update.subscriptions {
        app.subscriptions = subs;
    }
    if let Some(settings) = update.settings {
        app.settings = settings;
    }
    conn.execute(
        "UPDATE apps SET subscriptions = ?2, max_attempts = ?3, retry = ?4 WHERE id = ?1",
        params![
            app.id.as_str(),
            subscriptions_json(&app.subscriptions),
            app.settings.max_attempts,
            app.settings.retry.to_string()
        ],
    )?;
    Ok(app)
}

pub fn publish(
    ctx: &mut WriteCtx,
    events: Vec<NewEvent>,
    now: Timestamp,
) -> Result<Vec<Published>, StoreError> {
    let conn = &ctx.conn;
    let mut find_idem =
        conn.prepare_cached("SELECT seq, id FROM events WHERE source = ?1 AND idem_key = ?2")?;
    let mut find_deliveries = conn.prepare_cached(
        "SELECT id, target, status FROM deliveries WHERE event_seq = ?1 ORDER BY target",
    )?;
    let mut insert_event = conn.prepare_cached(
        "INSERT INTO events (id, tenant, type, source, time, idem_key, named_targets, entity_id, \
         correlation_id, causation_id, historical, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    let mut insert_delivery = conn.prepare_cached(
        "INSERT INTO deliveries (event_seq, target, status, available_at, created_at, updated_at) \
         VALUES (?1, ?2, 0, ?3, ?3, ?3)",
    )?;
    let mut out = Vec::with_capacity(events.len());
    for NewEvent { event, targets } in events {
        if let Some(key) = &event.idempotency_key {
            let seen: Option<(i64, String)> = find_idem
                .query_row(params![event.source.as_str(), key], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            if let Some((seq, id)) = seen {
                let deliveries = find_deliveries
                    .query_map([seq], |r| {
                        Ok(DeliveryState {
                            id: delivery_id(r.get(0)?),
                            target: rows::app_id(&r.get::<_, String>(1)?)?,
                            status: rows::status(r.get(2)?)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                out.push(Published {
                    id: switchboard_core::EventId::parse(&id)
                        .map_err(|e| StoreError::Internal(e.0))?,
                    duplicate: true,
                    deliveries,
                });
                continue;
            }
        }
        insert_event.execute(params![
            event.id.as_str(),
            event.tenant.as_str(),
            event.event_type.as_str(),
            event.source.as_str(),
            event.time.millis(),
            event.idempotency_key,
            event.named_targets.as_deref().map(join_targets),
            event.entity_id,
            event.correlation_id,
            event.causation_id,
            event.historical,
            event.data,
        ])?;
        let seq = conn.last_insert_rowid();
        let mut deliveries = Vec::with_capacity(targets.len());
        for target in targets {
            insert_delivery.execute(params![seq, target.as_str(), now.millis()])?;
            deliveries.push(DeliveryState {
                id: delivery_id(conn.last_insert_rowid()),
                target,
                status: DeliveryStatus::Pending,
            });
        }
        out.push(Published {
            id: event.id,
            duplicate: false,
            deliveries,
        });
    }
    Ok(out)
}

pub fn lease(ctx: &mut WriteCtx, req: LeaseRequest) -> Result<Leased, StoreError> {
    let conn = &ctx.conn;
    let now = req.now.millis();
    let expires = req.now.plus_ms(req.lease_ms);
    let mut ready = conn.prepare_cached(&format!(
        "SELECT d.id, d.attempts, {EVENT_COLS} FROM deliveries d JOIN events e ON e.seq = d.event_seq \
         WHERE d.target = ?1 AND d.status = 0 AND d.available_at <= ?2 \
         ORDER BY d.available_at, d.id LIMIT ?3"
    ))?;
    let picked = ready
        .query_map(params![req.app.as_str(), now, req.max], |r| {
            let (_, event) = event_from_row(r, 2)?;
            Ok((r.get::<_, i64>(0)?, r.get::<_, u32>(1)?, event))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut set_leased = conn.prepare_cached(
        "UPDATE deliveries SET status = 1, attempts = ?2, lease_expires_at = ?3, updated_at = ?4 \
         WHERE id = ?1",
    )?;
    let mut start_attempt = conn.prepare_cached(
        "INSERT INTO attempts (delivery_id, attempt, started_at) VALUES (?1, ?2, ?3)",
    )?;
    let mut deliveries = Vec::with_capacity(picked.len());
    for (rowid, attempts, event) in picked {
        let attempt = attempts + 1;
        set_leased.execute(params![rowid, attempt, expires.millis(), now])?;
        start_attempt.execute(params![rowid, attempt, now])?;
        deliveries.push(LeasedDelivery {
            id: delivery_id(rowid),
            attempt,
            lease_expires_at: expires,
            event,
        });
    }
    let next_ready_at = if deliveries.is_empty() {
        let mut next = conn.prepare_cached(
            "SELECT min(available_at) FROM deliveries WHERE target = ?1 AND status = 0",
        )?;
        next.query_row([req.app.as_str()], |r| r.get::<_, Option<i64>>(0))?
            .map(Timestamp)
    } else {
        None
    };
    Ok(Leased {
        deliveries,
        next_ready_at,
    })
}

/// The delivery as a lease holder sees it, after checking that `app` holds `attempt`.
struct Held {
    rowid: i64,
    attempts: u32,
    status: DeliveryStatus,
}

fn held(
    ctx: &WriteCtx,
    app: &AppId,
    id: &switchboard_core::DeliveryId,
) -> Result<Held, StoreError> {
    let rowid = delivery_rowid(id)?;
    let mut stmt = ctx
        .conn
        .prepare_cached("SELECT target, status, attempts FROM deliveries WHERE id = ?1")?;
    let row: Option<(String, i64, u32)> = stmt
        .query_row([rowid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    match row {
        Some((target, status, attempts)) if target == app.as_str() => Ok(Held {
            rowid,
            attempts,
            status: rows::status(status)?,
        }),
        // Another app's delivery is reported exactly like one that does not exist.
        _ => Err(StoreError::UnknownDelivery(id.clone())),
    }
}

fn check_attempt(
    id: &switchboard_core::DeliveryId,
    given: Option<u32>,
    held: &Held,
) -> Result<(), StoreError> {
    match given {
        Some(given) if given != held.attempts => Err(StoreError::LeaseLost {
            id: id.clone(),
            given,
            current: held.attempts,
        }),
        _ => Ok(()),
    }
}

pub fn ack(
    ctx: &mut WriteCtx,
    app: AppId,
    acks: Vec<AckItem>,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let mut seen = BTreeSet::new();
    let mut changed = 0;
    for item in acks {
        if !seen.insert(item.id.clone()) {
            continue;
        }
        let held = held(ctx, &app, &item.id)?;
        check_attempt(&item.id, item.attempt, &held)?;
        if held.status == DeliveryStatus::Acknowledged {
            // A repeated ack of the attempt that was acknowledged: nothing to do.
            continue;
        }
        if next_status(held.status, Transition::Ack).is_none() {
            return Err(StoreError::NotInFlight {
                id: item.id,
                status: held.status,
            });
        }
        let conn = &ctx.conn;
        conn.prepare_cached(
            "UPDATE deliveries SET status = 2, ack_data = ?2, acked_at = ?3, updated_at = ?3, \
             lease_expires_at = NULL WHERE id = ?1",
        )?
        .execute(params![held.rowid, item.data, now.millis()])?;
        end_attempt(
            ctx,
            held.rowid,
            held.attempts,
            now,
            AttemptOutcome::Acknowledged,
            None,
        )?;
        changed += 1;
    }
    Ok(changed)
}

fn end_attempt(
    ctx: &WriteCtx,
    rowid: i64,
    attempt: u32,
    now: Timestamp,
    outcome: AttemptOutcome,
    error: Option<&str>,
) -> Result<(), StoreError> {
    ctx.conn
        .prepare_cached(
            "UPDATE attempts SET ended_at = ?3, outcome = ?4, error = ?5 \
             WHERE delivery_id = ?1 AND attempt = ?2",
        )?
        .execute(params![
            rowid,
            attempt,
            now.millis(),
            outcome.as_str(),
            error
        ])?;
    Ok(())
}

fn settings_of(ctx: &WriteCtx, app: &AppId) -> Result<AppSettings, StoreError> {
    Ok(load_app(&ctx.conn, app)?
        .map(|a| a.settings)
        .unwrap_or_default())
}

/// Applies a failed attempt: back to pending after a backoff, or dead.
fn fail(
    ctx: &mut WriteCtx,
    rowid: i64,
    attempts: u32,
    failure: Failure,
    settings: &AppSettings,
    error: &str,
    now: Timestamp,
) -> Result<NackResult, StoreError> {
    let jitter = ctx.rng.next_f64();
    let after = after_failure(attempts, failure, settings, now, jitter);
    let status = after.status();
    let retry_at = match after {
        switchboard_core::AfterFailure::Retry { at } => Some(at),
        switchboard_core::AfterFailure::Dead => None,
    };
    ctx.conn
        .prepare_cached(
            "UPDATE deliveries SET status = ?2, available_at = ?3, lease_expires_at = NULL, \
             last_error = ?4, updated_at = ?5 WHERE id = ?1",
        )?
        .execute(params![
            rowid,
            status.code(),
            retry_at.unwrap_or(now).millis(),
            error,
            now.millis()
        ])?;
    end_attempt(ctx, rowid, attempts, now, failure.outcome(), Some(error))?;
    Ok(NackResult { status, retry_at })
}

pub fn nack(
    ctx: &mut WriteCtx,
    app: AppId,
    nack: NackItem,
    now: Timestamp,
) -> Result<NackResult, StoreError> {
    let held = held(ctx, &app, &nack.id)?;
    check_attempt(&nack.id, nack.attempt, &held)?;
    if held.status != DeliveryStatus::InFlight {
        return Err(StoreError::NotInFlight {
            id: nack.id,
            status: held.status,
        });
    }
    let settings = settings_of(ctx, &app)?;
    let failure = Failure::Nack {
        retry_in_ms: nack.retry_in_ms,
        permanent: nack.permanent,
    };
    fail(
        ctx,
        held.rowid,
        held.attempts,
        failure,
        &settings,
        &nack.error,
        now,
    )
}

pub fn expire_leases(
    ctx: &mut WriteCtx,
    now: Timestamp,
    limit: usize,
) -> Result<Expired, StoreError> {
    let expired = ctx
        .conn
        .prepare_cached(
            "SELECT id, target, attempts FROM deliveries \
             WHERE status = 1 AND lease_expires_at <= ?1 ORDER BY lease_expires_at LIMIT ?2",
        )?
        .query_map(params![now.millis(), limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut settings: HashMap<String, AppSettings> = HashMap::new();
    let mut apps = BTreeSet::new();
    let count = expired.len();
    for (rowid, target, attempts) in expired {
        let app = rows::app_id(&target)?;
        if !settings.contains_key(&target) {
            settings.insert(target.clone(), settings_of(ctx, &app)?);
        }
        let error = "lease expired before the consumer acked or nacked";
        let result = fail(
            ctx,
            rowid,
            attempts,
            Failure::LeaseExpired,
            &settings[&target],
            error,
            now,
        )?;
        if result.status == DeliveryStatus::Pending {
            apps.insert(app);
        }
    }
    let next_deadline = ctx
        .conn
        .prepare_cached("SELECT min(lease_expires_at) FROM deliveries WHERE status = 1")?
        .query_row([], |r| r.get::<_, Option<i64>>(0))?
        .map(Timestamp);
    Ok(Expired {
        count,
        apps: apps.into_iter().collect(),
        next_deadline,
    })
}

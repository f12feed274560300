//! The write operations, each run by the writer inside one savepoint of a group transaction.
//! They apply the core's state machine; they must not decide delivery rules of their own.

use std::collections::{BTreeSet, HashMap, HashSet};

use rusqlite::{OptionalExtension, params};
use switchboard_core::delivery::{Failure, Transition, after_failure, next_status};
use switchboard_core::event::{App, Event};
use switchboard_core::{
    AfterFailure, AppId, AppSettings, AttemptOutcome, DeliveryId, DeliveryStatus, EventId, Route,
    Timestamp,
};

use super::borrowed::Borrowed;
use super::channel_ids::ChannelIds;
use super::counters::{Counters, HOUR, MINUTE};
use super::handoff::{self, Parked};
use super::inflight::ByRowid;
use super::multirow::MultiRow;
use super::ready::Pending;
use super::rows::{self, delivery_id, delivery_rowid, join_targets, load_app, subscriptions_json};
use super::unwritten::{self, Lease};
use super::writer::WriteCtx;
use crate::{
    AckItem, AlertChange, AppUpdate, DeadFilter, DeliveryChange, DeliveryState, Expired,
    ExtendItem, LeaseRequest, NackItem, NackResult, NewApp, NewEvent, Published, RequeueRequest,
    RequeueSelector, Requeued, StoreError,
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

/// `tenant` + unit separator + `entity_id`: the key deliveries are ordered by.
fn order_key(route: &Route, event: &Event) -> Option<String> {
    match (route.ordered, &event.entity_id) {
        (true, Some(entity)) => Some(format!("{}\u{1f}{entity}", event.tenant)),
        _ => None,
    }
}

/// Whether an open (pending or in flight) delivery of `target` with `key` exists, other
/// than `except`.
fn has_open(ctx: &WriteCtx, target: &str, key: &str, except: i64) -> Result<bool, StoreError> {
    let mut stmt = ctx.conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM deliveries WHERE target = ?1 AND open_order = ?2 \
         AND id <> ?3)",
    )?;
    Ok(stmt.query_row(params![target, key, except], |r| r.get(0))?)
}

/// After the open delivery of an ordered entity finished (acknowledged or dead), unblocks
/// the next one in publish order.
fn release_next(
    ctx: &mut WriteCtx,
    target: &str,
    key: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let released = ctx
        .conn
        .prepare_cached(
            "UPDATE deliveries SET blocked = 0, available_at = max(available_at, ?3), updated_at = ?3 \
             WHERE id = (SELECT id FROM deliveries WHERE target = ?1 AND open_order = ?2 \
                         ORDER BY id LIMIT 1) AND blocked = 1 \
             RETURNING id, available_at, event_seq, attempts, channel, created_at, failed_attempts",
        )?
        .query_row(params![target, key, now.millis()], |r| {
            let pending = Pending {
                seq: r.get(2)?,
                attempts: r.get(3)?,
                channel: r.get(4)?,
                created_at: r.get(5)?,
                failing: r.get::<_, u32>(6)? > 0,
                ordered: true,
            };
            Ok((r.get::<_, i64>(0)?, Timestamp(r.get(1)?), pending))
        })
        .optional()?;
    // A blocked delivery is pending (a lease takes only unblocked ones): now leasable.
    if let Some((rowid, available_at, pending)) = released {
        let slot = ctx.ready.slot(target);
        ctx.ready_changes.add(slot, available_at, rowid, pending);
    }
    Ok(())
}

/// What a publish stored, with its events given back: the caller describes it after the
/// commit, off the writer ([`PublishedRows::into_published`]).
pub struct PublishedRows {
    events: Vec<NewEvent>,
    outcomes: Vec<Outcome>,
    /// The deliveries handed to a waiting consumer: in flight from their insert.
    handed: HashSet<i64, ByRowid>,
}

/// What became of one published event.
enum Outcome {
    /// Stored as `seq` under `id`; its deliveries' ids follow `first_delivery` in the order
    /// of its targets.
    Stored {
        seq: i64,
        id: EventId,
        first_delivery: i64,
    },
    /// It repeats an idempotency key: the first publish's result.
    Repeat(Published),
}

impl PublishedRows {
    /// The results, and the events stored with their seqs.
    pub fn into_published(self) -> (Vec<Published>, Vec<(i64, Event)>) {
        let mut stored: Vec<(i64, Event)> = Vec::with_capacity(self.events.len());
        let mut published: Vec<Published> = Vec::with_capacity(self.events.len());
        for (new, outcome) in self.events.into_iter().zip(self.outcomes) {
            let (seq, id, first_delivery) = match outcome {
                Outcome::Repeat(first) => {
                    published.push(first);
                    continue;
                }
                Outcome::Stored {
                    seq,
                    id,
                    first_delivery,
                } => (seq, id, first_delivery),
            };
            let mut event = new.event;
            event.id = id;
            let deliveries: Vec<DeliveryState> = new
                .targets
                .into_iter()
                .zip(first_delivery..)
                .map(|(route, id)| DeliveryState {
                    id: delivery_id(id),
                    target: route.app,
                    status: match self.handed.contains(&id) {
                        true => DeliveryStatus::InFlight,
                        false => DeliveryStatus::Pending,
                    },
                })
                .collect();
            published.push(Published {
                id: event.id.clone(),
                duplicate: false,
                deliveries,
            });
            stored.push((seq, event));
        }
        (published, stored)
    }
}

/// Runs without a savepoint (`Undo::Group`): it returns an error only for a database error.
pub fn publish(
    ctx: &mut WriteCtx,
    events: Vec<NewEvent>,
    now: Timestamp,
) -> Result<PublishedRows, StoreError> {
    let mut counters = Counters::default();
    // Event seqs and delivery ids are given here, in publish order, so that the events and
    // the unordered deliveries can be inserted together at the end (see `insert_events`,
    // `HeldBack`); only this thread writes.
    let mut next_seq = next_key(
        &ctx.conn,
        ctx.next_event_seq,
        "SELECT coalesce(max(seq), 0) + 1 FROM events",
    )?;
    let mut next_id = next_delivery_id(ctx)?;
    // A new delivery gets no entry among the open ones: it must be above the mark.
    if ctx.open_mark.records(next_id) {
        return Err(StoreError::Internal(format!(
            "delivery id {next_id} is not above the open deliveries' mark {}",
            ctx.open_mark.below()
        )));
    }
    // Prepared at the first ordered delivery: most publishes have none.
    let mut insert_ordered: Option<rusqlite::CachedStatement<'_>> = None;
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(events.len());
    let mut new_events: Vec<EventRow<'_>> = Vec::with_capacity(events.len());
    let mut unordered = HeldBack::default();
    // Fresh unordered deliveries for a consumer that is long-polling go to it in flight
    // (`ctx.handoffs`, answered with the group).
    let mut handed: HashSet<i64, ByRowid> = HashSet::default();
    let mut insert_handed: Option<rusqlite::CachedStatement<'_>> = None;
    let mut keys_here: HashSet<(&str, &str)> = HashSet::new();
    for NewEvent { event, targets } in &events {
        if let Some(key) = &event.idempotency_key {
            // A first use earlier in this batch: it must be in place to answer.
            if !keys_here.insert((event.source.as_str(), key.as_str())) {
                insert_events(&ctx.conn, &mut ctx.borrowed, &mut new_events)?;
                unordered.insert(&ctx.conn, &mut ctx.borrowed, now)?;
            }
            if let Some(first) = published_before(ctx, &event.source, key)? {
                outcomes.push(Outcome::Repeat(first));
                continue;
            }
        }
        let seq = next_seq;
        next_seq += 1;
        // Its id holds its seq (schema migration 14): the store's, not the one it came with.
        let event_id = EventId::sequenced(now.millis(), seq as u64, ctx.rng.next_u64() as u32);
        // Its deliveries take the next ids, one per target, which its row records.
        new_events.push(EventRow {
            seq,
            id: event_id.clone(),
            event,
            first_delivery: next_id,
            last_delivery: next_id + targets.len() as i64 - 1,
        });
        outcomes.push(Outcome::Stored {
            seq,
            id: event_id.clone(),
            first_delivery: next_id,
        });
        for route in targets {
            let id = next_id;
            next_id += 1;
            let channel = ctx.channel_ids.id(
                event.tenant.as_str(),
                event.source.as_str(),
                route.app.as_str(),
            );
            // Whether it goes straight to a waiting consumer, in flight.
            let handed = match order_key(route, event) {
                // Whether it waits for an earlier one of its entity depends on the rows
                // before it: inserted at once.
                Some(key) => {
                    let blocked = has_open(ctx, route.app.as_str(), &key, -1)?;
                    unordered.overtake();
                    let insert = prepared_once(
                        &mut insert_ordered,
                        &ctx.conn,
                        "INSERT INTO deliveries (id, event_seq, target, tenant, source, \
                         status, available_at, created_at, updated_at, order_key, open_order, \
                         blocked, channel) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6, ?6, ?7, ?7, \
                         ?8, ?9)",
                    )?;
                    insert.execute(params![
                        id,
                        seq,
                        route.app.as_str(),
                        event.tenant.as_str(),
                        event.source.as_str(),
                        now.millis(),
                        key,
                        blocked,
                        channel
                    ])?;
                    if !blocked {
                        let slot = ctx.ready.slot(route.app.as_str());
                        let pending = Pending::fresh(seq, channel, now, true);
                        ctx.ready_changes.add(slot, now, id, pending);
                    }
                    false
                }
                None => match ctx
                    .handoffs
                    .consumer_for(&mut ctx.parked, route.app.as_str(), now)
                {
                    Some(hand) => {
                        unordered.overtake();
                        let insert = prepared_once(
                            &mut insert_handed,
                            &ctx.conn,
                            "INSERT INTO deliveries (id, event_seq, target, tenant, source, \
                             status, attempts, available_at, lease_expires_at, leased_at, \
                             created_at, updated_at, channel) \
                             VALUES (?1, ?2, ?3, ?4, ?5, 1, 1, ?6, ?7, ?6, ?6, ?6, ?8)",
                        )?;
                        insert.execute(params![
                            id,
                            seq,
                            route.app.as_str(),
                            event.tenant.as_str(),
                            event.source.as_str(),
                            now.millis(),
                            hand.1.millis(),
                            channel
                        ])?;
                        ctx.deadline_changes.set(hand.1, id);
                        let flight = Pending::fresh(seq, channel, now, false).leased(1, hand.1);
                        ctx.flight_changes.set(id, flight);
                        ctx.handoffs.add(hand, id, event, &event_id);
                        handed.insert(id);
                        true
                    }
                    None => {
                        let slot = ctx.ready.slot(route.app.as_str());
                        let pending = Pending::fresh(seq, channel, now, false);
                        ctx.ready_changes.add(slot, now, id, pending);
                        unordered.push(NewDelivery {
                            id,
                            seq,
                            target: route.app.as_str(),
                            tenant: event.tenant.as_str(),
                            source: event.source.as_str(),
                            channel,
                        });
                        false
                    }
                },
            };
            let c = counters.of_channel(
                channel,
                event.tenant.as_str(),
                event.source.as_str(),
                route.app.as_str(),
            );
            c.published += 1;
            match handed {
                true => c.in_flight += 1,
                false => c.pending += 1,
            }
        }
    }
    drop((insert_ordered, insert_handed));
    insert_events(&ctx.conn, &mut ctx.borrowed, &mut new_events)?;
    unordered.insert(&ctx.conn, &mut ctx.borrowed, now)?;
    drop((new_events, unordered));
    ctx.next_event_seq = Some(next_seq);
    ctx.next_delivery_id = Some(next_id);
    ctx.counted(counters, now);
    Ok(PublishedRows {
        events,
        outcomes,
        handed,
    })
}

/// The next seq or id the writer gives: `known`, or else the table's largest plus one, which
/// `max_plus_one` reads.
fn next_key(
    conn: &rusqlite::Connection,
    known: Option<i64>,
    max_plus_one: &str,
) -> Result<i64, StoreError> {
    match known {
        Some(next) => Ok(next),
        None => Ok(conn
            .prepare_cached(max_plus_one)?
            .query_row([], |r| r.get(0))?),
    }
}

/// The id the next published delivery gets (see `WriteCtx::next_delivery_id`).
fn next_delivery_id(ctx: &WriteCtx) -> Result<i64, StoreError> {
    next_key(
        &ctx.conn,
        ctx.next_delivery_id,
        "SELECT coalesce(max(id), 0) + 1 FROM deliveries",
    )
}

/// The statement in `slot`, prepared at its first use: a publish needs some statements only
/// for a few of its deliveries, and looks each up once, not once per row.
fn prepared_once<'s, 'c>(
    slot: &'s mut Option<rusqlite::CachedStatement<'c>>,
    conn: &'c rusqlite::Connection,
    sql: &str,
) -> Result<&'s mut rusqlite::CachedStatement<'c>, StoreError> {
    match slot {
        Some(stmt) => Ok(stmt),
        None => Ok(slot.insert(conn.prepare_cached(sql)?)),
    }
}

/// An unordered delivery a publish inserts, with its id.
struct NewDelivery<'a> {
    id: i64,
    seq: i64,
    target: &'a str,
    tenant: &'a str,
    source: &'a str,
    channel: i64,
}

/// The unordered deliveries a publish holds back to insert them together, up to 64 per
/// statement (one statement per row cost a publish of 100 events 10% more of the writer's
/// time, hotpath, 1 target).
#[derive(Default)]
struct HeldBack<'a> {
    rows: Vec<NewDelivery<'a>>,
    /// Whether a delivery was inserted at once, with a larger id, while these waited.
    overtaken: bool,
}

impl<'a> HeldBack<'a> {
    fn push(&mut self, row: NewDelivery<'a>) {
        self.rows.push(row);
    }

    /// The next delivery is inserted at once (ordered, or handed to a consumer).
    fn overtake(&mut self) {
        self.overtaken |= !self.rows.is_empty();
    }

    /// Inserts the deliveries held back. Their ids are left to SQLite, which gives the next
    /// after the largest (`max + 1`), so the ids the writer gave, unless a delivery inserted
    /// at once took a larger one meanwhile: then they are written.
    fn insert(
        &mut self,
        conn: &rusqlite::Connection,
        statements: &mut Borrowed,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let ids = match self.overtaken {
            true => Ids::Written,
            false => Ids::LeftToSqlite,
        };
        insert_deliveries(conn, statements, &self.rows, now, ids)?;
        self.rows.clear();
        self.overtaken = false;
        Ok(())
    }
}

/// Who gives the ids of the rows a multi-row statement inserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ids {
    /// The statement writes them. A multi-row statement that writes a rowid makes SQLite keep
    /// a statement journal, a copy of every page it changes in case a later row fails (3.6%
    /// of the writer's instructions for the deliveries', 3.8% for the events', hotpath).
    Written,
    /// SQLite gives `max + 1` onwards, and the statement is `OR FAIL` (a failure keeps the
    /// rows before it; the job then fails after its changes and its group rolls back): no
    /// journal. The last id given is checked against the writer's (see
    /// `WriteCtx::next_delivery_id`, `next_event_seq`).
    LeftToSqlite,
}

/// Checks that SQLite gave the last row of a statement `expected`, as the writer did.
fn check_last_rowid(
    conn: &rusqlite::Connection,
    what: &str,
    expected: i64,
) -> Result<(), StoreError> {
    match conn.last_insert_rowid() {
        given if given == expected => Ok(()),
        given => Err(StoreError::Internal(format!(
            "{what} out of step: SQLite gave {given}, the writer {expected}"
        ))),
    }
}

/// Inserts `rows`, up to 64 per statement, their ids written or left to SQLite.
fn insert_deliveries(
    conn: &rusqlite::Connection,
    statements: &mut Borrowed,
    rows: &[NewDelivery<'_>],
    now: Timestamp,
    ids: Ids,
) -> Result<(), StoreError> {
    /// One row's values from parameter `p` on (`?1` is the time, shared).
    fn values(p: usize) -> String {
        format!(
            "?{}, ?{}, ?{}, ?{}, 0, ?1, ?1, ?1, ?{}",
            p,
            p + 1,
            p + 2,
            p + 3,
            p + 4
        )
    }
    static WRITTEN: std::sync::LazyLock<MultiRow> = std::sync::LazyLock::new(|| {
        MultiRow::new(
            "INSERT INTO deliveries (id, event_seq, target, tenant, source, status, \
             available_at, created_at, updated_at, channel)",
            1,
            6,
            |p| format!("(?{p}, {})", values(p + 1)),
        )
    });
    static LEFT_TO_SQLITE: std::sync::LazyLock<MultiRow> = std::sync::LazyLock::new(|| {
        MultiRow::new(
            "INSERT OR FAIL INTO deliveries (event_seq, target, tenant, source, status, \
             available_at, created_at, updated_at, channel)",
            1,
            5,
            |p| format!("({})", values(p)),
        )
    });
    let statement = match ids {
        Ids::Written => &WRITTEN,
        Ids::LeftToSqlite => &LEFT_TO_SQLITE,
    };
    statement.insert(
        conn,
        statements,
        rows,
        |params| params.int(1, now.millis()),
        |params, p, row| {
            let p = match ids {
                Ids::Written => {
                    params.int(p, row.id);
                    p + 1
                }
                Ids::LeftToSqlite => p,
            };
            params.int(p, row.seq);
            params.text(p + 1, row.target);
            params.text(p + 2, row.tenant);
            params.text(p + 3, row.source);
            params.int(p + 4, row.channel);
        },
    )?;
    match (ids, rows.last()) {
        (Ids::LeftToSqlite, Some(last)) => check_last_rowid(conn, "delivery ids", last.id),
        _ => Ok(()),
    }
}

/// An event a publish inserts, with its seq, its id and its deliveries' ids.
struct EventRow<'a> {
    seq: i64,
    /// The id the store gives it (the event's own is replaced).
    id: EventId,
    event: &'a Event,
    /// Its deliveries are the rows `first_delivery..=last_delivery` (schema migration 12):
    /// an empty range when it has none.
    first_delivery: i64,
    last_delivery: i64,
}

/// Inserts `rows` (and empties it), up to 64 per statement, their seqs left to SQLite
/// (see [`Ids::LeftToSqlite`]): the writer keeps in step with the table (see
/// `WriteCtx::next_event_seq`), which is checked.
fn insert_events(
    conn: &rusqlite::Connection,
    statements: &mut Borrowed,
    rows: &mut Vec<EventRow<'_>>,
) -> Result<(), StoreError> {
    static INSERT: std::sync::LazyLock<MultiRow> = std::sync::LazyLock::new(|| {
        MultiRow::new(
            "INSERT OR FAIL INTO events (id, tenant, type, source, time, idem_key, named_targets, \
             entity_id, correlation_id, causation_id, historical, data, first_delivery, \
             last_delivery)",
            0,
            14,
            |p| {
                let params: Vec<String> = (p..p + 14).map(|i| format!("?{i}")).collect();
                format!("({})", params.join(", "))
            },
        )
    });
    INSERT.insert(
        conn,
        statements,
        rows,
        |_| {},
        |params, p, row| {
            let event = row.event;
            params.text(p, row.id.as_str());
            params.text(p + 1, event.tenant.as_str());
            params.text(p + 2, event.event_type.as_str());
            params.text(p + 3, event.source.as_str());
            params.int(p + 4, event.time.millis());
            params.opt_text(p + 5, event.idempotency_key.as_deref());
            match &event.named_targets {
                Some(targets) => params.owned_text(p + 6, &join_targets(targets)),
                None => params.opt_text(p + 6, None),
            }
            params.opt_text(p + 7, event.entity_id.as_deref());
            params.opt_text(p + 8, event.correlation_id.as_deref());
            params.opt_text(p + 9, event.causation_id.as_deref());
            params.int(p + 10, event.historical.into());
            params.text(p + 11, &event.data);
            params.int(p + 12, row.first_delivery);
            params.int(p + 13, row.last_delivery);
        },
    )?;
    if let Some(last) = rows.last() {
        check_last_rowid(conn, "event seqs", last.seq)?;
    }
    rows.clear();
    Ok(())
}

/// The first result of an idempotency key, if `source` used it before.
fn published_before(
    ctx: &WriteCtx,
    source: &AppId,
    key: &str,
) -> Result<Option<Published>, StoreError> {
    let seen: Option<(i64, String)> = ctx
        .conn
        .prepare_cached("SELECT seq, id FROM events WHERE source = ?1 AND idem_key = ?2")?
        .query_row(params![source.as_str(), key], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((seq, id)) = seen else {
        return Ok(None);
    };
    let deliveries = ctx
        .conn
        .prepare_cached(&format!(
            "SELECT d.id, d.target, d.status FROM events e JOIN delivery_rows d \
             ON {} WHERE e.seq = ?1 ORDER BY d.target",
            rows::DELIVERIES_OF_EVENT
        ))?
        .query_map([seq], |r| {
            let rowid = r.get(0)?;
            // A lease kept unwritten: in flight, though its row says pending.
            let status = match ctx.unwritten.get(rowid) {
                Some(_) => DeliveryStatus::InFlight,
                None => rows::status(r.get(2)?)?,
            };
            Ok(DeliveryState {
                id: delivery_id(rowid),
                target: rows::app_id(&r.get::<_, String>(1)?)?,
                status,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(Published {
        id: rows::event_id(&id)?,
        duplicate: true,
        deliveries,
    }))
}

/// Writes a lease into its delivery's row: `?1` the row, `?2` the attempt, `?3` when the
/// lease ends, `?4` when it began. Changes nothing unless the row is pending, unblocked, on
/// the attempt before.
pub(super) const LEASE_ROW: &str = "UPDATE deliveries SET status = 1, attempts = ?2, lease_expires_at = ?3, \
     leased_at = ?4, updated_at = ?4 WHERE id = ?1 AND status = 0 AND blocked = 0 \
     AND attempts = ?2 - 1";

/// Writes `lease` into the row of delivery `rowid`, which must show the attempt before.
fn write_lease(conn: &rusqlite::Connection, rowid: i64, lease: &Lease) -> Result<(), StoreError> {
    let changed = conn.prepare_cached(LEASE_ROW)?.execute(params![
        rowid,
        lease.attempt,
        lease.expires_at,
        lease.leased_at
    ])?;
    match changed {
        1 => Ok(()),
        _ => Err(StoreError::Internal(format!(
            "the lease of delivery {rowid} on attempt {} disagreed with its row",
            lease.attempt
        ))),
    }
}

/// Writes the lease of delivery `rowid` into its row if it is kept unwritten: before the
/// row is read.
fn write_unwritten(ctx: &mut WriteCtx, rowid: i64) -> Result<(), StoreError> {
    match ctx.unwritten.take(rowid) {
        Some(lease) => write_lease(&ctx.conn, rowid, &lease),
        None => Ok(()),
    }
}

/// Writes every lease kept unwritten into its row and empties the lease log (see
/// unwritten.rs).
pub fn write_unwritten_leases(ctx: &mut WriteCtx) -> Result<(), StoreError> {
    for (rowid, lease) in ctx.unwritten.drain() {
        write_lease(&ctx.conn, rowid, &lease)?;
    }
    ctx.conn
        .prepare_cached("DELETE FROM lease_log")?
        .execute([])?;
    Ok(())
}

/// On open, before anything reads the deliveries: writes the leases of the lease log into
/// their rows, oldest first, and empties it. A logged lease whose row moved on since (failed,
/// leased again and written, acked in its row) no longer matches its row, and one acked in
/// `acks` (whose row never moved on) is skipped: neither changes anything. Returns how many
/// it wrote.
pub fn replay_lease_log(conn: &mut rusqlite::Connection) -> Result<usize, StoreError> {
    let tx = conn.transaction()?;
    let logged: Vec<(i64, i64, Vec<u8>)> = tx
        .prepare("SELECT leased_at, expires_at, rows FROM lease_log ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut written = 0;
    for (leased_at, expires_at, packed) in logged {
        let pairs = unwritten::unpack(&packed)
            .ok_or_else(|| StoreError::Internal("a lease log row is not a packing".into()))?;
        let mut stmt = tx.prepare_cached(&format!(
            "{LEASE_ROW} AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.id = ?1)"
        ))?;
        for (rowid, attempt) in pairs {
            written += stmt.execute(params![rowid, attempt, expires_at, leased_at])?;
        }
    }
    tx.execute("DELETE FROM lease_log", [])?;
    tx.commit()?;
    Ok(written)
}

/// Has the group's commit move the open deliveries' mark to the newest delivery (see
/// open_mark.rs), for a read of the open deliveries that follows.
pub fn settle_open_mark(ctx: &mut WriteCtx) -> Result<(), StoreError> {
    ctx.next_delivery_id = Some(next_delivery_id(ctx)?);
    ctx.open_mark.settle();
    Ok(())
}

/// What a lease changed: the deliveries it took, in order, without their events (kept in
/// memory, or read after the commit on a read connection, see [`super::read::events_by_seq`],
/// so the one writer does not spend its time copying payloads).
pub struct LeasedRows {
    /// (delivery rowid, attempt, event seq)
    pub rows: Vec<(i64, u32, i64)>,
    pub lease_expires_at: Timestamp,
    pub next_ready_at: Option<Timestamp>,
}

/// Runs without a savepoint (`Undo::Group`): it returns an error only for a database error.
/// With `park`, a lease that finds nothing leaves its consumer waiting for a publish to hand
/// it deliveries (see handoff.rs).
pub fn lease(
    ctx: &mut WriteCtx,
    req: LeaseRequest,
    park: Option<Parked>,
) -> Result<LeasedRows, StoreError> {
    let now = req.now.millis();
    let expires = req.now.plus_ms(req.lease_ms);
    if ctx.unwritten.due(now) {
        write_unwritten_leases(ctx)?;
    }
    // A lease is answered before its fsync (`Answer::AtCommit`): it hands out only events
    // whose publish is on disk; the others' publishers wake the consumers once it is.
    let durable_seq = ctx.durable_seq();
    let slot = ctx.ready.slot(req.app.as_str());
    // The attempt starts in the delivery row (`leased_at`); `attempts` gets a row only if it
    // fails (see schema migration 5). What the lease needs of the row is in its ready entry
    // (see ready.rs), so the row is changed without being read first (reading it cost a lease
    // 29% more writer instructions, hotpath; one `UPDATE … RETURNING` per row 87% more: each runs
    // as a trigger program into a temporary table). The entry says the row is pending, on
    // that attempt: the conditions only make sure. An unordered delivery's row is not changed
    // at all yet, up to a bound: its lease is kept unwritten and logged (see unwritten.rs),
    // and its row is checked when the lease is written into it.
    let mut set_leased = ctx.conn.prepare_cached(LEASE_ROW)?;
    let mut rows = Vec::with_capacity(req.max.min(1024) as usize);
    let mut logged: Vec<(i64, u32)> = Vec::new();
    let mut counters = Counters::default();
    for (available_at, rowid, p) in ctx.ready.leasable(slot, req.now, durable_seq) {
        if rows.len() >= req.max as usize {
            break;
        }
        ctx.ready_changes.remove(slot, available_at, rowid);
        let attempt = p.attempts + 1;
        let keep = !p.ordered && ctx.unwritten.len() < unwritten::MAX_KEPT;
        if keep {
            let lease = Lease {
                attempt,
                leased_at: now,
                expires_at: expires.millis(),
            };
            ctx.unwritten.insert(rowid, lease);
            logged.push((rowid, attempt));
        } else if set_leased.execute(params![rowid, attempt, expires.millis(), now])? == 0 {
            debug_assert!(
                false,
                "ready entry of delivery {rowid} is not its row: {p:?}"
            );
            tracing::error!(
                rowid,
                ?p,
                "a ready entry disagreed with its delivery: skipped"
            );
            continue;
        }
        let (tenant, source, _) = ctx.channel_ids.channel(p.channel).ok_or_else(|| {
            StoreError::Internal(format!(
                "delivery {rowid} has unknown channel {}",
                p.channel
            ))
        })?;
        let c = counters.of_channel(p.channel, tenant, source, req.app.as_str());
        c.pending -= 1;
        c.in_flight += 1;
        rows.push((rowid, attempt, p.seq));
        ctx.deadline_changes.set(expires, rowid);
        if !p.ordered {
            ctx.flight_changes.set(rowid, p.leased(attempt, expires));
        }
    }
    drop(set_leased);
    if !logged.is_empty() {
        ctx.conn
            .prepare_cached(
                "INSERT INTO lease_log (leased_at, expires_at, rows) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![now, expires.millis(), unwritten::pack(logged)])?;
    }
    // When an app last consumed matters to the second, not the millisecond: write it at most
    // once a second, so empty long-polls stay read-only transactions (no fsync).
    let written = ctx.consumed_written.get(req.app.as_str()).copied();
    if written.is_none_or(|at| now - at >= 1000) {
        ctx.conn
            .prepare_cached("UPDATE apps SET last_consumed_at = ?2 WHERE id = ?1")?
            .execute(params![req.app.as_str(), now])?;
    }
    let next_ready_at = match rows.is_empty() {
        true => ctx.ready.next_at(slot, durable_seq),
        false => None,
    };
    if written.is_none_or(|at| now - at >= 1000) {
        ctx.consumed_written.insert(req.app.to_string(), now);
    }
    if let Some(consumer) = park
        && rows.is_empty()
    {
        handoff::park(ctx, req.app.as_str(), consumer);
    }
    ctx.counted(counters, req.now);
    Ok(LeasedRows {
        rows,
        lease_expires_at: expires,
        next_ready_at,
    })
}

/// A delivery as its target app sees it when acting on it.
struct Held {
    rowid: i64,
    event_id: String,
    event_type: String,
    tenant: String,
    source: String,
    target: String,
    attempts: u32,
    budget_base: u32,
    failed_attempts: u32,
    /// When the current (or last) attempt started.
    leased_at: Option<Timestamp>,
    /// When the current lease ends, while in flight.
    lease_expires_at: Option<Timestamp>,
    status: DeliveryStatus,
    order_key: Option<String>,
    event_seq: i64,
    /// When it was published (ms).
    created_at: i64,
}

/// A delivery by its row id, with the columns [`held_from_row`] reads.
const HELD_BY_ROWID: &str = "SELECT d.id, d.tenant, d.source, d.target, d.status, \
     d.attempts, d.budget_base, d.failed_attempts, d.order_key, e.id, e.type, d.leased_at, \
     d.lease_expires_at, d.event_seq, d.created_at FROM delivery_rows d \
     JOIN events e ON e.seq = d.event_seq WHERE d.id = ?1";

fn held_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Held> {
    Ok(Held {
        rowid: r.get(0)?,
        tenant: r.get(1)?,
        source: r.get(2)?,
        target: r.get(3)?,
        status: rows::status(r.get(4)?)?,
        attempts: r.get(5)?,
        budget_base: r.get(6)?,
        failed_attempts: r.get(7)?,
        order_key: r.get(8)?,
        event_id: r.get(9)?,
        event_type: r.get(10)?,
        leased_at: r.get::<_, Option<i64>>(11)?.map(Timestamp),
        lease_expires_at: r.get::<_, Option<i64>>(12)?.map(Timestamp),
        event_seq: r.get(13)?,
        created_at: r.get(14)?,
    })
}

impl Held {
    /// What a lease needs of this delivery once it is pending again; `failing` if an attempt
    /// of it failed.
    fn pending(&self, channel_ids: &mut ChannelIds, failing: bool) -> Pending {
        Pending {
            seq: self.event_seq,
            attempts: self.attempts,
            channel: channel_ids.id(&self.tenant, &self.source, &self.target),
            created_at: self.created_at,
            failing,
            ordered: self.order_key.is_some(),
        }
    }

    fn change(
        &self,
        status: DeliveryStatus,
        latency_ms: Option<u64>,
        error: Option<&str>,
    ) -> Result<DeliveryChange, StoreError> {
        Ok(DeliveryChange {
            id: delivery_id(self.rowid),
            event_id: rows::event_id(&self.event_id)?,
            tenant: rows::tenant(&self.tenant)?,
            event_type: rows::event_type(&self.event_type)?,
            source: rows::app_id(&self.source)?,
            target: rows::app_id(&self.target)?,
            status,
            attempt: self.attempts,
            latency_ms,
            error: error.map(str::to_owned),
        })
    }
}

/// Loads a delivery of `app`; another app's delivery is reported exactly like a missing one.
fn held(ctx: &mut WriteCtx, app: Option<&AppId>, id: &DeliveryId) -> Result<Held, StoreError> {
    match held_row(ctx, delivery_rowid(id)?)? {
        Some(h) if app.is_none_or(|a| a.as_str() == h.target) => Ok(h),
        _ => Err(StoreError::UnknownDelivery(id.clone())),
    }
}

/// The delivery with row id `rowid`, as [`Held`], if there is one; its lease written first
/// if it was kept unwritten.
fn held_row(ctx: &mut WriteCtx, rowid: i64) -> Result<Option<Held>, StoreError> {
    write_unwritten(ctx, rowid)?;
    Ok(ctx
        .conn
        .prepare_cached(HELD_BY_ROWID)?
        .query_row([rowid], held_from_row)
        .optional()?)
}

/// Checks that the caller holds the current lease: in flight, and on the attempt it names.
fn check_lease(
    id: &DeliveryId,
    given: Option<u32>,
    status: DeliveryStatus,
    attempts: u32,
) -> Result<(), StoreError> {
    if let Some(given) = given
        && given != attempts
    {
        return Err(StoreError::LeaseLost {
            id: id.clone(),
            given,
            current: attempts,
        });
    }
    if status != DeliveryStatus::InFlight {
        return Err(StoreError::NotInFlight {
            id: id.clone(),
            status,
        });
    }
    Ok(())
}

/// After an ordered delivery finished, lets the next of its entity go.
fn finished(
    ctx: &mut WriteCtx,
    target: &str,
    order_key: Option<&str>,
    now: Timestamp,
) -> Result<(), StoreError> {
    if let Some(key) = order_key {
        release_next(ctx, target, key, now)?;
    }
    Ok(())
}

/// An acknowledged delivery as the writer leaves it: the caller describes it after the commit
/// (`read::acked_changes`), off the writer, which reads no more of a delivery than the ack needs.
#[derive(Debug, Clone)]
pub struct AckedRow {
    pub rowid: i64,
    pub event_seq: i64,
    pub attempt: u32,
    pub latency_ms: u64,
}

/// An ack item that passed its checks, with what its change needs.
struct Acking {
    row: AckedRow,
    /// Its channel's id: the key of its entry among the open deliveries.
    channel: i64,
    order_key: Option<String>,
    lease_expires_at: Option<Timestamp>,
    data: Option<String>,
    /// Its lease, if kept unwritten: its `acks` row records when it began.
    unwritten: Option<Lease>,
}

/// Counts an ack of a delivery of the channel (tenant, source, target).
fn count_ack(
    counters: &mut Counters,
    channel: i64,
    (tenant, source, target): (&str, &str, &str),
    failing: bool,
    latency_ms: u64,
) {
    let c = counters.of_channel(channel, tenant, source, target);
    c.in_flight -= 1;
    c.acknowledged += 1;
    c.failing -= failing as i64;
    c.latencies.push(latency_ms);
}

/// The acks of unordered deliveries: rows of `acks` (schema migration 13), their deliveries'
/// rows left as they are. Up to 64 rows per statement (see multirow.rs): `?1` now, then each
/// row's delivery, attempt, when that attempt began if its lease was kept unwritten (else
/// NULL: the row says) and the ack data. `OR FAIL`, as the deliveries' (see [`Ids`]): a
/// failure keeps the rows before it and fails the job, whose group then rolls back, so
/// SQLite keeps no statement journal for the rowids written.
pub(super) const INSERT_ACKS_HEAD: &str =
    "INSERT OR FAIL INTO acks (id, attempt, leased_at, acked_at, data)";
static INSERT_ACKS: std::sync::LazyLock<MultiRow> = std::sync::LazyLock::new(|| {
    MultiRow::new(INSERT_ACKS_HEAD, 1, 4, |p| {
        format!("(?{p}, ?{}, ?{}, ?1, ?{})", p + 1, p + 2, p + 3)
    })
});

/// An `acks` row to insert.
struct AckRow {
    rowid: i64,
    attempt: u32,
    leased_at: Option<i64>,
    data: Option<String>,
}

/// The ack of an ordered delivery, which also stops being its entity's open one
/// (`open_order`): its row changes. `?1` the row, `?2` the ack data, `?3` now, `?4` the
/// attempt; the conditions only make sure (every item was checked in flight on that attempt).
pub(super) const SET_ORDERED_ACKED: &str = "UPDATE deliveries SET status = 2, ack_data = ?2, \
     acked_at = ?3, updated_at = ?3, finished_at = ?3, lease_expires_at = NULL, \
     open_order = NULL WHERE id = ?1 AND status = 1 AND attempts = ?4";
/// A delivery stops being open (acknowledged or dead): `?1` its channel, `?2` its id.
pub(super) const CLOSE_OPEN: &str = "DELETE FROM open_deliveries WHERE channel = ?1 AND id = ?2";
/// A delivery is open again (requeued): `?1` its channel, `?2` its id.
const REOPEN: &str = "INSERT INTO open_deliveries (channel, id) VALUES (?1, ?2)";

/// Takes delivery `rowid` of `channel` out of the open deliveries; it must be there.
fn close_open(ctx: &mut WriteCtx, channel: i64, rowid: i64) -> Result<(), StoreError> {
    // Above the mark it has no entry (see open_mark.rs).
    if !ctx.open_mark.records(rowid) {
        ctx.open_mark.closed(rowid);
        return Ok(());
    }
    let changed = ctx.borrowed.execute(&ctx.conn, CLOSE_OPEN, |params| {
        params.int(1, channel);
        params.int(2, rowid);
    })?;
    match changed {
        1 => Ok(()),
        _ => {
            debug_assert!(false, "delivery {rowid} was not open in channel {channel}");
            // A bug: the job fails, and if it changed rows already, so does its group.
            Err(StoreError::Internal(format!(
                "delivery {rowid} was not open in channel {channel}"
            )))
        }
    }
}

/// Runs without a savepoint (`Undo::Group`): it checks every item before its first change.
pub fn ack(
    ctx: &mut WriteCtx,
    app: AppId,
    acks: Vec<AckItem>,
    now: Timestamp,
) -> Result<Vec<AckedRow>, StoreError> {
    // Every item is checked before the first change: the job runs without a savepoint (see
    // `Undo::Group`), and one bad item fails the whole request. Counting as it checks is
    // safe: a failed job's counters are never written.
    // Row ids a client named, hashed unkeyed all the same: each must be a delivery of the
    // caller's app or the request fails there, and there are at most `max_acks` of them, so
    // ids picked to collide cost their own app one slow request at worst.
    let mut seen: HashSet<i64, ByRowid> =
        HashSet::with_capacity_and_hasher(acks.len(), ByRowid::default());
    let mut checked: Vec<Acking> = Vec::with_capacity(acks.len());
    let mut counters = Counters::default();
    let mut lookup = ctx.conn.prepare_cached(
        "SELECT target, status, attempts, failed_attempts, created_at, order_key, tenant, source, \
         event_seq, lease_expires_at FROM delivery_rows WHERE id = ?1",
    )?;
    for item in acks {
        let rowid = delivery_rowid(&item.id)?;
        if !seen.insert(rowid) {
            continue;
        }
        // In flight as its entry says (see inflight.rs), to this app, on the attempt named:
        // acked without reading the row. Anything else reads it, errors included.
        let known = ctx.in_flight.get(rowid).and_then(|f| {
            let (tenant, source, target) = ctx.channel_ids.channel(f.channel)?;
            let fits = target == app.as_str() && item.attempt.is_none_or(|a| a == f.attempts);
            fits.then_some((f, tenant, source))
        });
        if let Some((f, tenant, source)) = known {
            let latency_ms = now.since(Timestamp(f.created_at));
            count_ack(
                &mut counters,
                f.channel,
                (tenant, source, app.as_str()),
                f.failing,
                latency_ms,
            );
            let row = AckedRow {
                rowid,
                event_seq: f.seq,
                attempt: f.attempts,
                latency_ms,
            };
            checked.push(Acking {
                row,
                channel: f.channel,
                order_key: None,
                lease_expires_at: Some(Timestamp(f.lease_expires_at)),
                data: item.data,
                unwritten: ctx.unwritten.take(rowid),
            });
            continue;
        }
        let mut found = lookup.query([rowid])?;
        // Another app's delivery is reported exactly like a missing one.
        let r = match found.next()? {
            Some(r) if rows::text(r, 0)? == app.as_str() => r,
            _ => return Err(StoreError::UnknownDelivery(item.id)),
        };
        // A lease kept unwritten: the row still shows it pending on the attempt before.
        let unwritten = ctx.unwritten.take(rowid);
        let (status, attempts, lease_expires_at) = match unwritten {
            Some(l) => (DeliveryStatus::InFlight, l.attempt, Some(l.expires_at)),
            None => (rows::status(r.get(1)?)?, r.get(2)?, r.get(9)?),
        };
        let repeated =
            status == DeliveryStatus::Acknowledged && item.attempt.is_none_or(|a| a == attempts);
        if repeated {
            // A repeated ack of the attempt that was acknowledged: nothing to do.
            continue;
        }
        check_lease(&item.id, item.attempt, status, attempts)?;
        debug_assert_eq!(
            next_status(status, Transition::Ack),
            Some(DeliveryStatus::Acknowledged)
        );
        let latency_ms = now.since(Timestamp(r.get(4)?));
        let (tenant, source) = (rows::text(r, 6)?, rows::text(r, 7)?);
        let channel = ctx.channel_ids.id(tenant, source, app.as_str());
        count_ack(
            &mut counters,
            channel,
            (tenant, source, app.as_str()),
            r.get::<_, u32>(3)? > 0,
            latency_ms,
        );
        let row = AckedRow {
            rowid,
            event_seq: r.get(8)?,
            attempt: attempts,
            latency_ms,
        };
        checked.push(Acking {
            row,
            channel,
            order_key: r.get(5)?,
            lease_expires_at: lease_expires_at.map(Timestamp),
            data: item.data,
            unwritten,
        });
    }
    drop(lookup);
    let mut acked = Vec::with_capacity(checked.len());
    let mut ordered: Vec<String> = Vec::new();
    // The unordered ones' rows go in together after the loop: one statement per 64 rows
    // instead of one per row.
    let mut ack_rows: Vec<AckRow> = Vec::with_capacity(checked.len());
    for Acking {
        row,
        channel,
        order_key,
        lease_expires_at,
        data,
        unwritten,
    } in checked
    {
        // It must be open: for an unordered delivery, whose row the ack leaves as it is, this
        // is the check that the writer's memory agreed with the tables.
        close_open(ctx, channel, row.rowid)?;
        match (&order_key, &unwritten) {
            (None, _) => ack_rows.push(AckRow {
                rowid: row.rowid,
                attempt: row.attempt,
                leased_at: unwritten.as_ref().map(|lease| lease.leased_at),
                data,
            }),
            (Some(_), None) => {
                let changed = ctx
                    .borrowed
                    .execute(&ctx.conn, SET_ORDERED_ACKED, |params| {
                        params.int(1, row.rowid);
                        params.opt_text(2, data.as_deref());
                        params.int(3, now.millis());
                        params.int(4, row.attempt.into());
                    })?;
                if changed == 0 {
                    debug_assert!(false, "delivery {} was not in flight to ack", row.rowid);
                    // A bug: the job fails, and if it changed rows already, so does its group.
                    return Err(StoreError::Internal(format!(
                        "delivery {} was not in flight on attempt {} to ack",
                        row.rowid, row.attempt
                    )));
                }
            }
            (Some(_), Some(_)) => {
                debug_assert!(
                    false,
                    "ordered delivery {} with a lease unwritten",
                    row.rowid
                );
                // A bug (only unordered leases are kept unwritten, see `lease`): as above.
                return Err(StoreError::Internal(format!(
                    "ordered delivery {} has a lease kept unwritten",
                    row.rowid
                )));
            }
        }
        if let Some(deadline) = lease_expires_at {
            ctx.deadline_changes.clear(deadline, row.rowid);
        }
        ctx.flight_changes.clear(row.rowid);
        ordered.extend(order_key);
        acked.push(row);
    }
    INSERT_ACKS.insert(
        &ctx.conn,
        &mut ctx.borrowed,
        &ack_rows,
        |params| params.int(1, now.millis()),
        |params, p, row| {
            params.int(p, row.rowid);
            params.int(p + 1, row.attempt.into());
            // Left unbound (NULL) when the row holds the lease.
            if let Some(leased_at) = row.leased_at {
                params.int(p + 2, leased_at);
            }
            params.opt_text(p + 3, row.data.as_deref());
        },
    )?;
    for key in ordered {
        release_next(ctx, app.as_str(), &key, now)?;
    }
    ctx.counted(counters, now);
    Ok(acked)
}

pub fn extend_lease(
    ctx: &mut WriteCtx,
    app: AppId,
    item: ExtendItem,
    now: Timestamp,
) -> Result<Timestamp, StoreError> {
    let held = held(ctx, Some(&app), &item.id)?;
    check_lease(&item.id, item.attempt, held.status, held.attempts)?;
    let until = now.plus_ms(item.lease_ms);
    ctx.conn
        .prepare_cached(
            "UPDATE deliveries SET lease_expires_at = ?2, updated_at = ?3 WHERE id = ?1",
        )?
        .execute(params![held.rowid, until.millis(), now.millis()])?;
    if let Some(deadline) = held.lease_expires_at {
        ctx.deadline_changes.clear(deadline, held.rowid);
    }
    ctx.deadline_changes.set(until, held.rowid);
    // Rare: its ack reads the row.
    ctx.flight_changes.clear(held.rowid);
    Ok(until)
}

/// Records the held delivery's current attempt as failed with `outcome`.
fn record_failed_attempt(
    ctx: &WriteCtx,
    held: &Held,
    now: Timestamp,
    outcome: AttemptOutcome,
    error: &str,
) -> Result<(), StoreError> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO attempts (delivery_id, attempt, started_at, ended_at, outcome, error) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            held.rowid,
            held.attempts,
            held.leased_at.unwrap_or(now).millis(),
            now.millis(),
            outcome.as_str(),
            error
        ])?;
    Ok(())
}

fn settings_of(ctx: &WriteCtx, app: &str) -> Result<AppSettings, StoreError> {
    let app = rows::app_id(app)?;
    Ok(load_app(&ctx.conn, &app)?
        .map(|a| a.settings)
        .unwrap_or_default())
}

/// Applies a failed attempt: back to pending after a backoff, or dead.
fn fail(
    ctx: &mut WriteCtx,
    counters: &mut Counters,
    held: &Held,
    failure: Failure,
    settings: &AppSettings,
    error: &str,
    now: Timestamp,
) -> Result<NackResult, StoreError> {
    let jitter = ctx.rng.next_f64();
    let in_budget = held.attempts.saturating_sub(held.budget_base);
    let after = after_failure(in_budget, failure, settings, now, jitter);
    let status = after.status();
    let retry_at = match after {
        AfterFailure::Retry { at } => Some(at),
        AfterFailure::Dead => None,
    };
    ctx.conn
        .prepare_cached(
            "UPDATE deliveries SET status = ?2, available_at = ?3, lease_expires_at = NULL, \
             last_error = ?4, updated_at = ?5, finished_at = ?6, dead_at = ?6, \
             open_order = CASE WHEN ?6 IS NULL THEN open_order END, \
             failed_attempts = failed_attempts + 1 WHERE id = ?1",
        )?
        .execute(params![
            held.rowid,
            status.code(),
            retry_at.unwrap_or(now).millis(),
            error,
            now.millis(),
            (status == DeliveryStatus::Dead).then_some(now.millis()),
        ])?;
    record_failed_attempt(ctx, held, now, failure.outcome(), error)?;
    if let Some(deadline) = held.lease_expires_at {
        ctx.deadline_changes.clear(deadline, held.rowid);
    }
    ctx.flight_changes.clear(held.rowid);
    let was_failing = (held.failed_attempts > 0) as i64;
    let c = counters.of(&held.tenant, &held.source, &held.target);
    c.in_flight -= 1;
    c.failed += 1;
    match retry_at {
        None => {
            c.dead += 1;
            c.died += 1;
            c.failing -= was_failing;
            let channel = ctx.channel_ids.id(&held.tenant, &held.source, &held.target);
            close_open(ctx, channel, held.rowid)?;
            finished(ctx, &held.target, held.order_key.as_deref(), now)?;
        }
        Some(at) => {
            c.pending += 1;
            c.failing += 1 - was_failing;
            let slot = ctx.ready.slot(&held.target);
            let pending = held.pending(&mut ctx.channel_ids, true);
            ctx.ready_changes.add(slot, at, held.rowid, pending);
        }
    }
    Ok(NackResult {
        status,
        retry_at,
        change: held.change(status, None, Some(error))?,
    })
}

pub fn nack(
    ctx: &mut WriteCtx,
    app: AppId,
    nack: NackItem,
    now: Timestamp,
) -> Result<NackResult, StoreError> {
    let held = held(ctx, Some(&app), &nack.id)?;
    check_lease(&nack.id, nack.attempt, held.status, held.attempts)?;
    let settings = settings_of(ctx, &held.target)?;
    let failure = Failure::Nack {
        retry_in_ms: nack.retry_in_ms,
        permanent: nack.permanent,
    };
    let mut counters = Counters::default();
    let result = fail(
        ctx,
        &mut counters,
        &held,
        failure,
        &settings,
        &nack.error,
        now,
    )?;
    ctx.counted(counters, now);
    Ok(result)
}

pub fn expire_leases(
    ctx: &mut WriteCtx,
    now: Timestamp,
    limit: usize,
) -> Result<Expired, StoreError> {
    // The due deadlines, earliest first (see deadlines.rs): each is checked against its row,
    // and one that is stale (the row no longer in flight until then) is only dropped.
    let mut expired = Vec::new();
    let mut walked = 0;
    // Taken out first: reading a row may write its lease (see `held_row`). Twice the limit,
    // so a few stale entries do not end the job early; the next job walks on.
    let due: Vec<(Timestamp, i64)> = ctx
        .deadlines
        .due(now)
        .take(limit.saturating_mul(2))
        .collect();
    for (deadline, rowid) in due {
        if expired.len() == limit {
            break;
        }
        walked += 1;
        match held_row(ctx, rowid)? {
            Some(held)
                if held.status == DeliveryStatus::InFlight
                    && held.lease_expires_at == Some(deadline) =>
            {
                expired.push(held)
            }
            _ => ctx.deadline_changes.clear(deadline, rowid),
        }
    }
    let mut settings: HashMap<String, AppSettings> = HashMap::new();
    let mut apps = BTreeSet::new();
    let count = expired.len();
    let mut counters = Counters::default();
    let mut changes = Vec::with_capacity(expired.len());
    for held in expired {
        if !settings.contains_key(&held.target) {
            settings.insert(held.target.clone(), settings_of(ctx, &held.target)?);
        }
        let error = "lease expired before the consumer acked or nacked";
        let settings = &settings[&held.target];
        let result = fail(
            ctx,
            &mut counters,
            &held,
            Failure::LeaseExpired,
            settings,
            error,
            now,
        )?;
        changes.push(result.change);
        // Pending again, or dead and maybe releasing the next of its entity: wake either way.
        apps.insert(rows::app_id(&held.target)?);
    }
    ctx.counted(counters, now);
    // Every entry walked is cleared by this job: the next deadline is the one after them.
    let next_deadline = ctx.deadlines.earliest_after(walked);
    Ok(Expired {
        count,
        apps: apps.into_iter().collect(),
        next_deadline,
        changes,
    })
}

/// The dead deliveries a filter selects, oldest first, after `after` (a row id).
fn dead_matching(
    ctx: &WriteCtx,
    filter: &DeadFilter,
    after: i64,
    limit: usize,
) -> Result<Vec<i64>, StoreError> {
    let mut q = super::read::DeadSql::new(filter);
    q.push_arg(" AND d.id > ?", after.into());
    q.push_arg(" ORDER BY d.id LIMIT ?", (limit as i64).into());
    let sql = format!(
        "SELECT d.id FROM delivery_rows d JOIN events e ON e.seq = d.event_seq WHERE {}",
        q.sql
    );
    let ids = ctx
        .conn
        .prepare_cached(&sql)?
        .query_map(rusqlite::params_from_iter(q.args), |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(ids)
}

pub fn requeue(ctx: &mut WriteCtx, req: RequeueRequest) -> Result<Requeued, StoreError> {
    let rowids: Vec<(i64, DeliveryId)> = match &req.selector {
        RequeueSelector::Ids(ids) => ids
            .iter()
            .map(|id| Ok((delivery_rowid(id)?, id.clone())))
            .collect::<Result<_, StoreError>>()?,
        RequeueSelector::Filter { filter, limit } => {
            let mut filter = filter.clone();
            if let Some(app) = &req.visible_to {
                // An app requeues only deliveries sent to it (it may see others it published).
                if filter.target.as_ref().is_some_and(|t| t != app) {
                    return Ok(Requeued::default());
                }
                filter.target = Some(app.clone());
            }
            dead_matching(ctx, &filter, 0, *limit)?
                .into_iter()
                .map(|rowid| (rowid, delivery_id(rowid)))
                .collect()
        }
    };
    let mut apps = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let now = req.now;
    let mut counters = Counters::default();
    for (rowid, id) in rowids {
        if !seen.insert(rowid) {
            continue;
        }
        // An app may requeue only deliveries sent to it.
        let held = held(ctx, req.visible_to.as_ref(), &id)?;
        if next_status(held.status, Transition::Requeue).is_none() {
            return Err(StoreError::NotDead {
                id,
                status: held.status,
            });
        }
        let blocked = match &held.order_key {
            Some(key) => has_open(ctx, &held.target, key, rowid)?,
            None => false,
        };
        let channel = ctx.channel_ids.id(&held.tenant, &held.source, &held.target);
        ctx.conn
            .prepare_cached(
                "UPDATE deliveries SET status = 0, budget_base = attempts, available_at = ?2, \
                 updated_at = ?2, finished_at = NULL, dead_at = NULL, open_order = order_key, \
                 blocked = ?3, channel = ?4 WHERE id = ?1",
            )?
            .execute(params![rowid, now.millis(), blocked, channel])?;
        match ctx.open_mark.records(rowid) {
            true => {
                ctx.conn
                    .prepare_cached(REOPEN)?
                    .execute(params![channel, rowid])?;
            }
            false => ctx.open_mark.reopened(rowid),
        }
        if !blocked {
            let slot = ctx.ready.slot(&held.target);
            let pending = held.pending(&mut ctx.channel_ids, held.failed_attempts > 0);
            ctx.ready_changes.add(slot, now, rowid, pending);
        }
        ctx.conn
            .prepare_cached("INSERT INTO requeues (delivery_id, at, by) VALUES (?1, ?2, ?3)")?
            .execute(params![rowid, now.millis(), req.by])?;
        let c = counters.of(&held.tenant, &held.source, &held.target);
        c.dead -= 1;
        c.pending += 1;
        c.failing += (held.failed_attempts > 0) as i64;
        apps.insert(rows::app_id(&held.target)?);
    }
    ctx.counted(counters, now);
    Ok(Requeued {
        count: seen.len(),
        apps: apps.into_iter().collect(),
    })
}

pub fn prune_stats(
    ctx: &mut WriteCtx,
    minutes_before: Timestamp,
    hours_before: Timestamp,
) -> Result<usize, StoreError> {
    let mut removed = 0;
    for table in ["channel_stats", "channel_latency"] {
        for (period, before) in [(MINUTE, minutes_before), (HOUR, hours_before)] {
            removed += ctx
                .conn
                .prepare_cached(&format!(
                    "DELETE FROM {table} WHERE period = ?1 AND start < ?2"
                ))?
                .execute(params![period, before.millis()])?;
        }
    }
    Ok(removed)
}

pub fn record_alert(
    ctx: &mut WriteCtx,
    change: AlertChange,
    event: NewEvent,
    now: Timestamp,
) -> Result<Published, StoreError> {
    match &change {
        AlertChange::Raised(a) => ctx
            .conn
            .prepare_cached(
                "INSERT OR REPLACE INTO alerts (tenant, source, target, rule, raised_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                a.tenant.as_str(),
                a.source.as_str(),
                a.target.as_str(),
                a.rule,
                a.raised_at.millis()
            ])?,
        AlertChange::Cleared(a) => ctx
            .conn
            .prepare_cached(
                "DELETE FROM alerts WHERE tenant = ?1 AND source = ?2 AND target = ?3 AND rule = ?4",
            )?
            .execute(params![
                a.tenant.as_str(),
                a.source.as_str(),
                a.target.as_str(),
                a.rule
            ])?,
    };
    // Not remembered for leases (recent.rs): this job's group may still roll back.
    let (mut published, _) = publish(ctx, vec![event], now)?.into_published();
    Ok(published.remove(0))
}

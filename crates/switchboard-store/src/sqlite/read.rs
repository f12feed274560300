//! Read queries, run on the read connections (never the writer's). WAL lets them see the
//! last committed state without blocking writes.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use switchboard_core::event::{App, Attempt, Delivery, Event, Requeue};
use switchboard_core::{
    AppId, AttemptOutcome, DeliveryStatus, EventId, EventType, TenantId, Timestamp, TypePattern,
};

use super::rows::{
    self, APP_COLS, DELIVERIES_OF_EVENT, EVENT_COLS, app_from_row, delivery_id, event_from_row,
};
use super::write::AckedRow;
use crate::{
    DeadFilter, DeadLetterQuery, DeliveryChange, DeliveryPage, DeliveryRecord, EventPage,
    EventQuery, EventRecord, StoreError, UnackedQuery,
};

/// A WHERE clause built piece by piece, with numbered arguments.
pub struct Sql {
    pub sql: String,
    pub args: Vec<Value>,
}

impl Sql {
    fn new(start: &str) -> Sql {
        Sql {
            sql: start.to_owned(),
            args: Vec::new(),
        }
    }

    /// Appends `clause`, whose single `?` becomes the next numbered argument.
    pub fn push_arg(&mut self, clause: &str, value: Value) {
        self.args.push(value);
        self.sql
            .push_str(&clause.replace('?', &format!("?{}", self.args.len())));
    }

    fn type_pattern(&mut self, column: &str, pattern: &Option<TypePattern>) {
        match pattern {
            None | Some(TypePattern::All) => {}
            Some(TypePattern::Exact(t)) => {
                self.push_arg(&format!(" AND {column} = ?"), t.to_string().into())
            }
            Some(TypePattern::Prefix(p)) => {
                // Every type starting with `p` sorts in [p, p + '\u{10FFFF}').
                self.push_arg(&format!(" AND {column} >= ?"), p.clone().into());
                self.push_arg(
                    &format!(" AND {column} < ?"),
                    format!("{p}\u{10FFFF}").into(),
                );
            }
        }
    }
}

/// The WHERE clause selecting dead deliveries (`d`, joined to their events `e`).
pub struct DeadSql;

impl DeadSql {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(f: &DeadFilter) -> Sql {
        let mut q = Sql::new("d.dead_at IS NOT NULL");
        if let Some(tenant) = &f.tenant {
            q.push_arg(" AND d.tenant = ?", tenant.to_string().into());
        }
        if let Some(target) = &f.target {
            q.push_arg(" AND d.target = ?", target.to_string().into());
        }
        q.type_pattern("e.type", &f.event_type);
        if let Some(since) = f.since {
            q.push_arg(" AND d.updated_at >= ?", since.millis().into());
        }
        if let Some(until) = f.until {
            q.push_arg(" AND d.updated_at < ?", until.millis().into());
        }
        if let Some(app) = &f.visible_to {
            q.push_arg(" AND (d.target = ?", app.to_string().into());
            q.push_arg(" OR e.source = ?)", app.to_string().into());
        }
        q
    }
}

pub fn list_apps(conn: &Connection) -> Result<Vec<App>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {APP_COLS} FROM apps ORDER BY id"))?;
    let apps = stmt
        .query_map([], app_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(apps)
}

/// The delivery columns, in the order [`delivery_from_row`] reads them, for alias `d`.
const DELIVERY_COLS: &str = "d.id, d.target, d.status, d.attempts, d.last_error, d.ack_data, \
     d.created_at, d.updated_at, d.available_at, d.lease_expires_at, d.acked_at, d.leased_at";
const DELIVERY_COL_COUNT: usize = 12;

/// A delivery as read, with what [`with_history`] needs to complete it.
struct DeliveryRow {
    rowid: i64,
    /// When the current attempt started: in flight or acknowledged.
    leased_at: Option<Timestamp>,
    delivery: Delivery,
}

/// Reads a delivery (without history) starting at column `at`.
fn delivery_from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<DeliveryRow> {
    let rowid: i64 = r.get(at)?;
    Ok(DeliveryRow {
        rowid,
        leased_at: r.get::<_, Option<i64>>(at + 11)?.map(Timestamp),
        delivery: Delivery {
            id: delivery_id(rowid),
            target: rows::app_id(&r.get::<_, String>(at + 1)?)?,
            status: rows::status(r.get(at + 2)?)?,
            attempts: r.get(at + 3)?,
            last_error: r.get(at + 4)?,
            ack_data: r.get(at + 5)?,
            created_at: Timestamp(r.get(at + 6)?),
            updated_at: Timestamp(r.get(at + 7)?),
            available_at: Timestamp(r.get(at + 8)?),
            lease_expires_at: r.get::<_, Option<i64>>(at + 9)?.map(Timestamp),
            acknowledged_at: r.get::<_, Option<i64>>(at + 10)?.map(Timestamp),
            history: Vec::new(),
            requeues: Vec::new(),
        },
    })
}

/// Fills in the attempts and requeues of a delivery: the failed attempts from `attempts`,
/// the current one (in flight, or the acknowledged last) from the delivery row itself.
fn with_history(conn: &Connection, row: DeliveryRow) -> Result<Delivery, StoreError> {
    let DeliveryRow {
        rowid,
        leased_at,
        mut delivery,
    } = row;
    delivery.history = conn
        .prepare_cached(
            "SELECT attempt, started_at, ended_at, outcome, error FROM attempts \
             WHERE delivery_id = ?1 ORDER BY attempt",
        )?
        .query_map([rowid], |r| {
            let outcome: Option<String> = r.get(3)?;
            Ok(Attempt {
                attempt: r.get(0)?,
                started_at: Timestamp(r.get(1)?),
                ended_at: r.get::<_, Option<i64>>(2)?.map(Timestamp),
                outcome: outcome.as_deref().and_then(AttemptOutcome::parse),
                error: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let current = match (delivery.status, leased_at) {
        (DeliveryStatus::InFlight, Some(started_at)) => Some(Attempt {
            attempt: delivery.attempts,
            started_at,
            ended_at: None,
            outcome: None,
            error: None,
        }),
        (DeliveryStatus::Acknowledged, Some(started_at)) => Some(Attempt {
            attempt: delivery.attempts,
            started_at,
            ended_at: delivery.acknowledged_at,
            outcome: Some(AttemptOutcome::Acknowledged),
            error: None,
        }),
        _ => None,
    };
    delivery.history.extend(current);
    delivery.requeues = conn
        .prepare_cached("SELECT at, by FROM requeues WHERE delivery_id = ?1 ORDER BY at")?
        .query_map([rowid], |r| {
            Ok(Requeue {
                at: Timestamp(r.get(0)?),
                by: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(delivery)
}

/// The deliveries of event `?1`, read by their ids' range.
fn deliveries_of_sql() -> String {
    format!(
        "SELECT {DELIVERY_COLS} FROM events e JOIN delivery_rows d ON {DELIVERIES_OF_EVENT} \
         WHERE e.seq = ?1 ORDER BY d.target"
    )
}

fn deliveries_of(conn: &Connection, seq: i64) -> Result<Vec<Delivery>, StoreError> {
    let deliveries = conn
        .prepare_cached(&deliveries_of_sql())?
        .query_map([seq], |r| delivery_from_row(r, 0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    deliveries
        .into_iter()
        .map(|row| with_history(conn, row))
        .collect()
}

fn record(conn: &Connection, seq: i64, event: Event) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        deliveries: deliveries_of(conn, seq)?,
        event,
    })
}

/// The event `id`: by the seq its id holds (schema migration 14), checked against the row,
/// else among the ids of the events stored before (`event_ids`).
pub fn event(conn: &Connection, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
    let _snapshot = one_read(conn)?;
    let by_seq = match id.sequence().and_then(|seq| i64::try_from(seq).ok()) {
        Some(seq) => conn
            .prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM events e WHERE e.seq = ?1 AND e.id = ?2"
            ))?
            .query_row(params![seq, id.as_str()], |r| event_from_row(r, 0))
            .optional()?,
        None => None,
    };
    let found = match by_seq {
        Some(found) => Some(found),
        None => conn
            .prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM event_ids x JOIN events e ON e.seq = x.seq \
                 WHERE x.id = ?1"
            ))?
            .query_row([id.as_str()], |r| event_from_row(r, 0))
            .optional()?,
    };
    found
        .map(|(seq, event)| record(conn, seq, event))
        .transpose()
}

/// The events of `seqs`, in order: a lease's (`write::lease` took the rows), read after its
/// commit. Events never change once stored, so any snapshot taken after the lease has them.
pub fn events_by_seq(
    conn: &Connection,
    seqs: impl ExactSizeIterator<Item = i64>,
) -> Result<Vec<Event>, StoreError> {
    let _snapshot = one_read(conn)?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLS} FROM events e WHERE e.seq = ?1"
    ))?;
    let mut events = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let (_, event) = stmt.query_row([seq], |r| event_from_row(r, 0))?;
        events.push(event);
    }
    Ok(events)
}

/// One read transaction for a loop of single-row queries: outside one, every query takes and
/// releases the WAL read lock (a fifth of a lease's describing read).
fn one_read(conn: &Connection) -> Result<rusqlite::Transaction<'_>, StoreError> {
    Ok(conn.unchecked_transaction()?)
}

/// What `app`'s acks changed (see `write::ack`), described after their commit from their
/// events (a delivery's tenant and source are its event's), which never change once stored.
pub fn acked_changes(
    conn: &Connection,
    app: &AppId,
    acked: Vec<AckedRow>,
) -> Result<Vec<DeliveryChange>, StoreError> {
    let _snapshot = one_read(conn)?;
    let mut stmt = conn
        .prepare_cached("SELECT e.id, e.tenant, e.type, e.source FROM events e WHERE e.seq = ?1")?;
    let mut changes = Vec::with_capacity(acked.len());
    for row in acked {
        let change = stmt.query_row([row.event_seq], |r| {
            let keys = EventKeys {
                id: rows::event_id(rows::text(r, 0)?)?,
                tenant: rows::tenant(rows::text(r, 1)?)?,
                event_type: rows::event_type(rows::text(r, 2)?)?,
                source: rows::app_id(rows::text(r, 3)?)?,
            };
            Ok(acked_change(app, row, keys))
        })?;
        changes.push(change);
    }
    Ok(changes)
}

/// What names an event in a [`DeliveryChange`].
pub struct EventKeys {
    pub id: EventId,
    pub tenant: TenantId,
    pub event_type: EventType,
    pub source: AppId,
}

impl EventKeys {
    pub fn of(event: &Event) -> EventKeys {
        EventKeys {
            id: event.id.clone(),
            tenant: event.tenant.clone(),
            event_type: event.event_type.clone(),
            source: event.source.clone(),
        }
    }
}

/// What an ack of `row` by `app` changed.
pub fn acked_change(app: &AppId, row: AckedRow, event: EventKeys) -> DeliveryChange {
    DeliveryChange {
        id: delivery_id(row.rowid),
        event_id: event.id,
        tenant: event.tenant,
        event_type: event.event_type,
        source: event.source,
        target: app.clone(),
        status: DeliveryStatus::Acknowledged,
        attempt: row.attempt,
        latency_ms: Some(row.latency_ms),
        error: None,
    }
}

fn parse_cursor(cursor: &Option<String>) -> Result<Option<i64>, StoreError> {
    cursor
        .as_deref()
        .map(|c| c.parse().map_err(|_| StoreError::InvalidCursor))
        .transpose()
}

pub fn events(conn: &Connection, q: &EventQuery) -> Result<EventPage, StoreError> {
    let mut sql = Sql::new(&format!("SELECT {EVENT_COLS} FROM events e WHERE 1 = 1"));
    if let Some(tenant) = &q.tenant {
        sql.push_arg(" AND e.tenant = ?", tenant.to_string().into());
    }
    sql.type_pattern("e.type", &q.event_type);
    if let Some(source) = &q.source {
        sql.push_arg(" AND e.source = ?", source.to_string().into());
    }
    if let Some(since) = q.since {
        sql.push_arg(" AND e.time >= ?", since.millis().into());
    }
    if let Some(until) = q.until {
        sql.push_arg(" AND e.time < ?", until.millis().into());
    }
    if let Some(seq) = parse_cursor(&q.cursor)? {
        sql.push_arg(" AND e.seq < ?", seq.into());
    }
    if q.target.is_some() || q.status.is_some() {
        sql.sql
            .push_str(" AND EXISTS (SELECT 1 FROM delivery_rows d WHERE ");
        sql.sql.push_str(DELIVERIES_OF_EVENT);
        if let Some(target) = &q.target {
            sql.push_arg(" AND d.target = ?", target.to_string().into());
        }
        if let Some(status) = q.status {
            sql.push_arg(" AND d.status = ?", status.code().into());
        }
        sql.sql.push(')');
    }
    if let Some(app) = &q.visible_to {
        sql.push_arg(" AND (e.source = ?", app.to_string().into());
        sql.push_arg(
            &format!(
                " OR EXISTS (SELECT 1 FROM deliveries d WHERE {DELIVERIES_OF_EVENT} \
                 AND d.target = ?))"
            ),
            app.to_string().into(),
        );
    }
    let limit = q.limit.max(1) as i64;
    sql.push_arg(" ORDER BY e.seq DESC LIMIT ?", (limit + 1).into());

    let mut found = conn
        .prepare_cached(&sql.sql)?
        .query_map(params_from_iter(sql.args), |r| event_from_row(r, 0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let next_cursor = page_cursor(&mut found, limit, |(seq, _)| *seq);
    let events = found
        .into_iter()
        .map(|(seq, event)| record(conn, seq, event))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EventPage {
        events,
        next_cursor,
    })
}

/// Trims a `limit + 1` result to `limit`; the cursor is the key of the last kept row.
fn page_cursor<T>(rows: &mut Vec<T>, limit: i64, key: impl Fn(&T) -> i64) -> Option<String> {
    if rows.len() as i64 <= limit {
        return None;
    }
    rows.truncate(limit as usize);
    rows.last().map(|r| key(r).to_string())
}

/// Runs a delivery query (selecting delivery then event columns) into a page.
fn delivery_page(conn: &Connection, sql: Sql, limit: i64) -> Result<DeliveryPage, StoreError> {
    let mut found = conn
        .prepare_cached(&sql.sql)?
        .query_map(params_from_iter(sql.args), |r| {
            let delivery = delivery_from_row(r, 0)?;
            let (_, event) = event_from_row(r, DELIVERY_COL_COUNT)?;
            Ok((delivery, event))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let next_cursor = page_cursor(&mut found, limit, |(row, _)| row.rowid);
    let mut items = Vec::with_capacity(found.len());
    for (row, event) in found {
        let delivery = with_history(conn, row)?;
        items.push(DeliveryRecord { event, delivery });
    }
    Ok(DeliveryPage { items, next_cursor })
}

pub fn dead_letters(conn: &Connection, q: &DeadLetterQuery) -> Result<DeliveryPage, StoreError> {
    let filter = DeadSql::new(&q.filter);
    let mut sql = Sql::new(&format!(
        "SELECT {DELIVERY_COLS}, {EVENT_COLS} FROM delivery_rows d JOIN events e ON e.seq = d.event_seq WHERE {}",
        filter.sql
    ));
    sql.args = filter.args;
    if let Some(rowid) = parse_cursor(&q.cursor)? {
        sql.push_arg(" AND d.id < ?", rowid.into());
    }
    let limit = q.limit.max(1) as i64;
    sql.push_arg(" ORDER BY d.id DESC LIMIT ?", (limit + 1).into());
    delivery_page(conn, sql, limit)
}

/// A page of a channel's open deliveries with an entry (at or below the mark, see
/// open_mark.rs) after a cursor: `?1` the channel's id, `?2` the cursor, `?3` the newest
/// `created_at`, `?4` the limit.
const OPEN_IN_CHANNEL: &str = "SELECT o.id FROM open_deliveries o JOIN deliveries d \
     ON d.id = o.id WHERE o.channel = ?1 AND o.id > ?2 AND d.created_at <= ?3 \
     ORDER BY o.id LIMIT ?4";

/// A channel's id and when its oldest open delivery with an entry was published: one seek
/// of the same table.
const OLDEST_OPEN_IN_CHANNEL: &str = "SELECT c.id, (SELECT d.created_at FROM open_deliveries o \
     JOIN deliveries d ON d.id = o.id WHERE o.channel = c.id ORDER BY o.id LIMIT 1) \
     FROM channels c WHERE c.tenant = ?1 AND c.source = ?2 AND c.target = ?3";

/// An open delivery above the mark: its channel, id and `created_at`.
struct AboveMark {
    channel: i64,
    id: i64,
    created_at: i64,
}

/// The open deliveries above the mark, oldest first: at most the tail's length of rows
/// read (open_mark.rs). Read once per request, in the snapshot of its other reads.
fn open_above_mark(conn: &Connection) -> Result<Vec<AboveMark>, StoreError> {
    let sql = format!(
        "SELECT d.channel, d.id, d.created_at FROM deliveries d WHERE {} ORDER BY d.id",
        super::open_mark::ABOVE_MARK
    );
    let open = conn
        .prepare_cached(&sql)?
        .query_map([], |r| {
            Ok(AboveMark {
                channel: r.get(0)?,
                id: r.get(1)?,
                created_at: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(open)
}

/// The open deliveries of a tenant, oldest first. The table of open deliveries is keyed per
/// channel (schemas 6, 9 and 13), so this merges the first page of each channel that has any (the
/// counters say which) by id, then reads the page's rows.
pub fn unacknowledged(conn: &Connection, q: &UnackedQuery) -> Result<DeliveryPage, StoreError> {
    // One snapshot for the channels, their pages and the rows.
    let snapshot = conn.unchecked_transaction()?;
    let conn: &Connection = &snapshot;
    let tenant = q.tenant.as_str();
    let visible_to = q.visible_to.as_ref().map(AppId::as_str);
    let channels = conn
        .prepare_cached(
            "SELECT id FROM channels WHERE tenant = ?1 AND pending + in_flight > 0 \
             AND (?2 IS NULL OR source = ?2 OR target = ?2)",
        )?
        .query_map(params![tenant, visible_to], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let after = parse_cursor(&q.cursor)?.unwrap_or(0);
    let before = q.created_before.millis();
    let limit = q.limit.max(1) as i64;
    let mut open_in = conn.prepare_cached(OPEN_IN_CHANNEL)?;
    let mut ids: Vec<i64> = Vec::new();
    // Read only if a channel's entries do not fill its page: they come before the rest.
    let mut above_mark: Option<Vec<AboveMark>> = None;
    for &channel in &channels {
        let page = open_in
            .query_map(params![channel, after, before, limit + 1], |r| {
                r.get::<_, i64>(0)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let missing = (limit + 1) as usize - page.len();
        ids.extend(page);
        if missing == 0 {
            continue;
        }
        let above = match &above_mark {
            Some(above) => above,
            None => above_mark.insert(open_above_mark(conn)?),
        };
        let newer = above
            .iter()
            .filter(|d| d.channel == channel && d.id > after && d.created_at <= before)
            .map(|d| d.id)
            .take(missing);
        ids.extend(newer);
    }
    ids.sort_unstable();
    let next_cursor = page_cursor(&mut ids, limit, |id| *id);
    let mut row = conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLS}, {EVENT_COLS} FROM delivery_rows d \
         JOIN events e ON e.seq = d.event_seq WHERE d.id = ?1"
    ))?;
    let mut items = Vec::with_capacity(ids.len());
    for id in ids {
        let (delivery, event) = row.query_row([id], |r| {
            let delivery = delivery_from_row(r, 0)?;
            let (_, event) = event_from_row(r, DELIVERY_COL_COUNT)?;
            Ok((delivery, event))
        })?;
        let delivery = with_history(conn, delivery)?;
        items.push(DeliveryRecord { event, delivery });
    }
    drop((open_in, row));
    snapshot.commit()?;
    Ok(DeliveryPage { items, next_cursor })
}

use std::collections::HashMap;

use switchboard_core::histogram::Histogram;

use super::counters::{HOUR, MINUTE};
use crate::{AlertState, AppActivity, ChannelQuery, ChannelStats, GroupBy, StatsQuery, StatsRow};

/// A count column (never negative) as `u64`.
fn count(r: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0).max(0) as u64)
}

type ChannelKey = (String, String, String);

fn channel_stats_new(key: &ChannelKey) -> rusqlite::Result<ChannelStats> {
    Ok(ChannelStats {
        tenant: rows::tenant(&key.0)?,
        source: rows::app_id(&key.1)?,
        target: rows::app_id(&key.2)?,
        published: 0,
        acknowledged: 0,
        failed_attempts: 0,
        died: 0,
        failures_last_hour: 0,
        pending: 0,
        in_flight: 0,
        failing: 0,
        dead: 0,
        oldest_open_at: None,
        latency: Histogram::default(),
    })
}

/// `AND tenant = ?N` when a tenant is given.
fn tenant_clause(sql: &mut Sql, column: &str, tenant: &Option<TenantId>) {
    if let Some(t) = tenant {
        sql.push_arg(&format!(" AND {column} = ?"), t.to_string().into());
    }
}

pub fn channels(conn: &Connection, q: &ChannelQuery) -> Result<Vec<ChannelStats>, StoreError> {
    // One snapshot: the open deliveries' table and the rows above its mark agree.
    let snapshot = conn.unchecked_transaction()?;
    let conn: &Connection = &snapshot;
    let mut out: HashMap<ChannelKey, ChannelStats> = HashMap::new();
    // Gauges.
    let mut sql = Sql::new(
        "SELECT tenant, source, target, pending, in_flight, failing, dead FROM channels WHERE 1 = 1",
    );
    tenant_clause(&mut sql, "tenant", &q.tenant);
    let gauges = conn
        .prepare_cached(&sql.sql)?
        .query_map(params_from_iter(sql.args), |r| {
            let key: ChannelKey = (r.get(0)?, r.get(1)?, r.get(2)?);
            let mut c = channel_stats_new(&key)?;
            c.pending = count(r, 3)?;
            c.in_flight = count(r, 4)?;
            c.failing = count(r, 5)?;
            c.dead = count(r, 6)?;
            Ok((key, c))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    out.extend(gauges);

    // Flows in the window.
    let window = q.now.since(q.since) as i64;
    let (period, from) = match window <= 2 * HOUR {
        true => (
            MINUTE,
            q.since.millis() - q.since.millis().rem_euclid(MINUTE),
        ),
        false => (HOUR, q.since.millis() - q.since.millis().rem_euclid(HOUR)),
    };
    let mut sql = Sql::new(
        "SELECT tenant, source, target, sum(published), sum(acknowledged), sum(failed), sum(died) \
         FROM channel_stats WHERE 1 = 1",
    );
    sql.push_arg(" AND period = ?", period.into());
    sql.push_arg(" AND start >= ?", from.into());
    tenant_clause(&mut sql, "tenant", &q.tenant);
    sql.sql.push_str(" GROUP BY tenant, source, target");
    let mut stmt = conn.prepare_cached(&sql.sql)?;
    let mut rows_ = stmt.query(params_from_iter(sql.args))?;
    while let Some(r) = rows_.next()? {
        let key: ChannelKey = (r.get(0)?, r.get(1)?, r.get(2)?);
        if !out.contains_key(&key) {
            out.insert(key.clone(), channel_stats_new(&key)?);
        }
        let c = out.get_mut(&key).expect("inserted");
        c.published = count(r, 3)?;
        c.acknowledged = count(r, 4)?;
        c.failed_attempts = count(r, 5)?;
        c.died = count(r, 6)?;
    }
    drop(rows_);

    let mut sql = Sql::new(
        "SELECT tenant, source, target, bucket, sum(count) FROM channel_latency WHERE 1 = 1",
    );
    sql.push_arg(" AND period = ?", period.into());
    sql.push_arg(" AND start >= ?", from.into());
    tenant_clause(&mut sql, "tenant", &q.tenant);
    sql.sql.push_str(" GROUP BY tenant, source, target, bucket");
    let mut stmt = conn.prepare_cached(&sql.sql)?;
    let mut rows_ = stmt.query(params_from_iter(sql.args))?;
    while let Some(r) = rows_.next()? {
        let key: ChannelKey = (r.get(0)?, r.get(1)?, r.get(2)?);
        if let Some(c) = out.get_mut(&key) {
            c.latency.add(r.get::<_, i64>(3)? as usize, count(r, 4)?);
        }
    }
    drop(rows_);

    // Failures in the last hour, by the minute.
    let hour_ago = q.now.millis() - HOUR;
    let mut sql = Sql::new(
        "SELECT tenant, source, target, sum(failed) + sum(died) FROM channel_stats WHERE 1 = 1",
    );
    sql.push_arg(" AND period = ?", MINUTE.into());
    sql.push_arg(
        " AND start >= ?",
        (hour_ago - hour_ago.rem_euclid(MINUTE)).into(),
    );
    tenant_clause(&mut sql, "tenant", &q.tenant);
    sql.sql.push_str(" GROUP BY tenant, source, target");
    let mut stmt = conn.prepare_cached(&sql.sql)?;
    let mut rows_ = stmt.query(params_from_iter(sql.args))?;
    while let Some(r) = rows_.next()? {
        let key: ChannelKey = (r.get(0)?, r.get(1)?, r.get(2)?);
        if let Some(c) = out.get_mut(&key) {
            c.failures_last_hour = count(r, 3)?;
        }
    }
    drop(rows_);

    // The oldest open delivery of each channel with any (the first published: ids follow
    // publish order): one index seek each, and for a channel with no entry, its first open
    // delivery above the mark (those are read once, when one needs them).
    let mut oldest = conn.prepare_cached(OLDEST_OPEN_IN_CHANNEL)?;
    let mut above_mark: Option<HashMap<i64, i64>> = None;
    for (key, c) in out.iter_mut() {
        if c.pending + c.in_flight == 0 {
            continue;
        }
        let found = oldest
            .query_row(params![key.0, key.1, key.2], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
            })
            .optional()?;
        let (channel, entry) = match found {
            Some(found) => found,
            None => continue,
        };
        let created_at = match entry {
            Some(at) => Some(at),
            None => {
                let firsts = match &above_mark {
                    Some(firsts) => firsts,
                    None => above_mark.insert(oldest_above_mark(conn)?),
                };
                firsts.get(&channel).copied()
            }
        };
        c.oldest_open_at = created_at.map(Timestamp);
    }
    drop(oldest);
    let mut channels: Vec<ChannelStats> = out.into_values().collect();
    channels
        .sort_by(|a, b| (&a.tenant, &a.source, &a.target).cmp(&(&b.tenant, &b.source, &b.target)));
    // A read: the snapshot ends with its rollback as it drops.
    Ok(channels)
}

/// When each channel's first open delivery above the mark was published, by channel id.
fn oldest_above_mark(conn: &Connection) -> Result<HashMap<i64, i64>, StoreError> {
    let mut firsts = HashMap::new();
    for d in open_above_mark(conn)? {
        firsts.entry(d.channel).or_insert(d.created_at);
    }
    Ok(firsts)
}

pub fn app_activity(conn: &Connection) -> Result<Vec<AppActivity>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.id, a.last_consumed_at, coalesce(sum(c.pending), 0), coalesce(sum(c.in_flight), 0) \
         FROM apps a LEFT JOIN channels c ON c.target = a.id GROUP BY a.id ORDER BY a.id",
    )?;
    let activity = stmt
        .query_map([], |r| {
            Ok(AppActivity {
                app: rows::app_id(&r.get::<_, String>(0)?)?,
                last_consumed_at: r.get::<_, Option<i64>>(1)?.map(Timestamp),
                pending: count(r, 2)?,
                in_flight: count(r, 3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(activity)
}

pub fn stats(conn: &Connection, q: &StatsQuery) -> Result<Vec<StatsRow>, StoreError> {
    let mut sql = match q.group_by {
        GroupBy::Type => {
            let mut sql = Sql::new(&format!(
                "SELECT e.type, count(d.id), coalesce(sum(d.status = 2), 0), \
                 coalesce(sum(d.failed_attempts), 0), coalesce(sum(d.status = 3), 0) \
                 FROM events e JOIN delivery_rows d ON {DELIVERIES_OF_EVENT} WHERE 1 = 1"
            ));
            tenant_clause(&mut sql, "e.tenant", &q.tenant);
            sql.push_arg(" AND e.time >= ?", q.since.millis().into());
            sql.push_arg(" AND e.time < ?", q.until.millis().into());
            if let Some(app) = &q.visible_to {
                sql.push_arg(" AND (d.target = ?", app.to_string().into());
                sql.push_arg(" OR d.source = ?)", app.to_string().into());
            }
            sql.sql.push_str(" GROUP BY e.type ORDER BY e.type");
            sql
        }
        group => {
            let key = match group {
                GroupBy::Source => "source",
                GroupBy::Target => "target",
                _ => "CAST(start AS TEXT)",
            };
            let mut sql = Sql::new(&format!(
                "SELECT {key}, sum(published), sum(acknowledged), sum(failed), sum(died) \
                 FROM channel_stats WHERE 1 = 1"
            ));
            sql.push_arg(" AND period = ?", HOUR.into());
            tenant_clause(&mut sql, "tenant", &q.tenant);
            let from = q.since.millis() - q.since.millis().rem_euclid(HOUR);
            sql.push_arg(" AND start >= ?", from.into());
            sql.push_arg(" AND start < ?", q.until.millis().into());
            if let Some(app) = &q.visible_to {
                sql.push_arg(" AND (target = ?", app.to_string().into());
                sql.push_arg(" OR source = ?)", app.to_string().into());
            }
            sql.sql.push_str(&format!(" GROUP BY {key} ORDER BY {key}"));
            sql
        }
    };
    let hour = q.group_by == GroupBy::Hour;
    let rows_ = conn
        .prepare_cached(&sql.sql)?
        .query_map(params_from_iter(std::mem::take(&mut sql.args)), |r| {
            let key: String = r.get(0)?;
            let key = match hour {
                true => key
                    .parse::<i64>()
                    .map(|ms| Timestamp(ms).to_string())
                    .unwrap_or(key),
                false => key,
            };
            Ok(StatsRow {
                key,
                published: count(r, 1)?,
                acknowledged: count(r, 2)?,
                failed_attempts: count(r, 3)?,
                dead: count(r, 4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows_)
}

pub fn alerts(conn: &Connection) -> Result<Vec<AlertState>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT tenant, source, target, rule, raised_at FROM alerts ORDER BY tenant, source, target, rule",
    )?;
    let alerts = stmt
        .query_map([], |r| {
            let tenant: String = r.get(0)?;
            Ok(AlertState {
                tenant: rows::tenant(&tenant)?,
                source: rows::app_id(&r.get::<_, String>(1)?)?,
                target: rows::app_id(&r.get::<_, String>(2)?)?,
                rule: r.get(3)?,
                raised_at: Timestamp(r.get(4)?),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(alerts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What SQLite's planner says it does for `sql`, one line per step.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("prepare");
        let unbound = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
        stmt.query_map(params_from_iter(unbound), |r| r.get::<_, String>(3))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("plan")
    }

    /// With no index on `event_seq` (schema migration 12), an event's deliveries are a range
    /// of row ids: never a scan of the table.
    #[test]
    fn an_events_deliveries_are_read_by_their_range_of_ids() {
        let mut conn = Connection::open_in_memory().expect("open");
        super::super::schema::migrate(&mut conn).expect("migrate");
        let filtered = format!(
            "SELECT e.seq FROM events e WHERE EXISTS (SELECT 1 FROM delivery_rows d WHERE \
             {DELIVERIES_OF_EVENT} AND d.target = ?1) ORDER BY e.seq DESC LIMIT 10"
        );
        let joined = format!(
            "SELECT e.type, count(d.id) FROM events e JOIN delivery_rows d ON {DELIVERIES_OF_EVENT} \
             WHERE e.tenant = ?1 AND e.time >= ?2 GROUP BY e.type"
        );
        for sql in [deliveries_of_sql(), filtered, joined] {
            let steps = plan(&conn, &sql);
            let on_deliveries: Vec<&String> = steps.iter().filter(|s| s.contains(" d ")).collect();
            assert!(
                !on_deliveries.is_empty()
                    && on_deliveries
                        .iter()
                        .all(|s| s.contains("INTEGER PRIMARY KEY (rowid>? AND rowid<?)")),
                "{sql}: {steps:?}"
            );
        }
    }

    #[test]
    fn dead_letters_are_read_through_their_index() {
        let mut conn = Connection::open_in_memory().expect("open");
        super::super::schema::migrate(&mut conn).expect("migrate");
        let filter = DeadSql::new(&DeadFilter::default());
        let sql = format!(
            "SELECT d.id FROM delivery_rows d JOIN events e ON e.seq = d.event_seq WHERE {} \
             ORDER BY d.id DESC LIMIT 10",
            filter.sql
        );
        let steps = plan(&conn, &sql);
        assert!(
            steps
                .iter()
                .any(|s| s.contains("USING COVERING INDEX deliveries_dead")
                    || s.contains("USING INDEX deliveries_dead")),
            "{steps:?}"
        );
    }

    #[test]
    fn a_channels_open_deliveries_are_sought_by_its_id_never_scanned() {
        let mut conn = Connection::open_in_memory().expect("open");
        super::super::schema::migrate(&mut conn).expect("migrate");
        for sql in [OPEN_IN_CHANNEL, OLDEST_OPEN_IN_CHANNEL] {
            let steps = plan(&conn, sql);
            assert!(
                steps
                    .iter()
                    .any(|s| s.contains("SEARCH o USING PRIMARY KEY (channel=?")),
                "{sql}: {steps:?}"
            );
            assert!(
                steps.iter().all(|s| !s.starts_with("SCAN")),
                "{sql}: {steps:?}"
            );
        }
    }

    #[test]
    fn the_open_deliveries_above_the_mark_are_read_from_the_mark_on() {
        let mut conn = Connection::open_in_memory().expect("open");
        super::super::schema::migrate(&mut conn).expect("migrate");
        let sql = format!(
            "SELECT d.id FROM deliveries d WHERE {}",
            super::super::open_mark::ABOVE_MARK
        );
        let steps = plan(&conn, &sql);
        assert!(
            steps
                .iter()
                .any(|s| s.contains("SEARCH d USING INTEGER PRIMARY KEY (rowid>?)")),
            "{steps:?}"
        );
        assert!(steps.iter().all(|s| !s.contains("SCAN")), "{steps:?}");
    }
}

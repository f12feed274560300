//! Read queries, run on the read connections (never the writer's). WAL lets them see the
//! last committed state without blocking writes.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use switchboard_core::event::{App, Attempt, Delivery, Event};
use switchboard_core::{AppId, AttemptOutcome, EventId, Timestamp, TypePattern};

use super::rows::{self, APP_COLS, EVENT_COLS, app_from_row, delivery_id, event_from_row};
use crate::{EventPage, EventQuery, EventRecord, KeyHash, StoreError};

pub fn list_apps(conn: &Connection) -> Result<Vec<App>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {APP_COLS} FROM apps ORDER BY id"))?;
    let apps = stmt
        .query_map([], app_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(apps)
}

pub fn app_for_key(conn: &Connection, hash: KeyHash) -> Result<Option<AppId>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT app_id FROM app_keys WHERE hash = ?1 AND revoked_at IS NULL")?;
    let id: Option<String> = stmt.query_row([&hash.0[..]], |r| r.get(0)).optional()?;
    Ok(id.map(|s| rows::app_id(&s)).transpose()?)
}

fn deliveries_of(conn: &Connection, seq: i64) -> Result<Vec<Delivery>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, target, status, attempts, last_error, ack_data, created_at, updated_at, \
         available_at, lease_expires_at, acked_at FROM deliveries WHERE event_seq = ?1 ORDER BY target",
    )?;
    let mut history = conn.prepare_cached(
        "SELECT attempt, started_at, ended_at, outcome, error FROM attempts \
         WHERE delivery_id = ?1 ORDER BY attempt",
    )?;
    let mut deliveries = stmt
        .query_map([seq], |r| {
            let rowid: i64 = r.get(0)?;
            Ok((
                rowid,
                Delivery {
                    id: delivery_id(rowid),
                    target: rows::app_id(&r.get::<_, String>(1)?)?,
                    status: rows::status(r.get(2)?)?,
                    attempts: r.get(3)?,
                    last_error: r.get(4)?,
                    ack_data: r.get(5)?,
                    created_at: Timestamp(r.get(6)?),
                    updated_at: Timestamp(r.get(7)?),
                    available_at: Timestamp(r.get(8)?),
                    lease_expires_at: r.get::<_, Option<i64>>(9)?.map(Timestamp),
                    acknowledged_at: r.get::<_, Option<i64>>(10)?.map(Timestamp),
                    history: Vec::new(),
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (rowid, delivery) in &mut deliveries {
        delivery.history = history
            .query_map([*rowid], |r| {
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
    }
    Ok(deliveries.into_iter().map(|(_, d)| d).collect())
}

fn record(conn: &Connection, seq: i64, event: Event) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        deliveries: deliveries_of(conn, seq)?,
        event,
    })
}

pub fn event(conn: &Connection, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLS} FROM events e WHERE e.id = ?1"
    ))?;
    let found = stmt
        .query_row([id.as_str()], |r| event_from_row(r, 0))
        .optional()?;
    found
        .map(|(seq, event)| record(conn, seq, event))
        .transpose()
}

pub fn events(conn: &Connection, q: &EventQuery) -> Result<EventPage, StoreError> {
    let mut sql = format!("SELECT {EVENT_COLS} FROM events e WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, value: Value| {
        args.push(value);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    if let Some(tenant) = &q.tenant {
        arg(&mut sql, " AND e.tenant = ?", tenant.to_string().into());
    }
    match &q.event_type {
        None | Some(TypePattern::All) => {}
        Some(TypePattern::Exact(t)) => arg(&mut sql, " AND e.type = ?", t.to_string().into()),
        Some(TypePattern::Prefix(p)) => {
            // Every type starting with `p` sorts in [p, p + '\u{10FFFF}').
            arg(&mut sql, " AND e.type >= ?", p.clone().into());
            arg(&mut sql, " AND e.type < ?", format!("{p}\u{10FFFF}").into());
        }
    }
    if let Some(source) = &q.source {
        arg(&mut sql, " AND e.source = ?", source.to_string().into());
    }
    if let Some(since) = q.since {
        arg(&mut sql, " AND e.time >= ?", since.millis().into());
    }
    if let Some(until) = q.until {
        arg(&mut sql, " AND e.time < ?", until.millis().into());
    }
    if let Some(cursor) = &q.cursor {
        let seq: i64 = cursor.parse().map_err(|_| StoreError::InvalidCursor)?;
        arg(&mut sql, " AND e.seq < ?", seq.into());
    }
    if q.target.is_some() || q.status.is_some() {
        sql.push_str(" AND EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq");
        if let Some(target) = &q.target {
            arg(&mut sql, " AND d.target = ?", target.to_string().into());
        }
        if let Some(status) = q.status {
            arg(&mut sql, " AND d.status = ?", status.code().into());
        }
        sql.push(')');
    }
    if let Some(app) = &q.visible_to {
        arg(&mut sql, " AND (e.source = ?", app.to_string().into());
        arg(
            &mut sql,
            " OR EXISTS (SELECT 1 FROM deliveries v WHERE v.event_seq = e.seq AND v.target = ?))",
            app.to_string().into(),
        );
    }
    let limit = q.limit.max(1) as i64;
    arg(&mut sql, " ORDER BY e.seq DESC LIMIT ?", (limit + 1).into());

    let mut stmt = conn.prepare_cached(&sql)?;
    let mut found = stmt
        .query_map(params_from_iter(args), |r| event_from_row(r, 0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let next_cursor = if found.len() as i64 > limit {
        found.truncate(limit as usize);
        found.last().map(|(seq, _)| seq.to_string())
    } else {
        None
    };
    let events = found
        .into_iter()
        .map(|(seq, event)| record(conn, seq, event))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EventPage {
        events,
        next_cursor,
    })
}

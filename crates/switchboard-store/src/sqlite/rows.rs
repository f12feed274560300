//! Mapping between SQLite rows and the core types. Stored values were valid when written;
//! one that no longer parses is reported as an internal error, never a panic.

use rusqlite::{Connection, OptionalExtension, Row};
use switchboard_core::event::{App, Event};
use switchboard_core::{
    AppId, AppSettings, DeliveryId, DeliveryStatus, EventId, EventType, RetryPolicy, Subscription,
    TenantId, Timestamp, TypePattern,
};

use crate::StoreError;

/// The event columns, in the order [`event_from_row`] reads them, for a table aliased `e`.
pub const EVENT_COLS: &str = "e.seq, e.id, e.tenant, e.type, e.source, e.time, e.idem_key, \
     e.named_targets, e.entity_id, e.correlation_id, e.causation_id, e.historical, e.data";

/// The join condition of event `e` and its deliveries `d`: their ids' range, which the event
/// row records (schema migration 12; there is no index on `event_seq`), checked against
/// `event_seq`. The check's `+` keeps the planner from building an automatic index on
/// `event_seq` (a scan of every delivery) instead of reading the range.
pub const DELIVERIES_OF_EVENT: &str =
    "d.id BETWEEN e.first_delivery AND e.last_delivery AND +d.event_seq = e.seq";

fn corrupt(what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("stored {what} is invalid: {value}").into(),
    )
}

pub fn app_id(s: &str) -> rusqlite::Result<AppId> {
    AppId::parse(s).map_err(|_| corrupt("app id", s))
}

pub fn event_id(s: &str) -> rusqlite::Result<EventId> {
    EventId::parse(s).map_err(|_| corrupt("event id", s))
}

pub fn tenant(s: &str) -> rusqlite::Result<TenantId> {
    TenantId::parse(s).map_err(|_| corrupt("tenant", s))
}

pub fn event_type(s: &str) -> rusqlite::Result<EventType> {
    EventType::parse(s).map_err(|_| corrupt("type", s))
}

/// Reads an event starting at column `at`; returns it with its `seq`.
pub fn event_from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<(i64, Event)> {
    let seq: i64 = row.get(at)?;
    let named: Option<String> = row.get(at + 7)?;
    let named_targets = match named {
        None => None,
        Some(list) if list.is_empty() => Some(Vec::new()),
        Some(list) => Some(
            list.split(',')
                .map(app_id)
                .collect::<rusqlite::Result<Vec<_>>>()?,
        ),
    };
    let event = Event {
        id: event_id(text(row, at + 1)?)?,
        tenant: tenant(text(row, at + 2)?)?,
        event_type: event_type(text(row, at + 3)?)?,
        source: app_id(text(row, at + 4)?)?,
        time: Timestamp(row.get(at + 5)?),
        idempotency_key: row.get(at + 6)?,
        named_targets,
        entity_id: row.get(at + 8)?,
        correlation_id: row.get(at + 9)?,
        causation_id: row.get(at + 10)?,
        historical: row.get(at + 11)?,
        data: row.get(at + 12)?,
    };
    Ok((seq, event))
}

/// A text column, borrowed from the row (no copy).
pub fn text<'r>(row: &'r Row<'_>, at: usize) -> rusqlite::Result<&'r str> {
    row.get_ref(at)?.as_str().map_err(rusqlite::Error::from)
}

pub fn join_targets(targets: &[AppId]) -> String {
    let names: Vec<&str> = targets.iter().map(AppId::as_str).collect();
    names.join(",")
}

pub fn status(code: i64) -> rusqlite::Result<DeliveryStatus> {
    DeliveryStatus::from_code(code).ok_or_else(|| corrupt("status", &code.to_string()))
}

/// Delivery ids are their row's id (`dlv_` and the number).
pub fn delivery_id(rowid: i64) -> DeliveryId {
    DeliveryId::numbered(rowid.unsigned_abs())
}

/// The row id behind a delivery id, or `UnknownDelivery` for an id this store never made.
pub fn delivery_rowid(id: &DeliveryId) -> Result<i64, StoreError> {
    id.number()
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(|| StoreError::UnknownDelivery(id.clone()))
}

/// Subscriptions as stored: a JSON array of patterns, `{"pattern", "ordered": true}` for
/// ordered ones.
pub fn subscriptions_json(subs: &[Subscription]) -> String {
    let items: Vec<serde_json::Value> = subs
        .iter()
        .map(|s| match s.ordered {
            false => serde_json::Value::String(s.pattern.to_string()),
            true => serde_json::json!({"pattern": s.pattern.to_string(), "ordered": true}),
        })
        .collect();
    serde_json::to_string(&items).expect("json values serialize")
}

fn subscription_from_json(item: &serde_json::Value) -> Option<Subscription> {
    let (pattern, ordered) = match item {
        serde_json::Value::String(p) => (p.as_str(), false),
        serde_json::Value::Object(o) => (
            o.get("pattern")?.as_str()?,
            o.get("ordered").and_then(|v| v.as_bool()).unwrap_or(false),
        ),
        _ => return None,
    };
    Some(Subscription {
        pattern: TypePattern::parse(pattern).ok()?,
        ordered,
    })
}

pub const APP_COLS: &str = "id, subscriptions, max_attempts, retry, created_at";

pub fn app_from_row(row: &Row<'_>) -> rusqlite::Result<App> {
    let id: String = row.get(0)?;
    let subs: String = row.get(1)?;
    let retry: String = row.get(3)?;
    let items: Vec<serde_json::Value> =
        serde_json::from_str(&subs).map_err(|_| corrupt("subscriptions", &subs))?;
    let subscriptions = items
        .iter()
        .map(|item| subscription_from_json(item).ok_or_else(|| corrupt("subscription", &subs)))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(App {
        id: app_id(&id)?,
        subscriptions,
        settings: AppSettings {
            max_attempts: row.get(2)?,
            retry: RetryPolicy::parse(&retry).map_err(|_| corrupt("retry", &retry))?,
        },
        created_at: Timestamp(row.get(4)?),
    })
}

pub fn load_app(conn: &Connection, id: &AppId) -> Result<Option<App>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {APP_COLS} FROM apps WHERE id = ?1"))?;
    Ok(stmt.query_row([id.as_str()], app_from_row).optional()?)
}

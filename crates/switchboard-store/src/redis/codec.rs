//! Mapping between Redis hashes (and the app JSON) and the core types. Stored values were
//! valid when written; one that no longer parses is an internal error, never a panic.

use std::collections::HashMap;

use switchboard_core::event::{App, Attempt, Delivery, Event, Requeue};
use switchboard_core::{
    AppId, AppSettings, AttemptOutcome, DeliveryStatus, EventId, EventType, RetryPolicy,
    Subscription, TenantId, Timestamp, TypePattern,
};

use super::keys;
use crate::StoreError;

pub type Hash = HashMap<String, String>;

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Internal(format!("stored {what} is invalid: {value}"))
}

fn field<'a>(h: &'a Hash, name: &str) -> Result<&'a str, StoreError> {
    h.get(name)
        .map(String::as_str)
        .ok_or_else(|| StoreError::Internal(format!("stored record lacks `{name}`")))
}

fn int(h: &Hash, name: &str) -> Result<i64, StoreError> {
    let v = field(h, name)?;
    v.parse().map_err(|_| corrupt(name, v))
}

fn opt_int(h: &Hash, name: &str) -> Result<Option<i64>, StoreError> {
    h.get(name)
        .map(|v| v.parse().map_err(|_| corrupt(name, v)))
        .transpose()
}

pub fn app_id(s: &str) -> Result<AppId, StoreError> {
    AppId::parse(s).map_err(|_| corrupt("app id", s))
}

/// The event hash fields, as `publish.lua` stores them (`seq` and `dl` are added there).
pub fn event_fields(e: &Event) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("id", e.id.to_string()),
        ("tn", e.tenant.to_string()),
        ("ty", e.event_type.to_string()),
        ("src", e.source.to_string()),
        ("tm", e.time.millis().to_string()),
        ("hi", if e.historical { "1" } else { "0" }.to_owned()),
        ("da", e.data.clone()),
    ];
    if let Some(k) = &e.idempotency_key {
        f.push(("ik", k.clone()));
    }
    if let Some(named) = &e.named_targets {
        let names: Vec<&str> = named.iter().map(AppId::as_str).collect();
        f.push(("nt", names.join(",")));
    }
    for (name, value) in [
        ("en", &e.entity_id),
        ("co", &e.correlation_id),
        ("ca", &e.causation_id),
    ] {
        if let Some(v) = value {
            f.push((name, v.clone()));
        }
    }
    f
}

/// An event hash: the event and its delivery numbers, in publish order.
pub fn event_from_hash(h: &Hash) -> Result<(Event, Vec<u64>), StoreError> {
    let id = field(h, "id")?;
    let tenant = field(h, "tn")?;
    let ty = field(h, "ty")?;
    let named_targets = match h.get("nt") {
        None => None,
        Some(list) if list.is_empty() => Some(Vec::new()),
        Some(list) => Some(list.split(',').map(app_id).collect::<Result<Vec<_>, _>>()?),
    };
    let event = Event {
        id: EventId::parse(id).map_err(|_| corrupt("event id", id))?,
        tenant: TenantId::parse(tenant).map_err(|_| corrupt("tenant", tenant))?,
        event_type: EventType::parse(ty).map_err(|_| corrupt("type", ty))?,
        source: app_id(field(h, "src")?)?,
        time: Timestamp(int(h, "tm")?),
        data: field(h, "da")?.to_owned(),
        idempotency_key: h.get("ik").cloned(),
        named_targets,
        entity_id: h.get("en").cloned(),
        correlation_id: h.get("co").cloned(),
        causation_id: h.get("ca").cloned(),
        historical: h.get("hi").map(String::as_str) == Some("1"),
    };
    let deliveries = field(h, "dl")?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|n| n.parse().map_err(|_| corrupt("delivery list", n)))
        .collect::<Result<Vec<u64>, _>>()?;
    Ok((event, deliveries))
}

pub fn status(code: &str) -> Result<DeliveryStatus, StoreError> {
    code.parse()
        .ok()
        .and_then(DeliveryStatus::from_code)
        .ok_or_else(|| corrupt("status", code))
}

/// A delivery hash with its attempt history (`s<k>`, `f<k>`, `o<k>`, `x<k>`) and requeues
/// (`r<i>` = `at|by`).
pub fn delivery_from_hash(n: u64, h: &Hash) -> Result<Delivery, StoreError> {
    let attempts = int(h, "at")? as u32;
    let mut history = Vec::with_capacity(attempts as usize);
    for k in 1..=attempts {
        let Some(started) = opt_int(h, &format!("s{k}"))? else {
            continue;
        };
        let outcome = match h.get(&format!("o{k}")) {
            None => None,
            Some(o) => Some(AttemptOutcome::parse(o).ok_or_else(|| corrupt("outcome", o))?),
        };
        history.push(Attempt {
            attempt: k,
            started_at: Timestamp(started),
            ended_at: opt_int(h, &format!("f{k}"))?.map(Timestamp),
            outcome,
            error: h.get(&format!("x{k}")).cloned(),
        });
    }
    let requeue_count = opt_int(h, "rq")?.unwrap_or(0);
    let mut requeues = Vec::with_capacity(requeue_count as usize);
    for i in 1..=requeue_count {
        let r = field(h, &format!("r{i}"))?;
        let (at, by) = r.split_once('|').ok_or_else(|| corrupt("requeue", r))?;
        requeues.push(Requeue {
            at: Timestamp(at.parse().map_err(|_| corrupt("requeue", r))?),
            by: by.to_owned(),
        });
    }
    let st = status(field(h, "st")?)?;
    Ok(Delivery {
        id: keys::delivery_id(n),
        target: app_id(field(h, "t")?)?,
        status: st,
        attempts,
        last_error: h.get("le").cloned(),
        ack_data: h.get("ad").cloned(),
        created_at: Timestamp(int(h, "cr")?),
        updated_at: Timestamp(int(h, "up")?),
        available_at: Timestamp(int(h, "av")?),
        lease_expires_at: opt_int(h, "ls")?.map(Timestamp),
        acknowledged_at: opt_int(h, "ak")?.map(Timestamp),
        history,
        requeues,
    })
}

/// An app as stored in `sb:apps`: subscriptions (a pattern, or `{"pattern", "ordered"}`),
/// settings and creation time.
pub fn app_json(app: &App) -> String {
    let subs: Vec<serde_json::Value> = app
        .subscriptions
        .iter()
        .map(|s| match s.ordered {
            false => serde_json::Value::String(s.pattern.to_string()),
            true => serde_json::json!({"pattern": s.pattern.to_string(), "ordered": true}),
        })
        .collect();
    serde_json::json!({
        "subscriptions": subs,
        "max_attempts": app.settings.max_attempts,
        "retry": app.settings.retry.to_string(),
        "created_at": app.created_at.millis(),
    })
    .to_string()
}

pub fn app_from_json(id: &str, json: &str) -> Result<App, StoreError> {
    let bad = || corrupt("app", id);
    let v: serde_json::Value = serde_json::from_str(json).map_err(|_| bad())?;
    let subscriptions = v["subscriptions"]
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|item| {
            let (pattern, ordered) = match item {
                serde_json::Value::String(p) => (p.as_str(), false),
                other => (
                    other["pattern"].as_str().ok_or_else(bad)?,
                    other["ordered"].as_bool().unwrap_or(false),
                ),
            };
            Ok(Subscription {
                pattern: TypePattern::parse(pattern).map_err(|_| bad())?,
                ordered,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let retry = v["retry"].as_str().ok_or_else(bad)?;
    Ok(App {
        id: app_id(id)?,
        subscriptions,
        settings: AppSettings {
            max_attempts: v["max_attempts"].as_u64().ok_or_else(bad)? as u32,
            retry: RetryPolicy::parse(retry).map_err(|_| bad())?,
        },
        created_at: Timestamp(v["created_at"].as_i64().ok_or_else(bad)?),
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

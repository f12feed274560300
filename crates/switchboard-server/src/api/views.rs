//! JSON shapes of the replies. Event `data` and ack data are stored as JSON text and sent
//! back as raw JSON, never re-encoded.

use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};
use switchboard_core::event::{App, Attempt, Delivery, Event, Requeue};
use switchboard_core::{AppId, DeliveryStatus, Timestamp};
use switchboard_store::{DeliveryRecord, EventRecord};

/// Stored JSON text, written into a reply as it is, without parsing it again: only a publish
/// and an ack store it, each from a body serde_json parsed, so it is always valid JSON.
/// (Checking it again was 5% of the HTTP workers' time in the full cycle, a consume reply
/// carrying every event's `data`.)
#[derive(Debug, Clone, Copy)]
pub struct Verbatim<'a>(&'a str);

/// The name serde_json gives its `RawValue` when serializing it: a struct of this name with
/// one field of this name is written as the field's text, unquoted. `RawValue` itself can only
/// be made by parsing; the reply tests see the text come back as JSON.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

impl Serialize for Verbatim<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut raw = s.serialize_struct(RAW_VALUE_TOKEN, 1)?;
        raw.serialize_field(RAW_VALUE_TOKEN, self.0)?;
        raw.end()
    }
}

#[derive(Serialize)]
pub struct EventView<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub source: &'a str,
    pub time: Timestamp,
    pub data: Verbatim<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<&'a [AppId]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<&'a str>,
    pub historical: bool,
}

impl<'a> EventView<'a> {
    pub fn of(e: &'a Event) -> EventView<'a> {
        EventView {
            id: e.id.as_str(),
            tenant: e.tenant.as_str(),
            event_type: e.event_type.as_str(),
            source: e.source.as_str(),
            time: e.time,
            data: Verbatim(&e.data),
            target: e.named_targets.as_deref(),
            idempotency_key: e.idempotency_key.as_deref(),
            entity_id: e.entity_id.as_deref(),
            correlation_id: e.correlation_id.as_deref(),
            causation_id: e.causation_id.as_deref(),
            historical: e.historical,
        }
    }
}

#[derive(Serialize)]
pub struct DeliveryView<'a> {
    pub delivery_id: &'a str,
    pub target: &'a str,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_error: Option<&'a str>,
    pub ack_data: Option<Verbatim<'a>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// For a pending delivery: when it may be handed out (later than now during a backoff).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_at: Option<Timestamp>,
    pub lease_expires_at: Option<Timestamp>,
    pub acknowledged_at: Option<Timestamp>,
    /// Publish → ack, once acknowledged.
    pub latency_ms: Option<u64>,
    /// Attempts and requeues, oldest first, each with a `kind`.
    pub history: Vec<HistoryEntry<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryEntry<'a> {
    Attempt(&'a Attempt),
    Requeue(&'a Requeue),
}

impl HistoryEntry<'_> {
    fn at(&self) -> Timestamp {
        match self {
            HistoryEntry::Attempt(a) => a.started_at,
            HistoryEntry::Requeue(r) => r.at,
        }
    }
}

fn history(d: &Delivery) -> Vec<HistoryEntry<'_>> {
    let mut entries: Vec<HistoryEntry> = d
        .history
        .iter()
        .map(HistoryEntry::Attempt)
        .chain(d.requeues.iter().map(HistoryEntry::Requeue))
        .collect();
    // A requeue comes before the attempt it makes possible, even within one millisecond.
    entries.sort_by_key(|e| (e.at(), matches!(e, HistoryEntry::Attempt(_))));
    entries
}

impl<'a> DeliveryView<'a> {
    pub fn of(d: &'a Delivery, event_time: Timestamp) -> DeliveryView<'a> {
        DeliveryView {
            delivery_id: d.id.as_str(),
            target: d.target.as_str(),
            status: d.status,
            attempts: d.attempts,
            last_error: d.last_error.as_deref(),
            ack_data: d.ack_data.as_deref().map(Verbatim),
            created_at: d.created_at,
            updated_at: d.updated_at,
            available_at: (d.status == DeliveryStatus::Pending).then_some(d.available_at),
            lease_expires_at: d.lease_expires_at,
            acknowledged_at: d.acknowledged_at,
            latency_ms: d.latency_ms(event_time),
            history: history(d),
        }
    }
}

#[derive(Serialize)]
pub struct RecordView<'a> {
    #[serde(flatten)]
    pub event: EventView<'a>,
    pub deliveries: Vec<DeliveryView<'a>>,
}

impl<'a> RecordView<'a> {
    pub fn of(r: &'a EventRecord) -> RecordView<'a> {
        RecordView {
            event: EventView::of(&r.event),
            deliveries: r
                .deliveries
                .iter()
                .map(|d| DeliveryView::of(d, r.event.time))
                .collect(),
        }
    }
}

#[derive(Serialize)]
pub struct AppView<'a> {
    pub id: &'a str,
    /// Patterns as strings; ordered ones as `{"pattern", "ordered": true}`.
    pub subscriptions: Vec<serde_json::Value>,
    pub max_attempts: u32,
    pub backoff: String,
    pub created_at: Timestamp,
}

impl<'a> AppView<'a> {
    pub fn of(a: &'a App) -> AppView<'a> {
        AppView {
            id: a.id.as_str(),
            subscriptions: a
                .subscriptions
                .iter()
                .map(|s| match s.ordered {
                    false => serde_json::Value::String(s.pattern.to_string()),
                    true => serde_json::json!({"pattern": s.pattern.to_string(), "ordered": true}),
                })
                .collect(),
            max_attempts: a.settings.max_attempts,
            backoff: a.settings.retry.to_string(),
            created_at: a.created_at,
        }
    }
}

/// A delivery with its event: a row of the dead-letter and unacknowledged lists.
#[derive(Serialize)]
pub struct DeliveryRecordView<'a> {
    #[serde(flatten)]
    pub delivery: DeliveryView<'a>,
    /// Milliseconds since the delivery was created (at publish).
    pub age_ms: u64,
    pub event: EventView<'a>,
}

impl<'a> DeliveryRecordView<'a> {
    pub fn of(r: &'a DeliveryRecord, now: Timestamp) -> DeliveryRecordView<'a> {
        DeliveryRecordView {
            delivery: DeliveryView::of(&r.delivery, r.event.time),
            age_ms: now.since(r.delivery.created_at),
            event: EventView::of(&r.event),
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::{AppId, EventId, EventType, TenantId};

    use super::*;

    /// Stored text comes out as JSON, not as a string, whichever serde_json serializer writes it.
    #[test]
    fn stored_json_is_written_as_it_is() {
        let data = r#"{"user_id":42,"tags":["a","b"],"nested":{"ok":true}}"#;
        let event = Event {
            id: EventId::parse("evt_1").unwrap(),
            tenant: TenantId::parse("acme").unwrap(),
            event_type: EventType::parse("user.created").unwrap(),
            source: AppId::parse("crm").unwrap(),
            time: Timestamp(0),
            data: data.to_owned(),
            idempotency_key: None,
            named_targets: None,
            entity_id: None,
            correlation_id: None,
            causation_id: None,
            historical: false,
        };
        let text = serde_json::to_string(&EventView::of(&event)).unwrap();
        assert!(text.contains(&format!(r#""data":{data},"#)), "{text}");
        let value = serde_json::to_value(EventView::of(&event)).unwrap();
        let expected: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(value["data"], expected);
    }
}

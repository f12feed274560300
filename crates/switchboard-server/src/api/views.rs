//! JSON shapes of the replies. Event `data` and ack data are stored as JSON text and sent
//! back as raw JSON, never re-encoded.

use serde::Serialize;
use serde_json::value::RawValue;
use switchboard_core::event::{App, Attempt, Delivery, Event};
use switchboard_core::{AppId, DeliveryStatus, Timestamp};
use switchboard_store::EventRecord;

/// Stored JSON text as a raw value; stored text is always valid JSON, so a failure is a bug
/// worth seeing rather than hiding.
fn raw(text: &str) -> &RawValue {
    serde_json::from_str(text).unwrap_or_else(|_| {
        tracing::error!("stored JSON is invalid");
        RawValue::NULL
    })
}

#[derive(Serialize)]
pub struct EventView<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub source: &'a str,
    pub time: Timestamp,
    pub data: &'a RawValue,
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
            data: raw(&e.data),
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
    pub ack_data: Option<&'a RawValue>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// For a pending delivery: when it may be handed out (later than now during a backoff).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_at: Option<Timestamp>,
    pub lease_expires_at: Option<Timestamp>,
    pub acknowledged_at: Option<Timestamp>,
    /// Publish → ack, once acknowledged.
    pub latency_ms: Option<u64>,
    pub history: &'a [Attempt],
}

impl<'a> DeliveryView<'a> {
    fn of(d: &'a Delivery, event_time: Timestamp) -> DeliveryView<'a> {
        DeliveryView {
            delivery_id: d.id.as_str(),
            target: d.target.as_str(),
            status: d.status,
            attempts: d.attempts,
            last_error: d.last_error.as_deref(),
            ack_data: d.ack_data.as_deref().map(raw),
            created_at: d.created_at,
            updated_at: d.updated_at,
            available_at: (d.status == DeliveryStatus::Pending).then_some(d.available_at),
            lease_expires_at: d.lease_expires_at,
            acknowledged_at: d.acknowledged_at,
            latency_ms: d.latency_ms(event_time),
            history: &d.history,
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
    pub subscriptions: Vec<String>,
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
                .map(|s| s.pattern.to_string())
                .collect(),
            max_attempts: a.settings.max_attempts,
            backoff: a.settings.retry.to_string(),
            created_at: a.created_at,
        }
    }
}

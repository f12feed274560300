//! Plain data shared by every layer: apps and their settings, events as published and as
//! stored, deliveries and attempts as shown.

use serde::Serialize;

use crate::delivery::{AttemptOutcome, DeliveryStatus};
use crate::ids::{AppId, DeliveryId, EventId, EventType, TenantId};
use crate::retry::RetryPolicy;
use crate::time::Timestamp;

pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppSettings {
    /// Attempts before a delivery is dead (at least 1).
    pub max_attempts: u32,
    pub retry: RetryPolicy,
}

impl Default for AppSettings {
    fn default() -> Self {
        AppSettings {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry: RetryPolicy::default(),
        }
    }
}

pub use crate::routing::Subscription;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct App {
    pub id: AppId,
    pub subscriptions: Vec<Subscription>,
    pub settings: AppSettings,
    pub created_at: Timestamp,
}

/// An event as switchboard stores it. Immutable once published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    pub tenant: TenantId,
    pub event_type: EventType,
    pub source: AppId,
    pub time: Timestamp,
    /// The `data` object, as the JSON text the publisher sent.
    pub data: String,
    /// The publisher's `id`: its idempotency key, unique per source app.
    pub idempotency_key: Option<String>,
    /// The targets the publisher named, if it named any.
    pub named_targets: Option<Vec<AppId>>,
    pub entity_id: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub historical: bool,
}

/// One recorded attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub attempt: u32,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    /// `None` while the attempt's lease holds.
    pub outcome: Option<AttemptOutcome>,
    pub error: Option<String>,
}

/// A dead delivery sent back to pending, with a fresh attempt budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requeue {
    pub at: Timestamp,
    /// Who asked: `admin` or an app id.
    pub by: String,
}

/// A delivery as the inspection endpoints show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub target: AppId,
    pub status: DeliveryStatus,
    /// Attempts started so far.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// JSON text the consumer sent with its ack.
    pub ack_data: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When a pending delivery becomes available (after a backoff).
    pub available_at: Timestamp,
    pub lease_expires_at: Option<Timestamp>,
    pub acknowledged_at: Option<Timestamp>,
    pub history: Vec<Attempt>,
    pub requeues: Vec<Requeue>,
}

impl Delivery {
    /// Publish → ack latency, once acknowledged.
    pub fn latency_ms(&self, event_time: Timestamp) -> Option<u64> {
        self.acknowledged_at.map(|at| at.since(event_time))
    }
}

//! Types of the transparency endpoints: the matrix, health verdicts and stats.
//! Plain data, decoded leniently; no behaviour.

use serde::Deserialize;

/// Latency percentiles in milliseconds (absent without acks in the window).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Percentiles {
    /// Median.
    #[serde(default)]
    pub p50: Option<u64>,
    /// 95th percentile.
    #[serde(default)]
    pub p95: Option<u64>,
    /// 99th percentile.
    #[serde(default)]
    pub p99: Option<u64>,
}

/// Why a channel is not healthy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Reason {
    /// `success_rate`, `oldest_open`, `recent_failures` or `consumer_silent`.
    pub rule: String,
    /// `degraded` or `unhealthy`.
    pub status: String,
    /// The publishing app.
    pub source: String,
    /// The receiving app.
    pub target: String,
    /// The figure that broke the rule.
    pub figure: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// What is wrong and what to check next.
    pub message: String,
}

/// One channel (source → target) of the communication matrix.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MatrixRow {
    /// The publishing app.
    pub source: String,
    /// The receiving app.
    pub target: String,
    /// Deliveries created in the window.
    pub published: u64,
    /// Deliveries acknowledged in the window.
    pub acknowledged: u64,
    /// Waiting now.
    pub pending: u64,
    /// Leased now.
    pub in_flight: u64,
    /// Open now after at least one failed attempt.
    pub failed: u64,
    /// In the dead letters now.
    pub dead: u64,
    /// Failed attempts in the window.
    #[serde(default)]
    pub failed_attempts: u64,
    /// Deliveries that died in the window.
    #[serde(default)]
    pub died: u64,
    /// Failed attempts over finished attempts in the window.
    #[serde(default)]
    pub failure_rate: Option<f64>,
    /// Publish → ack latency in the window.
    #[serde(default)]
    pub latency_ms: Percentiles,
    /// Age of the oldest open delivery.
    #[serde(default)]
    pub oldest_pending_age_ms: Option<u64>,
    /// `healthy`, `degraded` or `unhealthy`.
    pub health: String,
    /// Why, when not healthy.
    #[serde(default)]
    pub reasons: Vec<Reason>,
}

/// `GET /v1/tenants/{tenant}/matrix` and `GET /v1/matrix`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Matrix {
    /// The tenant, absent for the suite-wide matrix.
    #[serde(default)]
    pub tenant: Option<String>,
    /// `1h`, `24h`, `7d` or `all`.
    pub window: String,
    /// One row per channel.
    #[serde(default)]
    pub channels: Vec<MatrixRow>,
}

/// Totals of a tenant's health report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HealthCounts {
    /// Deliveries created in the window.
    pub published: u64,
    /// Acknowledged in the window.
    pub acknowledged: u64,
    /// Waiting now.
    pub pending: u64,
    /// Leased now.
    pub in_flight: u64,
    /// Open after a failure now.
    pub failed: u64,
    /// Dead now.
    pub dead: u64,
    /// Failed attempts in the window.
    #[serde(default)]
    pub failed_attempts: u64,
}

/// One channel's verdict.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelHealth {
    /// The publishing app.
    pub source: String,
    /// The receiving app.
    pub target: String,
    /// `healthy`, `degraded` or `unhealthy`.
    pub status: String,
    /// Why.
    #[serde(default)]
    pub reasons: Vec<Reason>,
}

/// `GET /v1/tenants/{tenant}/health`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TenantHealth {
    /// The tenant.
    pub tenant: String,
    /// `healthy`, `degraded` or `unhealthy`: the worst channel.
    pub status: String,
    /// The window of the flows.
    pub window: String,
    /// Totals.
    pub counts: HealthCounts,
    /// Acknowledged over finished attempts in the window.
    #[serde(default)]
    pub success_rate: Option<f64>,
    /// Age of the oldest open delivery.
    #[serde(default)]
    pub oldest_pending_age_ms: Option<u64>,
    /// Publish → ack latency.
    #[serde(default)]
    pub latency_ms: Percentiles,
    /// Each channel's verdict.
    #[serde(default)]
    pub channels: Vec<ChannelHealth>,
    /// Every reason, worst first.
    #[serde(default)]
    pub reasons: Vec<Reason>,
}

/// One group of `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatsRow {
    /// The type, source, target or hour.
    pub key: String,
    /// Deliveries published.
    pub published: u64,
    /// Acknowledged.
    pub acknowledged: u64,
    /// Failed attempts.
    pub failed_attempts: u64,
    /// Dead.
    pub dead: u64,
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Stats {
    /// `type`, `source`, `target` or `hour`.
    pub group_by: String,
    /// The groups.
    #[serde(default)]
    pub rows: Vec<StatsRow>,
}

/// One change of the live stream (`GET /v1/stream`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StreamChange {
    /// `event.published`, `delivery.leased`, `delivery.acknowledged`, `delivery.failed` or
    /// `delivery.dead`.
    pub kind: String,
    /// RFC 3339 time.
    pub at: String,
    /// The tenant.
    pub tenant: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event.
    pub event_id: String,
    /// The publishing app.
    pub source: String,
    /// The receiving app, for delivery changes.
    #[serde(default)]
    pub target: Option<String>,
    /// Every target, for `event.published`.
    #[serde(default)]
    pub targets: Vec<String>,
    /// The delivery, for delivery changes.
    #[serde(default)]
    pub delivery_id: Option<String>,
    /// The attempt.
    #[serde(default)]
    pub attempt: Option<u32>,
    /// Publish → ack, for acks.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// The error, for failures.
    #[serde(default)]
    pub error: Option<String>,
}

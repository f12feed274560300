//! What happened, told twice: to the live feed (`GET /v1/stream`, a broadcast channel) and to
//! Prometheus counters. Handlers and workers call it after the store has committed a change;
//! it never touches the store.

use std::sync::{Arc, OnceLock};

use metrics::{counter, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use switchboard_core::{AppId, DeliveryStatus, EventType, TenantId, Timestamp};
use switchboard_store::{DeliveryChange, LeasedDelivery, Published};
use tokio::sync::broadcast;

/// How many changes a slow stream reader may fall behind before it misses some.
const FEED_CAPACITY: usize = 4096;

/// One change on the live feed.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// `event.published`, `delivery.leased`, `delivery.acknowledged`, `delivery.failed`,
    /// `delivery.dead`.
    pub kind: &'static str,
    pub at: Timestamp,
    pub tenant: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub event_id: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// For `event.published`: every target.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<DeliveryStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub struct Observer {
    feed: broadcast::Sender<Arc<Change>>,
}

impl Default for Observer {
    fn default() -> Self {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        Observer { feed }
    }
}

/// The process-wide Prometheus recorder (a process has one, however many servers it runs).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                &[
                    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                ],
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "switchboard_store_group_size".into(),
                    ),
                    &[
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                    ],
                )
            })
            .expect("static bucket lists are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program's): then ours only
        // renders what it was given, which is nothing; say so once.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        handle
    })
}

impl Observer {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.feed.subscribe()
    }

    fn send(&self, change: Change) {
        // No receivers is normal: nobody is tailing.
        let _ = self.feed.send(Arc::new(change));
    }

    /// `kinds` are the (tenant, type) of each event, in the order of `published`.
    pub fn published(
        &self,
        source: &AppId,
        kinds: &[(TenantId, EventType)],
        published: &[Published],
        at: Timestamp,
    ) {
        let fresh = kinds
            .iter()
            .zip(published)
            .filter(|(_, p)| !p.duplicate)
            .map(|((_, ty), _)| ty);
        for (ty, n) in count_each(fresh) {
            counter!("switchboard_events_published_total", "app" => source.to_string(), "type" => ty.to_string())
                .increment(n);
        }
        if self.feed.receiver_count() == 0 {
            return;
        }
        for ((tenant, ty), p) in kinds.iter().zip(published) {
            if p.duplicate {
                continue;
            }
            self.send(Change {
                kind: "event.published",
                at,
                tenant: tenant.to_string(),
                event_type: ty.to_string(),
                event_id: p.id.to_string(),
                source: source.to_string(),
                target: None,
                targets: p.deliveries.iter().map(|d| d.target.to_string()).collect(),
                delivery_id: None,
                status: None,
                attempt: None,
                latency_ms: None,
                error: None,
            });
        }
    }

    pub fn leased(&self, app: &AppId, leased: &[LeasedDelivery], at: Timestamp) {
        for (ty, n) in count_each(leased.iter().map(|d| &d.event.event_type)) {
            counter!("switchboard_deliveries_leased_total", "app" => app.to_string(), "type" => ty.to_string())
                .increment(n);
        }
        if self.feed.receiver_count() == 0 {
            return;
        }
        for d in leased {
            let e = &d.event;
            self.send(Change {
                kind: "delivery.leased",
                at,
                tenant: e.tenant.to_string(),
                event_type: e.event_type.to_string(),
                event_id: e.id.to_string(),
                source: e.source.to_string(),
                target: Some(app.to_string()),
                targets: Vec::new(),
                delivery_id: Some(d.id.to_string()),
                status: Some(DeliveryStatus::InFlight),
                attempt: Some(d.attempt),
                latency_ms: None,
                error: None,
            });
        }
    }

    /// Acks, nacks and expiries. `timed_out` tells an expired lease from a nack.
    pub fn changed(&self, changes: &[DeliveryChange], timed_out: bool, at: Timestamp) {
        let failed = match timed_out {
            true => "switchboard_deliveries_timed_out_total",
            false => "switchboard_deliveries_nacked_total",
        };
        // Counted per (counter, app, type), not per delivery: an ack of 1,000 deliveries is
        // one counter update, not 1,000 label lookups.
        let mut counted: Vec<(&'static str, &AppId, &EventType)> = Vec::new();
        for c in changes {
            match c.status {
                DeliveryStatus::Acknowledged => {
                    counted.push((
                        "switchboard_deliveries_acknowledged_total",
                        &c.target,
                        &c.event_type,
                    ));
                }
                DeliveryStatus::Dead => {
                    counted.push((failed, &c.target, &c.event_type));
                    counted.push((
                        "switchboard_deliveries_dead_total",
                        &c.target,
                        &c.event_type,
                    ));
                }
                _ => counted.push((failed, &c.target, &c.event_type)),
            }
        }
        for ((name, app, ty), n) in count_each(&counted) {
            counter!(*name, "app" => app.to_string(), "type" => ty.to_string()).increment(n);
        }
        let acked = changes
            .iter()
            .filter(|c| c.status == DeliveryStatus::Acknowledged);
        let mut latency: Vec<(&AppId, metrics::Histogram)> = Vec::new();
        for c in acked {
            let Some(ms) = c.latency_ms else { continue };
            let at = match latency.iter().position(|(app, _)| *app == &c.target) {
                Some(at) => at,
                None => {
                    let h = histogram!("switchboard_publish_to_ack_seconds", "app" => c.target.to_string());
                    latency.push((&c.target, h));
                    latency.len() - 1
                }
            };
            latency[at].1.record(ms as f64 / 1000.0);
        }
        if self.feed.receiver_count() == 0 {
            return;
        }
        for c in changes {
            let kind = match c.status {
                DeliveryStatus::Acknowledged => "delivery.acknowledged",
                DeliveryStatus::Dead => "delivery.dead",
                _ => "delivery.failed",
            };
            self.send(Change {
                kind,
                at,
                tenant: c.tenant.to_string(),
                event_type: c.event_type.to_string(),
                event_id: c.event_id.to_string(),
                source: c.source.to_string(),
                target: Some(c.target.to_string()),
                targets: Vec::new(),
                delivery_id: Some(c.id.to_string()),
                status: Some(c.status),
                attempt: Some(c.attempt),
                latency_ms: c.latency_ms,
                error: c.error.clone(),
            });
        }
    }
}

/// How many times each item occurs, in order of first occurrence: a batch holds one or a few
/// distinct ones, so a linear search beats hashing.
fn count_each<'a, T: PartialEq + 'a>(items: impl IntoIterator<Item = &'a T>) -> Vec<(&'a T, u64)> {
    let mut counts: Vec<(&T, u64)> = Vec::new();
    for item in items {
        match counts.iter_mut().find(|(seen, _)| *seen == item) {
            Some((_, n)) => *n += 1,
            None => counts.push((item, 1)),
        }
    }
    counts
}

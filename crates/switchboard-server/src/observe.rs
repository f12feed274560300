//! What happened, told twice: to the live feed (`GET /v1/stream`, a broadcast channel) and to
//! Prometheus counters. Handlers and workers call it after the store has committed a change;
//! it never touches the store.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, OnceLock, RwLock};

use metrics::{Counter, Histogram, counter, histogram};
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
    /// Counter handles by name, app and type, and the latency histogram's by app.
    counters: Handles<&'static str, Handles<AppId, Handles<EventType, Counter>>>,
    latency: Handles<AppId, Histogram>,
}

impl Default for Observer {
    fn default() -> Self {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        Observer {
            feed,
            counters: Handles::default(),
            latency: Handles::default(),
        }
    }
}

/// Metric handles kept once registered. Naming a labelled metric builds its key (owned label
/// strings) and looks it up in the recorder: seven allocations per publish, against three
/// hash lookups under read locks here. The registry keeps every label set anyway, so this holds
/// nothing it would not.
struct Handles<K, V>(RwLock<HashMap<K, V>>);

impl<K, V> Default for Handles<K, V> {
    fn default() -> Self {
        Handles(RwLock::new(HashMap::new()))
    }
}

impl<K: Hash + Eq + Clone, V> Handles<K, V> {
    /// `f` of the handle under `key`, made by `make` the first time.
    fn with<R>(&self, key: &K, make: impl FnOnce() -> V, f: impl FnOnce(&V) -> R) -> R {
        if let Some(v) = self.0.read().expect("handles lock").get(key) {
            return f(v);
        }
        let mut all = self.0.write().expect("handles lock");
        f(all.entry(key.clone()).or_insert_with(make))
    }
}

impl Observer {
    /// Adds `n` to the counter `name` of `app` and `ty`.
    fn count(&self, name: &'static str, app: &AppId, ty: &EventType, n: u64) {
        self.counters.with(&name, Handles::default, |by_app| {
            by_app.with(app, Handles::default, |by_type| {
                let make = || counter!(name, "app" => app.to_string(), "type" => ty.to_string());
                by_type.with(ty, make, |c| c.increment(n));
            });
        });
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
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "switchboard_store_commit_wal_pages".into(),
                    ),
                    &[
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
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
            self.count("switchboard_events_published_total", source, ty, n);
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
            self.count("switchboard_deliveries_leased_total", app, ty, n);
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
            self.count(name, app, ty, n);
        }
        // An ack's changes are all of one app: its histogram is looked up once per run of
        // one target, not once per delivery.
        let mut last: Option<(&AppId, Histogram)> = None;
        for c in changes {
            let (DeliveryStatus::Acknowledged, Some(ms)) = (c.status, c.latency_ms) else {
                continue;
            };
            let histogram = match &last {
                Some((target, h)) if *target == &c.target => h,
                _ => {
                    let make = || histogram!("switchboard_publish_to_ack_seconds", "app" => c.target.to_string());
                    let h = self.latency.with(&c.target, make, Histogram::clone);
                    &last.insert((&c.target, h)).1
                }
            };
            histogram.record(ms as f64 / 1000.0);
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_handle_is_made_once_per_key_and_then_reused() {
        let handles: Handles<&str, Cell<u32>> = Handles::default();
        let made = Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            Cell::new(0)
        };
        for key in ["crm", "hr", "crm", "crm"] {
            handles.with(&key, make, |n| n.set(n.get() + 1));
        }
        assert_eq!(made.get(), 2);
        assert_eq!(handles.with(&"crm", make, Cell::get), 3);
        assert_eq!(handles.with(&"hr", make, Cell::get), 1);
        assert_eq!(made.get(), 2);
    }
}

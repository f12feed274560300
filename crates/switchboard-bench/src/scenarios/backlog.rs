//! Scenario `backlog` (issue 3): the standard publish and full-cycle workloads on a server
//! where another app, `down`, has a backlog of pending deliveries (1,000,000; 100,000 with
//! `--quick`) that nobody consumes, against the same workloads on an empty server. Runs
//! alternate (no backlog, backlog) so drift of the machine hits both alike.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::json;

use super::{
    Job, Options, Outcome, app, events_body, measure, median_of, new_report, pending, publish_all,
};
use crate::switchboard::{Batch, Delivery, Switchboard, SwitchboardConfig};
use crate::target::{Footprint, TENANT, Target};
use crate::workloads::{RunOutcome, Settings, Workload};

/// Events per backlog publish.
const LOAD_BATCH: usize = 1000;
/// Concurrent publishers building the backlog.
const LOAD_PUBLISHERS: usize = 8;
/// Settle time after the backlog is in, before the workload starts.
const SETTLE: Duration = Duration::from_secs(2);

/// switchboard with app `down` holding a backlog; the workloads' apps get the same as on an
/// empty server.
pub struct Backlogged {
    inner: Switchboard,
}

/// The switchboard config, the backlog size, and the backlog build rates seen.
pub struct BacklogConfig {
    inner: SwitchboardConfig,
    backlog: u64,
    load_rates: Mutex<Vec<f64>>,
}

impl Target for Backlogged {
    type Config = BacklogConfig;
    type Batch = Batch;
    type Delivery = Delivery;

    const NAME: &'static str = "switchboard, app `down` with a backlog";

    fn durability(config: &BacklogConfig) -> String {
        Switchboard::durability(&config.inner)
    }

    async fn start(config: &BacklogConfig, sinks: usize) -> Result<Backlogged> {
        let inner = Switchboard::start(&config.inner, sinks).await?;
        let admin = inner.admin();
        let legacy = app(&admin, "legacy", &[]).await?;
        app(&admin, "down", &["backlog.item"]).await?;
        let body = events_body("backlog.item", TENANT, LOAD_BATCH);
        let batches = config.backlog.div_ceil(LOAD_BATCH as u64);
        let plan = Arc::new(move |_| Job {
            client: legacy.clone(),
            body: body.clone(),
            events: LOAD_BATCH as u64,
        });
        let (events, rate) = publish_all(plan, batches, LOAD_PUBLISHERS).await?;
        eprintln!("  backlog of {events} events for `down` built at {rate:.0} events/s");
        config
            .load_rates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rate);
        let waiting = pending(&admin, TENANT, "down").await?;
        if waiting != events {
            bail!("`down` has {waiting} pending deliveries, expected {events}");
        }
        tokio::time::sleep(SETTLE).await;
        Ok(Backlogged { inner })
    }

    fn batch(&self, data: &[&str]) -> Result<Batch> {
        self.inner.batch(data)
    }

    async fn publish(&self, batch: &Batch) -> Result<usize> {
        self.inner.publish(batch).await
    }

    async fn consume(&self, sink: usize, max: u32, wait: Duration) -> Result<Vec<Delivery>> {
        self.inner.consume(sink, max, wait).await
    }

    async fn ack(&self, sink: usize, deliveries: Vec<Delivery>) -> Result<u64> {
        self.inner.ack(sink, deliveries).await
    }

    fn sent_ns(delivery: &Delivery) -> Option<u64> {
        Switchboard::sent_ns(delivery)
    }

    fn footprint(&self) -> Footprint {
        self.inner.footprint()
    }

    fn warnings(&self) -> Vec<String> {
        self.inner.warnings()
    }

    async fn stop(self) -> Result<()> {
        self.inner.stop().await
    }
}

/// The figures compared between the two servers: (workload, figure).
const COMPARED: &[(&str, &str, &str)] = &[
    (
        "publish, batch 100",
        "throughput",
        "publish batch 100 ratio",
    ),
    (
        "publish→consume→ack, 1 target",
        "events acked by every target",
        "full cycle ratio",
    ),
];

pub async fn run(config: &SwitchboardConfig, s: &Settings, options: &Options) -> Result<Outcome> {
    let backlog = if options.quick { 100_000 } else { 1_000_000 };
    let backlogged = BacklogConfig {
        inner: config.clone(),
        backlog,
        load_rates: Mutex::new(Vec::new()),
    };
    let mut report = new_report(
        "switchboard: app `up` alone vs. with app `down` holding a backlog",
        Switchboard::durability(config),
        json!({
            "quick": options.quick,
            "backlog_pending_deliveries": backlog,
            "backlog": "events of type backlog.item from app `legacy` for tenant t1, routed to app \
                `down` only, published in batches of 1000 by 8 publishers and never consumed",
            "workloads": "the standard publish (batch 100) and full-cycle (1 target) workloads, \
                unchanged; the target app (`bench-sink-1`, i.e. `up`) does not subscribe to backlog.item",
            "publish": { "publishers": s.publishers, "window_s": s.publish_window.as_secs_f64() },
            "full_cycle": { "events": s.cycle_events, "publishers": s.cycle_publishers,
                "batch": s.cycle_batch, "consumers": s.consumers_per_sink },
        }),
        options.runs,
    );
    let workloads = [
        Workload::Publish { batch: 100 },
        Workload::FullCycle { sinks: 1 },
    ];
    for run in 1..=options.runs {
        for workload in workloads {
            let plain = format!("{} [no backlog]", workload.title(s));
            let loaded = format!("{} [backlog {backlog}]", workload.title(s));
            eprintln!("running {plain}, run {run}/{}", options.runs);
            let none = workload.run::<Switchboard>(config, s).await;
            eprintln!("running {loaded}, run {run}/{}", options.runs);
            let with = workload.run::<Backlogged>(&backlogged, s).await;
            let ratio = match (&none, &with) {
                (Ok(a), Ok(b)) => first(a).zip(first(b)).map(|(a, b)| b / a),
                _ => None,
            };
            for (title, outcome) in [(&plain, none), (&loaded, with)] {
                match outcome {
                    Ok(outcome) => report.add_run(title, run, outcome),
                    Err(e) => {
                        eprintln!("  failed: {e:#}");
                        report.add_failure(title, run, &e);
                    }
                }
            }
            if let Some(ratio) = ratio {
                let name = COMPARED
                    .iter()
                    .find(|(w, _, _)| workload.title(s).starts_with(w))
                    .map_or("ratio", |(_, _, name)| name);
                let mut outcome = RunOutcome::default();
                measure(&mut outcome, name, "backlog / none", ratio);
                report.add_run("with backlog / without (same run)", run, outcome);
            }
        }
    }
    let rates = backlogged
        .load_rates
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for (run, rate) in rates.into_iter().enumerate() {
        let mut outcome = RunOutcome::default();
        measure(&mut outcome, "publish rate (batch 1000)", "events/s", rate);
        report.add_run("building the backlog", run + 1, outcome);
    }
    let mut summary = Vec::new();
    for workload in workloads {
        let title = workload.title(s);
        let Some((_, figure, _)) = COMPARED.iter().find(|(w, _, _)| title.starts_with(w)) else {
            continue;
        };
        let a = median_of(&report, &format!("{title} [no backlog]"), figure);
        let b = median_of(&report, &format!("{title} [backlog {backlog}]"), figure);
        if let Some((a, b)) = a.zip(b) {
            summary.push(format!(
                "{title}: {figure}: {b:.0} events/s with the backlog vs {a:.0} without \
                 (medians): {:+.1}% (goal: within 20%: {})",
                (b / a - 1.0) * 100.0,
                if b >= a * 0.8 { "met" } else { "NOT met" }
            ));
        }
    }
    Ok((report, summary))
}

/// The first figure of a run: its throughput.
fn first(outcome: &RunOutcome) -> Option<f64> {
    outcome.measures.first().map(|m| m.value)
}

//! Scenario `matrix` (issue 4): matrix and health response times of a tenant with 1M, then
//! 10M stored events (1M only with `--quick`), on one server loaded over HTTP.
//!
//! Apps: `crm` publishes `user.created` (→ `hr`) and `order.placed` (→ `billing`); `billing`
//! publishes `invoice.paid` (→ `mail`): three channels per tenant. Nine batches in ten go to
//! tenant `t-big` (the one timed), the tenth to one of `t-2`, `t-3`, `t-4`. After each stage
//! some deliveries are acked (`hr`, 5% of the stage's events), nacked for good (500, dead) or
//! with a 1 h retry (500, failing) by `billing`, and leased for 1 h (1000, in flight) by `mail`,
//! so every counter has something. Then each endpoint (the matrices and health, and the
//! unacknowledged view and dead letters by target, which read deliveries through their
//! indexes) is called once untimed and 50 times timed, one call at a time.

use std::sync::Arc;

use anyhow::{Result, bail};
use serde_json::json;
use switchboard_client::{Ack, Client, ConsumeRequest, Nack};

use super::{
    Job, Options, Outcome, events_body, measure, median_of, ms_quantile, new_report, publish_all,
    start_node, time_gets,
};
use crate::server::ServerProcess;
use crate::switchboard::{Switchboard, SwitchboardConfig};
use crate::target::Target;
use crate::workloads::RunOutcome;

/// The tenant whose matrix and health are timed.
const BIG: &str = "t-big";
const SMALL: [&str; 3] = ["t-2", "t-3", "t-4"];
/// (event type, index of the publishing app in `publishers`).
const TYPES: [(&str, usize); 3] = [
    ("user.created", 0),
    ("order.placed", 0),
    ("invoice.paid", 1),
];
const BATCH: u64 = 1000;
const PUBLISHERS: usize = 8;
/// Timed calls per endpoint.
const CALLS: usize = 50;
const MIB: f64 = 1024.0 * 1024.0;

/// The timed endpoints: (path, figure names for first call, p50, p99).
const ENDPOINTS: [(&str, [&str; 3]); 8] = [
    (
        "/v1/tenants/t-big/matrix?window=24h",
        [
            "matrix 24h: first call",
            "matrix 24h: p50",
            "matrix 24h: p99",
        ],
    ),
    (
        "/v1/tenants/t-big/matrix?window=all",
        [
            "matrix all: first call",
            "matrix all: p50",
            "matrix all: p99",
        ],
    ),
    (
        "/v1/tenants/t-big/health",
        ["health: first call", "health: p50", "health: p99"],
    ),
    (
        "/v1/matrix?window=24h",
        [
            "suite matrix 24h: first call",
            "suite matrix 24h: p50",
            "suite matrix 24h: p99",
        ],
    ),
    (
        "/v1/matrix?window=all",
        [
            "suite matrix all: first call",
            "suite matrix all: p50",
            "suite matrix all: p99",
        ],
    ),
    (
        "/v1/tenants/t-big/unacknowledged?limit=50",
        [
            "unacknowledged: first call",
            "unacknowledged: p50",
            "unacknowledged: p99",
        ],
    ),
    (
        "/v1/dead-letters?target=billing&limit=50",
        [
            "dead letters of billing: first call",
            "dead letters of billing: p50",
            "dead letters of billing: p99",
        ],
    ),
    (
        // A target with no dead letter among hundreds of thousands of deliveries.
        "/v1/dead-letters?target=hr&limit=50",
        [
            "dead letters of hr (none): first call",
            "dead letters of hr (none): p50",
            "dead letters of hr (none): p99",
        ],
    ),
];

pub async fn run(config: &SwitchboardConfig, options: &Options) -> Result<Outcome> {
    let stages: &[u64] = if options.quick {
        &[1_000_000]
    } else {
        &[1_000_000, 10_000_000]
    };
    let mut report = new_report(
        "switchboard: matrix and health of a tenant with millions of events",
        Switchboard::durability(config),
        json!({
            "stages_events_of_timed_tenant": stages,
            "tenants": "t-big gets 9 batches in 10, t-2..t-4 the rest",
            "channels_per_tenant": ["crm→hr", "crm→billing", "billing→mail"],
            "load": { "batch": BATCH, "publishers": PUBLISHERS },
            "traffic_after_each_stage": "hr acks 5% of the stage's events; billing nacks 500 for good \
                and 500 with a 1 h retry; mail leases 1000 for 1 h",
            "timed_calls_per_endpoint": CALLS,
            "client": "one call at a time, admin key, time until the JSON body is read and parsed",
        }),
        1,
    );

    let (server, admin) = start_node(config, None).await?;
    let crm = super::app(&admin, "crm", &[]).await?;
    let billing = super::app(&admin, "billing", &["order.placed"]).await?;
    let hr = super::app(&admin, "hr", &["user.created"]).await?;
    let mail = super::app(&admin, "mail", &["invoice.paid"]).await?;
    let publishers = [crm, billing.clone()];
    let tenants: Vec<&str> = std::iter::once(BIG).chain(SMALL).collect();
    // bodies[tenant][type]
    let bodies: Vec<Vec<Arc<Vec<u8>>>> = tenants
        .iter()
        .map(|t| {
            TYPES
                .iter()
                .map(|(ty, _)| events_body(ty, t, BATCH as usize))
                .collect()
        })
        .collect();

    let mut summary = Vec::new();
    let mut batches_done = 0u64;
    for &stage in stages {
        let title = format!("{} stored events in {BIG}", label(stage));
        // Nine batches in ten are the big tenant's.
        let mut batches = batches_done;
        while big_events(batches) < stage {
            batches += 1;
        }
        let (from, to) = (batches_done, batches);
        let plan = {
            let (bodies, publishers) = (bodies.clone(), publishers.clone());
            Arc::new(move |i: u64| {
                let i = from + i;
                let tenant = if i % 10 == 9 {
                    1 + ((i / 10) % 3) as usize
                } else {
                    0
                };
                let kind = (i % 3) as usize;
                Job {
                    client: publishers[TYPES[kind].1].clone(),
                    body: bodies[tenant][kind].clone(),
                    events: BATCH,
                }
            })
        };
        eprintln!(
            "loading batches {from}..{to} ({} events)",
            (to - from) * BATCH
        );
        let (events, rate) = publish_all(plan, to - from, PUBLISHERS).await?;
        batches_done = to;
        eprintln!("  loaded {events} events at {rate:.0} events/s; adding acks and failures");
        let mut outcome = RunOutcome::default();
        measure(&mut outcome, "load rate (batch 1000)", "events/s", rate);
        measure(
            &mut outcome,
            "events stored (all tenants)",
            "events",
            (batches_done * BATCH) as f64,
        );
        measure(
            &mut outcome,
            "events stored (t-big)",
            "events",
            big_events(batches_done) as f64,
        );
        traffic(&hr, &billing, &mail, events / 20).await?;

        let published: u64 = admin
            .matrix(BIG, Some("all"))
            .await?
            .channels
            .iter()
            .map(|row| row.published)
            .sum();
        if published != big_events(batches_done) {
            outcome.warnings.push(format!(
                "the matrix of {BIG} says {published} published, {} were",
                big_events(batches_done)
            ));
        }
        eprintln!("  timing the endpoints");
        for (path, [first_name, p50_name, p99_name]) in ENDPOINTS {
            let (first, times) = time_gets(&admin, path, CALLS).await?;
            measure(&mut outcome, first_name, "ms", first);
            measure(&mut outcome, p50_name, "ms", ms_quantile(&times, 0.50));
            measure(&mut outcome, p99_name, "ms", ms_quantile(&times, 0.99));
        }
        let footprint = footprint_of(&server);
        measure(&mut outcome, "data dir on disk", "MiB", footprint.0 / MIB);
        measure(&mut outcome, "server RSS", "MiB", footprint.1 / MIB);
        measure(&mut outcome, "server peak RSS", "MiB", footprint.2 / MIB);
        outcome.warnings.extend(
            server
                .warnings()
                .into_iter()
                .map(|w| format!("server log: {w}")),
        );
        report.add_run(&title, 1, outcome);
        for (path, [_, p50_name, p99_name]) in ENDPOINTS {
            if let Some((p50, p99)) =
                median_of(&report, &title, p50_name).zip(median_of(&report, &title, p99_name))
            {
                summary.push(format!(
                    "{title}: GET {path}: p50 {p50:.1} ms, p99 {p99:.1} ms (goal < 50 ms: {})",
                    if p99 < 50.0 { "met" } else { "NOT met" }
                ));
            }
        }
    }
    tokio::task::spawn_blocking(move || server.stop()).await??;
    Ok((report, summary))
}

/// Events of the big tenant after `batches` batches (nine in ten).
fn big_events(batches: u64) -> u64 {
    (batches - batches / 10) * BATCH
}

fn label(events: u64) -> String {
    if events >= 1_000_000 && events.is_multiple_of(1_000_000) {
        format!("{}M", events / 1_000_000)
    } else {
        events.to_string()
    }
}

/// Acks `acks` deliveries of `hr`; `billing` nacks 500 for good and 500 with a 1 h retry;
/// `mail` leases 1000 for an hour.
async fn traffic(hr: &Client, billing: &Client, mail: &Client, acks: u64) -> Result<()> {
    let mut acked = 0;
    while acked < acks {
        let max = (acks - acked).min(1000) as u32;
        let deliveries = hr.consume(&lease(max)).await?;
        if deliveries.is_empty() {
            bail!("hr has nothing left to ack after {acked}");
        }
        let batch: Vec<Ack> = deliveries
            .iter()
            .map(|d| Ack {
                delivery_id: d.delivery_id.clone(),
                attempt: Some(d.attempt),
                data: None,
            })
            .collect();
        acked += hr.ack(&batch).await?;
    }
    let deliveries = billing.consume(&lease(1000)).await?;
    for (i, d) in deliveries.iter().enumerate() {
        let mut nack = Nack::of(d, "bench: simulated failure");
        if i % 2 == 0 {
            nack.permanent = true;
        } else {
            nack.retry_in_ms = Some(3_600_000);
        }
        billing.nack(&nack).await?;
    }
    mail.consume(&lease(1000)).await?;
    Ok(())
}

fn lease(max: u32) -> ConsumeRequest {
    ConsumeRequest {
        max,
        wait_ms: 0,
        lease_ms: 3_600_000,
    }
}

/// Data dir size, RSS and peak RSS of a server, in bytes (NaN when unreadable).
fn footprint_of(server: &ServerProcess) -> (f64, f64, f64) {
    let disk = server.disk_bytes().map_or(f64::NAN, |b| b as f64);
    let memory = server.memory().ok();
    (
        disk,
        memory.map_or(f64::NAN, |m| m.rss as f64),
        memory.map_or(f64::NAN, |m| m.peak_rss as f64),
    )
}

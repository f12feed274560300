//! Scenario `lease-expiry` (issue 3): what expiring 100,000 leases costs the server.
//!
//! 100,000 events go to two apps, `expiry-a` and `expiry-b` (backoff 10 min, so an expired
//! delivery stays pending and is never handed out again during the run).
//! - Burst: `expiry-a` leases all 100,000 (1000 per consume, 20 s leases); the server is then
//!   paused (SIGSTOP) until every lease deadline has passed and resumed (SIGCONT), so all
//!   100,000 are due at once; the time from the resume until the matrix shows none in flight
//!   is the cost of the expiry, measured while 4 publishers (batch 100, another app) keep
//!   publishing; their rate during the expiry is compared with their rate just before.
//! - Natural: `expiry-b` leases all 100,000 with 1 s leases, nothing paused; the figure is the
//!   time from the last lease's deadline until none is in flight.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;
use switchboard_client::{Client, ConsumeRequest, Method, NewApp};
use tokio::task::JoinSet;

use super::{
    Job, Options, Outcome, events_body, in_flight, measure, median_of, new_report, publish_all,
    start_node,
};
use crate::server::ServerProcess;
use crate::switchboard::{Switchboard, SwitchboardConfig};
use crate::target::{TENANT, Target};
use crate::workloads::RunOutcome;

/// Leases expired.
const LEASES: u64 = 100_000;
/// Lease of the burst phase: long enough to lease everything before the first deadline.
const BURST_LEASE_MS: u64 = 20_000;
/// Lease of the natural phase.
const NATURAL_LEASE_MS: u64 = 1_000;
/// How often the matrix is asked whether leases are still in flight.
const POLL: Duration = Duration::from_millis(10);
/// Concurrent publishers of the background publish load, and their batch.
const BACKGROUND_PUBLISHERS: usize = 4;
const BACKGROUND_BATCH: usize = 100;
/// How long the background publish rate is measured before the expiry.
const BASELINE: Duration = Duration::from_secs(3);
/// Most a phase may take before the run is given up.
const LIMIT: Duration = Duration::from_secs(120);

const WORKLOAD: &str = "expire 100,000 leases";

pub async fn run(config: &SwitchboardConfig, options: &Options) -> Result<Outcome> {
    let mut report = new_report(
        "switchboard: lease expiry",
        Switchboard::durability(config),
        json!({
            "leases": LEASES,
            "consume_max": 1000,
            "burst": {
                "lease_ms": BURST_LEASE_MS,
                "how": "lease all, SIGSTOP the server until every deadline passed, SIGCONT; \
                    time until the matrix shows 0 in flight (polled every 10 ms)",
                "background_publish": { "publishers": BACKGROUND_PUBLISHERS, "batch": BACKGROUND_BATCH,
                    "baseline_s": BASELINE.as_secs_f64() },
            },
            "natural": { "lease_ms": NATURAL_LEASE_MS, "how": "lease all, wait; time from the \
                last lease's deadline until 0 in flight" },
            "backoff": "10m (expired deliveries stay pending)",
        }),
        options.runs,
    );
    for run in 1..=options.runs {
        eprintln!("running {WORKLOAD}, run {run}/{}", options.runs);
        match one_run(config).await {
            Ok(outcome) => report.add_run(WORKLOAD, run, outcome),
            Err(e) => {
                eprintln!("  failed: {e:#}");
                report.add_failure(WORKLOAD, run, &e);
            }
        }
    }
    let mut summary = Vec::new();
    if let Some(rate) = median_of(&report, WORKLOAD, "burst: expiries/s") {
        let ms = median_of(&report, WORKLOAD, "burst: resume → none in flight").unwrap_or(0.0);
        summary.push(format!(
            "expiring {LEASES} leases due at once: {ms:.0} ms, {rate:.0} expiries/s (medians)"
        ));
    }
    if let Some(ratio) = median_of(&report, WORKLOAD, "burst: publish rate during / before") {
        summary.push(format!(
            "concurrent publish (batch {BACKGROUND_BATCH}) during the expiry: {:.0}% of its \
             rate before",
            ratio * 100.0
        ));
    }
    Ok((report, summary))
}

async fn one_run(config: &SwitchboardConfig) -> Result<RunOutcome> {
    let (server, admin) = start_node(config, None).await?;
    let producer = super::app(&admin, "producer", &[]).await?;
    let a = patient_app(&admin, "expiry-a", "user.created").await?;
    let b = patient_app(&admin, "expiry-b", "user.created").await?;
    super::app(&admin, "other", &["other.event"]).await?;

    let body = events_body("user.created", TENANT, 1000);
    let load = producer.clone();
    let plan = Arc::new(move |_| Job {
        client: load.clone(),
        body: body.clone(),
        events: 1000,
    });
    publish_all(plan, LEASES / 1000, 8).await?;

    let mut outcome = RunOutcome::default();
    // Burst.
    let (leasing, last_lease) = lease_all(&a, BURST_LEASE_MS).await?;
    if leasing.as_millis() as u64 + 2_000 > BURST_LEASE_MS {
        outcome.warnings.push(format!(
            "leasing took {leasing:?}: some leases expired before the pause"
        ));
    }
    measure(&mut outcome, "leasing 100,000", "s", leasing.as_secs_f64());
    measure(
        &mut outcome,
        "leasing rate",
        "deliveries/s",
        LEASES as f64 / leasing.as_secs_f64(),
    );
    let background = Background::start(&producer);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = background.rate_over(BASELINE).await;
    signal(&server, "STOP")?;
    let deadline = last_lease + Duration::from_millis(BURST_LEASE_MS);
    tokio::time::sleep_until((deadline + Duration::from_millis(500)).into()).await;
    let cpu_from = server.cpu_seconds().ok();
    let count_from = background.count();
    signal(&server, "CONT")?;
    let resumed = Instant::now();
    wait_none_in_flight(&admin, "expiry-a").await?;
    let took = resumed.elapsed();
    let during = (background.count() - count_from) as f64 / took.as_secs_f64();
    let cpu = server.cpu_seconds().ok().zip(cpu_from).map(|(b, a)| b - a);
    background.stop().await?;
    measure(
        &mut outcome,
        "burst: resume → none in flight",
        "ms",
        took.as_secs_f64() * 1e3,
    );
    measure(
        &mut outcome,
        "burst: expiries/s",
        "leases/s",
        LEASES as f64 / took.as_secs_f64(),
    );
    if let Some(cpu) = cpu {
        measure(&mut outcome, "burst: server CPU", "s", cpu);
    }
    measure(
        &mut outcome,
        "burst: publish rate before",
        "events/s",
        before,
    );
    measure(
        &mut outcome,
        "burst: publish rate during",
        "events/s",
        during,
    );
    measure(
        &mut outcome,
        "burst: publish rate during / before",
        "ratio",
        during / before,
    );

    // Natural.
    let started = Instant::now();
    let (leasing, last_reply) = lease_all(&b, NATURAL_LEASE_MS).await?;
    wait_none_in_flight(&admin, "expiry-b").await?;
    let done = Instant::now();
    let last_deadline = last_reply + Duration::from_millis(NATURAL_LEASE_MS);
    measure(
        &mut outcome,
        "natural: leasing 100,000",
        "s",
        leasing.as_secs_f64(),
    );
    measure(
        &mut outcome,
        "natural: last deadline → none in flight",
        "ms",
        done.saturating_duration_since(last_deadline).as_secs_f64() * 1e3,
    );
    measure(
        &mut outcome,
        "natural: first lease → none in flight",
        "s",
        done.duration_since(started).as_secs_f64(),
    );

    let memory = server.memory().ok();
    if let Some(m) = memory {
        measure(
            &mut outcome,
            "server peak RSS",
            "MiB",
            m.peak_rss as f64 / 1048576.0,
        );
    }
    outcome.warnings.extend(
        server
            .warnings()
            .into_iter()
            .map(|w| format!("server log: {w}")),
    );
    tokio::task::spawn_blocking(move || server.stop()).await??;
    Ok(outcome)
}

/// Registers an app whose failed deliveries wait 10 minutes before they are handed out again.
async fn patient_app(admin: &Client, id: &str, pattern: &str) -> Result<Client> {
    let mut app = NewApp::new(id, [pattern]);
    app.backoff = Some("10m".to_owned());
    let key = admin
        .create_app(&app)
        .await
        .with_context(|| format!("registering {id}"))?
        .api_key;
    Ok(admin.with_key(key))
}

/// Leases all [`LEASES`] deliveries of the app of `client` with 2 consumers, 1000 per call;
/// returns how long it took and when the last lease was answered.
async fn lease_all(client: &Client, lease_ms: u64) -> Result<(Duration, Instant)> {
    let leased = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut consumers = JoinSet::new();
    for _ in 0..2 {
        let (client, leased) = (client.clone(), leased.clone());
        consumers.spawn(async move {
            let request = ConsumeRequest {
                max: 1000,
                wait_ms: 0,
                lease_ms,
            };
            let mut last = Instant::now();
            while leased.load(Ordering::Relaxed) < LEASES {
                if started.elapsed() > LIMIT {
                    bail!("leased only {leased:?} of {LEASES} within {LIMIT:?}");
                }
                let deliveries = client.consume(&request).await?;
                if deliveries.is_empty() {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                last = Instant::now();
                leased.fetch_add(deliveries.len() as u64, Ordering::Relaxed);
            }
            Ok::<Instant, anyhow::Error>(last)
        });
    }
    let mut last = started;
    while let Some(joined) = consumers.join_next().await {
        last = last.max(joined??);
    }
    Ok((last.duration_since(started), last))
}

/// Polls the matrix until `target` has nothing in flight.
async fn wait_none_in_flight(admin: &Client, target: &str) -> Result<()> {
    let started = Instant::now();
    while in_flight(admin, TENANT, target).await? > 0 {
        if started.elapsed() > LIMIT {
            bail!("{target} still has leases in flight after {LIMIT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// `kill -<sig>` of the server.
fn signal(server: &ServerProcess, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([format!("-{sig}"), server.pid().to_string()])
        .status()
        .context("cannot run kill")?;
    if !status.success() {
        bail!("kill -{sig} failed: {status}");
    }
    Ok(())
}

/// A steady publish load (another app's events) running in the background.
struct Background {
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: JoinSet<Result<()>>,
}

impl Background {
    fn start(producer: &Client) -> Background {
        let body = events_body("other.event", TENANT, BACKGROUND_BATCH);
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        for _ in 0..BACKGROUND_PUBLISHERS {
            let (client, body) = (producer.clone(), body.clone());
            let (accepted, stop) = (accepted.clone(), stop.clone());
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (status, reply) = client
                        .raw(Method::POST, "/v1/events", Some(body.to_vec()))
                        .await?;
                    if !(200..300).contains(&status) {
                        bail!("background publish answered {status}: {reply}");
                    }
                    accepted.fetch_add(BACKGROUND_BATCH as u64, Ordering::Relaxed);
                }
                Ok(())
            });
        }
        Background {
            accepted,
            stop,
            tasks,
        }
    }

    fn count(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    async fn rate_over(&self, window: Duration) -> f64 {
        let (from, started) = (self.count(), Instant::now());
        tokio::time::sleep(window).await;
        (self.count() - from) as f64 / started.elapsed().as_secs_f64()
    }

    async fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(joined) = self.tasks.join_next().await {
            joined??;
        }
        Ok(())
    }
}

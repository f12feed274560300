//! The scenarios of issues 3–5, each run with `--scenario NAME`: figures the standard workloads
//! cannot give (a backlog on another app, a burst of lease expiries, the matrix over millions of
//! stored events, the cost of the counters against the pre-counter build, the Redis backend).
//! Each prints the command, the load average before and after, and a report table like the
//! standard run. They set up the server over HTTP only, like any user would.

mod backlog;
mod counter_cost;
mod lease_expiry;
mod matrix;
mod redis;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use switchboard_client::{Client, Method};
use tokio::task::JoinSet;

use crate::report::{Machine, Report};
use crate::stats::quantile_sorted;
use crate::switchboard::{SwitchboardConfig, start_node};
use crate::workloads::{Measure, RunOutcome, Settings, event_data};

/// The scenarios, by the name `--scenario` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Issue 3: delivery to a healthy app while another has a backlog of 1,000,000 pending.
    Backlog,
    /// Issue 3: the cost of expiring 100,000 leases at once.
    LeaseExpiry,
    /// Issue 4: matrix and health response times at 1M and 10M stored events.
    Matrix,
    /// Issue 4: publish/ack throughput with the counters against the pre-counter binary.
    CounterCost,
    /// Issue 5: the standard workloads on Redis, one node and two nodes, against the embedded store.
    Redis,
}

/// What the command line says beyond the target.
#[derive(Debug)]
pub struct Options {
    pub quick: bool,
    pub runs: usize,
    pub json: Option<PathBuf>,
    pub baseline_bin: Option<PathBuf>,
}

/// Runs `scenario`, prints its report and writes the JSON when asked.
pub async fn run(
    scenario: Scenario,
    config: &SwitchboardConfig,
    settings: &Settings,
    options: &Options,
) -> Result<ExitCode> {
    println!("command:    {}", command_line());
    println!("load avg:   {} (before)", load_average());
    let (report, summary) = match scenario {
        Scenario::Backlog => backlog::run(config, settings, options).await?,
        Scenario::LeaseExpiry => lease_expiry::run(config, options).await?,
        Scenario::Matrix => matrix::run(config, options).await?,
        Scenario::CounterCost => counter_cost::run(config, settings, options).await?,
        Scenario::Redis => redis::run(config, settings, options).await?,
    };
    print!("{}", report.table());
    for line in summary {
        println!("{line}");
    }
    println!("load avg:   {} (after)", load_average());
    if let Some(path) = &options.json {
        report.write_json(path)?;
        println!("wrote {}", path.display());
    }
    Ok(if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A scenario's report and the lines that sum it up (comparisons against the goals).
type Outcome = (Report, Vec<String>);

/// A report for a scenario, its header printed.
fn new_report(
    target: &str,
    durability: String,
    settings: serde_json::Value,
    runs: usize,
) -> Report {
    let report = Report::new(target, durability, Machine::detect(), settings, runs);
    println!("{}", report.header());
    report
}

/// The command line as typed (program and arguments).
fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// The 1, 5 and 15 minute load averages, as `uptime` shows them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// Adds one figure to a run's outcome.
fn measure(outcome: &mut RunOutcome, name: &'static str, unit: &'static str, value: f64) {
    outcome.measures.push(Measure { name, unit, value });
}

/// The median of the figure `name` of `workload` in `report`, when it has runs.
fn median_of(report: &Report, workload: &str, name: &str) -> Option<f64> {
    report
        .figures
        .iter()
        .find(|f| f.workload == workload && f.figure == name)
        .map(|f| f.median)
}

/// Registers app `id` subscribed to `patterns` and returns a client with its key.
async fn app(admin: &Client, id: &str, patterns: &[&str]) -> Result<Client> {
    let app = switchboard_client::NewApp::new(id, patterns.iter().copied());
    let key = admin
        .create_app(&app)
        .await
        .with_context(|| format!("registering app {id}"))?
        .api_key;
    Ok(admin.with_key(key))
}

/// A publish body of `count` events of `event_type` for `tenant` (200-byte data each).
fn events_body(event_type: &str, tenant: &str, count: usize) -> Arc<Vec<u8>> {
    let mut body = String::from(r#"{"events":["#);
    for i in 0..count {
        if i > 0 {
            body.push(',');
        }
        let data = event_data(i as u64, None);
        let _ = write!(
            body,
            r#"{{"type":"{event_type}","tenant":"{tenant}","data":{data}}}"#
        );
    }
    body.push_str("]}");
    Arc::new(body.into_bytes())
}

/// One publish request of a load: who sends it, the body, how many events it holds.
#[derive(Clone)]
struct Job {
    client: Client,
    body: Arc<Vec<u8>>,
    events: u64,
}

/// Sends `batches` publishes from `concurrency` tasks, batch `i` being `plan(i)`; a failed
/// publish is retried (a few times). Returns the events stored and the rate.
async fn publish_all(
    plan: Arc<dyn Fn(u64) -> Job + Send + Sync>,
    batches: u64,
    concurrency: usize,
) -> Result<(u64, f64)> {
    let next = Arc::new(AtomicU64::new(0));
    let stored = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (plan, next, stored) = (plan.clone(), next.clone(), stored.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= batches {
                    return Ok::<(), anyhow::Error>(());
                }
                let job = plan(i);
                let mut failures = 0;
                loop {
                    let reply = job
                        .client
                        .raw(Method::POST, "/v1/events", Some(job.body.to_vec()))
                        .await;
                    match reply {
                        Ok((status, _)) if (200..300).contains(&status) => break,
                        Ok((status, reply)) if failures >= 5 => {
                            bail!("publish answered {status}: {reply}")
                        }
                        Err(e) if failures >= 5 => bail!("publish failed: {e}"),
                        _ => failures += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                stored.fetch_add(job.events, Ordering::Relaxed);
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    let events = stored.load(Ordering::Relaxed);
    Ok((events, events as f64 / started.elapsed().as_secs_f64()))
}

/// Times `calls` sequential GETs of `path` (after one untimed call) and returns the
/// milliseconds of the first call and the sorted nanoseconds of the timed ones. Any answer
/// but 200 is an error.
async fn time_gets(client: &Client, path: &str, calls: usize) -> Result<(f64, Vec<u64>)> {
    let get = || async {
        let started = Instant::now();
        let (status, reply) = client.raw(Method::GET, path, None).await?;
        if status != 200 {
            bail!("GET {path} answered {status}: {reply}");
        }
        Ok(started.elapsed().as_nanos() as u64)
    };
    let first = get().await? as f64 / 1e6;
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        times.push(get().await?);
    }
    times.sort_unstable();
    Ok((first, times))
}

/// The `q` quantile of sorted nanoseconds, in milliseconds.
fn ms_quantile(sorted: &[u64], q: f64) -> f64 {
    quantile_sorted(sorted, q).map_or(f64::NAN, |ns| ns as f64 / 1e6)
}

/// The deliveries of `target` in flight now in `tenant`, from the matrix (counters).
async fn in_flight(admin: &Client, tenant: &str, target: &str) -> Result<u64> {
    let matrix = admin.matrix(tenant, Some("1h")).await?;
    Ok(matrix
        .channels
        .iter()
        .filter(|row| row.target == target)
        .map(|row| row.in_flight)
        .sum())
}

/// The deliveries of `target` pending now in `tenant`, from the matrix (counters).
async fn pending(admin: &Client, tenant: &str, target: &str) -> Result<u64> {
    let matrix = admin.matrix(tenant, Some("all")).await?;
    Ok(matrix
        .channels
        .iter()
        .filter(|row| row.target == target)
        .map(|row| row.pending)
        .sum())
}

//! `switchboard-bench`: runs the workloads against a target (today switchboard itself, as the
//! release binary in a child process), several times each, and reports median and spread.
//!
//! Build both binaries, then run the bench from the same directory:
//!
//! ```text
//! cargo build --release -p switchboard -p switchboard-bench
//! target/release/switchboard-bench [--quick] [--runs N] [--json FILE]
//! target/release/switchboard-bench --scenario backlog|lease-expiry|matrix|counter-cost|redis
//! ```
//!
//! Adding a peer (Redis Streams, RabbitMQ, NATS) means implementing [`target::Target`] for it
//! and calling [`bench`] with it.

mod report;
mod scenarios;
mod server;
mod stats;
mod switchboard;
mod target;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Parser;
use serde_json::json;

use crate::report::{Machine, Report};
use crate::switchboard::{Switchboard, SwitchboardConfig};
use crate::target::Target;
use crate::workloads::{EVENT_DATA_BYTES, Settings, Workload, now_ns};

/// Throughput, latency and footprint of switchboard under fixed workloads.
#[derive(Parser)]
#[command(name = "switchboard-bench", version)]
struct Args {
    /// Shorter runs: 2 s publish windows, 20,000 events per full cycle, 2 s of latency.
    #[arg(long)]
    quick: bool,
    /// Runs per workload; the report gives the median and the min–max spread.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Also write every figure as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The switchboard binary [default: `switchboard` next to this executable].
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Where the servers' temporary data directories go (its filesystem decides what an
    /// fsync costs) [default: the system temp directory].
    #[arg(long, value_name = "DIR")]
    data_root: Option<PathBuf>,
    /// Run one scenario of BENCHMARKS.md instead of the standard workloads.
    #[arg(long, value_enum, value_name = "NAME")]
    scenario: Option<scenarios::Scenario>,
    /// The switchboard binary to compare with (scenario counter-cost: the pre-counter build).
    #[arg(long, value_name = "PATH")]
    baseline_bin: Option<PathBuf>,
}

/// The release server binary: `--server-bin`, else `switchboard` next to this executable.
fn server_binary(arg: Option<PathBuf>) -> Result<PathBuf> {
    let path = match arg {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("switchboard"),
    };
    if !path.is_file() {
        bail!(
            "the switchboard binary is not at {}.\nBuild it next to the bench first:\n  \
             cargo build --release -p switchboard -p switchboard-bench\n  \
             target/release/switchboard-bench\n(or pass --server-bin PATH)",
            path.display()
        );
    }
    Ok(path)
}

fn settings_json(s: &Settings, quick: bool) -> serde_json::Value {
    json!({
        "quick": quick,
        "event_data_bytes": EVENT_DATA_BYTES,
        "publish": {
            "publishers": s.publishers,
            "warmup_s": s.warmup.as_secs_f64(),
            "window_s": s.publish_window.as_secs_f64(),
        },
        "full_cycle": {
            "events": s.cycle_events,
            "publishers": s.cycle_publishers,
            "batch": s.cycle_batch,
            "consumers_per_target": s.consumers_per_sink,
            "consume_max": s.consume_max,
            "consume_wait_ms": s.consume_wait.as_millis() as u64,
        },
        "latency": {
            "rate_per_s": s.latency_rate,
            "window_s": s.latency_window.as_secs_f64(),
            "pacing": "tokio interval, MissedTickBehavior::Burst, one spawned publish per tick",
            "consume_max": s.consume_max,
            "consume_wait_ms": s.consume_wait.as_millis() as u64,
        },
    })
}

/// Runs every workload `runs` times against `T` and returns the report.
async fn bench<T: Target>(
    config: &T::Config,
    settings: &Settings,
    quick: bool,
    runs: usize,
) -> Report {
    let mut report = Report::new(
        T::NAME,
        T::durability(config),
        Machine::detect(),
        settings_json(settings, quick),
        runs,
    );
    println!("{}", report.header());
    let workloads = [
        Workload::Publish { batch: 1 },
        Workload::Publish { batch: 10 },
        Workload::Publish { batch: 100 },
        Workload::FullCycle { sinks: 1 },
        Workload::FullCycle { sinks: 3 },
        Workload::Latency,
    ];
    for workload in workloads {
        let title = workload.title(settings);
        for run in 1..=runs {
            eprintln!("running {title}, run {run}/{runs}");
            match workload.run::<T>(config, settings).await {
                Ok(outcome) => report.add_run(&title, run, outcome),
                Err(e) => {
                    eprintln!("  failed: {e:#}");
                    report.add_failure(&title, run, &e);
                }
            }
        }
    }
    report
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let args = Args::parse();
    now_ns(); // starts the clock that timestamps events
    let binary = match server_binary(args.server_bin) {
        Ok(binary) => binary,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let config = SwitchboardConfig {
        binary,
        data_root: args.data_root.unwrap_or_else(std::env::temp_dir),
    };
    let settings = Settings::new(args.quick);
    if let Some(scenario) = args.scenario {
        let options = scenarios::Options {
            quick: args.quick,
            runs: args.runs as usize,
            json: args.json,
            baseline_bin: args.baseline_bin,
        };
        return scenarios::run(scenario, &config, &settings, &options).await;
    }
    let report = bench::<Switchboard>(&config, &settings, args.quick, args.runs as usize).await;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        report.write_json(path)?;
        println!("wrote {}", path.display());
    }
    Ok(if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

//! `switchboard-bench`: runs the workloads against switchboard (the release binary in a child
//! process, on its embedded store and on a Redis of its own) and the peers users would pick
//! instead (Redis Streams, RabbitMQ, NATS JetStream), several times each, and reports median,
//! spread, the ratios and the durability each had.
//!
//! Build both binaries, then run the bench from the same directory:
//!
//! ```text
//! cargo build --release -p switchboard -p switchboard-bench
//! target/release/switchboard-bench [--quick] [--runs N] [--json FILE] [--only NAMES]
//! target/release/switchboard-bench --scenario backlog|lease-expiry|matrix|counter-cost|redis
//! ```
//!
//! Adding a peer means implementing [`target::Target`] for it (see `peers/`) and listing it in
//! `suite.rs`.

mod compare;
mod peers;
mod report;
mod scenarios;
mod server;
mod stats;
mod suite;
mod switchboard;
mod target;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Parser;

use crate::switchboard::SwitchboardConfig;
use crate::workloads::{Settings, now_ns};

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
    /// Write each latency run's per-event times (sent, received, acked) to a file in this
    /// directory, to read where a tail comes from (`scripts/latency-dump`).
    #[arg(long, value_name = "DIR")]
    latency_dump: Option<PathBuf>,
    /// Run one scenario of BENCHMARKS.md instead of the standard workloads.
    #[arg(long, value_enum, value_name = "NAME")]
    scenario: Option<scenarios::Scenario>,
    /// The switchboard binary to compare with (scenario counter-cost: the pre-counter build).
    #[arg(long, value_name = "PATH")]
    baseline_bin: Option<PathBuf>,
    #[command(flatten)]
    peers: suite::PeerArgs,
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
    let settings = Settings {
        latency_dump: args.latency_dump,
        ..Settings::new(args.quick)
    };
    if let Some(scenario) = args.scenario {
        let options = scenarios::Options {
            quick: args.quick,
            runs: args.runs as usize,
            json: args.json,
            baseline_bin: args.baseline_bin,
        };
        return scenarios::run(scenario, &config, &settings, &options).await;
    }
    let runs = args.runs as usize;
    suite::run(
        &config,
        &settings,
        &args.peers,
        args.quick,
        runs,
        args.json.as_deref(),
    )
    .await
}

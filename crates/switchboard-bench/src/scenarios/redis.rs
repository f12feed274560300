//! Scenario `redis` (issue 5): the standard workloads against the embedded store, against one
//! switchboard node on Redis, and against two nodes on the same Redis, with the ratios.
//!
//! Each run starts its own `redis-server` (free loopback port, temp dir under the data root,
//! `appendonly yes`, `appendfsync always`, no RDB snapshots: a 2xx means fsynced, as on the
//! embedded store) and its node(s) with `--store redis://…`. With two nodes every publish,
//! consume and ack goes to the next node in turn, so publishers and consumers are spread over
//! both and a delivery is often leased on one node and acked on the other.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;
use switchboard_client::{Client, NewApp};

use super::{Options, Outcome, measure, median_of, new_report, start_node};
use crate::peers::redis_server::{Fsync, RedisServer, version};
use crate::server::{ServerProcess, process_cpu_seconds, process_memory, process_written_bytes};
use crate::switchboard::{
    Batch, Delivery, Switchboard, SwitchboardConfig, acks_of, consume_request,
};
use crate::target::{EVENT_TYPE, Footprint, Target};
use crate::workloads::{RunOutcome, Settings, Workload};

/// How long a node may take to learn of the apps registered through another.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// The binary, where data goes, and how many nodes share the Redis.
pub struct RedisConfig {
    inner: SwitchboardConfig,
    nodes: usize,
}

/// A `redis-server` of the benchmark's own and `nodes` switchboard nodes on it.
pub struct RedisNodes {
    redis: RedisServer,
    nodes: Vec<ServerProcess>,
    /// publishers[node]
    publishers: Vec<Client>,
    /// sinks[sink][node]
    sinks: Vec<Vec<Client>>,
    next: AtomicUsize,
}

impl RedisNodes {
    /// The node for the next request, in turn.
    fn node(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len()
    }
}

impl Target for RedisNodes {
    type Config = RedisConfig;
    type Batch = Batch;
    type Delivery = Delivery;

    const NAME: &'static str = "switchboard on Redis";

    fn durability(config: &RedisConfig) -> String {
        format!(
            "{} switchboard node{} on one redis-server ({}), appendonly yes, appendfsync \
             always: each publish and ack is answered after Redis fsynced its AOF",
            config.nodes,
            if config.nodes == 1 { "" } else { "s" },
            version().unwrap_or_else(|| "Redis".to_owned())
        )
    }

    async fn start(config: &RedisConfig, sinks: usize) -> Result<RedisNodes> {
        let data_root = config.inner.data_root.clone();
        let redis =
            tokio::task::spawn_blocking(move || RedisServer::start(&data_root, Fsync::Always))
                .await??;
        let url = redis.url();
        let mut nodes = Vec::new();
        let mut admins = Vec::new();
        for _ in 0..config.nodes {
            let (node, admin) = start_node(&config.inner, Some(&url)).await?;
            nodes.push(node);
            admins.push(admin);
        }
        let publisher_key = admins[0]
            .create_app(&NewApp::new("bench-publisher", Vec::<String>::new()))
            .await?
            .api_key;
        let mut sink_keys = Vec::new();
        for i in 1..=sinks {
            let key = admins[0]
                .create_app(&NewApp::new(format!("bench-sink-{i}"), [EVENT_TYPE]))
                .await?
                .api_key;
            sink_keys.push(key);
        }
        // Every node must know every app before the workload starts.
        for admin in &admins {
            for key in std::iter::once(&publisher_key).chain(&sink_keys) {
                wait_known(&admin.with_key(key)).await?;
            }
        }
        Ok(RedisNodes {
            redis,
            publishers: admins.iter().map(|a| a.with_key(&publisher_key)).collect(),
            sinks: sink_keys
                .iter()
                .map(|key| admins.iter().map(|a| a.with_key(key)).collect())
                .collect(),
            nodes,
            next: AtomicUsize::new(0),
        })
    }

    fn batch(&self, data: &[&str]) -> Result<Batch> {
        Batch::new(data)
    }

    async fn publish(&self, batch: &Batch) -> Result<usize> {
        batch.publish(&self.publishers[self.node()]).await
    }

    async fn consume(&self, sink: usize, max: u32, wait: Duration) -> Result<Vec<Delivery>> {
        let request = consume_request(max, wait);
        Ok(self.sinks[sink][self.node()].consume_as(&request).await?)
    }

    async fn ack(&self, sink: usize, deliveries: Vec<Delivery>) -> Result<u64> {
        Ok(self.sinks[sink][self.node()]
            .ack(&acks_of(deliveries))
            .await?)
    }

    fn sent_ns(delivery: &Delivery) -> Option<u64> {
        Switchboard::sent_ns(delivery)
    }

    /// Memory and CPU of the nodes and redis-server together; disk is Redis' directory.
    fn footprint(&self) -> Footprint {
        let mut f = self.redis.footprint();
        for pid in self.nodes.iter().map(ServerProcess::pid) {
            let memory = process_memory(pid).ok();
            let cpu = process_cpu_seconds(&format!("/proc/{pid}/stat")).ok();
            let written = process_written_bytes(pid).ok();
            f.peak_rss = f.peak_rss.zip(memory).map(|(a, m)| a + m.peak_rss);
            f.rss = f.rss.zip(memory).map(|(a, m)| a + m.rss);
            f.cpu_seconds = f.cpu_seconds.zip(cpu).map(|(a, c)| a + c);
            f.written = f.written.zip(written).map(|(a, w)| a + w);
        }
        f
    }

    fn warnings(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(ServerProcess::warnings)
            .collect()
    }

    async fn stop(self) -> Result<()> {
        let RedisNodes { redis, nodes, .. } = self;
        for node in nodes {
            tokio::task::spawn_blocking(move || node.stop()).await??;
        }
        drop(redis);
        Ok(())
    }
}

/// Waits until a node accepts `client`'s key (it learns of new apps through Redis pub/sub).
async fn wait_known(client: &Client) -> Result<()> {
    let started = Instant::now();
    loop {
        match client.consume(&consume_request(1, Duration::ZERO)).await {
            Ok(d) if d.is_empty() => return Ok(()),
            Ok(_) => bail!("a fresh app got a delivery"),
            Err(e) if started.elapsed() > SYNC_TIMEOUT => {
                bail!("a node did not learn of an app within {SYNC_TIMEOUT:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The figure compared for each workload.
fn compared(workload: &Workload) -> &'static str {
    match workload {
        Workload::Publish { .. } => "throughput",
        Workload::FullCycle { .. } => "events acked by every target",
        Workload::Latency => "publish→ack p99",
    }
}

pub async fn run(config: &SwitchboardConfig, s: &Settings, options: &Options) -> Result<Outcome> {
    let one = RedisConfig {
        inner: config.clone(),
        nodes: 1,
    };
    let two = RedisConfig {
        inner: config.clone(),
        nodes: 2,
    };
    let mut report = new_report(
        "switchboard: embedded store vs Redis (1 node, 2 nodes)",
        format!(
            "embedded: {}\nredis:      {}",
            Switchboard::durability(config),
            RedisNodes::durability(&one)
        ),
        json!({
            "quick": options.quick,
            "order": "per run and workload: embedded, redis 1 node, redis 2 nodes",
            "two_nodes": "each publish, consume and ack goes to the next node in turn",
            "footprint_on_redis": "RSS and CPU are the nodes' and redis-server's together; disk is Redis' AOF",
            "publish": { "publishers": s.publishers, "window_s": s.publish_window.as_secs_f64() },
            "full_cycle": { "events": s.cycle_events, "publishers": s.cycle_publishers,
                "batch": s.cycle_batch, "consumers_per_target": s.consumers_per_sink },
            "latency": { "rate_per_s": s.latency_rate, "window_s": s.latency_window.as_secs_f64() },
        }),
        options.runs,
    );
    let workloads = [
        Workload::Publish { batch: 1 },
        Workload::Publish { batch: 10 },
        Workload::Publish { batch: 100 },
        Workload::FullCycle { sinks: 1 },
        Workload::FullCycle { sinks: 3 },
        Workload::Latency,
    ];
    const LABELS: [&str; 3] = ["embedded", "redis, 1 node", "redis, 2 nodes"];
    for run in 1..=options.runs {
        for workload in workloads {
            let base = workload.title(s);
            let mut outcomes = Vec::new();
            for label in LABELS {
                eprintln!("running {base} [{label}], run {run}/{}", options.runs);
                outcomes.push(match label {
                    "embedded" => workload.run::<Switchboard>(config, s).await,
                    "redis, 1 node" => workload.run::<RedisNodes>(&one, s).await,
                    _ => workload.run::<RedisNodes>(&two, s).await,
                });
            }
            for (label, outcome) in LABELS.into_iter().zip(outcomes) {
                let title = format!("{base} [{label}]");
                match outcome {
                    Ok(outcome) => report.add_run(&title, run, outcome),
                    Err(e) => {
                        eprintln!("  failed: {e:#}");
                        report.add_failure(&title, run, &e);
                    }
                }
            }
        }
    }
    let mut summary = Vec::new();
    for workload in workloads {
        let base = workload.title(s);
        let figure = compared(&workload);
        let value = |label: &str| median_of(&report, &format!("{base} [{label}]"), figure);
        let (embedded, r1, r2) = (value(LABELS[0]), value(LABELS[1]), value(LABELS[2]));
        let mut outcome = RunOutcome::default();
        if let Some((e, r1)) = embedded.zip(r1) {
            measure(&mut outcome, "redis 1 node / embedded", "ratio", r1 / e);
        }
        if let Some((e, r2)) = embedded.zip(r2) {
            measure(&mut outcome, "redis 2 nodes / embedded", "ratio", r2 / e);
        }
        if let Some((r1, r2)) = r1.zip(r2) {
            measure(&mut outcome, "redis 2 nodes / 1 node", "ratio", r2 / r1);
        }
        let fmt = |v: Option<f64>| v.map_or("failed".to_owned(), |v| format!("{v:.1}"));
        summary.push(format!(
            "{base}: {figure} (medians): embedded {}, redis 1 node {}, redis 2 nodes {}",
            fmt(embedded),
            fmt(r1),
            fmt(r2)
        ));
        if !outcome.measures.is_empty() {
            report.add_run(&format!("{base}: {figure}, ratios of medians"), 1, outcome);
        }
    }
    Ok((report, summary))
}

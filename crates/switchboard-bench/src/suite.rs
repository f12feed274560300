//! The standard run (issue 7): the same workloads against switchboard (embedded store and
//! Redis) and the peers users would pick instead (Redis Streams with either fsync policy,
//! RabbitMQ, NATS JetStream), then each target's table and the side-by-side comparison.
//!
//! Runs are interleaved: for each workload, run 1 of every target, then run 2 of every target,
//! and so on, so a burst of load from elsewhere on the machine lands on all targets alike
//! rather than on one. A peer that is not installed or not reachable is reported as skipped.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use serde_json::json;

use crate::compare::{Better, Durability, Guarantee, KeyFigure, Suite, TargetResult, load_average};
use crate::peers::nats::{self, Nats, NatsConfig};
use crate::peers::rabbitmq::{self, QueueType, RabbitMq, RabbitMqConfig};
use crate::peers::redis_server::{self, Fsync};
use crate::peers::redis_streams::{RedisStreams, RedisStreamsConfig};
use crate::peers::switchboard_redis::SwitchboardRedis;
use crate::report::{Machine, Report};
use crate::switchboard::{Switchboard, SwitchboardConfig};
use crate::target::Target;
use crate::workloads::{EVENT_DATA_BYTES, RunOutcome, Settings, Workload};

/// The rates of the latency workload, events per second.
pub const LATENCY_RATES: [u32; 3] = [100, 1_000, 10_000];

/// Which targets to run and where the peers are.
#[derive(Debug, clap::Args)]
pub struct PeerArgs {
    /// Only these targets, comma-separated: switchboard, switchboard-redis,
    /// redis-streams-always, redis-streams-everysec (redis-streams: both), rabbitmq,
    /// nats-jetstream [default: all].
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Only these workloads, comma-separated: publish-1, publish-10, publish-100, cycle-1,
    /// cycle-3, latency-100, latency-1000, latency-10000 [default: all].
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// The RabbitMQ broker (not started by the benchmark).
    #[arg(
        long,
        value_name = "URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub rabbitmq_url: String,
    /// The kind of durable queue RabbitMQ gets per target.
    #[arg(long, value_enum, value_name = "TYPE", default_value_t = QueueType::Quorum)]
    pub rabbitmq_queue: QueueType,
    /// The NATS server with JetStream (not started by the benchmark).
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
}

/// The targets, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id {
    Switchboard,
    SwitchboardRedis,
    RedisAlways,
    RedisEverysec,
    Rabbitmq,
    Nats,
}

const ALL: [Id; 6] = [
    Id::Switchboard,
    Id::SwitchboardRedis,
    Id::RedisAlways,
    Id::RedisEverysec,
    Id::Rabbitmq,
    Id::Nats,
];

/// The targets the ratios are taken against.
const BASES: [&str; 2] = [Switchboard::NAME, SwitchboardRedis::NAME];

/// Every target's configuration.
struct Configs {
    switchboard: SwitchboardConfig,
    redis_always: RedisStreamsConfig,
    redis_everysec: RedisStreamsConfig,
    rabbitmq: RabbitMqConfig,
    nats: NatsConfig,
}

impl Id {
    fn name(self) -> &'static str {
        match self {
            Id::Switchboard => Switchboard::NAME,
            Id::SwitchboardRedis => SwitchboardRedis::NAME,
            // One target type, two fsync policies.
            Id::RedisAlways => "redis-streams-always",
            Id::RedisEverysec => "redis-streams-everysec",
            Id::Rabbitmq => RabbitMq::NAME,
            Id::Nats => Nats::NAME,
        }
    }

    /// What its publish and ack replies meant.
    fn guarantee(self) -> Durability {
        use Guarantee::{FsyncBeforeReply, FsyncPerSecond, NoFsyncBeforeReply, NoReply};
        let (publish, ack) = match self {
            Id::Switchboard | Id::SwitchboardRedis | Id::RedisAlways => {
                (FsyncBeforeReply, FsyncBeforeReply)
            }
            Id::RedisEverysec => (FsyncPerSecond, FsyncPerSecond),
            Id::Rabbitmq => (FsyncBeforeReply, NoReply),
            Id::Nats => (NoFsyncBeforeReply, NoReply),
        };
        Durability { publish, ack }
    }

    fn durability(self, c: &Configs) -> String {
        match self {
            Id::Switchboard => Switchboard::durability(&c.switchboard),
            Id::SwitchboardRedis => SwitchboardRedis::durability(&c.switchboard),
            Id::RedisAlways => RedisStreams::durability(&c.redis_always),
            Id::RedisEverysec => RedisStreams::durability(&c.redis_everysec),
            Id::Rabbitmq => RabbitMq::durability(&c.rabbitmq),
            Id::Nats => Nats::durability(&c.nats),
        }
    }

    /// Why the report has no memory or bytes-to-storage figure for it, if it has none.
    fn footprint_note(self) -> Option<String> {
        matches!(self, Id::Rabbitmq | Id::Nats).then(|| {
            "the broker runs as a system service, not as the benchmark's child process".to_owned()
        })
    }

    /// `Err` says why the target cannot run here.
    async fn available(self, c: &Configs) -> Result<(), String> {
        match self {
            Id::Switchboard => Ok(()),
            Id::SwitchboardRedis | Id::RedisAlways | Id::RedisEverysec => {
                match redis_server::version() {
                    Some(_) => Ok(()),
                    None => {
                        Err("redis-server is not installed (apt-get install redis-server)".into())
                    }
                }
            }
            Id::Rabbitmq => rabbitmq::probe(&c.rabbitmq.url)
                .await
                .map_err(|e| format!("RabbitMQ is not reachable: {e:#}")),
            Id::Nats => nats::probe(&c.nats.url)
                .await
                .map(|_| ())
                .map_err(|e| format!("NATS JetStream is not reachable: {e:#}")),
        }
    }

    async fn run(self, workload: Workload, c: &Configs, s: &Settings) -> Result<RunOutcome> {
        match self {
            Id::Switchboard => workload.run::<Switchboard>(&c.switchboard, s).await,
            Id::SwitchboardRedis => workload.run::<SwitchboardRedis>(&c.switchboard, s).await,
            Id::RedisAlways => workload.run::<RedisStreams>(&c.redis_always, s).await,
            Id::RedisEverysec => workload.run::<RedisStreams>(&c.redis_everysec, s).await,
            Id::Rabbitmq => workload.run::<RabbitMq>(&c.rabbitmq, s).await,
            Id::Nats => workload.run::<Nats>(&c.nats, s).await,
        }
    }
}

/// The targets `--only` names (all when empty), in report order.
fn select(only: &[String]) -> Result<Vec<Id>> {
    if only.is_empty() {
        return Ok(ALL.to_vec());
    }
    let mut chosen = Vec::new();
    for name in only.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let ids: Vec<Id> = match name {
            "redis-streams" => vec![Id::RedisAlways, Id::RedisEverysec],
            "all" => ALL.to_vec(),
            _ => match ALL.iter().find(|id| id.name() == name) {
                Some(id) => vec![*id],
                None => bail!(
                    "--only: no target {name:?}; the targets are {}, redis-streams (both \
                     Redis fsync policies), all",
                    ALL.map(Id::name).join(", ")
                ),
            },
        };
        chosen.extend(ids);
    }
    Ok(ALL.into_iter().filter(|id| chosen.contains(id)).collect())
}

/// The workloads in run order, each with the settings it runs with.
fn workloads(settings: &Settings) -> Vec<(Workload, Settings)> {
    let mut list: Vec<(Workload, Settings)> = [
        Workload::Publish { batch: 1 },
        Workload::Publish { batch: 10 },
        Workload::Publish { batch: 100 },
        Workload::FullCycle { sinks: 1 },
        Workload::FullCycle { sinks: 3 },
    ]
    .into_iter()
    .map(|w| (w, settings.clone()))
    .collect();
    for rate in LATENCY_RATES {
        let s = Settings {
            latency_rate: rate,
            ..settings.clone()
        };
        list.push((Workload::Latency, s));
    }
    list
}

/// The short name `--workloads` selects a workload by.
fn short_name(w: &Workload, s: &Settings) -> String {
    match w {
        Workload::Publish { batch } => format!("publish-{batch}"),
        Workload::FullCycle { sinks } => format!("cycle-{sinks}"),
        Workload::Latency => format!("latency-{}", s.latency_rate),
    }
}

/// The workloads `--workloads` names, all when it names none.
fn select_workloads(
    list: Vec<(Workload, Settings)>,
    names: &[String],
) -> Result<Vec<(Workload, Settings)>> {
    if names.is_empty() {
        return Ok(list);
    }
    let known: Vec<String> = list.iter().map(|(w, s)| short_name(w, s)).collect();
    if let Some(unknown) = names.iter().find(|n| !known.contains(n)) {
        bail!(
            "--workloads: unknown workload {unknown}; use one of {}",
            known.join(", ")
        );
    }
    Ok(list
        .into_iter()
        .filter(|(w, s)| names.contains(&short_name(w, s)))
        .collect())
}

/// The figures put side by side, for the workloads as titled with their settings.
fn key_figures(list: &[(Workload, Settings)]) -> Vec<KeyFigure> {
    let mut keys = Vec::new();
    let mut push = |w: &Workload, s: &Settings, figure: &'static str, better: Better| {
        keys.push(KeyFigure {
            workload: w.title(s),
            figure,
            better,
            with_acks: !matches!(w, Workload::Publish { .. }),
        });
    };
    for (w, s) in list {
        match w {
            Workload::Publish { .. } => push(w, s, "throughput", Better::Higher),
            Workload::FullCycle { .. } => {
                push(w, s, "events acked by every target", Better::Higher)
            }
            Workload::Latency => {
                // Below the offered rate: the target could not keep up, its latency is queueing.
                push(w, s, "publishes completed", Better::Higher);
                for p in ["publish→ack p50", "publish→ack p99", "publish→ack p999"] {
                    push(w, s, p, Better::Lower);
                }
                // What each event's durability wrote: the fsyncs on the latency's path.
                push(w, s, "bytes to storage per event", Better::Lower);
            }
        }
    }
    // Memory per stored event: after the one-target cycle, every event is stored once.
    if let Some((w, s)) = list
        .iter()
        .find(|(w, _)| matches!(w, Workload::FullCycle { sinks: 1 }))
    {
        push(w, s, "RSS growth per 1M stored events", Better::Lower);
    }
    keys
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
            "rates_per_s": LATENCY_RATES,
            "window_s": s.latency_window.as_secs_f64(),
            "pacing": "tokio interval (1 ms timer resolution), MissedTickBehavior::Burst, one spawned publish per tick",
            "consume_max": s.consume_max,
            "consume_wait_ms": s.consume_wait.as_millis() as u64,
        },
        "peers": {
            "message_body": "the JSON envelope switchboard stores: type, tenant and the same data",
            "redis_streams": "one stream, a consumer group per target; XADD (a batch: a pipeline of XADDs), XREADGROUP BLOCK, XACK of the batch; acked entries stay in the stream",
            "rabbitmq": "a durable topic exchange, a durable queue per target, persistent messages, publisher confirms, prefetch 2000, manual acks (one basic.ack per message)",
            "nats_jetstream": "a file-storage stream, a durable pull consumer per target (explicit acks, max_ack_pending 20000), JetStream publish acks, one ack per message",
        },
    })
}

/// Runs the selected targets and prints and writes the results.
pub async fn run(
    config: &SwitchboardConfig,
    settings: &Settings,
    peers: &PeerArgs,
    quick: bool,
    runs: usize,
    json_path: Option<&Path>,
) -> Result<ExitCode> {
    let selected = select(&peers.only)?;
    let configs = Configs {
        switchboard: config.clone(),
        redis_always: RedisStreamsConfig {
            data_root: config.data_root.clone(),
            fsync: Fsync::Always,
        },
        redis_everysec: RedisStreamsConfig {
            data_root: config.data_root.clone(),
            fsync: Fsync::EverySec,
        },
        rabbitmq: RabbitMqConfig {
            url: peers.rabbitmq_url.clone(),
            queue_type: peers.rabbitmq_queue,
        },
        nats: NatsConfig {
            url: peers.nats_url.clone(),
        },
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let load_before = load_average();
    println!("command:  {command}\nload avg: {load_before} (before)");
    let list = select_workloads(workloads(settings), &peers.workloads)?;
    let settings_value = settings_json(settings, quick);

    // Who can run, and the report of each.
    let mut targets: Vec<(Id, TargetResult)> = Vec::new();
    for id in ALL {
        let skipped = if !selected.contains(&id) {
            Some("not selected (--only)".to_owned())
        } else {
            id.available(&configs).await.err()
        };
        if let Some(why) = &skipped {
            eprintln!("{}: skipped: {why}", id.name());
        }
        let report = skipped.is_none().then(|| {
            Report::new(
                id.name(),
                id.durability(&configs),
                Machine::detect(),
                settings_value.clone(),
                runs,
            )
        });
        targets.push((
            id,
            TargetResult {
                name: id.name(),
                selected: selected.contains(&id),
                guarantee: id.guarantee(),
                durability: id.durability(&configs),
                skipped,
                footprint_note: id.footprint_note(),
                report,
                load: Vec::new(),
            },
        ));
    }
    if targets.iter().all(|(_, t)| t.report.is_none()) {
        bail!("no target can run: see the reasons above");
    }

    for (workload, s) in &list {
        let title = workload.title(s);
        for run in 1..=runs {
            for (id, target) in targets.iter_mut() {
                let Some(report) = target.report.as_mut() else {
                    continue;
                };
                let load = load_average();
                eprintln!("{title}, run {run}/{runs}: {} (load {load})", id.name());
                match target.load.iter_mut().find(|(w, _)| *w == title) {
                    Some((_, loads)) => loads.push(load),
                    None => target.load.push((title.clone(), vec![load])),
                }
                match id.run(*workload, &configs, s).await {
                    Ok(outcome) => report.add_run(&title, run, outcome),
                    Err(e) => {
                        eprintln!("  failed: {e:#}");
                        report.add_failure(&title, run, &e);
                    }
                }
            }
        }
    }
    // A failed run may have left its queues or stream behind.
    if selected.contains(&Id::Rabbitmq) {
        rabbitmq::cleanup(&configs.rabbitmq.url).await;
    }
    if selected.contains(&Id::Nats) {
        nats::cleanup(&configs.nats.url).await;
    }

    for (_, target) in &targets {
        if let Some(report) = &target.report {
            println!("\n{}{}", report.header(), report.table());
        }
    }
    let suite = Suite::new(
        command,
        Machine::detect(),
        load_before,
        load_average(),
        settings_value,
        runs,
        &BASES,
        targets.into_iter().map(|(_, t)| t).collect(),
        &key_figures(&list),
    );
    print!("{}", suite.table());
    if let Some(path) = json_path {
        suite.write_json(path)?;
        println!("wrote {}", path.display());
    }
    Ok(if suite.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(only: &[&str]) -> Vec<&'static str> {
        let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
        select(&only).unwrap().into_iter().map(Id::name).collect()
    }

    #[test]
    fn only_selects_in_report_order() {
        assert_eq!(names(&[]).len(), ALL.len());
        assert_eq!(
            names(&["rabbitmq", "switchboard"]),
            ["switchboard", "rabbitmq"]
        );
        assert_eq!(
            names(&["redis-streams"]),
            ["redis-streams-always", "redis-streams-everysec"]
        );
        let bad = select(&["kafka".to_owned()]).unwrap_err().to_string();
        assert!(bad.contains("nats-jetstream"), "{bad}");
    }

    #[test]
    fn every_workload_has_key_figures() {
        let list = workloads(&Settings::new(true));
        assert_eq!(list.len(), 8);
        let keys = key_figures(&list);
        assert!(keys.iter().any(|k| k.workload.contains("10000 events/s")));
        assert!(keys.iter().any(|k| k.workload.contains("at 100 events/s")));
        assert!(
            keys.iter()
                .any(|k| k.figure == "RSS growth per 1M stored events")
        );
    }
}

//! The workloads, generic over any [`Target`]: durable publish throughput, full publish →
//! consume → ack throughput, end-to-end latency at a light fixed rate. Each run starts a fresh
//! target, measures, reads the server's footprint and stops it. Request bodies are built once
//! per publisher; the hot loops only send, count and (for latency) record one number per event.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::server::own_cpu_seconds;
use crate::stats::quantile_sorted;
use crate::target::{Footprint, Target};

const MIB: f64 = 1024.0 * 1024.0;
/// Size of each event's `data` JSON, in bytes.
pub const EVENT_DATA_BYTES: usize = 200;
/// Pause after a failed request before the next, so an outage is not a busy loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Sizes and durations of the workloads.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Concurrent publishers in the publish workload.
    pub publishers: usize,
    /// Time the publishers run before the measured window (connections, caches, WAL).
    pub warmup: Duration,
    /// The measured window of the publish workload.
    pub publish_window: Duration,
    /// Events each full-cycle run publishes and waits for every sink to ack.
    pub cycle_events: u64,
    /// Concurrent publishers in the full-cycle workload.
    pub cycle_publishers: usize,
    /// Events per publish request in the full-cycle workload.
    pub cycle_batch: usize,
    /// Consumer tasks per sink in the full-cycle workload.
    pub consumers_per_sink: usize,
    /// Most deliveries per consume request.
    pub consume_max: u32,
    /// Long-poll wait of consume requests.
    pub consume_wait: Duration,
    /// Events per second of the latency workload.
    pub latency_rate: u32,
    /// How long the latency workload publishes.
    pub latency_window: Duration,
    /// Where the latency workload writes each event's times, one file per run (see
    /// [`LatencyDump`]); `None`: nowhere.
    pub latency_dump: Option<PathBuf>,
}

impl Settings {
    pub fn new(quick: bool) -> Settings {
        Settings {
            publishers: 32,
            warmup: Duration::from_millis(if quick { 500 } else { 1000 }),
            publish_window: Duration::from_secs(if quick { 2 } else { 5 }),
            cycle_events: if quick { 20_000 } else { 100_000 },
            cycle_publishers: 8,
            cycle_batch: 100,
            consumers_per_sink: 2,
            consume_max: 1000,
            consume_wait: Duration::from_millis(1000),
            latency_rate: 1000,
            latency_window: Duration::from_secs(if quick { 2 } else { 5 }),
            latency_dump: None,
        }
    }
}

/// One workload with its parameters.
#[derive(Debug, Clone, Copy)]
pub enum Workload {
    /// Publishers only, `batch` events per request, for a fixed time.
    Publish { batch: usize },
    /// Publishers and consumers together until every sink acked a fixed number of events.
    FullCycle { sinks: usize },
    /// Single-event publishes at a fixed rate, each timed until its ack returned.
    Latency,
}

impl Workload {
    /// Heading of the workload in the report.
    pub fn title(&self, s: &Settings) -> String {
        match self {
            Workload::Publish { batch } => format!(
                "publish, batch {batch} ({} publishers, {:?})",
                s.publishers, s.publish_window
            ),
            Workload::FullCycle { sinks } => format!(
                "publish→consume→ack, {sinks} target{} ({} events)",
                if *sinks == 1 { "" } else { "s" },
                s.cycle_events
            ),
            Workload::Latency => format!(
                "latency at {} events/s ({:?}, single-event publishes)",
                s.latency_rate, s.latency_window
            ),
        }
    }

    /// Starts a fresh target, runs the workload once, stops the target.
    pub async fn run<T: Target>(&self, config: &T::Config, s: &Settings) -> Result<RunOutcome> {
        match *self {
            Workload::Publish { batch } => publish_throughput::<T>(config, s, batch).await,
            Workload::FullCycle { sinks } => full_cycle::<T>(config, s, sinks).await,
            Workload::Latency => latency::<T>(config, s).await,
        }
    }
}

/// One number of one run.
#[derive(Debug, Clone)]
pub struct Measure {
    pub name: &'static str,
    pub unit: &'static str,
    pub value: f64,
}

/// Everything one run measured, and what looked wrong.
#[derive(Debug, Default)]
pub struct RunOutcome {
    pub measures: Vec<Measure>,
    pub warnings: Vec<String>,
}

impl RunOutcome {
    fn add(&mut self, name: &'static str, unit: &'static str, value: f64) {
        self.measures.push(Measure { name, unit, value });
    }

    fn add_opt(&mut self, name: &'static str, unit: &'static str, value: Option<f64>) {
        if let Some(value) = value {
            self.add(name, unit, value);
        }
    }

    /// Adds each `(name, q)`: the q-quantile of `ns` (sorted here), in milliseconds.
    fn add_ms_quantiles(&mut self, ns: &mut [u64], quantiles: &[(&'static str, f64)]) {
        ns.sort_unstable();
        for &(name, q) in quantiles {
            let ms = quantile_sorted(ns, q).map(|ns| ns as f64 / 1e6);
            self.add_opt(name, "ms", ms);
        }
    }

    fn add_cpu(&mut self, from: &Probe, to: &Probe) {
        let secs = to.at.duration_since(from.at).as_secs_f64();
        let cores = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / secs);
        self.add_opt("server CPU", "cores", cores(from.server_cpu, to.server_cpu));
        self.add_opt("bench CPU", "cores", cores(from.own_cpu, to.own_cpu));
    }

    /// What the server sent to storage between two probes, per event: the bytes its
    /// durability costs (whole WAL pages for switchboard, AOF appends for Redis).
    fn add_written(&mut self, from: &Probe, to: &Probe, events: u64) {
        let per_event = to
            .server_written
            .zip(from.server_written)
            .map(|(b, a)| b.saturating_sub(a) as f64 / events.max(1) as f64);
        self.add_opt("bytes to storage per event", "bytes", per_event);
    }

    fn add_memory(&mut self, footprint: &Footprint) {
        self.add_opt(
            "server peak RSS",
            "MiB",
            footprint.peak_rss.map(|b| b as f64 / MIB),
        );
        self.add_opt(
            "data dir on disk",
            "MiB",
            footprint.disk.map(|b| b as f64 / MIB),
        );
    }
}

/// Nanoseconds since the first call, on the process' monotonic clock.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// An event's data: a JSON object of exactly [`EVENT_DATA_BYTES`] bytes, led by `sent_ns` when
/// given.
pub fn event_data(seq: u64, sent_ns: Option<u64>) -> String {
    let mut data = match sent_ns {
        Some(ns) => format!(r#"{{"sent_ns":{ns},"user_id":"u-{seq:08}","#),
        None => format!(r#"{{"user_id":"u-{seq:08}","#),
    };
    data.push_str(r#""email":"user@example.com","name":"Bench User","plan":"pro","pad":""#);
    let pad = EVENT_DATA_BYTES.saturating_sub(data.len() + 2);
    data.extend(std::iter::repeat_n('x', pad));
    data.push_str("\"}");
    data
}

/// CPU and storage counters at one moment.
struct Probe {
    at: Instant,
    server_cpu: Option<f64>,
    own_cpu: Option<f64>,
    server_written: Option<u64>,
}

impl Probe {
    fn take<T: Target>(target: &T) -> Probe {
        let footprint = target.footprint();
        Probe {
            at: Instant::now(),
            server_cpu: footprint.cpu_seconds,
            own_cpu: own_cpu_seconds().ok(),
            server_written: footprint.written,
        }
    }
}

/// Failed requests of a run: how many, and the first one.
#[derive(Default)]
struct Errors {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Errors {
    fn note(&self, what: &str, e: &anyhow::Error) {
        if self.count.fetch_add(1, Ordering::Relaxed) == 0 {
            *self.first.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{what}: {e:#}"));
        }
    }

    fn report(&self, outcome: &mut RunOutcome) {
        let count = self.count.load(Ordering::Relaxed);
        if count > 0 {
            let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).clone();
            outcome.warnings.push(format!(
                "{count} failed requests; first: {}",
                first.unwrap_or_default()
            ));
        }
    }
}

/// Reads the footprint, collects the server's warnings and stops the target.
async fn finish<T: Target>(target: Arc<T>, outcome: &mut RunOutcome) -> Result<Footprint> {
    let footprint = target.footprint();
    outcome.warnings.extend(
        target
            .warnings()
            .into_iter()
            .map(|w| format!("server log: {w}")),
    );
    let target = Arc::into_inner(target).context("the target is still in use by a task")?;
    target.stop().await?;
    Ok(footprint)
}

async fn publish_throughput<T: Target>(
    config: &T::Config,
    s: &Settings,
    batch_size: usize,
) -> Result<RunOutcome> {
    let target = Arc::new(T::start(config, 1).await?);
    let data = event_data(1, None);
    let batch = Arc::new(target.batch(&vec![data.as_str(); batch_size])?);
    let accepted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Errors::default());
    let mut publishers = JoinSet::new();
    for _ in 0..s.publishers {
        let (target, batch, accepted, stop, errors) = (
            target.clone(),
            batch.clone(),
            accepted.clone(),
            stop.clone(),
            errors.clone(),
        );
        publishers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match target.publish(&batch).await {
                    Ok(n) => {
                        accepted.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.note("publish", &e);
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
        });
    }
    tokio::time::sleep(s.warmup).await;
    let (from, count_from) = (Probe::take(&*target), accepted.load(Ordering::Relaxed));
    tokio::time::sleep(s.publish_window).await;
    let (to, count_to) = (Probe::take(&*target), accepted.load(Ordering::Relaxed));
    let connections = target.footprint().connections;
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = publishers.join_next().await {
        joined?;
    }

    let mut outcome = RunOutcome::default();
    let events = (count_to - count_from) as f64;
    if events == 0.0 {
        errors.report(&mut outcome);
        bail!(
            "no event was published in the window: {:?}",
            outcome.warnings
        );
    }
    outcome.add(
        "throughput",
        "events/s",
        events / to.at.duration_since(from.at).as_secs_f64(),
    );
    outcome.add_cpu(&from, &to);
    outcome.add_opt("server connections", "count", connections.map(|c| c as f64));
    errors.report(&mut outcome);
    let footprint = finish(target, &mut outcome).await?;
    outcome.add_memory(&footprint);
    Ok(outcome)
}

/// Progress of the sinks in the full-cycle workload.
struct Sinks {
    acked: Vec<AtomicU64>,
    done: AtomicUsize,
    all_done: Notify,
}

async fn full_cycle<T: Target>(
    config: &T::Config,
    s: &Settings,
    sinks: usize,
) -> Result<RunOutcome> {
    let target = Arc::new(T::start(config, sinks).await?);
    let rss_before = target.footprint().rss;
    let batches = (s.cycle_events / s.cycle_batch as u64).max(1);
    let total = batches * s.cycle_batch as u64;
    let data = event_data(1, None);
    let batch = Arc::new(target.batch(&vec![data.as_str(); s.cycle_batch])?);
    let next_batch = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Errors::default());
    let progress = Arc::new(Sinks {
        acked: (0..sinks).map(|_| AtomicU64::new(0)).collect(),
        done: AtomicUsize::new(0),
        all_done: Notify::new(),
    });

    let from = Probe::take(&*target);
    let mut publishers = JoinSet::new();
    for _ in 0..s.cycle_publishers {
        let (target, batch, next_batch, errors) = (
            target.clone(),
            batch.clone(),
            next_batch.clone(),
            errors.clone(),
        );
        publishers.spawn(async move {
            while next_batch.fetch_add(1, Ordering::Relaxed) < batches {
                // A failed publish is retried: the run needs every event.
                while let Err(e) = target.publish(&batch).await {
                    errors.note("publish", &e);
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            }
            Instant::now()
        });
    }
    let mut consumers = JoinSet::new();
    for sink in 0..sinks {
        for _ in 0..s.consumers_per_sink {
            let (target, errors, progress) = (target.clone(), errors.clone(), progress.clone());
            let (max, wait) = (s.consume_max, s.consume_wait);
            consumers.spawn(async move {
                while progress.acked[sink].load(Ordering::Relaxed) < total {
                    let deliveries = match target.consume(sink, max, wait).await {
                        Ok(d) if d.is_empty() => continue,
                        Ok(d) => d,
                        Err(e) => {
                            errors.note("consume", &e);
                            tokio::time::sleep(ERROR_PAUSE).await;
                            continue;
                        }
                    };
                    // A failed ack is not retried: its deliveries come back after the lease.
                    let n = match target.ack(sink, deliveries).await {
                        Ok(n) => n,
                        Err(e) => {
                            errors.note("ack", &e);
                            continue;
                        }
                    };
                    let before = progress.acked[sink].fetch_add(n, Ordering::Relaxed);
                    if before < total
                        && before + n >= total
                        && progress.done.fetch_add(1, Ordering::Relaxed) + 1 == sinks
                    {
                        progress.all_done.notify_one();
                    }
                }
            });
        }
    }

    // Generous: even 1,000 events/s finishes 100,000 events well within it.
    let limit = Duration::from_secs(60 + total / 1000);
    let finished = tokio::time::timeout(limit, progress.all_done.notified()).await;
    let to = Probe::take(&*target);
    if finished.is_err() {
        publishers.abort_all();
        consumers.abort_all();
        let acked: Vec<u64> = progress
            .acked
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        bail!(
            "not every sink acked {total} events within {limit:?}: acked {acked:?}, \
             {} failed requests",
            errors.count.load(Ordering::Relaxed)
        );
    }
    let mut published_at = from.at;
    while let Some(joined) = publishers.join_next().await {
        published_at = published_at.max(joined?);
    }
    while let Some(joined) = consumers.join_next().await {
        joined?;
    }

    let mut outcome = RunOutcome::default();
    let secs = to.at.duration_since(from.at).as_secs_f64();
    outcome.add(
        "events acked by every target",
        "events/s",
        total as f64 / secs,
    );
    outcome.add(
        "deliveries acked",
        "deliveries/s",
        (total * sinks as u64) as f64 / secs,
    );
    outcome.add(
        "publish rate while consuming",
        "events/s",
        total as f64 / published_at.duration_since(from.at).as_secs_f64(),
    );
    outcome.add_cpu(&from, &to);
    outcome.add_written(&from, &to, total);
    for (sink, acked) in progress.acked.iter().enumerate() {
        let acked = acked.load(Ordering::Relaxed);
        if acked != total {
            outcome.warnings.push(format!(
                "sink {} acked {acked} deliveries for {total} events (redeliveries?)",
                sink + 1
            ));
        }
    }
    errors.report(&mut outcome);
    let footprint = finish(target, &mut outcome).await?;
    outcome.add_memory(&footprint);
    outcome.add_opt(
        "server RSS after the run",
        "MiB",
        footprint.rss.map(|b| b as f64 / MIB),
    );
    outcome.add_opt(
        "RSS after per 1M stored events",
        "MiB",
        footprint.rss.map(|b| b as f64 / MIB / total as f64 * 1e6),
    );
    let growth = footprint
        .rss
        .zip(rss_before)
        .map(|(a, b)| a.saturating_sub(b));
    outcome.add_opt(
        "RSS growth per 1M stored events",
        "MiB",
        growth.map(|b| b as f64 / MIB / total as f64 * 1e6),
    );
    outcome.add_opt(
        "disk per stored event",
        "bytes",
        footprint.disk.map(|b| b as f64 / total as f64),
    );
    Ok(outcome)
}

async fn latency<T: Target>(config: &T::Config, s: &Settings) -> Result<RunOutcome> {
    let target = Arc::new(T::start(config, 1).await?);
    let count = (f64::from(s.latency_rate) * s.latency_window.as_secs_f64()).round() as u64;
    let errors = Arc::new(Errors::default());
    let from = Probe::take(&*target);
    // Events the consumer waits for: unknown (all) until publishing is over.
    let expected = Arc::new(AtomicU64::new(u64::MAX));

    let consumer = {
        let (target, errors, expected) = (target.clone(), errors.clone(), expected.clone());
        let (max, wait) = (s.consume_max, s.consume_wait);
        let (dump_dir, rate) = (s.latency_dump.clone(), s.latency_rate);
        tokio::spawn(async move {
            let mut latencies: Vec<u64> = Vec::with_capacity(count as usize);
            let mut received_after: Vec<u64> = Vec::with_capacity(count as usize);
            let mut sent: Vec<u64> = Vec::with_capacity(max as usize);
            let mut received = 0u64;
            let mut foreign = 0u64;
            let mut dump = match &dump_dir {
                Some(dir) => Some(LatencyDump::create(dir, T::NAME, rate)?),
                None => None,
            };
            while received < expected.load(Ordering::Relaxed) {
                let deliveries = match target.consume(0, max, wait).await {
                    Ok(d) if d.is_empty() => continue,
                    Ok(d) => d,
                    Err(e) => {
                        errors.note("consume", &e);
                        tokio::time::sleep(ERROR_PAUSE).await;
                        continue;
                    }
                };
                let received_at = now_ns();
                sent.clear();
                sent.extend(deliveries.iter().filter_map(T::sent_ns));
                foreign += (deliveries.len() - sent.len()) as u64;
                received_after.extend(sent.iter().map(|&t| received_at.saturating_sub(t)));
                if let Err(e) = target.ack(0, deliveries).await {
                    errors.note("ack", &e);
                    continue;
                }
                let acked_at = now_ns();
                latencies.extend(sent.iter().map(|&t| acked_at.saturating_sub(t)));
                if let Some(dump) = &mut dump {
                    dump.write(&sent, received_at, acked_at)?;
                }
                received += sent.len() as u64;
            }
            if let Some(dump) = dump {
                dump.finish()?;
            }
            Ok::<_, anyhow::Error>((latencies, received_after, foreign))
        })
    };

    // Open loop: each tick spawns its publish, so a slow publish delays no other. Burst: a
    // tick missed because the runtime was busy fires at once, keeping the offered rate.
    let publish_times = Arc::new(Mutex::new(Vec::with_capacity(count as usize)));
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / s.latency_rate);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut publishes = JoinSet::new();
    let mut published = 0u64;
    let first_tick = ticker.tick().await;
    let mut last_tick = first_tick;
    for seq in 0..count {
        if seq > 0 {
            last_tick = ticker.tick().await;
        }
        let (target, errors, publish_times) =
            (target.clone(), errors.clone(), publish_times.clone());
        publishes.spawn(async move {
            let sent = now_ns();
            let published = match target.batch(&[&event_data(seq, Some(sent))]) {
                Ok(batch) => target.publish(&batch).await,
                Err(e) => Err(e),
            };
            match published {
                Ok(_) => {
                    let took = now_ns() - sent;
                    publish_times
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(took);
                    true
                }
                Err(e) => {
                    errors.note("publish", &e);
                    false
                }
            }
        });
        while let Some(joined) = publishes.try_join_next() {
            published += u64::from(joined?);
        }
    }
    let offered_secs = last_tick.duration_since(first_tick).as_secs_f64();
    while let Some(joined) = publishes.join_next().await {
        published += u64::from(joined?);
    }
    // Below the offered rate when the target could not keep up (publishes queued up).
    let completed_secs = first_tick.elapsed().as_secs_f64();
    expected.store(published, Ordering::Relaxed);
    let limit = Duration::from_secs(30) + s.consume_wait;
    let (mut latencies, mut received_after, foreign) =
        match tokio::time::timeout(limit, consumer).await {
            Ok(joined) => joined??,
            Err(_) => bail!("the consumer did not receive all {published} events within {limit:?}"),
        };
    let to = Probe::take(&*target);

    let mut outcome = RunOutcome::default();
    outcome.add_ms_quantiles(
        &mut latencies,
        &[
            ("publish→ack p50", 0.50),
            ("publish→ack p99", 0.99),
            ("publish→ack p999", 0.999),
            ("publish→ack max", 1.0),
        ],
    );
    // Where the time goes: until the consumer has the delivery, the rest is its ack.
    outcome.add_ms_quantiles(
        &mut received_after,
        &[
            ("publish→received p50", 0.50),
            ("publish→received p99", 0.99),
        ],
    );
    let mut publish_times =
        std::mem::take(&mut *publish_times.lock().unwrap_or_else(|p| p.into_inner()));
    outcome.add_ms_quantiles(
        &mut publish_times,
        &[("publish call p50", 0.50), ("publish call p99", 0.99)],
    );
    if offered_secs > 0.0 {
        outcome.add(
            "offered rate",
            "events/s",
            (count - 1) as f64 / offered_secs,
        );
    }
    outcome.add(
        "publishes completed",
        "events/s",
        published as f64 / completed_secs,
    );
    outcome.add_written(&from, &to, published);
    outcome.add_cpu(&from, &to);
    if foreign > 0 {
        outcome
            .warnings
            .push(format!("{foreign} deliveries without sent_ns"));
    }
    errors.report(&mut outcome);
    let footprint = finish(target, &mut outcome).await?;
    outcome.add_memory(&footprint);
    Ok(outcome)
}

/// One latency run's events, a line each: when it was sent, when the consumer had it and when
/// its ack was answered (ns on the bench's monotonic clock, [`now_ns`]), in the order the
/// consumer received them. For reading a tail: which events were slow, together or alone,
/// and in which half (`scripts/latency-dump`; BENCHMARKS.md, "The command").
struct LatencyDump {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl LatencyDump {
    /// `DIR/TARGET-RATE-NS.txt` (NS: [`now_ns`] at its start): every run its own file.
    fn create(dir: &Path, target: &str, rate: u32) -> Result<LatencyDump> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{target}-{rate}-{}.txt", now_ns()));
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(LatencyDump {
            path,
            out: std::io::BufWriter::new(file),
        })
    }

    fn write(&mut self, sent: &[u64], received_at: u64, acked_at: u64) -> Result<()> {
        for t in sent {
            writeln!(self.out, "{t} {received_at} {acked_at}")
                .with_context(|| format!("cannot write {}", self.path.display()))?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_data_is_a_json_object_of_the_set_size() {
        for sent in [None, Some(123_456_789_012)] {
            let data = event_data(42, sent);
            assert_eq!(data.len(), EVENT_DATA_BYTES, "{data}");
            let value: serde_json::Value = serde_json::from_str(&data).unwrap();
            assert_eq!(value["user_id"], "u-00000042");
            assert_eq!(value.get("sent_ns").and_then(|v| v.as_u64()), sent);
        }
    }

    #[test]
    fn a_latency_dump_has_a_line_per_event_with_its_three_times() {
        let dir = tempfile::tempdir().expect("dir");
        let mut dump = LatencyDump::create(&dir.path().join("dumps"), "target", 1000).unwrap();
        dump.write(&[10, 20], 30, 40).unwrap();
        dump.write(&[35], 50, 60).unwrap();
        let path = dump.path.clone();
        dump.finish().unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("target-1000-") && name.ends_with(".txt"),
            "{name}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "10 30 40\n20 30 40\n35 50 60\n");
    }
}

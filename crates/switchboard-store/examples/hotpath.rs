//! The embedded store's hot path without HTTP: publish, lease and ack of the same events, timed
//! per phase, on a real SQLite file with the real writer (group commit and fsync). What the
//! writer costs per event, to compare builds quickly; not a test and not the benchmark.
//!
//! `cargo run --release -p switchboard-store --example hotpath -- [ROUNDS] [TARGETS] [BATCH] [BATCHES]`
//!
//! Each round publishes 1,000 events (10 concurrent batches of 100, or BATCHES of BATCH) to
//! every target, leases them (up to 1,000 per request) and acks them. `-- 2000 1 1 1` is a
//! lightly loaded server: one event at a time, each write a group commit of its own. It
//! prints, per phase, the wall time, the process's CPU time and the writer thread's own CPU
//! time per event or delivery (from `/proc/self/task/*/schedstat`); the writer's figure is
//! the one to compare.

use std::time::{Duration, Instant};

use switchboard_core::{AppId, Timestamp};
use switchboard_store::conformance::{self, event, register};
use switchboard_store::sqlite::SqliteStore;
use switchboard_store::{AckItem, LeaseRequest, NewEvent, Store};

/// CPU time so far of a thread, from its `schedstat` file in /proc (nanoseconds on the CPU).
fn cpu_of(schedstat: &std::path::Path) -> Duration {
    let text = std::fs::read_to_string(schedstat).unwrap_or_default();
    let ns = text.split_whitespace().next().and_then(|n| n.parse().ok());
    Duration::from_nanos(ns.unwrap_or(0))
}

/// CPU time so far of every thread of this process.
fn process_cpu() -> Duration {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| t.ok())
        .map(|t| cpu_of(&t.path().join("schedstat")))
        .sum()
}

/// The writer thread's `schedstat` file.
fn writer_schedstat() -> std::path::PathBuf {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| t.ok())
        .map(|t| t.path())
        .find(|t| {
            std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.starts_with("switchboard-wri"))
        })
        .expect("the writer thread")
        .join("schedstat")
}

/// Wall time, process CPU time and the writer's CPU time of one phase, summed over rounds.
#[derive(Default)]
struct Phase {
    wall: Duration,
    cpu: Duration,
    writer: Duration,
}

struct Started {
    at: Instant,
    cpu: Duration,
    writer: Duration,
}

impl Phase {
    fn add(&mut self, started: Started, writer: &std::path::Path) {
        self.wall += started.at.elapsed();
        self.cpu += process_cpu().saturating_sub(started.cpu);
        self.writer += cpu_of(writer).saturating_sub(started.writer);
    }
}

fn start(writer: &std::path::Path) -> Started {
    Started {
        at: Instant::now(),
        cpu: process_cpu(),
        writer: cpu_of(writer),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(50, |a| a.parse().expect("ROUNDS"));
    let targets: usize = args.next().map_or(1, |a| a.parse().expect("TARGETS"));
    let batch: usize = args.next().map_or(100, |a| a.parse().expect("BATCH"));
    let batches: usize = args.next().map_or(10, |a| a.parse().expect("BATCHES"));
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let sinks: Vec<String> = (1..=targets).map(|i| format!("sink-{i}")).collect();
    register(&store, "publisher", &[], 8).await;
    for sink in &sinks {
        register(&store, sink, &["bench.event"], 8).await;
    }
    let data = format!(
        r#"{{"user_id":"u-00000001","email":"user@example.com","name":"Bench User","plan":"pro","pad":"{}"}}"#,
        "x".repeat(100)
    );
    let writer = writer_schedstat();
    let routes: Vec<_> = sinks.iter().map(|s| conformance::route(s)).collect();
    let (mut publish, mut lease, mut ack) = (Phase::default(), Phase::default(), Phase::default());
    let mut now = Timestamp(1_700_000_000_000);
    for _ in 0..rounds {
        now = now.plus_ms(1);
        let t = start(&writer);
        let publishes = (0..batches).map(|_| {
            let events: Vec<NewEvent> = (0..batch)
                .map(|_| {
                    let mut ev = event("publisher", "acme", "bench.event", now);
                    ev.data.clone_from(&data);
                    NewEvent {
                        event: ev,
                        targets: routes.clone(),
                    }
                })
                .collect();
            store.publish(events, now)
        });
        for published in futures_util::future::join_all(publishes).await {
            published.expect("publish");
        }
        publish.add(t, &writer);
        for sink in &sinks {
            let app = AppId::parse(sink).expect("app id");
            let mut leased = Vec::new();
            let t = start(&writer);
            while leased.len() < batch * batches {
                let got = store
                    .lease(LeaseRequest {
                        app: app.clone(),
                        max: 1000,
                        lease_ms: 60_000,
                        now,
                    })
                    .await
                    .expect("lease");
                assert!(!got.deliveries.is_empty(), "nothing to lease");
                leased.extend(got.deliveries);
            }
            lease.add(t, &writer);
            let items: Vec<AckItem> = leased
                .iter()
                .map(|d| AckItem {
                    id: d.id.clone(),
                    attempt: Some(d.attempt),
                    data: None,
                })
                .collect();
            let t = start(&writer);
            let acked = store.ack(app, items, now).await.expect("ack");
            assert_eq!(acked.len(), batch * batches);
            ack.add(t, &writer);
        }
    }
    let events = (rounds * batch * batches) as f64;
    let deliveries = events * targets as f64;
    let per = |d: Duration, n: f64| d.as_secs_f64() * 1e6 / n;
    println!(
        "{rounds} rounds, {events} events, {targets} target(s); µs per event (publish) or \
         delivery (lease, ack)"
    );
    for (name, phase, n) in [
        ("publish", &publish, events),
        ("lease", &lease, deliveries),
        ("ack", &ack, deliveries),
    ] {
        println!(
            "  {name:8} wall {:6.2}  cpu {:6.2}  writer {:6.2}",
            per(phase.wall, n),
            per(phase.cpu, n),
            per(phase.writer, n)
        );
    }
    let writer_cpu = publish.writer + lease.writer + ack.writer;
    println!(
        "  cycle    wall {:6.2}  cpu {:6.2}  writer {:6.2}  ({:.0} events/s if the writer were \
         the only limit)",
        per(publish.wall + lease.wall + ack.wall, events),
        per(publish.cpu + lease.cpu + ack.cpu, events),
        per(writer_cpu, events),
        events / writer_cpu.as_secs_f64()
    );
    store.close().await;
}

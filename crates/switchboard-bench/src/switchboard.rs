//! switchboard as a benchmark target: the release `switchboard serve` binary as a child
//! process, driven over HTTP with the SDK. Sinks are apps subscribed to the event type; the
//! publisher is an app without subscriptions, so every event goes to every sink.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde::de::IgnoredAny;
use switchboard_client::{Ack, Client, ConsumeRequest, NewApp};

use crate::server::{ServerProcess, filesystem_of};
use crate::target::{EVENT_TYPE, Footprint, TENANT, Target};

/// The admin key the benchmark gives the server.
pub const ADMIN_KEY: &str = "sb_bench_admin_key";
/// Lease long enough that no delivery comes back while its consumer is still acking it.
const LEASE_MS: u64 = 60_000;

/// What the benchmark reads of an event's data: the send time the latency workloads put in
/// it. The rest is skipped unread, as the peers' consumers scan the body they are given for
/// it (`sent_ns_in`) and build nothing else of it.
#[derive(Debug, Deserialize)]
pub struct Sent {
    sent_ns: Option<u64>,
}

/// A delivery as the benchmark's consumers take it (`Client::consume_as`).
pub type Delivery = switchboard_client::Delivery<Sent>;

/// Where the binary is and where its data directories go.
#[derive(Debug, Clone)]
pub struct SwitchboardConfig {
    pub binary: PathBuf,
    pub data_root: PathBuf,
}

/// One running switchboard with a publisher app and `sinks` subscriber apps.
#[derive(Debug)]
pub struct Switchboard {
    server: ServerProcess,
    publisher: Client,
    sinks: Vec<Client>,
}

/// A publish request body, serialized once.
#[derive(Debug)]
pub struct Batch {
    body: Vec<u8>,
    count: usize,
}

impl Batch {
    /// The request body publishing `data` (one event, or a batch of them).
    pub fn new(data: &[&str]) -> Result<Batch> {
        let mut body = String::with_capacity(data.iter().map(|d| d.len() + 64).sum::<usize>() + 16);
        let single = data.len() == 1;
        if !single {
            body.push_str(r#"{"events":["#);
        }
        for (i, d) in data.iter().enumerate() {
            serde_json::from_str::<IgnoredAny>(d).with_context(|| format!("bad event data {d}"))?;
            if i > 0 {
                body.push(',');
            }
            write!(
                body,
                r#"{{"type":"{EVENT_TYPE}","tenant":"{TENANT}","data":{d}}}"#
            )?;
        }
        if !single {
            body.push_str("]}");
        }
        Ok(Batch {
            body: body.into_bytes(),
            count: data.len(),
        })
    }

    /// Publishes it through `publisher`; an error unless every event was stored.
    pub async fn publish(&self, publisher: &Client) -> Result<usize> {
        let stored = publisher.publish_json(self.body.clone()).await?.len();
        if stored != self.count {
            bail!("publish of {} events answered {stored} events", self.count);
        }
        Ok(stored)
    }
}

/// A long-poll for up to `max` deliveries, waiting up to `wait`, with the benchmark's lease.
pub fn consume_request(max: u32, wait: Duration) -> ConsumeRequest {
    ConsumeRequest {
        max,
        wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        lease_ms: LEASE_MS,
    }
}

/// Acks of the attempts the deliveries were leased for.
pub fn acks_of(deliveries: Vec<Delivery>) -> Vec<Ack> {
    deliveries
        .into_iter()
        .map(|d| Ack {
            delivery_id: d.delivery_id,
            attempt: Some(d.attempt),
            data: None,
        })
        .collect()
}

impl Switchboard {
    /// A client with the admin key, for scenarios that register more apps than the workloads.
    pub fn admin(&self) -> Client {
        self.publisher.with_key(ADMIN_KEY)
    }

    /// Starts a server on the embedded store, or on the Redis at `store` (`redis://…`), with a
    /// publisher app and `sinks` subscriber apps.
    pub async fn launch(
        config: &SwitchboardConfig,
        sinks: usize,
        store: Option<&str>,
    ) -> Result<Switchboard> {
        let (server, admin) = start_node(config, store).await?;
        let url = server.url();
        let publisher_key = admin
            .create_app(&NewApp::new("bench-publisher", Vec::<String>::new()))
            .await
            .context("registering the publisher app")?
            .api_key;
        let publisher = Client::new(&url, publisher_key);
        let mut sink_clients = Vec::with_capacity(sinks);
        for i in 1..=sinks {
            let key = admin
                .create_app(&NewApp::new(format!("bench-sink-{i}"), [EVENT_TYPE]))
                .await
                .with_context(|| format!("registering sink app {i}"))?
                .api_key;
            sink_clients.push(publisher.with_key(key));
        }
        Ok(Switchboard {
            server,
            publisher,
            sinks: sink_clients,
        })
    }
}

impl Target for Switchboard {
    type Config = SwitchboardConfig;
    type Batch = Batch;
    type Delivery = Delivery;

    const NAME: &'static str = "switchboard";

    fn durability(config: &SwitchboardConfig) -> String {
        format!(
            "embedded SQLite, WAL, group commit: each publish and ack is answered after the \
             WAL holding its commit is fsynced; data dir on {}",
            filesystem_of(&config.data_root).unwrap_or_else(|| "an unknown filesystem".into())
        )
    }

    async fn start(config: &SwitchboardConfig, sinks: usize) -> Result<Switchboard> {
        Switchboard::launch(config, sinks, None).await
    }

    fn batch(&self, data: &[&str]) -> Result<Batch> {
        Batch::new(data)
    }

    async fn publish(&self, batch: &Batch) -> Result<usize> {
        batch.publish(&self.publisher).await
    }

    async fn consume(&self, sink: usize, max: u32, wait: Duration) -> Result<Vec<Delivery>> {
        Ok(self.sinks[sink]
            .consume_as(&consume_request(max, wait))
            .await?)
    }

    async fn ack(&self, sink: usize, deliveries: Vec<Delivery>) -> Result<u64> {
        Ok(self.sinks[sink].ack(&acks_of(deliveries)).await?)
    }

    fn sent_ns(delivery: &Delivery) -> Option<u64> {
        delivery.event.data.sent_ns
    }

    fn footprint(&self) -> Footprint {
        let memory = self.server.memory().ok();
        Footprint {
            peak_rss: memory.map(|m| m.peak_rss),
            rss: memory.map(|m| m.rss),
            disk: self.server.disk_bytes().ok(),
            cpu_seconds: self.server.cpu_seconds().ok(),
            written: self.server.written_bytes().ok(),
            // Every socket but the listener is a client connection.
            connections: self.server.sockets().ok().map(|n| n.saturating_sub(1)),
        }
    }

    fn warnings(&self) -> Vec<String> {
        self.server.warnings()
    }

    async fn stop(self) -> Result<()> {
        let Switchboard { server, .. } = self;
        tokio::task::spawn_blocking(move || server.stop()).await?
    }
}

/// A switchboard server of its own: the binary on 127.0.0.1:0 with a fresh data
/// directory, on the embedded store or the Redis at `store`.
pub async fn start_node(
    config: &SwitchboardConfig,
    store: Option<&str>,
) -> Result<(ServerProcess, Client)> {
    let binary = config.binary.clone();
    let data_root = config.data_root.clone();
    let store = store.map(str::to_owned);
    let server = tokio::task::spawn_blocking(move || {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "{data_dir}",
        ];
        if let Some(store) = &store {
            args.extend(["--store", store.as_str()]);
        }
        ServerProcess::start(
            &binary,
            &args,
            &[("SWITCHBOARD_ADMIN_KEY", ADMIN_KEY), ("RUST_LOG", "info")],
            &data_root,
        )
    })
    .await??;
    let admin = Client::new(server.url(), ADMIN_KEY);
    admin.health().await.context("health check")?;
    Ok((server, admin))
}

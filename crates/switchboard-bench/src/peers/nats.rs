//! NATS JetStream as a benchmark target, on the server already running on this machine (the
//! benchmark does not own its process: no memory or CPU figures). Each run creates a stream with
//! file storage on a subject of its own and one durable pull consumer per sink with explicit
//! acks, publishes with JetStream publish acks (a batch is published whole, then its acks
//! awaited), consumes from a continuous pull, acks each message, and deletes the stream.

use std::sync::Mutex as StdMutex;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use async_nats::jetstream::consumer::{AckPolicy, Consumer, DeliverPolicy, pull};
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::{self, Message};
use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Mutex;

use super::{PROBE_TIMEOUT, envelope, sent_ns_in, unique_name};
use crate::target::{EVENT_TYPE, Footprint, TENANT, Target};

/// Messages one pull asks for: a consume takes up to its `max` of what has arrived.
const PULL_BATCH: usize = 1000;
/// Unacknowledged messages the server lets one consumer have (its default, 1,000, would
/// throttle two consumer tasks taking up to 1,000 each).
const MAX_ACK_PENDING: i64 = 20_000;

/// Where the server is.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://127.0.0.1:4222`.
    pub url: String,
}

/// Streams created and not yet deleted, so a failed run's stream can still be deleted.
static CREATED: StdMutex<Vec<String>> = StdMutex::new(Vec::new());

fn forget(stream: &str) {
    CREATED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|s| s != stream);
}

/// Whether a server with JetStream answers at `url`: `Err` says why not. `Ok` holds its
/// version.
pub async fn probe(url: &str) -> Result<String> {
    let client = tokio::time::timeout(PROBE_TIMEOUT, async_nats::connect(url))
        .await
        .with_context(|| format!("no answer from {url} within {PROBE_TIMEOUT:?}"))?
        .with_context(|| format!("connecting to {url}"))?;
    let info = client.server_info();
    if !info.jetstream {
        bail!(
            "the NATS server {} at {url} runs without JetStream (-js)",
            info.version
        );
    }
    let version = info.version;
    Ok(version)
}

/// Deletes the streams of runs that failed before they could (best effort).
pub async fn cleanup(url: &str) {
    let left: Vec<String> = std::mem::take(&mut *CREATED.lock().unwrap_or_else(|e| e.into_inner()));
    if left.is_empty() {
        return;
    }
    if let Ok(client) = async_nats::connect(url).await {
        let js = jetstream::new(client);
        for stream in left {
            let _ = js.delete_stream(&stream).await;
        }
    }
}

/// One sink's message stream, started at its first consume.
struct Sink {
    consumer: Consumer<pull::Config>,
    messages: Mutex<Option<pull::Stream>>,
}

/// One connection with this run's stream and consumers.
pub struct Nats {
    js: jetstream::Context,
    stream: String,
    subject: String,
    sinks: Vec<Sink>,
}

impl Target for Nats {
    type Config = NatsConfig;
    type Batch = Vec<Bytes>;
    type Delivery = Message;

    const NAME: &'static str = "nats-jetstream";

    fn durability(config: &NatsConfig) -> String {
        format!(
            "NATS JetStream at {}, one replica, file storage with the server's default sync: a \
             publish ack means the message was written to the OS page cache, not fsynced (the \
             server fsyncs periodically, sync_interval, 2 min by default in current servers): \
             a machine crash can lose acknowledged messages; acks are not confirmed (an ack \
             returns once sent)",
            config.url
        )
    }

    async fn start(config: &NatsConfig, sinks: usize) -> Result<Nats> {
        let client = async_nats::connect(config.url.as_str())
            .await
            .with_context(|| format!("connecting to {}", config.url))?;
        let js = jetstream::new(client);
        let name = unique_name("SB_BENCH").replace('-', "_");
        let subject = format!("sbbench.{name}.{TENANT}.{EVENT_TYPE}");
        let stream = js
            .create_stream(StreamConfig {
                name: name.clone(),
                subjects: vec![format!("sbbench.{name}.>")],
                storage: StorageType::File,
                num_replicas: 1,
                ..StreamConfig::default()
            })
            .await
            .map_err(|e| anyhow!("creating stream {name}: {e}"))?;
        CREATED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        let mut sink_list = Vec::with_capacity(sinks);
        for i in 1..=sinks {
            let consumer = stream
                .create_consumer(pull::Config {
                    durable_name: Some(format!("sink-{i}")),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(60),
                    max_ack_pending: MAX_ACK_PENDING,
                    filter_subject: format!("sbbench.{name}.*.{EVENT_TYPE}"),
                    ..pull::Config::default()
                })
                .await
                .map_err(|e| anyhow!("creating consumer sink-{i}: {e}"))?;
            sink_list.push(Sink {
                consumer,
                messages: Mutex::new(None),
            });
        }
        Ok(Nats {
            js,
            stream: name,
            subject,
            sinks: sink_list,
        })
    }

    fn batch(&self, data: &[&str]) -> Result<Vec<Bytes>> {
        Ok(data.iter().map(|d| Bytes::from(envelope(d))).collect())
    }

    async fn publish(&self, batch: &Vec<Bytes>) -> Result<usize> {
        let mut acks = Vec::with_capacity(batch.len());
        for body in batch {
            acks.push(
                self.js
                    .publish(self.subject.clone(), body.clone())
                    .await
                    .map_err(|e| anyhow!("publish: {e}"))?,
            );
        }
        for ack in join_all(acks.into_iter().map(|a| a.into_future())).await {
            ack.map_err(|e| anyhow!("publish ack: {e}"))?;
        }
        Ok(batch.len())
    }

    async fn consume(&self, sink: usize, max: u32, wait: Duration) -> Result<Vec<Message>> {
        let sink = &self.sinks[sink];
        let mut guard = sink.messages.lock().await;
        if guard.is_none() {
            *guard = Some(
                sink.consumer
                    .stream()
                    .max_messages_per_batch(PULL_BATCH)
                    .messages()
                    .await
                    .map_err(|e| anyhow!("pull: {e}"))?,
            );
        }
        let messages = guard.as_mut().context("no message stream")?;
        let first = match tokio::time::timeout(wait, messages.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => bail!("the pull stream ended"),
            Ok(Some(message)) => message.map_err(|e| anyhow!("pull: {e}"))?,
        };
        let mut out = vec![first];
        while out.len() < max as usize {
            match messages.next().now_or_never() {
                Some(Some(message)) => out.push(message.map_err(|e| anyhow!("pull: {e}"))?),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn ack(&self, _sink: usize, deliveries: Vec<Message>) -> Result<u64> {
        let mut acked = 0;
        for result in join_all(deliveries.iter().map(|m| m.ack())).await {
            result.map_err(|e| anyhow!("ack: {e}"))?;
            acked += 1;
        }
        Ok(acked)
    }

    fn sent_ns(delivery: &Message) -> Option<u64> {
        sent_ns_in(&delivery.payload)
    }

    fn footprint(&self) -> Footprint {
        // The server is not the benchmark's child: its memory and CPU are not measured.
        Footprint::default()
    }

    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    async fn stop(self) -> Result<()> {
        let Nats {
            js, stream, sinks, ..
        } = self;
        // The pull streams hold subscriptions: end them before the stream goes.
        drop(sinks);
        js.delete_stream(&stream)
            .await
            .map_err(|e| anyhow!("deleting stream {stream}: {e}"))?;
        forget(&stream);
        js.client().flush().await.ok();
        Ok(())
    }
}

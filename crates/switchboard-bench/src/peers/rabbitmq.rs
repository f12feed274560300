//! RabbitMQ as a benchmark target, on the broker already running on this machine (the
//! benchmark does not own its process: no memory or CPU figures). Each run declares a durable
//! topic exchange and one durable queue per sink (quorum by default, bound to the event type),
//! publishes persistent messages with publisher confirms (a batch is published whole, then its
//! confirms awaited), consumes with manual acks and a prefetch, and deletes what it declared.

use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::future::join_all;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use tokio::sync::Mutex;

use super::{PROBE_TIMEOUT, envelope, sent_ns_in, unique_name};
use crate::target::{EVENT_TYPE, Footprint, TENANT, Target};

/// Channels the publishers take in turn (a channel's confirms are tracked in order, and the
/// broker runs each channel in its own process).
const PUBLISH_CHANNELS: usize = 8;
/// Unacknowledged messages the broker may push to one sink's consumer ahead of its acks.
const PREFETCH: u16 = 2000;
/// Persistent delivery mode.
const PERSISTENT: u8 = 2;

/// Which kind of durable queue each sink gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueType {
    /// Raft-replicated log, fsynced before confirms (one node here); RabbitMQ's recommended
    /// durable queue.
    Quorum,
    /// The classic queue: persistent messages are confirmed once fsynced by the message store.
    Classic,
}

impl QueueType {
    fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

/// Where the broker is and which queues to declare.
#[derive(Debug, Clone)]
pub struct RabbitMqConfig {
    /// `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: String,
    pub queue_type: QueueType,
}

/// Exchanges (with their sink count) declared and not yet deleted, so what a failed run
/// declared can still be deleted.
static DECLARED: StdMutex<Vec<(String, usize)>> = StdMutex::new(Vec::new());

fn queue_name(exchange: &str, sink: usize) -> String {
    format!("{exchange}-sink-{sink}")
}

/// Deletes the queues and exchanges of runs that failed before they could (best effort).
pub async fn cleanup(url: &str) {
    let left = std::mem::take(&mut *DECLARED.lock().unwrap_or_else(|e| e.into_inner()));
    if left.is_empty() {
        return;
    }
    let Ok(conn) = connect(url).await else { return };
    if let Ok(channel) = conn.create_channel().await {
        for (exchange, sinks) in left {
            for i in 1..=sinks {
                let queue = queue_name(&exchange, i);
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = conn.close(200, "cleanup".into()).await;
}

/// Whether a broker answers at `url`: `Err` says why not.
pub async fn probe(url: &str) -> Result<()> {
    let conn = tokio::time::timeout(PROBE_TIMEOUT, connect(url))
        .await
        .with_context(|| format!("no answer from {url} within {PROBE_TIMEOUT:?}"))??;
    let _ = conn.close(200, "probe".into()).await;
    Ok(())
}

async fn connect(url: &str) -> Result<Connection> {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// One sink's consumer, started at its first consume (publish-only runs leave the queue be).
struct Sink {
    queue: String,
    consumer: Mutex<Option<Consumer>>,
}

/// One connection to the broker with this run's exchange and queues.
pub struct RabbitMq {
    conn: Connection,
    control: Channel,
    publishers: Vec<Channel>,
    next: AtomicUsize,
    exchange: String,
    routing_key: String,
    sinks: Vec<Sink>,
}

impl RabbitMq {
    async fn consumer_of(&self, sink: &Sink) -> Result<()> {
        let mut consumer = sink.consumer.lock().await;
        if consumer.is_none() {
            let channel = self.conn.create_channel().await?;
            channel
                .basic_qos(PREFETCH, BasicQosOptions::default())
                .await?;
            *consumer = Some(
                channel
                    .basic_consume(
                        sink.queue.as_str().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .context("basic.consume")?,
            );
        }
        Ok(())
    }
}

impl Target for RabbitMq {
    type Config = RabbitMqConfig;
    type Batch = Vec<Vec<u8>>;
    type Delivery = Delivery;

    const NAME: &'static str = "rabbitmq";

    fn durability(config: &RabbitMqConfig) -> String {
        format!(
            "RabbitMQ at {}, durable {} queues, persistent messages, publisher confirms: a \
             publish is confirmed once the broker fsynced it (fsyncs batched by the broker \
             across publishers, like a group commit); manual acks are not confirmed by the \
             broker (an ack returns once sent)",
            config.url.rsplit('@').next().unwrap_or(&config.url),
            config.queue_type.as_str()
        )
    }

    async fn start(config: &RabbitMqConfig, sinks: usize) -> Result<RabbitMq> {
        let conn = connect(&config.url).await?;
        let control = conn.create_channel().await?;
        let exchange = unique_name("sb-bench");
        control
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .context("exchange.declare")?;
        DECLARED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((exchange.clone(), sinks));
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(config.queue_type.as_str().into()),
        );
        let mut sink_list = Vec::with_capacity(sinks);
        for i in 1..=sinks {
            let queue = queue_name(&exchange, i);
            control
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    arguments.clone(),
                )
                .await
                .context("queue.declare")?;
            // Tenant first, then the type: the sink subscribes to the type for any tenant.
            control
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    format!("*.{EVENT_TYPE}").into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .context("queue.bind")?;
            sink_list.push(Sink {
                queue,
                consumer: Mutex::new(None),
            });
        }
        let mut publishers = Vec::with_capacity(PUBLISH_CHANNELS);
        for _ in 0..PUBLISH_CHANNELS {
            let channel = conn.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .context("confirm.select")?;
            publishers.push(channel);
        }
        Ok(RabbitMq {
            conn,
            control,
            publishers,
            next: AtomicUsize::new(0),
            exchange,
            routing_key: format!("{TENANT}.{EVENT_TYPE}"),
            sinks: sink_list,
        })
    }

    fn batch(&self, data: &[&str]) -> Result<Vec<Vec<u8>>> {
        Ok(data.iter().map(|d| envelope(d)).collect())
    }

    async fn publish(&self, batch: &Vec<Vec<u8>>) -> Result<usize> {
        let channel =
            &self.publishers[self.next.fetch_add(1, Ordering::Relaxed) % PUBLISH_CHANNELS];
        let mut confirms = Vec::with_capacity(batch.len());
        for body in batch {
            confirms.push(
                channel
                    .basic_publish(
                        self.exchange.as_str().into(),
                        self.routing_key.as_str().into(),
                        BasicPublishOptions::default(),
                        body,
                        BasicProperties::default().with_delivery_mode(PERSISTENT),
                    )
                    .await
                    .context("basic.publish")?,
            );
        }
        for confirm in join_all(confirms).await {
            if !confirm.context("publisher confirm")?.is_ack() {
                bail!("the broker nacked a publish");
            }
        }
        Ok(batch.len())
    }

    async fn consume(&self, sink: usize, max: u32, wait: Duration) -> Result<Vec<Delivery>> {
        let sink = &self.sinks[sink];
        self.consumer_of(sink).await?;
        let mut guard = sink.consumer.lock().await;
        let consumer = guard.as_mut().context("no consumer")?;
        let first = match tokio::time::timeout(wait, consumer.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => bail!("the broker cancelled the consumer of {}", sink.queue),
            Ok(Some(delivery)) => delivery.context("consuming")?,
        };
        let mut deliveries = vec![first];
        // Then whatever has already arrived, without waiting.
        while deliveries.len() < max as usize {
            match consumer.next().now_or_never() {
                Some(Some(delivery)) => deliveries.push(delivery.context("consuming")?),
                _ => break,
            }
        }
        Ok(deliveries)
    }

    async fn ack(&self, _sink: usize, deliveries: Vec<Delivery>) -> Result<u64> {
        // One basic.ack per delivery, sent together: two consumer tasks share a sink's
        // channel, so a `multiple` ack could take the other's deliveries with it.
        let acks = deliveries
            .iter()
            .map(|d| d.acker.ack(BasicAckOptions::default()));
        let mut acked = 0;
        for result in join_all(acks).await {
            result.context("basic.ack")?;
            acked += 1;
        }
        Ok(acked)
    }

    fn sent_ns(delivery: &Delivery) -> Option<u64> {
        sent_ns_in(&delivery.data)
    }

    fn footprint(&self) -> Footprint {
        // The broker is not the benchmark's child: its memory and CPU are not measured.
        Footprint::default()
    }

    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    async fn stop(self) -> Result<()> {
        for sink in &self.sinks {
            self.control
                .queue_delete(sink.queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .with_context(|| format!("deleting queue {}", sink.queue))?;
        }
        self.control
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await
            .context("deleting the exchange")?;
        DECLARED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(e, _)| *e != self.exchange);
        self.conn.close(200, "done".into()).await?;
        Ok(())
    }
}

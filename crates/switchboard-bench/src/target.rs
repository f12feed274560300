//! What a system under test offers the workloads: publish prepared batches, consume and ack
//! per subscriber, report its footprint. switchboard implements it (`switchboard.rs`); peers
//! (Redis Streams, RabbitMQ, NATS JetStream) are meant to implement it the same way, each
//! mapping "sink" to its own notion of an independent subscriber (consumer group, queue,
//! durable consumer).

use std::future::Future;
use std::time::Duration;

use anyhow::Result;

/// The event type every workload publishes; each sink subscribes to it.
pub const EVENT_TYPE: &str = "user.created";
/// The tenant every workload publishes for.
pub const TENANT: &str = "t1";

/// The server's resources at one moment; `None` for what a target cannot observe.
#[derive(Debug, Clone, Copy, Default)]
pub struct Footprint {
    /// Peak resident set size so far, bytes.
    pub peak_rss: Option<u64>,
    /// Resident set size now, bytes.
    pub rss: Option<u64>,
    /// Bytes stored on disk.
    pub disk: Option<u64>,
    /// CPU time used so far, seconds.
    pub cpu_seconds: Option<f64>,
    /// Bytes sent to storage so far (see `server::process_written_bytes`).
    pub written: Option<u64>,
    /// Client connections open now.
    pub connections: Option<usize>,
}

/// A fresh, empty instance of a system under test with `sinks` independent subscribers, each
/// receiving every published event. Shared by the workload's tasks behind an `Arc`.
pub trait Target: Sized + Send + Sync + 'static {
    /// How to start one (binary path, keys, where data goes).
    type Config: Send + Sync;
    /// A publish request made ready once and sent any number of times.
    type Batch: Send + Sync + 'static;
    /// One delivery handed to a consumer, to be acked.
    type Delivery: Send + 'static;

    /// Short name for reports, e.g. `switchboard`.
    const NAME: &'static str;

    /// What a successful publish and ack guarantee, for the report.
    fn durability(config: &Self::Config) -> String;

    /// Starts an empty instance with `sinks` subscribers of [`EVENT_TYPE`].
    fn start(config: &Self::Config, sinks: usize) -> impl Future<Output = Result<Self>> + Send;

    /// Prepares a publish of one event of [`EVENT_TYPE`] for [`TENANT`] per item of `data`
    /// (each a JSON object's text), to go to every sink.
    fn batch(&self, data: &[&str]) -> Result<Self::Batch>;

    /// Publishes `batch` and returns once the target has accepted it durably (as its
    /// durability says); returns the number of events accepted.
    fn publish(&self, batch: &Self::Batch) -> impl Future<Output = Result<usize>> + Send;

    /// Takes up to `max` deliveries for `sink`, waiting up to `wait` for the first.
    fn consume(
        &self,
        sink: usize,
        max: u32,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Self::Delivery>>> + Send;

    /// Acknowledges `deliveries` of `sink` in one call; returns how many the target took.
    fn ack(
        &self,
        sink: usize,
        deliveries: Vec<Self::Delivery>,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// The `sent_ns` number in the delivered event's data, if any.
    fn sent_ns(delivery: &Self::Delivery) -> Option<u64>;

    /// The server's resources now.
    fn footprint(&self) -> Footprint;

    /// Things the server logged that deserve a look (warnings, errors).
    fn warnings(&self) -> Vec<String>;

    /// Stops the instance and removes its data.
    fn stop(self) -> impl Future<Output = Result<()>> + Send;
}

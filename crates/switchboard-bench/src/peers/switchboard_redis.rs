//! switchboard on Redis as a benchmark target: a `redis-server` of the run's own (`appendonly
//! yes`, `appendfsync always`, the setting under which a 2xx means durable) and one
//! `switchboard serve --store redis://…` on it, driven exactly like the embedded one. Memory and
//! CPU are the two processes' together (what a user runs); disk is Redis' AOF.

use std::time::Duration;

use anyhow::Result;

use super::redis_server::{Fsync, RedisServer, version};
use crate::server::filesystem_of;
use crate::switchboard::{Batch, Delivery, Switchboard, SwitchboardConfig};
use crate::target::{Footprint, Target};

/// switchboard and the redis-server under it.
pub struct SwitchboardRedis {
    inner: Switchboard,
    redis: RedisServer,
}

fn add<T: std::ops::Add<Output = T>>(a: Option<T>, b: Option<T>) -> Option<T> {
    Some(a? + b?)
}

impl Target for SwitchboardRedis {
    type Config = SwitchboardConfig;
    type Batch = Batch;
    type Delivery = Delivery;

    const NAME: &'static str = "switchboard-redis";

    fn durability(config: &SwitchboardConfig) -> String {
        format!(
            "switchboard on {} (its own, appendonly yes, appendfsync always): each publish and \
             ack is answered after Redis fsynced the AOF holding it; data dir on {}",
            version().unwrap_or_else(|| "redis-server".into()),
            filesystem_of(&config.data_root).unwrap_or_else(|| "an unknown filesystem".into())
        )
    }

    async fn start(config: &SwitchboardConfig, sinks: usize) -> Result<SwitchboardRedis> {
        let data_root = config.data_root.clone();
        let redis =
            tokio::task::spawn_blocking(move || RedisServer::start(&data_root, Fsync::Always))
                .await??;
        let inner = Switchboard::launch(config, sinks, Some(&redis.url())).await?;
        Ok(SwitchboardRedis { inner, redis })
    }

    fn batch(&self, data: &[&str]) -> Result<Batch> {
        self.inner.batch(data)
    }

    async fn publish(&self, batch: &Batch) -> Result<usize> {
        self.inner.publish(batch).await
    }

    async fn consume(&self, sink: usize, max: u32, wait: Duration) -> Result<Vec<Delivery>> {
        self.inner.consume(sink, max, wait).await
    }

    async fn ack(&self, sink: usize, deliveries: Vec<Delivery>) -> Result<u64> {
        self.inner.ack(sink, deliveries).await
    }

    fn sent_ns(delivery: &Delivery) -> Option<u64> {
        Switchboard::sent_ns(delivery)
    }

    fn footprint(&self) -> Footprint {
        let (sb, redis) = (self.inner.footprint(), self.redis.footprint());
        Footprint {
            peak_rss: add(sb.peak_rss, redis.peak_rss),
            rss: add(sb.rss, redis.rss),
            disk: add(sb.disk, redis.disk),
            cpu_seconds: add(sb.cpu_seconds, redis.cpu_seconds),
            written: add(sb.written, redis.written),
            // switchboard's sockets but its listener (its two Redis connections included).
            connections: sb.connections,
        }
    }

    fn warnings(&self) -> Vec<String> {
        self.inner.warnings()
    }

    async fn stop(self) -> Result<()> {
        let SwitchboardRedis { inner, redis } = self;
        inner.stop().await?;
        drop(redis);
        Ok(())
    }
}

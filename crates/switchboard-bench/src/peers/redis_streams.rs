//! Redis Streams as a benchmark target, used directly: a `redis-server` of the run's own
//! (`appendonly yes`, `appendfsync always` or `everysec`), one stream, one consumer group per
//! sink. Publish is `XADD` (a batch is a pipeline of `XADD`s, answered together), consume is
//! `XREADGROUP … BLOCK`, ack is one `XACK` for the batch. Acked entries stay in the stream, as
//! events stay stored in switchboard, so the memory figure is per stored event.
//!
//! Blocking reads get connections of their own (a `BLOCK` holds its connection); publishes and
//! acks share a few multiplexed connections.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

use super::redis_server::{Fsync, RedisServer, version};
use super::{envelope, sent_ns_in};
use crate::server::filesystem_of;
use crate::target::{Footprint, Target};

/// The stream every event goes to.
const STREAM: &str = "bench:events";
/// Multiplexed connections shared by publishes and acks.
const SHARED_CONNECTIONS: usize = 4;
/// How long any reply may take beyond a read's own `BLOCK` time.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the server's directory goes and its fsync policy.
#[derive(Debug, Clone)]
pub struct RedisStreamsConfig {
    pub data_root: PathBuf,
    pub fsync: Fsync,
}

/// One running redis-server with a stream and a consumer group per sink.
pub struct RedisStreams {
    server: RedisServer,
    client: redis::Client,
    shared: Vec<MultiplexedConnection>,
    next: AtomicUsize,
    /// Idle connections for blocking reads, each with its consumer name.
    readers: Mutex<Vec<(String, MultiplexedConnection)>>,
    readers_made: AtomicUsize,
    sinks: usize,
}

/// A delivered stream entry.
pub struct Entry {
    id: String,
    body: Vec<u8>,
}

fn group(sink: usize) -> String {
    format!("sink-{}", sink + 1)
}

impl RedisStreams {
    fn shared(&self) -> MultiplexedConnection {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.shared.len();
        self.shared[i].clone()
    }

    /// An idle reader connection, or a new one.
    async fn reader(&self) -> Result<(String, MultiplexedConnection)> {
        if let Some(reader) = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(reader);
        }
        let n = self.readers_made.fetch_add(1, Ordering::Relaxed);
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .context("connecting a reader to redis-server")?;
        Ok((format!("reader-{n}"), conn))
    }
}

impl Target for RedisStreams {
    type Config = RedisStreamsConfig;
    type Batch = Vec<Vec<u8>>;
    type Delivery = Entry;

    const NAME: &'static str = "redis-streams";

    fn durability(config: &RedisStreamsConfig) -> String {
        let when = match config.fsync {
            Fsync::Always => "XADD and XACK are answered after the AOF is fsynced",
            Fsync::EverySec => {
                "the AOF is fsynced once a second: a machine crash can lose the last second \
                 of XADDs and XACKs (a kill of redis-server alone loses nothing)"
            }
        };
        format!(
            "{} on its own port, appendonly yes, appendfsync {}: {when}; data dir on {}",
            version().unwrap_or_else(|| "redis-server".into()),
            config.fsync.as_str(),
            filesystem_of(&config.data_root).unwrap_or_else(|| "an unknown filesystem".into())
        )
    }

    async fn start(config: &RedisStreamsConfig, sinks: usize) -> Result<RedisStreams> {
        let (data_root, fsync) = (config.data_root.clone(), config.fsync);
        let server =
            tokio::task::spawn_blocking(move || RedisServer::start(&data_root, fsync)).await??;
        let client = redis::Client::open(server.url())?;
        let config = AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut shared = Vec::with_capacity(SHARED_CONNECTIONS);
        for _ in 0..SHARED_CONNECTIONS {
            shared.push(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .context("connecting to redis-server")?,
            );
        }
        for sink in 0..sinks {
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(STREAM)
                .arg(group(sink))
                .arg("0")
                .arg("MKSTREAM")
                .query_async::<()>(&mut shared[0])
                .await
                .context("XGROUP CREATE")?;
        }
        Ok(RedisStreams {
            server,
            client,
            shared,
            next: AtomicUsize::new(0),
            readers: Mutex::new(Vec::new()),
            readers_made: AtomicUsize::new(0),
            sinks,
        })
    }

    fn batch(&self, data: &[&str]) -> Result<Vec<Vec<u8>>> {
        Ok(data.iter().map(|d| envelope(d)).collect())
    }

    async fn publish(&self, batch: &Vec<Vec<u8>>) -> Result<usize> {
        let mut conn = self.shared();
        let mut pipe = redis::pipe();
        for body in batch {
            pipe.cmd("XADD").arg(STREAM).arg("*").arg("e").arg(body);
        }
        let ids: Vec<Value> = pipe.query_async(&mut conn).await.context("XADD")?;
        if ids.len() != batch.len() {
            bail!("{} XADDs answered {} ids", batch.len(), ids.len());
        }
        Ok(ids.len())
    }

    async fn consume(&self, sink: usize, max: u32, wait: Duration) -> Result<Vec<Entry>> {
        if sink >= self.sinks {
            bail!("no sink {sink}");
        }
        let (consumer, mut conn) = self.reader().await?;
        let reply: Result<Value> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group(sink))
            .arg(&consumer)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg("STREAMS")
            .arg(STREAM)
            .arg(">")
            .query_async(&mut conn)
            .await
            .context("XREADGROUP");
        // A connection whose read failed may be mid-reply: only a clean one goes back.
        if reply.is_ok() {
            self.readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((consumer, conn));
        }
        entries(reply?)
    }

    async fn ack(&self, sink: usize, deliveries: Vec<Entry>) -> Result<u64> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(STREAM).arg(group(sink));
        for entry in &deliveries {
            cmd.arg(&entry.id);
        }
        let acked: u64 = cmd.query_async(&mut self.shared()).await.context("XACK")?;
        Ok(acked)
    }

    fn sent_ns(delivery: &Entry) -> Option<u64> {
        sent_ns_in(&delivery.body)
    }

    fn footprint(&self) -> Footprint {
        Footprint {
            connections: Some(self.shared.len() + self.readers_made.load(Ordering::Relaxed)),
            ..self.server.footprint()
        }
    }

    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    async fn stop(self) -> Result<()> {
        drop(self);
        Ok(())
    }
}

/// The entries of an `XREADGROUP` reply: nil (nothing within `BLOCK`) or
/// `[[stream, [[id, [field, value, …]], …]]]`.
fn entries(reply: Value) -> Result<Vec<Entry>> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams,
        other => bail!("unexpected XREADGROUP reply {other:?}"),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(mut parts) = stream else {
            bail!("unexpected XREADGROUP stream {stream:?}");
        };
        let Some(Value::Array(items)) = parts.pop() else {
            bail!("XREADGROUP stream without entries");
        };
        out.reserve(items.len());
        for item in items {
            let Value::Array(mut pair) = item else {
                bail!("unexpected XREADGROUP entry {item:?}");
            };
            let (Some(Value::Array(mut fields)), Some(Value::BulkString(id))) =
                (pair.pop(), pair.pop())
            else {
                bail!("unexpected XREADGROUP entry shape");
            };
            let Some(Value::BulkString(body)) = fields.pop() else {
                bail!("XREADGROUP entry without a value");
            };
            out.push(Entry {
                id: String::from_utf8(id).context("entry id")?,
                body,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xreadgroup_replies_parse() {
        assert!(entries(Value::Nil).unwrap().is_empty());
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(STREAM),
            Value::Array(vec![
                Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("e"), bulk("{}")])]),
                Value::Array(vec![bulk("1-1"), Value::Array(vec![bulk("e"), bulk("[]")])]),
            ]),
        ])]);
        let got = entries(reply).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].id.as_str(), got[0].body.as_slice()),
            ("1-0", &b"{}"[..])
        );
        assert_eq!(
            (got[1].id.as_str(), got[1].body.as_slice()),
            ("1-1", &b"[]"[..])
        );
        assert!(entries(Value::Int(1)).is_err());
    }
}

//! A `redis-server` of the benchmark's own: a free loopback port, its data in a fresh directory
//! under the data root (so an fsync costs what it costs switchboard), `appendonly yes` with the
//! chosen `appendfsync`, no RDB snapshots. Never the machine's shared Redis on 6379. Killed, and
//! its directory removed, on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::server::{dir_size, process_cpu_seconds, process_memory, process_written_bytes};
use crate::target::Footprint;

/// How long a starting redis-server may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Redis' `appendfsync`: when the AOF is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before the reply to every write (one fsync per event-loop turn, shared by the writes of
    /// that turn).
    Always,
    /// Once a second, in the background.
    EverySec,
}

impl Fsync {
    pub fn as_str(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::EverySec => "everysec",
        }
    }
}

/// A running redis-server child process.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a fresh, empty server (blocking: run it on a blocking thread).
    pub fn start(data_root: &Path, fsync: Fsync) -> Result<RedisServer> {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-bench-redis-")
            .tempdir_in(data_root)
            .with_context(|| format!("cannot create a directory in {}", data_root.display()))?;
        // Another process may take the free port before redis-server binds it: try a few.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .arg("--dir")
                .arg(dir.path())
                .args(["--save", "", "--appendonly", "yes"])
                .args(["--appendfsync", fsync.as_str()])
                .args(["--protected-mode", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot run redis-server (apt-get install redis-server)")?;
            let deadline = Instant::now() + START_TIMEOUT;
            while Instant::now() < deadline {
                if ping(port) {
                    return Ok(RedisServer { child, port, dir });
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        bail!("redis-server would not start on a free port")
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Memory and CPU of the process (from /proc), the size of its directory (the AOF).
    pub fn footprint(&self) -> Footprint {
        let pid = self.pid();
        let memory = process_memory(pid).ok();
        Footprint {
            peak_rss: memory.map(|m| m.peak_rss),
            rss: memory.map(|m| m.rss),
            disk: dir_size(self.dir.path()).ok(),
            cpu_seconds: process_cpu_seconds(&format!("/proc/{pid}/stat")).ok(),
            written: process_written_bytes(pid).ok(),
            connections: None,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-server --version`, e.g. `Redis 7.0.15`; `None` when it does not run.
pub fn version() -> Option<String> {
    let output = Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let v = text.split_whitespace().find(|w| w.starts_with("v="))?;
    Some(format!("Redis {}", &v[2..]))
}

/// Whether a server on `port` answers PING with PONG.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

//! Test helpers shared by the store's tests and the binary's integration tests (feature
//! `conformance`): a real `redis-server` of the test's own, on a free loopback port, with its
//! data in a temp dir. Never the machine's shared Redis.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process with `appendonly yes` and `appendfsync always`, killed
/// (and its temp dir removed) on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

/// How long a starting redis-server may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(20);

impl RedisServer {
    /// Starts a fresh server on a free port; panics with the reason when it cannot.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("a temp dir for redis");
        // Another process may take the free port before redis-server binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut child = spawn(dir.path(), port);
            if wait_ping(port, &mut child) {
                return RedisServer {
                    child: Some(child),
                    port,
                    dir,
                };
            }
        }
        panic!("redis-server would not start on a free port: is it installed?");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// SIGKILL: no shutdown, no final save; only what the AOF already holds survives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data dir (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        self.kill();
        // The port was ours a moment ago; a bounded retry covers a slow release.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut child = spawn(self.dir.path(), self.port);
            if wait_ping(self.port, &mut child) {
                self.child = Some(child);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server would not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits (bounded) until the server on `port` answers PING; false if it exited first.
fn wait_ping(port: u16, child: &mut Child) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if ping(port) {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server did not answer PING within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on right now: bind port 0, read it, let it go.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn spawn(dir: &Path, port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args(["--save", ""])
        .args(["--appendonly", "yes"])
        .args(["--appendfsync", "always"])
        .args(["--protected-mode", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs (scripts/test installs it: apt-get install redis-server)")
}

/// Whether a server on `port` answers PING with PONG (a raw RESP exchange, no client).
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(n) => buf[..n].starts_with(b"+PONG"),
        Err(_) => false,
    }
}

//! A server under test as a child process: started on 127.0.0.1:0 with a fresh data directory,
//! observed through /proc (memory, CPU, sockets) and the data directory's size, stopped with
//! SIGTERM. Any locally run peer (another broker binary) can reuse it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// How long a server may take to say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Log lines kept to explain a failure.
const KEPT_LOG_LINES: usize = 30;
/// Linux reports process CPU times in USER_HZ ticks, 100 per second on every architecture.
const USER_HZ: f64 = 100.0;

/// What the server's log said that deserves a look: warnings and errors, and the last lines.
#[derive(Debug, Default)]
struct LogTail {
    lines: VecDeque<String>,
    warnings: Vec<String>,
}

/// A running server process with its own data directory (removed when this is dropped).
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    addr: String,
    log: Arc<Mutex<LogTail>>,
    data_dir: tempfile::TempDir,
}

/// Memory of a process from /proc/<pid>/status, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// VmHWM: the peak resident set size.
    pub peak_rss: u64,
    /// VmRSS: the resident set size now.
    pub rss: u64,
}

impl ServerProcess {
    /// Runs `binary` with `args`, where the literal `{data_dir}` is replaced by a fresh
    /// directory under `data_root`, plus `envs`; waits until a stderr line holds
    /// `addr=HOST:PORT` (the switchboard listening line, plain text when stderr is a pipe).
    pub fn start(
        binary: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        data_root: &Path,
    ) -> Result<ServerProcess> {
        let data_dir = tempfile::Builder::new()
            .prefix("switchboard-bench-")
            .tempdir_in(data_root)
            .with_context(|| {
                format!("cannot create a data directory in {}", data_root.display())
            })?;
        let mut command = Command::new(binary);
        for arg in args {
            if *arg == "{data_dir}" {
                command.arg(data_dir.path());
            } else {
                command.arg(arg);
            }
        }
        let mut child = command
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let log = Arc::new(Mutex::new(LogTail::default()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread_log = Arc::clone(&log);
        // Reads the log to the end, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = &addr_tx
                    && let Some(rest) = line.split("addr=").nth(1)
                {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.to_owned());
                    addr_tx = None;
                }
                let mut tail = thread_log.lock().unwrap_or_else(|e| e.into_inner());
                if line.contains("WARN") || line.contains("ERROR") {
                    tail.warnings.push(line.clone());
                }
                tail.lines.push_back(line);
                if tail.lines.len() > KEPT_LOG_LINES {
                    tail.lines.pop_front();
                }
            }
        });
        let addr = match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                std::thread::sleep(Duration::from_millis(50));
                let tail = log.lock().unwrap_or_else(|e| e.into_inner());
                bail!(
                    "{} did not report a listening address (exit: {:?}); its log ends with:\n{}",
                    binary.display(),
                    status,
                    Vec::from(tail.lines.clone()).join("\n")
                );
            }
        };
        Ok(ServerProcess {
            child,
            addr,
            log,
            data_dir,
        })
    }

    /// `http://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak and current resident set size.
    pub fn memory(&self) -> Result<Memory> {
        process_memory(self.pid())
    }

    /// User plus system CPU time used so far, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        process_cpu_seconds(&format!("/proc/{}/stat", self.pid()))
    }

    /// Bytes the process caused to be sent to storage so far.
    pub fn written_bytes(&self) -> Result<u64> {
        process_written_bytes(self.pid())
    }

    /// Open sockets of the process (the listener included).
    pub fn sockets(&self) -> Result<usize> {
        let dir = format!("/proc/{}/fd", self.pid());
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            let Ok(entry) = entry else { continue };
            if let Ok(target) = std::fs::read_link(entry.path())
                && target.to_string_lossy().starts_with("socket:")
            {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Bytes of all files under the data directory (apparent sizes).
    pub fn disk_bytes(&self) -> Result<u64> {
        dir_size(self.data_dir.path())
    }

    /// Warning and error lines the server logged so far.
    pub fn warnings(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .warnings
            .clone()
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after a timeout, which is an error).
    pub fn stop(mut self) -> Result<()> {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("cannot run kill")?;
        if !sent.success() {
            bail!("kill -TERM {pid} failed: {sent}");
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    let tail = self.log.lock().unwrap_or_else(|e| e.into_inner());
                    bail!(
                        "the server exited with {status} after SIGTERM; its log ends with:\n{}",
                        Vec::from(tail.lines.clone()).join("\n")
                    );
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the server did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    /// A server left running by an error is killed, so no run leaks a process.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Peak and current resident set size of any process (a server's helper, like redis-server).
pub fn process_memory(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| anyhow!("{path} has no {name}"))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("bad line in {path}: {line}"))?;
        Ok(kib * 1024)
    };
    Ok(Memory {
        peak_rss: field("VmHWM:")?,
        rss: field("VmRSS:")?,
    })
}

/// Bytes a process caused to be sent to storage so far (`write_bytes` of `/proc/PID/io`:
/// what reached the block layer, page-cache writes once they are written back or fsynced).
pub fn process_written_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/io");
    let io = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = io
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .ok_or_else(|| anyhow!("{path} has no write_bytes"))?;
    line.trim()
        .parse()
        .with_context(|| format!("bad write_bytes in {path}: {line}"))
}

/// CPU seconds (user + system) of this benchmark process so far.
pub fn own_cpu_seconds() -> Result<f64> {
    process_cpu_seconds("/proc/self/stat")
}

pub fn process_cpu_seconds(path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("unexpected {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let tick = |i: usize| -> Result<f64> {
        let value: u64 = fields
            .get(i - 3)
            .ok_or_else(|| anyhow!("short {path}"))?
            .parse()
            .with_context(|| format!("bad field {i} in {path}"))?;
        Ok(value as f64)
    };
    Ok((tick(14)? + tick(15)?) / USER_HZ)
}

pub fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// The filesystem type holding `path` (longest mount point prefix in /proc/mounts).
pub fn filesystem_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (device, mount, fs) = (parts.next()?, parts.next()?, parts.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), format!("{fs} ({device} on {mount})")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}

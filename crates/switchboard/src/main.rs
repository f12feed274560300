//! The `switchboard` binary: `serve` runs the hub. Reads flags and the environment, sets up
//! logging and signals, and hands IO and shutdown to `switchboard_server::run`.

mod cli;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard_server::Config;
use switchboard_store::Store;
use switchboard_store::redis::RedisStore;
use switchboard_store::sqlite::{DEFAULT_WRITER_SPIN, SqliteOptions, SqliteStore};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "A self-hosted event hub that tracks every delivery"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub on the embedded store (or on Redis with `--store redis://...`).
    Serve(ServeArgs),
    /// Show the communication matrix of a tenant (or of the whole suite, with the admin key).
    Matrix {
        #[arg(long)]
        tenant: Option<String>,
        /// 1h, 24h, 7d or all.
        #[arg(long)]
        window: Option<String>,
        #[command(flatten)]
        remote: cli::Remote,
    },
    /// Show a tenant's health: the verdict and what to do about it.
    Health {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        window: Option<String>,
        #[command(flatten)]
        remote: cli::Remote,
    },
    /// Follow new events and delivery changes live.
    Tail {
        #[arg(long)]
        tenant: Option<String>,
        /// A type or pattern, like `order.*`.
        #[arg(long = "type")]
        event_type: Option<String>,
        #[command(flatten)]
        remote: cli::Remote,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:7800")]
    listen: SocketAddr,
    /// Where the embedded store keeps its files, and the admin key file (created if missing).
    #[arg(
        long,
        env = "SWITCHBOARD_DATA_DIR",
        default_value = "./switchboard-data"
    )]
    data_dir: PathBuf,
    /// The store: `sqlite` (embedded, in the data directory; the default) or a Redis URL
    /// (`redis://127.0.0.1:6379/0`) that several switchboard nodes share.
    #[arg(long, env = "SWITCHBOARD_STORE", default_value = "sqlite")]
    store: String,
    /// Embedded store: how long its writer, while lightly loaded, polls for the next write
    /// before it sleeps, in microseconds. Lower latency at light load for CPU (about a fifth
    /// of a core at 1,000 events/s); 0 turns it off.
    #[arg(long, env = "SWITCHBOARD_WRITER_SPIN_US",
          default_value_t = DEFAULT_WRITER_SPIN.as_micros() as u64)]
    writer_spin_us: u64,
    /// Threads that serve HTTP. 0 (the default) picks: on the embedded store, one per core
    /// but one, left to its writer thread (at least one); on Redis, one per core.
    #[arg(long, env = "SWITCHBOARD_WORKERS", default_value_t = 0)]
    workers: usize,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Request limits: each refused with a 4xx naming it.
#[derive(clap::Args)]
struct LimitArgs {
    /// Largest request body, in bytes (413 above).
    #[arg(long, env = "SWITCHBOARD_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Most events in one publish batch.
    #[arg(long, env = "SWITCHBOARD_MAX_BATCH", default_value_t = 1000)]
    max_batch: usize,
    /// Most acks in one request.
    #[arg(long, env = "SWITCHBOARD_MAX_ACKS", default_value_t = 1000)]
    max_acks: usize,
    /// How deep event and ack `data` may nest objects and arrays.
    #[arg(long, env = "SWITCHBOARD_MAX_DATA_DEPTH", default_value_t = 32)]
    max_data_depth: usize,
    /// Most target apps one event may name.
    #[arg(long, env = "SWITCHBOARD_MAX_TARGETS", default_value_t = 100)]
    max_targets: usize,
    /// Most deliveries one consume may ask for (`max`).
    #[arg(long, env = "SWITCHBOARD_MAX_CONSUME", default_value_t = 1000)]
    max_consume: u32,
    /// Longest long-poll a consume may ask for (`wait_ms`).
    #[arg(long, env = "SWITCHBOARD_MAX_WAIT_MS", default_value_t = 60_000)]
    max_wait_ms: u64,
    /// Shortest lease (`lease_ms`) a consume or extend may ask for.
    #[arg(long, env = "SWITCHBOARD_MIN_LEASE_MS", default_value_t = 100)]
    min_lease_ms: u64,
    /// Longest lease (`lease_ms`) a consume or extend may ask for.
    #[arg(long, env = "SWITCHBOARD_MAX_LEASE_MS", default_value_t = 12 * 3_600_000)]
    max_lease_ms: u64,
    /// Longest nack `error` text, in bytes.
    #[arg(long, env = "SWITCHBOARD_MAX_ERROR_LEN", default_value_t = 4096)]
    max_error_len: usize,
    /// Largest page a listing may ask for (`limit`).
    #[arg(long, env = "SWITCHBOARD_MAX_PAGE", default_value_t = 1000)]
    max_page: u32,
    /// Largest request head (request line and headers), in bytes (431 above).
    #[arg(long, env = "SWITCHBOARD_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    max_header_bytes: usize,
    /// How long a client may take to send a request head (or a TLS handshake), and how long
    /// a connection may idle between requests, in ms.
    #[arg(long, env = "SWITCHBOARD_HEADER_TIMEOUT_MS", default_value_t = 30_000)]
    header_timeout_ms: u64,
    /// How long a client may take to send a request body, in ms (408 after).
    #[arg(long, env = "SWITCHBOARD_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    body_timeout_ms: u64,
    /// Requests per second each app (and each tenant reader key owner) may make on average;
    /// 0 (the default) is unlimited. Over it: 429 with Retry-After.
    #[arg(long, env = "SWITCHBOARD_RATE_LIMIT", default_value_t = 0.0)]
    rate_limit: f64,
    /// Bursts allowed above --rate-limit (the token bucket's size).
    #[arg(long, env = "SWITCHBOARD_RATE_BURST", default_value_t = 100)]
    rate_burst: u32,
}

impl LimitArgs {
    fn apply(&self, limits: &mut switchboard_server::Limits) {
        limits.max_body_bytes = self.max_body_bytes;
        limits.max_batch = self.max_batch;
        limits.max_acks = self.max_acks;
        limits.max_data_depth = self.max_data_depth;
        limits.max_targets = self.max_targets;
        limits.max_consume = self.max_consume;
        limits.max_wait_ms = self.max_wait_ms;
        limits.min_lease_ms = self.min_lease_ms;
        limits.max_lease_ms = self.max_lease_ms;
        limits.max_error_len = self.max_error_len;
        limits.max_page = self.max_page;
        limits.max_header_bytes = self.max_header_bytes;
        limits.header_timeout = std::time::Duration::from_millis(self.header_timeout_ms);
        limits.body_timeout = std::time::Duration::from_millis(self.body_timeout_ms);
        limits.rate_limit = (self.rate_limit > 0.0).then_some(switchboard_server::RateLimit {
            per_second: self.rate_limit,
            burst: self.rate_burst,
        });
    }
}

const ADMIN_KEY_FILE: &str = "admin.key";

/// The admin key: `SWITCHBOARD_ADMIN_KEY`, else the one saved in the data directory, else a
/// new one, saved there (mode 0600) and said once in the log.
fn admin_key(data_dir: &Path) -> anyhow::Result<String> {
    if let Ok(key) = std::env::var("SWITCHBOARD_ADMIN_KEY")
        && !key.trim().is_empty()
    {
        return Ok(key.trim().to_owned());
    }
    let path = data_dir.join(ADMIN_KEY_FILE);
    if let Ok(saved) = std::fs::read_to_string(&path) {
        return Ok(saved.trim().to_owned());
    }
    let (key, _) = switchboard_server::generate_key();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot save the admin key to {}", path.display()))?;
    writeln!(file, "{key}")?;
    file.sync_all()?;
    tracing::warn!(
        admin_key = %key,
        file = %path.display(),
        "generated an admin key; it is shown this once and kept in the file"
    );
    Ok(key)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            args.data_dir.display()
        )
    })?;
    let mut config = Config::new(admin_key(&args.data_dir)?);
    args.limits.apply(&mut config.limits);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(switchboard_server::Tls::from_files(cert, key)?);
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let store = open_store(&args).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, scheme, data_dir = %args.data_dir.display(), "switchboard listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    switchboard_server::run(config, listener, store, shutdown).await?;
    tracing::info!("switchboard stopped");
    Ok(())
}

/// How many threads serve HTTP (`--workers`). The embedded store's writer is a thread of its
/// own that is busy whenever the server is: with a worker on every core, the workers and the
/// writer take turns on the cores, and every write waits for a hand-off between them. On 2
/// cores one worker took 0.15 ms off the median publish → ack at 1,000 events/s, with the
/// same full-cycle throughput (BENCHMARKS.md, session 18).
fn http_workers(args: &ServeArgs) -> usize {
    if args.workers > 0 {
        return args.workers;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match args.store.as_str() {
        "sqlite" => cores.saturating_sub(1).max(1),
        _ => cores,
    }
}

/// The store `--store` names: the embedded SQLite store, or Redis at a URL.
async fn open_store(args: &ServeArgs) -> anyhow::Result<Arc<dyn Store>> {
    if args.store == "sqlite" {
        let options = SqliteOptions {
            writer_spin: std::time::Duration::from_micros(args.writer_spin_us),
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open_with(&args.data_dir, &options)
            .with_context(|| format!("cannot open the store in {}", args.data_dir.display()))?;
        return Ok(Arc::new(store));
    }
    if args.store.starts_with("redis://") || args.store.starts_with("redis+unix://") {
        // The URL may hold a password: never log it.
        let store = RedisStore::connect(&args.store)
            .await
            .context("cannot connect to the redis store (--store / SWITCHBOARD_STORE)")?;
        tracing::info!("store: redis");
        return Ok(Arc::new(store));
    }
    anyhow::bail!(
        "--store must be `sqlite` or a redis URL like `redis://127.0.0.1:6379/0`, not `{}`",
        args.store
    )
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
        _ = shutdown.cancelled() => return,
    }
    tracing::info!("shutting down: finishing requests in flight");
    shutdown.cancel();
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(args) = &cli.command {
        builder.worker_threads(http_workers(args));
    }
    let runtime = builder.enable_all().build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Matrix {
            tenant,
            window,
            remote,
        } => runtime.block_on(cli::matrix(&remote, tenant.as_deref(), window.as_deref())),
        Command::Health {
            tenant,
            window,
            remote,
        } => runtime.block_on(cli::health(&remote, &tenant, window.as_deref())),
        Command::Tail {
            tenant,
            event_type,
            remote,
        } => runtime.block_on(cli::tail(&remote, tenant.as_deref(), event_type.as_deref())),
    }
}

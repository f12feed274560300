//! The client commands: `matrix`, `health` and `tail`, talking to a running switchboard
//! through the SDK. Output only; they change nothing on the server.

use comfy_table::{Cell, Color, Table, presets::UTF8_FULL_CONDENSED};
use switchboard_client::{Client, MatrixRow};

/// Where the server is and which key to use.
#[derive(clap::Args)]
pub struct Remote {
    /// The server's address.
    #[arg(long, env = "SWITCHBOARD_URL", default_value = "http://127.0.0.1:7800")]
    pub url: String,
    /// An API key (admin, or an app's to see its own channels).
    #[arg(long, env = "SWITCHBOARD_KEY", hide_env_values = true)]
    pub key: String,
}

impl Remote {
    pub fn client(&self) -> Client {
        Client::new(self.url.trim_end_matches('/'), &self.key)
    }
}

fn verdict_cell(status: &str, colour: bool) -> Cell {
    let cell = Cell::new(status);
    if !colour {
        return cell;
    }
    match status {
        "healthy" => cell.fg(Color::Green),
        "degraded" => cell.fg(Color::Yellow),
        _ => cell.fg(Color::Red),
    }
}

fn ms(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(ms) if ms < 10_000 => format!("{ms} ms"),
        Some(ms) if ms < 3_600_000 => format!("{:.1} min", ms as f64 / 60_000.0),
        Some(ms) => format!("{:.1} h", ms as f64 / 3_600_000.0),
    }
}

fn matrix_table(rows: &[MatrixRow], colour: bool) -> Table {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header(vec![
        "source → target",
        "published",
        "acked",
        "pending",
        "in flight",
        "failed",
        "dead",
        "fail %",
        "p50",
        "p99",
        "oldest",
        "health",
    ]);
    for r in rows {
        table.add_row(vec![
            Cell::new(format!("{} → {}", r.source, r.target)),
            Cell::new(r.published),
            Cell::new(r.acknowledged),
            Cell::new(r.pending),
            Cell::new(r.in_flight),
            Cell::new(r.failed),
            Cell::new(r.dead),
            Cell::new(
                r.failure_rate
                    .map_or("-".into(), |f| format!("{:.1}", f * 100.0)),
            ),
            Cell::new(ms(r.latency_ms.p50)),
            Cell::new(ms(r.latency_ms.p99)),
            Cell::new(ms(r.oldest_pending_age_ms)),
            verdict_cell(&r.health, colour),
        ]);
    }
    table
}

fn colour() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdout()) && std::env::var_os("NO_COLOR").is_none()
}

pub async fn matrix(
    remote: &Remote,
    tenant: Option<&str>,
    window: Option<&str>,
) -> anyhow::Result<()> {
    let client = remote.client();
    let matrix = match tenant {
        Some(t) => client.matrix(t, window).await?,
        None => client.suite_matrix(window).await?,
    };
    let who = matrix.tenant.as_deref().unwrap_or("the whole suite");
    println!("{who}, last {}", matrix.window);
    if matrix.channels.is_empty() {
        println!("no traffic");
        return Ok(());
    }
    println!("{}", matrix_table(&matrix.channels, colour()));
    Ok(())
}

pub async fn health(remote: &Remote, tenant: &str, window: Option<&str>) -> anyhow::Result<()> {
    let h = remote.client().health_of(tenant, window).await?;
    let colour = colour();
    let mut summary = Table::new();
    summary.load_style(UTF8_FULL_CONDENSED).set_header(vec![
        "tenant",
        "status",
        "published",
        "acked",
        "pending",
        "in flight",
        "failed",
        "dead",
        "success",
        "p99",
        "oldest",
    ]);
    summary.add_row(vec![
        Cell::new(&h.tenant),
        verdict_cell(&h.status, colour),
        Cell::new(h.counts.published),
        Cell::new(h.counts.acknowledged),
        Cell::new(h.counts.pending),
        Cell::new(h.counts.in_flight),
        Cell::new(h.counts.failed),
        Cell::new(h.counts.dead),
        Cell::new(
            h.success_rate
                .map_or("-".into(), |s| format!("{:.1}%", s * 100.0)),
        ),
        Cell::new(ms(h.latency_ms.p99)),
        Cell::new(ms(h.oldest_pending_age_ms)),
    ]);
    println!("{summary}");
    if h.reasons.is_empty() {
        println!("every channel is healthy (last {})", h.window);
        return Ok(());
    }
    let mut reasons = Table::new();
    reasons.load_style(UTF8_FULL_CONDENSED).set_header(vec![
        "channel",
        "status",
        "rule",
        "what to do",
    ]);
    for r in &h.reasons {
        reasons.add_row(vec![
            Cell::new(format!("{} → {}", r.source, r.target)),
            verdict_cell(&r.status, colour),
            Cell::new(&r.rule),
            Cell::new(&r.message),
        ]);
    }
    println!("{reasons}");
    Ok(())
}

/// Follows the live stream, one line per change, until the server closes it or Ctrl-C.
pub async fn tail(
    remote: &Remote,
    tenant: Option<&str>,
    pattern: Option<&str>,
) -> anyhow::Result<()> {
    let mut stream = remote.client().stream(tenant, pattern).await?;
    while let Some(change) = stream.next().await {
        let c = change?;
        let target = c.target.map(|t| format!(" → {t}")).unwrap_or_default();
        let targets = match c.targets.is_empty() {
            true => String::new(),
            false => format!(" → {}", c.targets.join(", ")),
        };
        let mut line = format!(
            "{} {:<22} {} {} {}{}{} {}",
            c.at, c.kind, c.tenant, c.event_type, c.source, target, targets, c.event_id
        );
        if let Some(attempt) = c.attempt {
            line.push_str(&format!(" attempt {attempt}"));
        }
        if let Some(latency) = c.latency_ms {
            line.push_str(&format!(" {latency} ms"));
        }
        if let Some(error) = c.error {
            line.push_str(&format!(" error: {error}"));
        }
        println!("{line}");
    }
    Ok(())
}

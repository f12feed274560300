//! The side-by-side view of a run against the peers: for each key figure, every target's median
//! with its min–max spread, switchboard's ratio to it, and the durability each one had, so no
//! ratio compares unequal guarantees without saying so. Also the JSON of the whole run.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::report::{Figure, Machine, Report, SHOWN_WARNINGS, number};

/// What a target promised when it answered a publish, or an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// On disk (fsynced) before the reply: switchboard, Redis with `appendfsync always`,
    /// RabbitMQ's publisher confirms (its fsyncs batched across publishers, like a group
    /// commit).
    FsyncBeforeReply,
    /// fsynced within about a second after the reply.
    FsyncPerSecond,
    /// In the OS page cache at the reply, fsynced later by the server's own schedule.
    NoFsyncBeforeReply,
    /// The server does not reply at all (RabbitMQ's `basic.ack`, a JetStream ack): the client
    /// goes on once the message is sent.
    NoReply,
}

impl Guarantee {
    /// A word or two for the table's column.
    pub fn short(self) -> &'static str {
        match self {
            Guarantee::FsyncBeforeReply => "fsync",
            Guarantee::FsyncPerSecond => "1 s",
            Guarantee::NoFsyncBeforeReply => "page cache",
            Guarantee::NoReply => "unconfirmed",
        }
    }
}

/// What a publish reply and an ack reply meant for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Durability {
    pub publish: Guarantee,
    pub ack: Guarantee,
}

impl Durability {
    /// `publish / ack`, e.g. `fsync / unconfirmed`.
    pub fn short(self) -> String {
        format!("{} / {}", self.publish.short(), self.ack.short())
    }

    /// Whether a figure of `other` promised what this one did: the publish always, the ack
    /// too when the figure includes acks.
    fn equal_to(self, other: Durability, with_acks: bool) -> bool {
        self.publish == other.publish && (!with_acks || self.ack == other.ack)
    }
}

/// Whether more of a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// One figure to put side by side: the workload's title and the figure's name in the reports.
#[derive(Debug, Clone)]
pub struct KeyFigure {
    pub workload: String,
    pub figure: &'static str,
    pub better: Better,
    /// Whether the figure includes acks (so their durability counts too).
    pub with_acks: bool,
}

/// What happened to one target in this invocation.
#[derive(Debug, Serialize)]
pub struct TargetResult {
    /// The name `--only` takes.
    pub name: &'static str,
    pub guarantee: Durability,
    /// What a successful publish and ack guaranteed, in words.
    pub durability: String,
    /// Whether `--only` named it (the comparison tables leave out the others).
    pub selected: bool,
    /// Why it did not run (not reachable, not installed, not selected by `--only`).
    pub skipped: Option<String>,
    /// Why its memory is not in the report, when it is not.
    pub footprint_note: Option<String>,
    /// Its figures, when it ran.
    pub report: Option<Report>,
    /// The 1, 5 and 15 minute load averages before each run, by workload title.
    pub load: Vec<(String, Vec<String>)>,
}

impl TargetResult {
    fn figure(&self, key: &KeyFigure) -> Option<&Figure> {
        let name = format!("{}: {}", key.workload, key.figure);
        self.report
            .as_ref()?
            .figures
            .iter()
            .find(|f| f.name == name)
    }
}

/// One target's row of a compared figure.
#[derive(Debug, Serialize)]
pub struct Row {
    pub target: &'static str,
    pub median: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Each base target's median divided by this one's, by base name.
    pub ratios: Vec<(&'static str, f64)>,
    /// The base targets whose guarantee differs from this one's.
    pub unequal_durability_with: Vec<&'static str>,
    /// Why there is no figure.
    pub missing: Option<String>,
}

/// One key figure across the targets.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub workload: String,
    pub figure: String,
    pub unit: String,
    pub better: Better,
    pub rows: Vec<Row>,
}

/// Everything one invocation measured, as written to `--json`.
#[derive(Debug, Serialize)]
pub struct Suite {
    pub command: String,
    pub machine: Machine,
    pub load_before: String,
    pub load_after: String,
    pub settings: serde_json::Value,
    pub runs: usize,
    /// The targets the ratios are taken against (switchboard's own variants that ran).
    pub bases: Vec<&'static str>,
    pub targets: Vec<TargetResult>,
    pub comparisons: Vec<Comparison>,
}

impl Suite {
    /// Builds the comparisons of `keys` over `targets`, with ratios to each of `bases` that ran.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        command: String,
        machine: Machine,
        load_before: String,
        load_after: String,
        settings: serde_json::Value,
        runs: usize,
        bases: &[&'static str],
        targets: Vec<TargetResult>,
        keys: &[KeyFigure],
    ) -> Suite {
        let bases: Vec<&'static str> = bases
            .iter()
            .copied()
            .filter(|b| targets.iter().any(|t| t.name == *b && t.report.is_some()))
            .collect();
        let comparisons = keys
            .iter()
            .filter_map(|key| compare(key, &targets, &bases))
            .collect();
        Suite {
            command,
            machine,
            load_before,
            load_after,
            settings,
            runs,
            bases,
            targets,
            comparisons,
        }
    }

    /// The comparison as an aligned plain-text table, with the durability legend first.
    pub fn table(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "\n=== switchboard against the peers ===\ncommand:  {}\nmachine:  {} CPUs ({}), {} RAM, Linux {}\nload avg: {} before, {} after\nruns:     median of {} per figure, min–max beside it; a column \"X ÷\" is X's median divided by the row's{}\n\ndurability (publish / ack: fsync = fsynced before the reply; 1 s = fsynced within about a second; page cache = written, not fsynced; unconfirmed = the server sends no reply):\n",
            self.command,
            m.nproc,
            m.cpu_model,
            m.memory_mib
                .map_or_else(|| "? MiB".to_owned(), |mib| format!("{mib} MiB")),
            m.kernel.as_deref().unwrap_or("?"),
            self.load_before,
            self.load_after,
            self.runs,
            if self.bases.is_empty() {
                " (no switchboard target ran: no ratios)"
            } else {
                ""
            },
        );
        let name_w = self
            .targets
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(8)
            .max(8);
        for t in &self.targets {
            match &t.skipped {
                Some(why) => out.push_str(&format!("  {:<name_w$}  skipped: {why}\n", t.name)),
                None => out.push_str(&format!(
                    "  {:<name_w$}  {}: {}\n",
                    t.name,
                    t.guarantee.short(),
                    t.durability
                )),
            }
        }
        let mut dagger = false;
        for c in &self.comparisons {
            out.push_str(&format!(
                "\n{}: {} ({}, {} is better)\n",
                c.workload,
                c.figure,
                c.unit,
                match c.better {
                    Better::Higher => "higher",
                    Better::Lower => "lower",
                }
            ));
            let cells: Vec<(String, String, String, Vec<String>)> = c
                .rows
                .iter()
                .map(|r| {
                    let (median, range) = match (r.median, r.min, r.max) {
                        (Some(med), Some(min), Some(max)) => {
                            (number(med), format!("{}–{}", number(min), number(max)))
                        }
                        _ => (String::new(), String::new()),
                    };
                    let guarantee = self
                        .targets
                        .iter()
                        .find(|t| t.name == r.target)
                        .map_or_else(String::new, |t| t.guarantee.short());
                    let ratios = self
                        .bases
                        .iter()
                        .map(|b| {
                            if *b == r.target {
                                "–".to_owned()
                            } else if let Some((_, x)) = r.ratios.iter().find(|(n, _)| n == b) {
                                let mark = if r.unequal_durability_with.contains(b) {
                                    dagger = true;
                                    " †"
                                } else {
                                    ""
                                };
                                format!("{x:.2}{mark}")
                            } else {
                                String::new()
                            }
                        })
                        .collect();
                    (median, range, guarantee, ratios)
                })
                .collect();
            let med_w = cells
                .iter()
                .map(|c| c.0.chars().count())
                .max()
                .unwrap_or(0)
                .max(6);
            let range_w = cells
                .iter()
                .map(|c| c.1.chars().count())
                .max()
                .unwrap_or(0)
                .max(7);
            let g_w = cells
                .iter()
                .map(|c| c.2.chars().count())
                .max()
                .unwrap_or(0)
                .max(10);
            let ratio_heads: Vec<String> = self.bases.iter().map(|b| format!("{b} ÷")).collect();
            let mut head = format!(
                "  {:<name_w$}  {:>med_w$}  {:>range_w$}  {:<g_w$}",
                "target", "median", "min–max", "durability"
            );
            for h in &ratio_heads {
                head.push_str(&format!("  {h:>w$}", w = h.chars().count().max(8)));
            }
            out.push_str(head.trim_end());
            out.push('\n');
            for (row, (median, range, guarantee, ratios)) in c.rows.iter().zip(&cells) {
                if let Some(why) = &row.missing {
                    out.push_str(&format!("  {:<name_w$}  {why}\n", row.target));
                    continue;
                }
                let mut line = format!(
                    "  {:<name_w$}  {median:>med_w$}  {range:>range_w$}  {guarantee:<g_w$}",
                    row.target
                );
                for (h, ratio) in ratio_heads.iter().zip(ratios) {
                    line.push_str(&format!("  {ratio:>w$}", w = h.chars().count().max(8)));
                }
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
        if dagger {
            out.push_str(
                "\n† unequal durability (see above): the peer promised less at its publish \
                 reply, or, for a figure that includes acks, at its ack: this ratio flatters it.\n",
            );
        }
        for t in &self.targets {
            let Some(report) = &t.report else { continue };
            for w in report.warnings.iter().take(SHOWN_WARNINGS) {
                out.push_str(&format!("warning: {}: {w}\n", t.name));
            }
            if report.warnings.len() > SHOWN_WARNINGS {
                out.push_str(&format!(
                    "… and {} more warnings of {} (all of them in the JSON)\n",
                    report.warnings.len() - SHOWN_WARNINGS,
                    t.name
                ));
            }
            for f in &report.failures {
                out.push_str(&format!("FAILED: {}: {f}\n", t.name));
            }
        }
        out
    }

    /// Whether any run of any target failed.
    pub fn failed(&self) -> bool {
        self.targets
            .iter()
            .filter_map(|t| t.report.as_ref())
            .any(|r| !r.failures.is_empty())
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

/// The comparison of one key figure, `None` when no target has it.
fn compare(
    key: &KeyFigure,
    targets: &[TargetResult],
    bases: &[&'static str],
) -> Option<Comparison> {
    let unit = targets.iter().find_map(|t| t.figure(key))?.unit.clone();
    let base_figures: Vec<(&'static str, Durability, f64)> = bases
        .iter()
        .filter_map(|b| {
            let t = targets.iter().find(|t| t.name == *b)?;
            Some((*b, t.guarantee, t.figure(key)?.median))
        })
        .collect();
    let rows = targets
        .iter()
        .filter(|t| t.selected)
        .map(|t| {
            let Some(f) = t.figure(key) else {
                let missing = if t.skipped.is_some() {
                    "skipped (see durability above)".to_owned()
                } else if let Some(note) = t
                    .footprint_note
                    .as_ref()
                    .filter(|_| of_the_server_process(&unit))
                {
                    format!("not measured: {note}")
                } else {
                    "no figure (every run failed: see below)".to_owned()
                };
                return Row {
                    target: t.name,
                    median: None,
                    min: None,
                    max: None,
                    ratios: Vec::new(),
                    unequal_durability_with: Vec::new(),
                    missing: Some(missing),
                };
            };
            let ratios = base_figures
                .iter()
                .filter(|(b, _, _)| *b != t.name && f.median != 0.0)
                .map(|(b, _, m)| (*b, m / f.median))
                .collect();
            let unequal = base_figures
                .iter()
                .filter(|(b, d, _)| *b != t.name && !d.equal_to(t.guarantee, key.with_acks))
                .map(|(b, _, _)| *b)
                .collect();
            Row {
                target: t.name,
                median: Some(f.median),
                min: Some(f.min),
                max: Some(f.max),
                ratios,
                unequal_durability_with: unequal,
                missing: None,
            }
        })
        .collect();
    Some(Comparison {
        workload: key.workload.clone(),
        figure: key.figure.to_owned(),
        unit,
        better: key.better,
        rows,
    })
}

/// Whether figures in `unit` are read off the server's process (its memory, what it wrote to
/// storage), which a broker run as a system service does not give the benchmark.
fn of_the_server_process(unit: &str) -> bool {
    matches!(unit, "MiB" | "bytes")
}

/// The 1, 5 and 15 minute load averages, as `uptime` shows them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Guarantee::{FsyncBeforeReply, FsyncPerSecond, NoReply};

    fn target(
        name: &'static str,
        (publish, ack): (Guarantee, Guarantee),
        median: Option<f64>,
    ) -> TargetResult {
        let report = median.map(|m| {
            let mut r = Report::new(
                name,
                String::new(),
                Machine::detect(),
                serde_json::Value::Null,
                1,
            );
            for w in ["publish", "cycle"] {
                r.figures.push(Figure {
                    name: format!("{w}: throughput"),
                    workload: w.into(),
                    figure: "throughput".into(),
                    unit: "events/s".into(),
                    median: m,
                    min: m,
                    max: m,
                    runs: vec![m],
                });
            }
            r
        });
        TargetResult {
            name,
            guarantee: Durability { publish, ack },
            durability: String::new(),
            selected: true,
            skipped: median.is_none().then(|| "not reachable".to_owned()),
            footprint_note: None,
            report,
            load: Vec::new(),
        }
    }

    fn suite(targets: Vec<TargetResult>) -> Suite {
        let key = |workload: &str, with_acks| KeyFigure {
            workload: workload.into(),
            figure: "throughput",
            better: Better::Higher,
            with_acks,
        };
        Suite::new(
            "cmd".into(),
            Machine::detect(),
            "0".into(),
            "0".into(),
            serde_json::Value::Null,
            1,
            &["switchboard", "switchboard-redis"],
            targets,
            &[key("publish", false), key("cycle", true)],
        )
    }

    #[test]
    fn ratios_flag_unequal_durability_and_skips_are_not_zero() {
        let fsync = (FsyncBeforeReply, FsyncBeforeReply);
        let suite = suite(vec![
            target("switchboard", fsync, Some(1000.0)),
            target("redis-streams-always", fsync, Some(500.0)),
            target(
                "redis-streams-everysec",
                (FsyncPerSecond, FsyncPerSecond),
                Some(2000.0),
            ),
            target("nats-jetstream", fsync, None),
        ]);
        assert_eq!(suite.bases, ["switchboard"]);
        let rows = &suite.comparisons[0].rows;
        assert_eq!(rows[1].ratios, [("switchboard", 2.0)]);
        assert!(rows[1].unequal_durability_with.is_empty());
        assert_eq!(rows[2].ratios, [("switchboard", 0.5)]);
        assert_eq!(rows[2].unequal_durability_with, ["switchboard"]);
        assert_eq!(rows[3].median, None);
        assert!(rows[3].missing.as_deref().unwrap().starts_with("skipped"));
        let table = suite.table();
        assert!(table.contains("0.50 †"), "{table}");
        let mut skipped_rows = table
            .lines()
            .filter(|l| l.trim_start().starts_with("nats-jetstream"));
        assert!(skipped_rows.clone().count() >= 3, "{table}");
        assert!(skipped_rows.all(|l| l.contains("skipped")), "{table}");
    }

    #[test]
    fn a_system_service_has_its_process_figures_not_measured_not_failed() {
        let fsync = (FsyncBeforeReply, FsyncBeforeReply);
        let mut switchboard = target("switchboard", fsync, Some(1000.0));
        if let Some(r) = switchboard.report.as_mut() {
            r.figures.push(Figure {
                name: "cycle: bytes to storage per event".into(),
                workload: "cycle".into(),
                figure: "bytes to storage per event".into(),
                unit: "bytes".into(),
                median: 900.0,
                min: 900.0,
                max: 900.0,
                runs: vec![900.0],
            });
        }
        let mut rabbitmq = target("rabbitmq", (FsyncBeforeReply, NoReply), Some(1000.0));
        rabbitmq.footprint_note = Some("a system service".into());
        let key = KeyFigure {
            workload: "cycle".into(),
            figure: "bytes to storage per event",
            better: Better::Lower,
            with_acks: true,
        };
        let bytes = compare(&key, &[switchboard, rabbitmq], &["switchboard"]).expect("compared");
        assert_eq!(
            bytes.rows[1].missing.as_deref(),
            Some("not measured: a system service")
        );
    }

    #[test]
    fn unconfirmed_acks_count_only_where_the_figure_has_acks() {
        let suite = suite(vec![
            target(
                "switchboard",
                (FsyncBeforeReply, FsyncBeforeReply),
                Some(1000.0),
            ),
            target("rabbitmq", (FsyncBeforeReply, NoReply), Some(1000.0)),
        ]);
        let publish = &suite.comparisons[0].rows[1];
        let cycle = &suite.comparisons[1].rows[1];
        assert!(publish.unequal_durability_with.is_empty());
        assert_eq!(cycle.unequal_durability_with, ["switchboard"]);
        assert!(suite.table().contains("fsync / unconfirmed"));
    }
}

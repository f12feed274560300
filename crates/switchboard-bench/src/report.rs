//! The results: figures gathered over runs, printed as an aligned plain-text table and written
//! as JSON (every figure with its unit, median, min, max and each run's value).

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::stats::spread;
use crate::workloads::RunOutcome;

/// Warnings a table shows; the rest are counted.
pub const SHOWN_WARNINGS: usize = 10;

/// The machine the benchmark ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub memory_mib: Option<u64>,
    pub kernel: Option<String>,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .map(|kib| kib / 1024);
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_mib,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|k| k.trim().to_owned()),
        }
    }
}

/// One figure over all runs of a workload.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// `workload: figure`, unique in the report.
    pub name: String,
    pub workload: String,
    pub figure: String,
    pub unit: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// The value of each run, in run order.
    pub runs: Vec<f64>,
}

/// Everything a benchmark invocation measured about one target.
#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub durability: String,
    pub machine: Machine,
    pub settings: serde_json::Value,
    pub runs: usize,
    pub figures: Vec<Figure>,
    pub warnings: Vec<String>,
    pub failures: Vec<String>,
}

impl Report {
    pub fn new(
        target: &str,
        durability: String,
        machine: Machine,
        settings: serde_json::Value,
        runs: usize,
    ) -> Report {
        Report {
            target: target.to_owned(),
            durability,
            machine,
            settings,
            runs,
            figures: Vec::new(),
            warnings: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Adds one run's measures to the figures of `workload` (in first-seen order).
    pub fn add_run(&mut self, workload: &str, run: usize, outcome: RunOutcome) {
        for m in outcome.measures {
            let name = format!("{workload}: {}", m.name);
            match self.figures.iter_mut().find(|f| f.name == name) {
                Some(figure) => figure.runs.push(m.value),
                None => self.figures.push(Figure {
                    name,
                    workload: workload.to_owned(),
                    figure: m.name.to_owned(),
                    unit: m.unit.to_owned(),
                    median: 0.0,
                    min: 0.0,
                    max: 0.0,
                    runs: vec![m.value],
                }),
            }
        }
        self.warnings.extend(
            outcome
                .warnings
                .into_iter()
                .map(|w| format!("{workload}, run {run}: {w}")),
        );
        for figure in &mut self.figures {
            if let Some(s) = spread(&figure.runs) {
                (figure.median, figure.min, figure.max) = (s.median, s.min, s.max);
            }
        }
    }

    pub fn add_failure(&mut self, workload: &str, run: usize, error: &anyhow::Error) {
        self.failures
            .push(format!("{workload}, run {run} failed: {error:#}"));
    }

    /// The header: target, machine, durability.
    pub fn header(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "target:     {}\nmachine:    {} CPUs ({}), {} RAM, Linux {}\ndurability: {}\nruns:       {} per workload (median, min–max)\n",
            self.target,
            m.nproc,
            m.cpu_model,
            m.memory_mib
                .map_or_else(|| "? MiB".to_owned(), |mib| format!("{mib} MiB")),
            m.kernel.as_deref().unwrap_or("?"),
            self.durability,
            self.runs,
        );
        if cfg!(debug_assertions) {
            out.push_str("WARNING:    the benchmark client is a debug build; use --release\n");
        }
        out
    }

    /// The table of figures, grouped by workload.
    pub fn table(&self) -> String {
        let rows: Vec<(&Figure, String, String)> = self
            .figures
            .iter()
            .map(|f| {
                let range = format!("{}–{}", number(f.min), number(f.max));
                (f, number(f.median), range)
            })
            .collect();
        let name_w = rows
            .iter()
            .map(|(f, _, _)| f.figure.chars().count() + 2)
            .max()
            .unwrap_or(0)
            .max(8);
        let median_w = rows
            .iter()
            .map(|r| r.1.chars().count())
            .max()
            .unwrap_or(0)
            .max(6);
        let range_w = rows
            .iter()
            .map(|r| r.2.chars().count())
            .max()
            .unwrap_or(0)
            .max(7);
        let mut out = format!(
            "{:<name_w$}  {:>median_w$}  {:>range_w$}  unit\n",
            "", "median", "min–max"
        );
        let mut workload = "";
        for (f, median, range) in &rows {
            if f.workload != workload {
                workload = &f.workload;
                out.push_str(workload);
                out.push('\n');
            }
            let name = format!("  {}", f.figure);
            out.push_str(&format!(
                "{name:<name_w$}  {median:>median_w$}  {range:>range_w$}  {}\n",
                f.unit
            ));
        }
        // A server that logs one line per failed request can log thousands: the JSON has all.
        for w in self.warnings.iter().take(SHOWN_WARNINGS) {
            out.push_str(&format!("warning: {w}\n"));
        }
        if self.warnings.len() > SHOWN_WARNINGS {
            out.push_str(&format!(
                "… and {} more warnings (all of them in the JSON)\n",
                self.warnings.len() - SHOWN_WARNINGS
            ));
        }
        for failure in &self.failures {
            out.push_str(&format!("FAILED: {failure}\n"));
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

/// A figure for reading: thousands separated from 1,000 up, three significant digits below.
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x.fract() == 0.0 && x.abs() < 999.5 {
        return format!("{x:.0}");
    }
    let magnitude = x.abs();
    if magnitude >= 999.5 {
        let digits = format!("{:.0}", magnitude);
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if x < 0.0 {
            grouped.insert(0, '-');
        }
        grouped
    } else if magnitude >= 99.95 {
        format!("{x:.0}")
    } else if magnitude >= 9.995 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::number;

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(1234567.4), "1,234,567");
        assert_eq!(number(1000.0), "1,000");
        assert_eq!(number(999.6), "1,000");
        assert_eq!(number(123.4), "123");
        assert_eq!(number(12.34), "12.3");
        assert_eq!(number(1.234), "1.23");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(35.0), "35");
        assert_eq!(number(35.5), "35.5");
    }
}

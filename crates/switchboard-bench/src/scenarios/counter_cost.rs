//! Scenario `counter-cost` (issue 4): what keeping the transparency counters costs publish and
//! ack throughput. The counters cannot be switched off, so the same workloads run against this
//! build's server and a baseline binary built from the last commit before the counters
//! (`--baseline-bin`, e.g. commit 822af6c built in its own worktree), alternating runs
//! (baseline, current) so the machine's drift hits both alike.

use anyhow::{Result, bail};
use serde_json::json;

use super::{Options, Outcome, measure, median_of, new_report};
use crate::switchboard::{Switchboard, SwitchboardConfig};
use crate::target::Target;
use crate::workloads::{RunOutcome, Settings, Workload};

/// Workloads compared, with the figure compared and the name of its ratio.
const COMPARED: [(Workload, &str, &str); 3] = [
    (
        Workload::Publish { batch: 1 },
        "throughput",
        "publish batch 1: current / baseline",
    ),
    (
        Workload::Publish { batch: 100 },
        "throughput",
        "publish batch 100: current / baseline",
    ),
    (
        Workload::FullCycle { sinks: 1 },
        "events acked by every target",
        "full cycle, 1 target: current / baseline",
    ),
];

pub async fn run(config: &SwitchboardConfig, s: &Settings, options: &Options) -> Result<Outcome> {
    let Some(baseline_bin) = options.baseline_bin.clone() else {
        bail!(
            "scenario counter-cost needs --baseline-bin PATH: the switchboard binary of the \
             commit before the counters, e.g.\n  git worktree add --detach /tmp/sb-822af6c 822af6c\n  \
             (cd /tmp/sb-822af6c && CARGO_TARGET_DIR=/tmp/sb-base-target cargo build --release -p switchboard)\n  \
             --baseline-bin /tmp/sb-base-target/release/switchboard"
        );
    };
    if !baseline_bin.is_file() {
        bail!("--baseline-bin {} is not a file", baseline_bin.display());
    }
    let baseline = SwitchboardConfig {
        binary: baseline_bin.clone(),
        data_root: config.data_root.clone(),
    };
    let mut report = new_report(
        "switchboard: current build vs the pre-counter baseline",
        Switchboard::durability(config),
        json!({
            "current": config.binary.display().to_string(),
            "baseline": baseline_bin.display().to_string(),
            "order": "per run and workload: baseline, then current",
            "publish": { "publishers": s.publishers, "window_s": s.publish_window.as_secs_f64() },
            "full_cycle": { "events": s.cycle_events, "publishers": s.cycle_publishers,
                "batch": s.cycle_batch, "consumers": s.consumers_per_sink },
        }),
        options.runs,
    );
    for run in 1..=options.runs {
        for (workload, figure, ratio_name) in COMPARED {
            let mut values = [None, None];
            for (i, (label, cfg)) in [("baseline", &baseline), ("current", config)]
                .into_iter()
                .enumerate()
            {
                let title = format!("{} [{label}]", workload.title(s));
                eprintln!("running {title}, run {run}/{}", options.runs);
                match workload.run::<Switchboard>(cfg, s).await {
                    Ok(outcome) => {
                        values[i] = outcome
                            .measures
                            .iter()
                            .find(|m| m.name == figure)
                            .map(|m| m.value);
                        report.add_run(&title, run, outcome);
                    }
                    Err(e) => {
                        eprintln!("  failed: {e:#}");
                        report.add_failure(&title, run, &e);
                    }
                }
            }
            if let [Some(base), Some(current)] = values {
                let mut outcome = RunOutcome::default();
                measure(&mut outcome, ratio_name, "ratio", current / base);
                report.add_run("current / baseline (same run)", run, outcome);
            }
        }
    }
    let mut summary = Vec::new();
    for (workload, figure, _) in COMPARED {
        let title = workload.title(s);
        let base = median_of(&report, &format!("{title} [baseline]"), figure);
        let current = median_of(&report, &format!("{title} [current]"), figure);
        if let Some((base, current)) = base.zip(current) {
            let change = (current / base - 1.0) * 100.0;
            summary.push(format!(
                "{title}: {figure}: current {current:.0}/s vs baseline {base:.0}/s (medians): \
                 {change:+.1}% (goal: a cost under 10%: {})",
                if change > -10.0 { "met" } else { "NOT met" }
            ));
        }
    }
    Ok((report, summary))
}

//! Health rules: from a channel's figures to a verdict (`healthy`, `degraded`, `unhealthy`)
//! with the reasons that made it so, each naming the channel and the figure and suggesting
//! the next step. Pure: the figures come from the store's counters.

use serde::Serialize;

/// The thresholds; every rule can be tuned (see the server's config).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthRules {
    /// Below this share of successful attempts in the window: degraded.
    pub min_success_rate: f64,
    /// Below this: unhealthy.
    pub critical_success_rate: f64,
    /// A delivery pending or in flight longer than this: degraded.
    pub max_open_age_ms: u64,
    /// Longer than this: unhealthy.
    pub critical_open_age_ms: u64,
    /// More failed attempts plus dead deliveries in the last hour than this: degraded.
    pub max_failures_last_hour: u64,
    /// A target with pending deliveries that has not consumed for this long: unhealthy.
    pub max_consumer_silence_ms: u64,
}

impl Default for HealthRules {
    fn default() -> Self {
        HealthRules {
            min_success_rate: 0.95,
            critical_success_rate: 0.5,
            max_open_age_ms: 5 * 60_000,
            critical_open_age_ms: 60 * 60_000,
            max_failures_last_hour: 10,
            max_consumer_silence_ms: 5 * 60_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

/// Which rule fired; stable names, used in alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    SuccessRate,
    OldestOpen,
    RecentFailures,
    ConsumerSilent,
}

impl Rule {
    pub const ALL: [Rule; 4] = [
        Rule::SuccessRate,
        Rule::OldestOpen,
        Rule::RecentFailures,
        Rule::ConsumerSilent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::SuccessRate => "success_rate",
            Rule::OldestOpen => "oldest_open",
            Rule::RecentFailures => "recent_failures",
            Rule::ConsumerSilent => "consumer_silent",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What the rules look at, for one channel (tenant, source → target).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelFigures {
    pub source: String,
    pub target: String,
    /// Attempts acknowledged and failed (nacked or timed out) in the window.
    pub acked_in_window: u64,
    pub failed_attempts_in_window: u64,
    /// Failed attempts plus deaths in the last hour.
    pub failures_last_hour: u64,
    pub pending: u64,
    pub in_flight: u64,
    /// Age of the oldest pending or in-flight delivery.
    pub oldest_open_ms: Option<u64>,
    /// Since the target last consumed (any tenant); `None` if it never did.
    pub target_silent_ms: Option<u64>,
}

impl ChannelFigures {
    /// Share of attempts that succeeded in the window; `None` without attempts.
    pub fn success_rate(&self) -> Option<f64> {
        let total = self.acked_in_window + self.failed_attempts_in_window;
        (total > 0).then(|| self.acked_in_window as f64 / total as f64)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    pub rule: Rule,
    pub status: Status,
    pub source: String,
    pub target: String,
    /// The figure that broke the rule (a rate, a count or milliseconds).
    pub figure: f64,
    pub threshold: f64,
    /// A sentence for a person: what is wrong and what to check next.
    pub message: String,
}

fn minutes(ms: u64) -> String {
    match ms {
        ms if ms < 60_000 => format!("{} s", ms / 1000),
        ms if ms < 3_600_000 => format!("{} min", ms / 60_000),
        ms => format!("{:.1} h", ms as f64 / 3_600_000.0),
    }
}

/// The reasons a channel is not healthy; empty when it is.
pub fn evaluate(rules: &HealthRules, c: &ChannelFigures) -> Vec<Reason> {
    let mut reasons = Vec::new();
    let mut reason = |rule, status, figure: f64, threshold: f64, message: String| {
        reasons.push(Reason {
            rule,
            status,
            source: c.source.clone(),
            target: c.target.clone(),
            figure,
            threshold,
            message,
        })
    };
    let (src, dst) = (&c.source, &c.target);
    if let Some(rate) = c.success_rate()
        && rate < rules.min_success_rate
    {
        let status = match rate < rules.critical_success_rate {
            true => Status::Unhealthy,
            false => Status::Degraded,
        };
        reason(
            Rule::SuccessRate,
            status,
            rate,
            rules.min_success_rate,
            format!(
                "{dst} acknowledged {:.1}% of attempts from {src} ({} failed): look at the last errors in GET /v1/dead-letters?target={dst} and the {dst} logs",
                rate * 100.0,
                c.failed_attempts_in_window
            ),
        );
    }
    if let Some(age) = c.oldest_open_ms
        && age > rules.max_open_age_ms
    {
        let status = match age > rules.critical_open_age_ms {
            true => Status::Unhealthy,
            false => Status::Degraded,
        };
        reason(
            Rule::OldestOpen,
            status,
            age as f64,
            rules.max_open_age_ms as f64,
            format!(
                "{dst} has {} pending and {} in flight from {src}, oldest {}: is the {dst} consumer running and keeping up?",
                c.pending,
                c.in_flight,
                minutes(age)
            ),
        );
    }
    if c.failures_last_hour > rules.max_failures_last_hour {
        reason(
            Rule::RecentFailures,
            Status::Degraded,
            c.failures_last_hour as f64,
            rules.max_failures_last_hour as f64,
            format!(
                "{} deliveries from {src} to {dst} failed or died in the last hour: check the errors in GET /v1/dead-letters?target={dst}",
                c.failures_last_hour
            ),
        );
    }
    let silent = c.pending > 0
        && c.target_silent_ms
            .is_none_or(|ms| ms > rules.max_consumer_silence_ms);
    if silent {
        let figure = c.target_silent_ms.unwrap_or(u64::MAX);
        let since = match c.target_silent_ms {
            Some(ms) => format!("has not consumed for {}", minutes(ms)),
            None => "has never consumed".to_owned(),
        };
        reason(
            Rule::ConsumerSilent,
            Status::Unhealthy,
            figure as f64,
            rules.max_consumer_silence_ms as f64,
            format!(
                "{dst} {since} while {} deliveries from {src} wait: start the {dst} consumer",
                c.pending
            ),
        );
    }
    reasons
}

/// The worst status among `reasons`.
pub fn verdict(reasons: &[Reason]) -> Status {
    reasons
        .iter()
        .map(|r| r.status)
        .max()
        .unwrap_or(Status::Healthy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> ChannelFigures {
        ChannelFigures {
            source: "crm".into(),
            target: "hr".into(),
            target_silent_ms: Some(1000),
            ..Default::default()
        }
    }

    fn check_health(c: ChannelFigures, expect: Status, rules: &[Rule]) {
        let reasons = evaluate(&HealthRules::default(), &c);
        assert_eq!(verdict(&reasons), expect, "{reasons:#?}");
        let fired: Vec<Rule> = reasons.iter().map(|r| r.rule).collect();
        assert_eq!(fired, rules);
    }

    #[test]
    fn a_quiet_channel_is_healthy() {
        check_health(channel(), Status::Healthy, &[]);
        check_health(
            ChannelFigures {
                acked_in_window: 100,
                failed_attempts_in_window: 5,
                ..channel()
            },
            Status::Healthy,
            &[],
        );
    }

    #[test]
    fn success_rate() {
        let c = ChannelFigures {
            acked_in_window: 90,
            failed_attempts_in_window: 10,
            ..channel()
        };
        check_health(c, Status::Degraded, &[Rule::SuccessRate]);
        let c = ChannelFigures {
            acked_in_window: 1,
            failed_attempts_in_window: 9,
            ..channel()
        };
        check_health(c, Status::Unhealthy, &[Rule::SuccessRate]);
    }

    #[test]
    fn old_open_deliveries() {
        let c = ChannelFigures {
            pending: 340,
            oldest_open_ms: Some(12 * 60_000),
            ..channel()
        };
        let reasons = evaluate(&HealthRules::default(), &c);
        assert_eq!(
            reasons[0].message,
            "hr has 340 pending and 0 in flight from crm, oldest 12 min: is the hr consumer running and keeping up?"
        );
        check_health(c, Status::Degraded, &[Rule::OldestOpen]);
        let c = ChannelFigures {
            in_flight: 1,
            oldest_open_ms: Some(2 * 3_600_000),
            ..channel()
        };
        check_health(c, Status::Unhealthy, &[Rule::OldestOpen]);
    }

    #[test]
    fn recent_failures() {
        let c = ChannelFigures {
            failures_last_hour: 11,
            acked_in_window: 1000,
            ..channel()
        };
        check_health(c, Status::Degraded, &[Rule::RecentFailures]);
        let c = ChannelFigures {
            failures_last_hour: 10,
            acked_in_window: 1000,
            ..channel()
        };
        check_health(c, Status::Healthy, &[]);
    }

    #[test]
    fn a_silent_consumer_with_work_waiting() {
        let c = ChannelFigures {
            pending: 3,
            target_silent_ms: None,
            ..channel()
        };
        check_health(c, Status::Unhealthy, &[Rule::ConsumerSilent]);
        let c = ChannelFigures {
            pending: 3,
            target_silent_ms: Some(6 * 60_000),
            ..channel()
        };
        check_health(c, Status::Unhealthy, &[Rule::ConsumerSilent]);
        let c = ChannelFigures {
            pending: 0,
            target_silent_ms: None,
            ..channel()
        };
        check_health(c, Status::Healthy, &[]);
    }
}

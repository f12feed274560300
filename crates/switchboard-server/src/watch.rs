//! The health watcher: a background worker that evaluates every channel's health on an
//! interval and, when a rule starts or stops firing, publishes `switchboard.alert.raised` or
//! `switchboard.alert.cleared` (source `switchboard`) to the apps subscribed to it, recording
//! the alert in the same store transaction so it is announced once per change, across
//! restarts. Owned by `run`'s JoinSet; it also prunes old counters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::event::Event;
use switchboard_core::health::{self, Reason};
use switchboard_core::routing::route;
use switchboard_core::{AppId, EventId, EventType, Timestamp};
use switchboard_store::{AlertChange, AlertState, ChannelQuery, NewEvent};

use crate::figures::{figures, silence};
use crate::{State, clock};

/// Health for alerts looks at the last hour.
const ALERT_WINDOW_MS: i64 = 3_600_000;
/// Old counters are pruned this often.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

pub const SOURCE: &str = "switchboard";

type Key = (String, String, String, String);

pub async fn run(state: Arc<State>) {
    let Some(interval) = state.config.alert_interval else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = check(&state).await {
            tracing::warn!(error = %e, "health check for alerts failed");
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = tokio::time::Instant::now();
            prune(&state).await;
        }
    }
}

async fn prune(state: &State) {
    let now = clock::now();
    let minutes = Timestamp(now.millis() - state.config.minute_counters_for.as_millis() as i64);
    let hours = Timestamp(now.millis() - state.config.hour_counters_for.as_millis() as i64);
    match state.store.prune_stats(minutes, hours).await {
        Ok(n) if n > 0 => tracing::debug!(rows = n, "pruned old counters"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "pruning counters failed"),
    }
}

/// One pass: evaluate, then raise and clear what changed.
pub async fn check(state: &State) -> Result<(), switchboard_store::StoreError> {
    let now = clock::now();
    let channels = state
        .store
        .channels(ChannelQuery {
            tenant: None,
            since: Timestamp(now.millis() - ALERT_WINDOW_MS),
            now,
        })
        .await?;
    let activity = state.store.app_activity().await?;
    let silent = silence(&activity, now);
    let mut firing: BTreeMap<Key, (AlertState, Reason)> = BTreeMap::new();
    for c in &channels {
        let figures = figures(c, now, &silent);
        for reason in health::evaluate(&state.config.health, &figures) {
            let alert = AlertState {
                tenant: c.tenant.clone(),
                source: c.source.clone(),
                target: c.target.clone(),
                rule: reason.rule.as_str().to_owned(),
                raised_at: now,
            };
            firing.insert(key(&alert), (alert, reason));
        }
    }
    let raised: BTreeMap<Key, AlertState> = state
        .store
        .alerts()
        .await?
        .into_iter()
        .map(|a| (key(&a), a))
        .collect();
    for (k, (alert, reason)) in &firing {
        if !raised.contains_key(k) {
            announce(state, AlertChange::Raised(alert.clone()), Some(reason), now).await?;
        }
    }
    for (k, alert) in raised {
        if !firing.contains_key(&k) {
            announce(state, AlertChange::Cleared(alert), None, now).await?;
        }
    }
    Ok(())
}

fn key(a: &AlertState) -> Key {
    (
        a.tenant.to_string(),
        a.source.to_string(),
        a.target.to_string(),
        a.rule.clone(),
    )
}

async fn announce(
    state: &State,
    change: AlertChange,
    reason: Option<&Reason>,
    now: Timestamp,
) -> Result<(), switchboard_store::StoreError> {
    let (alert, ty) = match &change {
        AlertChange::Raised(a) => (a, "switchboard.alert.raised"),
        AlertChange::Cleared(a) => (a, "switchboard.alert.cleared"),
    };
    let event_type = EventType::parse(ty).expect("a valid type");
    let source = AppId::parse(SOURCE).expect("a valid app id");
    let mut data = serde_json::json!({
        "tenant": alert.tenant,
        "channel": {"source": alert.source, "target": alert.target},
        "rule": alert.rule,
        "raised_at": alert.raised_at,
    });
    if let Some(r) = reason {
        data["status"] = serde_json::json!(r.status);
        data["figure"] = serde_json::json!(r.figure);
        data["threshold"] = serde_json::json!(r.threshold);
        data["message"] = serde_json::json!(r.message);
    }
    let apps = state.registry.apps();
    let targets = route(
        &source,
        &event_type,
        None,
        apps.iter().map(|a| (&a.id, a.subscriptions.as_slice())),
    );
    let mut entropy = [0u8; 10];
    getrandom::fill(&mut entropy).expect("the OS random source works");
    let event = Event {
        id: EventId::generate(now.millis(), entropy),
        tenant: alert.tenant.clone(),
        event_type: event_type.clone(),
        source: source.clone(),
        time: now,
        data: data.to_string(),
        idempotency_key: None,
        named_targets: None,
        entity_id: Some(format!("{}>{}:{}", alert.source, alert.target, alert.rule)),
        correlation_id: None,
        causation_id: None,
        historical: false,
    };
    let tenant = alert.tenant.clone();
    tracing::info!(tenant = %alert.tenant, source = %alert.source, target = %alert.target, rule = %alert.rule, "{ty}");
    let published = state
        .store
        .record_alert(change, NewEvent { event, targets }, now)
        .await?;
    state
        .wake
        .wake(published.deliveries.iter().map(|d| &d.target));
    state.observe.published(
        &source,
        &[(tenant, event_type)],
        std::slice::from_ref(&published),
        now,
    );
    Ok(())
}

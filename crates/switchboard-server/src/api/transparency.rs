//! Transparency: the communication matrix (per tenant and suite-wide), health verdicts with
//! their reasons, and stats. All from the store's counters, never from scanning deliveries.
//! An app key sees the channels it is the source or target of.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use switchboard_core::health::{self, Reason, Status};
use switchboard_core::histogram::Histogram;
use switchboard_core::{AppId, TenantId, Timestamp};
use switchboard_store::{AppActivity, ChannelQuery, ChannelStats, GroupBy, StatsQuery};

use super::{Problems, json_response, query_params};
use crate::State;
use crate::auth::Caller;
use crate::clock;
use crate::error::ApiError;
use crate::figures::{figures, silence};

/// `1h`, `24h` (default), `7d` or `all`.
fn parse_window(p: &mut Problems, value: Option<&str>) -> (&'static str, Option<u64>) {
    match value.unwrap_or("24h") {
        "1h" => ("1h", Some(3_600_000)),
        "24h" => ("24h", Some(86_400_000)),
        "7d" => ("7d", Some(7 * 86_400_000)),
        "all" => ("all", None),
        other => {
            p.add(
                "window",
                format!("`{other}` is not a window: use 1h, 24h, 7d or all"),
            );
            ("24h", Some(86_400_000))
        }
    }
}

fn since(now: Timestamp, window: Option<u64>) -> Timestamp {
    match window {
        Some(ms) => Timestamp(now.millis() - ms as i64),
        None => Timestamp(0),
    }
}

#[derive(Serialize)]
struct Latency {
    p50: Option<u64>,
    p95: Option<u64>,
    p99: Option<u64>,
}

impl Latency {
    fn of(h: &Histogram) -> Latency {
        Latency {
            p50: h.quantile(0.50),
            p95: h.quantile(0.95),
            p99: h.quantile(0.99),
        }
    }
}

#[derive(Serialize)]
struct Row {
    source: String,
    target: String,
    published: u64,
    acknowledged: u64,
    pending: u64,
    in_flight: u64,
    /// Open deliveries that failed at least once (retrying).
    failed: u64,
    /// In the dead letters now.
    dead: u64,
    failed_attempts: u64,
    died: u64,
    /// Failed attempts over finished attempts in the window.
    failure_rate: Option<f64>,
    latency_ms: Latency,
    oldest_pending_age_ms: Option<u64>,
    health: Status,
    reasons: Vec<Reason>,
}

fn row(
    state: &State,
    c: &ChannelStats,
    now: Timestamp,
    silent: &HashMap<&AppId, Option<u64>>,
) -> Row {
    let f = figures(c, now, silent);
    let reasons = health::evaluate(&state.config.health, &f);
    Row {
        source: c.source.to_string(),
        target: c.target.to_string(),
        published: c.published,
        acknowledged: c.acknowledged,
        pending: c.pending,
        in_flight: c.in_flight,
        failed: c.failing,
        dead: c.dead,
        failed_attempts: c.failed_attempts,
        died: c.died,
        failure_rate: f.success_rate().map(|s| 1.0 - s),
        latency_ms: Latency::of(&c.latency),
        oldest_pending_age_ms: f.oldest_open_ms,
        health: health::verdict(&reasons),
        reasons,
    }
}

/// The channels `caller` may see.
fn visible(caller: &Caller, channels: Vec<ChannelStats>) -> Vec<ChannelStats> {
    match caller {
        Caller::Admin => channels,
        Caller::App(app) => channels
            .into_iter()
            .filter(|c| &c.source == app || &c.target == app)
            .collect(),
        Caller::TenantReader(tenant) => channels
            .into_iter()
            .filter(|c| &c.tenant == tenant)
            .collect(),
    }
}

async fn tenant_channels(
    state: &State,
    caller: &Caller,
    tenant: Option<TenantId>,
    window: Option<u64>,
    now: Timestamp,
) -> Result<(Vec<ChannelStats>, Vec<AppActivity>), ApiError> {
    let channels = state
        .store
        .channels(ChannelQuery {
            tenant,
            since: since(now, window),
            now,
        })
        .await?;
    let activity = state.store.app_activity().await?;
    Ok((visible(caller, channels), activity))
}

#[derive(Serialize)]
struct MatrixOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    window: &'a str,
    since: Timestamp,
    generated_at: Timestamp,
    channels: Vec<Row>,
}

fn tenant_param(tenant: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(tenant).map_err(|e| ApiError::field("tenant", e.0))
}

pub async fn matrix(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    Path(tenant): Path<String>,
    query: Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = query_params(query, &["window"])?;
    let tenant = tenant_param(&tenant)?;
    caller.check_tenant(&tenant)?;
    let mut p = Problems::default();
    let (name, window) = parse_window(&mut p, params.get("window").map(String::as_str));
    p.into_result()?;
    let now = clock::now();
    let (channels, activity) =
        tenant_channels(&state, &caller, Some(tenant.clone()), window, now).await?;
    let silent = silence(&activity, now);
    let out = MatrixOut {
        tenant: Some(tenant.as_str()),
        window: name,
        since: since(now, window),
        generated_at: now,
        channels: channels
            .iter()
            .map(|c| row(&state, c, now, &silent))
            .collect(),
    };
    Ok(json_response(StatusCode::OK, &out))
}

/// The whole suite: one row per (source, target), summed over tenants. Admin only.
pub async fn suite_matrix(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    query: Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = query_params(query, &["window"])?;
    let mut p = Problems::default();
    let (name, window) = parse_window(&mut p, params.get("window").map(String::as_str));
    p.into_result()?;
    let now = clock::now();
    let (channels, activity) = tenant_channels(&state, &caller, None, window, now).await?;
    let mut merged: BTreeMap<(AppId, AppId), ChannelStats> = BTreeMap::new();
    for c in channels {
        match merged.get_mut(&(c.source.clone(), c.target.clone())) {
            None => {
                merged.insert((c.source.clone(), c.target.clone()), c);
            }
            Some(m) => {
                m.published += c.published;
                m.acknowledged += c.acknowledged;
                m.failed_attempts += c.failed_attempts;
                m.died += c.died;
                m.failures_last_hour += c.failures_last_hour;
                m.pending += c.pending;
                m.in_flight += c.in_flight;
                m.failing += c.failing;
                m.dead += c.dead;
                m.oldest_open_at = match (m.oldest_open_at, c.oldest_open_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                m.latency.merge(&c.latency);
            }
        }
    }
    let silent = silence(&activity, now);
    let out = MatrixOut {
        tenant: None,
        window: name,
        since: since(now, window),
        generated_at: now,
        channels: merged
            .values()
            .map(|c| row(&state, c, now, &silent))
            .collect(),
    };
    Ok(json_response(StatusCode::OK, &out))
}

#[derive(Serialize, Default)]
struct Counts {
    published: u64,
    acknowledged: u64,
    pending: u64,
    in_flight: u64,
    failed: u64,
    dead: u64,
    failed_attempts: u64,
}

#[derive(Serialize)]
struct ChannelHealth {
    source: String,
    target: String,
    status: Status,
    reasons: Vec<Reason>,
}

#[derive(Serialize)]
struct HealthOut<'a> {
    tenant: &'a str,
    status: Status,
    window: &'a str,
    checked_at: Timestamp,
    counts: Counts,
    success_rate: Option<f64>,
    oldest_pending_age_ms: Option<u64>,
    latency_ms: Latency,
    channels: Vec<ChannelHealth>,
    /// Every reason, worst first.
    reasons: Vec<Reason>,
}

pub async fn health(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    Path(tenant): Path<String>,
    query: Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = query_params(query, &["window"])?;
    let tenant = tenant_param(&tenant)?;
    caller.check_tenant(&tenant)?;
    let mut p = Problems::default();
    let (name, window) = parse_window(&mut p, params.get("window").map(String::as_str));
    p.into_result()?;
    let now = clock::now();
    let (channels, activity) =
        tenant_channels(&state, &caller, Some(tenant.clone()), window, now).await?;
    let silent = silence(&activity, now);
    let mut counts = Counts::default();
    let mut latency = Histogram::default();
    let mut oldest: Option<u64> = None;
    let mut out_channels = Vec::with_capacity(channels.len());
    let mut reasons = Vec::new();
    for c in &channels {
        counts.published += c.published;
        counts.acknowledged += c.acknowledged;
        counts.pending += c.pending;
        counts.in_flight += c.in_flight;
        counts.failed += c.failing;
        counts.dead += c.dead;
        counts.failed_attempts += c.failed_attempts;
        latency.merge(&c.latency);
        let f = figures(c, now, &silent);
        oldest = oldest.max(f.oldest_open_ms);
        let r = health::evaluate(&state.config.health, &f);
        out_channels.push(ChannelHealth {
            source: f.source.clone(),
            target: f.target.clone(),
            status: health::verdict(&r),
            reasons: r.clone(),
        });
        reasons.extend(r);
    }
    reasons.sort_by_key(|r| std::cmp::Reverse(r.status));
    let finished = counts.acknowledged + counts.failed_attempts;
    let out = HealthOut {
        tenant: tenant.as_str(),
        status: health::verdict(&reasons),
        window: name,
        checked_at: now,
        success_rate: (finished > 0).then(|| counts.acknowledged as f64 / finished as f64),
        counts,
        oldest_pending_age_ms: oldest,
        latency_ms: Latency::of(&latency),
        channels: out_channels,
        reasons,
    };
    Ok(json_response(StatusCode::OK, &out))
}

#[derive(Serialize)]
struct StatsRowOut {
    key: String,
    published: u64,
    acknowledged: u64,
    failed_attempts: u64,
    dead: u64,
}

#[derive(Serialize)]
struct StatsOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    group_by: &'a str,
    since: Timestamp,
    until: Timestamp,
    rows: Vec<StatsRowOut>,
}

pub async fn stats(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    query: Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = query_params(query, &["tenant", "since", "until", "group_by"])?;
    let get = |k: &str| params.get(k).map(String::as_str);
    let mut p = Problems::default();
    let tenant = get("tenant").and_then(|t| p.check("tenant", TenantId::parse(t)));
    let now = clock::now();
    let since = get("since")
        .and_then(|s| p.check("since", Timestamp::parse(s)))
        .unwrap_or(Timestamp(now.millis() - 86_400_000));
    let until = get("until")
        .and_then(|s| p.check("until", Timestamp::parse(s)))
        .unwrap_or(now.plus_ms(1));
    let (group_name, group_by) = match get("group_by").unwrap_or("type") {
        "type" => ("type", GroupBy::Type),
        "source" => ("source", GroupBy::Source),
        "target" => ("target", GroupBy::Target),
        "hour" => ("hour", GroupBy::Hour),
        other => {
            p.add(
                "group_by",
                format!("`{other}` is not a grouping: use type, source, target or hour"),
            );
            ("type", GroupBy::Type)
        }
    };
    if until <= since {
        p.add("until", "must be after `since`");
    }
    p.into_result()?;
    let tenant = caller.tenant_filter(tenant)?;
    let visible_to = caller.app().cloned();
    let rows = state
        .store
        .stats(StatsQuery {
            tenant: tenant.clone(),
            visible_to,
            since,
            until,
            group_by,
        })
        .await?;
    let out = StatsOut {
        tenant: tenant.as_ref().map(TenantId::as_str),
        group_by: group_name,
        since,
        until,
        rows: rows
            .into_iter()
            .map(|r| StatsRowOut {
                key: r.key,
                published: r.published,
                acknowledged: r.acknowledged,
                failed_attempts: r.failed_attempts,
                dead: r.dead,
            })
            .collect(),
    };
    Ok(json_response(StatusCode::OK, &out))
}

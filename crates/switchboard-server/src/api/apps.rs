//! App registration and settings (admin only). The API key is returned once, at creation.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_core::{AppId, AppSettings, RetryPolicy, Subscription, TypePattern};
use switchboard_store::{AppUpdate, NewApp, NewKey};

use super::views::AppView;
use super::{Body, Problems, in_range, parse_json};
use crate::State;
use crate::auth::{generate_key, hash_key};
use crate::clock;
use crate::error::ApiError;

const MAX_SUBSCRIPTIONS: usize = 100;
const MAX_ATTEMPTS_LIMIT: u64 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppIn {
    id: String,
    #[serde(default)]
    subscriptions: Vec<Value>,
    max_attempts: Option<u64>,
    backoff: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppPatch {
    subscriptions: Option<Vec<Value>>,
    max_attempts: Option<u64>,
    backoff: Option<String>,
}

/// Subscriptions are patterns (`"order.*"`) or `{"pattern": "order.*", "ordered": true}`.
fn parse_subscriptions(p: &mut Problems, subs: &[Value]) -> Vec<Subscription> {
    if subs.len() > MAX_SUBSCRIPTIONS {
        p.add(
            "subscriptions",
            format!(
                "{} patterns is over the limit of {MAX_SUBSCRIPTIONS}",
                subs.len()
            ),
        );
        return Vec::new();
    }
    let mut out = Vec::with_capacity(subs.len());
    for (i, item) in subs.iter().enumerate() {
        let field = format!("subscriptions[{i}]");
        let (pattern, ordered) = match item {
            Value::String(s) => (s.as_str(), false),
            Value::Object(o) => {
                let unknown: Vec<&String> = o
                    .keys()
                    .filter(|k| !matches!(k.as_str(), "pattern" | "ordered"))
                    .collect();
                if let Some(k) = unknown.first() {
                    p.add(
                        &field,
                        format!("unknown field `{k}`: use `pattern` and `ordered`"),
                    );
                    continue;
                }
                let Some(pattern) = o.get("pattern").and_then(Value::as_str) else {
                    p.add(
                        format!("{field}.pattern"),
                        "is required: a pattern like `order.*`",
                    );
                    continue;
                };
                match o.get("ordered") {
                    None => (pattern, false),
                    Some(Value::Bool(b)) => (pattern, *b),
                    Some(_) => {
                        p.add(format!("{field}.ordered"), "must be true or false");
                        continue;
                    }
                }
            }
            _ => {
                p.add(&field, "must be a pattern like `order.*` or {\"pattern\": \"order.*\", \"ordered\": true}");
                continue;
            }
        };
        if let Some(pattern) = p.check(field, TypePattern::parse(pattern)) {
            out.push(Subscription { pattern, ordered });
        }
    }
    out
}

fn parse_settings(
    p: &mut Problems,
    base: AppSettings,
    max_attempts: Option<u64>,
    backoff: Option<&str>,
) -> AppSettings {
    let mut settings = base;
    if let Some(n) = max_attempts {
        in_range(p, "max_attempts", n, 1, MAX_ATTEMPTS_LIMIT);
        settings.max_attempts = n.clamp(1, MAX_ATTEMPTS_LIMIT) as u32;
    }
    if let Some(b) = backoff
        && let Some(policy) = p.check("backoff", RetryPolicy::parse(b))
    {
        settings.retry = policy;
    }
    settings
}

pub async fn create(
    AxState(state): AxState<Arc<State>>,
    Body(body): Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let input: AppIn = parse_json(
        &body,
        "app (expected {\"id\", \"subscriptions\", \"max_attempts\"?, \"backoff\"?})",
    )?;
    let mut p = Problems::default();
    let id = p.check("id", AppId::parse(&input.id));
    let subscriptions = parse_subscriptions(&mut p, &input.subscriptions);
    let settings = parse_settings(
        &mut p,
        AppSettings::default(),
        input.max_attempts,
        input.backoff.as_deref(),
    );
    p.into_result()?;
    let id = id.expect("checked");
    if id.as_str() == "switchboard" {
        return Err(ApiError::field(
            "id",
            "`switchboard` is reserved for the hub itself: pick another id",
        ));
    }
    let (api_key, key_id) = generate_key();
    let app = state
        .store
        .create_app(NewApp {
            id,
            subscriptions,
            settings,
            key: NewKey {
                key_id: key_id.clone(),
                hash: hash_key(&api_key),
            },
            now: clock::now(),
        })
        .await?;
    state.registry.reload(&*state.store).await?;
    let mut body = serde_json::to_value(AppView::of(&app)).expect("serializable");
    body["api_key"] = json!(api_key);
    body["key_id"] = json!(key_id);
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn list(
    AxState(state): AxState<Arc<State>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let apps = state.store.list_apps().await?;
    let views: Vec<AppView> = apps.iter().map(AppView::of).collect();
    Ok(Json(json!({ "apps": views })))
}

pub async fn update(
    AxState(state): AxState<Arc<State>>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = AppId::parse(&id).map_err(|e| ApiError::field("id", e.0))?;
    let patch: AppPatch = parse_json(
        &body,
        "app update (expected {\"subscriptions\"?, \"max_attempts\"?, \"backoff\"?})",
    )?;
    let current = state
        .registry
        .apps()
        .iter()
        .find(|a| a.id == id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("unknown_app", format!("unknown app: {id}")))?;
    let mut p = Problems::default();
    let subscriptions = patch
        .subscriptions
        .as_deref()
        .map(|s| parse_subscriptions(&mut p, s));
    let settings = (patch.max_attempts.is_some() || patch.backoff.is_some()).then(|| {
        parse_settings(
            &mut p,
            current.settings.clone(),
            patch.max_attempts,
            patch.backoff.as_deref(),
        )
    });
    p.into_result()?;
    let app = state
        .store
        .update_app(AppUpdate {
            id,
            subscriptions,
            settings,
        })
        .await?;
    state.registry.reload(&*state.store).await?;
    Ok(Json(
        serde_json::to_value(AppView::of(&app)).expect("serializable"),
    ))
}

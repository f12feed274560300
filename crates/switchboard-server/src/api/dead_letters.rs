//! Dead letters: the list of dead deliveries with their events and history, and requeue (by
//! ids, all or nothing, or by filter, in bounded batches). An app key sees and requeues only
//! deliveries sent to it (and sees those it published); a tenant reader sees its tenant's.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use switchboard_core::{AppId, DeliveryId, TenantId, Timestamp, TypePattern};
use switchboard_store::{DeadFilter, DeadLetterQuery, RequeueRequest, RequeueSelector};

use super::inspect::DEFAULT_PAGE;
use super::views::DeliveryRecordView;
use super::{Body, Problems, json_response, page_limit, parse_json, query_params};
use crate::State;
use crate::auth::Caller;
use crate::clock;
use crate::error::ApiError;

/// Dead deliveries moved per store transaction by a requeue by filter.
const REQUEUE_BATCH: usize = 1000;
/// Most ids one requeue by ids may name.
const MAX_REQUEUE_IDS: usize = 1000;

/// Parses the filter fields shared by the list and requeue-by-filter; `prefix` names them.
fn parse_filter(
    p: &mut Problems,
    prefix: &str,
    get: &dyn Fn(&str) -> Option<String>,
) -> DeadFilter {
    let f = |name: &str| format!("{prefix}{name}");
    DeadFilter {
        visible_to: None,
        tenant: get("tenant").and_then(|t| p.check(f("tenant"), TenantId::parse(&t))),
        target: get("target").and_then(|t| p.check(f("target"), AppId::parse(&t))),
        event_type: get("type").and_then(|t| p.check(f("type"), TypePattern::parse(&t))),
        since: get("since").and_then(|t| p.check(f("since"), Timestamp::parse(&t))),
        until: get("until").and_then(|t| p.check(f("until"), Timestamp::parse(&t))),
    }
}

#[derive(Serialize)]
struct ListOut<'a> {
    dead_letters: Vec<DeliveryRecordView<'a>>,
    next_cursor: Option<&'a str>,
}

const LIST_PARAMS: &[&str] = &[
    "tenant", "target", "type", "since", "until", "limit", "cursor",
];

pub async fn list(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    query: Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = query_params(query, LIST_PARAMS)?;
    let mut p = Problems::default();
    let mut filter = parse_filter(&mut p, "", &|k| params.get(k).cloned());
    let limit = page_limit(
        &mut p,
        params.get("limit").map(String::as_str),
        DEFAULT_PAGE,
        state.config.limits.max_page,
    );
    p.into_result()?;
    filter.tenant = caller.tenant_filter(filter.tenant.take())?;
    filter.visible_to = caller.app().cloned();
    let page = state
        .store
        .dead_letters(DeadLetterQuery {
            filter,
            limit,
            cursor: params.get("cursor").cloned(),
        })
        .await?;
    let now = clock::now();
    let out = ListOut {
        dead_letters: page
            .items
            .iter()
            .map(|r| DeliveryRecordView::of(r, now))
            .collect(),
        next_cursor: page.next_cursor.as_deref(),
    };
    Ok(json_response(StatusCode::OK, &out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequeueIn {
    delivery_ids: Option<Vec<String>>,
    filter: Option<FilterIn>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FilterIn {
    tenant: Option<String>,
    target: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

pub async fn requeue(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let input: RequeueIn = parse_json(
        &body,
        "requeue request (expected {\"delivery_ids\": [...]} or {\"filter\": {\"tenant\"?, \"target\"?, \"type\"?, \"since\"?, \"until\"?}})",
    )?;
    let by = match &caller {
        Caller::Admin => "admin".to_owned(),
        Caller::App(app) => app.to_string(),
        // The route's scope keeps readers out; refuse anyway rather than act for no one.
        Caller::TenantReader(_) => {
            return Err(ApiError::forbidden("a tenant reader's key cannot requeue"));
        }
    };
    let mut p = Problems::default();
    let selector = match (input.delivery_ids, input.filter) {
        (Some(ids), None) => {
            if ids.is_empty() || ids.len() > MAX_REQUEUE_IDS {
                p.add(
                    "delivery_ids",
                    format!("send 1 to {MAX_REQUEUE_IDS} ids (or a filter)"),
                );
            }
            let ids: Vec<DeliveryId> = ids
                .iter()
                .enumerate()
                .filter_map(|(i, id)| p.check(format!("delivery_ids[{i}]"), DeliveryId::parse(id)))
                .collect();
            RequeueSelector::Ids(ids)
        }
        (None, Some(f)) => {
            let fields = [
                ("tenant", f.tenant),
                ("target", f.target),
                ("type", f.event_type),
                ("since", f.since),
                ("until", f.until),
            ];
            let get = |k: &str| {
                fields
                    .iter()
                    .find(|(n, _)| *n == k)
                    .and_then(|(_, v)| v.clone())
            };
            let filter = parse_filter(&mut p, "filter.", &get);
            RequeueSelector::Filter {
                filter,
                limit: REQUEUE_BATCH,
            }
        }
        _ => {
            return Err(ApiError::field(
                "delivery_ids",
                "send either `delivery_ids` or `filter` (use an empty filter {} to requeue every dead delivery you can see)",
            ));
        }
    };
    p.into_result()?;
    let by_filter = matches!(selector, RequeueSelector::Filter { .. });
    let mut total = 0;
    loop {
        let moved = state
            .store
            .requeue(RequeueRequest {
                selector: selector.clone(),
                by: by.clone(),
                visible_to: caller.app().cloned(),
                now: clock::now(),
            })
            .await?;
        total += moved.count;
        state.wake.wake(&moved.apps);
        if !by_filter || moved.count < REQUEUE_BATCH || state.shutdown.is_cancelled() {
            break;
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "requeued": total }),
    ))
}

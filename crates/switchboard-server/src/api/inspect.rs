//! Inspection: one event with its deliveries and attempts, and the filtered, paginated event
//! list. An app key sees only events its app published or received; a tenant reader only its
//! tenant's.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use switchboard_core::{AppId, DeliveryStatus, EventId, TenantId, Timestamp, TypePattern};
use switchboard_store::{EventQuery, EventRecord};

use super::views::RecordView;
use super::{Problems, json_response, page_limit, query_params};
use crate::State;
use crate::auth::Caller;
use crate::error::ApiError;

pub const DEFAULT_PAGE: u32 = 50;

fn visible(caller: &Caller, record: &EventRecord) -> bool {
    match caller {
        Caller::Admin => true,
        Caller::App(app) => {
            &record.event.source == app || record.deliveries.iter().any(|d| &d.target == app)
        }
        Caller::TenantReader(tenant) => &record.event.tenant == tenant,
    }
}

pub async fn one(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = EventId::parse(&id).map_err(|e| ApiError::field("id", e.0))?;
    let not_found = || ApiError::not_found("unknown_event", format!("unknown event: {id}"));
    let record = state.store.event(id.clone()).await?.ok_or_else(not_found)?;
    // Another app's (or tenant's) event is reported exactly like a missing one.
    if !visible(&caller, &record) {
        return Err(not_found());
    }
    Ok(json_response(StatusCode::OK, &RecordView::of(&record)))
}

#[derive(Serialize)]
struct PageView<'a> {
    events: Vec<RecordView<'a>>,
    next_cursor: Option<&'a str>,
}

const PARAMS: &[&str] = &[
    "tenant", "type", "source", "target", "status", "since", "until", "limit", "cursor",
];

pub async fn list(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    query: Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = query_params(query, PARAMS)?;
    let get = |k: &str| params.get(k).map(String::as_str);
    let mut p = Problems::default();
    let tenant = get("tenant").and_then(|t| p.check("tenant", TenantId::parse(t)));
    let event_type = get("type").and_then(|t| p.check("type", TypePattern::parse(t)));
    let source = get("source").and_then(|s| p.check("source", AppId::parse(s)));
    let target = get("target").and_then(|s| p.check("target", AppId::parse(s)));
    let status = get("status").and_then(|s| {
        let parsed = DeliveryStatus::parse(s);
        if parsed.is_none() {
            p.add(
                "status",
                format!("`{s}` is not a status: use pending, in_flight, acknowledged or dead"),
            );
        }
        parsed
    });
    let since = get("since").and_then(|s| p.check("since", Timestamp::parse(s)));
    let until = get("until").and_then(|s| p.check("until", Timestamp::parse(s)));
    let limit = page_limit(
        &mut p,
        get("limit"),
        DEFAULT_PAGE,
        state.config.limits.max_page,
    );
    p.into_result()?;
    let tenant = caller.tenant_filter(tenant)?;
    let visible_to = caller.app().cloned();
    let page = state
        .store
        .events(EventQuery {
            visible_to,
            tenant,
            event_type,
            source,
            target,
            status,
            since,
            until,
            limit,
            cursor: get("cursor").map(str::to_owned),
        })
        .await?;
    let view = PageView {
        events: page.events.iter().map(RecordView::of).collect(),
        next_cursor: page.next_cursor.as_deref(),
    };
    Ok(json_response(StatusCode::OK, &view))
}

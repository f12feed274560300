//! Per-tenant views. `unacknowledged`: the reconciliation list of deliveries not yet
//! acknowledged (pending, failing or in flight), oldest first, with age and last error.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use switchboard_core::{TenantId, Timestamp};
use switchboard_store::UnackedQuery;

use super::inspect::DEFAULT_PAGE;
use super::views::DeliveryRecordView;
use super::{Problems, in_range, json_response, page_limit, query_params};
use crate::State;
use crate::auth::Caller;
use crate::clock;
use crate::error::ApiError;

#[derive(Serialize)]
struct UnackedOut<'a> {
    tenant: &'a TenantId,
    unacknowledged: Vec<DeliveryRecordView<'a>>,
    next_cursor: Option<&'a str>,
}

const PARAMS: &[&str] = &["older_than_ms", "limit", "cursor"];

pub async fn unacknowledged(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    Path(tenant): Path<String>,
    query: Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = query_params(query, PARAMS)?;
    let mut p = Problems::default();
    let tenant = p.check("tenant", TenantId::parse(&tenant));
    let older_than_ms = match params.get("older_than_ms").map(|v| v.parse::<u64>()) {
        None => 0,
        Some(Ok(ms)) => {
            in_range(&mut p, "older_than_ms", ms, 0, 365 * 86_400_000);
            ms
        }
        Some(Err(_)) => {
            p.add("older_than_ms", "must be a whole number of milliseconds");
            0
        }
    };
    let limit = page_limit(
        &mut p,
        params.get("limit").map(String::as_str),
        DEFAULT_PAGE,
        state.config.limits.max_page,
    );
    p.into_result()?;
    let tenant = tenant.expect("checked");
    caller.check_tenant(&tenant)?;
    let now = clock::now();
    let page = state
        .store
        .unacknowledged(UnackedQuery {
            tenant: tenant.clone(),
            visible_to: caller.app().cloned(),
            created_before: Timestamp(now.millis() - older_than_ms as i64),
            limit,
            cursor: params.get("cursor").cloned(),
        })
        .await?;
    let out = UnackedOut {
        tenant: &tenant,
        unacknowledged: page
            .items
            .iter()
            .map(|r| DeliveryRecordView::of(r, now))
            .collect(),
        next_cursor: page.next_cursor.as_deref(),
    };
    Ok(json_response(StatusCode::OK, &out))
}

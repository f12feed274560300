//! `GET /v1/stream`: the live feed as server-sent events, filtered by tenant and type
//! pattern. Ends when the server shuts down. Only changes made through this node are seen.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State as AxState};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use switchboard_core::{EventType, TenantId, TypePattern};
use tokio::sync::broadcast::error::RecvError;

use super::{Problems, query_params};
use crate::State;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::observe::Change;

struct Filter {
    tenant: Option<TenantId>,
    pattern: Option<TypePattern>,
    app: Option<String>,
}

impl Filter {
    fn keeps(&self, c: &Change) -> bool {
        let tenant_ok = self.tenant.as_ref().is_none_or(|t| t.as_str() == c.tenant);
        let type_ok = self
            .pattern
            .as_ref()
            .is_none_or(|p| EventType::parse(&c.event_type).is_ok_and(|t| p.matches(&t)));
        let app_ok = self.app.as_ref().is_none_or(|app| {
            &c.source == app || c.target.as_ref() == Some(app) || c.targets.iter().any(|t| t == app)
        });
        tenant_ok && type_ok && app_ok
    }
}

pub async fn stream(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    query: Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = query_params(query, &["tenant", "type"])?;
    let mut p = Problems::default();
    let tenant = params
        .get("tenant")
        .and_then(|t| p.check("tenant", TenantId::parse(t)));
    let pattern = params
        .get("type")
        .and_then(|t| p.check("type", TypePattern::parse(t)));
    p.into_result()?;
    let filter = Filter {
        tenant: caller.tenant_filter(tenant)?,
        pattern,
        app: caller.app().map(ToString::to_string),
    };
    let rx = state.observe.subscribe();
    let shutdown = state.shutdown.clone();
    let events = futures_util::stream::unfold((rx, filter), move |(mut rx, filter)| {
        let shutdown = shutdown.clone();
        async move {
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    next = rx.recv() => next,
                };
                let event = match next {
                    Ok(change) if filter.keeps(&change) => Event::default()
                        .event(change.kind)
                        .json_data(&*change)
                        .unwrap_or_else(|_| Event::default().comment("unserializable change")),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(n)) => Event::default()
                        .event("lagged")
                        .data(format!("{{\"missed\":{n}}}")),
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok::<_, Infallible>(event), (rx, filter)));
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

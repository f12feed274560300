//! Consume (long-poll lease), ack and nack. The lease loop waits on the app's wake-up, the
//! next retry time or the deadline, whichever comes first; it never polls on a timer.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_core::{DeliveryId, DeliveryStatus, Timestamp};
use switchboard_store::{AckItem, LeaseRequest, NackItem};

use super::{
    Body, ItemField, Problems, ack_body, check_depth, hot, in_range, json_bytes, json_response,
    parse_json, parse_json_or_default,
};
use crate::State;
use crate::auth::Caller;
use crate::clock;
use crate::error::ApiError;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConsumeIn {
    max: Option<u64>,
    wait_ms: Option<u64>,
    lease_ms: Option<u64>,
}

const DEFAULT_MAX: u64 = 10;
const DEFAULT_LEASE_MS: u64 = 30_000;

pub async fn consume(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let app = caller.require_app("consuming")?.clone();
    let input: ConsumeIn = parse_json_or_default(
        &body,
        "consume request (expected {\"max\"?, \"wait_ms\"?, \"lease_ms\"?})",
    )?;
    let limits = &state.config.limits;
    let max = input.max.unwrap_or(DEFAULT_MAX);
    let wait_ms = input.wait_ms.unwrap_or(0);
    let lease_ms = input.lease_ms.unwrap_or(DEFAULT_LEASE_MS);
    let mut p = Problems::default();
    in_range(&mut p, "max", max, 1, limits.max_consume as u64);
    in_range(&mut p, "wait_ms", wait_ms, 0, limits.max_wait_ms);
    in_range(
        &mut p,
        "lease_ms",
        lease_ms,
        limits.min_lease_ms,
        limits.max_lease_ms,
    );
    p.into_result()?;

    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let notify = state.wake.of(&app);
    let leased = loop {
        // Register for a wake-up before looking, so a publish in between is not missed.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = clock::now();
        // A store that can hands this consumer a publish's deliveries while it waits; the
        // wake-up (or shutdown) ends that wait, for what becomes ready otherwise (a retry, an
        // expired lease, a requeue). The lease itself always runs to its end.
        let request = LeaseRequest {
            app: app.clone(),
            max: max as u32,
            lease_ms,
            now,
        };
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let leased = {
            let woken = async {
                tokio::select! {
                    _ = notified.as_mut() => {}
                    _ = state.shutdown.cancelled() => {}
                }
            };
            tokio::pin!(woken);
            state.store.lease_waiting(request, wait, woken).await?
        };
        if !leased.deliveries.is_empty() {
            state.sweeper.lease_deadline(now.plus_ms(lease_ms));
            // When they were handed over, which for a hand-off is after `now`.
            state.observe.leased(&app, &leased.deliveries, clock::now());
            break leased.deliveries;
        }
        let until = match leased.next_ready_at {
            Some(ready) => deadline.min(
                tokio::time::Instant::now() + Duration::from_millis(ready.since(clock::now())),
            ),
            None => deadline,
        };
        if tokio::time::Instant::now() >= deadline {
            break Vec::new();
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(until) => {}
            _ = state.shutdown.cancelled() => break Vec::new(),
        }
    };
    Ok(json_bytes(StatusCode::OK, hot::consume_reply(&leased)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckIn<'a> {
    #[serde(borrow)]
    acks: Vec<AckItemIn<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckItemIn<'a> {
    #[serde(borrow)]
    delivery_id: Cow<'a, str>,
    attempt: Option<u32>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

pub async fn ack(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let app = caller.require_app("acking")?.clone();
    // The common shape read by hand (ack_body.rs), any other by serde, which names problems.
    let input: AckIn = match ack_body::read(&body) {
        Some(items) => AckIn {
            acks: items
                .into_iter()
                .map(|i| AckItemIn {
                    delivery_id: Cow::Borrowed(i.delivery_id),
                    attempt: i.attempt,
                    data: None,
                })
                .collect(),
        },
        None => parse_json(
            &body,
            "ack request (expected {\"acks\": [{\"delivery_id\", \"attempt\"?, \"data\"?}]})",
        )?,
    };
    let limits = &state.config.limits;
    if input.acks.is_empty() {
        return Err(ApiError::field(
            "acks",
            "is empty: send at least one {\"delivery_id\"}",
        ));
    }
    if input.acks.len() > limits.max_acks {
        return Err(ApiError::field(
            "acks",
            format!(
                "{} acks is over the limit of {}: split them",
                input.acks.len(),
                limits.max_acks
            ),
        ));
    }
    let mut p = Problems::default();
    // Filled in place: a `filter_map` would not know the length and grow by copies.
    let mut items: Vec<AckItem> = Vec::with_capacity(input.acks.len());
    for (i, a) in input.acks.iter().enumerate() {
        if let Some(data) = a.data {
            let field = format!("acks[{i}].data");
            check_depth(&mut p, &field, data.get(), limits.max_data_depth);
        }
        let field = ItemField {
            list: "acks",
            index: Some(i),
            name: "delivery_id",
        };
        let Some(id) = p.check(field, DeliveryId::parse(&a.delivery_id)) else {
            continue;
        };
        items.push(AckItem {
            id,
            attempt: a.attempt,
            data: a.data.map(|d| d.get().to_owned()),
        });
    }
    p.into_result()?;
    let now = clock::now();
    let changed = state.store.ack(app, items, now).await?;
    state.observe.changed(&changed, false, now);
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "acknowledged": changed.len() }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NackIn {
    delivery_id: String,
    attempt: Option<u32>,
    error: String,
    retry_in_ms: Option<u64>,
    #[serde(default)]
    permanent: bool,
}

#[derive(Serialize)]
struct NackOut<'a> {
    delivery_id: &'a str,
    status: DeliveryStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_at: Option<Timestamp>,
}

pub async fn nack(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let app = caller.require_app("nacking")?.clone();
    let input: NackIn = parse_json(
        &body,
        "nack request (expected {\"delivery_id\", \"error\", \"attempt\"?, \"retry_in_ms\"?, \"permanent\"?})",
    )?;
    let limits = &state.config.limits;
    let mut p = Problems::default();
    let id = p.check("delivery_id", DeliveryId::parse(&input.delivery_id));
    if input.error.len() > limits.max_error_len {
        p.add(
            "error",
            format!(
                "is {} bytes long; the limit is {}",
                input.error.len(),
                limits.max_error_len
            ),
        );
    }
    if let Some(ms) = input.retry_in_ms {
        in_range(&mut p, "retry_in_ms", ms, 0, limits.max_retry_in_ms);
    }
    p.into_result()?;
    let id = id.expect("checked");
    let now = clock::now();
    let result = state
        .store
        .nack(
            app.clone(),
            NackItem {
                id: id.clone(),
                attempt: input.attempt,
                error: input.error,
                retry_in_ms: input.retry_in_ms,
                permanent: input.permanent,
            },
            now,
        )
        .await?;
    state
        .observe
        .changed(std::slice::from_ref(&result.change), false, now);
    if result.status == DeliveryStatus::Pending {
        state.wake.wake([&app]);
    }
    Ok(json_response(
        StatusCode::OK,
        &NackOut {
            delivery_id: id.as_str(),
            status: result.status,
            retry_at: result.retry_at,
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendIn {
    lease_ms: u64,
    attempt: Option<u32>,
}

/// `POST /v1/deliveries/{id}/extend`: a consumer holding a lease pushes its deadline, for long
/// work. The new deadline is `now + lease_ms`.
pub async fn extend(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let app = caller.require_app("extending a lease")?.clone();
    let input: ExtendIn = parse_json(
        &body,
        "extend request (expected {\"lease_ms\", \"attempt\"?})",
    )?;
    let limits = &state.config.limits;
    let mut p = Problems::default();
    let id = p.check("id", DeliveryId::parse(&id));
    in_range(
        &mut p,
        "lease_ms",
        input.lease_ms,
        limits.min_lease_ms,
        limits.max_lease_ms,
    );
    p.into_result()?;
    let id = id.expect("checked");
    let item = switchboard_store::ExtendItem {
        id: id.clone(),
        attempt: input.attempt,
        lease_ms: input.lease_ms,
    };
    let until = state.store.extend_lease(app, item, clock::now()).await?;
    state.sweeper.lease_deadline(until);
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "delivery_id": id, "lease_expires_at": until }),
    ))
}

//! `POST /v1/events`: validate, route, store durably, wake the targets' consumers. A
//! rejected request stores nothing; the 2xx is sent only after the commit.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use switchboard_core::event::Event;
use switchboard_core::ids::{InvalidValue, parse_opaque};
use switchboard_core::routing::route;
use switchboard_core::{AppId, EventId, EventType, TenantId, Timestamp};
use switchboard_store::NewEvent;

use super::{Body, ItemField, Problems, check_depth, hot, json_bytes, parse_json};
use crate::State;
use crate::auth::Caller;
use crate::clock;
use crate::error::ApiError;

/// One body shape for both forms: a single event, or `{"events": [...]}`. (serde cannot
/// flatten with `deny_unknown_fields`, hence the repeated fields.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishIn<'a> {
    #[serde(borrow)]
    events: Option<Vec<EventIn<'a>>>,
    #[serde(rename = "type", borrow)]
    event_type: Option<Loose<'a>>,
    #[serde(borrow)]
    tenant: Option<Loose<'a>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    target: Option<Value>,
    #[serde(borrow)]
    id: Option<Loose<'a>>,
    #[serde(borrow)]
    entity_id: Option<Loose<'a>>,
    #[serde(borrow)]
    correlation_id: Option<Loose<'a>>,
    #[serde(borrow)]
    causation_id: Option<Loose<'a>>,
}

impl<'a> PublishIn<'a> {
    fn split(self) -> (Option<Vec<EventIn<'a>>>, EventIn<'a>) {
        let single = EventIn {
            event_type: self.event_type,
            tenant: self.tenant,
            data: self.data,
            target: self.target,
            id: self.id,
            entity_id: self.entity_id,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
        };
        (self.events, single)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn<'a> {
    #[serde(rename = "type", borrow)]
    event_type: Option<Loose<'a>>,
    #[serde(borrow)]
    tenant: Option<Loose<'a>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    target: Option<Value>,
    #[serde(borrow)]
    id: Option<Loose<'a>>,
    #[serde(borrow)]
    entity_id: Option<Loose<'a>>,
    #[serde(borrow)]
    correlation_id: Option<Loose<'a>>,
    #[serde(borrow)]
    causation_id: Option<Loose<'a>>,
}

/// A field that must be a string, read without copying it (unless it has escapes): the
/// string fields of every event were parsed into `Value`s first, two to four allocations per
/// event. Any other JSON is kept only as "not a string", which is all its problem says.
enum Loose<'a> {
    Str(Cow<'a, str>),
    NotAString,
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor(PhantomData))
    }
}

struct LooseVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for LooseVisitor<'a> {
    type Value = Loose<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Loose<'a>, E> {
        Ok(Loose::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose<'a>, E> {
        Ok(Loose::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Loose<'a>, E> {
        Ok(Loose::Str(Cow::Owned(v)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Loose<'a>, E> {
        Ok(Loose::NotAString)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Loose<'a>, E> {
        Ok(Loose::NotAString)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Loose<'a>, E> {
        Ok(Loose::NotAString)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Loose<'a>, E> {
        Ok(Loose::NotAString)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose<'a>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::NotAString)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose<'a>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::NotAString)
    }
}

impl EventIn<'_> {
    fn is_empty(&self) -> bool {
        self.event_type.is_none()
            && self.tenant.is_none()
            && self.data.is_none()
            && self.target.is_none()
            && self.id.is_none()
            && self.entity_id.is_none()
            && self.correlation_id.is_none()
            && self.causation_id.is_none()
    }
}

fn string<'v>(p: &mut Problems, field: ItemField, v: &'v Option<Loose<'_>>) -> Option<&'v str> {
    match v {
        None => None,
        Some(Loose::Str(s)) => Some(s),
        Some(Loose::NotAString) => {
            p.add(field, "must be a string");
            None
        }
    }
}

fn opaque(p: &mut Problems, field: ItemField, v: &Option<Loose<'_>>) -> Option<String> {
    let s = string(p, field, v)?;
    p.check(field, parse_opaque(s))
}

/// What every event of one publish request shares.
struct Shared<'a> {
    source: &'a AppId,
    now: Timestamp,
    known: &'a (dyn Fn(&AppId) -> bool + Sync),
    limits: &'a crate::Limits,
}

/// The type and tenant of the events validated so far, reused when the next names the same
/// (the events of a batch mostly do): an id shared instead of checked and copied again.
#[derive(Default)]
struct Repeats {
    event_type: Last<EventType>,
    tenant: Last<TenantId>,
}

struct Last<T>(Option<T>);

impl<T> Default for Last<T> {
    fn default() -> Self {
        Last(None)
    }
}

impl<T: Clone + AsRef<str>> Last<T> {
    /// `text` parsed, or the last value parsed when it was the same text.
    fn parse(
        &mut self,
        text: &str,
        parse: impl FnOnce(&str) -> Result<T, InvalidValue>,
    ) -> Result<T, InvalidValue> {
        match &self.0 {
            Some(last) if last.as_ref() == text => Ok(last.clone()),
            _ => {
                let parsed = parse(text)?;
                self.0 = Some(parsed.clone());
                Ok(parsed)
            }
        }
    }
}

/// Validates one event (the `index`th of a batch); problems are named `type`, `tenant`... or
/// `events[{index}].type`... `entropy` is the random part of its id.
fn validate(
    p: &mut Problems,
    index: Option<usize>,
    input: &EventIn<'_>,
    shared: &Shared<'_>,
    repeats: &mut Repeats,
    entropy: [u8; 10],
) -> Option<Event> {
    let Shared {
        source,
        now,
        known,
        limits,
    } = *shared;
    let before = p.0.len();
    let f = |name: &'static str| ItemField {
        list: "events",
        index,
        name,
    };
    let event_type = match string(p, f("type"), &input.event_type) {
        Some(t) => p.check(f("type"), repeats.event_type.parse(t, EventType::parse)),
        None => {
            p.add(f("type"), "is required: an event type like `user.created`");
            None
        }
    };
    let tenant = match string(p, f("tenant"), &input.tenant) {
        Some(t) => p.check(f("tenant"), repeats.tenant.parse(t, TenantId::parse)),
        None => {
            p.add(f("tenant"), "is required: the tenant the event belongs to");
            None
        }
    };
    let data = match input.data {
        Some(raw) if raw.get().starts_with('{') => {
            check_depth(p, f("data"), raw.get(), limits.max_data_depth);
            Some(raw.get().to_owned())
        }
        Some(_) => {
            p.add(f("data"), "must be a JSON object, like {\"user_id\": 42}");
            None
        }
        None => {
            p.add(f("data"), "is required: a JSON object (use {} for none)");
            None
        }
    };
    let named_targets = match &input.target {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Some(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        Some(_) => {
            p.add(f("target"), "must be an app id or a list of app ids");
            None
        }
    };
    let named_targets: Option<Vec<AppId>> = named_targets.map(|names| {
        if names.len() > limits.max_targets {
            p.add(
                f("target"),
                format!(
                    "{} targets is over the limit (max_targets) of {}",
                    names.len(),
                    limits.max_targets
                ),
            );
        }
        names
            .iter()
            .filter_map(|n| {
                let app = p.check(f("target"), AppId::parse(n))?;
                if !known(&app) {
                    p.add(
                        f("target"),
                        format!("unknown app: {app}: register it first with POST /v1/apps"),
                    );
                    return None;
                }
                Some(app)
            })
            .collect()
    });
    let idempotency_key = opaque(p, f("id"), &input.id);
    let entity_id = opaque(p, f("entity_id"), &input.entity_id);
    let correlation_id = opaque(p, f("correlation_id"), &input.correlation_id);
    let causation_id = opaque(p, f("causation_id"), &input.causation_id);
    if p.0.len() > before {
        return None;
    }
    Some(Event {
        id: EventId::generate(now.millis(), entropy),
        tenant: tenant?,
        event_type: event_type?,
        source: source.clone(),
        time: now,
        data: data?,
        idempotency_key,
        named_targets,
        entity_id,
        correlation_id,
        causation_id,
        historical: false,
    })
}

pub async fn publish(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let source = caller.require_app("publishing")?.clone();
    let input: PublishIn = parse_json(&body, "event or {\"events\": [...]} batch")?;
    let limits = &state.config.limits;
    let (events, single) = input.split();
    let (inputs, batch): (Vec<EventIn>, bool) = match events {
        Some(events) => {
            if !single.is_empty() {
                return Err(ApiError::field(
                    "events",
                    "a batch body has only `events`: move the other fields into each event",
                ));
            }
            if events.is_empty() {
                return Err(ApiError::field(
                    "events",
                    "is empty: send at least one event",
                ));
            }
            if events.len() > limits.max_batch {
                return Err(ApiError::field(
                    "events",
                    format!(
                        "a batch of {} is over the limit of {}: split it",
                        events.len(),
                        limits.max_batch
                    ),
                ));
            }
            (events, true)
        }
        None => (vec![single], false),
    };

    let now = clock::now();
    let apps = state.registry.apps();
    let known = |id: &AppId| apps.iter().any(|a| &a.id == id);
    let mut p = Problems::default();
    let shared = Shared {
        source: &source,
        now,
        known: &known,
        limits,
    };
    // The ids' random part for the whole request from one call to the OS, not one per event.
    let mut entropy = vec![0u8; 10 * inputs.len()];
    getrandom::fill(&mut entropy).expect("the OS random source works");
    let mut repeats = Repeats::default();
    // Filled in place: a `filter_map` would not know the length and grow by copies.
    let mut events: Vec<Event> = Vec::with_capacity(inputs.len());
    for (i, (input, random)) in inputs.iter().zip(entropy.chunks_exact(10)).enumerate() {
        let random: [u8; 10] = random.try_into().expect("chunks of 10");
        let index = batch.then_some(i);
        events.extend(validate(
            &mut p,
            index,
            input,
            &shared,
            &mut repeats,
            random,
        ));
    }
    p.into_result()?;

    let new_events: Vec<NewEvent> = events
        .into_iter()
        .map(|event| {
            let targets = route(
                &source,
                &event.event_type,
                event.named_targets.as_deref(),
                apps.iter().map(|a| (&a.id, a.subscriptions.as_slice())),
            );
            NewEvent { event, targets }
        })
        .collect();

    let kinds: Vec<(TenantId, EventType)> = new_events
        .iter()
        .map(|e| (e.event.tenant.clone(), e.event.event_type.clone()))
        .collect();
    let published = state.store.publish(new_events, now).await?;
    state.observe.published(&source, &kinds, &published, now);
    // Each target once (a batch has a few, each named by most of its events).
    let mut woken: Vec<&AppId> = Vec::new();
    let fresh = published.iter().filter(|p| !p.duplicate);
    for target in fresh.flat_map(|p| p.deliveries.iter().map(|d| &d.target)) {
        if !woken.contains(&target) {
            woken.push(target);
        }
    }
    state.wake.wake(woken);
    Ok(json_bytes(
        StatusCode::CREATED,
        hot::publish_reply(&published),
    ))
}

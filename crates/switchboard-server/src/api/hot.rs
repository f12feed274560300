//! The two replies every event passes through, a consume's and a publish's, written as JSON by
//! hand. serde_json escapes every key and every string byte by byte through its formatter:
//! that was a third of the HTTP workers' instructions in the full cycle. Here keys are
//! constants and a string that needs no escaping (every id switchboard makes) is copied
//! whole. Each writes exactly what serde_json writes of the same reply (the tests compare
//! them, byte for byte); every other reply is serde's, and nothing here reads a request.

use switchboard_core::Timestamp;
use switchboard_core::event::Event;
use switchboard_core::ids::decimal;
use switchboard_store::{LeasedDelivery, Published};

use super::bytes::needs_escaping;

/// `POST /v1/consume`'s reply: `{"deliveries":[{"delivery_id", "attempt",
/// "lease_expires_at", "event": {…}}]}`, each event as [`EventView`](super::views::EventView).
pub fn consume_reply(leased: &[LeasedDelivery]) -> Vec<u8> {
    // An event's fields and a delivery's come to about 300 bytes besides its data.
    let size: usize = leased.iter().map(|d| d.event.data.len() + 384).sum();
    let mut out = Out::with_capacity(size + 32);
    out.raw(b"{\"deliveries\":");
    out.list(leased, |out, d| {
        out.raw(b"{\"delivery_id\":");
        out.string(d.id.as_str());
        out.raw(b",\"attempt\":");
        out.number(u64::from(d.attempt));
        out.raw(b",\"lease_expires_at\":");
        out.time(d.lease_expires_at, Clock::Lease);
        out.raw(b",\"event\":");
        out.event(&d.event);
        out.raw(b"}");
    });
    out.raw(b"}");
    out.buf
}

/// `POST /v1/events`' reply: `{"events":[{"id", "duplicate", "deliveries":[{"delivery_id",
/// "target", "status"}]}]}`.
pub fn publish_reply(published: &[Published]) -> Vec<u8> {
    let size: usize = published.iter().map(|p| 64 + 96 * p.deliveries.len()).sum();
    let mut out = Out::with_capacity(size + 16);
    out.raw(b"{\"events\":");
    out.list(published, |out, p| {
        out.raw(b"{\"id\":");
        out.string(p.id.as_str());
        out.raw(match p.duplicate {
            true => b",\"duplicate\":true,\"deliveries\":",
            false => b",\"duplicate\":false,\"deliveries\":",
        });
        out.list(&p.deliveries, |out, d| {
            out.raw(b"{\"delivery_id\":");
            out.string(d.id.as_str());
            out.raw(b",\"target\":");
            out.name(d.target.as_str());
            out.raw(b",\"status\":");
            out.name(d.status.as_str());
            out.raw(b"}");
        });
        out.raw(b"}");
    });
    out.raw(b"}");
    out.buf
}

/// A reply being written.
struct Out {
    buf: Vec<u8>,
    /// The last timestamp written in each place of a delivery, as text: a consume's
    /// deliveries share their lease's end, and events published together their time (one
    /// formatting each was 6% of the HTTP workers' instructions in the full cycle).
    times: [Option<(Timestamp, [u8; 24])>; 2],
}

/// Where in a delivery a timestamp goes, each with its own last one.
#[derive(Clone, Copy)]
enum Clock {
    Lease = 0,
    Event = 1,
}

impl Out {
    fn with_capacity(bytes: usize) -> Out {
        Out {
            buf: Vec::with_capacity(bytes),
            times: [None; 2],
        }
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// `s` as a JSON string: copied whole between quotes when nothing in it needs escaping,
    /// else escaped by serde_json itself, so the two can never disagree.
    fn string(&mut self, s: &str) {
        if needs_escaping(s.as_bytes()) {
            serde_json::to_writer(&mut self.buf, s).expect("writing to a Vec cannot fail");
            return;
        }
        self.quoted(s.as_bytes());
    }

    /// A name whose type admits nothing JSON escapes (app ids and event types are lowercase
    /// letters, digits and `-_.`; statuses are constants): between quotes, unscanned.
    fn name(&mut self, s: &str) {
        debug_assert!(!needs_escaping(s.as_bytes()), "{s:?}");
        self.quoted(s.as_bytes());
    }

    /// `text`, which needs no escaping, between quotes.
    fn quoted(&mut self, text: &[u8]) {
        self.buf.reserve(text.len() + 2);
        self.buf.push(b'"');
        self.buf.extend_from_slice(text);
        self.buf.push(b'"');
    }

    /// `items` as a JSON array, each written by `each`.
    fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Out, &T)) {
        self.raw(b"[");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.raw(b",");
            }
            each(self, item);
        }
        self.raw(b"]");
    }

    fn number(&mut self, n: u64) {
        self.raw(decimal(n, &mut [0; 20]));
    }

    fn time(&mut self, t: Timestamp, clock: Clock) {
        match self.times[clock as usize] {
            Some((last, text)) if last == t => {
                self.quoted(&text);
                return;
            }
            _ => {}
        }
        let mut text = [0; 24];
        match t.rfc3339(&mut text) {
            // Digits and `-:.TZ`: nothing to escape.
            Some(written) => {
                self.quoted(written.as_bytes());
                self.times[clock as usize] = Some((t, text));
            }
            // A year outside 0–9999: written the slow way, as serde does.
            None => serde_json::to_writer(&mut self.buf, &t).expect("writing to a Vec cannot fail"),
        }
    }

    /// `,"key":"value"` when there is a value; nothing otherwise (serde's
    /// `skip_serializing_if = "Option::is_none"`).
    fn optional(&mut self, key: &[u8], value: Option<&str>) {
        if let Some(v) = value {
            self.raw(key);
            self.string(v);
        }
    }

    /// An event as [`EventView`](super::views::EventView) shows it.
    fn event(&mut self, e: &Event) {
        self.raw(b"{\"id\":");
        self.string(e.id.as_str());
        self.raw(b",\"tenant\":");
        self.string(e.tenant.as_str());
        self.raw(b",\"type\":");
        self.name(e.event_type.as_str());
        self.raw(b",\"source\":");
        self.name(e.source.as_str());
        self.raw(b",\"time\":");
        self.time(e.time, Clock::Event);
        // Stored data is valid JSON: written as it is (see `views::Verbatim`).
        self.raw(b",\"data\":");
        self.raw(e.data.as_bytes());
        if let Some(targets) = &e.named_targets {
            self.raw(b",\"target\":");
            self.list(targets, |out, t| out.name(t.as_str()));
        }
        self.optional(b",\"idempotency_key\":", e.idempotency_key.as_deref());
        self.optional(b",\"entity_id\":", e.entity_id.as_deref());
        self.optional(b",\"correlation_id\":", e.correlation_id.as_deref());
        self.optional(b",\"causation_id\":", e.causation_id.as_deref());
        self.raw(match e.historical {
            true => b",\"historical\":true}",
            false => b",\"historical\":false}",
        });
    }
}

#[cfg(test)]
mod tests {
    //! What serde_json writes of the same replies, from serde views of the same data: the
    //! hand-written replies must be equal to it, byte for byte.

    use std::sync::Arc;

    use proptest::prelude::*;
    use serde::Serialize;
    use switchboard_core::{AppId, DeliveryId, DeliveryStatus, EventId, EventType, TenantId};
    use switchboard_store::DeliveryState;

    use super::*;
    use crate::api::views::EventView;

    #[derive(Serialize)]
    struct LeasedView<'a> {
        delivery_id: &'a str,
        attempt: u32,
        lease_expires_at: Timestamp,
        event: EventView<'a>,
    }

    #[derive(Serialize)]
    struct ConsumeOut<'a> {
        deliveries: Vec<LeasedView<'a>>,
    }

    #[derive(Serialize)]
    struct DeliveryStateView<'a> {
        delivery_id: &'a str,
        target: &'a AppId,
        status: DeliveryStatus,
    }

    #[derive(Serialize)]
    struct PublishedView<'a> {
        id: &'a EventId,
        duplicate: bool,
        deliveries: Vec<DeliveryStateView<'a>>,
    }

    #[derive(Serialize)]
    struct PublishOut<'a> {
        events: Vec<PublishedView<'a>>,
    }

    fn serde_consume(leased: &[LeasedDelivery]) -> Vec<u8> {
        let out = ConsumeOut {
            deliveries: leased
                .iter()
                .map(|d| LeasedView {
                    delivery_id: d.id.as_str(),
                    attempt: d.attempt,
                    lease_expires_at: d.lease_expires_at,
                    event: EventView::of(&d.event),
                })
                .collect(),
        };
        serde_json::to_vec(&out).unwrap()
    }

    fn serde_publish(published: &[Published]) -> Vec<u8> {
        let out = PublishOut {
            events: published
                .iter()
                .map(|p| PublishedView {
                    id: &p.id,
                    duplicate: p.duplicate,
                    deliveries: p
                        .deliveries
                        .iter()
                        .map(|d| DeliveryStateView {
                            delivery_id: d.id.as_str(),
                            target: &d.target,
                            status: d.status,
                        })
                        .collect(),
                })
                .collect(),
        };
        serde_json::to_vec(&out).unwrap()
    }

    /// Text for the opaque fields: mostly plain, sometimes with quotes, backslashes, control
    /// characters (before or past the first 32 bytes), DEL (which JSON leaves as it is) and
    /// non-ASCII.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_.-]{1,40}",
            "[a-z]{0,40}[\"\\\\\u{0}-\u{1f}\u{7f}é€😀/]{1,3}[a-z]{0,10}",
        ]
    }

    /// A time in ms: often one of two, so that replies repeat and alternate them (each
    /// place keeps the text of its last one), else any in years -9999 to 9999 and beyond.
    fn moment() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(1_800_000_000_000i64),
            Just(1_800_000_000_001i64),
            -62_200_000_000_000i64..260_000_000_000_000i64,
        ]
    }

    fn opaque() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(text().prop_filter("not empty", |s| !s.is_empty()))
    }

    prop_compose! {
        fn any_event()(
            random in any::<[u8; 10]>(),
            ms in moment(),
            tenant in text().prop_filter("printable", |s| TenantId::parse(s).is_ok()),
            data in prop_oneof![
                Just("{}".to_owned()),
                Just(r#"{"user_id":42,"name":"A \"quoted\" name","list":[1,2.5,null]}"#.to_owned()),
            ],
            targets in proptest::option::of(proptest::collection::vec("[a-z][a-z0-9]{0,8}", 0..3)),
            keys in (opaque(), opaque(), opaque(), opaque()),
            historical in any::<bool>(),
        ) -> Event {
            Event {
                id: EventId::generate(ms, random),
                tenant: TenantId::parse(&tenant).unwrap(),
                event_type: EventType::parse("user.created").unwrap(),
                source: AppId::parse("crm").unwrap(),
                time: Timestamp(ms),
                data,
                idempotency_key: keys.0,
                named_targets: targets
                    .map(|t| t.iter().map(|a| AppId::parse(a).unwrap()).collect()),
                entity_id: keys.1,
                correlation_id: keys.2,
                causation_id: keys.3,
                historical,
            }
        }
    }

    prop_compose! {
        fn leased()(
            event in any_event(),
            id in prop_oneof![
                (0u64..u64::MAX).prop_map(DeliveryId::numbered),
                text().prop_filter("an id", |s| DeliveryId::parse(s).is_ok())
                    .prop_map(|s| DeliveryId::parse(&s).unwrap()),
            ],
            attempt in any::<u32>(),
            until in moment(),
        ) -> LeasedDelivery {
            LeasedDelivery {
                id,
                attempt,
                lease_expires_at: Timestamp(until),
                event: Arc::new(event),
            }
        }
    }

    fn status() -> impl Strategy<Value = DeliveryStatus> {
        prop_oneof![
            Just(DeliveryStatus::Pending),
            Just(DeliveryStatus::InFlight),
            Just(DeliveryStatus::Acknowledged),
            Just(DeliveryStatus::Dead),
        ]
    }

    prop_compose! {
        fn published()(
            event in any_event(),
            duplicate in any::<bool>(),
            deliveries in proptest::collection::vec(
                (0u64..1_000_000_000, "[a-z][a-z0-9_-]{0,20}", status()), 0..4),
        ) -> Published {
            Published {
                id: event.id,
                duplicate,
                deliveries: deliveries
                    .into_iter()
                    .map(|(n, target, status)| DeliveryState {
                        id: DeliveryId::numbered(n),
                        target: AppId::parse(&target).unwrap(),
                        status,
                    })
                    .collect(),
            }
        }
    }

    proptest! {
        #[test]
        fn a_consume_reply_is_what_serde_writes(
            leased in proptest::collection::vec(leased(), 0..4)
        ) {
            let ours = consume_reply(&leased);
            prop_assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(serde_consume(&leased)).unwrap()
            );
        }

        #[test]
        fn a_publish_reply_is_what_serde_writes(
            published in proptest::collection::vec(published(), 0..4)
        ) {
            let ours = publish_reply(&published);
            prop_assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(serde_publish(&published)).unwrap()
            );
        }
    }
}

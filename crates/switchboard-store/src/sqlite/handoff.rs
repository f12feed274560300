//! Deliveries handed straight from a publish to a consumer long-polling for them. A lease
//! that finds nothing parks its consumer here; a publish that makes a delivery for that app
//! inserts it in flight, leased to the consumer, and the consumer is answered once the
//! publish is durable, before the publisher is. So such a delivery costs no lease
//! transaction, no ready-queue entry to add and remove, and one writer round trip less.
//!
//! A consumer that stopped waiting before the publish ran is skipped. One that stopped in
//! between (its answer cannot be delivered) has its deliveries released to pending by a
//! follow-up write, as if they had never been leased. Must not decide which deliveries are
//! ready: only a publish's fresh, unordered deliveries are handed over.

use std::collections::HashMap;

use rusqlite::params;
use switchboard_core::event::Event;
use switchboard_core::{EventId, Timestamp};
use tokio::sync::oneshot;

use super::counters::Counters;
use super::inflight::ByText;
use super::ready::Pending;
use super::rows::{self, delivery_id};
use super::writer::WriteCtx;
use crate::{LeasedDelivery, StoreError};

/// A consumer waiting in the writer for deliveries of one app.
pub struct Parked {
    pub max: u32,
    pub lease_ms: u64,
    pub reply: oneshot::Sender<Vec<LeasedDelivery>>,
}

/// Parks a consumer of `app` whose lease found nothing, forgetting those that stopped waiting.
pub fn park(ctx: &mut WriteCtx, app: &str, consumer: Parked) {
    let waiting = ctx.parked.entry(app.to_owned()).or_default();
    waiting.retain(|p| !p.reply.is_closed());
    waiting.push(consumer);
}

/// One consumer being handed deliveries by the running publish.
struct Handing {
    consumer: Parked,
    expires: Timestamp,
    rowids: Vec<i64>,
    deliveries: Vec<LeasedDelivery>,
}

/// The consumers a publish hands deliveries to.
#[derive(Default)]
pub struct Handoffs {
    handings: Vec<Handing>,
    /// The handing of each app that can take more.
    open: HashMap<String, usize, ByText>,
}

impl Handoffs {
    /// Where a new delivery to `app` goes: the lease deadline it gets and the consumer it is
    /// handed to, or `None` (no one is waiting: it is stored pending). Takes the next waiting
    /// consumer of `app` when the one being handed to is full.
    pub fn consumer_for(
        &mut self,
        parked: &mut HashMap<String, Vec<Parked>, ByText>,
        app: &str,
        now: Timestamp,
    ) -> Option<Hand> {
        if let Some(&i) = self.open.get(app) {
            let h = &self.handings[i];
            if (h.rowids.len() as u32) < h.consumer.max {
                return Some(Hand(i, h.expires));
            }
            self.open.remove(app);
        }
        let waiting = parked.get_mut(app)?;
        // The one waiting longest first.
        while !waiting.is_empty() {
            let consumer = waiting.remove(0);
            if consumer.reply.is_closed() {
                continue;
            }
            let expires = now.plus_ms(consumer.lease_ms);
            self.handings.push(Handing {
                consumer,
                expires,
                rowids: Vec::new(),
                deliveries: Vec::new(),
            });
            let i = self.handings.len() - 1;
            self.open.insert(app.to_owned(), i);
            return Some(Hand(i, expires));
        }
        None
    }

    /// Adds the delivery `rowid` of `event`, stored as `id`, inserted in flight, to the
    /// consumer's answer.
    pub fn add(&mut self, hand: Hand, rowid: i64, event: &Event, id: &EventId) {
        let h = &mut self.handings[hand.0];
        h.rowids.push(rowid);
        let mut event = event.clone();
        event.id = id.clone();
        h.deliveries.push(LeasedDelivery {
            id: delivery_id(rowid),
            attempt: 1,
            lease_expires_at: h.expires,
            event: std::sync::Arc::new(event),
        });
    }

    /// The deliveries handed over.
    pub fn rowids(&self) -> impl Iterator<Item = i64> + '_ {
        self.handings.iter().flat_map(|h| h.rowids.iter().copied())
    }

    /// Answers each consumer once the publish is durable; releases what an answer could not
    /// reach. Nothing is answered if the publish fails: its consumers' waits end empty.
    pub fn answer_when_durable(self, ctx: &mut WriteCtx, now: Timestamp) {
        for h in self.handings {
            let follow_up = ctx.follow_up();
            ctx.when_durable(move |durable| {
                if !durable {
                    return;
                }
                if h.consumer.reply.send(h.deliveries).is_err() {
                    let (rowids, expires) = (h.rowids, h.expires);
                    follow_up.write(move |ctx| release(ctx, &rowids, expires, now));
                }
            });
        }
    }
}

/// A consumer being handed deliveries, and the lease deadline they get.
#[derive(Debug, Clone, Copy)]
pub struct Hand(usize, pub Timestamp);

/// Returns deliveries handed to a consumer that was gone to pending, as if never leased.
fn release(
    ctx: &mut WriteCtx,
    rowids: &[i64],
    expires: Timestamp,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut counters = Counters::default();
    let mut stmt = ctx.conn.prepare_cached(
        "UPDATE deliveries SET status = 0, attempts = attempts - 1, leased_at = NULL, \
         lease_expires_at = NULL, updated_at = ?3 \
         WHERE id = ?1 AND status = 1 AND attempts = 1 AND lease_expires_at = ?2 \
         RETURNING tenant, source, target, available_at, event_seq, channel, created_at",
    )?;
    for &rowid in rowids {
        let mut released = stmt.query(params![rowid, expires.millis(), now.millis()])?;
        if let Some(r) = released.next()? {
            let target = rows::text(r, 2)?;
            let c = counters.of(rows::text(r, 0)?, rows::text(r, 1)?, target);
            c.in_flight -= 1;
            c.pending += 1;
            ctx.deadline_changes.clear(expires, rowid);
            ctx.flight_changes.clear(rowid);
            let slot = ctx.ready.slot(target);
            // A handed delivery was fresh and unordered (see `publish`): it is again.
            let pending = Pending::fresh(r.get(4)?, r.get(5)?, Timestamp(r.get(6)?), false);
            ctx.ready_changes
                .add(slot, Timestamp(r.get(3)?), rowid, pending);
        }
    }
    drop(stmt);
    ctx.counted(counters, now);
    Ok(())
}

//! Deliveries handed straight from a publish to a consumer long-polling for them. A lease
//! that finds nothing parks its consumer here; a publish that makes a delivery for that app
//! inserts it in flight, leased to the consumer, and the consumer is answered once the
//! publish's group is durable, before the publisher is. The consumer takes the deliveries of
//! every publish in that group, up to its `max`: publishes that arrive together reach it in
//! one answer. So such a delivery costs no lease transaction, no ready-queue entry to add and
//! remove, and one writer round trip less.
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
use super::writer::{Completion, FollowUp, WriteCtx};
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

/// One consumer being handed deliveries by the open group's publishes.
struct Handing {
    app: String,
    consumer: Parked,
    expires: Timestamp,
    /// When the first publish handed it something: the release's `updated_at`.
    now: Timestamp,
    rowids: Vec<i64>,
    deliveries: Vec<LeasedDelivery>,
}

impl Handing {
    fn full(&self) -> bool {
        self.rowids.len() as u32 >= self.consumer.max
    }
}

/// The consumers the open group's publishes hand deliveries to. A consumer stays open to
/// every publish of the group, up to its `max`, so publishes that share a commit reach it in
/// one answer, given once the group is durable.
#[derive(Default)]
pub struct Handoffs {
    handings: Vec<Handing>,
    /// The handing of each app that can take more.
    open: HashMap<String, usize, ByText>,
    /// Where the handings stood before the running job first touched them: what its
    /// failure undoes.
    job_start: Option<Mark>,
}

/// How many handings there were, and how many deliveries each had.
struct Mark {
    handings: usize,
    handed: Vec<usize>,
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
            if !h.full() {
                let expires = h.expires;
                self.mark();
                return Some(Hand(i, expires));
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
            self.mark();
            let expires = now.plus_ms(consumer.lease_ms);
            self.handings.push(Handing {
                app: app.to_owned(),
                consumer,
                expires,
                now,
                rowids: Vec::new(),
                deliveries: Vec::new(),
            });
            let i = self.handings.len() - 1;
            self.open.insert(app.to_owned(), i);
            return Some(Hand(i, expires));
        }
        None
    }

    /// Remembers where the running job started, before its first change.
    fn mark(&mut self) {
        if self.job_start.is_none() {
            self.job_start = Some(Mark {
                handings: self.handings.len(),
                handed: self.handings.iter().map(|h| h.rowids.len()).collect(),
            });
        }
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

    /// Ends the running job: what it handed stays for the group if it succeeded. If it
    /// failed, its deliveries leave the answers (its rows are rolled back) and the consumers
    /// it took wait on, parked again in their places.
    pub fn end_job(&mut self, succeeded: bool, parked: &mut HashMap<String, Vec<Parked>, ByText>) {
        let Some(mark) = self.job_start.take() else {
            return;
        };
        if succeeded {
            return;
        }
        for h in self.handings.drain(mark.handings..).rev() {
            parked.entry(h.app).or_default().insert(0, h.consumer);
        }
        for (h, &len) in self.handings.iter_mut().zip(&mark.handed) {
            h.rowids.truncate(len);
            h.deliveries.truncate(len);
        }
        self.reopen();
    }

    /// After the open group rolled back: every consumer it took waits on, parked again.
    pub fn forget_group(&mut self, parked: &mut HashMap<String, Vec<Parked>, ByText>) {
        for h in std::mem::take(self).handings.into_iter().rev() {
            parked.entry(h.app).or_default().insert(0, h.consumer);
        }
    }

    /// The open handing of each app: its last one, unless full.
    fn reopen(&mut self) {
        self.open.clear();
        for (i, h) in self.handings.iter().enumerate() {
            match h.full() {
                true => self.open.remove(&h.app),
                false => self.open.insert(h.app.clone(), i),
            };
        }
    }

    /// The answers of the committed group's consumers, to run once it is durable: each
    /// consumer gets its deliveries; what an answer cannot reach is released by a follow-up
    /// write. Nothing is answered if the group could not be made durable: the waits end
    /// empty, and the deliveries stay in flight until their lease expires.
    pub fn answers(&mut self, follow_up: &FollowUp) -> impl Iterator<Item = Completion> + use<> {
        let follow_up = follow_up.clone();
        std::mem::take(self).handings.into_iter().map(move |h| {
            let follow_up = follow_up.clone();
            let answer: Completion = Box::new(move |durable: bool| {
                if !durable {
                    return;
                }
                if h.consumer.reply.send(h.deliveries).is_err() {
                    let (rowids, expires, now) = (h.rowids, h.expires, h.now);
                    follow_up.write(move |ctx| release(ctx, &rowids, expires, now));
                }
            });
            answer
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, T0};

    type Waiting = HashMap<String, Vec<Parked>, ByText>;

    /// Parks a consumer of hr taking up to `max`; returns where its answer arrives.
    fn park_hr(parked: &mut Waiting, max: u32) -> oneshot::Receiver<Vec<LeasedDelivery>> {
        let (reply, answer) = oneshot::channel();
        let consumer = Parked {
            max,
            lease_ms: 30_000,
            reply,
        };
        parked.entry("hr".to_owned()).or_default().push(consumer);
        answer
    }

    /// A job handing deliveries `rowids` to hr's consumers; true if all found one.
    fn hand(handoffs: &mut Handoffs, parked: &mut Waiting, rowids: &[i64]) -> bool {
        let event = conformance::event("crm", "acme", "user.created", T0);
        rowids
            .iter()
            .all(|&rowid| match handoffs.consumer_for(parked, "hr", T0) {
                Some(hand) => {
                    handoffs.add(hand, rowid, &event, &event.id);
                    true
                }
                None => false,
            })
    }

    /// Answers the group as durable; returns the rowids each answer holds.
    fn answer(
        handoffs: &mut Handoffs,
        answers: Vec<oneshot::Receiver<Vec<LeasedDelivery>>>,
    ) -> Vec<Vec<String>> {
        for complete in handoffs.answers(&FollowUp::nowhere()) {
            complete(true);
        }
        answers
            .into_iter()
            .map(|mut a| match a.try_recv() {
                Ok(ds) => ds.into_iter().map(|d| d.id.to_string()).collect(),
                Err(_) => vec!["unanswered".to_owned()],
            })
            .collect()
    }

    fn ids(rowids: &[i64]) -> Vec<String> {
        rowids.iter().map(|&r| delivery_id(r).to_string()).collect()
    }

    #[test]
    fn a_failed_job_takes_back_what_it_handed_and_the_consumers_it_took_wait_on() {
        let mut parked = Waiting::default();
        let first = park_hr(&mut parked, 3);
        let second = park_hr(&mut parked, 3);
        let mut handoffs = Handoffs::default();
        assert!(hand(&mut handoffs, &mut parked, &[1, 2]));
        handoffs.end_job(true, &mut parked);
        // Fills the first consumer, takes the second, then fails.
        assert!(hand(&mut handoffs, &mut parked, &[3, 4]));
        assert!(parked["hr"].is_empty());
        handoffs.end_job(false, &mut parked);
        assert_eq!(parked["hr"].len(), 1, "the second consumer is parked again");
        // The next job hands to the first consumer's last place, then to the second.
        assert!(hand(&mut handoffs, &mut parked, &[5, 6]));
        handoffs.end_job(true, &mut parked);
        assert_eq!(
            answer(&mut handoffs, vec![first, second]),
            vec![ids(&[1, 2, 5]), ids(&[6])]
        );
    }

    #[test]
    fn a_rolled_back_group_parks_its_consumers_again_unanswered() {
        let mut parked = Waiting::default();
        let mut first = park_hr(&mut parked, 1);
        let mut handoffs = Handoffs::default();
        assert!(hand(&mut handoffs, &mut parked, &[1]));
        handoffs.end_job(true, &mut parked);
        handoffs.forget_group(&mut parked);
        assert_eq!(parked["hr"].len(), 1);
        assert!(first.try_recv().is_err(), "not answered");
        assert!(hand(&mut handoffs, &mut parked, &[2]));
        handoffs.end_job(true, &mut parked);
        assert_eq!(answer(&mut handoffs, vec![first]), vec![ids(&[2])]);
    }
}

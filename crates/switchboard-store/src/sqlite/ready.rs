//! Which pending deliveries each target app may lease, and from when: kept in the writer's
//! memory instead of the `deliveries_ready` index (schema migration 8). Every publish
//! inserted into that index and every lease deleted from it: one B-tree change each, and one
//! more WAL page in each of those commits, per delivery; and a lease read each candidate's
//! row twice, once to check it and once to change it.
//!
//! What holds: every delivery that is pending and not blocked (behind an earlier one of its
//! entity) has exactly one entry, under its target, at the time it becomes available, with
//! what a lease needs of its row ([`Pending`]: its event's seq, its attempts, its channel), so a
//! lease changes the row without reading it first; nothing else has one. The set changes only as the table does: a job
//! records its changes ([`Changes`]); they are dropped if the job fails, and applied as
//! soon as it succeeds, so the jobs after it in its group see them as they see its rows (a
//! lease finds what a release just before it in the group gave back). Each application
//! keeps its inverse until the group's commit: a group rolled back is undone. Loaded from
//! the table on open. Must not read or write the database otherwise.

use std::collections::HashMap;

use switchboard_core::Timestamp;

use super::inflight::ByText;
use super::inflight::Flight;
use super::queue_map::QueueMap;

/// When a delivery becomes available (ms) and its row id: the lease order.
type Key = (i64, i64);

/// What a lease needs of a pending delivery's row, besides its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Its event's seq: a lease hands out only events whose publish is durable.
    pub seq: i64,
    /// The attempts it used so far: the lease starts the next.
    pub attempts: u32,
    /// Its channel's id (see channel_ids.rs), for the counters.
    pub channel: i64,
    /// When it was published (ms), whether an attempt of it failed before, and whether it is
    /// ordered: what an ack will need once it is in flight (see inflight.rs).
    pub created_at: i64,
    pub failing: bool,
    pub ordered: bool,
}

/// The leasable deliveries of every target app, earliest first.
#[derive(Debug, Default)]
pub struct Ready {
    /// A target app's slot in `sets`.
    slots: HashMap<Box<str>, usize, ByText>,
    /// Per target app: its entries (publishes add later ones, leases take the earliest: see
    /// queue_map.rs).
    sets: Vec<QueueMap<Key, Pending>>,
}

/// A target app, as [`Ready::slot`] numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(usize);

#[derive(Debug, Clone, Copy)]
enum Change {
    Add(Slot, Key, Pending),
    Remove(Slot, Key),
}

/// Builds a [`Ready`] from the leasable deliveries read on open (see `load_open` in
/// mod.rs). Rows come by channel, not in lease order: gathered per app, then each set is
/// built from its sorted entries at once (with 1,000,000 pending deliveries the server
/// answered 0.50–0.73 s after its start, against 0.75–0.93 s inserting one by one).
#[derive(Debug, Default)]
pub struct Loader {
    ready: Ready,
    entries: Vec<Vec<(Key, Pending)>>,
    /// The last row's target and its slot: rows of one channel come together.
    last: Option<(String, Slot)>,
}

impl Loader {
    /// The delivery `rowid`, for `target`, leasable from `available_at`.
    pub fn add(&mut self, target: &str, available_at: i64, rowid: i64, pending: Pending) {
        let slot = match &self.last {
            Some((name, slot)) if name == target => *slot,
            _ => {
                let slot = self.ready.slot(target);
                self.last = Some((target.to_owned(), slot));
                slot
            }
        };
        self.entries.resize_with(self.ready.sets.len(), Vec::new);
        self.entries[slot.0].push(((available_at, rowid), pending));
    }

    pub fn finish(self) -> Ready {
        let Loader {
            mut ready, entries, ..
        } = self;
        for (set, entries) in ready.sets.iter_mut().zip(entries) {
            *set = entries.into_iter().collect();
        }
        ready
    }
}

impl Pending {
    /// A delivery of the event `seq` in `channel`, published at `at`, before any attempt.
    pub fn fresh(seq: i64, channel: i64, at: Timestamp, ordered: bool) -> Pending {
        Pending {
            seq,
            attempts: 0,
            channel,
            created_at: at.millis(),
            failing: false,
            ordered,
        }
    }

    /// What an ack needs of this delivery once leased, on `attempt`, until `expires`.
    pub fn leased(self, attempt: u32, expires: Timestamp) -> Flight {
        Flight {
            attempts: attempt,
            channel: self.channel,
            failing: self.failing,
            created_at: self.created_at,
            seq: self.seq,
            lease_expires_at: expires.millis(),
        }
    }
}

/// Changes of a job or a group, in the order they were made, not yet applied.
#[derive(Debug, Default)]
pub struct Changes {
    changes: Vec<Change>,
}

impl Changes {
    /// The delivery `rowid` is pending, from `available_at`.
    pub fn add(&mut self, slot: Slot, available_at: Timestamp, rowid: i64, pending: Pending) {
        self.changes
            .push(Change::Add(slot, (available_at.millis(), rowid), pending));
    }

    /// The delivery `rowid`, pending from `available_at`, is not any more (leased).
    pub fn remove(&mut self, slot: Slot, available_at: Timestamp, rowid: i64) {
        self.changes
            .push(Change::Remove(slot, (available_at.millis(), rowid)));
    }

    pub fn discard(&mut self) {
        self.changes.clear();
    }
}

impl Ready {
    /// The slot of `target`, given it on first use.
    pub fn slot(&mut self, target: &str) -> Slot {
        if let Some(&slot) = self.slots.get(target) {
            return Slot(slot);
        }
        self.sets.push(QueueMap::default());
        let slot = self.sets.len() - 1;
        self.slots.insert(target.into(), slot);
        Slot(slot)
    }

    /// Applies a job's changes, in order, and empties them; their inverses go to `undo`.
    pub fn apply(&mut self, changes: &mut Changes, undo: &mut Changes) {
        for change in changes.changes.drain(..) {
            let inverse = self.change(change);
            undo.changes.extend(inverse);
        }
    }

    /// Undoes what [`Ready::apply`] did, given its `undo`, and empties it.
    pub fn undo(&mut self, undo: &mut Changes) {
        for change in undo.changes.drain(..).rev() {
            self.change(change);
        }
    }

    /// Makes one change; returns its inverse, if it changed anything.
    fn change(&mut self, change: Change) -> Option<Change> {
        match change {
            Change::Add(slot, key, pending) => match self.sets[slot.0].insert(key, pending) {
                None => Some(Change::Remove(slot, key)),
                Some(before) => Some(Change::Add(slot, key, before)),
            },
            Change::Remove(slot, key) => self.sets[slot.0]
                .remove(&key)
                .map(|pending| Change::Add(slot, key, pending)),
        }
    }

    /// The entries of `slot` available at `now` whose event's seq is at most `durable_seq`,
    /// earliest first, as (available at, row id, what a lease needs).
    pub fn leasable(
        &self,
        slot: Slot,
        now: Timestamp,
        durable_seq: i64,
    ) -> impl Iterator<Item = (Timestamp, i64, Pending)> + '_ {
        let until = (now.millis(), i64::MAX);
        self.sets[slot.0]
            .iter()
            .take_while(move |&(key, _)| *key <= until)
            .filter(move |&(_, p)| p.seq <= durable_seq)
            .map(|(&(at, rowid), &p)| (Timestamp(at), rowid, p))
    }

    /// When the first entry of `slot` whose event's seq is at most `durable_seq` becomes
    /// available.
    pub fn next_at(&self, slot: Slot, durable_seq: i64) -> Option<Timestamp> {
        self.sets[slot.0]
            .iter()
            .find(|&(_, p)| p.seq <= durable_seq)
            .map(|(&(at, _), _)| Timestamp(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leasable(ready: &Ready, slot: Slot, now: i64, durable: i64) -> Vec<(i64, i64)> {
        ready
            .leasable(slot, Timestamp(now), durable)
            .map(|(at, rowid, _)| (at.millis(), rowid))
            .collect()
    }

    /// A pending delivery of the event `seq`, before any attempt.
    fn of(seq: i64) -> Pending {
        Pending {
            seq,
            attempts: 0,
            channel: 1,
            created_at: 0,
            failing: false,
            ordered: false,
        }
    }

    #[test]
    fn entries_come_per_target_earliest_first_up_to_now() {
        let mut ready = Ready::default();
        let (hr, billing) = (ready.slot("hr"), ready.slot("billing"));
        assert_eq!(ready.slot("hr"), hr, "a target keeps its slot");
        let mut changes = Changes::default();
        for (slot, at, rowid) in [(hr, 300, 1), (hr, 100, 2), (billing, 50, 3), (hr, 100, 4)] {
            changes.add(slot, Timestamp(at), rowid, of(1));
        }
        ready.apply(&mut changes, &mut Changes::default());
        assert_eq!(leasable(&ready, hr, 200, 1), vec![(100, 2), (100, 4)]);
        assert_eq!(leasable(&ready, billing, 200, 1), vec![(50, 3)]);
        assert_eq!(leasable(&ready, hr, 99, 1), vec![]);
        assert_eq!(ready.next_at(hr, 1), Some(Timestamp(100)));
    }

    #[test]
    fn events_not_yet_durable_are_left_out() {
        let mut ready = Ready::default();
        let hr = ready.slot("hr");
        let mut changes = Changes::default();
        changes.add(hr, Timestamp(10), 1, of(7));
        changes.add(hr, Timestamp(20), 2, of(5));
        ready.apply(&mut changes, &mut Changes::default());
        assert_eq!(leasable(&ready, hr, 100, 6), vec![(20, 2)]);
        assert_eq!(ready.next_at(hr, 6), Some(Timestamp(20)));
        assert_eq!(ready.next_at(hr, 4), None);
    }

    #[test]
    fn changes_apply_in_the_order_they_were_made() {
        let mut ready = Ready::default();
        let hr = ready.slot("hr");
        let mut job = Changes::default();
        // Row 1 pending, leased, pending again after a failure: leasable at its retry.
        // Row 2 pending, then leased: gone.
        job.add(hr, Timestamp(10), 1, of(1));
        job.remove(hr, Timestamp(10), 1);
        job.add(hr, Timestamp(500), 1, of(1));
        job.add(hr, Timestamp(10), 2, of(1));
        job.remove(hr, Timestamp(10), 2);
        ready.apply(&mut job, &mut Changes::default());
        assert!(job.changes.is_empty(), "applying empties the changes");
        assert_eq!(leasable(&ready, hr, 1_000, 1), vec![(500, 1)]);
    }

    #[test]
    fn discarded_changes_leave_the_set_as_it_was() {
        let mut ready = Ready::default();
        let hr = ready.slot("hr");
        let mut changes = Changes::default();
        changes.add(hr, Timestamp(10), 1, of(1));
        ready.apply(&mut changes, &mut Changes::default());
        changes.remove(hr, Timestamp(10), 1);
        changes.discard();
        ready.apply(&mut changes, &mut Changes::default());
        assert_eq!(leasable(&ready, hr, 10, 1), vec![(10, 1)]);
    }

    #[test]
    fn an_undo_restores_the_set_before_the_jobs_it_covers() {
        let mut ready = Ready::default();
        let hr = ready.slot("hr");
        let mut committed = Changes::default();
        committed.add(hr, Timestamp(10), 1, of(1));
        committed.add(hr, Timestamp(20), 2, of(1));
        ready.apply(&mut committed, &mut Changes::default());
        // A group's jobs: row 1 leased, row 3 published, row 2 leased and back at a retry.
        let mut undo = Changes::default();
        let mut job = Changes::default();
        job.remove(hr, Timestamp(10), 1);
        job.add(hr, Timestamp(30), 3, of(2));
        ready.apply(&mut job, &mut undo);
        job.remove(hr, Timestamp(20), 2);
        job.add(hr, Timestamp(900), 2, of(1));
        // Removing what is not there changes nothing, and is not undone.
        job.remove(hr, Timestamp(5), 9);
        ready.apply(&mut job, &mut undo);
        assert_eq!(leasable(&ready, hr, 1_000, 9), vec![(30, 3), (900, 2)]);
        ready.undo(&mut undo);
        assert_eq!(leasable(&ready, hr, 1_000, 9), vec![(10, 1), (20, 2)]);
        assert!(undo.changes.is_empty(), "undoing empties the undo");
    }
}

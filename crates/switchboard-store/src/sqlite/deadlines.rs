//! When each in-flight delivery's lease ends, kept in the writer's memory instead of an index
//! (schema migration 7): every lease and every ack had to change that index, a B-tree insert or
//! delete and one more WAL page in the commit of each, per delivery.
//!
//! What holds: every in-flight delivery has an entry at its current deadline. An entry may be
//! stale (its lease was extended, or acked by a group that the entry outlived): expiry checks
//! each due entry against its row before acting on it, and drops the stale ones. So the set
//! changes only as the table does: a job records its changes ([`Changes`]), kept if the job
//! succeeds, applied in order once its group commits, and dropped with a rolled-back job or
//! group. Loaded from the table on open. Must not read or write the database otherwise.
//!
//! Entries are grouped by deadline: a lease job gives every delivery it takes the same one,
//! so a set or a clear finds its group among few and changes a hash set of row ids (a
//! `BTreeSet` of (deadline, row id) pairs was 2.8% of the writer's instructions in the full
//! cycle, callgrind).

use std::collections::{BTreeMap, HashSet};

use switchboard_core::Timestamp;

use super::inflight::ByRowid;

/// A lease deadline (ms) and the delivery's row id.
type Entry = (i64, i64);

/// The deadlines of the committed leases, earliest first.
#[derive(Debug, Default)]
pub struct Deadlines {
    /// The row ids leased until each deadline; never an empty set.
    by_deadline: BTreeMap<i64, HashSet<i64, ByRowid>>,
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Set(Entry),
    Clear(Entry),
}

/// Changes of a job or a group, in the order they were made, not yet applied.
#[derive(Debug, Default)]
pub struct Changes {
    changes: Vec<Change>,
}

impl Changes {
    /// The delivery `rowid` is leased until `deadline`.
    pub fn set(&mut self, deadline: Timestamp, rowid: i64) {
        self.changes.push(Change::Set((deadline.millis(), rowid)));
    }

    /// The lease of `rowid` that ran until `deadline` ended (acked, failed, expired, moved).
    pub fn clear(&mut self, deadline: Timestamp, rowid: i64) {
        self.changes.push(Change::Clear((deadline.millis(), rowid)));
    }

    /// Appends `later` (and empties it).
    pub fn merge(&mut self, later: &mut Changes) {
        self.changes.append(&mut later.changes);
    }

    pub fn discard(&mut self) {
        self.changes.clear();
    }
}

/// The deadlines of the deliveries in flight read on open (see `load_open` in mod.rs), as
/// (deadline, row id).
impl FromIterator<Entry> for Deadlines {
    fn from_iter<I: IntoIterator<Item = Entry>>(entries: I) -> Deadlines {
        let mut deadlines = Deadlines::default();
        for entry in entries {
            deadlines.set(entry);
        }
        deadlines
    }
}

impl Deadlines {
    /// Applies a committed group's changes, in order, and empties them.
    pub fn apply(&mut self, changes: &mut Changes) {
        for change in changes.changes.drain(..) {
            match change {
                Change::Set(entry) => self.set(entry),
                Change::Clear(entry) => self.clear(entry),
            }
        }
    }

    fn set(&mut self, (deadline, rowid): Entry) {
        self.by_deadline.entry(deadline).or_default().insert(rowid);
    }

    fn clear(&mut self, (deadline, rowid): Entry) {
        let Some(rowids) = self.by_deadline.get_mut(&deadline) else {
            return;
        };
        rowids.remove(&rowid);
        if rowids.is_empty() {
            self.by_deadline.remove(&deadline);
        }
    }

    /// The entries due at `now`, earliest first (by row id within a deadline), as (deadline,
    /// row id).
    pub fn due(&self, now: Timestamp) -> impl Iterator<Item = (Timestamp, i64)> + '_ {
        self.by_deadline
            .range(..=now.millis())
            .flat_map(|(&deadline, rowids)| {
                let mut sorted: Vec<i64> = rowids.iter().copied().collect();
                sorted.sort_unstable();
                sorted
                    .into_iter()
                    .map(move |rowid| (Timestamp(deadline), rowid))
            })
    }

    /// The earliest deadline after the first `skip` entries (in the order of [`due`](Self::due)).
    pub fn earliest_after(&self, skip: usize) -> Option<Timestamp> {
        let mut skip = skip;
        for (&deadline, rowids) in &self.by_deadline {
            match skip.checked_sub(rowids.len()) {
                Some(rest) => skip = rest,
                None => return Some(Timestamp(deadline)),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due_at(deadlines: &Deadlines, now: i64) -> Vec<(i64, i64)> {
        deadlines
            .due(Timestamp(now))
            .map(|(d, rowid)| (d.millis(), rowid))
            .collect()
    }

    #[test]
    fn changes_apply_in_the_order_they_were_made() {
        let mut deadlines = Deadlines::default();
        let mut job = Changes::default();
        // Row 1 leased, then extended to the same deadline (cleared and set again): due.
        // Row 2 leased, then acked: gone. The last change of each entry decides.
        job.set(Timestamp(100), 1);
        job.clear(Timestamp(100), 1);
        job.set(Timestamp(100), 1);
        job.set(Timestamp(50), 2);
        job.clear(Timestamp(50), 2);
        let mut group = Changes::default();
        group.merge(&mut job);
        assert!(job.changes.is_empty(), "merging empties the job's changes");
        deadlines.apply(&mut group);
        assert_eq!(due_at(&deadlines, 1_000), vec![(100, 1)]);
        assert!(
            group.changes.is_empty(),
            "applying empties the group's changes"
        );
    }

    #[test]
    fn due_entries_come_earliest_first_up_to_now() {
        let mut deadlines = Deadlines::default();
        let mut changes = Changes::default();
        for (deadline, rowid) in [(300, 1), (100, 2), (200, 3), (200, 4)] {
            changes.set(Timestamp(deadline), rowid);
        }
        deadlines.apply(&mut changes);
        assert_eq!(due_at(&deadlines, 200), vec![(100, 2), (200, 3), (200, 4)]);
        assert_eq!(due_at(&deadlines, 99), vec![]);
        assert_eq!(deadlines.earliest_after(0), Some(Timestamp(100)));
        assert_eq!(deadlines.earliest_after(3), Some(Timestamp(300)));
        assert_eq!(deadlines.earliest_after(4), None);
    }

    #[test]
    fn a_deadline_whose_leases_all_ended_is_forgotten() {
        let mut deadlines = Deadlines::default();
        let mut changes = Changes::default();
        changes.set(Timestamp(10), 1);
        changes.set(Timestamp(10), 2);
        changes.set(Timestamp(20), 3);
        changes.clear(Timestamp(10), 1);
        changes.clear(Timestamp(10), 2);
        changes.clear(Timestamp(30), 9); // never set: nothing to clear
        deadlines.apply(&mut changes);
        assert_eq!(due_at(&deadlines, 30), vec![(20, 3)]);
        assert_eq!(deadlines.earliest_after(0), Some(Timestamp(20)));
        assert_eq!(deadlines.by_deadline.len(), 1, "no empty group is kept");
    }

    #[test]
    fn discarded_changes_leave_the_deadlines_as_they_were() {
        let mut deadlines = Deadlines::default();
        let mut changes = Changes::default();
        changes.set(Timestamp(10), 1);
        deadlines.apply(&mut changes);
        changes.clear(Timestamp(10), 1);
        changes.discard();
        deadlines.apply(&mut changes);
        assert_eq!(due_at(&deadlines, 10), vec![(10, 1)]);
    }
}

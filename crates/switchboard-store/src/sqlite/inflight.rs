//! What an ack needs of the unordered deliveries in flight, kept in the writer's memory so
//! that an ack acts on a delivery without reading its row first (the read was 6.3k of the
//! writer's 55.7k instructions per event of the full cycle).
//!
//! What holds: an entry, if there is one, is its delivery's row as of the last commit: in
//! flight on that attempt, unordered. Not every such delivery has one (an extended lease
//! drops its entry, for one): an ack without an entry reads the row. A job records its
//! changes ([`Changes`]); they are dropped if the job fails, kept for the group if it
//! succeeds and applied once the group commits, dropped with a group that rolls back (like
//! the deadlines). A row a job of the open group changed is *touched*: until the commit its
//! entry is not used. Loaded from the table on open. Must not read or write the database.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes a row id with one multiplication: row ids are ours, dense and never chosen by a
/// client, so they need no keyed hash (SipHash here was 1.6% of the writer's instructions).
#[derive(Default)]
pub struct RowidHasher(u64);

impl Hasher for RowidHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_i64(&mut self, rowid: i64) {
        // Odd multiplier: a bijection on the low bits (the table's bucket), mixing into the
        // high ones (its tags).
        self.0 = (rowid as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub type ByRowid = BuildHasherDefault<RowidHasher>;

/// The hasher of the writer's maps keyed by names (apps, channels): std's SipHash cost the
/// writer ~4% of its instructions on a full cycle with 3 targets (callgrind); foldhash is
/// several times cheaper on short strings and still seeded per process, so names that a
/// client picks cannot be made to collide on purpose.
pub type ByText = foldhash::fast::RandomState;

/// An in-flight delivery's row, as an ack needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flight {
    /// The attempt in flight.
    pub attempts: u32,
    /// Its channel's id (see channel_ids.rs): its tenant, source and target.
    pub channel: i64,
    /// Whether an attempt of it failed before (the channel's `failing` counter).
    pub failing: bool,
    /// When it was published (ms): the ack's latency.
    pub created_at: i64,
    /// Its event's seq.
    pub seq: i64,
    /// When its lease ends (ms).
    pub lease_expires_at: i64,
}

/// Changes of a job or a group, in the order they were made, not yet applied.
#[derive(Debug, Default)]
pub struct Changes {
    changes: Vec<(i64, Option<Flight>)>,
}

impl Changes {
    /// The delivery `rowid` is in flight as `flight`.
    pub fn set(&mut self, rowid: i64, flight: Flight) {
        self.changes.push((rowid, Some(flight)));
    }

    /// The delivery `rowid` changed otherwise: it has no entry.
    pub fn clear(&mut self, rowid: i64) {
        self.changes.push((rowid, None));
    }

    pub fn discard(&mut self) {
        self.changes.clear();
    }
}

/// The entries as of the last commit, and the rows the open group touched.
#[derive(Debug, Default)]
pub struct InFlight {
    entries: HashMap<i64, Flight, ByRowid>,
    touched: HashSet<i64, ByRowid>,
    /// The changes of the open group's jobs that succeeded.
    group: Changes,
}

/// The entries of the deliveries in flight read on open (see `load_open` in mod.rs).
impl FromIterator<(i64, Flight)> for InFlight {
    fn from_iter<I: IntoIterator<Item = (i64, Flight)>>(entries: I) -> InFlight {
        InFlight {
            entries: entries.into_iter().collect(),
            ..InFlight::default()
        }
    }
}

impl InFlight {
    /// The entry of `rowid`, unless it has none or the open group touched it.
    pub fn get(&self, rowid: i64) -> Option<&Flight> {
        match self.touched.contains(&rowid) {
            true => None,
            false => self.entries.get(&rowid),
        }
    }

    /// Keeps a job's changes (and empties them) for the group's commit; their rows are
    /// touched until then.
    pub fn keep(&mut self, job: &mut Changes) {
        self.touched
            .extend(job.changes.iter().map(|(rowid, _)| *rowid));
        self.group.changes.append(&mut job.changes);
    }

    /// The open group committed: its changes apply, in order.
    pub fn commit(&mut self) {
        for (rowid, change) in self.group.changes.drain(..) {
            match change {
                Some(flight) => self.entries.insert(rowid, flight),
                None => self.entries.remove(&rowid),
            };
        }
        self.touched.clear();
    }

    /// The open group rolled back: its changes never happened.
    pub fn roll_back(&mut self) {
        self.group.discard();
        self.touched.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flight(attempts: u32) -> Flight {
        Flight {
            attempts,
            channel: 1,
            failing: false,
            created_at: 10,
            seq: 7,
            lease_expires_at: 1_000,
        }
    }

    #[test]
    fn a_change_shows_once_its_group_commits_and_its_row_is_hidden_until_then() {
        let mut in_flight: InFlight = [(1, flight(1))].into_iter().collect();
        let mut job = Changes::default();
        job.set(2, flight(1));
        job.clear(1);
        in_flight.keep(&mut job);
        assert!(job.changes.is_empty(), "keeping empties the job's changes");
        assert_eq!(in_flight.get(1), None, "touched by the open group");
        assert_eq!(in_flight.get(2), None, "not committed yet");
        in_flight.commit();
        assert_eq!(in_flight.get(1), None, "cleared");
        assert_eq!(in_flight.get(2), Some(&flight(1)));
    }

    #[test]
    fn the_last_change_of_a_row_decides() {
        let mut in_flight = InFlight::default();
        let mut job = Changes::default();
        job.set(1, flight(1));
        job.clear(1);
        job.set(1, flight(2));
        job.set(2, flight(1));
        job.clear(2);
        in_flight.keep(&mut job);
        in_flight.commit();
        assert_eq!(in_flight.get(1), Some(&flight(2)));
        assert_eq!(in_flight.get(2), None);
    }

    #[test]
    fn a_rolled_back_group_leaves_the_entries_as_they_were() {
        let mut in_flight: InFlight = [(1, flight(1))].into_iter().collect();
        let mut job = Changes::default();
        job.clear(1);
        job.set(2, flight(1));
        in_flight.keep(&mut job);
        in_flight.roll_back();
        assert_eq!(in_flight.get(1), Some(&flight(1)), "untouched again");
        assert_eq!(in_flight.get(2), None);
        in_flight.commit();
        assert_eq!(in_flight.get(1), Some(&flight(1)), "nothing left to apply");
    }
}

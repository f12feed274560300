//! Leases whose delivery rows are not written yet, kept in the writer's memory.
//!
//! A lease of an unordered delivery changes no row (rewriting the delivery's row was 9.2k
//! of the writer's 41.8k instructions per event of the full cycle, hotpath). It is kept
//! here, and each lease job adds one row to the lease log (its deliveries and attempts,
//! [`pack`]ed), so a crash forgets no lease the writer would not have forgotten anyway (a
//! lease is answered at its commit, before its fsync). The row is written when something
//! needs it: an ack never writes it (its `acks` row records the attempt and when it began,
//! schema 13); a nack, an extension, an expiry or a requeue writes it before reading the
//! row; a lease job first writes every lease kept longer than [`WRITE_AFTER_MS`], which
//! empties the log; reads that show deliveries first have the writer write them all
//! (`settled` in mod.rs). On open, the log is replayed into the rows (`replay_lease_log` in
//! write.rs).
//!
//! At most [`MAX_KEPT`] leases are kept: beyond, a lease writes its row as before, so that
//! writing them all stays a bounded job (8,192 rows: about 75M instructions, ~25 ms of the
//! writer, at most once a second, and only while that many are in flight).
//!
//! What holds: an entry is a lease the rows do not show: its row is pending on the attempt
//! before. Changes apply at once and are undone like the ready set's: a job that fails
//! undoes its own, a group that rolls back all of its. Must not read or write the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::inflight::ByRowid;

/// A lease job first writes the leases kept longer than this (ms), and empties the log.
pub const WRITE_AFTER_MS: i64 = 1_000;

/// The most leases kept unwritten at once.
pub const MAX_KEPT: usize = 8_192;

/// A lease its row does not show yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The attempt leased: the row's `attempts` plus one.
    pub attempt: u32,
    /// When it was leased (ms).
    pub leased_at: i64,
    /// When the lease ends (ms).
    pub expires_at: i64,
}

/// What undoes a change: the rowid and its entry before.
type Undo = Vec<(i64, Option<Lease>)>;

#[derive(Debug, Default)]
pub struct Unwritten {
    leases: HashMap<i64, Lease, ByRowid>,
    /// What undoes the running job's changes.
    job: Undo,
    /// What undoes the changes of the open group's jobs that succeeded.
    group: Undo,
    /// When the oldest lease kept since the last [`drain`](Self::drain) was made (ms): a
    /// hint, not undone (an early write of them all is harmless).
    oldest: Option<i64>,
    /// How many the last commit left: the readers' cue to ask for them to be written.
    committed: Arc<AtomicUsize>,
}

impl Unwritten {
    /// How many leases the last commit left unwritten, as the writer updates it.
    pub fn committed(&self) -> Arc<AtomicUsize> {
        self.committed.clone()
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn get(&self, rowid: i64) -> Option<&Lease> {
        self.leases.get(&rowid)
    }

    /// Keeps the lease of delivery `rowid`.
    pub fn insert(&mut self, rowid: i64, lease: Lease) {
        let before = self.leases.insert(rowid, lease);
        self.job.push((rowid, before));
        self.oldest = Some(
            self.oldest
                .map_or(lease.leased_at, |t| t.min(lease.leased_at)),
        );
    }

    /// Removes and returns the lease of delivery `rowid`, if it is kept: its row is about to
    /// be written.
    pub fn take(&mut self, rowid: i64) -> Option<Lease> {
        let lease = self.leases.remove(&rowid)?;
        self.job.push((rowid, Some(lease)));
        Some(lease)
    }

    /// Whether a lease has been kept at least [`WRITE_AFTER_MS`] at `now` (ms).
    pub fn due(&self, now: i64) -> bool {
        self.oldest.is_some_and(|t| now - t >= WRITE_AFTER_MS)
    }

    /// Removes and returns every lease kept, by rowid: their rows are about to be written.
    pub fn drain(&mut self) -> Vec<(i64, Lease)> {
        let mut all: Vec<(i64, Lease)> = self.leases.drain().collect();
        all.sort_unstable_by_key(|&(rowid, _)| rowid);
        self.job
            .extend(all.iter().map(|&(rowid, lease)| (rowid, Some(lease))));
        self.oldest = None;
        all
    }

    /// Ends the running job: its changes stay with the group if it succeeded, else undone.
    pub fn end_job(&mut self, succeeded: bool) {
        match succeeded {
            true => self.group.append(&mut self.job),
            false => undo(&mut self.leases, &mut self.job),
        }
    }

    /// The open group committed.
    pub fn commit(&mut self) {
        self.group.clear();
        self.committed.store(self.leases.len(), Ordering::Release);
    }

    /// The open group rolled back: its changes are undone.
    pub fn roll_back(&mut self) {
        undo(&mut self.leases, &mut self.group);
        self.committed.store(self.leases.len(), Ordering::Release);
    }
}

/// Applies `changes` backwards, emptying them.
fn undo(leases: &mut HashMap<i64, Lease, ByRowid>, changes: &mut Undo) {
    for (rowid, before) in changes.drain(..).rev() {
        match before {
            Some(lease) => leases.insert(rowid, lease),
            None => leases.remove(&rowid),
        };
    }
}

/// The (delivery rowid, attempt) pairs of a lease job as a lease log row's `rows`: by rowid,
/// each as two LEB128 varints, the rowid's distance from the one before and the attempt
/// (about two bytes a delivery).
pub fn pack(mut rows: Vec<(i64, u32)>) -> Vec<u8> {
    rows.sort_unstable_by_key(|&(rowid, _)| rowid);
    let mut out = Vec::with_capacity(rows.len() * 3);
    let mut last = 0_i64;
    for (rowid, attempt) in rows {
        push_varint(&mut out, rowid.wrapping_sub(last) as u64);
        push_varint(&mut out, u64::from(attempt));
        last = rowid;
    }
    out
}

/// The pairs [`pack`] packed, by rowid; `None` if `bytes` is not such a packing.
pub fn unpack(mut bytes: &[u8]) -> Option<Vec<(i64, u32)>> {
    let mut rows = Vec::new();
    let mut last = 0_i64;
    while !bytes.is_empty() {
        let delta = take_varint(&mut bytes)?;
        let attempt = u32::try_from(take_varint(&mut bytes)?).ok()?;
        last = last.wrapping_add(delta as i64);
        rows.push((last, attempt));
    }
    Some(rows)
}

fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut n = 0_u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        n |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b < 0x80 {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn lease(attempt: u32, leased_at: i64) -> Lease {
        Lease {
            attempt,
            leased_at,
            expires_at: leased_at + 30_000,
        }
    }

    proptest! {
        #[test]
        fn packed_leases_unpack_to_the_same_pairs(
            rows in proptest::collection::btree_map(1_i64..i64::MAX, 1_u32..=u32::MAX, 0..200)
        ) {
            let rows: Vec<(i64, u32)> = rows.into_iter().collect();
            let mut shuffled = rows.clone();
            shuffled.reverse();
            prop_assert_eq!(unpack(&pack(shuffled)), Some(rows));
        }
    }

    #[test]
    fn a_truncated_packing_is_refused() {
        let packed = pack(vec![(300, 1), (70_000, 2)]);
        assert_eq!(unpack(&packed), Some(vec![(300, 1), (70_000, 2)]));
        assert_eq!(unpack(&packed[..packed.len() - 1]), None);
        assert_eq!(unpack(&[0x80; 11]), None, "a varint over 64 bits");
    }

    #[test]
    fn a_failed_job_undoes_its_own_changes_only() {
        let mut u = Unwritten::default();
        u.insert(1, lease(1, 10));
        u.end_job(true);
        u.insert(2, lease(1, 20));
        assert_eq!(u.take(1), Some(lease(1, 10)));
        u.end_job(false);
        assert_eq!(u.get(1), Some(&lease(1, 10)));
        assert_eq!(u.get(2), None);
    }

    #[test]
    fn a_group_rolled_back_undoes_its_jobs_and_keeps_what_was_committed() {
        let mut u = Unwritten::default();
        u.insert(1, lease(1, 10));
        u.insert(2, lease(3, 10));
        u.end_job(true);
        u.commit();
        assert_eq!(u.committed().load(Ordering::Acquire), 2);
        assert_eq!(u.take(2), Some(lease(3, 10)));
        u.end_job(true);
        u.insert(3, lease(1, 20));
        let drained: Vec<i64> = u.drain().into_iter().map(|(rowid, _)| rowid).collect();
        assert_eq!(drained, [1, 3]);
        u.end_job(true);
        u.roll_back();
        assert_eq!(u.get(1), Some(&lease(1, 10)));
        assert_eq!(u.get(2), Some(&lease(3, 10)));
        assert_eq!(u.get(3), None);
        assert_eq!(u.committed().load(Ordering::Acquire), 2);
    }

    #[test]
    fn leases_are_due_once_the_oldest_was_kept_long_enough() {
        let mut u = Unwritten::default();
        assert!(!u.due(i64::MAX));
        u.insert(1, lease(1, 500));
        u.insert(2, lease(1, 100));
        assert!(!u.due(100 + WRITE_AFTER_MS - 1));
        assert!(u.due(100 + WRITE_AFTER_MS));
        u.drain();
        assert!(!u.due(i64::MAX), "nothing kept since");
    }
}

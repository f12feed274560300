//! Which open deliveries the table `open_deliveries` records: every one at or below the
//! mark, none above it (schema migration 15). Must not decide what is open: a delivery's
//! row, with its ack (`delivery_rows`), says that; this only says where to look.
//!
//! A delivery acknowledged soon after its publish, the usual one, used to insert its entry
//! with the publish and delete it with the ack: 6.2k of the writer's 25.5k instructions per
//! delivery of the full cycle with 3 targets (callgrind). Now a publish writes no entry: the
//! newest deliveries, above the mark, are found by reading their rows, and the mark moves
//! up in steps, just before a group's commit, once more than the tail allowed
//! ([`DEFAULT_TAIL`]) lie above it, at most [`MAX_STEP`] at a time. A step records the
//! deliveries it passes that are still open then and leaves at least half of the tail above
//! it, so each delivery has half a tail's worth of later publishes to be acked in before it
//! can get an entry. An ack, a death or a requeue changes the entry of a delivery at or
//! below the mark, and nothing above it. The writer remembers which deliveries above the
//! mark it closed, so a step reads the rows of the others only. What it costs: while nobody
//! consumes, every delivery is recorded as before, and its row read once more by the step.
//!
//! What holds: the mark never passes the newest delivery and only moves up; a delivery's
//! id is above every mark made before its publish (ids only grow: no delivery row is ever
//! deleted; a publish checks it). Readers (the open deliveries of a channel, the oldest,
//! the writer's load on open) read both the table and the rows above the mark, in one
//! snapshot: the mark is a row of the database, moved in the transaction that records.
//! The remembered closed deliveries are closed as of the running job: each job's and
//! group's are undone with it (an entry forgotten only costs a step one read).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::Connection;

use super::inflight::ByRowid;
use crate::StoreError;

/// How many of the newest deliveries may lie above the mark before it moves. Each has half
/// of it (16,384 later deliveries) to be acked in without an entry: with 8,192, 30% of the
/// full cycle's deliveries with 3 targets got one (their consumers lag that far); with
/// this, none. Reading all of them costs a reader about 10 ms, which [`SETTLE_ABOVE`]
/// spares it.
pub const DEFAULT_TAIL: u64 = 32_768;

/// The most deliveries one move passes (unless a reader asked for the newest): a move
/// records every one it passes that is still open, in the group's transaction, and while
/// nobody consumes, that is all of them; 4,096 at a time keep that group's commit within a
/// few milliseconds.
pub const MAX_STEP: i64 = 4_096;

/// A read of the open deliveries first has the writer move the mark to the newest delivery
/// when more than this many lie above it (see `settle_open` in mod.rs): at rest, no read
/// pays for the tail; under load, a read costs the writer the entries of the deliveries in
/// flight then.
pub const SETTLE_ABOVE: i64 = 1_024;

/// The open deliveries above the mark, for a table of deliveries aliased `d`: their rows
/// say they are open (neither finished in the row nor acknowledged in `acks`).
pub const ABOVE_MARK: &str = "d.id > (SELECT below FROM open_mark WHERE id = 1) AND d.finished_at IS NULL \
     AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.id = d.id)";

/// The mark as the writer keeps it: as of the last commit.
#[derive(Debug)]
pub struct Mark {
    below: i64,
    /// How many deliveries may lie above it.
    tail: i64,
    /// Deliveries above the mark that the writer closed (acknowledged, dead) since it
    /// opened, as of the running job.
    closed: HashSet<i64, ByRowid>,
    /// What the running job added to `closed`.
    job: Vec<i64>,
    /// What the open group's successful jobs added.
    group: Vec<i64>,
    /// Whether a job asked for the mark to move to the newest delivery at the commit.
    settle: bool,
    /// How many deliveries lie above the mark as of the last commit, for readers.
    above: Arc<AtomicI64>,
}

/// The mark of an empty database.
impl Default for Mark {
    fn default() -> Mark {
        Mark::new(0, DEFAULT_TAIL)
    }
}

impl Mark {
    fn new(below: i64, tail: u64) -> Mark {
        Mark {
            below,
            tail: i64::try_from(tail).unwrap_or(i64::MAX),
            closed: HashSet::default(),
            job: Vec::new(),
            group: Vec::new(),
            settle: false,
            above: Arc::default(),
        }
    }

    /// The mark stored in the database, with the tail allowed above it.
    pub fn load(conn: &Connection, tail: u64) -> rusqlite::Result<Mark> {
        let (below, newest): (i64, i64) = conn.query_row(
            "SELECT below, (SELECT coalesce(max(id), 0) FROM deliveries) FROM open_mark \
             WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mark = Mark::new(below, tail);
        mark.above.store(newest - below, Ordering::Release);
        Ok(mark)
    }

    /// How many deliveries lie above the mark as of the last commit, as the writer keeps it.
    pub fn above(&self) -> Arc<AtomicI64> {
        self.above.clone()
    }

    /// The running job asks for the mark to move to the newest delivery at the commit.
    pub fn settle(&mut self) {
        self.settle = true;
    }

    /// Whether delivery `id` has an entry in `open_deliveries` while it is open.
    pub fn records(&self, id: i64) -> bool {
        id <= self.below
    }

    /// The mark itself.
    pub fn below(&self) -> i64 {
        self.below
    }

    /// Delivery `id`, above the mark, was closed by the running job.
    pub fn closed(&mut self, id: i64) {
        if self.closed.insert(id) {
            self.job.push(id);
        }
    }

    /// Delivery `id`, above the mark, is open again: not undone with its job, as a
    /// delivery not remembered closed is only read.
    pub fn reopened(&mut self, id: i64) {
        self.closed.remove(&id);
    }

    /// Keeps the running job's closings for its group, or forgets them if it failed.
    pub fn end_job(&mut self, succeeded: bool) {
        match succeeded {
            true => self.group.append(&mut self.job),
            false => {
                for id in self.job.drain(..) {
                    self.closed.remove(&id);
                }
            }
        }
    }

    /// The group committed: its closings stand, the mark is where the group
    /// [`advance`](Mark::advance)d it if it did (`moved_to`), and `newest` is the newest
    /// delivery if known.
    pub fn commit(&mut self, moved_to: Option<i64>, newest: Option<i64>) {
        self.group.clear();
        self.settle = false;
        if let Some(to) = moved_to {
            debug_assert!(to >= self.below);
            self.below = to;
        }
        if let Some(newest) = newest {
            self.above.store(newest - self.below, Ordering::Release);
        }
    }

    /// The group rolled back: its closings are forgotten.
    pub fn roll_back(&mut self) {
        self.settle = false;
        for id in self.group.drain(..) {
            self.closed.remove(&id);
        }
    }

    /// Where the mark moves once `newest` is the newest delivery, if it is due to.
    pub fn due(&self, newest: i64) -> Option<i64> {
        match self.settle {
            true => (newest > self.below).then_some(newest),
            false => (newest - self.below > self.tail)
                .then(|| (newest - self.tail / 2).min(self.below + MAX_STEP)),
        }
    }

    /// Records the open deliveries between the mark and `to` (`to` from [`Mark::due`]) and
    /// moves the stored mark there, in the open transaction; the mark kept here moves with
    /// [`Mark::commit`] once that commits. Only the rows of deliveries not remembered
    /// closed are read: one statement each when they are few, else one for the range.
    pub fn advance(&mut self, conn: &Connection, to: i64) -> Result<(), StoreError> {
        let passed = to - self.below;
        let unknown: Vec<i64> = (self.below + 1..=to)
            .filter(|id| !self.closed.contains(id))
            .collect();
        let recorded = match unknown.len() as i64 * 4 > passed {
            true => conn
                .prepare_cached(&format!(
                    "INSERT INTO open_deliveries (channel, id) SELECT d.channel, d.id \
                     FROM deliveries d WHERE {ABOVE_MARK} AND d.id <= ?1"
                ))?
                .execute([to])?,
            false => {
                let mut one = conn.prepare_cached(
                    "INSERT INTO open_deliveries (channel, id) SELECT d.channel, d.id \
                     FROM deliveries d WHERE d.id = ?1 AND d.finished_at IS NULL \
                     AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.id = d.id)",
                )?;
                let mut recorded = 0;
                for id in &unknown {
                    recorded += one.execute([id])?;
                }
                recorded
            }
        };
        conn.prepare_cached("UPDATE open_mark SET below = ?1 WHERE id = 1")?
            .execute([to])?;
        // At or below the mark, the table says; a rollback reads them again.
        self.closed.retain(|&id| id > to);
        tracing::debug!(
            passed,
            read = unknown.len(),
            recorded,
            "the open deliveries' mark moved"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(below: i64, tail: u64) -> Mark {
        Mark::new(below, tail)
    }

    #[test]
    fn the_mark_moves_once_the_tail_is_longer_than_allowed_and_leaves_half_of_it() {
        assert_eq!(mark(100, 8).due(108), None);
        assert_eq!(mark(100, 8).due(109), Some(105));
        assert_eq!(
            mark(0, 32_768).due(100_000),
            Some(MAX_STEP),
            "a step at a time"
        );
        assert_eq!(mark(0, 0).due(0), None);
        assert_eq!(mark(0, 0).due(3), Some(3));
        assert!(mark(100, 8).records(100));
        assert!(!mark(100, 8).records(101));
    }
}

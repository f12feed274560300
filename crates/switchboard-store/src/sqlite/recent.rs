//! The events published lately, in memory by seq, so that a lease finds them without reading
//! SQLite: consumers mostly lease what was just published. Holds only events whose publish
//! was answered (committed and fsynced), which never change and whose seq is never reused;
//! must never hold more than its capacity, and is only a shortcut (a miss reads the row).

use std::sync::{Arc, Mutex};

use switchboard_core::event::Event;

/// How many events are kept unless configured otherwise: the newest ones. In the full cycle
/// consumers lease within a few hundred events of the publishers.
pub const CAPACITY: usize = 4096;

/// A ring of slots by seq modulo the capacity: seqs are dense (row ids in publish order), so
/// an event takes the slot of the one `capacity` seqs before it, and a lookup is one index.
#[derive(Debug)]
pub struct Recent {
    slots: Mutex<Vec<Slot>>,
}

/// An event and its seq, or nothing yet.
type Slot = Option<(i64, Arc<Event>)>;

impl Recent {
    pub fn new(capacity: usize) -> Recent {
        Recent {
            slots: Mutex::new(vec![None; capacity]),
        }
    }

    /// Keeps the events of a publish once it is answered, each in place of the event
    /// `capacity` seqs older.
    pub fn insert(&self, events: impl IntoIterator<Item = (i64, Event)>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let capacity = slots.len();
        if capacity == 0 {
            return;
        }
        for (seq, event) in events {
            slots[slot(seq, capacity)] = Some((seq, Arc::new(event)));
        }
    }

    /// The events of `seqs` that are here, in their order (`None` where one is not).
    pub fn get_all(&self, seqs: impl Iterator<Item = i64>) -> Vec<Option<Arc<Event>>> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let capacity = slots.len();
        let found: Vec<Option<Arc<Event>>> = seqs
            .map(|seq| match capacity {
                0 => None,
                _ => match &slots[slot(seq, capacity)] {
                    Some((at, event)) if *at == seq => Some(event.clone()),
                    _ => None,
                },
            })
            .collect();
        drop(slots);
        let hits = found.iter().filter(|e| e.is_some()).count();
        metrics::counter!("switchboard_store_recent_events_total", "found" => "yes")
            .increment(hits as u64);
        metrics::counter!("switchboard_store_recent_events_total", "found" => "no")
            .increment((found.len() - hits) as u64);
        found
    }
}

fn slot(seq: i64, capacity: usize) -> usize {
    seq.rem_euclid(capacity as i64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;
    use switchboard_core::Timestamp;

    /// Inserts events of seqs 1..=inserted into a cache of `capacity` and returns, for each
    /// of `asked`, the seq of the event it found (by its id), if it found one.
    fn check_recent(capacity: usize, inserted: i64, asked: &[i64]) -> Vec<Option<i64>> {
        let recent = Recent::new(capacity);
        let events: Vec<Event> = (1..=inserted)
            .map(|n| conformance::event("crm", "t1", "user.created", Timestamp(n)))
            .collect();
        for (seq, event) in (1..).zip(&events) {
            recent.insert([(seq, event.clone())]);
        }
        recent
            .get_all(asked.iter().copied())
            .into_iter()
            .map(|found| {
                let found = found?;
                (1..)
                    .zip(&events)
                    .find(|(_, e)| e.id == found.id)
                    .map(|(seq, _)| seq)
            })
            .collect()
    }

    #[test]
    fn finds_what_it_was_given_by_seq() {
        assert_eq!(check_recent(8, 3, &[2, 3, 1]), [Some(2), Some(3), Some(1)]);
        assert_eq!(check_recent(8, 3, &[4]), [None]);
    }

    #[test]
    fn keeps_only_the_newest_up_to_its_capacity() {
        assert_eq!(check_recent(2, 5, &[3, 4, 5]), [None, Some(4), Some(5)]);
        assert_eq!(
            check_recent(0, 5, &[5]),
            [None],
            "no capacity, nothing kept"
        );
    }
}

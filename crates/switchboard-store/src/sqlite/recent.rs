//! The events published lately, in memory by seq, so that a lease finds them without reading
//! SQLite: consumers mostly lease what was just published. Holds only events whose publish
//! was answered (committed and fsynced), which never change and whose seq is never reused;
//! must never hold more than its capacity, and is only a shortcut (a miss reads the row).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use switchboard_core::event::Event;

/// How many events are kept unless configured otherwise: the newest ones. In the full cycle
/// consumers lease within a few hundred events of the publishers.
pub const CAPACITY: usize = 4096;

#[derive(Debug)]
pub struct Recent {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_seq: HashMap<i64, Arc<Event>>,
    /// Seqs in the order they came, to forget the oldest.
    order: VecDeque<i64>,
}

impl Recent {
    pub fn new(capacity: usize) -> Recent {
        Recent {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Keeps the events of a publish once it is answered, forgetting the oldest beyond the
    /// capacity.
    pub fn insert(&self, events: impl IntoIterator<Item = (i64, Event)>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (seq, event) in events {
            if inner.by_seq.insert(seq, Arc::new(event)).is_none() {
                inner.order.push_back(seq);
            }
        }
        while inner.order.len() > self.capacity {
            if let Some(oldest) = inner.order.pop_front() {
                inner.by_seq.remove(&oldest);
            }
        }
    }

    /// The events of `seqs` that are here, in their order (`None` where one is not).
    pub fn get_all(&self, seqs: impl Iterator<Item = i64>) -> Vec<Option<Arc<Event>>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let found: Vec<Option<Arc<Event>>> =
            seqs.map(|seq| inner.by_seq.get(&seq).cloned()).collect();
        drop(inner);
        let hits = found.iter().filter(|e| e.is_some()).count();
        metrics::counter!("switchboard_store_recent_events_total", "found" => "yes")
            .increment(hits as u64);
        metrics::counter!("switchboard_store_recent_events_total", "found" => "no")
            .increment((found.len() - hits) as u64);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::{AppId, EventId, EventType, TenantId, Timestamp};

    fn event(n: i64) -> Event {
        Event {
            id: EventId::parse(&format!("evt_{n}")).expect("id"),
            tenant: TenantId::parse("t1").expect("tenant"),
            event_type: EventType::parse("user.created").expect("type"),
            source: AppId::parse("crm").expect("app"),
            time: Timestamp(n),
            data: format!("{{\"n\":{n}}}"),
            idempotency_key: None,
            named_targets: None,
            entity_id: None,
            correlation_id: None,
            causation_id: None,
            historical: false,
        }
    }

    /// Inserts events 1..=inserted into a cache of `capacity` and returns which of `asked`
    /// it still has, by their data.
    fn check_recent(capacity: usize, inserted: i64, asked: &[i64]) -> Vec<Option<String>> {
        let recent = Recent::new(capacity);
        for n in 1..=inserted {
            recent.insert([(n, event(n))]);
        }
        recent
            .get_all(asked.iter().copied())
            .into_iter()
            .map(|e| e.map(|e| e.data.clone()))
            .collect()
    }

    #[test]
    fn finds_what_it_was_given_by_seq() {
        assert_eq!(
            check_recent(8, 3, &[2, 3, 1]),
            [
                Some("{\"n\":2}".to_owned()),
                Some("{\"n\":3}".to_owned()),
                Some("{\"n\":1}".to_owned())
            ]
        );
        assert_eq!(check_recent(8, 3, &[4]), [None]);
    }

    #[test]
    fn keeps_only_the_newest_up_to_its_capacity() {
        let found = check_recent(2, 5, &[3, 4, 5]);
        assert_eq!(
            found,
            [
                None,
                Some("{\"n\":4}".to_owned()),
                Some("{\"n\":5}".to_owned())
            ]
        );
    }
}

//! A map kept in key order for keys that mostly arrive in order and mostly leave from the
//! front, as a queue's do: such entries live in a ring buffer, the others in a B-tree. Knows
//! nothing of what it holds.
//!
//! The ready set (ready.rs) is one per target app: a publish adds its deliveries at (now, row
//! id), later than everything before, and a lease takes the earliest. In a `BTreeMap` each
//! of those was a descent and often a node split or merge (the ready set was 3.6% of the
//! writer's instructions in the full cycle, callgrind); here each is a push or a pop.
//!
//! What holds: a key is in at most one of the two parts; `run`'s keys strictly increase
//! front to back.

use std::collections::{BTreeMap, VecDeque};
use std::iter::Peekable;

#[derive(Debug)]
pub struct QueueMap<K, V> {
    /// Entries that arrived in order, earliest first.
    run: VecDeque<(K, V)>,
    /// The others, in key order.
    rest: BTreeMap<K, V>,
}

impl<K, V> Default for QueueMap<K, V> {
    fn default() -> Self {
        QueueMap {
            run: VecDeque::new(),
            rest: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy, V> QueueMap<K, V> {
    /// Inserts `value` at `key`; returns the value it replaced, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(before) = self.rest.get_mut(&key) {
            return Some(std::mem::replace(before, value));
        }
        match self.run.back() {
            Some((last, _)) if key <= *last => {}
            _ => {
                self.run.push_back((key, value));
                return None;
            }
        }
        match self.run.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => Some(std::mem::replace(&mut self.run[i].1, value)),
            Err(_) => self.rest.insert(key, value),
        }
    }

    /// Removes the entry at `key`; returns its value, if there was one.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        match self.run.front() {
            Some((first, _)) if first == key => return self.run.pop_front().map(|(_, v)| v),
            Some((first, _)) if first < key => {
                if let Ok(i) = self.run.binary_search_by(|(k, _)| k.cmp(key)) {
                    return self.run.remove(i).map(|(_, v)| v);
                }
            }
            _ => {}
        }
        self.rest.remove(key)
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> Merged<'_, K, V> {
        Merged {
            run: self
                .run
                .iter()
                .map(pair as fn(&(K, V)) -> (&K, &V))
                .peekable(),
            rest: self.rest.iter().peekable(),
        }
    }
}

fn pair<K, V>((k, v): &(K, V)) -> (&K, &V) {
    (k, v)
}

/// Entries in any order; those that come in order go to the ring buffer.
impl<K: Ord + Copy, V> FromIterator<(K, V)> for QueueMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let mut map = QueueMap::default();
        for (key, value) in entries {
            map.insert(key, value);
        }
        map
    }
}

type RunIter<'a, K, V> =
    std::iter::Map<std::collections::vec_deque::Iter<'a, (K, V)>, fn(&(K, V)) -> (&K, &V)>;

/// The entries of both parts, merged in key order.
pub struct Merged<'a, K, V> {
    run: Peekable<RunIter<'a, K, V>>,
    rest: Peekable<std::collections::btree_map::Iter<'a, K, V>>,
}

impl<'a, K: Ord, V> Iterator for Merged<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        let run_first = match (self.run.peek(), self.rest.peek()) {
            (Some((a, _)), Some((b, _))) => a < b,
            (Some(_), None) => true,
            (None, _) => false,
        };
        match run_first {
            true => self.run.next(),
            false => self.rest.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
        /// The next key after the largest so far: a publish.
        Append(u32),
        /// The first key: a lease.
        PopFirst,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            any::<u8>().prop_map(Op::Remove),
            any::<u32>().prop_map(Op::Append),
            Just(Op::PopFirst),
        ]
    }

    proptest! {
        /// Any sequence of changes leaves it as a `BTreeMap` would be, answering the same.
        #[test]
        fn it_behaves_as_a_btree_map(ops in prop::collection::vec(op(), 0..200)) {
            let mut map: QueueMap<u16, u32> = QueueMap::default();
            let mut model: BTreeMap<u16, u32> = BTreeMap::new();
            let mut next: u16 = 256;
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        prop_assert_eq!(map.insert(k.into(), v), model.insert(k.into(), v));
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(map.remove(&k.into()), model.remove(&k.into()));
                    }
                    Op::Append(v) => {
                        next += 1;
                        prop_assert_eq!(map.insert(next, v), model.insert(next, v));
                    }
                    Op::PopFirst => {
                        let first = model.keys().next().copied();
                        if let Some(k) = first {
                            prop_assert_eq!(map.remove(&k), model.remove(&k));
                        }
                    }
                }
                let got: Vec<(u16, u32)> = map.iter().map(|(k, v)| (*k, *v)).collect();
                let want: Vec<(u16, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn keys_in_order_go_to_the_ring_buffer_and_leave_from_its_front() {
        let mut map: QueueMap<i64, &str> = (1..=3).map(|k| (k, "x")).collect();
        assert_eq!((map.run.len(), map.rest.len()), (3, 0));
        assert_eq!(map.remove(&1), Some("x"));
        // Back at the front (an undone lease): out of order, so in the B-tree.
        assert_eq!(map.insert(1, "y"), None);
        assert_eq!((map.run.len(), map.rest.len()), (2, 1));
        let keys: Vec<i64> = map.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, vec![1, 2, 3]);
    }
}

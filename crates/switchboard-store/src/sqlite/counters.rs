//! Per-channel counters, kept in the same transaction as the delivery changes they count, so
//! they are never off. A write operation collects its changes in a [`Counters`] and hands
//! them to the writer ([`Pending`]), which writes the whole group's changes once, just before
//! the group's commit: one upsert per touched channel and minute, not per delivery or job.
//!
//! Tables: `channels` (current gauges and all-time totals per tenant, source, target),
//! `channel_stats` (per minute and per hour: published, acknowledged, failed attempts, deaths,
//! latency sum) and `channel_latency` (publish → ack histogram buckets per minute and hour).

use std::collections::HashMap;

use rusqlite::{Connection, params};
use switchboard_core::Timestamp;
use switchboard_core::histogram::bucket_of;

use super::channel_ids::ChannelIds;
use super::inflight::ByText;
use crate::StoreError;

pub const MINUTE: i64 = 60_000;
pub const HOUR: i64 = 3_600_000;

/// Changes to one channel.
#[derive(Debug, Default, Clone)]
pub struct Delta {
    pub published: i64,
    pub acknowledged: i64,
    pub failed: i64,
    pub died: i64,
    pub pending: i64,
    pub in_flight: i64,
    pub failing: i64,
    pub dead: i64,
    /// Publish → ack latencies (ms) of the acks counted here.
    pub latencies: Vec<u64>,
}

/// (tenant, source, target)
pub type Channel = (String, String, String);

/// Past this many channels a job's channels are also indexed by a hash map.
const SEARCHED: usize = 8;

#[derive(Debug, Default)]
pub struct Counters {
    /// Each channel once. A job usually touches one or a few: they are found by a linear
    /// search, the last one first (most calls in a row are for the same channel), and a key
    /// is allocated only for a channel not seen before. A job of many channels (a batch
    /// across many tenants) indexes them, so it never searches thousands.
    channels: Vec<(Channel, Delta)>,
    index: HashMap<Channel, usize, ByText>,
    last: usize,
    /// Each channel's id, where a caller that knew it gave it (parallel to `channels`).
    ids: Vec<Option<i64>>,
}

impl Counters {
    /// [`of`](Self::of) for a caller that knows the channel's id (see channel_ids.rs): the
    /// channels are searched by that id, not by three names (which cost ~280 instructions for
    /// each delivery a publish, lease or ack counts).
    pub fn of_channel(
        &mut self,
        channel: i64,
        tenant: &str,
        source: &str,
        target: &str,
    ) -> &mut Delta {
        let id = Some(channel);
        let at = match self.ids.get(self.last) {
            Some(last) if *last == id => self.last,
            // Past `SEARCHED` channels, `of`'s index finds it.
            _ => match (self.ids.len() <= SEARCHED)
                .then(|| self.ids.iter().position(|c| *c == id))
                .flatten()
            {
                Some(at) => at,
                None => {
                    self.of(tenant, source, target);
                    self.ids[self.last] = id;
                    self.last
                }
            },
        };
        self.last = at;
        &mut self.channels[at].1
    }

    pub fn of(&mut self, tenant: &str, source: &str, target: &str) -> &mut Delta {
        let same = |(c, _): &(Channel, Delta)| c.0 == tenant && c.1 == source && c.2 == target;
        let key = || (tenant.to_owned(), source.to_owned(), target.to_owned());
        let at = match self.channels.get(self.last) {
            Some(last) if same(last) => self.last,
            _ if self.channels.len() <= SEARCHED => match self.channels.iter().position(same) {
                Some(at) => at,
                None => self.add(key()),
            },
            _ => {
                let key = key();
                match self.index.get(&key) {
                    Some(&at) => at,
                    None => self.add(key),
                }
            }
        };
        self.last = at;
        &mut self.channels[at].1
    }

    /// Adds a channel not seen before; returns where it is. Past [`SEARCHED`] channels the
    /// index catches up with every channel it does not hold yet.
    fn add(&mut self, channel: Channel) -> usize {
        self.channels.push((channel, Delta::default()));
        self.ids.push(None);
        if self.channels.len() > SEARCHED {
            let indexed = self.index.len();
            for (at, (c, _)) in self.channels.iter().enumerate().skip(indexed) {
                self.index.insert(c.clone(), at);
            }
        }
        self.channels.len() - 1
    }
}

impl Delta {
    fn add(&mut self, d: Delta) {
        self.published += d.published;
        self.acknowledged += d.acknowledged;
        self.failed += d.failed;
        self.died += d.died;
        self.pending += d.pending;
        self.in_flight += d.in_flight;
        self.failing += d.failing;
        self.dead += d.dead;
        self.latencies.extend(d.latencies);
    }
}

/// Counter changes waiting for the commit of the current job or group, by channel and minute.
#[derive(Debug, Default)]
pub struct Pending {
    changes: HashMap<(Channel, i64), Delta, ByText>,
}

impl Pending {
    /// Adds a job's changes, bucketed at `now`.
    pub fn absorb(&mut self, counters: Counters, now: Timestamp) {
        let minute = now.millis() - now.millis().rem_euclid(MINUTE);
        for (channel, delta) in counters.channels {
            self.changes
                .entry((channel, minute))
                .or_default()
                .add(delta);
        }
    }

    pub fn merge(&mut self, other: &mut Pending) {
        for (key, delta) in other.changes.drain() {
            self.changes.entry(key).or_default().add(delta);
        }
    }

    pub fn clear(&mut self) {
        self.changes.clear();
    }

    /// Writes and forgets every change; a channel's first row gets its id from `ids`.
    pub fn flush(&mut self, conn: &Connection, ids: &mut ChannelIds) -> Result<(), StoreError> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let mut state = conn.prepare_cached(
            "INSERT INTO channels (tenant, source, target, pending, in_flight, failing, dead, published, acknowledged, id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT (tenant, source, target) DO UPDATE SET \
               pending = pending + excluded.pending, in_flight = in_flight + excluded.in_flight, \
               failing = failing + excluded.failing, dead = dead + excluded.dead, \
               published = published + excluded.published, acknowledged = acknowledged + excluded.acknowledged",
        )?;
        let mut stats = conn.prepare_cached(
            "INSERT INTO channel_stats (tenant, source, target, period, start, published, acknowledged, failed, died, latency_sum) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT (tenant, source, target, period, start) DO UPDATE SET \
               published = published + excluded.published, acknowledged = acknowledged + excluded.acknowledged, \
               failed = failed + excluded.failed, died = died + excluded.died, \
               latency_sum = latency_sum + excluded.latency_sum",
        )?;
        let mut latency = conn.prepare_cached(
            "INSERT INTO channel_latency (tenant, source, target, period, start, bucket, count) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (tenant, source, target, period, start, bucket) DO UPDATE SET count = count + excluded.count",
        )?;
        for (((tenant, source, target), minute), d) in self.changes.drain() {
            state.execute(params![
                tenant,
                source,
                target,
                d.pending,
                d.in_flight,
                d.failing,
                d.dead,
                d.published,
                d.acknowledged,
                ids.id(&tenant, &source, &target)
            ])?;
            let windowed = d.published != 0 || d.acknowledged != 0 || d.failed != 0 || d.died != 0;
            if !windowed {
                continue;
            }
            let latency_sum: i64 = d.latencies.iter().map(|l| *l as i64).sum();
            let mut buckets: HashMap<usize, i64> = HashMap::new();
            for l in &d.latencies {
                *buckets.entry(bucket_of(*l)).or_default() += 1;
            }
            for (period, start) in [(MINUTE, minute), (HOUR, minute - minute.rem_euclid(HOUR))] {
                stats.execute(params![
                    tenant,
                    source,
                    target,
                    period,
                    start,
                    d.published,
                    d.acknowledged,
                    d.failed,
                    d.died,
                    latency_sum
                ])?;
                for (bucket, count) in &buckets {
                    latency.execute(params![
                        tenant,
                        source,
                        target,
                        period,
                        start,
                        *bucket as i64,
                        count
                    ])?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts `rounds` touches of each of `n` channels, interleaved, and checks each channel
    /// has one entry holding all of its touches.
    fn check_counters_find_channels_again(n: usize, rounds: i64) {
        let mut counters = Counters::default();
        for _ in 0..rounds {
            for i in 0..n {
                counters.of(&format!("t{i}"), "crm", "hr").published += 1;
                // By id (channel `i`) and by name, in turn: both find the same entry.
                counters
                    .of_channel(i as i64, &format!("t{i}"), "crm", "hr")
                    .pending += 1;
                // ...and the next channel, after this one.
                let next = (i + 1) % n;
                counters
                    .of_channel(next as i64, &format!("t{next}"), "crm", "hr")
                    .failed += 1;
            }
        }
        assert_eq!(counters.channels.len(), n);
        for (i, ((tenant, _, _), d)) in counters.channels.iter().enumerate() {
            assert_eq!(tenant, &format!("t{i}"));
            assert_eq!(
                (d.published, d.pending, d.failed),
                (rounds, rounds, rounds),
                "{tenant}"
            );
        }
    }

    #[test]
    fn a_channel_found_by_its_id_is_the_one_it_names() {
        for n in [1, 3, SEARCHED, SEARCHED + 1, 40] {
            let mut counters = Counters::default();
            let name = |i: usize| format!("t{i}");
            // Met by name first, then by id in the other order, three times.
            for i in 0..n {
                counters.of(&name(i), "crm", "hr");
            }
            for _ in 0..3 {
                for i in (0..n).rev() {
                    counters.of_channel(i as i64, &name(i), "crm", "hr").pending += i as i64 + 1;
                }
            }
            let counted: Vec<(String, i64)> = counters
                .channels
                .iter()
                .map(|((tenant, _, _), d)| (tenant.clone(), d.pending))
                .collect();
            let expected: Vec<(String, i64)> =
                (0..n).map(|i| (name(i), 3 * (i as i64 + 1))).collect();
            assert_eq!(counted, expected, "{n} channels");
        }
    }

    #[test]
    fn a_channel_is_counted_in_one_place_however_many_a_job_touches() {
        check_counters_find_channels_again(1, 3);
        check_counters_find_channels_again(SEARCHED, 3);
        check_counters_find_channels_again(SEARCHED + 1, 3);
        check_counters_find_channels_again(100, 3);
    }
}

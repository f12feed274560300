//! Latency histograms with log-linear buckets (4 per power of two, so any value is within
//! about 19 % of its bucket's bounds), small enough to keep one per channel and time bucket,
//! and mergeable by adding counts. Percentiles interpolate inside a bucket.

/// Sub-buckets per power of two.
const SUB: u32 = 4;
/// Values at or above 2^MAX_EXP ms (about 12 days) share the last bucket.
const MAX_EXP: u32 = 40;
pub const BUCKETS: usize = (SUB * MAX_EXP + 1) as usize;

/// The bucket of a latency in milliseconds.
pub fn bucket_of(ms: u64) -> usize {
    if ms < SUB as u64 {
        return ms as usize;
    }
    let exp = 63 - ms.leading_zeros(); // ms in [2^exp, 2^(exp+1))
    if exp >= MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = ((ms >> (exp - 2)) & 0b11) as u32; // next two bits after the leading one
    ((exp - 1) * SUB + sub) as usize
}

/// The `[low, high)` range of a bucket, in milliseconds.
pub fn bucket_range(bucket: usize) -> (u64, u64) {
    let b = bucket as u32;
    if b < SUB {
        return (b as u64, b as u64 + 1);
    }
    if bucket >= BUCKETS - 1 {
        return (1 << MAX_EXP, u64::MAX);
    }
    let exp = b / SUB + 1;
    let sub = (b % SUB) as u64;
    let width = 1u64 << (exp - 2);
    let low = (1u64 << exp) + sub * width;
    (low, low + width)
}

/// Counts per bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
        }
    }
}

impl Histogram {
    pub fn record(&mut self, ms: u64) {
        self.add(bucket_of(ms), 1);
    }

    /// Adds `count` to `bucket` (ignored when out of range: a newer build's bucket).
    pub fn add(&mut self, bucket: usize, count: u64) {
        if let Some(c) = self.counts.get_mut(bucket) {
            *c += count;
        }
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Non-empty buckets as (bucket, count).
    pub fn nonzero(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(b, c)| (b, *c))
    }

    /// The `q` quantile (0..=1) in milliseconds, interpolated inside its bucket; `None` when
    /// empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, count) in self.nonzero() {
            if seen + count >= rank {
                let (low, high) = bucket_range(bucket);
                let high = high.min(low.saturating_mul(2).max(low + 1));
                let into = (rank - seen) as f64 / count as f64;
                return Some(low + ((high - low - 1) as f64 * into).round() as u64);
            }
            seen += count;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_values_are_exact() {
        for ms in 0..4 {
            assert_eq!(bucket_range(bucket_of(ms)), (ms, ms + 1));
        }
        assert_eq!(bucket_range(bucket_of(4)), (4, 5));
        assert_eq!(bucket_range(bucket_of(7)), (7, 8));
        assert_eq!(bucket_range(bucket_of(8)), (8, 10));
        assert_eq!(bucket_range(bucket_of(1000)), (896, 1024));
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100 {
            h.record(ms);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((44..=56).contains(&p50), "{p50}");
        assert!((88..=112).contains(&p99), "{p99}");
        assert_eq!(h.count(), 100);
    }

    proptest! {
        #[test]
        fn every_value_lands_in_its_bucket(ms in 0u64..(1 << 45)) {
            let (low, high) = bucket_range(bucket_of(ms));
            prop_assert!(low <= ms && ms < high, "{} not in [{}, {})", ms, low, high);
        }

        #[test]
        fn one_value_quantile_is_within_a_fifth(ms in 1u64..(1 << 39)) {
            let mut h = Histogram::default();
            h.record(ms);
            let q = h.quantile(0.5).unwrap();
            prop_assert!(q as f64 >= ms as f64 * 0.8 && q as f64 <= ms as f64 * 1.25, "{} for {}", q, ms);
        }
    }
}

//! Small statistics: percentiles of latency samples and the median and spread of repeated runs.
//! Pure functions on slices; nothing here measures or allocates per sample.

/// The median, lowest and highest of the figures of repeated runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// The spread of `values`; `None` when there are none. The median of an even count is the mean
/// of the two middle values. NaNs sort last.
pub fn spread(values: &[f64]) -> Option<Spread> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Some(Spread {
        median,
        min: sorted[0],
        max: sorted[n - 1],
    })
}

/// The `q`-quantile (0.0..=1.0) of already sorted samples by the nearest-rank method: the
/// smallest sample with at least `q` of all samples at or below it. `None` when empty.
pub fn quantile_sorted(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_odd_and_even_counts() {
        assert_eq!(spread(&[]), None);
        assert_eq!(
            spread(&[3.0, 1.0, 2.0]),
            Some(Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            })
        );
        assert_eq!(
            spread(&[4.0, 1.0, 2.0, 10.0]),
            Some(Spread {
                median: 3.0,
                min: 1.0,
                max: 10.0
            })
        );
    }

    #[test]
    fn nearest_rank_quantiles() {
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile_sorted(&samples, 0.5), Some(500));
        assert_eq!(quantile_sorted(&samples, 0.99), Some(990));
        assert_eq!(quantile_sorted(&samples, 0.999), Some(999));
        assert_eq!(quantile_sorted(&samples, 1.0), Some(1000));
        assert_eq!(quantile_sorted(&samples, 0.0), Some(1));
        assert_eq!(quantile_sorted(&[7], 0.999), Some(7));
        assert_eq!(quantile_sorted(&[], 0.5), None);
    }
}

//! The delivery-latency histogram: observed once per event per stream, so it must not
//! be a lock every stream of the server takes, nor one set of atomics they all add to.
//! prometheus-client's `Histogram` keeps its counts behind one mutex (its own TODO says
//! atomics); this one keeps a counter per bucket in each thread's stripe
//! ([`Striped`]), and encodes their sums as the same classic histogram. A writer that
//! sends a stream's backlog at once counts its events in a [`LatencyRun`] first and
//! adds that to the stripe once per bucket: three atomic adds per event cost more than
//! copying it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eric_core::Striped;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::striped;

/// The first bucket's upper bound; each next one doubles it.
const FIRST_BOUND_NANOS: u64 = 100_000;
/// 100 µs to 3.3 s, doubling.
const BUCKETS: usize = 16;

/// A histogram of durations with buckets of 100 µs, 200 µs, ... 3.3 s and +Inf. Cheap
/// to clone (the clones share the counts).
#[derive(Clone, Debug, Default)]
pub(crate) struct LatencyHistogram {
    counts: Arc<Striped<Counts>>,
}

#[derive(Debug, Default)]
struct Counts {
    /// Per bucket, not cumulative; the last is +Inf.
    buckets: [AtomicU64; BUCKETS + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    /// Counts one duration: three atomic adds to this thread's stripe, no lock.
    #[inline]
    pub(crate) fn observe(&self, latency: Duration) {
        let mut run = LatencyRun::default();
        self.observe_in(&mut run, latency);
        self.record(&run);
    }

    /// Counts `latency` in `run`, which holds durations of one bucket: a duration of
    /// another bucket records the run first. The events of a round, read oldest
    /// first, mostly fall in one bucket (they double), so a round of many costs about
    /// what a round of one does.
    #[inline]
    pub(crate) fn observe_in(&self, run: &mut LatencyRun, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = bucket_of(nanos);
        if run.count > 0 && run.bucket != bucket {
            self.record(run);
            *run = LatencyRun::default();
        }
        run.bucket = bucket;
        run.count += 1;
        run.sum_nanos = run.sum_nanos.wrapping_add(nanos);
    }

    /// Counts the durations of `run`: three atomic adds to this thread's stripe, no
    /// lock.
    #[inline]
    pub(crate) fn record(&self, run: &LatencyRun) {
        if run.count == 0 {
            return;
        }
        let counts = self.counts.local();
        counts.buckets[run.bucket].fetch_add(run.count, Ordering::Relaxed);
        counts.sum_nanos.fetch_add(run.sum_nanos, Ordering::Relaxed);
        counts.count.fetch_add(run.count, Ordering::Relaxed);
    }
}

/// Durations of one bucket, counted on one thread, not yet in a [`LatencyHistogram`]
/// ([`LatencyHistogram::observe_in`]).
#[derive(Debug, Default)]
pub(crate) struct LatencyRun {
    bucket: usize,
    count: u64,
    sum_nanos: u64,
}

/// The bucket `nanos` falls in: the first whose upper bound is at least it.
fn bucket_of(nanos: u64) -> usize {
    // Bucket i holds (bound·2^(i-1), bound·2^i]: i is the bit length of
    // (nanos - 1) / bound.
    let scaled = nanos.saturating_sub(1) / FIRST_BOUND_NANOS;
    (u64::BITS - scaled.leading_zeros()).min(BUCKETS as u32) as usize
}

fn upper_bound(bucket: usize) -> f64 {
    if bucket == BUCKETS {
        f64::INFINITY
    } else {
        (FIRST_BOUND_NANOS << bucket) as f64 / 1e9
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = (0..=BUCKETS)
            .map(|i| {
                (
                    upper_bound(i),
                    striped::sum(&self.counts, |counts| &counts.buckets[i]),
                )
            })
            .collect();
        let sum = striped::sum(&self.counts, |counts| &counts.sum_nanos) as f64 / 1e9;
        let count = striped::sum(&self.counts, |counts| &counts.count);
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_duration_lands_in_the_first_bucket_that_bounds_it() {
        let us = |n: u64| bucket_of(n * 1_000);
        assert_eq!(bucket_of(0), 0);
        assert_eq!(us(100), 0, "a bound is in its own bucket");
        assert_eq!(us(100) + 1, bucket_of(100_001));
        assert_eq!(us(200), 1);
        assert_eq!(us(201), 2);
        assert_eq!(us(400), 2);
        assert_eq!(
            bucket_of(FIRST_BOUND_NANOS << 15),
            15,
            "3.3 s, the last bound"
        );
        assert_eq!(bucket_of((FIRST_BOUND_NANOS << 15) + 1), BUCKETS, "+Inf");
        assert_eq!(bucket_of(u64::MAX), BUCKETS);
        for bucket in 0..BUCKETS {
            let bound = FIRST_BOUND_NANOS << bucket;
            assert_eq!(bucket_of(bound), bucket);
            assert_eq!(bucket_of(bound + 1), bucket + 1);
        }
    }

    #[test]
    fn runs_record_what_observing_each_would() {
        let durations = [50, 150, 150, 120, 900, 5_000_000, 60].map(Duration::from_micros);
        let (each, at_once) = (LatencyHistogram::default(), LatencyHistogram::default());
        let mut run = LatencyRun::default();
        for d in durations {
            each.observe(d);
            at_once.observe_in(&mut run, d);
        }
        at_once.record(&run);
        at_once.record(&LatencyRun::default());
        let text = |h: LatencyHistogram| {
            let mut registry = prometheus_client::registry::Registry::default();
            registry.register("latency_seconds", "test", h);
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap_or_default();
            text
        };
        let (each, at_once) = (text(each), text(at_once));
        assert!(at_once.contains("latency_seconds_count 7"), "{at_once}");
        assert!(
            at_once.contains("latency_seconds_bucket{le=\"0.0002\"} 5"),
            "{at_once}"
        );
        assert_eq!(each, at_once);
    }

    #[test]
    fn it_encodes_as_a_classic_histogram() {
        let histogram = LatencyHistogram::default();
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_secs(10));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("latency_seconds", "test", histogram);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap_or_default();
        assert!(text.contains("# TYPE latency_seconds histogram"), "{text}");
        assert!(text.contains("latency_seconds_count 3"), "{text}");
        assert!(
            text.contains("latency_seconds_bucket{le=\"0.0001\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("latency_seconds_bucket{le=\"0.0008\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("latency_seconds_bucket{le=\"0.0016\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("latency_seconds_bucket{le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(text.contains("latency_seconds_sum 10.00105"), "{text}");
    }
}

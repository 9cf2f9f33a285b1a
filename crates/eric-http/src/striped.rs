//! Counts every stream adds to on every event, striped by thread. One shared atomic
//! add per event from every stream makes two cores pass its cache line back and forth
//! on every delivery (perf showed that line as most of `SseBody`'s own time at 1,000
//! streams); here each thread adds to a stripe on cache lines of its own, and a scrape
//! sums the stripes (eric-core's [`Striped`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eric_core::Striped;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// The sum over `striped`'s stripes of one of their counts.
pub(crate) fn sum<T>(striped: &Striped<T>, count: impl Fn(&T) -> &AtomicU64) -> u64 {
    striped
        .iter()
        .map(|stripe| count(stripe).load(Ordering::Relaxed))
        .fold(0, u64::wrapping_add)
}

/// A Prometheus counter that many threads add to at once. Cheap to clone (the clones
/// share the count).
#[derive(Clone, Debug, Default)]
pub(crate) struct StripedCounter {
    counts: Arc<Striped<AtomicU64>>,
}

impl StripedCounter {
    /// Adds `n`.
    #[inline]
    pub(crate) fn inc_by(&self, n: u64) {
        self.counts.local().fetch_add(n, Ordering::Relaxed);
    }

    /// The total so far.
    pub(crate) fn get(&self) -> u64 {
        sum(&self.counts, |count| count)
    }
}

impl TypedMetric for StripedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for StripedCounter {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_sums_what_every_thread_added() {
        let counter = StripedCounter::default();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || (0..1_000).for_each(|_| counter.inc_by(1)))
            })
            .collect();
        threads
            .into_iter()
            .for_each(|t| t.join().unwrap_or_default());
        assert_eq!(counter.get(), 8_000);
    }

    #[test]
    fn it_encodes_as_a_counter() {
        let counter = StripedCounter::default();
        counter.inc_by(1);
        counter.inc_by(1);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("delivered", "test", counter);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap_or_default();
        assert!(text.contains("# TYPE delivered counter"), "{text}");
        assert!(text.contains("delivered_total 2"), "{text}");
    }
}

//! Counts every stream adds to on every event, striped by thread. One shared atomic
//! add per event from every stream makes two cores pass its cache line back and forth
//! on every delivery (perf showed that line as most of `SseBody`'s own time at 1,000
//! streams); here each thread adds to a stripe on cache lines of its own, and a scrape
//! sums the stripes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// At most this many stripes, whatever the machine.
const MAX_STRIPES: usize = 64;

/// One `T` per stripe, each on cache lines of its own; a thread always uses the same.
#[derive(Debug)]
pub(crate) struct Striped<T> {
    stripes: Box<[CachePadded<T>]>,
}

impl<T: Default> Default for Striped<T> {
    fn default() -> Self {
        // Four stripes per core, a power of two: threads take stripes in the order they
        // first count, so a runtime's workers, started together, rarely share one.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stripes = (cores * 4).next_power_of_two().min(MAX_STRIPES);
        Striped {
            stripes: (0..stripes).map(|_| CachePadded::default()).collect(),
        }
    }
}

impl<T> Striped<T> {
    /// The calling thread's stripe.
    #[inline]
    pub(crate) fn local(&self) -> &T {
        // A power of two: the mask is the modulo.
        let index = STRIPE.with(|stripe| *stripe) & (self.stripes.len() - 1);
        &self.stripes[index]
    }

    /// The sum over the stripes of one of their counts.
    pub(crate) fn sum(&self, count: impl Fn(&T) -> &AtomicU64) -> u64 {
        self.stripes
            .iter()
            .map(|stripe| count(stripe).load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// The next stripe number a thread takes.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's stripe number, taken when it first counts.
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed);
}

/// A Prometheus counter that many threads add to at once. Cheap to clone (the clones
/// share the count).
#[derive(Clone, Debug, Default)]
pub(crate) struct StripedCounter {
    counts: Arc<Striped<AtomicU64>>,
}

impl StripedCounter {
    /// Adds one.
    #[inline]
    pub(crate) fn inc(&self) {
        self.counts.local().fetch_add(1, Ordering::Relaxed);
    }

    /// The total so far.
    pub(crate) fn get(&self) -> u64 {
        self.counts.sum(|count| count)
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
                std::thread::spawn(move || (0..1_000).for_each(|_| counter.inc()))
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
        counter.inc();
        counter.inc();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("delivered", "test", counter);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap_or_default();
        assert!(text.contains("# TYPE delivered counter"), "{text}");
        assert!(text.contains("delivered_total 2"), "{text}");
    }
}

//! What a stream's writer delivers in one round of polls, counted there and added to
//! the server's metrics once at the round's end.
//!
//! A writer that sends a stream's backlog at once gathers up to 64 events in a round.
//! Counting each where it is delivered cost a reading of the clock and four atomic
//! adds per event (perf: a sixth of the server's time at saturation, more than the
//! copies); a round reads the clock once (its events are written together) and adds to
//! each count once (the latencies once per bucket they fall in, [`LatencyRun`]). A
//! round's first event is counted at once, as it was alone: a round of one costs only
//! the round's own plumbing (~30 instructions, callgrind).

use eric_prefabs::SseEvent;
use tokio::time::Instant;

use crate::latency::LatencyRun;
use crate::state::Metrics;

/// The events a round delivered and their latencies, with the round's time.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    now: Option<Instant>,
    /// Counted here, not yet in the metrics: all but the first.
    delivered: u64,
    latencies: LatencyRun,
}

impl Deliveries {
    /// The round's time: the clock (or a reading its turn shares, `clock.rs`), read
    /// at the first call.
    pub(crate) fn now(&mut self) -> Instant {
        *self.now.get_or_insert_with(crate::clock::now)
    }

    /// Counts `event` as delivered now, with its latency if it knows when it was
    /// accepted. The round's first event goes to `metrics` at once, as it would alone
    /// (most rounds have one: deferring it would only add work); the others are
    /// counted here, their latencies into `metrics` only when one falls in another
    /// bucket than the last.
    #[inline]
    pub(crate) fn add(&mut self, event: &SseEvent, metrics: &Metrics) {
        let first = self.now.is_none();
        let now = self.now();
        let latency = event
            .accepted_at()
            .map(|accepted| now.into_std().saturating_duration_since(accepted));
        if first {
            metrics.delivered.inc_by(1);
            if let Some(latency) = latency {
                metrics.delivery_latency.observe(latency);
            }
            return;
        }
        self.delivered += 1;
        if let Some(latency) = latency {
            metrics
                .delivery_latency
                .observe_in(&mut self.latencies, latency);
        }
    }

    /// Adds the round's counts to `metrics` (what [`add`](Self::add) has not yet).
    #[inline]
    pub(crate) fn record(&self, metrics: &Metrics) {
        // Most rounds had one event (counted already) or none.
        if self.delivered > 0 {
            metrics.delivered.inc_by(self.delivered);
            metrics.delivery_latency.record(&self.latencies);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_reads_the_clock_once() {
        let mut round = Deliveries::default();
        let first = round.now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(round.now(), first);
        assert!(Deliveries::default().now() > first);
    }
}

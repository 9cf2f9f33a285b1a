//! Acknowledgements of delivered dispatches on their way to Redis, counted per stored
//! listener: a new stream of a listener on this process waits for them before it reads
//! the listener's queue, so that what a stream here delivered is not delivered again.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// How long a new stream waits for the acknowledgements of an older one: past it (Redis
/// slow or away), it goes on and may deliver them again (at least once).
const SETTLE: Duration = Duration::from_secs(2);

#[derive(Default)]
pub(super) struct AcksInFlight {
    /// Acknowledgement senders running, by the listener's queue key.
    running: Mutex<HashMap<String, usize>>,
    settled: Notify,
}

impl AcksInFlight {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A sender starts for `queue` (called before it is spawned).
    pub(super) fn start(&self, queue: &str) {
        *self.running().entry(queue.to_owned()).or_default() += 1;
    }

    /// A sender for `queue` has nothing more to send.
    pub(super) fn finish(&self, queue: &str) {
        let mut running = self.running();
        if let Some(count) = running.get_mut(queue) {
            *count -= 1;
            if *count == 0 {
                running.remove(queue);
            }
        }
        drop(running);
        self.settled.notify_waiters();
    }

    /// Waits until no acknowledgement for `queue` is on its way, for [`SETTLE`] at most.
    pub(super) async fn settle(&self, queue: &str) {
        let wait = async {
            loop {
                let mut notified = pin!(self.settled.notified());
                // Registered before looking, so that a finish in between is not missed.
                notified.as_mut().enable();
                if !self.running().contains_key(queue) {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(SETTLE, wait).await;
    }
}

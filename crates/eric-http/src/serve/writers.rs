//! The tasks that write the streams HTTP/1.x connections hand over: a few, each running
//! its share of the streams' writers, rather than a tokio task per stream.
//!
//! A broadcast to 1,000 streams woke 1,000 tasks, and tokio's wake and poll of each
//! (its run queue, the task's state transitions, the scheduler's context) cost about
//! 500 of the 2,276 instructions per delivered event (callgrind, `load -- instructions`).
//! Here a broadcast wakes a stream's writer inside its group, a `FuturesUnordered`:
//! a flag and a queue of its own, and one tokio wake for the group. Each group is a
//! tokio task, so the groups spread over the worker threads.
//!
//! Each writer has a budget of its own rather than a share of its group's tokio budget
//! (which ran out after 128 sends: the rest of a busy group's writers were polled for
//! nothing and put off, costing a third more CPU per event at saturation). A writer
//! runs outside tokio's budget (`unconstrained`) and bounds itself: a few gathered
//! writes and reads of what its client sends per poll (`handoff.rs`), then it wakes
//! itself and the group's others go first; a group yields to its thread's other tasks
//! once it has polled as many writers as it holds (`FuturesUnordered`'s rule). So a
//! stream with a long backlog, or a client that sends bytes without end, still lets the
//! others run.
//!
//! There is one group per worker thread. More were slower at saturation, not faster
//! (16,000 broadcasts pipelined to 1,000 streams, three interleaved runs each): CPU per
//! event 0.56-0.59x the reference's with one group per thread, 0.62-0.78x with four,
//! 0.77-0.94x with sixteen, where a task per stream read 0.58-0.67x. Each group is a
//! tokio task that a broadcast wakes and that tokio moves between its threads to
//! balance them: a likely reason, not a measured one, is that fewer groups make fewer
//! such wakes and moves.
//!
//! A group's poll of its writers is a turn (`clock.rs`): their rounds share readings of
//! the clock, one per 16 rounds.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

/// Groups per worker thread (see the module's documentation for why one).
const GROUPS_PER_THREAD: usize = 1;

/// A stream's writer, with what it holds until the stream ends.
type Writer = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The groups of a server's stream writers. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Writers(Arc<Groups>);

#[derive(Default)]
struct Groups {
    /// Made (and their tasks spawned) by the first stream, in the runtime.
    senders: OnceLock<Box<[mpsc::UnboundedSender<Writer>]>>,
    next: AtomicUsize,
}

impl Writers {
    /// Runs `writer` in one of the groups, in turn.
    pub(crate) fn run(&self, writer: impl Future<Output = ()> + Send + 'static) {
        let senders = self.0.senders.get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            (0..GROUPS_PER_THREAD * threads)
                .map(|_| {
                    let (sender, incoming) = mpsc::unbounded_channel();
                    tokio::spawn(run_group(incoming));
                    sender
                })
                .collect()
        });
        let turn = self.0.next.fetch_add(1, Ordering::Relaxed) % senders.len();
        if let Err(mpsc::error::SendError(writer)) = senders[turn].send(Box::pin(writer)) {
            // Its group ended (its runtime is shutting down): the writer runs alone.
            tokio::spawn(writer);
        }
    }
}

/// Runs the writers sent to it until they all end and no more can come.
async fn run_group(mut incoming: mpsc::UnboundedReceiver<Writer>) {
    let mut writers = FuturesUnordered::new();
    let mut open = true;
    while open || !writers.is_empty() {
        tokio::select! {
            biased;
            writer = incoming.recv(), if open => match writer {
                // A panic ends its own stream, not the group's others.
                Some(writer) => writers.push(tokio::task::unconstrained(
                    AssertUnwindSafe(writer).catch_unwind(),
                )),
                None => open = false,
            },
            // A turn: its writers' rounds share readings of the clock.
            Some(ended) = std::future::poll_fn(|cx| {
                crate::clock::turn(|| writers.poll_next_unpin(cx))
            }), if !writers.is_empty() => {
                if ended.is_err() {
                    tracing::error!("a stream's writer panicked; its stream ended");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_run_to_their_end_and_a_panic_ends_only_its_own() {
        let writers = Writers::default();
        let (done_tx, mut done) = mpsc::unbounded_channel();
        for n in 0..10_u32 {
            let done_tx = done_tx.clone();
            writers.run(async move {
                tokio::time::sleep(Duration::from_millis(u64::from(n))).await;
                assert!(n != 3, "writer 3 fails");
                done_tx.send(n).unwrap();
            });
        }
        drop(done_tx);
        let mut ended = Vec::new();
        while let Some(n) = tokio::time::timeout(Duration::from_secs(10), done.recv())
            .await
            .unwrap()
        {
            ended.push(n);
        }
        ended.sort_unstable();
        assert_eq!(ended, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
        // Every group, the one whose writer panicked included, runs what comes next.
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..32 {
            let ran = Arc::clone(&ran);
            writers.run(async move {
                ran.fetch_add(1, Ordering::SeqCst);
            });
        }
        tokio::time::timeout(Duration::from_secs(10), async {
            while ran.load(Ordering::SeqCst) < 32 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
    }
}

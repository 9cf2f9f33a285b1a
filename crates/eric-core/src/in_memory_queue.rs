//! The default queue: a `VecDeque` behind a mutex, with the consumer's waker beside it.

use std::collections::VecDeque;
use std::sync::PoisonError;
use std::task::Waker;

use crate::queue::{OverflowPolicy, PushOutcome, Queue, QueueConfig, QueueEntry, QueueStats};
use crate::sync::{AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};

/// An in-memory FIFO queue (eric-sse's in-memory queue), optionally bounded.
///
/// The waker lives under the same lock as the entries, so a push that finds a waiting
/// consumer wakes it with no extra atomic operation, and a wake-up cannot be lost
/// between "empty" and "waiting".
///
/// ```
/// use eric_core::{InMemoryQueue, Message, OverflowPolicy, PushOutcome, Queue, QueueConfig, QueueEntry};
///
/// let queue = InMemoryQueue::new(QueueConfig::bounded(1, OverflowPolicy::DropOldest));
/// let entry = |t: &str| QueueEntry { message: Message::of_type(t), broadcasts_before: 0 };
/// assert_eq!(queue.push(entry("a")), PushOutcome::Enqueued);
/// assert_eq!(queue.push(entry("b")), PushOutcome::DroppedOldest);
/// assert_eq!(queue.pop().unwrap().message.message_type(), "b");
/// assert_eq!(queue.stats().dropped, 1);
/// ```
#[derive(Debug)]
pub struct InMemoryQueue {
    state: Mutex<State>,
    // `entries.len()`, readable without the lock: a consumer checks it before every
    // broadcast it reads, and the queue is almost always empty.
    len: AtomicUsize,
    // How many times `state.consumer` was taken or replaced (changed under the lock):
    // `Queue::waker_takes`.
    waker_takes: AtomicU64,
    capacity: usize,
    overflow: OverflowPolicy,
}

#[derive(Debug, Default)]
struct State {
    entries: VecDeque<QueueEntry>,
    consumer: Option<Waker>,
    dropped: u64,
    rejected: u64,
    // Set when the queue overflowed under `Disconnect`: the number of entries discarded.
    disconnected: Option<u64>,
}

// A drained queue gives back a large buffer, so a burst does not pin memory forever.
const SHRINK_ABOVE: usize = 1024;

impl InMemoryQueue {
    /// An empty queue configured by `config`.
    pub fn new(config: QueueConfig) -> Self {
        InMemoryQueue {
            state: Mutex::new(State::default()),
            len: AtomicUsize::new(0),
            waker_takes: AtomicU64::new(0),
            capacity: config.capacity().unwrap_or(usize::MAX),
            overflow: config.overflow(),
        }
    }

    /// An empty unbounded queue.
    pub fn unbounded() -> Self {
        Self::new(QueueConfig::unbounded())
    }

    /// Takes the consumer's waker out of `state`, counting it.
    fn take_consumer(&self, state: &mut State) -> Option<Waker> {
        let waker = state.consumer.take();
        if waker.is_some() {
            self.waker_takes.fetch_add(1, Ordering::AcqRel);
        }
        waker
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock; if one ever did, the queue's
        // contents are still a valid VecDeque, so carry on rather than poison every user.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies the capacity and overflow policy before a push; says what the push does.
    fn make_room(&self, state: &mut State) -> PushOutcome {
        if let Some(dropped) = state.disconnected {
            return PushOutcome::Disconnected {
                capacity: self.capacity,
                dropped,
            };
        }
        if state.entries.len() < self.capacity {
            return PushOutcome::Enqueued;
        }
        match self.overflow {
            OverflowPolicy::Reject => {
                state.rejected += 1;
                PushOutcome::Rejected {
                    capacity: self.capacity,
                }
            }
            OverflowPolicy::DropOldest => {
                state.entries.pop_front();
                state.dropped += 1;
                PushOutcome::DroppedOldest
            }
            OverflowPolicy::Disconnect => {
                // The queued entries and the one that overflowed are all undeliverable.
                let dropped = state.entries.len() as u64 + 1;
                state.entries = VecDeque::new();
                state.dropped += dropped;
                state.disconnected = Some(dropped);
                PushOutcome::Disconnected {
                    capacity: self.capacity,
                    dropped,
                }
            }
        }
    }
}

impl Default for InMemoryQueue {
    fn default() -> Self {
        Self::unbounded()
    }
}

impl Queue for InMemoryQueue {
    fn push(&self, entry: QueueEntry) -> PushOutcome {
        let mut state = self.lock();
        let outcome = self.make_room(&mut state);
        let waker = match outcome {
            PushOutcome::Enqueued | PushOutcome::DroppedOldest => {
                state.entries.push_back(entry);
                self.len.store(state.entries.len(), Ordering::Release);
                self.take_consumer(&mut state)
            }
            // The consumer must learn at once that it was cut off.
            PushOutcome::Disconnected { .. } => {
                self.len.store(0, Ordering::Release);
                self.take_consumer(&mut state)
            }
            PushOutcome::Rejected { .. } => None,
        };
        drop(state);
        // Wake outside the lock: the woken task may run at once on another thread.
        if let Some(waker) = waker {
            waker.wake();
        }
        outcome
    }

    fn peek_broadcasts_before(&self) -> Option<u64> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.lock().entries.front().map(|e| e.broadcasts_before)
    }

    fn pop(&self) -> Option<QueueEntry> {
        let mut state = self.lock();
        let entry = state.entries.pop_front();
        self.len.store(state.entries.len(), Ordering::Release);
        if state.entries.is_empty() && state.entries.capacity() > SHRINK_ABOVE {
            state.entries = VecDeque::new();
        }
        entry
    }

    fn register_waker(&self, waker: &Waker) -> bool {
        let mut state = self.lock();
        if !state.entries.is_empty() {
            return false;
        }
        match &state.consumer {
            Some(registered) if registered.will_wake(waker) => {}
            _ => {
                let replaced = self.take_consumer(&mut state);
                state.consumer = Some(waker.clone());
                drop(state);
                drop(replaced);
            }
        }
        true
    }

    fn detach(&self, waker: &Waker) {
        let stale = {
            let mut state = self.lock();
            match &state.consumer {
                Some(registered) if registered.will_wake(waker) => self.take_consumer(&mut state),
                _ => None,
            }
        };
        drop(stale);
    }

    fn waker_takes(&self) -> Option<u64> {
        Some(self.waker_takes.load(Ordering::Acquire))
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    fn stats(&self) -> QueueStats {
        let state = self.lock();
        QueueStats {
            len: state.entries.len(),
            dropped: state.dropped,
            rejected: state.rejected,
        }
    }
}

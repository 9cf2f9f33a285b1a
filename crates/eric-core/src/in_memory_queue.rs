//! The default queue: a `VecDeque` behind a mutex, with the consumer's waker beside it.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::message::Message;
use crate::queue::{OverflowPolicy, Popped, PushOutcome, Queue, QueueConfig, QueueStats};

/// An in-memory FIFO queue (eric-sse's in-memory queue), optionally bounded.
///
/// The waker lives under the same lock as the messages, so a push that finds a waiting
/// consumer wakes it with no extra atomic operation, and a wake-up cannot be lost
/// between "empty" and "waiting".
///
/// ```
/// use eric_core::{InMemoryQueue, Message, OverflowPolicy, PushOutcome, Queue, QueueConfig};
///
/// let queue = InMemoryQueue::new(QueueConfig::bounded(1, OverflowPolicy::DropOldest));
/// assert_eq!(queue.push(Message::of_type("a")), PushOutcome::Enqueued);
/// assert_eq!(queue.push(Message::of_type("b")), PushOutcome::DroppedOldest);
/// assert_eq!(queue.pop().unwrap().message_type(), "b");
/// assert_eq!(queue.stats().dropped, 1);
/// ```
#[derive(Debug)]
pub struct InMemoryQueue {
    state: Mutex<State>,
    capacity: usize,
    overflow: OverflowPolicy,
}

#[derive(Debug, Default)]
struct State {
    messages: VecDeque<Message>,
    consumer: Option<Waker>,
    dropped: u64,
    rejected: u64,
    // Set when the queue overflowed under `Disconnect`: the number of messages discarded.
    disconnected: Option<u64>,
}

// A drained queue gives back a large buffer, so a burst does not pin memory forever.
const SHRINK_ABOVE: usize = 1024;

impl InMemoryQueue {
    /// An empty queue configured by `config`.
    pub fn new(config: QueueConfig) -> Self {
        InMemoryQueue {
            state: Mutex::new(State::default()),
            capacity: config.capacity().unwrap_or(usize::MAX),
            overflow: config.overflow(),
        }
    }

    /// An empty unbounded queue.
    pub fn unbounded() -> Self {
        Self::new(QueueConfig::unbounded())
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
        if state.messages.len() < self.capacity {
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
                state.messages.pop_front();
                state.dropped += 1;
                PushOutcome::DroppedOldest
            }
            OverflowPolicy::Disconnect => {
                // The queued messages and the one that overflowed are all undeliverable.
                let dropped = state.messages.len() as u64 + 1;
                state.messages = VecDeque::new();
                state.dropped += dropped;
                state.disconnected = Some(dropped);
                PushOutcome::Disconnected {
                    capacity: self.capacity,
                    dropped,
                }
            }
        }
    }

    fn take_front(state: &mut State) -> Option<Message> {
        let msg = state.messages.pop_front();
        if state.messages.is_empty() && state.messages.capacity() > SHRINK_ABOVE {
            state.messages = VecDeque::new();
        }
        msg
    }
}

impl Default for InMemoryQueue {
    fn default() -> Self {
        Self::unbounded()
    }
}

impl Queue for InMemoryQueue {
    fn push(&self, msg: Message) -> PushOutcome {
        let mut state = self.lock();
        let outcome = self.make_room(&mut state);
        let waker = match outcome {
            PushOutcome::Enqueued | PushOutcome::DroppedOldest => {
                state.messages.push_back(msg);
                state.consumer.take()
            }
            // The consumer must learn at once that it was cut off.
            PushOutcome::Disconnected { .. } => state.consumer.take(),
            PushOutcome::Rejected { .. } => None,
        };
        drop(state);
        // Wake outside the lock: the woken task may run at once on another thread.
        if let Some(waker) = waker {
            waker.wake();
        }
        outcome
    }

    fn push_final(&self, msg: Message) {
        let waker = {
            let mut state = self.lock();
            if state.disconnected.is_none() {
                state.messages.push_back(msg);
            }
            state.consumer.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn pop(&self) -> Option<Message> {
        Self::take_front(&mut self.lock())
    }

    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Popped> {
        let mut state = self.lock();
        if let Some(msg) = Self::take_front(&mut state) {
            return Poll::Ready(Popped::Message(msg));
        }
        if let Some(dropped) = state.disconnected {
            return Poll::Ready(Popped::Disconnected {
                capacity: self.capacity,
                dropped,
            });
        }
        match &state.consumer {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.consumer = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn detach(&self, waker: &Waker) {
        let stale = {
            let mut state = self.lock();
            match &state.consumer {
                Some(registered) if registered.will_wake(waker) => state.consumer.take(),
                _ => None,
            }
        };
        drop(stale);
    }

    fn len(&self) -> usize {
        self.lock().messages.len()
    }

    fn stats(&self) -> QueueStats {
        let state = self.lock();
        QueueStats {
            len: state.messages.len(),
            dropped: state.dropped,
            rejected: state.rejected,
        }
    }
}

//! A segment of the broadcast log: a run of consecutive slots, freed as a whole once
//! neither the log nor any reader holds it.

use std::sync::{Arc, OnceLock};

use crate::budget::MemoryBudget;
use crate::message::Message;
use crate::sync::{AtomicU64, Ordering};

/// Slots per segment: readers take the log's lock once per this many messages.
pub(crate) const SEGMENT_LEN: u64 = 64;

/// A segment whose messages reach this many bytes takes no more: large messages then
/// sit in segments of their own and are freed one by one, so that a memory budget or
/// a replay window in bytes holds what it says, not 64 large messages at a time.
pub(crate) const SEGMENT_BYTES: u64 = 16 * 1024;

pub(crate) struct Segment {
    pub(crate) start: u64,
    /// One past its last slot: `start + SEGMENT_LEN`, or less once closed early by
    /// [`SEGMENT_BYTES`]. Lowered (by the appender, under the log's lock) before the
    /// slot it follows is filled, so a reader that sees that slot sees the new end.
    end: AtomicU64,
    /// The estimated size of its messages (only counted when the log sizes them).
    bytes: AtomicU64,
    /// The budget its bytes count against, released when it is freed.
    budget: OnceLock<MemoryBudget>,
    slots: [OnceLock<Message>; SEGMENT_LEN as usize],
}

impl Segment {
    pub(crate) fn new(start: u64, budget: Option<&MemoryBudget>) -> Arc<Self> {
        let segment = Segment {
            start,
            end: AtomicU64::new(start + SEGMENT_LEN),
            bytes: AtomicU64::new(0),
            budget: OnceLock::new(),
            slots: std::array::from_fn(|_| OnceLock::new()),
        };
        if let Some(budget) = budget {
            let _ = segment.budget.set(budget.clone());
        }
        Arc::new(segment)
    }

    #[inline]
    pub(crate) fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    #[inline]
    pub(crate) fn contains(&self, seq: u64) -> bool {
        seq >= self.start && seq < self.end()
    }

    #[inline]
    pub(crate) fn get(&self, seq: u64) -> Option<&Message> {
        self.slots.get(seq.checked_sub(self.start)? as usize)?.get()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Fills slot `seq` with `msg` of `bytes`, closing the segment after it if it is
    /// now full by size. Only the log's appender calls it, under the log's lock.
    pub(crate) fn fill(&self, seq: u64, msg: Message, bytes: u64) {
        if bytes > 0 {
            let total = self.bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
            if let Some(budget) = self.budget.get() {
                budget.add(bytes);
            }
            if total >= SEGMENT_BYTES && seq + 1 < self.end() {
                self.end.store(seq + 1, Ordering::Release);
            }
        }
        if let Some(slot) = self.slots.get((seq - self.start) as usize) {
            let _ = slot.set(msg);
        }
    }

    /// Counts its bytes against `budget` from now on (a log that joins a budget late),
    /// measuring its messages first if nobody did when they came in; returns its bytes.
    /// Under the log's lock, as [`fill`](Self::fill).
    pub(crate) fn join(&self, budget: &MemoryBudget) -> u64 {
        if self.bytes() == 0 {
            let measured = self
                .slots
                .iter()
                .filter_map(OnceLock::get)
                .map(Message::retained_bytes)
                .sum();
            self.bytes.store(measured, Ordering::Release);
        }
        if self.budget.set(budget.clone()).is_ok() {
            budget.add(self.bytes());
        }
        self.bytes()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if let Some(budget) = self.budget.get() {
            budget.release(self.bytes.load(Ordering::Acquire));
        }
    }
}

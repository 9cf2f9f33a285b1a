//! The broadcast log: one copy of each broadcast, read by every listener at its own
//! cursor. A broadcast costs the same for ten listeners as for a million.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::Waker;

use crate::message::Message;

/// Slots per segment: readers take the log's lock once per this many messages.
const SEGMENT_LEN: u64 = 64;

/// A run of consecutive broadcast slots. A reader holds the segment its cursor is in,
/// so a segment no reader holds (and the log no longer needs) is freed.
pub(crate) struct Segment {
    start: u64,
    slots: [OnceLock<Message>; SEGMENT_LEN as usize],
}

impl Segment {
    fn new(start: u64) -> Arc<Self> {
        Arc::new(Segment {
            start,
            slots: std::array::from_fn(|_| OnceLock::new()),
        })
    }

    fn contains(&self, seq: u64) -> bool {
        seq >= self.start && seq < self.start + SEGMENT_LEN
    }

    fn get(&self, seq: u64) -> Option<&Message> {
        self.slots.get((seq - self.start) as usize)?.get()
    }
}

/// What a reader found at its cursor.
pub(crate) enum Read {
    /// The broadcast at the cursor.
    Message(Message),
    /// Nothing broadcast there yet.
    Empty,
    /// The cursor fell out of the log's window: `missed` broadcasts are gone.
    Lagged { missed: u64 },
}

/// A listener's place in the log.
#[derive(Default)]
pub(crate) struct Cursor {
    /// Sequence number of the next broadcast to read.
    pub(crate) next: u64,
    segment: Option<Arc<Segment>>,
}

pub(crate) struct BroadcastLog {
    // Segments and waiters share one lock: an append takes it once for both.
    state: Mutex<LogState>,
    /// Sequence number of the next broadcast, i.e. how many there have been. Stored
    /// after the slot is filled, so a reader that sees `head > n` sees slot `n`.
    head: AtomicU64,
    /// Keep at most this many broadcasts (the channel's capacity), `None`: unbounded.
    window: Option<u64>,
    /// Keep at least this many recent broadcasts for readers that resume (replay).
    retain: u64,
    /// The first sequence number this log holds (slots before it in the first segment
    /// were never written).
    first: u64,
    /// 1 once the closed marker is in: it never counts against the window, so closing
    /// pushes nothing out and disconnects nobody.
    final_slack: AtomicU64,
}

#[derive(Default)]
struct LogState {
    segments: VecDeque<Arc<Segment>>,
    /// Consumers waiting for the next broadcast, by connection.
    waiters: HashMap<usize, Waker>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held; the data stays consistent regardless.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BroadcastLog {
    #[cfg(test)]
    pub(crate) fn new(window: Option<usize>, retain: usize) -> Self {
        Self::starting_at(0, window, retain)
    }

    /// A log whose first broadcast gets sequence number `first` (a restored channel).
    pub(crate) fn starting_at(first: u64, window: Option<usize>, retain: usize) -> Self {
        BroadcastLog {
            state: Mutex::new(LogState {
                segments: VecDeque::from([Segment::new(first - first % SEGMENT_LEN)]),
                waiters: HashMap::new(),
            }),
            head: AtomicU64::new(first),
            window: window.map(|w| w as u64),
            retain: retain as u64,
            first,
            final_slack: AtomicU64::new(0),
        }
    }

    /// How many recent broadcasts it keeps for readers that resume.
    pub(crate) fn retain(&self) -> u64 {
        self.retain
    }

    pub(crate) fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// The window, including room for the closed marker once it is in.
    pub(crate) fn window(&self) -> Option<u64> {
        self.window
            .map(|w| w + self.final_slack.load(Ordering::Acquire))
    }

    /// Appends the stream-ending marker, which fits whatever the window.
    pub(crate) fn append_final(&self, msg: Message) -> u64 {
        self.final_slack.store(1, Ordering::Release);
        self.append(msg)
    }

    /// Appends `msg` and wakes every waiting consumer. Callers serialize appends.
    pub(crate) fn append(&self, msg: Message) -> u64 {
        let seq = self.head.load(Ordering::Relaxed);
        let woken = {
            let mut state = lock(&self.state);
            let index = Self::index_of(&mut state.segments, seq);
            if let Some(segment) = index.and_then(|i| state.segments.get(i)) {
                let _ = segment.slots[(seq - segment.start) as usize].set(msg);
            }
            // Published after the slot: a reader that sees the new head sees the slot.
            self.head.store(seq + 1, Ordering::Release);
            if (seq + 1).is_multiple_of(SEGMENT_LEN) {
                self.trim(&mut state.segments, seq + 1);
            }
            if state.waiters.is_empty() {
                return seq;
            }
            state
                .waiters
                .drain()
                .map(|(_, waker)| waker)
                .collect::<Vec<_>>()
        };
        // Outside the lock: woken tasks re-register at once on other threads.
        woken.into_iter().for_each(Waker::wake);
        seq
    }

    /// The index of the segment holding `seq`, creating segments up to it at the tail;
    /// `None` if `seq` was trimmed away (never the case for the head).
    fn index_of(segments: &mut VecDeque<Arc<Segment>>, seq: u64) -> Option<usize> {
        let base = segments
            .front()
            .map_or(seq - seq % SEGMENT_LEN, |s| s.start);
        if seq < base {
            return None;
        }
        let index = ((seq - base) / SEGMENT_LEN) as usize;
        while segments.len() <= index {
            let start = base + segments.len() as u64 * SEGMENT_LEN;
            segments.push_back(Segment::new(start));
        }
        Some(index)
    }

    /// The segment holding `seq` (see [`Self::index_of`]).
    fn segment_at(segments: &mut VecDeque<Arc<Segment>>, seq: u64) -> Option<Arc<Segment>> {
        let index = Self::index_of(segments, seq)?;
        segments.get(index).cloned()
    }

    /// Frees whole segments no reader needs. A bounded log keeps its whole window (a
    /// reader that lagged skips into it); an unbounded one keeps what some reader still
    /// holds (every reader holds the segment its cursor is in); both keep the last
    /// `retain` broadcasts for readers that resume.
    fn trim(&self, segments: &mut VecDeque<Arc<Segment>>, head: u64) {
        let window = self.window();
        let keep = window.unwrap_or(0).max(self.retain);
        while segments.len() > 1 {
            let Some(front) = segments.front() else { break };
            let end = front.start + SEGMENT_LEN;
            let needed = end > head.saturating_sub(keep)
                || (window.is_none() && Arc::strong_count(front) > 1);
            if end <= head && !needed {
                segments.pop_front();
            } else {
                break;
            }
        }
    }

    /// The oldest sequence number a resuming reader can start at.
    pub(crate) fn oldest(&self) -> u64 {
        let state = lock(&self.state);
        self.oldest_in(&state.segments, self.head())
    }

    fn oldest_in(&self, segments: &VecDeque<Arc<Segment>>, head: u64) -> u64 {
        let base = segments.front().map_or(head, |s| s.start).max(self.first);
        match self.window() {
            Some(window) => base.max(head.saturating_sub(window)),
            None => base,
        }
    }

    /// A cursor at `seq`, if the log still holds it; otherwise the oldest sequence
    /// number it holds. `seq` may be the head (nothing missed).
    pub(crate) fn cursor_at(&self, seq: u64) -> Result<Cursor, u64> {
        let mut state = lock(&self.state);
        let head = self.head();
        let oldest = self.oldest_in(&state.segments, head);
        if seq < oldest || seq > head {
            return Err(oldest);
        }
        Ok(Cursor {
            next: seq,
            segment: Self::segment_at(&mut state.segments, seq),
        })
    }

    /// A cursor at `seq`, or at the oldest broadcast the log holds if `seq` is older
    /// (or past the head: at the head); and the sequence number it is at.
    pub(crate) fn cursor_at_least(&self, seq: u64) -> Cursor {
        let mut state = lock(&self.state);
        let head = self.head();
        let next = seq.clamp(self.oldest_in(&state.segments, head), head);
        Cursor {
            next,
            segment: Self::segment_at(&mut state.segments, next),
        }
    }

    /// A cursor at the head: it reads broadcasts made from now on.
    pub(crate) fn cursor_at_head(&self) -> Cursor {
        let mut state = lock(&self.state);
        let next = self.head();
        Cursor {
            next,
            segment: Self::segment_at(&mut state.segments, next),
        }
    }

    /// Reads the broadcast at `cursor` without moving it.
    pub(crate) fn peek(&self, cursor: &mut Cursor) -> Read {
        if let Some(window) = self.window() {
            // Saturating: an append fills its slot before it publishes the head, so a
            // reader may have taken that slot and stand one past the head it reads now.
            let behind = self.head().saturating_sub(cursor.next);
            if behind > window {
                return Read::Lagged {
                    missed: behind - window,
                };
            }
        }
        let holds = cursor
            .segment
            .as_ref()
            .is_some_and(|s| s.contains(cursor.next));
        if !holds {
            let mut state = lock(&self.state);
            match Self::segment_at(&mut state.segments, cursor.next) {
                Some(segment) => cursor.segment = Some(segment),
                None => {
                    let base = state.segments.front().map_or(cursor.next, |s| s.start);
                    return Read::Lagged {
                        missed: base - cursor.next,
                    };
                }
            }
        }
        match cursor.segment.as_ref().and_then(|s| s.get(cursor.next)) {
            Some(msg) => Read::Message(msg.clone()),
            None => Read::Empty,
        }
    }

    /// Moves `cursor` forward by `n` broadcasts.
    pub(crate) fn advance(cursor: &mut Cursor, n: u64) {
        cursor.next += n;
    }

    /// Registers `waker` (keyed by `key`) to be woken by the next broadcast.
    pub(crate) fn register_waiter(&self, key: usize, waker: &Waker) {
        let waiters = &mut lock(&self.state).waiters;
        match waiters.get(&key) {
            Some(registered) if registered.will_wake(waker) => {}
            _ => {
                waiters.insert(key, waker.clone());
            }
        }
    }

    /// Forgets `key`'s waiter if it is `waker` (a consumer going away).
    pub(crate) fn remove_waiter(&self, key: usize, waker: &Waker) {
        let stale = {
            let waiters = &mut lock(&self.state).waiters;
            match waiters.get(&key) {
                Some(registered) if registered.will_wake(waker) => waiters.remove(&key),
                _ => None,
            }
        };
        drop(stale);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    /// Broadcasts a test appends: fewer under Miri, which interprets every step (the
    /// sizes still cross many segments and the windows below).
    const MANY: u64 = if cfg!(miri) { 1_000 } else { 10_000 };
    const SOME: u64 = if cfg!(miri) { 300 } else { 1_000 };

    fn segments(log: &BroadcastLog) -> usize {
        lock(&log.state).segments.len()
    }

    fn read_all(log: &BroadcastLog, cursor: &mut Cursor) -> Vec<Message> {
        let mut out = Vec::new();
        while let Read::Message(msg) = log.peek(cursor) {
            BroadcastLog::advance(cursor, 1);
            out.push(msg);
        }
        out
    }

    #[test]
    fn segments_nobody_needs_are_freed() {
        let log = BroadcastLog::new(None, 0);
        let mut reader = log.cursor_at_head();
        for n in 0..MANY {
            log.append(Message::new("n", n));
            if n % 100 == 0 {
                read_all(&log, &mut reader);
            }
        }
        assert!(segments(&log) <= 4, "{} segments kept", segments(&log));
    }

    #[test]
    fn an_unbounded_log_keeps_what_a_slow_reader_has_not_read() {
        let log = BroadcastLog::new(None, 0);
        let mut slow = log.cursor_at_head();
        for n in 0..SOME {
            log.append(Message::new("n", n));
        }
        assert!(segments(&log) >= (SOME / SEGMENT_LEN) as usize);
        let got = read_all(&log, &mut slow);
        assert_eq!(got.len(), SOME as usize);
        assert!(got.iter().enumerate().all(|(i, m)| m.payload() == i as u64));
        log.append(Message::of_type("trim"));
        for _ in 0..SEGMENT_LEN {
            log.append(Message::of_type("more"));
        }
        read_all(&log, &mut slow);
        assert!(segments(&log) <= 3);
    }

    #[test]
    fn a_bounded_log_keeps_its_window_whatever_readers_do() {
        let log = BroadcastLog::new(Some(100), 0);
        let mut stalled = log.cursor_at_head();
        for n in 0..MANY {
            log.append(Message::new("n", n));
        }
        // The window (100) plus the segment in progress and one the cut falls into.
        assert!(segments(&log) <= 100 / SEGMENT_LEN as usize + 3);
        match log.peek(&mut stalled) {
            Read::Lagged { missed } => assert_eq!(missed, MANY - 100),
            _ => panic!("a stalled reader must learn it lagged"),
        }
        BroadcastLog::advance(&mut stalled, MANY - 100);
        let got = read_all(&log, &mut stalled);
        assert_eq!(
            got.len(),
            100,
            "first {:?} next {}",
            got.first(),
            stalled.next
        );
        assert_eq!(got[0].payload(), MANY - 100);
    }

    #[test]
    fn retained_broadcasts_can_be_read_again_from_any_kept_seq() {
        let log = BroadcastLog::new(None, 200);
        for n in 0..1_000u64 {
            log.append(Message::new("n", n));
        }
        // At least the last 200, in whole segments, trimmed at segment boundaries.
        let oldest = log.cursor_at(0).err().unwrap();
        assert!((800 - 2 * SEGMENT_LEN..=800).contains(&oldest), "{oldest}");
        let mut cursor = log.cursor_at(900).unwrap();
        let got = read_all(&log, &mut cursor);
        assert_eq!(got.len(), 100);
        assert_eq!(got[0].payload(), 900);
        assert!(
            log.cursor_at(1_000).is_ok(),
            "the head itself is a valid resume point"
        );
        assert_eq!(
            log.cursor_at(1_001).err(),
            Some(oldest),
            "the future is refused"
        );
    }

    #[test]
    fn a_log_can_start_at_any_sequence_number() {
        let log = BroadcastLog::starting_at(1_000_003, None, 0);
        let mut reader = log.cursor_at_head();
        assert_eq!(log.append(Message::of_type("a")), 1_000_003);
        assert_eq!(log.append(Message::of_type("b")), 1_000_004);
        assert_eq!(read_all(&log, &mut reader).len(), 2);
        assert_eq!(log.cursor_at(1_000_002).err(), Some(1_000_003));
    }

    #[test]
    fn the_final_marker_fits_a_full_window() {
        let log = BroadcastLog::new(Some(2), 0);
        let mut reader = log.cursor_at_head();
        log.append(Message::of_type("a"));
        log.append(Message::of_type("b"));
        log.append_final(Message::closed());
        let got = read_all(&log, &mut reader);
        assert_eq!(got.len(), 3);
    }
}

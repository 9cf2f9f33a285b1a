//! The broadcast log: one copy of each broadcast, read by every listener at its own
//! cursor. A broadcast costs the same for ten listeners as for a million.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::task::Waker;

use crate::budget::MemoryBudget;
use crate::message::Message;
use crate::segment::Segment;
#[cfg(test)]
use crate::segment::{SEGMENT_BYTES, SEGMENT_LEN};
use crate::sync::{AtomicU64, Mutex, Ordering, lock};
pub(crate) use crate::waiters::WaiterSlot;
use crate::waiters::Waiters;

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

impl Cursor {
    /// The segment it holds: the one `next` is in, once it has read there.
    pub(crate) fn segment(&self) -> Option<&Arc<Segment>> {
        self.segment.as_ref()
    }
}

pub(crate) struct BroadcastLog {
    state: Mutex<LogState>,
    /// Sequence number of the next broadcast, i.e. how many there have been. Stored
    /// after the slot is filled, so a reader that sees `head > n` sees slot `n`.
    head: AtomicU64,
    /// Keep at most this many broadcasts (the channel's capacity), `None`: unbounded.
    window: Option<u64>,
    /// Keep at least this many recent broadcasts for readers that resume (replay).
    retain: u64,
    /// ... but no more of them than this many bytes (whole segments).
    retain_bytes: Option<u64>,
    /// The memory budget its broadcasts count against, if any.
    budget: OnceLock<MemoryBudget>,
    /// The first sequence number this log holds (slots before it in the first segment
    /// were never written).
    first: u64,
    /// 1 once the closed marker is in: it never counts against the window, so closing
    /// pushes nothing out and disconnects nobody.
    final_slack: AtomicU64,
    /// Consumers waiting for the next broadcast.
    waiters: Waiters,
}

#[derive(Default)]
struct LogState {
    segments: VecDeque<Arc<Segment>>,
    /// The bytes of the segments above (when the log sizes its messages).
    bytes: u64,
}

impl BroadcastLog {
    #[cfg(test)]
    pub(crate) fn new(window: Option<usize>, retain: usize) -> Self {
        Self::starting_at(0, window, retain, None)
    }

    /// A log whose first broadcast gets sequence number `first` (a restored channel),
    /// keeping `retain` broadcasts for replay, in at most `retain_bytes`.
    pub(crate) fn starting_at(
        first: u64,
        window: Option<usize>,
        retain: usize,
        retain_bytes: Option<u64>,
    ) -> Self {
        BroadcastLog {
            state: Mutex::new(LogState {
                segments: VecDeque::from([Segment::new(first, None)]),
                bytes: 0,
            }),
            head: AtomicU64::new(first),
            window: window.map(|w| w as u64),
            retain: retain as u64,
            retain_bytes,
            budget: OnceLock::new(),
            first,
            final_slack: AtomicU64::new(0),
            waiters: Waiters::new(),
        }
    }

    /// Counts its broadcasts against `budget` from now on (what it holds already
    /// included); `false` if it already counts against one.
    pub(crate) fn join_budget(&self, budget: &MemoryBudget) -> bool {
        let mut state = lock(&self.state);
        if self.budget.set(budget.clone()).is_err() {
            return false;
        }
        state.bytes = state.segments.iter().map(|s| s.join(budget)).sum();
        true
    }

    /// The budget it counts against, if any.
    pub(crate) fn budget(&self) -> Option<&MemoryBudget> {
        self.budget.get()
    }

    /// Whether it needs the size of each broadcast (for a budget or a replay window
    /// in bytes).
    pub(crate) fn sizes_messages(&self) -> bool {
        self.retain_bytes.is_some() || self.budget.get().is_some()
    }

    /// The bytes it keeps for replay at most, if bounded.
    pub(crate) fn retain_bytes(&self) -> Option<u64> {
        self.retain_bytes
    }

    /// How many recent broadcasts it keeps for readers that resume.
    pub(crate) fn retain(&self) -> u64 {
        self.retain
    }

    #[inline]
    pub(crate) fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// The window, including room for the closed marker once it is in.
    #[inline]
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
        let bytes = if self.sizes_messages() {
            msg.retained_bytes()
        } else {
            0
        };
        {
            let mut state = lock(&self.state);
            let closed = match self.segment_at(&mut state.segments, seq) {
                Some(segment) => {
                    segment.fill(seq, msg, bytes);
                    segment.end() == seq + 1
                }
                None => false,
            };
            state.bytes += bytes;
            // Published after the slot: a reader that sees the new head sees the slot.
            self.head.store(seq + 1, Ordering::Release);
            if closed {
                self.trim(&mut state, seq + 1);
            }
        }
        // After the head: a consumer registering after its stripe is cleared sees it.
        self.waiters.wake_all();
        seq
    }

    /// The segment holding `seq`, creating segments up to it at the tail (counting
    /// against the log's budget); `None` if `seq` was freed (never the case for the
    /// head).
    fn segment_at(&self, segments: &mut VecDeque<Arc<Segment>>, seq: u64) -> Option<Arc<Segment>> {
        if segments.front().is_some_and(|front| seq < front.start) {
            return None;
        }
        // Appends, and readers at the head, are in the last segment.
        if let Some(last) = segments.back()
            && last.contains(seq)
        {
            return Some(Arc::clone(last));
        }
        // Segments follow one another with no gap (each starts at the end of the one
        // before), so the last that starts at or before `seq` is the one, if any is.
        let index = segments.partition_point(|s| s.start <= seq);
        if let Some(segment) = index.checked_sub(1).and_then(|i| segments.get(i))
            && segment.contains(seq)
        {
            return Some(Arc::clone(segment));
        }
        loop {
            let start = segments.back().map_or(seq, |s| s.end());
            let segment = Segment::new(start, self.budget.get());
            segments.push_back(Arc::clone(&segment));
            if segment.contains(seq) {
                return Some(segment);
            }
        }
    }

    /// Frees whole segments no reader needs. A bounded log keeps its whole window (a
    /// reader that lagged skips into it); an unbounded one keeps what some reader still
    /// holds (every reader holds the segment its cursor is in); both keep the last
    /// `retain` broadcasts for readers that resume. Past `retain_bytes`, neither keeps
    /// what no reader holds.
    fn trim(&self, state: &mut LogState, head: u64) {
        let window = self.window();
        while state.segments.len() > 1 {
            let Some(front) = state.segments.front() else {
                break;
            };
            let end = front.end();
            let held = Arc::strong_count(front) > 1;
            let over_bytes = self.retain_bytes.is_some_and(|limit| state.bytes > limit);
            let for_replay = end > head.saturating_sub(self.retain) && !over_bytes;
            let for_readers = match window {
                None => held,
                Some(window) => end > head.saturating_sub(window) && (held || !over_bytes),
            };
            if end > head || for_replay || for_readers {
                break;
            }
            self.pop_front(state);
        }
    }

    fn pop_front(&self, state: &mut LogState) {
        if let Some(front) = state.segments.pop_front() {
            state.bytes -= front.bytes();
        }
    }

    /// Frees the oldest segments that no reader holds, whatever the replay window
    /// and the bounded window say: what a memory budget asks for when it runs out.
    /// A reader holds the segment its cursor is in, and needs every one after it.
    pub(crate) fn reclaim(&self) {
        let mut state = lock(&self.state);
        let head = self.head();
        while let Some(front) = state.segments.front() {
            if front.end() > head || Arc::strong_count(front) > 1 {
                break;
            }
            self.pop_front(&mut state);
        }
        if state.segments.is_empty() {
            // The log always holds the head's segment: it tells readers behind it that
            // what they ask for is gone, and appends go on there.
            let head_segment = Segment::new(head, self.budget.get());
            state.segments.push_back(head_segment);
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
            segment: self.segment_at(&mut state.segments, seq),
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
            segment: self.segment_at(&mut state.segments, next),
        }
    }

    /// A cursor at the head: it reads broadcasts made from now on.
    pub(crate) fn cursor_at_head(&self) -> Cursor {
        let mut state = lock(&self.state);
        let next = self.head();
        Cursor {
            next,
            segment: self.segment_at(&mut state.segments, next),
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
            match self.segment_at(&mut state.segments, cursor.next) {
                Some(segment) => cursor.segment = Some(segment),
                None => {
                    let base = state.segments.front().map_or(self.head(), |s| s.start);
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

    /// Registers `waker` to be woken by the next broadcast, in the consumer's `slot`
    /// (its place, if it still has one: registering twice wakes once). `same` says the
    /// consumer registered a waker that wakes the same task last time: if no broadcast
    /// cleared its place since, it is still in place, and nothing is locked: then the
    /// result is `true`.
    pub(crate) fn register_waiter(&self, slot: &mut WaiterSlot, waker: &Waker, same: bool) -> bool {
        self.waiters.register(slot, waker, same)
    }

    /// Gives up the consumer's place, if it still has one (a consumer going away).
    pub(crate) fn remove_waiter(&self, slot: &mut WaiterSlot) {
        self.waiters.remove(slot);
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
        let log = BroadcastLog::starting_at(1_000_003, None, 0, None);
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

    /// Large broadcasts a test appends. The tests that size them do not run under Miri,
    /// where serializing each payload (to size it) takes seconds: Miri does not check
    /// segments closing early or reclaiming; these tests and the loom-free stress tests
    /// do, natively.
    const BIGS: u64 = 100;

    fn big(n: u64) -> Message {
        // About 2 x 10 KB by `retained_bytes`: more than SEGMENT_BYTES.
        Message::new(
            "big",
            serde_json::json!({"n": n, "blob": "x".repeat(10_000)}),
        )
    }

    #[test]
    #[cfg_attr(miri, ignore = "sizing 10 KB payloads takes minutes under Miri")]
    fn large_broadcasts_sit_in_segments_of_their_own_and_are_freed_one_by_one() {
        let budget = MemoryBudget::new(u64::MAX);
        let log = BroadcastLog::new(None, 0);
        assert!(log.join_budget(&budget));
        let size = big(0).retained_bytes();
        assert!(size > SEGMENT_BYTES);
        let mut reader = log.cursor_at_head();
        for n in 0..BIGS {
            log.append(big(n));
            let got = read_all(&log, &mut reader);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].payload()["n"], n);
        }
        // The reader holds the last; nothing older is kept.
        assert!(segments(&log) <= 2, "{} segments", segments(&log));
        assert!(budget.retained() <= 2 * size + 64);
        drop(reader);
        drop(log);
        assert_eq!(budget.retained(), 0, "freed segments give their bytes back");
    }

    #[test]
    #[cfg_attr(miri, ignore = "sizing 10 KB payloads takes minutes under Miri")]
    fn a_replay_window_in_bytes_keeps_the_newest_that_fit() {
        let size = big(0).retained_bytes();
        let log = BroadcastLog::starting_at(0, None, 1_000, Some(10 * size));
        for n in 0..BIGS {
            log.append(big(n));
        }
        let oldest = log.oldest();
        assert!(
            (BIGS - 11..=BIGS - 9).contains(&oldest),
            "oldest kept {oldest}"
        );
        let mut cursor = log.cursor_at(oldest).unwrap();
        let got = read_all(&log, &mut cursor);
        assert_eq!(got.last().unwrap().payload()["n"], BIGS - 1);
        // Small broadcasts still fill whole segments of 64 and keep the count bound.
        let small = BroadcastLog::starting_at(0, None, 100, Some(1 << 30));
        for n in 0..SOME {
            small.append(Message::new("n", n));
        }
        let floor = (SOME - 100).saturating_sub(2 * SEGMENT_LEN);
        assert!((floor..=SOME - 100).contains(&small.oldest()));
    }

    #[test]
    #[cfg_attr(miri, ignore = "sizing 10 KB payloads takes minutes under Miri")]
    fn a_bounded_log_keeps_no_more_of_its_window_than_the_bytes_allow_unless_read() {
        let size = big(0).retained_bytes();
        let log = BroadcastLog::starting_at(0, Some(1_000), 1_000, Some(10 * size));
        let mut reader = log.cursor_at_head();
        for n in 0..BIGS {
            log.append(big(n));
        }
        assert_eq!(
            log.oldest(),
            0,
            "the reader holds its segment and what follows"
        );
        assert_eq!(read_all(&log, &mut reader).len() as u64, BIGS);
        log.append(big(BIGS));
        let oldest = log.oldest();
        assert!(
            (BIGS - 10..=BIGS - 8).contains(&oldest),
            "oldest kept {oldest}"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "sizing 10 KB payloads takes minutes under Miri")]
    fn reclaiming_frees_what_no_reader_holds_and_nothing_a_reader_needs() {
        const HALF: u64 = BIGS / 2;
        let budget = MemoryBudget::new(u64::MAX);
        let log = BroadcastLog::new(None, 1_000);
        log.join_budget(&budget);
        for n in 0..HALF {
            log.append(big(n));
        }
        let mut reader = log.cursor_at(5).unwrap();
        for n in HALF..2 * HALF {
            log.append(big(n));
        }
        let before = budget.retained();
        log.reclaim();
        assert!(budget.retained() < before);
        assert_eq!(
            log.oldest(),
            5,
            "the reader's segment and all after it stay"
        );
        let got = read_all(&log, &mut reader);
        let ns: Vec<_> = got.iter().map(|m| m.payload()["n"].as_u64()).collect();
        assert_eq!(ns, (5..2 * HALF).map(Some).collect::<Vec<_>>());
        drop(reader);
        log.reclaim();
        assert_eq!(log.oldest(), 2 * HALF, "with no reader, nothing is needed");
        assert_eq!(budget.retained(), 0);
        let mut late = log
            .cursor_at(2 * HALF - 1)
            .err()
            .map(|oldest| log.cursor_at(oldest).unwrap());
        assert!(matches!(log.peek(late.as_mut().unwrap()), Read::Empty));
        log.append(big(2 * HALF));
        assert_eq!(read_all(&log, late.as_mut().unwrap()).len(), 1);
    }

    #[test]
    #[cfg_attr(miri, ignore = "sizing 10 KB payloads takes minutes under Miri")]
    fn a_reader_behind_everything_reclaimed_learns_what_it_missed() {
        let log = BroadcastLog::new(Some(1_000), 0);
        log.join_budget(&MemoryBudget::new(u64::MAX));
        let mut reader = log.cursor_at_head();
        for n in 0..5 {
            log.append(big(n));
        }
        // A reader whose segment was let go (as a cursor moved elsewhere would).
        reader.segment = None;
        log.reclaim();
        match log.peek(&mut reader) {
            Read::Lagged { missed } => assert_eq!(missed, 5),
            _ => panic!("the reader must learn it missed 5"),
        }
    }
}

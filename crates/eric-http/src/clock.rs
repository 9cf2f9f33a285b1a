//! The time of a delivery, read once for several of them.
//!
//! Each round of a stream's writes reads the clock, for its events' latencies and its
//! keep-alive. At 100 broadcasts/s to 1,000 streams, that is one read per event, and
//! perf put `clock_gettime` at about 4 % of the server's user time. Within a turn of a
//! group of writers (`serve/writers.rs`), which polls its streams one after another, a
//! reading serves the next [`READS_PER_READING`] rounds: each such round is a few
//! microseconds (user and kernel time of one write), so a time is at most some tens of
//! microseconds old, well within the latency histogram's first bucket (100 µs).
//! Outside a turn (HTTP/2 streams, routers mounted elsewhere), each read is the clock's.

use std::cell::Cell;

use tokio::time::Instant;

/// Rounds one reading of the clock serves within a turn.
const READS_PER_READING: u32 = 16;

/// Where this thread is.
#[derive(Clone, Copy)]
enum State {
    /// Outside a turn: every read is the clock's.
    Outside,
    /// Within a turn: its last reading and how many rounds it served (`None`: none yet).
    InTurn(Option<(Instant, u32)>),
}

thread_local! {
    static STATE: Cell<State> = const { Cell::new(State::Outside) };
}

/// The time of a round of writes: the clock, or a reading of it made within this turn.
pub(crate) fn now() -> Instant {
    match STATE.get() {
        State::Outside => Instant::now(),
        State::InTurn(Some((at, served))) if served < READS_PER_READING => {
            STATE.set(State::InTurn(Some((at, served + 1))));
            at
        }
        State::InTurn(_) => {
            let at = Instant::now();
            STATE.set(State::InTurn(Some((at, 1))));
            at
        }
    }
}

/// Runs `poll` as a turn: its rounds share readings of the clock.
pub(crate) fn turn<R>(poll: impl FnOnce() -> R) -> R {
    /// Ends the turn even if `poll` panics: a reading never outlives its turn.
    struct Ends;
    impl Drop for Ends {
        fn drop(&mut self) {
            STATE.set(State::Outside);
        }
    }
    STATE.set(State::InTurn(None));
    let _ends = Ends;
    poll()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_reading_serves_a_few_rounds_of_a_turn_and_none_outside_it() {
        let first = turn(|| {
            let first = now();
            std::thread::sleep(Duration::from_millis(2));
            for _ in 1..READS_PER_READING {
                assert_eq!(now(), first);
            }
            // The next round reads the clock again.
            assert!(now() > first);
            first
        });
        std::thread::sleep(Duration::from_millis(2));
        let outside = now();
        assert!(outside > first);
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() > outside);
        // A new turn starts with a new reading, not the last turn's.
        assert!(turn(now) > outside);
    }
}

//! Values kept per thread, so that cores do not pass one cache line back and forth.
//!
//! An atomic that every stream writes on every event (a count, a reference count)
//! moves its cache line to whichever core writes it next: with two cores serving a
//! thousand streams, nearly every write is a miss. Kept once per thread instead, each
//! copy stays in its core's cache. eric-http's counters, the broadcast log's waiters
//! and eric-prefabs' shared SSE encodings all take their thread's copy this way.

use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// At most this many stripes in a [`Striped`], whatever the machine.
const MAX_STRIPES: usize = 64;

/// The next turn a thread takes.
static NEXT_TURN: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's turn, taken when it first asks.
    static TURN: usize = NEXT_TURN.fetch_add(1, Ordering::Relaxed);
}

/// The calling thread's turn: a number taken the first time the thread asks, in the
/// order threads first ask (0, 1, 2, ...). A runtime's workers, which start serving
/// together, take consecutive turns, so `thread_turn() % n` rarely puts two of them on
/// one of `n` copies. (tokio gives no stable worker index to key them on.)
///
/// ```
/// let turn = eric_core::thread_turn();
/// assert_eq!(eric_core::thread_turn(), turn, "a thread keeps its turn");
/// let other = std::thread::spawn(eric_core::thread_turn).join().unwrap();
/// assert_ne!(other, turn);
/// ```
#[inline]
pub fn thread_turn() -> usize {
    TURN.with(|turn| *turn)
}

/// One `T` per stripe, each on cache lines of its own; a thread always uses the same
/// one ([`local`](Self::local)). For what many threads update at once and few read: a
/// count every delivery adds to, read by a scrape that sums the stripes.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// let delivered: eric_core::Striped<AtomicU64> = Default::default();
/// std::thread::scope(|s| {
///     for _ in 0..4 {
///         s.spawn(|| delivered.local().fetch_add(1, Ordering::Relaxed));
///     }
/// });
/// let total: u64 = delivered.iter().map(|n| n.load(Ordering::Relaxed)).sum();
/// assert_eq!(total, 4);
/// ```
#[derive(Debug)]
pub struct Striped<T> {
    stripes: Box<[CachePadded<T>]>,
}

impl<T: Default> Default for Striped<T> {
    /// Four stripes per core, a power of two, at most 64: threads take stripes by
    /// [`thread_turn`], so a few threads besides the workers seldom share one.
    fn default() -> Self {
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
    pub fn local(&self) -> &T {
        // A power of two: the mask is the modulo.
        &self.stripes[thread_turn() & (self.stripes.len() - 1)]
    }

    /// Every stripe, each once.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.stripes.iter().map(|stripe| &**stripe)
    }
}

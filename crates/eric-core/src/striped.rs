//! Values kept per thread, so that cores do not pass one cache line back and forth.
//!
//! An atomic that every stream writes on every event (a count, a reference count)
//! moves its cache line to whichever core writes it next: with two cores serving a
//! thousand streams, nearly every write is a miss. Kept once per thread instead, each
//! copy stays in its core's cache. eric-http's counters, the broadcast log's waiters
//! and eric-prefabs' shared SSE encodings all take their thread's copy this way.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// At most this many stripes in a [`Striped`], whatever the machine.
const MAX_STRIPES: usize = 64;

/// The next turn a thread takes.
static NEXT_TURN: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's turn, taken when it first asks: 0, 1, 2, ... in the order threads
    /// first ask.
    static TURN: usize = NEXT_TURN.fetch_add(1, Ordering::Relaxed);
}

/// How many copies to keep for `per_core` copies per core: a power of two, at most
/// `at_most` (a power of two). The cores are counted once per process:
/// `available_parallelism` reads the affinity mask and the cgroup's quota at every call
/// (~8 µs on Linux), too much for what makes copies per broadcast.
///
/// ```
/// let count = eric_core::stripe_count(1, 8);
/// assert!(count.is_power_of_two() && count <= 8);
/// assert_eq!(eric_core::stripe_count(64, 4), 4);
/// ```
pub fn stripe_count(per_core: usize, at_most: usize) -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    (cores * per_core).next_power_of_two().min(at_most)
}

/// The calling thread's copy among `count` (a power of two, from [`stripe_count`]).
/// A thread keeps its copy. Threads take turns the first time they ask, and a
/// runtime's workers, which start serving together, take consecutive turns, so two of
/// them rarely share a copy (tokio gives no stable worker index to key them on).
///
/// ```
/// let mine = eric_core::thread_stripe(8);
/// assert_eq!(eric_core::thread_stripe(8), mine, "a thread keeps its copy");
/// let other = std::thread::spawn(|| eric_core::thread_stripe(8)).join().unwrap();
/// assert_ne!(other, mine, "the next thread to ask takes the next one");
/// ```
#[inline]
pub fn thread_stripe(count: usize) -> usize {
    debug_assert!(count.is_power_of_two());
    // A power of two: the mask is the modulo.
    TURN.with(|turn| *turn) & (count - 1)
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
    /// [`thread_stripe`], so a few threads besides the workers seldom share one.
    fn default() -> Self {
        Striped {
            stripes: (0..stripe_count(4, MAX_STRIPES))
                .map(|_| CachePadded::default())
                .collect(),
        }
    }
}

impl<T> Striped<T> {
    /// The calling thread's stripe.
    #[inline]
    pub fn local(&self) -> &T {
        &self.stripes[thread_stripe(self.stripes.len())]
    }

    /// Every stripe, each once.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.stripes.iter().map(|stripe| &**stripe)
    }
}

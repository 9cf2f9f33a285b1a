//! The consumers waiting for a channel's next broadcast, in stripes.
//!
//! Every stream that catches up registers its waker again after each broadcast (the
//! broadcast woke and cleared it). With one lock for all of them, every stream of a
//! busy channel takes the same lock once per event, from every core: its cache line
//! moves between cores at each one (perf, 1,000 HTTP streams on 2 cores: nearly all of
//! the registration's time was that lock's two atomics). So each thread registers in a
//! stripe of its own, on cache lines of its own; a broadcast takes the lock of each
//! stripe that has waiters, once.

use std::sync::OnceLock;
use std::task::Waker;

use crossbeam_utils::CachePadded;
use slab::Slab;

use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering, lock};

/// Stripes at most, however many cores: a channel that has had a waiting stream holds
/// them all (128 bytes each, and 128 for their counts of clearings).
const MAX_STRIPES: usize = 8;

pub(crate) struct Waiters {
    /// Made by the first registration: a channel no stream ever waited on holds none.
    stripes: OnceLock<Stripes>,
    /// A bit per stripe that may have waiters: set by the registration that finds its
    /// stripe empty, taken (swapped for 0) by each wake. So a broadcast locks only the
    /// stripes with waiters (a channel with one listener does not lock eight), and a
    /// stripe's thread sets its bit once per broadcast, not once per registration.
    /// Both sides read-modify-write it: whichever comes second in its order sees the
    /// first (a registration that comes second sees the head the wake was called after;
    /// a wake that comes second sees the bit, the stripes made before it, and locks the
    /// stripe).
    pending: AtomicUsize,
    /// Under loom, stripes are taken in turn per registration: loom runs its threads
    /// on one OS thread, and the model must explore registrations in different stripes.
    #[cfg(loom)]
    next: std::sync::atomic::AtomicUsize,
}

struct Stripes {
    /// A power of two of them, so that a mask picks one; each on lines of its own.
    wakers: Box<[CachePadded<Mutex<Slab<Waker>>>]>,
    /// Per stripe, how many times its wakers were woken and cleared (changed under its
    /// lock): a place taken before the last clearing is no longer its consumer's. Read
    /// without the lock by a consumer that registers again, from whichever thread its
    /// task runs on now: apart from the locks, so that those reads do not take a lock's
    /// line from its stripe's thread (the wake writes them once per broadcast).
    clearings: Box<CachePadded<[AtomicU64; MAX_STRIPES]>>,
}

impl Stripes {
    fn new() -> Self {
        let count = if cfg!(loom) {
            2
        } else {
            crate::striped::stripe_count(1, MAX_STRIPES)
        };
        Stripes {
            wakers: (0..count)
                .map(|_| CachePadded::new(Mutex::new(Slab::new())))
                .collect(),
            clearings: Box::new(CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0)))),
        }
    }

    fn clearings(&self, stripe: usize) -> u64 {
        self.clearings[stripe].load(Ordering::Acquire)
    }
}

/// A consumer's place among the waiters, kept by the consumer.
#[derive(Debug, Default)]
pub(crate) struct WaiterSlot {
    stripe: usize,
    key: usize,
    /// Its stripe's `clearings` when the place was taken; `None`: no place.
    taken_at: Option<u64>,
}

impl Waiters {
    pub(crate) fn new() -> Self {
        Waiters {
            stripes: OnceLock::new(),
            pending: AtomicUsize::new(0),
            #[cfg(loom)]
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The stripe a new place is taken in: the calling thread's.
    fn home(&self, stripes: &Stripes) -> usize {
        let count = stripes.wakers.len();
        #[cfg(not(loom))]
        let stripe = crate::striped::thread_stripe(count);
        #[cfg(loom)]
        let stripe = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & (count - 1);
        stripe
    }

    /// Registers `waker` to be woken by the next [`wake_all`](Self::wake_all), in the
    /// consumer's `slot` (its place, if it still has one: registering twice wakes once).
    /// `same` says the consumer registered a waker that wakes the same task last time:
    /// if no clearing of its stripe came since, it is still in place, and nothing is
    /// locked: then the result is `true`.
    pub(crate) fn register(&self, slot: &mut WaiterSlot, waker: &Waker, same: bool) -> bool {
        let stripes = self.stripes.get_or_init(Stripes::new);
        if let Some(taken_at) = slot.taken_at {
            // A clearing this load misses has yet to wake the waker in place (it counts,
            // then takes the wakers, under the stripe's lock): the consumer is woken
            // either way. A consumer woken by a clearing sees its count (the wake orders
            // them).
            let in_place = taken_at == stripes.clearings(slot.stripe);
            if same && in_place {
                return true;
            }
            // Clearings only grow: a place cleared since is gone without a look under
            // the lock (which would be the other core's stripe for a task that moved).
            if in_place {
                let mut wakers = lock(&stripes.wakers[slot.stripe]);
                if taken_at == stripes.clearings(slot.stripe)
                    && let Some(registered) = wakers.get_mut(slot.key)
                {
                    if !registered.will_wake(waker) {
                        *registered = waker.clone();
                    }
                    return false;
                }
            }
        }
        let home = self.home(stripes);
        let mut wakers = lock(&stripes.wakers[home]);
        if wakers.is_empty() {
            // Under the stripe's lock: a wake that took the bit before this drains the
            // stripe before or after this place is taken, never between.
            self.pending.fetch_or(1 << home, Ordering::AcqRel);
        }
        *slot = WaiterSlot {
            stripe: home,
            key: wakers.insert(waker.clone()),
            taken_at: Some(stripes.clearings(home)),
        };
        false
    }

    /// Gives up the consumer's place, if it still has one (a consumer going away).
    pub(crate) fn remove(&self, slot: &mut WaiterSlot) {
        let (Some(taken_at), Some(stripes)) = (slot.taken_at.take(), self.stripes.get()) else {
            return;
        };
        let stale = {
            let mut wakers = lock(&stripes.wakers[slot.stripe]);
            if taken_at == stripes.clearings(slot.stripe) {
                wakers.try_remove(slot.key)
            } else {
                None
            }
        };
        drop(stale);
    }

    /// Wakes and clears every waiter. A consumer that registers after its stripe was
    /// cleared took that stripe's lock after this call released it, so it sees what
    /// the caller published before calling.
    pub(crate) fn wake_all(&self) {
        let mut pending = self.pending.swap(0, Ordering::AcqRel);
        // A bit is set after the stripes are made, and the swap sees both.
        let Some(stripes) = self.stripes.get().filter(|_| pending != 0) else {
            return;
        };
        let mut woken = Vec::new();
        while pending != 0 {
            let stripe = pending.trailing_zeros() as usize;
            pending &= pending - 1;
            let mut wakers = lock(&stripes.wakers[stripe]);
            if wakers.is_empty() {
                continue;
            }
            stripes.clearings[stripe].fetch_add(1, Ordering::AcqRel);
            woken.reserve(wakers.len());
            woken.extend(wakers.drain());
        }
        // Outside the locks: woken tasks register again at once on other threads.
        woken.into_iter().for_each(Waker::wake);
    }

    /// How many consumers wait.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.stripes.get().map_or(0, |stripes| {
            stripes.wakers.iter().map(|wakers| lock(wakers).len()).sum()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn woken(count: &Arc<Count>) -> usize {
        count.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn registering_twice_wakes_once_and_a_clearing_frees_the_place() {
        let waiters = Waiters::new();
        waiters.wake_all();
        assert!(
            waiters.stripes.get().is_none(),
            "no stripes before a consumer waits"
        );
        let count = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&count));
        let mut slot = WaiterSlot::default();
        assert!(!waiters.register(&mut slot, &waker, false));
        assert!(waiters.register(&mut slot, &waker, true), "in place");
        assert!(!waiters.register(&mut slot, &waker, false));
        assert_eq!(waiters.len(), 1);
        waiters.wake_all();
        assert_eq!(woken(&count), 1);
        assert_eq!(waiters.len(), 0);
        assert!(!waiters.register(&mut slot, &waker, true), "cleared: again");
        waiters.remove(&mut slot);
        waiters.wake_all();
        assert_eq!(woken(&count), 1, "removed: not woken");
    }

    #[test]
    fn consumers_on_several_threads_are_all_woken() {
        let waiters = Arc::new(Waiters::new());
        let counts: Vec<Arc<Count>> = (0..4).map(|_| Arc::default()).collect();
        let slots: Vec<WaiterSlot> = counts
            .iter()
            .map(|count| {
                let (waiters, count) = (Arc::clone(&waiters), Arc::clone(count));
                std::thread::spawn(move || {
                    let mut slot = WaiterSlot::default();
                    waiters.register(&mut slot, &Waker::from(count), false);
                    slot
                })
                .join()
                .unwrap()
            })
            .collect();
        assert_eq!(waiters.len(), 4);
        waiters.wake_all();
        assert!(counts.iter().all(|count| woken(count) == 1));
        // Places from before the clearing are gone: removing them takes nobody else's.
        let other = Arc::new(Count::default());
        let mut kept = WaiterSlot::default();
        waiters.register(&mut kept, &Waker::from(Arc::clone(&other)), false);
        for mut slot in slots {
            waiters.remove(&mut slot);
        }
        waiters.wake_all();
        assert_eq!(woken(&other), 1);
    }
}

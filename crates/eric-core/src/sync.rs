//! The locks and atomics eric-core synchronizes with: std's, or loom's when built with
//! `--cfg loom`, so that the models in `tests/loom.rs` explore every interleaving of
//! the code that ships. `Arc` and `OnceLock` stay std's in both: loom sees each of their
//! operations as one step, which is what they are to the races modelled here.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, poisoned or not: the locks this serves are not held across anything
/// that panics, so what they guard stays consistent regardless.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

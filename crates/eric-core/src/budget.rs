//! A memory budget for broadcasts: what the channels that share it may hold in their
//! logs, in bytes, and who gives memory back when it runs out.

use std::fmt;
use std::sync::{Arc, PoisonError, Weak};

use crate::error::{Error, Result};
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering};

/// A bound on the bytes that the broadcast logs of the channels sharing it hold, for
/// listeners to read and for clients to resume from.
///
/// A channel joins a budget through [`ChannelBuilder::memory_budget`] or its
/// [`ChannelContainer`](crate::ChannelContainer) ([`ChannelContainer::limit_memory`]).
/// Each broadcast is counted at its [`Message::retained_bytes`] estimate from the
/// moment it is appended until the memory is freed (no listener left to read it and
/// the channel's replay window past it). When a broadcast would take the total over
/// the limit, the channels first release what only their replay windows keep (in no
/// particular order, oldest broadcasts of each first); if that is not enough,
/// [`Channel::broadcast`] refuses it with [`Error::MemoryBudgetExceeded`]. What a
/// listener has not read yet is never released.
///
/// Broadcasts admitted at the same moment on different channels may overshoot the
/// limit by those messages.
///
/// ```
/// use eric_core::{Channel, Error, MemoryBudget, Message};
///
/// let budget = MemoryBudget::new(64 * 1024);
/// let channel = Channel::builder()
///     .memory_budget(&budget)
///     .build(eric_core::MessageAdapter)?;
/// let listener = channel.add_listener()?; // reads nothing: keeps every broadcast
/// let big = Message::new("blob", "x".repeat(20_000));
/// channel.broadcast(big.clone())?;
/// assert!(budget.retained() >= 20_000);
/// assert!(matches!(
///     (0..3).try_for_each(|_| channel.broadcast(big.clone()).map(drop)),
///     Err(Error::MemoryBudgetExceeded { .. })
/// ));
/// channel.remove_listener(listener.id())?; // nobody needs them now
/// channel.broadcast(big)?;
/// # Ok::<(), eric_core::Error>(())
/// ```
///
/// [`ChannelBuilder::memory_budget`]: crate::ChannelBuilder::memory_budget
/// [`ChannelContainer::limit_memory`]: crate::ChannelContainer::limit_memory
/// [`Message::retained_bytes`]: crate::Message::retained_bytes
/// [`Channel::broadcast`]: crate::Channel::broadcast
#[derive(Clone)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    limit: u64,
    retained: AtomicU64,
    /// The logs that count against this budget, asked for memory back in turn.
    members: Mutex<Vec<Weak<dyn Reclaim>>>,
    /// Where the next round of reclaiming starts, so that no channel is always first.
    next: AtomicUsize,
}

/// A holder of broadcasts that can give back those no listener still needs.
pub(crate) trait Reclaim: Send + Sync {
    /// Frees what only the replay window keeps.
    fn reclaim(&self);
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        MemoryBudget {
            inner: Arc::new(Inner {
                limit,
                retained: AtomicU64::new(0),
                members: Mutex::new(Vec::new()),
                next: AtomicUsize::new(0),
            }),
        }
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// The bytes its channels hold now (an estimate: see
    /// [`Message::retained_bytes`](crate::Message::retained_bytes)).
    pub fn retained(&self) -> u64 {
        self.inner.retained.load(Ordering::Acquire)
    }

    /// Makes room for `bytes` more: releases what the channels keep only for replay
    /// if the total would pass the limit, and answers
    /// [`Error::MemoryBudgetExceeded`] if it still would. Nothing is counted until the
    /// broadcast is appended.
    pub fn admit(&self, bytes: u64) -> Result<()> {
        if self.fits(bytes) {
            return Ok(());
        }
        let members: Vec<Arc<dyn Reclaim>> = {
            let mut members = self.members();
            members.retain(|member| member.strong_count() > 0);
            members.iter().filter_map(Weak::upgrade).collect()
        };
        if !members.is_empty() {
            let start = self.inner.next.fetch_add(1, Ordering::Relaxed) % members.len();
            for member in members[start..].iter().chain(&members[..start]) {
                member.reclaim();
                if self.fits(bytes) {
                    return Ok(());
                }
            }
        }
        Err(Error::MemoryBudgetExceeded {
            needed: bytes,
            retained: self.retained(),
            limit: self.limit(),
        })
    }

    fn fits(&self, bytes: u64) -> bool {
        self.retained().saturating_add(bytes) <= self.inner.limit
    }

    pub(crate) fn join(&self, member: Weak<dyn Reclaim>) {
        self.members().push(member);
    }

    pub(crate) fn add(&self, bytes: u64) {
        self.inner.retained.fetch_add(bytes, Ordering::AcqRel);
    }

    pub(crate) fn release(&self, bytes: u64) {
        self.inner.retained.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Whether both are the same budget.
    pub fn ptr_eq(&self, other: &MemoryBudget) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn members(&self) -> crate::sync::MutexGuard<'_, Vec<Weak<dyn Reclaim>>> {
        self.inner
            .members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit", &self.limit())
            .field("retained", &self.retained())
            .finish()
    }
}

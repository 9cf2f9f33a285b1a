//! Listeners: who a queue belongs to, whether it is running, and the `on_message` hook.

use std::fmt;
use std::sync::{Arc, PoisonError};
use std::task::Waker;

use crate::error::{BoxError, Result, validate_id};
use crate::message::Message;
use crate::sync::{AtomicBool, AtomicU64, Mutex, MutexGuard, Ordering};

/// A listener of a channel (eric-sse's `MessageQueueListener`).
///
/// Implement it to run code when a message is delivered: embed a [`ListenerState`]
/// (the id and the running flag that eric manages) and override
/// [`on_message`](Listener::on_message). The provided methods (`id`, `start`, `stop`,
/// `is_running`) work through the state; there is no need to override them.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use eric_core::{BoxError, Listener, ListenerState, Message};
///
/// struct Counter {
///     state: ListenerState,
///     seen: AtomicUsize,
/// }
///
/// impl Listener for Counter {
///     fn state(&self) -> &ListenerState {
///         &self.state
///     }
///     fn on_message(&self, _msg: &Message) -> Result<(), BoxError> {
///         self.seen.fetch_add(1, Ordering::Relaxed);
///         Ok(())
///     }
/// }
///
/// let counter = Arc::new(Counter { state: ListenerState::new(), seen: AtomicUsize::new(0) });
/// counter.on_message(&Message::of_type("x")).unwrap();
/// assert_eq!(counter.seen.load(Ordering::Relaxed), 1);
/// assert!(!counter.is_running());
/// ```
pub trait Listener: Send + Sync + 'static {
    /// The state eric manages for this listener.
    fn state(&self) -> &ListenerState;

    /// Runs when a message is delivered to the listener's consumer, before the channel
    /// adapts it. An error is reported to the consumer as an error item; the stream
    /// goes on.
    fn on_message(&self, msg: &Message) -> Result<(), BoxError> {
        let _ = msg;
        Ok(())
    }

    /// Whether [`on_message`](Listener::on_message) does anything: `false` lets a
    /// stream skip the call on every message. Asked once, when a stream opens; `true`
    /// unless a listener says otherwise.
    fn hooks_messages(&self) -> bool {
        true
    }

    /// The listener's id.
    fn id(&self) -> &str {
        self.state().id()
    }

    /// Starts the listener: its messages are delivered again.
    fn start(&self) {
        self.state().start();
    }

    /// Stops the listener: its open stream ends and nothing is delivered until it is
    /// started again; messages sent meanwhile stay queued.
    fn stop(&self) {
        self.state().stop();
    }

    /// Whether the listener is running.
    #[inline]
    fn is_running(&self) -> bool {
        self.state().is_running()
    }
}

/// The part of a listener eric manages: its id, its running flag, and the wake-up of
/// its consumer when either changes.
pub struct ListenerState {
    id: Arc<str>,
    running: AtomicBool,
    // Wakes the stream reading this listener's queue when the listener is stopped or
    // removed, so that it ends without polling. A mutex rather than an atomic waker so
    // that a dropped stream can remove its own waker without racing a newer stream's.
    consumer: Mutex<Option<Consumer>>,
    // How many times the consumer's waker was taken (woken, detached or replaced),
    // counted under the lock: a stream whose waker was registered since the last time need not
    // register it again (no lock while a stream waits for message after message).
    takes: AtomicU64,
}

/// The waker of the stream reading a listener, and that stream's generation.
struct Consumer {
    waker: Waker,
    generation: u64,
}

impl ListenerState {
    /// A stopped listener with a fresh UUID v4 id.
    pub fn new() -> Self {
        Self::from_arc(uuid::Uuid::new_v4().to_string().into())
    }

    /// A stopped listener with the given id; an empty id, one over 1 KiB or one with
    /// control characters is an [`Error::InvalidId`](crate::Error::InvalidId).
    pub fn with_id(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        validate_id(&id)?;
        Ok(Self::from_arc(id.into()))
    }

    fn from_arc(id: Arc<str>) -> Self {
        ListenerState {
            id,
            running: AtomicBool::new(false),
            consumer: Mutex::new(None),
            takes: AtomicU64::new(0),
        }
    }

    /// The id.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn shared_id(&self) -> &Arc<str> {
        &self.id
    }

    /// Marks the listener running.
    pub fn start(&self) {
        self.running.store(true, Ordering::Release);
    }

    /// Marks the listener stopped and wakes its consumer so that its stream ends.
    pub fn stop(&self) {
        self.running.store(false, Ordering::Release);
        self.wake_consumer();
    }

    /// Whether the listener is running.
    #[inline]
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    fn consumer(&self) -> MutexGuard<'_, Option<Consumer>> {
        // The slot holds no invariant a panic could break.
        self.consumer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `waker` as the consumer's, for the stream of `generation` (its
    /// connection's consumer generation); returns the number of takes so far, which
    /// stays the same for as long as it stays registered. A newer stream's waker is
    /// left in place: the stream registering is superseded, and sees it when it reads
    /// again (the newer stream's generation was counted before it registered).
    pub(crate) fn register_consumer(&self, waker: &Waker, generation: u64) -> u64 {
        let mut slot = self.consumer();
        match &*slot {
            Some(registered) if registered.waker.will_wake(waker) => {}
            Some(registered) if registered.generation > generation => {}
            _ => {
                // An older stream's waker replaced is taken from it too.
                let replaced = self.take_consumer(&mut slot);
                *slot = Some(Consumer {
                    waker: waker.clone(),
                    generation,
                });
                drop(replaced);
            }
        }
        self.takes.load(Ordering::Acquire)
    }

    /// The number of takes so far (see [`register_consumer`](Self::register_consumer)).
    pub(crate) fn consumer_takes(&self) -> u64 {
        self.takes.load(Ordering::Acquire)
    }

    /// Takes the consumer's waker, counting the take (under the lock, so that a
    /// registration reads a count its waker is in place for).
    fn take_consumer(&self, slot: &mut Option<Consumer>) -> Option<Waker> {
        let taken = slot.take();
        if taken.is_some() {
            self.takes.fetch_add(1, Ordering::AcqRel);
        }
        taken.map(|consumer| consumer.waker)
    }

    pub(crate) fn wake_consumer(&self) {
        let waker = {
            let mut slot = self.consumer();
            self.take_consumer(&mut slot)
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    pub(crate) fn detach_consumer(&self, waker: &Waker) {
        let stale = {
            let mut slot = self.consumer();
            match &*slot {
                Some(registered) if registered.waker.will_wake(waker) => {
                    self.take_consumer(&mut slot)
                }
                _ => None,
            }
        };
        drop(stale);
    }
}

impl Default for ListenerState {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ListenerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerState")
            .field("id", &self.id())
            .field("running", &self.is_running())
            .finish()
    }
}

/// The default listener: an id and a running flag, and an `on_message` that does
/// nothing (or runs the closure given to [`with_hook`](Self::with_hook)).
///
/// ```
/// use eric_core::MessageQueueListener;
///
/// let listener = MessageQueueListener::new();
/// assert!(!listener.is_running());
/// listener.start();
/// assert!(listener.is_running());
/// assert_eq!(listener.id().len(), 36);
/// ```
pub struct MessageQueueListener {
    state: ListenerState,
    hook: Option<Box<Hook>>,
}

type Hook = dyn Fn(&Message) -> Result<(), BoxError> + Send + Sync;

impl MessageQueueListener {
    /// A stopped listener with a fresh UUID v4 id.
    pub fn new() -> Self {
        MessageQueueListener {
            state: ListenerState::new(),
            hook: None,
        }
    }

    /// A stopped listener with the given id (see [`ListenerState::with_id`]).
    pub fn with_id(id: impl Into<String>) -> Result<Self> {
        Ok(MessageQueueListener {
            state: ListenerState::with_id(id)?,
            hook: None,
        })
    }

    /// The id.
    pub fn id(&self) -> &str {
        self.state.id()
    }

    /// Starts the listener (see [`Listener::start`]).
    pub fn start(&self) {
        self.state.start();
    }

    /// Stops the listener (see [`Listener::stop`]).
    pub fn stop(&self) {
        self.state.stop();
    }

    /// Whether the listener is running.
    #[inline]
    pub fn is_running(&self) -> bool {
        self.state.is_running()
    }

    /// Runs `hook` as this listener's `on_message`.
    pub fn with_hook(
        mut self,
        hook: impl Fn(&Message) -> Result<(), BoxError> + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }
}

impl Default for MessageQueueListener {
    fn default() -> Self {
        Self::new()
    }
}

impl Listener for MessageQueueListener {
    fn state(&self) -> &ListenerState {
        &self.state
    }

    fn on_message(&self, msg: &Message) -> Result<(), BoxError> {
        match &self.hook {
            Some(hook) => hook(msg),
            None => Ok(()),
        }
    }

    fn hooks_messages(&self) -> bool {
        self.hook.is_some()
    }
}

impl fmt::Debug for MessageQueueListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageQueueListener")
            .field("id", &self.id())
            .field("running", &self.is_running())
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

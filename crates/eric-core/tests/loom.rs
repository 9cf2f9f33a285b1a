//! Loom models of eric-core's races: every interleaving (to the preemption bound) of
//! the code that ships, its locks and atomics being loom's under `--cfg loom`.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test -p eric-core --test loom --release
//! ```
//!
//! Each model names the protection it checks; docs/RELIABILITY.md says how each was
//! shown to fail without it.

#![cfg(loom)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use eric_core::{Channel, Error, MESSAGE_TYPE_CLOSED, Message};
use futures_util::{Stream, StreamExt};
use loom::thread;

/// A broadcast appended while a stream registers its waker and reads again: the stream
/// gets it (the append wakes a registered waker, or the read after registering sees
/// it). Protection: `MessageStream::poll_next` reads once more after registering, and
/// the log publishes its head before it takes each waiter stripe's lock to wake it.
#[test]
fn a_broadcast_racing_a_stream_going_to_sleep_wakes_it() {
    loom::model(|| {
        let channel = Channel::default();
        let listener = channel.add_listener().unwrap();
        let mut stream = channel.message_stream(listener.id()).unwrap();
        let publisher = {
            let channel = channel.clone();
            thread::spawn(move || channel.broadcast(Message::of_type("a")).unwrap())
        };
        let got = block_on(stream.next()).unwrap().unwrap();
        assert_eq!(got.message_type(), "a");
        publisher.join().unwrap();
    });
}

/// One producer dispatches, then broadcasts, while the listener's stream reads: the
/// stream reads them in that order, each once, whichever moment it reads at. Protection:
/// `Connection::next` peeks the log first and the queue second (seeing the broadcast
/// makes the dispatch pushed before it visible), and when the queue holds a dispatch
/// stamped past a broadcast its log peek missed, it reads the log again.
#[test]
fn a_dispatch_then_a_broadcast_are_read_in_that_order() {
    loom::model(|| {
        let channel = Channel::default();
        let listener = channel.add_listener().unwrap();
        let mut stream = channel.message_stream(listener.id()).unwrap();
        let producer = {
            let (channel, id) = (channel.clone(), listener.id().to_owned());
            thread::spawn(move || {
                channel.dispatch(&id, Message::of_type("d")).unwrap();
                channel.broadcast(Message::of_type("b")).unwrap();
            })
        };
        let first = block_on(stream.next()).unwrap().unwrap();
        let second = block_on(stream.next()).unwrap().unwrap();
        assert_eq!([first.message_type(), second.message_type()], ["d", "b"]);
        producer.join().unwrap();
    });
}

/// The same, for a stream that reads the log without the cursor's lock (it has read a
/// broadcast, so it holds the log segment): the dispatch still comes first. Protection:
/// `Connection::read_unlocked` reads the log's head before it checks the queue.
#[test]
fn a_dispatch_then_a_broadcast_reach_a_stream_reading_without_the_lock_in_that_order() {
    loom::model(|| {
        let channel = Channel::default();
        let listener = channel.add_listener().unwrap();
        let mut stream = channel.message_stream(listener.id()).unwrap();
        channel.broadcast(Message::of_type("a")).unwrap();
        let first = block_on(stream.next()).unwrap().unwrap();
        assert_eq!(first.message_type(), "a");
        let producer = {
            let (channel, id) = (channel.clone(), listener.id().to_owned());
            thread::spawn(move || {
                channel.dispatch(&id, Message::of_type("d")).unwrap();
                channel.broadcast(Message::of_type("b")).unwrap();
            })
        };
        let second = block_on(stream.next()).unwrap().unwrap();
        let third = block_on(stream.next()).unwrap().unwrap();
        assert_eq!([second.message_type(), third.message_type()], ["d", "b"]);
        producer.join().unwrap();
    });
}

/// A dispatch racing a broadcast from another thread: the listener reads each exactly
/// once (`take_next` once both are done).
#[test]
fn a_dispatch_racing_a_broadcast_is_read_once_and_so_is_the_broadcast() {
    loom::model(|| {
        let channel = Channel::default();
        let listener = channel.add_listener().unwrap();
        listener.start();
        let dispatcher = {
            let (channel, id) = (channel.clone(), listener.id().to_owned());
            thread::spawn(move || channel.dispatch(&id, Message::of_type("d")).unwrap())
        };
        channel.broadcast(Message::of_type("b")).unwrap();
        dispatcher.join().unwrap();
        let mut read = Vec::new();
        while let Some((msg, _)) = channel.take_next(listener.id()).unwrap() {
            read.push(msg.message_type().to_owned());
        }
        read.sort();
        assert_eq!(read, ["b", "d"]);
    });
}

/// `close` racing `dispatch`: a dispatch that was accepted is read before the closed
/// marker, and one that was refused is never read. Protection: `close` sets its flag
/// before appending the marker, and `dispatch_at` stamps before it checks the flag.
#[test]
fn a_dispatch_racing_close_is_read_before_the_end_or_refused() {
    loom::model(|| {
        let channel = Channel::default();
        let listener = channel.add_listener().unwrap();
        listener.start();
        let dispatcher = {
            let (channel, id) = (channel.clone(), listener.id().to_owned());
            thread::spawn(move || channel.dispatch(&id, Message::of_type("d")))
        };
        channel.close();
        let dispatched = dispatcher.join().unwrap();
        let mut read = Vec::new();
        while let Ok(Some((msg, _))) = channel.take_next(listener.id()) {
            let ends = msg.ends_stream();
            read.push(msg.message_type().to_owned());
            if ends {
                break;
            }
        }
        match dispatched {
            Ok(()) => assert_eq!(read, ["d", MESSAGE_TYPE_CLOSED]),
            Err(Error::ChannelClosed { .. }) => assert_eq!(read, [MESSAGE_TYPE_CLOSED]),
            Err(err) => panic!("{err}"),
        }
    });
}

/// A waker that wakes a task blocked in [`block_on`], through loom's
/// `Notify`, so that a wake lost is a deadlock loom reports.
struct Unpark(loom::sync::Notify);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.notify();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.notify();
    }
}

/// Runs `f` to completion on this thread, polling it with one waker whose clones all
/// say `will_wake` of one another, as a runtime's task waker does. (loom's `block_on`
/// waker does not: the clone a stream keeps never `will_wake` the next poll's waker,
/// seen by printing it, so a stream's same-waker paths never ran under it.)
fn block_on<F: Future>(f: F) -> F::Output {
    let unpark = Arc::new(Unpark(loom::sync::Notify::new()));
    let waker = Waker::from(Arc::clone(&unpark));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
        unpark.0.wait();
    }
}

/// Counts the clones of a waker still held somewhere.
struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// A stream dropped on one thread while a broadcast wakes it on another: nothing
/// panics, no waker is kept, and the broadcast waits for the listener's next stream.
/// Protection: `forget_wakers` removes the stream's waker only if it is still the one
/// registered, under the same locks the wake takes.
#[test]
fn a_stream_dropped_while_woken_leaves_nothing_behind() {
    loom::model(|| {
        let channel = Channel::default();
        let listener = channel.add_listener().unwrap();
        let mut stream = channel.message_stream(listener.id()).unwrap();
        let noop = Arc::new(Noop);
        let waker = Waker::from(Arc::clone(&noop));
        let polled = Stream::poll_next(
            std::pin::Pin::new(&mut stream),
            &mut Context::from_waker(&waker),
        );
        assert!(polled.is_pending());
        drop(waker);
        let dropper = thread::spawn(move || drop(stream));
        channel.broadcast(Message::of_type("a")).unwrap();
        dropper.join().unwrap();
        assert_eq!(
            Arc::strong_count(&noop),
            1,
            "a waker of the dropped stream is kept"
        );
        let mut next = channel.message_stream(listener.id()).unwrap();
        let got = block_on(next.next()).unwrap().unwrap();
        assert_eq!(got.message_type(), "a");
    });
}

/// A newer stream taking over a listener while the older one goes to sleep: the older
/// one ends rather than wait for ever. Protection: the takeover bumps the consumer
/// generation and then wakes the consumer registered with the listener's state, which
/// the older stream registers before it checks the generation again.
#[test]
fn a_stream_taken_over_while_going_to_sleep_ends() {
    loom::model(|| {
        let channel = Channel::default();
        let listener = channel.add_listener().unwrap();
        let mut older = channel.message_stream(listener.id()).unwrap();
        let newer = {
            let (channel, id) = (channel.clone(), listener.id().to_owned());
            thread::spawn(move || channel.message_stream(&id).unwrap())
        };
        assert!(
            block_on(older.next()).is_none(),
            "the older stream must end"
        );
        drop(newer.join().unwrap());
    });
}

/// A rewind racing a stream's read without the cursor's lock: the rewind is never
/// undone, and no broadcast is read twice but for the rewind. The stream has read "a"
/// and reads on as another thread rewinds the listener to "a": it reads "a" again (the
/// rewind came first) then "b", or "b" then, after the rewind, "a" and "b" again.
/// Protection: the stream moves the position on with a compare-and-swap from the
/// position it read at, which fails once the rewind moved it.
#[test]
fn a_rewind_racing_a_stream_read_is_not_undone() {
    loom::model(|| {
        let channel: Channel = Channel::builder()
            .replay(8)
            .build(Default::default())
            .unwrap();
        let listener = channel.add_listener().unwrap();
        let mut stream = channel.message_stream(listener.id()).unwrap();
        channel.broadcast(Message::of_type("a")).unwrap();
        channel.broadcast(Message::of_type("b")).unwrap();
        let first = block_on(stream.next()).unwrap().unwrap();
        assert_eq!(first.message_type(), "a");
        let rewinder = {
            let (channel, id) = (channel.clone(), listener.id().to_owned());
            thread::spawn(move || channel.rewind(&id, 0).unwrap())
        };
        let mut read = vec![block_on(stream.next()).unwrap().unwrap()];
        rewinder.join().unwrap();
        while let Some((msg, _)) = channel.take_next(listener.id()).unwrap() {
            read.push(msg);
        }
        let read: Vec<_> = read.iter().map(|m| m.message_type()).collect();
        assert!(
            read == ["a", "b"] || read == ["b", "a", "b"],
            "read {read:?}"
        );
    });
}

/// Sends a message of type `what` to listener `id` with `send`, on a thread of its own.
fn spawn_send(
    send: fn(&Channel, &str, Message),
    channel: &Channel,
    id: &str,
    what: &'static str,
) -> thread::JoinHandle<()> {
    let (channel, id) = (channel.clone(), id.to_owned());
    thread::spawn(move || send(&channel, &id, Message::of_type(what)))
}

/// One task, one waker, reading a listener's stream: it waits, is woken by the message
/// another thread sends with `send` ("a"), reads it, and waits again while a third
/// thread sends "b"; it must be woken for "b" too. (Both are sent from other threads,
/// so that a wake is taken by the wait it ends, not left over to hide a lost one.)
fn waits_again_with_the_same_waker(send: fn(&Channel, &str, Message)) {
    loom::model(move || {
        let channel = Channel::default();
        let listener = channel.add_listener().unwrap();
        let id = listener.id().to_owned();
        let mut stream = channel.message_stream(&id).unwrap();
        let second = block_on(async {
            let sender = spawn_send(send, &channel, &id, "a");
            let first = stream.next().await.unwrap().unwrap();
            assert_eq!(first.message_type(), "a");
            sender.join().unwrap();
            let sender = spawn_send(send, &channel, &id, "b");
            let second = stream.next().await.unwrap().unwrap();
            sender.join().unwrap();
            second
        });
        assert_eq!(second.message_type(), "b");
    });
}

/// A stream that waits again with the same waker after a broadcast woke it (one task
/// reading broadcasts as they come): the next broadcast wakes it too. Protection: a
/// stream skips registering again (no lock) only while its waiter stripe's count of
/// clearings says its waker is still there; an append counts a clearing, then takes
/// the wakers, under the stripe's lock.
#[test]
fn a_stream_waiting_again_with_the_same_waker_is_woken_by_the_next_broadcast() {
    waits_again_with_the_same_waker(|channel, _, msg| {
        channel.broadcast(msg).unwrap();
    });
}

/// The same for dispatches: a stream that waits again with the same waker after a
/// dispatch woke it is woken by the next dispatch. Protection: the stream skips
/// registering with its queue again only while the queue's count of waker takes
/// (`Queue::waker_takes`, read before registering) is unchanged.
#[test]
fn a_stream_waiting_again_with_the_same_waker_is_woken_by_the_next_dispatch() {
    waits_again_with_the_same_waker(|channel, id, msg| channel.dispatch(id, msg).unwrap());
}

/// One task, one waker: the stream waits, then is polled again with nothing read
/// between (hyper polls a body more than once per event) while another thread sends
/// "b"; the second poll finds its wakers in place and waits without reading again, and
/// "b" must still wake it.
fn polled_again_with_its_wakers_in_place(send: fn(&Channel, &str, Message)) {
    loom::model(move || {
        let channel = Channel::default();
        let listener = channel.add_listener().unwrap();
        let id = listener.id().to_owned();
        let mut stream = channel.message_stream(&id).unwrap();
        let got = block_on(async {
            std::future::poll_fn(|cx| {
                assert!(Stream::poll_next(std::pin::Pin::new(&mut stream), cx).is_pending());
                Poll::Ready(())
            })
            .await;
            let sender = spawn_send(send, &channel, &id, "b");
            let got = stream.next().await.unwrap().unwrap();
            sender.join().unwrap();
            got
        });
        assert_eq!(got.message_type(), "b");
    });
}

/// A stream polled again with its wakers in place waits without reading again; a
/// broadcast racing that poll wakes it. Protection: it waits unread only if the log's
/// count of clearings (and the consumer's and queue's counts of takes) say that every
/// waker it registered is still in place, so that what came after its read wakes it.
#[test]
fn a_stream_polled_again_with_its_wakers_in_place_is_woken_by_a_racing_broadcast() {
    polled_again_with_its_wakers_in_place(|channel, _, msg| {
        channel.broadcast(msg).unwrap();
    });
}

/// The same for a dispatch racing that poll.
#[test]
fn a_stream_polled_again_with_its_wakers_in_place_is_woken_by_a_racing_dispatch() {
    polled_again_with_its_wakers_in_place(|channel, id, msg| channel.dispatch(id, msg).unwrap());
}

/// A waker that notes that it was woken.
struct Flag(std::sync::atomic::AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A stream taking over a listener while the stream it supersedes is polled again: the
/// older one's registration must not take the newer one's consumer waker, or a stop of
/// the listener would never wake the newer stream. Protection: a consumer waker is
/// registered with its stream's generation, and a registration never replaces a newer
/// generation's.
#[test]
fn a_stream_superseded_while_polled_leaves_the_newer_its_consumer_waker() {
    loom::model(|| {
        let channel = Channel::default();
        let listener = channel.add_listener().unwrap();
        let id = listener.id().to_owned();
        let mut older = channel.message_stream(&id).unwrap();
        let older_waker = Waker::from(Arc::new(Noop));
        let mut older_cx = Context::from_waker(&older_waker);
        assert!(Stream::poll_next(std::pin::Pin::new(&mut older), &mut older_cx).is_pending());
        let newer = {
            let (channel, id) = (channel.clone(), id.clone());
            thread::spawn(move || {
                let mut newer = channel.message_stream(&id).unwrap();
                let woken = Arc::new(Flag(Default::default()));
                let waker = Waker::from(Arc::clone(&woken));
                let polled = Stream::poll_next(
                    std::pin::Pin::new(&mut newer),
                    &mut Context::from_waker(&waker),
                );
                assert!(polled.is_pending());
                (newer, woken)
            })
        };
        // Woken by the takeover, or polled for another reason: it ends, or waits.
        let _ = Stream::poll_next(std::pin::Pin::new(&mut older), &mut older_cx);
        let (newer, woken) = newer.join().unwrap();
        listener.stop();
        assert!(
            woken.0.load(std::sync::atomic::Ordering::SeqCst),
            "the newer stream was not woken by the stop"
        );
        drop((older, newer));
    });
}

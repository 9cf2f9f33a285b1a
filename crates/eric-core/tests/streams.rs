//! How message streams wait and how they end: on the closed and end-of-stream
//! messages, on stop, removal and takeover, and on channel close; and what dropping one
//! leaves behind (nothing).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::task::Poll;

use eric_core::{Channel, Error, MESSAGE_TYPE_CLOSED, MESSAGE_TYPE_END_OF_STREAM, Message};
use futures_util::StreamExt;
use futures_util::stream::FusedStream;
use support::{CountingWaker, poll_once, types_until_end};

#[tokio::test]
async fn closing_the_channel_ends_every_stream_after_what_was_queued() {
    let channel = Channel::default();
    let a = channel.add_listener().unwrap();
    let b = channel.add_listener().unwrap();
    channel.broadcast(Message::of_type("before")).unwrap();
    channel.close();

    for listener in [&a, &b] {
        let mut stream = channel.message_stream(listener.id()).unwrap();
        assert_eq!(
            types_until_end(&mut stream).await,
            ["before", MESSAGE_TYPE_CLOSED]
        );
        assert!(stream.is_terminated());
    }
    assert!(matches!(
        channel.broadcast(Message::of_type("after")),
        Err(Error::ChannelClosed { .. })
    ));
    assert!(matches!(
        channel.add_listener(),
        Err(Error::ChannelClosed { .. })
    ));
}

#[tokio::test]
async fn an_end_of_stream_message_ends_only_its_listeners_stream() {
    let channel = Channel::default();
    let a = channel.add_listener().unwrap();
    let b = channel.add_listener().unwrap();
    channel.dispatch(a.id(), Message::end_of_stream()).unwrap();
    channel
        .dispatch(a.id(), Message::of_type("next time"))
        .unwrap();
    channel
        .dispatch(b.id(), Message::of_type("b goes on"))
        .unwrap();

    let mut stream_a = channel.message_stream(a.id()).unwrap();
    assert_eq!(
        types_until_end(&mut stream_a).await,
        [MESSAGE_TYPE_END_OF_STREAM]
    );
    // What followed the end marker is still queued for the next stream.
    let mut again = channel.message_stream(a.id()).unwrap();
    assert_eq!(
        again.next().await.unwrap().unwrap().message_type(),
        "next time"
    );

    let mut stream_b = channel.message_stream(b.id()).unwrap();
    assert_eq!(
        stream_b.next().await.unwrap().unwrap().message_type(),
        "b goes on"
    );
}

#[tokio::test]
async fn stopping_the_listener_wakes_and_ends_its_waiting_stream() {
    let channel = Channel::default();
    let listener = channel.add_listener().unwrap();
    let mut stream = channel.message_stream(listener.id()).unwrap();
    assert!(listener.is_running(), "message_stream starts the listener");
    let waker = CountingWaker::new();
    assert!(poll_once(&mut stream, &waker).is_pending());

    listener.stop();
    assert_eq!(waker.wakes(), 1, "stop must wake the waiting stream");
    assert!(matches!(poll_once(&mut stream, &waker), Poll::Ready(None)));

    // Messages sent while stopped wait for the next stream.
    channel
        .broadcast(Message::of_type("while stopped"))
        .unwrap();
    let mut stream = channel.message_stream(listener.id()).unwrap();
    assert_eq!(
        stream.next().await.unwrap().unwrap().message_type(),
        "while stopped"
    );
}

/// A stream that waited again and again (its waker registered once, then kept) is
/// still woken by a stop, and so is a newer stream after a takeover.
#[tokio::test]
async fn a_stream_that_waited_many_times_is_still_woken_by_a_stop() {
    let channel = Channel::default();
    let listener = channel.add_listener().unwrap();
    let mut stream = channel.message_stream(listener.id()).unwrap();
    let waker = CountingWaker::new();
    for n in 0..5 {
        assert!(poll_once(&mut stream, &waker).is_pending());
        channel.broadcast(Message::new("n", n)).unwrap();
        assert_eq!(waker.wakes(), n + 1, "each broadcast wakes it");
        assert!(matches!(
            poll_once(&mut stream, &waker),
            Poll::Ready(Some(Ok(_)))
        ));
    }
    assert!(poll_once(&mut stream, &waker).is_pending());
    listener.stop();
    assert_eq!(waker.wakes(), 6, "stop must wake the waiting stream");
    assert!(matches!(poll_once(&mut stream, &waker), Poll::Ready(None)));

    // A takeover: the older stream, woken, ends; the newer one, after waiting a few
    // times itself, is woken by a stop too.
    listener.start();
    let mut older = channel.message_stream(listener.id()).unwrap();
    let older_waker = CountingWaker::new();
    assert!(poll_once(&mut older, &older_waker).is_pending());
    let mut newer = channel.message_stream(listener.id()).unwrap();
    assert_eq!(
        older_waker.wakes(),
        1,
        "the takeover wakes the older stream"
    );
    let newer_waker = CountingWaker::new();
    for n in 0..3 {
        assert!(poll_once(&mut newer, &newer_waker).is_pending());
        channel.broadcast(Message::new("n", n)).unwrap();
        assert!(matches!(
            poll_once(&mut newer, &newer_waker),
            Poll::Ready(Some(Ok(_)))
        ));
    }
    assert!(matches!(
        poll_once(&mut older, &older_waker),
        Poll::Ready(None)
    ));
    assert!(poll_once(&mut newer, &newer_waker).is_pending());
    let before = newer_waker.wakes();
    listener.stop();
    assert_eq!(
        newer_waker.wakes(),
        before + 1,
        "stop wakes the newer stream"
    );
    assert!(matches!(
        poll_once(&mut newer, &newer_waker),
        Poll::Ready(None)
    ));
}

#[tokio::test]
async fn removing_the_listener_ends_its_stream_and_returns_what_was_unread() {
    let channel = Channel::default();
    let listener = channel.add_listener().unwrap();
    let mut stream = channel.message_stream(listener.id()).unwrap();
    let waiter = tokio::spawn(async move { types_until_end(&mut stream).await });
    tokio::task::yield_now().await;

    channel
        .dispatch(listener.id(), Message::of_type("read"))
        .unwrap();
    tokio::task::yield_now().await;
    let connection = channel.remove_listener(listener.id()).unwrap();
    let seen = waiter.await.unwrap();
    assert!(seen.len() <= 1, "{seen:?}");
    // Whatever the stream had not read came back with the connection.
    assert_eq!(seen.len() + connection.queue().len(), 1);
    assert!(connection.is_removed());
    assert!(matches!(
        channel.dispatch(listener.id(), Message::of_type("x")),
        Err(Error::InvalidListener { .. })
    ));
}

#[tokio::test]
async fn a_new_stream_takes_over_the_listener_and_the_old_one_ends() {
    let channel = Channel::default();
    let listener = channel.add_listener().unwrap();
    let mut old = channel.message_stream(listener.id()).unwrap();
    let waker = CountingWaker::new();
    assert!(poll_once(&mut old, &waker).is_pending());

    let mut new = channel.message_stream(listener.id()).unwrap();
    assert_eq!(waker.wakes(), 1, "the superseded stream is woken");
    assert!(matches!(poll_once(&mut old, &waker), Poll::Ready(None)));

    channel
        .broadcast(Message::of_type("to the new one"))
        .unwrap();
    assert_eq!(
        new.next().await.unwrap().unwrap().message_type(),
        "to the new one"
    );
}

#[test]
fn an_idle_stream_is_woken_only_by_a_push() {
    let channel = Channel::default();
    let listener = channel.add_listener().unwrap();
    let mut stream = channel.message_stream(listener.id()).unwrap();
    let waker = CountingWaker::new();

    assert!(poll_once(&mut stream, &waker).is_pending());
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(waker.wakes(), 0, "nothing may wake an idle stream");

    channel.broadcast(Message::of_type("one")).unwrap();
    channel.broadcast(Message::of_type("two")).unwrap();
    assert_eq!(
        waker.wakes(),
        1,
        "one wake-up for a burst, not one per message"
    );
    assert!(matches!(
        poll_once(&mut stream, &waker),
        Poll::Ready(Some(Ok(_)))
    ));
    assert!(matches!(
        poll_once(&mut stream, &waker),
        Poll::Ready(Some(Ok(_)))
    ));
    assert!(poll_once(&mut stream, &waker).is_pending());
}

#[test]
fn dropping_a_stream_leaves_nothing_behind() {
    let channel = Channel::default();
    let listener = channel.add_listener().unwrap();
    let waker = CountingWaker::new();
    {
        let mut stream = channel.message_stream(listener.id()).unwrap();
        assert!(poll_once(&mut stream, &waker).is_pending());
        assert!(
            Arc::strong_count(&waker) > 1,
            "the stream registered its waker"
        );
    }
    assert_eq!(Arc::strong_count(&waker), 1, "a waker outlived its stream");
    // The listener stays, with what arrives meanwhile queued for the next stream.
    assert_eq!(channel.listener_count(), 1);
    channel.broadcast(Message::of_type("later")).unwrap();
    assert_eq!(waker.wakes(), 0);
    assert_eq!(channel.queue_stats(listener.id()).unwrap().len, 1);
}

#[test]
fn dropping_a_watch_stream_removes_its_listener() {
    let channel = Channel::default();
    let waker = CountingWaker::new();
    let mut stream = channel.watch().unwrap();
    assert_eq!(channel.listener_count(), 1);
    channel.broadcast(Message::of_type("seen")).unwrap();
    assert!(matches!(
        poll_once(&mut stream, &waker),
        Poll::Ready(Some(Ok(_)))
    ));
    assert!(poll_once(&mut stream, &waker).is_pending());
    drop(stream);
    assert_eq!(channel.listener_count(), 0);
    assert_eq!(Arc::strong_count(&waker), 1);
}

#[tokio::test]
async fn a_hook_error_is_an_item_and_the_stream_goes_on() {
    let channel = Channel::default();
    let listener = Arc::new(eric_core::MessageQueueListener::new().with_hook(|msg| {
        if msg.payload() == "bad" {
            Err("refused".into())
        } else {
            Ok(())
        }
    }));
    channel.register_listener(Arc::clone(&listener)).unwrap();
    channel.broadcast(Message::new("m", "bad")).unwrap();
    channel.broadcast(Message::new("m", "good")).unwrap();
    let mut stream = channel.message_stream(listener.id()).unwrap();
    assert!(matches!(
        stream.next().await,
        Some(Err(Error::Listener { .. }))
    ));
    assert_eq!(stream.next().await.unwrap().unwrap().payload(), "good");
}

#[tokio::test(start_paused = true)]
async fn a_stream_waits_for_a_late_message_without_timers() {
    let channel = Channel::default();
    let listener = channel.add_listener().unwrap();
    let mut stream = channel.message_stream(listener.id()).unwrap();
    let producer = channel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        producer
            .broadcast(Message::of_type("an hour later"))
            .unwrap();
    });
    assert_eq!(
        stream.next().await.unwrap().unwrap().message_type(),
        "an hour later"
    );
}

#[tokio::test]
async fn a_stream_reopened_after_the_closed_marker_ends_at_once() {
    let channel = Channel::default();
    let listener = channel.add_listener().unwrap();
    channel.close();
    let mut first = channel.message_stream(listener.id()).unwrap();
    assert_eq!(types_until_end(&mut first).await, [MESSAGE_TYPE_CLOSED]);
    let mut again = channel.message_stream(listener.id()).unwrap();
    assert!(again.next().await.is_none());
}

#[tokio::test]
async fn a_listener_resumes_where_its_client_left_off() {
    let channel = Channel::builder()
        .replay(100)
        .build(eric_core::MessageAdapter)
        .unwrap();
    let listener = channel.add_listener().unwrap();
    for n in 0..5u64 {
        channel.broadcast(Message::new("n", n)).unwrap();
    }
    let mut stream = channel.message_stream(listener.id()).unwrap();
    for _ in 0..5 {
        stream.next().await.unwrap().unwrap();
    }
    // The client only got broadcasts 0 and 1 before its connection broke.
    let mut resumed = channel.message_stream_from(listener.id(), 2).unwrap();
    channel.close();
    let payloads: Vec<_> =
        std::iter::from_fn(|| futures_util::FutureExt::now_or_never(resumed.next()).flatten())
            .map(|item| item.unwrap().payload().clone())
            .collect();
    assert_eq!(
        payloads,
        [2.into(), 3.into(), 4.into(), serde_json::Value::Null]
    );
}

#[test]
fn watch_from_replays_missed_broadcasts_or_says_why_not() {
    let channel = Channel::builder()
        .replay(10)
        .build(eric_core::MessageAdapter)
        .unwrap();
    for n in 0..300u64 {
        channel.broadcast(Message::new("n", n)).unwrap();
    }
    let waker = CountingWaker::new();
    let mut stream = channel.watch_from(295).unwrap();
    for expected in 295..300u64 {
        match poll_once(&mut stream, &waker) {
            Poll::Ready(Some(Ok(msg))) => assert_eq!(msg.payload(), expected),
            other => panic!("{other:?}"),
        }
    }
    assert!(poll_once(&mut stream, &waker).is_pending());
    drop(stream);

    match channel.watch_from(3) {
        Err(Error::ReplayUnavailable {
            requested: 3,
            oldest,
            head: 300,
            ..
        }) => {
            assert!(oldest > 3 && oldest <= 290, "{oldest}");
        }
        other => panic!("expected ReplayUnavailable, got {other:?}"),
    }
    assert!(matches!(
        channel.watch_from(301),
        Err(Error::ReplayUnavailable { requested: 301, .. })
    ));
    assert_eq!(
        channel.listener_count(),
        0,
        "a refused watch_from leaves no listener"
    );
}

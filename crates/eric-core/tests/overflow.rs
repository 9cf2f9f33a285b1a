//! Bounded queues: each overflow policy does what it says, and counts it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use eric_core::{Channel, Error, Message, MessageAdapter, OverflowPolicy};
use futures_util::StreamExt;
use support::{numbered, read_numbers};

fn bounded(capacity: usize, policy: OverflowPolicy) -> Channel {
    Channel::builder()
        .capacity(capacity, policy)
        .build(MessageAdapter)
        .unwrap()
}

#[test]
fn reject_refuses_the_whole_broadcast_while_a_listener_is_full_and_counts_it() {
    let channel = bounded(2, OverflowPolicy::Reject);
    let slow = channel.add_listener().unwrap();
    let fast = channel.add_listener().unwrap();
    slow.start();
    fast.start();
    channel.broadcast(numbered(0)).unwrap();
    channel.broadcast(numbered(1)).unwrap();
    channel.deliver_next(fast.id()).unwrap();

    // slow has 2 unread: the broadcast reaches nobody, so retrying it is safe.
    let err = channel.broadcast(numbered(2)).unwrap_err();
    assert!(
        matches!(&err, Error::BroadcastRejected { rejected, delivered: 0, .. } if rejected == &[slow.id().to_owned()]),
        "{err}"
    );
    assert_eq!(channel.deliver_next(fast.id()).unwrap().payload(), 1);
    assert!(matches!(
        channel.deliver_next(fast.id()),
        Err(Error::NoMessages { .. })
    ));

    // Dispatches have their own bound.
    channel.dispatch(slow.id(), numbered(10)).unwrap();
    channel.dispatch(slow.id(), numbered(11)).unwrap();
    assert!(matches!(
        channel.dispatch(slow.id(), numbered(12)),
        Err(Error::QueueFull { capacity: 2, listener_id }) if listener_id == slow.id()
    ));
    assert_eq!(channel.stats().rejected, 2);
    assert_eq!(channel.queue_stats(slow.id()).unwrap().rejected, 2);
    assert_eq!(channel.queue_stats(slow.id()).unwrap().len, 4);

    // Once slow reads, the retry goes through, and nothing was lost or reordered.
    let slow_order = read_numbers(&channel, slow.id(), 2);
    assert_eq!(slow_order, [0, 1]);
    channel.broadcast(numbered(2)).unwrap();
    let rest = read_numbers(&channel, slow.id(), 3);
    assert_eq!(
        rest,
        [10, 11, 2],
        "dispatches sent before broadcast 2 come first"
    );
}

#[test]
fn drop_oldest_keeps_the_newest_and_counts_each_drop() {
    let channel = bounded(3, OverflowPolicy::DropOldest);
    let listener = channel.add_listener().unwrap();
    for n in 0..10 {
        channel.broadcast(numbered(n)).unwrap();
    }
    channel.dispatch(listener.id(), numbered(100)).unwrap();

    // Counted before the listener even reads: 7 broadcasts fell out of its window.
    assert_eq!(channel.stats().dropped, 7);
    let stats = channel.queue_stats(listener.id()).unwrap();
    assert_eq!((stats.len, stats.dropped), (4, 7));

    listener.start();
    let kept = read_numbers(&channel, listener.id(), 4);
    assert_eq!(kept, [7, 8, 9, 100], "the newest survive, in order");
    assert_eq!(
        channel.stats().dropped,
        7,
        "counted once, not again on reading"
    );

    // Dispatches beyond capacity push out the oldest dispatch.
    for n in 0..4 {
        channel.dispatch(listener.id(), numbered(200 + n)).unwrap();
    }
    assert_eq!(channel.stats().dropped, 8);
    assert_eq!(channel.deliver_next(listener.id()).unwrap().payload(), 201);
}

#[tokio::test]
async fn disconnect_ends_the_slow_stream_with_an_error_and_spares_the_others() {
    let channel = bounded(2, OverflowPolicy::Disconnect);
    let slow = channel.add_listener().unwrap();
    let fast = channel.add_listener().unwrap();
    let mut slow_stream = channel.message_stream(slow.id()).unwrap();
    let mut fast_stream = channel.message_stream(fast.id()).unwrap();

    let mut disconnected = Vec::new();
    for n in 0..3 {
        let report = channel.broadcast(numbered(n)).unwrap();
        disconnected.extend(report.disconnected);
        // fast keeps up.
        assert_eq!(fast_stream.next().await.unwrap().unwrap().payload(), n);
    }
    assert_eq!(disconnected, [slow.id().to_owned()]);

    match slow_stream.next().await {
        Some(Err(Error::ListenerDisconnected {
            listener_id,
            capacity: 2,
            dropped: 3,
        })) => {
            assert_eq!(listener_id, slow.id());
        }
        other => panic!("expected a disconnection error item, got {other:?}"),
    }
    assert!(
        slow_stream.next().await.is_none(),
        "the stream ends after the error"
    );

    let stats = channel.stats();
    assert_eq!(
        (stats.disconnected, stats.dropped, stats.listeners),
        (1, 3, 1)
    );
    assert!(matches!(
        channel.dispatch(slow.id(), Message::of_type("x")),
        Err(Error::InvalidListener { .. })
    ));
    channel.broadcast(numbered(3)).unwrap();
    assert_eq!(fast_stream.next().await.unwrap().unwrap().payload(), 3);
}

#[tokio::test]
async fn overflowing_dispatches_disconnect_too() {
    let channel = bounded(1, OverflowPolicy::Disconnect);
    let listener = channel.add_listener().unwrap();
    let mut stream = channel.message_stream(listener.id()).unwrap();
    channel.dispatch(listener.id(), numbered(0)).unwrap();
    assert!(matches!(
        channel.dispatch(listener.id(), numbered(1)),
        Err(Error::ListenerDisconnected { dropped: 2, .. })
    ));
    assert!(matches!(
        stream.next().await,
        Some(Err(Error::ListenerDisconnected { .. }))
    ));
    assert!(stream.next().await.is_none());
    assert_eq!(channel.stats().disconnected, 1);
}

#[test]
fn closing_a_full_bounded_channel_loses_nothing_and_ends_its_streams() {
    for policy in [
        OverflowPolicy::Reject,
        OverflowPolicy::DropOldest,
        OverflowPolicy::Disconnect,
    ] {
        let channel = bounded(1, policy);
        let listener = channel.add_listener().unwrap();
        channel.broadcast(numbered(0)).unwrap();
        channel.close();
        listener.start();
        assert_eq!(
            channel.deliver_next(listener.id()).unwrap().payload(),
            0,
            "{policy:?}"
        );
        assert!(
            channel.deliver_next(listener.id()).unwrap().ends_stream(),
            "{policy:?}"
        );
        assert_eq!(channel.stats().dropped, 0, "{policy:?}");
    }
}

/// Issue 19's first suspected bug: a listener moved back (a client resuming from an
/// older id) must count in the Reject check at once, or a later broadcast overflows it
/// and is skipped for it, counted as dropped: not "refused for everyone".
#[test]
fn reject_sees_a_listener_that_was_moved_back() {
    let channel = Channel::builder()
        .capacity(4, OverflowPolicy::Reject)
        .replay(64)
        .build(MessageAdapter)
        .unwrap();
    let listener = channel.add_listener().unwrap();
    listener.start();
    for n in 0..4 {
        channel.broadcast(numbered(n)).unwrap();
    }
    for _ in 0..4 {
        channel.deliver_next(listener.id()).unwrap();
    }
    // These two scan the listeners once, and the channel remembers that none is behind.
    channel.broadcast(numbered(4)).unwrap();
    channel.broadcast(numbered(5)).unwrap();
    // The client had received up to 1: broadcasts 2..=5 are unread again.
    channel.rewind(listener.id(), 2).unwrap();
    assert_eq!(channel.queue_stats(listener.id()).unwrap().len, 4);
    let err = channel.broadcast(numbered(6)).unwrap_err();
    assert!(matches!(err, Error::BroadcastRejected { .. }), "{err}");
    let read: Vec<u64> = std::iter::from_fn(|| channel.deliver_next(listener.id()).ok())
        .map(|msg| msg.payload().as_u64().unwrap())
        .collect();
    assert_eq!(read, [2, 3, 4, 5]);
    assert_eq!(channel.stats().dropped, 0);
}

//! Bounded queues: each overflow policy does what it says, and counts it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use eric_core::{Channel, Error, Message, MessageAdapter, OverflowPolicy};
use futures_util::StreamExt;
use support::numbered;

fn bounded(capacity: usize, policy: OverflowPolicy) -> Channel {
    Channel::builder()
        .capacity(capacity)
        .overflow(policy)
        .build(MessageAdapter)
        .unwrap()
}

#[test]
fn reject_refuses_the_message_with_a_typed_error_and_counts_it() {
    let channel = bounded(2, OverflowPolicy::Reject);
    let slow = channel.add_listener().unwrap();
    let fast = channel.add_listener().unwrap();
    channel.broadcast(numbered(0)).unwrap();
    channel.broadcast(numbered(1)).unwrap();
    fast.start();
    channel.deliver_next(fast.id()).unwrap();

    // slow is full, fast has room: fast takes it, slow refuses it.
    let err = channel.broadcast(numbered(2)).unwrap_err();
    assert!(
        matches!(&err, Error::BroadcastRejected { rejected, delivered: 1, .. } if rejected == &[slow.id().to_owned()]),
        "{err}"
    );
    assert!(matches!(
        channel.dispatch(slow.id(), numbered(3)),
        Err(Error::QueueFull { capacity: 2, listener_id }) if listener_id == slow.id()
    ));

    assert_eq!(channel.stats().rejected, 2);
    assert_eq!(channel.queue_stats(slow.id()).unwrap().rejected, 2);
    slow.start();
    // What it had is intact and in order.
    assert_eq!(channel.deliver_next(slow.id()).unwrap().payload(), 0);
    assert_eq!(channel.deliver_next(slow.id()).unwrap().payload(), 1);
}

#[test]
fn drop_oldest_makes_room_and_counts_each_drop() {
    let channel = bounded(3, OverflowPolicy::DropOldest);
    let listener = channel.add_listener().unwrap();
    let mut dropped_reported = 0;
    for n in 0..10 {
        dropped_reported += channel.broadcast(numbered(n)).unwrap().dropped_oldest;
    }
    channel.dispatch(listener.id(), numbered(10)).unwrap();

    assert_eq!(dropped_reported, 7);
    assert_eq!(channel.stats().dropped, 8);
    let stats = channel.queue_stats(listener.id()).unwrap();
    assert_eq!((stats.len, stats.dropped), (3, 8));
    listener.start();
    let kept: Vec<_> = (0..3)
        .map(|_| {
            channel
                .deliver_next(listener.id())
                .unwrap()
                .payload()
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(kept, [8, 9, 10], "the newest survive, in order");
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

#[test]
fn closing_a_full_bounded_channel_still_ends_its_streams() {
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
    }
}

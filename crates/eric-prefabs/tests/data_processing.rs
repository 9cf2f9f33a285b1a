//! DataProcessingChannel: every queued message processed on the pool, results as they
//! complete, bounded in-flight work, and a panic is an error item, not a dead pool.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eric_core::Message;
use eric_prefabs::{DataProcessingChannel, Error};
use futures_util::StreamExt;

/// Dispatches messages of type `n` carrying each number of `numbers` to `listener`.
fn queue_numbers<A: eric_core::Adapter>(
    channel: &DataProcessingChannel<A>,
    listener: &str,
    numbers: std::ops::Range<u64>,
) {
    for n in numbers {
        channel
            .channel()
            .dispatch(listener, Message::new("n", n))
            .unwrap();
    }
}

#[tokio::test]
async fn every_queued_message_is_processed_once() {
    let channel = DataProcessingChannel::new(4).unwrap();
    let listener = channel.add_listener().unwrap();
    queue_numbers(&channel, listener.id(), 0..10_000);
    let mut seen: Vec<u64> = channel
        .process_queue(listener.id())
        .unwrap()
        .map(|r| {
            let processed = r.unwrap();
            assert_eq!(processed.event(), "n");
            processed.data().as_u64().unwrap()
        })
        .collect()
        .await;
    seen.sort_unstable();
    assert_eq!(seen, (0..10_000).collect::<Vec<_>>());
    // The queue is drained: a second pass finds nothing.
    assert_eq!(
        channel.process_queue(listener.id()).unwrap().count().await,
        0
    );
}

#[tokio::test]
async fn results_serialize_as_eric_sse_dicts() {
    let channel = DataProcessingChannel::new(1).unwrap();
    let listener = channel.add_listener().unwrap();
    channel
        .channel()
        .broadcast(Message::new("t", serde_json::json!({"k": 1})))
        .unwrap();
    let results: Vec<_> = channel
        .process_queue(listener.id())
        .unwrap()
        .collect()
        .await;
    let json = serde_json::to_value(results[0].as_ref().unwrap()).unwrap();
    assert_eq!(json, serde_json::json!({"event": "t", "data": {"k": 1}}));
}

#[tokio::test]
async fn a_panicking_callback_is_an_error_item_and_the_pool_goes_on() {
    let channel = DataProcessingChannel::with_adapter(2, |msg: &Message| {
        let n = msg.payload().as_u64().unwrap();
        assert!(n % 10 != 3, "refusing {n}");
        n
    })
    .unwrap();
    let listener = channel.add_listener().unwrap();
    queue_numbers(&channel, listener.id(), 0..100);
    let results: Vec<_> = channel
        .process_queue(listener.id())
        .unwrap()
        .collect()
        .await;
    let panics = results
        .iter()
        .filter(|r| matches!(r, Err(Error::CallbackPanicked { panic, .. }) if panic.starts_with("refusing")))
        .count();
    let oks = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!((panics, oks), (10, 90));

    // The pool still works afterwards.
    channel
        .channel()
        .dispatch(listener.id(), Message::new("n", 1u64))
        .unwrap();
    let again: Vec<_> = channel
        .process_queue(listener.id())
        .unwrap()
        .collect()
        .await;
    assert_eq!(again.len(), 1);
    assert_eq!(*again[0].as_ref().unwrap(), 1);
}

#[tokio::test]
async fn in_flight_work_stays_bounded_whatever_the_queue_length() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (Arc::clone(&running), Arc::clone(&peak));
    let channel = DataProcessingChannel::with_adapter(3, move |_msg: &Message| {
        let now = r.fetch_add(1, Ordering::SeqCst) + 1;
        p.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_micros(200));
        r.fetch_sub(1, Ordering::SeqCst);
    })
    .unwrap();
    let listener = channel.add_listener().unwrap();
    queue_numbers(&channel, listener.id(), 0..500);
    let mut stream = channel.process_queue(listener.id()).unwrap();
    let mut done = 0;
    while let Some(result) = stream.next().await {
        result.unwrap();
        done += 1;
        // Taken from the queue but not yet yielded: at most 2 x max_workers.
        let taken = 500 - channel.channel().queue_stats(listener.id()).unwrap().len;
        assert!(taken <= done + 6, "{taken} taken, {done} yielded");
    }
    assert_eq!(done, 500);
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        (1..=3).contains(&peak),
        "at most max_workers run at once, saw {peak}"
    );
}

#[tokio::test]
async fn results_arrive_as_they_complete_not_in_queue_order() {
    let channel = DataProcessingChannel::with_adapter(2, |msg: &Message| {
        let n = msg.payload().as_u64().unwrap();
        // The first is slow: the second finishes first.
        if n == 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        n
    })
    .unwrap();
    let listener = channel.add_listener().unwrap();
    channel
        .channel()
        .dispatch(listener.id(), Message::new("n", 0u64))
        .unwrap();
    channel
        .channel()
        .dispatch(listener.id(), Message::new("n", 1u64))
        .unwrap();
    let order: Vec<u64> = channel
        .process_queue(listener.id())
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(order, [1, 0]);
}

#[tokio::test]
async fn an_unknown_listener_is_a_typed_error() {
    let channel = DataProcessingChannel::new(1).unwrap();
    assert!(matches!(
        channel.process_queue("nobody"),
        Err(Error::Core(eric_core::Error::InvalidListener { .. }))
    ));
}

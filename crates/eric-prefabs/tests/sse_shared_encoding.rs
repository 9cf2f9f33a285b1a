//! A broadcast is encoded once, whatever the number of streams that deliver it; the
//! encoding is shared only where it says the same thing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use eric_core::Message;
use eric_prefabs::{SseChannel, SseEvent, SseStream};
use futures_util::{FutureExt, StreamExt};

fn next(stream: &mut SseStream) -> SseEvent {
    stream.next().now_or_never().flatten().unwrap().unwrap()
}

#[tokio::test]
async fn every_stream_of_a_broadcast_shares_one_encoding() {
    let channel = SseChannel::builder().retry_ms(2500).build().unwrap();
    let mut streams: Vec<_> = (0..3).map(|_| channel.subscribe(None).unwrap()).collect();
    channel
        .broadcast(Message::new("news", serde_json::json!({"n": 1})))
        .unwrap();
    let events: Vec<_> = streams.iter_mut().map(next).collect();
    let encoded: Vec<_> = events.iter().map(SseEvent::encoded_without_retry).collect();
    let id = events[0].id().unwrap();
    assert_eq!(
        std::str::from_utf8(encoded[0]).unwrap(),
        format!("event: news\nid: {id}\ndata: {{\"n\":1}}\n\n")
    );
    for bytes in &encoded[1..] {
        assert_eq!(bytes.as_ptr(), encoded[0].as_ptr(), "one copy for all");
    }
    // The full encoding still carries the channel's retry.
    assert_eq!(
        events[1].encode(),
        format!("event: news\nid: {id}\nretry: 2500\ndata: {{\"n\":1}}\n\n")
    );
}

#[tokio::test]
async fn one_message_broadcast_into_two_channels_gets_each_channels_ids() {
    let (a, b) = (SseChannel::new(), SseChannel::new());
    let (mut from_a, mut from_b) = (a.subscribe(None).unwrap(), b.subscribe(None).unwrap());
    // b is one broadcast ahead, so the two channels number the shared message apart.
    b.broadcast(Message::of_type("first")).unwrap();
    let _ = next(&mut from_b);
    let msg = Message::new("news", 1);
    a.broadcast(msg.clone()).unwrap();
    b.broadcast(msg).unwrap();
    let (in_a, in_b) = (next(&mut from_a), next(&mut from_b));
    assert_eq!(a.adapter().parse_event_id(in_a.id().unwrap()), Some(0));
    assert_eq!(b.adapter().parse_event_id(in_b.id().unwrap()), Some(1));
    assert!(in_b.encode().contains(in_b.id().unwrap()));
    assert!(!in_b.encode().contains(in_a.id().unwrap()));
}

#[tokio::test]
async fn changing_a_shared_event_changes_only_that_copy() {
    let channel = SseChannel::new();
    let (mut one, mut two) = (
        channel.subscribe(None).unwrap(),
        channel.subscribe(None).unwrap(),
    );
    channel.broadcast(Message::new("news", 1)).unwrap();
    let (first, second) = (next(&mut one), next(&mut two));
    let renamed = first.with_event("renamed").unwrap();
    assert!(
        renamed
            .encoded_without_retry()
            .starts_with(b"event: renamed\n")
    );
    assert!(second.encoded_without_retry().starts_with(b"event: news\n"));
}

#[test]
fn streams_read_on_other_threads_share_the_data_and_the_encoding_too() {
    let channel = SseChannel::new();
    let streams: Vec<_> = (0..4).map(|_| channel.subscribe(None).unwrap()).collect();
    channel
        .broadcast(Message::new("news", serde_json::json!({"n": 1})))
        .unwrap();
    // Each stream read on a thread of its own: each thread takes its own copy.
    let events: Vec<SseEvent> = streams
        .into_iter()
        .map(|mut stream| {
            std::thread::spawn(move || next(&mut stream))
                .join()
                .unwrap()
        })
        .collect();
    for event in &events[1..] {
        assert_eq!(event, &events[0]);
        assert_eq!(
            event.encoded_without_retry().as_ptr(),
            events[0].encoded_without_retry().as_ptr(),
            "one encoding for every thread"
        );
        assert_eq!(event.data().as_ptr(), events[0].data().as_ptr(), "one data");
    }
}

/// A stream is read at every event it delivers, and with many streams each read
/// starts out of cache: it fits in two cache lines (an allocation of 128 bytes), so
/// that a read touches two, not three.
#[cfg(target_pointer_width = "64")]
#[test]
fn a_stream_fits_in_two_cache_lines() {
    assert!(
        std::mem::size_of::<SseStream>() <= 128,
        "SseStream is {} bytes",
        std::mem::size_of::<SseStream>()
    );
}

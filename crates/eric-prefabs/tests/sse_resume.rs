//! Reconnecting clients: a recent Last-Event-ID gets exactly what was missed; an id the
//! channel cannot honour gets a reset event first, never a silent gap.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use eric_core::Message;
use eric_prefabs::{MESSAGE_TYPE_RESET, SseChannel, SseEvent, SseStream};
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;

/// Everything the stream has ready now, without waiting.
fn ready(stream: &mut SseStream) -> Vec<SseEvent> {
    std::iter::from_fn(|| stream.next().now_or_never().flatten())
        .map(|item| item.unwrap())
        .collect()
}

fn numbers(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.event() != Some(MESSAGE_TYPE_RESET))
        .map(|e| e.data().parse().unwrap())
        .collect()
}

fn reset_reason(event: &SseEvent) -> String {
    assert_eq!(event.event(), Some(MESSAGE_TYPE_RESET), "{event:?}");
    let data: Value = serde_json::from_str(event.data()).unwrap();
    data["reason"].as_str().unwrap().to_owned()
}

fn broadcast_numbers(channel: &SseChannel, range: std::ops::Range<u64>) {
    for n in range {
        channel.broadcast(Message::new("n", n)).unwrap();
    }
}

#[tokio::test]
async fn a_recent_id_replays_exactly_what_was_missed_in_order() {
    let channel = SseChannel::new();
    let mut first = channel.subscribe(None).unwrap();
    broadcast_numbers(&channel, 0..5);
    let seen = ready(&mut first);
    assert_eq!(numbers(&seen), [0, 1, 2, 3, 4]);
    // Ids increase per channel.
    let ids: Vec<_> = seen.iter().map(|e| e.id().unwrap().to_owned()).collect();
    let seqs: Vec<u64> = ids
        .iter()
        .map(|id| id.rsplit_once('-').unwrap().1.parse().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");

    // The connection broke after event 2; 5..8 were broadcast meanwhile.
    drop(first);
    broadcast_numbers(&channel, 5..8);
    let mut resumed = channel.subscribe(Some(&ids[2])).unwrap();
    assert!(!resumed.starts_with_reset());
    broadcast_numbers(&channel, 8..9);
    assert_eq!(numbers(&ready(&mut resumed)), [3, 4, 5, 6, 7, 8]);
}

#[tokio::test]
async fn the_newest_id_resumes_with_nothing_missed() {
    let channel = SseChannel::new();
    let mut stream = channel.subscribe(None).unwrap();
    broadcast_numbers(&channel, 0..3);
    let last = ready(&mut stream).pop().unwrap();
    let mut resumed = channel.subscribe(last.id()).unwrap();
    assert!(ready(&mut resumed).is_empty());
    broadcast_numbers(&channel, 3..4);
    assert_eq!(numbers(&ready(&mut resumed)), [3]);
}

#[tokio::test]
async fn a_too_old_id_gets_a_reset_then_everything_still_kept() {
    let channel = SseChannel::builder().replay(64).build().unwrap();
    let mut stream = channel.subscribe(None).unwrap();
    broadcast_numbers(&channel, 0..1);
    let first_id = ready(&mut stream).pop().unwrap().id().unwrap().to_owned();
    drop(stream);
    broadcast_numbers(&channel, 1..500);

    let mut resumed = channel.subscribe(Some(&first_id)).unwrap();
    let events = ready(&mut resumed);
    assert_eq!(reset_reason(&events[0]), "too_old");
    let data: Value = serde_json::from_str(events[0].data()).unwrap();
    assert_eq!(data["last_event_id"], first_id.as_str());
    // The reset carries no id: the client keeps its own until a replayed event
    // replaces it, so a reconnect now loses nothing either.
    assert_eq!(events[0].id(), None);
    // Then every broadcast still kept, from the oldest the reset names, in order.
    let oldest = channel.channel().replayable().start;
    assert!(oldest > 1 && oldest <= 500 - 64, "{oldest}");
    assert_eq!(
        data["oldest_kept"],
        channel.adapter().event_id(oldest).as_str()
    );
    assert_eq!(
        events[1].id(),
        Some(channel.adapter().event_id(oldest).as_str())
    );
    assert_eq!(numbers(&events), (oldest..500).collect::<Vec<_>>());
    broadcast_numbers(&channel, 500..501);
    assert_eq!(numbers(&ready(&mut resumed)), [500]);
}

#[tokio::test]
async fn bogus_ids_get_a_reset_naming_why_and_lose_nothing_kept() {
    let channel = SseChannel::builder().epoch("feed").build().unwrap();
    broadcast_numbers(&channel, 0..3);
    let cases = [
        ("not an id", "unparseable", vec![0, 1, 2]),
        ("feed-x", "unparseable", vec![0, 1, 2]),
        ("0123abcd-1", "other_epoch", vec![0, 1, 2]),
        ("42", "unparseable", vec![0, 1, 2]),
        // From the future: the client saw more than this channel has; the reset
        // carries the newest id, and live events follow.
        ("feed-99999", "ahead", vec![]),
        ("feed-3", "ahead", vec![]),
    ];
    for (id, reason, replayed) in cases {
        let mut stream = channel.subscribe(Some(id)).unwrap();
        let events = ready(&mut stream);
        assert_eq!(reset_reason(&events[0]), reason, "{id}");
        assert_eq!(numbers(&events), replayed, "{id}");
        let reset_id = if reason == "ahead" {
            Some("feed-2")
        } else {
            None
        };
        assert_eq!(events[0].id(), reset_id, "{id}");
    }
    // An empty id is no id: live, no reset.
    let mut stream = channel.subscribe(Some("")).unwrap();
    assert!(ready(&mut stream).is_empty());
    drop(stream);
    // And an id of this epoch that is kept resumes.
    let mut stream = channel.subscribe(Some("feed-0")).unwrap();
    assert_eq!(numbers(&ready(&mut stream)), [1, 2]);
    drop(stream);
    assert_eq!(
        channel.channel().listener_count(),
        0,
        "dropped streams unsubscribe"
    );
}

/// Found by hand: a channel removed and created again under its id gets a broadcast; a
/// client resumes with the old channel's last id. It must get that broadcast after the
/// reset, and the reset must not carry that broadcast's id.
#[tokio::test]
async fn a_client_of_a_channel_created_again_gets_what_the_new_one_holds() {
    let old = SseChannel::builder().id("room").build().unwrap();
    let mut stream = old.subscribe(None).unwrap();
    broadcast_numbers(&old, 0..2);
    let last = ready(&mut stream).pop().unwrap().id().unwrap().to_owned();
    old.close();
    drop(stream);

    let again = SseChannel::builder().id("room").build().unwrap();
    broadcast_numbers(&again, 2..3);
    let mut resumed = again.subscribe(Some(&last)).unwrap();
    let events = ready(&mut resumed);
    assert_eq!(reset_reason(&events[0]), "other_epoch");
    assert_eq!(events[0].id(), None);
    assert_eq!(numbers(&events), [2]);
    assert_eq!(events[1].id(), Some(again.adapter().event_id(0).as_str()));
}

/// The closed event takes a place in the log but is no broadcast: with an id, a client
/// would resume past the number the channel's next life gives to a real broadcast.
#[tokio::test]
async fn the_closed_event_carries_no_id() {
    let channel = SseChannel::builder().epoch("e1").build().unwrap();
    let mut stream = channel.subscribe(None).unwrap();
    broadcast_numbers(&channel, 0..1);
    channel.close();
    let events = ready(&mut stream);
    assert_eq!(events[0].id(), Some("e1-0"));
    assert_eq!(events[1].event(), Some(eric_core::MESSAGE_TYPE_CLOSED));
    assert_eq!(events[1].id(), None);

    // The channel's next life (restored with the same epoch, going on at 1) gives 1 to
    // its next broadcast, and a client that saw up to 0 gets it.
    let next = SseChannel::builder()
        .epoch("e1")
        .first_seq(1)
        .replay(16)
        .build()
        .unwrap();
    let mut resumed = next.subscribe(Some("e1-0")).unwrap();
    broadcast_numbers(&next, 1..2);
    let events = ready(&mut resumed);
    assert_eq!(numbers(&events), [1]);
    assert_eq!(events[0].id(), Some("e1-1"));
}

/// Ending streams (a server shutting down) spends no id and closes nothing.
#[tokio::test]
async fn ending_streams_sends_nothing_and_the_channel_goes_on() {
    let channel = SseChannel::builder().epoch("e2").build().unwrap();
    let mut stream = channel.subscribe(None).unwrap();
    broadcast_numbers(&channel, 0..1);
    channel.channel().end_streams();
    let events = ready(&mut stream);
    assert_eq!(numbers(&events), Vec::<u64>::new(), "{events:?}");
    assert!(stream.next().await.is_none(), "the stream ended");
    drop(stream);
    assert_eq!(channel.channel().listener_count(), 0);
    assert!(!channel.channel().is_closed());
    broadcast_numbers(&channel, 1..2);
    let mut resumed = channel.subscribe(Some("e2-0")).unwrap();
    assert_eq!(numbers(&ready(&mut resumed)), [1]);
}

#[tokio::test]
async fn an_existing_listener_resumes_too() {
    let channel = SseChannel::new();
    let listener = channel.add_listener().unwrap();
    broadcast_numbers(&channel, 0..4);
    let mut stream = channel
        .message_stream_resuming(listener.id(), None)
        .unwrap();
    let seen: Vec<_> = (0..4)
        .map(|_| stream.next().now_or_never().flatten().unwrap().unwrap())
        .collect();
    drop(stream);
    // The client received only up to event 1: events 2 and 3 come again.
    let mut again = channel
        .message_stream_resuming(listener.id(), seen[1].id())
        .unwrap();
    let replayed: Vec<_> = (0..2)
        .map(|_| again.next().now_or_never().flatten().unwrap().unwrap())
        .collect();
    assert_eq!(numbers(&replayed), [2, 3]);
}

#[tokio::test]
async fn the_stream_on_the_wire_parses_with_increasing_ids() {
    let channel = SseChannel::builder().retry_ms(2500).build().unwrap();
    let mut stream = channel.subscribe(None).unwrap();
    channel
        .broadcast(Message::new("chat", serde_json::json!({"text": "a\nb"})))
        .unwrap();
    channel.broadcast(Message::new("chat", "second")).unwrap();
    let wire: String = ready(&mut stream).iter().map(SseEvent::encode).collect();
    let parsed = support::parse(&wire);
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0].event, "chat");
    let payload: Value = serde_json::from_str(&parsed[0].data).unwrap();
    assert_eq!(payload["text"], "a\nb");
    assert_eq!(parsed[1].data, "\"second\"");
    assert_eq!(
        parsed[0].retry,
        Some(std::time::Duration::from_millis(2500))
    );
    assert!(parsed[0].id < parsed[1].id);
}

#[test]
fn eric_s_own_message_types_are_refused() {
    let channel = SseChannel::new();
    let listener = channel.add_listener().unwrap();
    for reserved in [
        eric_core::MESSAGE_TYPE_CLOSED,
        MESSAGE_TYPE_RESET,
        eric_core::MESSAGE_TYPE_INTERNAL_ERROR,
        "\u{0}closed",
    ] {
        assert!(
            matches!(
                channel.broadcast(Message::of_type(reserved)),
                Err(eric_prefabs::Error::ReservedMessageType { .. })
            ),
            "{reserved:?}"
        );
        assert!(
            channel
                .dispatch(listener.id(), Message::of_type(reserved))
                .is_err()
        );
    }
    // A producer's own end of stream is allowed.
    channel
        .dispatch(listener.id(), Message::end_of_stream())
        .unwrap();
}

#[test]
fn message_types_that_cannot_be_event_names_are_refused() {
    let channel = SseChannel::new();
    let listener = channel.add_listener().unwrap();
    for bad in ["two\nlines", "cr\r"] {
        assert!(matches!(
            channel.broadcast(Message::of_type(bad)),
            Err(eric_prefabs::Error::InvalidSseField { field: "event", .. })
        ));
        assert!(
            channel
                .dispatch(listener.id(), Message::of_type(bad))
                .is_err()
        );
    }
}

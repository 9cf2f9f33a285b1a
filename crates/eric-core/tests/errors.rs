//! Bad ids and duplicates give typed errors naming the offending id; nothing panics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use eric_core::{
    Channel, ChannelContainer, Error, ListenerState, Message, MessageAdapter, MessageQueueListener,
};

const BAD_IDS: &[&str] = &["", "nope", "*", "?", "[a-z]", "\u{0}", "line\nbreak", "🦀"];

#[test]
fn unknown_listener_ids_are_invalid_listener_errors() {
    let channel = Channel::default();
    for id in BAD_IDS {
        let is_invalid = |r: eric_core::Result<()>| matches!(r, Err(Error::InvalidListener { listener_id }) if listener_id == *id);
        assert!(is_invalid(channel.dispatch(id, Message::of_type("x"))));
        assert!(is_invalid(channel.deliver_next(id).map(drop)));
        assert!(is_invalid(channel.message_stream(id).map(drop)));
        assert!(is_invalid(channel.remove_listener(id).map(drop)));
        assert!(is_invalid(channel.listener(id).map(drop)));
        assert!(is_invalid(channel.queue_stats(id).map(drop)));
    }
}

#[test]
fn errors_name_the_offending_id() {
    let channel = Channel::default();
    let err = channel
        .dispatch("ghost-42", Message::of_type("x"))
        .unwrap_err();
    assert!(err.to_string().contains("ghost-42"), "{err}");
    let container: ChannelContainer = ChannelContainer::new();
    let err = container.get("missing-channel").unwrap_err();
    assert!(
        matches!(&err, Error::InvalidChannel { channel_id } if channel_id == "missing-channel")
    );
    assert!(err.to_string().contains("missing-channel"));
}

#[test]
fn unusable_ids_are_refused_up_front() {
    for id in ["", "a\nb", "tab\there", &"x".repeat(1025)] {
        assert!(
            matches!(ListenerState::with_id(id), Err(Error::InvalidId { .. })),
            "{id:?}"
        );
        assert!(matches!(
            MessageQueueListener::with_id(id),
            Err(Error::InvalidId { .. })
        ));
        assert!(matches!(
            Channel::builder().id(id).build(MessageAdapter),
            Err(Error::InvalidId { .. })
        ));
    }
    assert!(ListenerState::with_id("ünïcode-🦀:*?[]").is_ok());
}

#[test]
fn duplicate_listener_ids_are_refused() {
    let channel = Channel::default();
    let first = Arc::new(MessageQueueListener::with_id("same").unwrap());
    let second = Arc::new(MessageQueueListener::with_id("same").unwrap());
    channel.register_listener(first).unwrap();
    assert!(matches!(
        channel.register_listener(second),
        Err(Error::DuplicateListener { listener_id }) if listener_id == "same"
    ));
    assert_eq!(channel.listener_count(), 1);
}

#[test]
fn the_container_registers_gets_removes_and_lists() {
    let container = ChannelContainer::new();
    let channels: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|id| Channel::builder().id(*id).build(MessageAdapter).unwrap())
        .collect();
    container.register_all(channels.clone()).unwrap();
    let mut ids = container.ids();
    ids.sort();
    assert_eq!(ids, ["a", "b", "c"]);
    assert!(matches!(
        container.register(channels[0].clone()),
        Err(Error::DuplicateChannel { channel_id }) if channel_id == "a"
    ));
    let removed = container.remove("b").unwrap();
    assert!(
        removed.is_closed(),
        "removing a channel closes it so its streams end"
    );
    assert!(matches!(
        container.remove("b"),
        Err(Error::InvalidChannel { .. })
    ));
    assert_eq!(container.len(), 2);
}

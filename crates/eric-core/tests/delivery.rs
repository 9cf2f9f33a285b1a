//! Who gets what: dispatch reaches one listener, broadcast reaches all; payloads are
//! shared; the on_message hook runs on delivery.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use eric_core::{
    BoxError, Channel, Error, Listener, ListenerState, Message, MessageQueueListener,
    SignedMessage, UniqueMessage,
};
use serde_json::json;

#[test]
fn dispatch_reaches_only_its_listener() {
    let channel = Channel::default();
    let a = channel.add_listener().unwrap();
    let b = channel.add_listener().unwrap();
    a.start();
    b.start();

    channel
        .dispatch(a.id(), Message::new("private", "for a"))
        .unwrap();

    assert_eq!(channel.deliver_next(a.id()).unwrap().payload(), "for a");
    assert!(matches!(
        channel.deliver_next(b.id()),
        Err(Error::NoMessages { listener_id }) if listener_id == b.id()
    ));
}

#[test]
fn broadcast_reaches_every_listener_sharing_one_payload() {
    let channel = Channel::default();
    let listeners: Vec<_> = (0..5).map(|_| channel.add_listener().unwrap()).collect();
    let msg = Message::new("news", json!({"big": "payload"}));

    let report = channel.broadcast(msg.clone()).unwrap();
    assert_eq!(report.delivered, 5);

    for listener in &listeners {
        listener.start();
        let got = channel.deliver_next(listener.id()).unwrap();
        assert!(
            Message::ptr_eq(&got, &msg),
            "payload was copied, not shared"
        );
    }
}

#[test]
fn a_queue_is_fifo_across_dispatch_and_broadcast() {
    let channel = Channel::default();
    let listener = channel.add_listener().unwrap();
    listener.start();
    channel
        .dispatch(listener.id(), Message::of_type("1"))
        .unwrap();
    channel.broadcast(Message::of_type("2")).unwrap();
    channel
        .dispatch(listener.id(), Message::of_type("3"))
        .unwrap();

    let order: Vec<_> = (0..3)
        .map(|_| {
            channel
                .deliver_next(listener.id())
                .unwrap()
                .message_type()
                .to_owned()
        })
        .collect();
    assert_eq!(order, ["1", "2", "3"]);
}

#[test]
fn signed_and_unique_messages_keep_their_ids_through_a_queue() {
    let channel = Channel::default();
    let listener = channel.add_listener().unwrap();
    listener.start();
    let unique = UniqueMessage::new("sender-1", "job", json!([1, 2]));
    channel
        .dispatch(listener.id(), SignedMessage::new("sender-0", "hi", 0))
        .unwrap();
    channel.dispatch(listener.id(), unique.clone()).unwrap();

    let first = channel.deliver_next(listener.id()).unwrap();
    assert_eq!(first.sender_id(), Some("sender-0"));
    assert_eq!(first.id(), None);
    let signed = SignedMessage::try_from(first).unwrap();
    assert_eq!(signed.sender_id(), "sender-0");

    let second = UniqueMessage::try_from(channel.deliver_next(listener.id()).unwrap()).unwrap();
    assert_eq!(second.id(), unique.id());
    assert_eq!(second.sender_id(), "sender-1");
    assert!(UniqueMessage::try_from(Message::of_type("plain")).is_err());
}

struct Auditor {
    state: ListenerState,
    seen: AtomicUsize,
}

impl Listener for Auditor {
    fn state(&self) -> &ListenerState {
        &self.state
    }
    fn on_message(&self, msg: &Message) -> Result<(), BoxError> {
        if msg.message_type() == "forbidden" {
            return Err("forbidden messages are refused".into());
        }
        self.seen.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn on_message_runs_on_delivery_and_its_error_names_the_listener() {
    let channel = Channel::default();
    let auditor = Arc::new(Auditor {
        state: ListenerState::with_id("auditor").unwrap(),
        seen: AtomicUsize::new(0),
    });
    channel.register_listener(Arc::clone(&auditor)).unwrap();
    auditor.start();
    channel
        .dispatch("auditor", Message::of_type("fine"))
        .unwrap();
    channel
        .dispatch("auditor", Message::of_type("forbidden"))
        .unwrap();

    assert_eq!(
        auditor.seen.load(Ordering::SeqCst),
        0,
        "runs on delivery, not on enqueue"
    );
    channel.deliver_next("auditor").unwrap();
    assert_eq!(auditor.seen.load(Ordering::SeqCst), 1);
    let err = channel.deliver_next("auditor").unwrap_err();
    assert!(
        matches!(&err, Error::Listener { listener_id, message_type, .. }
            if listener_id == "auditor" && message_type == "forbidden"),
        "{err}"
    );
}

#[test]
fn closure_hooks_work_on_the_default_listener() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let listener = Arc::new(MessageQueueListener::new().with_hook(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }));
    let channel = Channel::default();
    channel.register_listener(Arc::clone(&listener)).unwrap();
    listener.start();
    channel.broadcast(Message::of_type("x")).unwrap();
    channel.deliver_next(listener.id()).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_stopped_listener_receives_nothing_until_started_again() {
    let channel = Channel::default();
    let listener = channel.add_listener().unwrap();
    channel.broadcast(Message::of_type("kept")).unwrap();

    assert!(matches!(
        channel.deliver_next(listener.id()),
        Err(Error::ListenerStopped { .. })
    ));
    listener.start();
    assert_eq!(
        channel.deliver_next(listener.id()).unwrap().message_type(),
        "kept"
    );
    listener.stop();
    channel.broadcast(Message::of_type("later")).unwrap();
    assert!(channel.deliver_next(listener.id()).is_err());
    listener.start();
    assert_eq!(
        channel.deliver_next(listener.id()).unwrap().message_type(),
        "later"
    );
}

#[test]
fn closure_adapters_shape_the_output() {
    let channel =
        Channel::new(|msg: &Message| format!("{}={}", msg.message_type(), msg.payload_json()));
    let listener = channel.add_listener().unwrap();
    channel.broadcast(Message::new("n", 42)).unwrap();
    channel.close();
    let mut stream = channel.message_stream(listener.id()).unwrap();
    let first = futures_util::FutureExt::now_or_never(futures_util::StreamExt::next(&mut stream));
    assert_eq!(first.flatten().unwrap().unwrap(), "n=42");
}

#[test]
fn dispatch_at_places_a_message_between_the_broadcasts_it_came_between() {
    let channel = Channel::builder()
        .first_seq(1)
        .build(eric_core::MessageAdapter)
        .unwrap();
    for n in 1..=3 {
        channel.broadcast(Message::new("b", n)).unwrap();
    }
    // A listener rebuilt elsewhere: it read broadcast 1; a dispatch came after
    // broadcast 2; one more after broadcast 3; and one stamped in the future.
    let listener = channel.add_listener().unwrap();
    listener.start();
    channel.rewind(listener.id(), 2).unwrap();
    channel
        .dispatch_at(listener.id(), 3, Message::new("d", "after 2"))
        .unwrap();
    channel
        .dispatch_at(listener.id(), 4, Message::new("d", "after 3"))
        .unwrap();
    channel
        .dispatch_at(listener.id(), 99, Message::new("d", "now"))
        .unwrap();

    let order: Vec<String> = std::iter::from_fn(|| channel.deliver_next(listener.id()).ok())
        .map(|m| m.payload().to_string())
        .collect();
    assert_eq!(order, ["2", "\"after 2\"", "3", "\"after 3\"", "\"now\""]);
}

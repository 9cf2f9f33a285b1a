//! Distributed application: actions by message type, replies signed back to the
//! sender, reserved start/stop, and unknown types as error items that do not stop the
//! listener.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eric_core::Message;
use eric_prefabs::{
    Error, SimpleDistributedApplicationChannel, SimpleDistributedApplicationListener,
};
use futures_util::StreamExt;

#[tokio::test]
async fn replies_go_back_to_the_sender_signed_by_the_replier() {
    let channel = SimpleDistributedApplicationChannel::new();
    let a = channel.add_listener().unwrap();
    let b = channel.add_listener().unwrap();
    b.set_action("double", |msg| {
        let n = msg.payload().as_u64().unwrap();
        vec![Message::new("doubled", n * 2)]
    })
    .unwrap();
    let got = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&got);
    let b_id = b.id().to_owned();
    a.set_action("doubled", move |msg| {
        assert_eq!(msg.sender_id(), Some(b_id.as_str()), "replies are signed");
        seen.store(msg.payload().as_u64().unwrap(), Ordering::SeqCst);
        vec![]
    })
    .unwrap();

    a.dispatch_to(b.id(), Message::new("double", 21)).unwrap();
    let mut b_stream = channel.sse().message_stream(b.id()).unwrap();
    b_stream.next().await.unwrap().unwrap();
    let mut a_stream = channel.sse().message_stream(a.id()).unwrap();
    let event = a_stream.next().await.unwrap().unwrap();
    assert_eq!(event.event(), Some("doubled"));
    assert_eq!(got.load(Ordering::SeqCst), 42);
}

#[tokio::test]
async fn an_unknown_type_is_an_error_item_and_the_listener_keeps_running() {
    let channel = SimpleDistributedApplicationChannel::new();
    let listener = channel.add_listener().unwrap();
    listener.set_action("known", |_| vec![]).unwrap();
    channel
        .sse()
        .dispatch(listener.id(), Message::of_type("mystery"))
        .unwrap();
    channel
        .sse()
        .dispatch(listener.id(), Message::of_type("known"))
        .unwrap();

    let mut stream = channel.sse().message_stream(listener.id()).unwrap();
    match stream.next().await.unwrap() {
        Err(eric_core::Error::Listener { source, .. }) => {
            let err = source.downcast_ref::<Error>().unwrap();
            assert!(
                matches!(err, Error::UnknownAction { message_type, .. } if message_type == "mystery"),
                "{err}"
            );
        }
        other => panic!("expected an UnknownAction item, got {other:?}"),
    }
    assert_eq!(stream.next().await.unwrap().unwrap().event(), Some("known"));
    assert!(eric_core::Listener::is_running(&*listener));
}

#[tokio::test]
async fn stop_is_reserved_and_stops_the_listener() {
    let channel = SimpleDistributedApplicationChannel::new();
    let listener = channel.add_listener().unwrap();
    assert!(listener.set_action("stop", |_| vec![]).is_err());
    assert!(listener.set_action("start", |_| vec![]).is_err());
    let mut stream = channel.sse().message_stream(listener.id()).unwrap();
    channel
        .sse()
        .dispatch(listener.id(), Message::of_type("stop"))
        .unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().event(), Some("stop"));
    assert!(
        stream.next().await.is_none(),
        "a stopped listener's stream ends"
    );
    assert!(!eric_core::Listener::is_running(&*listener));
}

#[test]
fn dispatching_before_joining_a_channel_is_a_typed_error() {
    let lonely = SimpleDistributedApplicationListener::new();
    assert!(matches!(
        lonely.dispatch_to("anyone", Message::of_type("hi")),
        Err(Error::NotRegistered { .. })
    ));
}

#[tokio::test]
async fn replying_to_an_unsigned_message_is_a_typed_error() {
    let channel = SimpleDistributedApplicationChannel::new();
    let listener = channel.add_listener().unwrap();
    listener
        .set_action("ask", |_| vec![Message::of_type("answer")])
        .unwrap();
    channel
        .sse()
        .dispatch(listener.id(), Message::of_type("ask"))
        .unwrap();
    let mut stream = channel.sse().message_stream(listener.id()).unwrap();
    let Some(Err(eric_core::Error::Listener { source, .. })) = stream.next().await else {
        panic!("expected an error item");
    };
    assert!(matches!(
        source.downcast_ref::<Error>(),
        Some(Error::Unsigned { .. })
    ));
}

#[tokio::test]
async fn closing_the_channel_is_not_an_unknown_action() {
    let channel = SimpleDistributedApplicationChannel::new();
    let listener = channel.add_listener().unwrap();
    let mut stream = channel.sse().message_stream(listener.id()).unwrap();
    channel.sse().close();
    let last = stream.next().await.unwrap().unwrap();
    assert_eq!(last.event(), Some(eric_core::MESSAGE_TYPE_CLOSED));
    assert!(stream.next().await.is_none());
}

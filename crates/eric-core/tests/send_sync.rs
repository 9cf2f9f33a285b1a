//! Every handle crosses threads and tasks: the compiler checks it here, and a channel
//! with a custom adapter is driven from a spawned task and an OS thread at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use eric_core::{
    BroadcastReport, Channel, ChannelContainer, ChannelStats, Connection, Error, InMemoryQueue,
    ListenerState, Message, MessageAdapter, MessageQueueListener, MessageStream, QueueEntry,
    SignedMessage, UniqueMessage,
};
use futures_util::StreamExt;

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}

#[test]
fn public_types_are_send_and_sync() {
    assert_send_sync::<Channel>();
    assert_send_sync::<Channel<fn(&Message) -> String>>();
    assert_send_sync::<ChannelContainer>();
    assert_send_sync::<Connection>();
    assert_send_sync::<Message>();
    assert_send_sync::<SignedMessage>();
    assert_send_sync::<UniqueMessage>();
    assert_send_sync::<QueueEntry>();
    assert_send_sync::<MessageQueueListener>();
    assert_send_sync::<ListenerState>();
    assert_send_sync::<InMemoryQueue>();
    assert_send_sync::<MessageStream<MessageAdapter>>();
    assert_send_sync::<BroadcastReport>();
    assert_send_sync::<ChannelStats>();
    assert_send_sync::<Error>();
    assert_send::<Arc<dyn eric_core::Listener>>();
    assert_send::<Arc<dyn eric_core::Queue>>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_is_shared_by_a_task_and_a_thread() {
    let channel = Channel::new(|msg: &Message| msg.payload_json().to_owned());
    let listener = channel.add_listener().unwrap();
    let mut stream = channel.message_stream(listener.id()).unwrap();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(item) = stream.next().await {
            got.push(item.unwrap());
        }
        got
    });
    let from_thread = {
        let channel = channel.clone();
        std::thread::spawn(move || channel.broadcast(Message::new("t", "thread")).unwrap())
    };
    from_thread.join().unwrap();
    channel.close();
    let got = reader.await.unwrap();
    assert_eq!(got, ["\"thread\"", "null"]);
}

//! One suite, every backend: the same cases run against [`MemoryChannels`],
//! [`StoredChannels`] (on in-memory storage and on Redis) and [`RedisCluster`], through
//! the [`SseChannels`] trait alone. Where a backend must differ, the case says so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use eric_core::{Message, OverflowPolicy};
use eric_persistence::{
    ChannelSettings, Error, EventStream, InMemoryStorage, MemoryChannels, SseChannelRepository,
    SseChannels, StoredChannels,
};
#[cfg(feature = "redis")]
use eric_persistence::{RedisCluster, RedisStorage};
use eric_prefabs::{MESSAGE_TYPE_RESET, SseEvent};
use futures_util::StreamExt;
use serde_json::{Value, json};
#[cfg(feature = "redis")]
use support::RedisServer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Memory,
    Stored,
    Cluster,
}

/// A backend under test, with the Redis it runs on (if any) kept alive.
struct Backend {
    kind: Kind,
    channels: Arc<dyn SseChannels>,
    #[cfg(feature = "redis")]
    _redis: Option<RedisServer>,
}

impl Backend {
    async fn memory() -> Self {
        Backend {
            kind: Kind::Memory,
            channels: Arc::new(MemoryChannels::new()),
            #[cfg(feature = "redis")]
            _redis: None,
        }
    }

    async fn stored_in_memory() -> Self {
        let repository = SseChannelRepository::new(InMemoryStorage::new());
        Backend {
            kind: Kind::Stored,
            channels: Arc::new(StoredChannels::load(repository).await.unwrap()),
            #[cfg(feature = "redis")]
            _redis: None,
        }
    }

    #[cfg(feature = "redis")]
    async fn stored_in_redis() -> Self {
        let redis = RedisServer::start();
        let storage = RedisStorage::connect(&redis.url()).await.unwrap();
        let repository = SseChannelRepository::new(storage);
        Backend {
            kind: Kind::Stored,
            channels: Arc::new(StoredChannels::load(repository).await.unwrap()),
            _redis: Some(redis),
        }
    }

    #[cfg(feature = "redis")]
    async fn cluster() -> Self {
        let redis = RedisServer::start();
        Backend {
            kind: Kind::Cluster,
            channels: Arc::new(RedisCluster::connect(&redis.url()).await.unwrap()),
            _redis: Some(redis),
        }
    }
}

/// The next event within 5 s (a cluster applies broadcasts from its reader).
async fn next(stream: &mut EventStream) -> Option<eric_persistence::Result<SseEvent>> {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("neither an event nor the end within 5 s")
}

async fn next_event(stream: &mut EventStream) -> SseEvent {
    next(stream).await.expect("the stream ended").unwrap()
}

fn number(event: &SseEvent) -> u64 {
    let data: Value = serde_json::from_str(event.data()).unwrap();
    data["n"].as_u64().unwrap_or_else(|| panic!("{event:?}"))
}

async fn broadcast_n(channels: &dyn SseChannels, channel: &str, n: u64) -> String {
    let message = Message::new("n", json!({ "n": n }));
    channels.broadcast(channel, message).await.unwrap().event_id
}

fn not_found<T>(result: eric_persistence::Result<T>) -> bool {
    matches!(result, Err(Error::ChannelNotFound { .. }))
}

fn no_listener<T>(result: eric_persistence::Result<T>) -> bool {
    matches!(
        result,
        Err(Error::Core(eric_core::Error::InvalidListener { .. }))
    )
}

async fn channels_are_created_listed_described_and_removed(backend: Backend) {
    let channels = &*backend.channels;
    let settings = ChannelSettings::with_id("news")
        .retry_ms(2500)
        .replay(128)
        .capacity(16, OverflowPolicy::DropOldest);
    assert_eq!(channels.create(settings.clone()).await.unwrap(), "news");
    assert!(matches!(
        channels.create(ChannelSettings::with_id("news")).await,
        Err(Error::Core(eric_core::Error::DuplicateChannel { .. }))
    ));
    let fresh = channels.create(ChannelSettings::default()).await.unwrap();
    assert_ne!(fresh, "news");
    let mut ids = channels.ids().await.unwrap();
    ids.sort();
    let mut expected = vec!["news".to_owned(), fresh.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(channels.len().await.unwrap(), 2);

    let info = channels.info("news").await.unwrap();
    assert_eq!(info.settings, settings, "the settings it was created with");
    assert_eq!(info.stats.listeners, 0);

    channels.remove(&fresh).await.unwrap();
    assert_eq!(channels.ids().await.unwrap(), ["news"]);
    assert!(not_found(channels.remove(&fresh).await));
    assert!(not_found(channels.info("nowhere").await));
    assert!(not_found(channels.add_listener("nowhere").await));
    assert!(not_found(
        channels.broadcast("nowhere", Message::of_type("x")).await
    ));
    assert!(not_found(channels.subscribe("nowhere", None).await));
}

async fn a_stored_listener_reads_broadcasts_and_dispatches_in_the_order_made(backend: Backend) {
    let channels = &*backend.channels;
    let channel = channels.create(ChannelSettings::default()).await.unwrap();
    let listener = channels.add_listener(&channel).await.unwrap();
    let first = channels
        .broadcast(&channel, Message::new("n", json!({"n": 0})))
        .await
        .unwrap();
    channels
        .dispatch(&channel, &listener, Message::new("dm", json!({"n": 1})))
        .await
        .unwrap();
    let second = channels
        .broadcast(&channel, Message::new("n", json!({"n": 2})))
        .await
        .unwrap();
    assert!(second.seq > first.seq);
    // Where a backend must differ: a cluster process knows only its own listeners.
    let expected = (backend.kind != Kind::Cluster).then_some(1);
    assert_eq!(first.listeners, expected);

    let mut stream = channels
        .message_stream(&channel, &listener, None)
        .await
        .unwrap();
    let events = [
        next_event(&mut stream).await,
        next_event(&mut stream).await,
        next_event(&mut stream).await,
    ];
    assert_eq!(events.each_ref().map(number), [0, 1, 2]);
    assert_eq!(events[0].id(), Some(first.event_id.as_str()));
    assert_eq!(events[1].id(), None, "a dispatch has no event id");
    assert_eq!(events[1].event(), Some("dm"));
    assert_eq!(events[2].id(), Some(second.event_id.as_str()));

    // A new stream of the listener resumes after the id its client saw last.
    drop(stream);
    let third = broadcast_n(channels, &channel, 3).await;
    let mut resumed = channels
        .message_stream(&channel, &listener, Some(&first.event_id))
        .await
        .unwrap();
    assert_eq!(number(&next_event(&mut resumed).await), 2);
    let event = next_event(&mut resumed).await;
    assert_eq!((number(&event), event.id()), (3, Some(third.as_str())));
}

async fn a_listener_added_with_an_id_is_served_under_it_and_the_id_is_taken(backend: Backend) {
    let channels = &*backend.channels;
    let channel = channels.create(ChannelSettings::default()).await.unwrap();
    channels
        .add_listener_with_id(&channel, "alice.7f3a")
        .await
        .unwrap();
    let again = channels.add_listener_with_id(&channel, "alice.7f3a").await;
    assert!(
        matches!(
            again,
            Err(Error::Core(eric_core::Error::DuplicateListener { .. }))
        ),
        "{again:?}"
    );
    let invalid = channels.add_listener_with_id(&channel, "a\nb").await;
    assert!(
        matches!(
            invalid,
            Err(Error::Core(eric_core::Error::InvalidId { .. }))
        ),
        "{invalid:?}"
    );
    channels
        .dispatch(&channel, "alice.7f3a", Message::new("dm", json!({"n": 7})))
        .await
        .unwrap();
    let mut stream = channels
        .message_stream(&channel, "alice.7f3a", None)
        .await
        .unwrap();
    assert_eq!(number(&next_event(&mut stream).await), 7);
    channels
        .remove_listener(&channel, "alice.7f3a")
        .await
        .unwrap();
    assert!(next(&mut stream).await.is_none());
}

async fn subscribers_get_live_broadcasts_and_resume_after_last_event_id(backend: Backend) {
    let channels = &*backend.channels;
    let channel = channels.create(ChannelSettings::default()).await.unwrap();
    let mut stream = channels.subscribe(&channel, None).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(broadcast_n(channels, &channel, n).await);
    }
    for n in 0..3 {
        let event = next_event(&mut stream).await;
        assert_eq!(
            (number(&event), event.id()),
            (n, Some(ids[n as usize].as_str()))
        );
    }
    drop(stream);
    for n in 3..5 {
        ids.push(broadcast_n(channels, &channel, n).await);
    }
    let mut resumed = channels.subscribe(&channel, Some(&ids[1])).await.unwrap();
    for n in 2..5 {
        assert_eq!(number(&next_event(&mut resumed).await), n);
    }

    // An id the channel cannot place: a reset without an id, then all it keeps.
    let mut reset = channels.subscribe(&channel, Some("bogus")).await.unwrap();
    let event = next_event(&mut reset).await;
    assert_eq!(event.event(), Some(MESSAGE_TYPE_RESET));
    assert_eq!(event.id(), None);
    for n in 0..5 {
        assert_eq!(number(&next_event(&mut reset).await), n);
    }
}

async fn removing_a_listener_ends_its_stream(backend: Backend) {
    let channels = &*backend.channels;
    let channel = channels.create(ChannelSettings::default()).await.unwrap();
    let listener = channels.add_listener(&channel).await.unwrap();
    let mut stream = channels
        .message_stream(&channel, &listener, None)
        .await
        .unwrap();
    channels.remove_listener(&channel, &listener).await.unwrap();
    assert!(next(&mut stream).await.is_none(), "its stream ends");
    assert!(no_listener(
        channels.remove_listener(&channel, &listener).await
    ));
    assert!(no_listener(
        channels
            .dispatch(&channel, &listener, Message::of_type("x"))
            .await
    ));
    assert!(no_listener(
        channels.message_stream(&channel, "nobody", None).await
    ));
}

async fn removing_a_channel_ends_its_streams_with_the_closed_event(backend: Backend) {
    let channels = &*backend.channels;
    let channel = channels.create(ChannelSettings::default()).await.unwrap();
    let mut stream = channels.subscribe(&channel, None).await.unwrap();
    broadcast_n(channels, &channel, 0).await;
    assert_eq!(number(&next_event(&mut stream).await), 0);
    channels.remove(&channel).await.unwrap();
    let closed = next_event(&mut stream).await;
    assert_eq!(closed.event(), Some(eric_core::MESSAGE_TYPE_CLOSED));
    assert_eq!(closed.id(), None, "the closed event spends no id");
    assert!(next(&mut stream).await.is_none());
}

async fn types_a_producer_may_not_send_are_refused_before_anything_is_kept(backend: Backend) {
    let channels = &*backend.channels;
    let channel = channels.create(ChannelSettings::default()).await.unwrap();
    let listener = channels.add_listener(&channel).await.unwrap();
    let mut stream = channels.subscribe(&channel, None).await.unwrap();
    for bad in [
        "two\nlines",
        "_eric_reset",
        "_eric_channel_closed",
        "\u{0}moved",
    ] {
        let refused = channels.broadcast(&channel, Message::of_type(bad)).await;
        assert!(
            matches!(refused, Err(Error::Prefab(_))),
            "{bad:?}: {refused:?}"
        );
        let refused = channels
            .dispatch(&channel, &listener, Message::of_type(bad))
            .await;
        assert!(
            matches!(refused, Err(Error::Prefab(_))),
            "{bad:?}: {refused:?}"
        );
    }
    broadcast_n(channels, &channel, 7).await;
    assert_eq!(
        number(&next_event(&mut stream).await),
        7,
        "nothing before it"
    );
}

async fn shutdown_ends_streams_without_an_event_and_channels_go_on(backend: Backend) {
    let channels = &*backend.channels;
    let channel = channels.create(ChannelSettings::default()).await.unwrap();
    let mut stream = channels.subscribe(&channel, None).await.unwrap();
    let first = broadcast_n(channels, &channel, 0).await;
    assert_eq!(number(&next_event(&mut stream).await), 0);
    channels.shutdown().await.unwrap();
    assert!(next(&mut stream).await.is_none(), "ended, with no event");
    drop(stream);
    broadcast_n(channels, &channel, 1).await;
    let mut resumed = channels.subscribe(&channel, Some(&first)).await.unwrap();
    assert_eq!(number(&next_event(&mut resumed).await), 1);
}

async fn a_subscriber_over_capacity_is_disconnected_with_an_error(backend: Backend) {
    let channels = &*backend.channels;
    let settings = ChannelSettings::default().capacity(4, OverflowPolicy::Disconnect);
    let channel = channels.create(settings).await.unwrap();
    let mut stream = channels.subscribe(&channel, None).await.unwrap();
    for n in 0..10 {
        broadcast_n(channels, &channel, n).await;
    }
    let mut read = 0;
    let error = loop {
        match next(&mut stream).await {
            Some(Ok(_)) => read += 1,
            Some(Err(err)) => break err,
            None => panic!("ended without saying why"),
        }
    };
    assert!(read <= 4, "read {read} of a capacity of 4");
    assert!(
        matches!(
            error,
            Error::Core(eric_core::Error::ListenerDisconnected { .. })
        ),
        "{error}"
    );
    assert!(next(&mut stream).await.is_none());
}

async fn reject_refuses_a_broadcast_for_everyone_except_in_a_cluster(backend: Backend) {
    let channels = &*backend.channels;
    let settings = ChannelSettings::default().capacity(2, OverflowPolicy::Reject);
    let channel = channels.create(settings).await.unwrap();
    let listener = channels.add_listener(&channel).await.unwrap();
    broadcast_n(channels, &channel, 0).await;
    broadcast_n(channels, &channel, 1).await;
    let third = channels
        .broadcast(&channel, Message::new("n", json!({"n": 2})))
        .await;
    if backend.kind == Kind::Cluster {
        // Redis acknowledged it before any process could refuse: in a cluster, Reject
        // acts as Disconnect (RedisCluster's docs say why).
        assert!(third.is_ok(), "{third:?}");
        return;
    }
    assert!(
        matches!(
            third,
            Err(Error::Core(eric_core::Error::BroadcastRejected { .. }))
        ),
        "{third:?}"
    );
    let mut stream = channels
        .message_stream(&channel, &listener, None)
        .await
        .unwrap();
    assert_eq!(number(&next_event(&mut stream).await), 0);
    assert_eq!(number(&next_event(&mut stream).await), 1);
    broadcast_n(channels, &channel, 3).await;
    assert_eq!(
        number(&next_event(&mut stream).await),
        3,
        "the refused one never comes"
    );
}

/// Runs each case against each backend, as a test of its own.
macro_rules! every_backend {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Backend::memory().await).await }) *
        }
        mod stored_in_memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Backend::stored_in_memory().await).await }) *
        }
        #[cfg(feature = "redis")]
        mod stored_in_redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Backend::stored_in_redis().await).await }) *
        }
        #[cfg(feature = "redis")]
        mod cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Backend::cluster().await).await }) *
        }
    };
}

every_backend!(
    channels_are_created_listed_described_and_removed,
    a_stored_listener_reads_broadcasts_and_dispatches_in_the_order_made,
    a_listener_added_with_an_id_is_served_under_it_and_the_id_is_taken,
    subscribers_get_live_broadcasts_and_resume_after_last_event_id,
    removing_a_listener_ends_its_stream,
    removing_a_channel_ends_its_streams_with_the_closed_event,
    types_a_producer_may_not_send_are_refused_before_anything_is_kept,
    shutdown_ends_streams_without_an_event_and_channels_go_on,
    a_subscriber_over_capacity_is_disconnected_with_an_error,
    reject_refuses_a_broadcast_for_everyone_except_in_a_cluster,
);

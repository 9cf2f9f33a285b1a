//! Stored channels survive a restart, ids cannot reach each other's keys, and a Redis
//! that dies mid-broadcast gives errors, not hangs, and is used again once it is back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use eric_core::Message;
use eric_persistence::{
    ChannelSettings, Error, InMemoryStorage, KvStorage, PersistentSseChannel, RedisStorage,
    SseChannelRepository,
};
use futures_util::{FutureExt, StreamExt};
use serde_json::json;
use support::RedisServer;

/// Every event the stream has ready now, as (type, data).
fn ready(stream: &mut eric_persistence::PersistentStream) -> Vec<(String, String)> {
    std::iter::from_fn(|| stream.next().now_or_never().flatten())
        .map(|e| {
            let e = e.unwrap();
            (
                e.event().unwrap_or("message").to_owned(),
                e.data().to_owned(),
            )
        })
        .collect()
}

async fn find(channels: &[PersistentSseChannel], id: &str) -> PersistentSseChannel {
    channels.iter().find(|c| c.id() == id).cloned().unwrap()
}

async fn restart_keeps_everything(
    storage: Arc<dyn KvStorage>,
    fresh: impl AsyncFn() -> Arc<dyn KvStorage>,
) {
    let (reader, idle, old_epoch);
    {
        let repository = SseChannelRepository::from_arc(Arc::clone(&storage));
        let news = repository
            .create(ChannelSettings::with_id("news"))
            .await
            .unwrap();
        let _other = repository
            .create(ChannelSettings::with_id("other"))
            .await
            .unwrap();
        old_epoch = news.record().epoch.clone();
        reader = news.add_listener().await.unwrap();
        idle = news.add_listener().await.unwrap();
        for n in 0..3 {
            news.broadcast(Message::new("b", n)).await.unwrap();
        }
        news.dispatch(&reader, Message::new("d", "to reader"))
            .await
            .unwrap();
        news.broadcast(Message::new("b", 3)).await.unwrap();
        news.dispatch(&idle, Message::new("d", "to idle"))
            .await
            .unwrap();

        // reader reads the first two broadcasts before the "crash".
        let mut stream = news.message_stream(&reader).unwrap();
        for _ in 0..2 {
            stream.next().await.unwrap().unwrap();
        }
        news.flush().await.unwrap();
        // Everything in memory goes: channels, streams, repository.
    }
    drop(storage);

    let repository = SseChannelRepository::from_arc(fresh().await);
    let channels = repository.load_all().await.unwrap();
    let mut ids: Vec<_> = channels.iter().map(|c| c.id().to_owned()).collect();
    ids.sort();
    assert_eq!(ids, ["news", "other"]);
    let news = find(&channels, "news").await;
    assert_eq!(
        news.record().epoch,
        old_epoch,
        "event ids go on in the same epoch"
    );

    let mut stream = news.message_stream(&reader).unwrap();
    assert_eq!(
        ready(&mut stream),
        [
            ("b".into(), "2".into()),
            ("d".into(), "\"to reader\"".into()),
            ("b".into(), "3".into()),
        ],
        "reader resumes after what it read, in the order sent"
    );
    let mut stream = news.message_stream(&idle).unwrap();
    let idle_got: Vec<_> = ready(&mut stream).into_iter().map(|(_, d)| d).collect();
    assert_eq!(idle_got, ["0", "1", "2", "3", "\"to idle\""]);

    // New broadcasts carry on the sequence.
    let report = news.broadcast(Message::new("b", 4)).await.unwrap();
    assert_eq!(report.seq, 4);
}

#[tokio::test]
async fn a_restart_on_redis_keeps_channels_listeners_and_unread_messages() {
    let server = RedisServer::start();
    let url = server.url();
    let storage: Arc<dyn KvStorage> = Arc::new(RedisStorage::connect(&url).await.unwrap());
    restart_keeps_everything(storage, async || {
        Arc::new(RedisStorage::connect(&url).await.unwrap()) as Arc<dyn KvStorage>
    })
    .await;
}

#[tokio::test]
async fn a_restart_on_the_in_memory_storage_keeps_them_too() {
    let storage: Arc<dyn KvStorage> = Arc::new(InMemoryStorage::new());
    let same = Arc::clone(&storage);
    restart_keeps_everything(storage, async || Arc::clone(&same)).await;
}

#[tokio::test]
async fn read_messages_and_trimmed_log_entries_leave_the_storage() {
    let server = RedisServer::start();
    let storage: Arc<dyn KvStorage> = Arc::new(RedisStorage::connect(&server.url()).await.unwrap());
    let repository = SseChannelRepository::from_arc(Arc::clone(&storage));
    let settings: ChannelSettings =
        serde_json::from_value(json!({"id": "c", "replay": 0})).unwrap();
    let channel = repository.create(settings).await.unwrap();
    let listener = channel.add_listener().await.unwrap();
    for n in 0..200 {
        channel.broadcast(Message::new("b", n)).await.unwrap();
        channel
            .dispatch(&listener, Message::new("d", n))
            .await
            .unwrap();
    }
    let prefix = storage.keys().prefix().to_owned();
    assert!(storage.fetch_by_prefix(&prefix).await.unwrap().len() > 400);
    let mut stream = channel.message_stream(&listener).unwrap();
    assert_eq!(ready(&mut stream).len(), 400);
    channel.flush().await.unwrap();
    let left = storage.fetch_by_prefix(&prefix).await.unwrap();
    let left: Vec<_> = left.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        left,
        ["eric:channel:c", &format!("eric:listener:c:{listener}")]
    );
}

const ADVERSARIAL: &[&str] = &[
    "*",
    "?",
    "[",
    "[a-z]",
    ":",
    "a:b",
    "\\",
    "%2A",
    "🦀 ünï",
    "x",
];

#[tokio::test]
async fn adversarial_ids_cannot_touch_other_keys() {
    let server = RedisServer::start();
    let storage: Arc<dyn KvStorage> = Arc::new(RedisStorage::connect(&server.url()).await.unwrap());
    let repository = SseChannelRepository::from_arc(Arc::clone(&storage));
    let long = "L".repeat(1024);
    let mut ids: Vec<&str> = ADVERSARIAL.to_vec();
    ids.push(&long);
    for id in &ids {
        let channel = repository
            .create(ChannelSettings::with_id(*id))
            .await
            .unwrap();
        let listener = channel.add_listener().await.unwrap();
        channel.broadcast(Message::new("owner", *id)).await.unwrap();
        channel
            .dispatch(&listener, Message::new("owner", *id))
            .await
            .unwrap();
    }
    // Deleting the channel "*" (and ":" and "[") removes exactly its own keys.
    for doomed in ["*", ":", "["] {
        repository.delete(doomed).await.unwrap();
    }
    let survivors = repository.load_all().await.unwrap();
    let mut left: Vec<String> = survivors.iter().map(|c| c.id().to_owned()).collect();
    left.sort();
    let mut expected: Vec<String> = ids
        .iter()
        .filter(|id| !["*", ":", "["].contains(id))
        .map(|id| (*id).to_owned())
        .collect();
    expected.sort();
    assert_eq!(left, expected);
    // Each survivor still has exactly its own broadcast and dispatch.
    for channel in &survivors {
        let listener = channel.sse().channel().get_connections()[0].id().to_owned();
        let mut stream = channel.message_stream(&listener).unwrap();
        let got = ready(&mut stream);
        let own = serde_json::to_string(channel.id()).unwrap();
        assert_eq!(
            got,
            [("owner".to_owned(), own.clone()), ("owner".to_owned(), own)],
            "{}",
            channel.id()
        );
    }
}

#[tokio::test]
async fn a_redis_killed_during_broadcasts_gives_errors_and_is_used_again_when_back() {
    let mut server = RedisServer::start();
    let storage: Arc<dyn KvStorage> = Arc::new(RedisStorage::connect(&server.url()).await.unwrap());
    let repository = SseChannelRepository::from_arc(Arc::clone(&storage));
    let channel = repository
        .create(ChannelSettings::with_id("live"))
        .await
        .unwrap();
    let listener = channel.add_listener().await.unwrap();
    let mut stream = channel.message_stream(&listener).unwrap();

    let producer = {
        let channel = channel.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (Vec::new(), 0);
            for n in 0..400u64 {
                // Never a hang: each call returns within the client's timeouts.
                let outcome = tokio::time::timeout(
                    Duration::from_secs(10),
                    channel.broadcast(Message::new("n", n)),
                )
                .await
                .expect("a broadcast hung while Redis was down");
                match outcome {
                    Ok(_) => ok.push(n),
                    Err(Error::Storage { operation, .. }) => {
                        assert_eq!(operation, "upsert_many");
                        failed += 1;
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    let (ok, failed) = producer.await.unwrap();
    assert!(failed > 0, "the kill must have been noticed");

    // Every acknowledged broadcast was delivered, in order; no refused one was.
    let delivered: Vec<u64> = std::iter::from_fn(|| stream.next().now_or_never().flatten())
        .map(|e| e.unwrap().data().parse().unwrap())
        .collect();
    assert_eq!(delivered, ok);

    // The same handles work again, without restarting anything.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match channel.broadcast(Message::new("n", "after")).await {
            Ok(_) => break,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("Redis is back but the channel still fails: {err}"),
        }
    }
    assert!(storage.fetch_one(&storage.keys().key(&["x"])).await.is_ok());
}

#[tokio::test]
async fn records_from_a_newer_eric_or_not_from_eric_are_typed_errors() {
    let storage = Arc::new(InMemoryStorage::new());
    let repository = SseChannelRepository::from_arc(storage.clone());
    repository
        .create(ChannelSettings::with_id("fine"))
        .await
        .unwrap();
    let key = storage.keys().key(&["channel", "future"]);
    storage
        .upsert(&key, &json!({"v": 99, "id": "future"}))
        .await
        .unwrap();
    assert!(matches!(
        repository.load("future").await,
        Err(Error::Version { found: 99, .. })
    ));
    storage
        .upsert(&key, &json!({"v": 1, "id": 7}))
        .await
        .unwrap();
    assert!(matches!(
        repository.load("future").await,
        Err(Error::Corrupt { .. })
    ));
    storage.upsert(&key, &json!("not a record")).await.unwrap();
    assert!(matches!(
        repository.load("future").await,
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        repository.load("absent").await,
        Err(Error::ChannelNotFound { .. })
    ));
    assert!(repository.load("fine").await.is_ok());
    assert!(matches!(
        repository.create(ChannelSettings::with_id("fine")).await,
        Err(Error::Core(eric_core::Error::DuplicateChannel { .. }))
    ));
}

#[tokio::test]
async fn refusals_inside_a_batch_leave_no_gap_in_what_is_stored() {
    let server = RedisServer::start();
    let storage: Arc<dyn KvStorage> = Arc::new(RedisStorage::connect(&server.url()).await.unwrap());
    let repository = SseChannelRepository::from_arc(Arc::clone(&storage));
    let settings: ChannelSettings =
        serde_json::from_value(json!({"id": "mixed", "capacity": 5, "overflow": "reject"}))
            .unwrap();
    let channel = repository.create(settings).await.unwrap();
    let listener = channel.add_listener().await.unwrap();

    // 30 writes at once: they share batches. Some types are invalid, and dispatches
    // beyond the listener's capacity of 5 are refused.
    let writes = (0..30u64).map(|n| {
        let channel = channel.clone();
        let listener = listener.clone();
        async move {
            match n % 3 {
                0 => channel.broadcast(Message::new("ok", n)).await.map(|_| n),
                1 => channel
                    .broadcast(Message::new("bad\ntype", n))
                    .await
                    .map(|_| n),
                _ => channel
                    .dispatch(&listener, Message::new("d", n))
                    .await
                    .map(|_| n),
            }
        }
    });
    let outcomes = futures_util::future::join_all(writes).await;
    let accepted: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().copied())
        .collect();
    // Refusals of each kind happened, in the middle of batches.
    let refused =
        |f: fn(&Error) -> bool| outcomes.iter().filter(|o| o.as_ref().is_err_and(f)).count();
    assert_eq!(
        refused(|e| matches!(
            e,
            Error::Prefab(eric_prefabs::Error::InvalidSseField { .. })
        )),
        10
    );
    assert!(refused(|e| matches!(e, Error::Core(eric_core::Error::QueueFull { .. }))) > 0);
    assert!(refused(|e| matches!(e, Error::Core(eric_core::Error::BroadcastRejected { .. }))) > 0);

    // The stored state reloads (a gap would be a Corrupt error) with exactly what was
    // accepted.
    drop(channel);
    let reloaded = repository.load("mixed").await.unwrap();
    let mut stream = reloaded.message_stream(&listener).unwrap();
    let mut got: Vec<u64> = ready(&mut stream)
        .iter()
        .map(|(_, d)| d.parse().unwrap())
        .collect();
    got.sort_unstable();
    let mut expected = accepted.clone();
    expected.sort_unstable();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_with_several_batches_in_flight_leave_no_gap_either() {
    let server = RedisServer::start();
    let storage: Arc<dyn KvStorage> = Arc::new(RedisStorage::connect(&server.url()).await.unwrap());
    let repository = SseChannelRepository::from_arc(Arc::clone(&storage));
    let settings: ChannelSettings =
        serde_json::from_value(json!({"id": "busy", "capacity": 40, "overflow": "reject"}))
            .unwrap();
    let channel = repository.create(settings).await.unwrap();
    let listener = channel.add_listener().await.unwrap();

    // 16 producers writing one after another keep the writer's batches overlapping;
    // invalid types and a full listener refuse writes in the middle of them.
    let producers: Vec<_> = (0..16u64)
        .map(|p| {
            let channel = channel.clone();
            let listener = listener.clone();
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                for i in 0..60u64 {
                    let n = p * 1000 + i;
                    let outcome = match i % 4 {
                        0 => channel.broadcast(Message::new("b", n)).await.map(|_| ()),
                        1 => channel
                            .broadcast(Message::new("bad\rtype", n))
                            .await
                            .map(|_| ()),
                        _ => channel.dispatch(&listener, Message::new("d", n)).await,
                    };
                    if outcome.is_ok() {
                        accepted.push(n);
                    }
                }
                accepted
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for producer in producers {
        accepted.extend(producer.await.unwrap());
    }
    assert!(!accepted.is_empty() && accepted.len() < 16 * 60);

    // The reload (a gap would be a Corrupt error) has exactly the accepted messages.
    drop(channel);
    let reloaded = repository.load("busy").await.unwrap();
    let stored: Vec<(String, String)> = ready(&mut reloaded.message_stream(&listener).unwrap());
    let mut got: Vec<u64> = stored.iter().map(|(_, d)| d.parse().unwrap()).collect();
    got.sort_unstable();
    accepted.sort_unstable();
    assert_eq!(got, accepted);
}

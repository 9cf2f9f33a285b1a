//! The KvStorage contract, held by both implementations: the in-memory one and Redis
//! (a real redis-server of the test's own).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use eric_persistence::{InMemoryStorage, KvStorage};
#[cfg(feature = "redis")]
use eric_persistence::{Keys, RedisStorage};
use serde_json::json;
#[cfg(feature = "redis")]
use support::RedisServer;

async fn contract(storage: &dyn KvStorage) {
    let keys = storage.keys().clone();
    let a1 = keys.key(&["things", "a", "1"]);
    let a2 = keys.key(&["things", "a", "2"]);
    let b1 = keys.key(&["things", "b", "1"]);
    assert_eq!(storage.fetch_one(&a1).await.unwrap(), None);
    storage.upsert(&a1, &json!({"n": 1})).await.unwrap();
    storage
        .upsert_many(&[(a2.clone(), json!({"n": 2})), (b1.clone(), json!("b"))])
        .await
        .unwrap();
    storage.upsert(&a1, &json!({"n": 11})).await.unwrap();
    assert_eq!(
        storage.fetch_one(&a1).await.unwrap(),
        Some(json!({"n": 11}))
    );

    let under_a = storage
        .fetch_by_prefix(&keys.prefix_of(&["things", "a"]))
        .await
        .unwrap();
    assert_eq!(
        under_a,
        vec![
            (a1.clone(), json!({"n": 11})),
            (a2.clone(), json!({"n": 2}))
        ]
    );
    assert_eq!(storage.fetch_all().await.unwrap().len(), 3);

    storage.delete(&a1).await.unwrap();
    storage.delete(&a1).await.unwrap(); // absent: nothing
    storage.delete_many(&[a2, b1]).await.unwrap();
    assert!(storage.fetch_all().await.unwrap().is_empty());
}

#[tokio::test]
async fn in_memory_storage_keeps_the_contract() {
    contract(&InMemoryStorage::new()).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_storage_keeps_the_contract() {
    let server = RedisServer::start();
    contract(&RedisStorage::connect(&server.url()).await.unwrap()).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_prefix_with_glob_characters_matches_only_itself() {
    let server = RedisServer::start();
    let storage = RedisStorage::connect_with_keys(&server.url(), Keys::new("t*[x]:"))
        .await
        .unwrap();
    let other = RedisStorage::connect_with_keys(&server.url(), Keys::new("tz[x]:"))
        .await
        .unwrap();
    other.upsert("tz[x]:k", &json!(1)).await.unwrap();
    storage.upsert("t*[x]:k", &json!(2)).await.unwrap();
    assert_eq!(
        storage.fetch_all().await.unwrap(),
        vec![("t*[x]:k".to_owned(), json!(2))]
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn thousands_of_keys_come_back_through_scan_and_mget() {
    let server = RedisServer::start();
    let storage = RedisStorage::connect(&server.url()).await.unwrap();
    let entries: Vec<_> = (0..5_000)
        .map(|n| (storage.keys().key(&["many", &format!("{n:05}")]), json!(n)))
        .collect();
    storage.upsert_many(&entries).await.unwrap();
    let back = storage
        .fetch_by_prefix(&storage.keys().prefix_of(&["many"]))
        .await
        .unwrap();
    assert_eq!(back, entries, "all of them, in key order");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn an_unreachable_redis_is_a_typed_error_naming_the_operation() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.kill();
    let err = RedisStorage::connect(&url).await.unwrap_err();
    assert!(
        matches!(
            err,
            eric_persistence::Error::Storage {
                operation: "connect to",
                ..
            }
        ),
        "{err}"
    );
}

//! Cluster mode's Redis connections: a constant few per process per node, whatever the
//! number of channels, and nothing lost when the connection that carries the
//! notifications drops.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use eric_core::Message;
use eric_persistence::{ChannelSettings, EventStream, RedisCluster, SseChannels};
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{RedisClusterNodes, RedisServer};

/// At most this many Redis connections per process per node (the bound; the
/// design holds two: commands and notifications).
const PER_PROCESS_PER_NODE: usize = 4;

/// The number each event of `stream` carries, in order, until `count` have come.
async fn numbers(stream: &mut EventStream, count: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {seen:?} within 10 s"))
            .expect("the stream ended")
            .unwrap();
        let data: Value = serde_json::from_str(event.data()).unwrap();
        seen.push(data["n"].as_u64().unwrap_or_else(|| panic!("{event:?}")));
    }
    seen
}

async fn broadcast(cluster: &RedisCluster, channel: &str, n: u64) {
    cluster
        .broadcast(channel, Message::new("n", json!({ "n": n })))
        .await
        .unwrap();
}

/// Runs `command` on the node at `url`, on a connection of its own.
async fn on_node<T: redis::FromRedisValue>(url: &str, command: &redis::Cmd) -> T {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    command.query_async(&mut connection).await.unwrap()
}

/// The clients connected to the node at `url`, but for the one asking.
async fn clients(url: &str) -> usize {
    let list: String = on_node(url, redis::cmd("CLIENT").arg("LIST")).await;
    list.lines().count() - 1
}

/// Two processes on `urls` (each node's URL in `nodes`) serving `count` channels, with
/// a stream of each on both: every broadcast reaches every stream, and each process
/// holds at most [`PER_PROCESS_PER_NODE`] connections to each node.
async fn many_channels_few_connections(urls: &str, nodes: &[String], count: usize) {
    let a = RedisCluster::connect(urls).await.unwrap();
    let b = RedisCluster::connect(urls).await.unwrap();
    let mut streams = Vec::new();
    for i in 0..count {
        let id = a
            .create(ChannelSettings::with_id(format!("room-{i}")))
            .await
            .unwrap();
        streams.push((
            id.clone(),
            a.subscribe(&id, None).await.unwrap(),
            b.subscribe(&id, None).await.unwrap(),
        ));
    }
    for (n, (id, _, _)) in streams.iter().enumerate() {
        broadcast(if n % 2 == 0 { &a } else { &b }, id, n as u64).await;
    }
    for (n, (_, on_a, on_b)) in streams.iter_mut().enumerate() {
        assert_eq!(numbers(on_a, 1).await, [n as u64]);
        assert_eq!(numbers(on_b, 1).await, [n as u64]);
    }
    assert_eq!((a.served_here(), b.served_here()), (count, count));
    for node in nodes {
        let connected = clients(node).await;
        assert!(
            connected <= 2 * PER_PROCESS_PER_NODE,
            "{connected} clients on {node} for two processes serving {count} channels"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_redis_connections_do_not_grow_with_channels() {
    let redis = RedisServer::start();
    many_channels_few_connections(&redis.url(), &[redis.url()], 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_connections_do_not_grow_with_channels() {
    let cluster = match RedisClusterNodes::start() {
        Ok(cluster) => cluster,
        Err(reason) if std::env::var_os("ERIC_REQUIRE_REDIS_CLUSTER").is_none() => {
            eprintln!("SKIPPED: no Redis Cluster could be started here: {reason}");
            return;
        }
        Err(reason) => panic!("a Redis Cluster could not be started: {reason}"),
    };
    many_channels_few_connections(&cluster.urls(), &cluster.node_urls(), 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_made_while_the_notifications_connection_was_down_still_arrive_in_order() {
    let redis = RedisServer::start();
    let a = RedisCluster::connect(&redis.url()).await.unwrap();
    let b = RedisCluster::connect(&redis.url()).await.unwrap();
    let id = a.create(ChannelSettings::with_id("news")).await.unwrap();
    let mut stream = b.subscribe(&id, None).await.unwrap();
    for n in 1..=3 {
        broadcast(&a, &id, n).await;
    }
    assert_eq!(numbers(&mut stream, 3).await, [1, 2, 3]);

    // B's subscriber connection goes (A serves no channel: it subscribes to none); the
    // broadcasts go on meanwhile.
    let killed: u64 = on_node(
        &redis.url(),
        redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"),
    )
    .await;
    assert_eq!(killed, 1, "B's one subscriber connection");
    for n in 4..=50 {
        broadcast(&a, &id, n).await;
    }
    assert_eq!(numbers(&mut stream, 47).await, (4..=50).collect::<Vec<_>>());
    // And the notifications flow again.
    broadcast(&a, &id, 51).await;
    assert_eq!(numbers(&mut stream, 1).await, [51]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_without_listeners_is_let_go_of_and_unsubscribed_then_served_again() {
    let redis = RedisServer::start();
    let a = RedisCluster::connect(&redis.url()).await.unwrap();
    let id = a.create(ChannelSettings::with_id("news")).await.unwrap();
    let stream = a.subscribe(&id, None).await.unwrap();
    let subscribers = || async {
        let reply: (String, u64) = on_node(
            &redis.url(),
            redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("eric:cluster:{news}:events"),
        )
        .await;
        reply.1
    };
    assert_eq!(a.served_here(), 1);
    assert_eq!(subscribers().await, 1);
    drop(stream);

    let deadline = Instant::now() + Duration::from_secs(30);
    while a.served_here() > 0 {
        assert!(
            Instant::now() < deadline,
            "still served 30 s after its last listener left"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(subscribers().await, 0, "let go of, it is unsubscribed from");

    let mut stream = a.subscribe(&id, None).await.unwrap();
    broadcast(&a, &id, 1).await;
    assert_eq!(numbers(&mut stream, 1).await, [1]);
    assert_eq!(subscribers().await, 1);
}

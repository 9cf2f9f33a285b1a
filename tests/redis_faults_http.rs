//! `eric serve --redis` (persistence, and cluster mode) while Redis dies and comes
//! back: broadcasts keep coming over HTTP, streams stay open. Every broadcast answered
//! 200 reaches every stream, in order; every one refused during the outage (503)
//! reaches nobody; nothing hangs; once Redis is back, broadcasts are acknowledged again
//! without restarting eric.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/eric_serve.rs"]
mod eric_serve;
#[path = "../crates/eric-persistence/tests/support/mod.rs"]
mod redis_support;
#[path = "support/sse_client.rs"]
mod sse_client;

use std::time::{Duration, Instant};

use eric::http::{HttpConfig, HttpServer};
use eric::persistence::{RedisStorage, SseChannelRepository};
use eric_serve::EricServe;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use redis_support::RedisServer;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const READERS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_acknowledged_around_a_redis_outage_all_arrive_and_refused_ones_never_do() {
    let mut redis = RedisServer::start();
    let storage = RedisStorage::connect(&redis.url()).await.unwrap();
    let server = HttpServer::bind_with_repository(
        "127.0.0.1:0",
        HttpConfig::default(),
        SseChannelRepository::new(storage),
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    create_news(&base).await;
    let mut readers = Vec::new();
    for _ in 0..READERS {
        readers.push(read_until_the_end(&base).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Persistence keeps the channel in memory: Redis comes back empty, eric goes on.
    broadcast_through_an_outage("persistence", &mut redis, &[&base], readers).await;
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_mode_both_processes_ride_out_a_redis_restart() {
    // Cluster mode keeps channels in Redis: it comes back with what it acknowledged.
    let mut redis = RedisServer::start_persistent();
    let args = ["--cluster", "--redis", &redis.url(), "--keep-alive", "1"];
    let (a, b) = (EricServe::start(&args), EricServe::start(&args));
    create_news(&a.base).await;
    let mut readers = Vec::new();
    for n in 0..READERS {
        let base = if n % 2 == 0 { &a.base } else { &b.base };
        readers.push(read_until_the_end(base).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    broadcast_through_an_outage(
        "cluster mode, 2 processes",
        &mut redis,
        &[&a.base, &b.base],
        readers,
    )
    .await;
}

async fn create_news(base: &str) {
    assert_eq!(
        sse_client::create(&reqwest::Client::new(), base, "news").await,
        201
    );
}

/// Streams `news` at `base` until the end marker: the broadcasts it got.
async fn read_until_the_end(base: &str) -> JoinHandle<Vec<u64>> {
    // Without the request timeout the broadcasts have.
    let response = reqwest::Client::new()
        .get(format!("{base}/channels/news/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    tokio::spawn(async move {
        let mut events = response.bytes_stream().eventsource();
        let mut got = Vec::new();
        while let Ok(Some(Ok(event))) =
            tokio::time::timeout(Duration::from_secs(60), events.next()).await
        {
            if event.event == "n" {
                let n: u64 = event.data.parse().unwrap();
                if n == u64::MAX {
                    break;
                }
                got.push(n);
            }
        }
        got
    })
}

/// 400 broadcasts, round robin over `bases`; Redis is killed before the 150th and
/// restarted before the 160th. Every reader must get exactly the acknowledged ones.
async fn broadcast_through_an_outage(
    mode: &str,
    redis: &mut RedisServer,
    bases: &[&str],
    readers: Vec<JoinHandle<Vec<u64>>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (mut acknowledged, mut refused) = (Vec::new(), Vec::new());
    let mut slowest_refusal = Duration::ZERO;
    let mut outage: Option<(Instant, Instant)> = None;
    let mut first_ack_after: Option<Duration> = None;
    for n in 0..400u64 {
        if n == 150 {
            redis.kill();
            outage = Some((Instant::now(), Instant::now()));
        }
        if n == 160 {
            redis.restart();
            if let Some((down, _)) = outage {
                outage = Some((down, Instant::now()));
            }
        }
        let sent = Instant::now();
        let base = bases[n as usize % bases.len()];
        let response = http
            .post(format!("{base}/broadcast?channel_id=news"))
            .json(&json!({"type": "n", "payload": n}))
            .send()
            .await
            .expect("a broadcast hung or the server went away");
        match response.status().as_u16() {
            200 => {
                acknowledged.push(n);
                if let (Some((_, up)), None) = (outage, first_ack_after)
                    && n >= 160
                {
                    first_ack_after = Some(sent.saturating_duration_since(up));
                }
            }
            503 => {
                slowest_refusal = slowest_refusal.max(sent.elapsed());
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"], "RepositoryError", "{body}");
                refused.push(n);
            }
            other => panic!("broadcast {n}: unexpected status {other}"),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let end = http
        .post(format!("{}/broadcast?channel_id=news", bases[0]))
        .json(&json!({"type": "n", "payload": u64::MAX}))
        .send()
        .await
        .unwrap();
    assert_eq!(end.status(), 200);

    assert!(
        !refused.is_empty(),
        "Redis was down for 10 broadcasts and none was refused"
    );
    assert!(
        acknowledged.iter().any(|&n| n >= 160),
        "nothing was acknowledged after Redis came back"
    );
    for reader in readers {
        assert_eq!(
            reader.await.unwrap(),
            acknowledged,
            "a stream did not get exactly the acknowledged broadcasts, in order"
        );
    }
    let (down, up) = outage.unwrap();
    eprintln!(
        "{mode}: Redis down {:.2?}: {} of 400 broadcasts refused (503, the slowest in {:.2?}), {} acknowledged and delivered to all {READERS} streams; first acknowledged {:.2?} after the restart",
        up - down,
        refused.len(),
        slowest_refusal,
        acknowledged.len(),
        first_ack_after.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_mode_a_redis_back_without_its_data_ends_the_streams_of_its_channels() {
    // No persistence: the restarted Redis has lost the channel.
    let mut redis = RedisServer::start();
    let args = ["--cluster", "--redis", &redis.url(), "--keep-alive", "1"];
    let (a, b) = (EricServe::start(&args), EricServe::start(&args));
    create_news(&a.base).await;
    let readers = [
        read_until_the_end(&a.base).await,
        read_until_the_end(&b.base).await,
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.restart();
    for reader in readers {
        let ended = tokio::time::timeout(Duration::from_secs(20), reader).await;
        assert!(
            ended.is_ok(),
            "a stream of a channel Redis no longer has stayed open"
        );
    }
    // Clients that reconnect learn it is gone (after 503s while eric's own connection
    // to Redis comes back, which is what a client retries on).
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = http
            .get(format!("{}/channels/news/events", b.base))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            404 => break,
            503 if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("reconnecting to a lost channel answered {other}"),
        }
    }
}

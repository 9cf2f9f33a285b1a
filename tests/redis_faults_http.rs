//! `eric serve --redis` while Redis dies and comes back: broadcasts keep coming over
//! HTTP, streams stay open. Every broadcast answered 200 reaches every stream, in order;
//! every one refused during the outage (503) reaches nobody; nothing hangs; once Redis
//! is back, broadcasts are acknowledged again without restarting eric.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../crates/eric-persistence/tests/support/mod.rs"]
mod redis_support;

use std::time::{Duration, Instant};

use eric::http::{HttpConfig, HttpServer};
use eric::persistence::{RedisStorage, SseChannelRepository};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};

const READERS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_acknowledged_around_a_redis_outage_all_arrive_and_refused_ones_never_do() {
    let mut redis = redis_support::RedisServer::start();
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
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let created: Value = http
        .put(format!("{base}/create?channel_id=news"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["channel_id"], "news");

    // Streams without the request timeout the broadcasts have.
    let streaming = reqwest::Client::new();
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let response = streaming
            .get(format!("{base}/channels/news/events"))
            .send()
            .await
            .unwrap();
        readers.push(tokio::spawn(async move {
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
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

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
        let response = http
            .post(format!("{base}/broadcast?channel_id=news"))
            .json(&json!({"type": "n", "payload": n}))
            .send()
            .await
            .expect("a broadcast hung or the server went away");
        match response.status().as_u16() {
            200 => {
                acknowledged.push(n);
                if let (Some((_, up)), None) = (outage, first_ack_after) {
                    if n >= 160 {
                        first_ack_after = Some(sent.saturating_duration_since(up));
                    }
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
        .post(format!("{base}/broadcast?channel_id=news"))
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
        "Redis down {:.2?}: {} of 400 broadcasts refused (503, the slowest in {:.2?}), {} acknowledged and delivered to all {READERS} streams; first acknowledged {:.2?} after the restart",
        up - down,
        refused.len(),
        slowest_refusal,
        acknowledged.len(),
        first_ack_after.unwrap_or_default()
    );
    let _ = stop.send(());
}

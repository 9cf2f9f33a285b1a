//! A restart under load loses nothing and brings no storm (issue 22): 1,000 streams on
//! `eric serve --redis`; SIGTERM; a new process on the same port and the same Redis.
//! Every client, which reconnects as `EventSource` does (after the `retry` it was sent,
//! with `Last-Event-ID`), gets every broadcast once and in order, those made while it
//! was away included; the reconnects spread over the retry window instead of arriving
//! at once. The spread is printed (docs/BENCHMARKS.md has a run's).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/eric_serve.rs"]
mod eric_serve;
#[path = "../crates/eric-http/tests/support/mod.rs"]
mod http_support;
#[path = "../crates/eric-persistence/tests/support/mod.rs"]
mod redis_support;
#[path = "support/sse_client.rs"]
mod sse_client;

use std::sync::Arc;
use std::time::{Duration, Instant};

use eric_serve::EricServe;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::Mutex;

const CLIENTS: usize = 1_000;
const BEFORE: u64 = 3;
const AFTER: u64 = 3;

/// What one client saw: the broadcasts' numbers, and when it came back.
#[derive(Default)]
struct Client {
    numbers: Vec<u64>,
    reconnected_at: Vec<Instant>,
}

/// Follows `news` at `base` until it has `total` broadcasts, reconnecting as an
/// `EventSource` does: after the retry time last sent, with the last event id, again
/// and again while the server is away.
async fn follow(http: reqwest::Client, base: String, total: u64, seen: Arc<Mutex<Client>>) {
    let mut last_id: Option<String> = None;
    let mut retry = Duration::from_secs(3);
    let mut connected_before = false;
    loop {
        let mut request = http.get(format!("{base}/channels/news/events"));
        if let Some(id) = &last_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = match request.send().await {
            Ok(response) if response.status() == 200 => response,
            _ => {
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        if connected_before {
            seen.lock().await.reconnected_at.push(Instant::now());
        }
        connected_before = true;
        let mut events = response.bytes_stream().eventsource();
        while let Some(Ok(event)) = events.next().await {
            if let Some(r) = event.retry {
                retry = r;
            }
            if event.event != "news" {
                continue;
            }
            last_id = Some(event.id.clone());
            let data: Value = serde_json::from_str(&event.data).unwrap();
            let mut seen = seen.lock().await;
            seen.numbers.push(data["n"].as_u64().unwrap());
            if seen.numbers.len() as u64 == total {
                return;
            }
        }
        tokio::time::sleep(retry).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streams_resume_after_a_restart_losing_nothing_and_spread_out() {
    // Two sockets per stream in this process and the servers' (which inherit it).
    rlimit::increase_nofile_limit(8_192).unwrap();
    let redis = redis_support::RedisServer::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut first = EricServe::start_at(&addr, &["--redis", &redis.url()]);
    let base = first.base.clone();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    assert_eq!(sse_client::create(&http, &base, "news").await, 201);

    let clients: Vec<Arc<Mutex<Client>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let followers: Vec<_> = clients
        .iter()
        .map(|seen| {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            tokio::spawn(follow(
                client,
                base.clone(),
                BEFORE + AFTER,
                Arc::clone(seen),
            ))
        })
        .collect();
    // Every stream open (one listener each).
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_support::metric_at(&http, &base, "eric_open_streams").await < CLIENTS as u64 {
        assert!(Instant::now() < deadline, "the streams did not all open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in 0..BEFORE {
        sse_client::publish_to(&http, &base, "news", n).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for seen in &clients {
        while (seen.lock().await.numbers.len() as u64) < BEFORE {
            assert!(
                Instant::now() < deadline,
                "the broadcasts before the restart did not all arrive"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let (exited, took) = tokio::task::block_in_place(|| first.terminate());
    assert!(exited, "eric serve did not exit with success");
    let restarted_at = Instant::now();
    let second = EricServe::start_at(&addr, &["--redis", &redis.url()]);
    // Broadcasts made at once, before most clients are back: they must replay them.
    for n in BEFORE..BEFORE + AFTER {
        sse_client::publish_to(&http, &second.base, "news", n).await;
    }
    for follower in followers {
        tokio::time::timeout(Duration::from_secs(60), follower)
            .await
            .expect("a client did not get every broadcast within 60 s")
            .unwrap();
    }

    let mut back = Vec::with_capacity(CLIENTS);
    for seen in &clients {
        let seen = seen.lock().await;
        assert_eq!(
            seen.numbers,
            (0..BEFORE + AFTER).collect::<Vec<_>>(),
            "once each, in order"
        );
        let first_back = *seen.reconnected_at.first().expect("every client came back");
        back.push(
            first_back
                .saturating_duration_since(restarted_at)
                .as_secs_f64(),
        );
    }
    back.sort_by(f64::total_cmp);
    let at = |q: f64| back[((back.len() - 1) as f64 * q) as usize];
    let per_second: Vec<usize> = (0..6)
        .map(|s| {
            back.iter()
                .filter(|&&t| t >= s as f64 && t < (s + 1) as f64)
                .count()
        })
        .collect();
    eprintln!(
        "shutdown took {took:?}; reconnects after the restart: first {:.2} s, p10 {:.2} s, p50 {:.2} s, p90 {:.2} s, last {:.2} s; per second from the restart: {per_second:?}",
        at(0.0),
        at(0.1),
        at(0.5),
        at(0.9),
        at(1.0),
    );
    // Spread over the retry window ([1.5, 4.5] s for the default 3 s), not at once: no
    // second of it takes more than half of the clients.
    assert!(
        at(0.9) - at(0.1) > 1.0,
        "reconnects bunched: p10 {} s, p90 {} s",
        at(0.1),
        at(0.9)
    );
    assert!(
        per_second.iter().all(|&n| n <= CLIENTS / 2),
        "{per_second:?}"
    );
}

//! Cluster mode: deliveries/s with 1, 2 and 3 `eric serve --cluster` processes on one
//! Redis, and publish -> receive latency on the publishing process and across
//! processes; next to one in-memory `eric serve` (no Redis) driven the same way in the
//! same run. Starts its own redis-server and servers on loopback ports.
//!
//! `cargo bench --bench cluster [-- quick]`
//!
//! All of it shares this machine's cores: with 2 cores, more processes add no
//! capacity; what the figures show is what the Redis hop and each extra process cost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/support/eric_serve.rs"]
mod eric_serve;
#[path = "../crates/eric-persistence/tests/support/mod.rs"]
mod redis_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eric_serve::EricServe;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// `eric serve` unbounded (a reader of this benchmark is never cut off), in cluster
/// mode on `redis_url` when given, in memory otherwise.
fn start_eric(redis_url: Option<&str>) -> EricServe {
    match redis_url {
        Some(url) => EricServe::start(&["--capacity", "0", "--cluster", "--redis", url]),
        None => EricServe::start(&["--capacity", "0"]),
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

struct Outcome {
    deliveries_per_s: f64,
    lost: u64,
    out_of_order: u64,
    /// Latency in µs of events received on the publishing process, and on the others.
    same: Vec<u64>,
    across: Vec<u64>,
}

/// `streams` streams spread over `servers`; `broadcasts` published from process 0 by
/// `publishers` concurrent tasks, each event carrying its number and send time.
async fn run(
    servers: &[EricServe],
    streams: usize,
    broadcasts: u64,
    publishers: u64,
    pace: Option<Duration>,
) -> Outcome {
    let http = reqwest::Client::new();
    let channel = format!("bench-{}", now_us());
    let created = http
        .put(format!("{}/create?channel_id={channel}", servers[0].base))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for s in 0..streams {
        let server = s % servers.len();
        let response = reqwest::Client::new()
            .get(format!(
                "{}/channels/{channel}/events",
                servers[server].base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let received = Arc::clone(&received);
        readers.push(tokio::spawn(async move {
            let mut events = response.bytes_stream().eventsource();
            let (mut next, mut out_of_order, mut latencies) = (0u64, 0u64, Vec::new());
            while next < broadcasts {
                let Some(Ok(event)) = events.next().await else {
                    break;
                };
                if event.event != "n" {
                    continue;
                }
                let data: Value = serde_json::from_str(&event.data).unwrap();
                let n = data["n"].as_u64().unwrap();
                if n != next {
                    out_of_order += 1;
                }
                next = n + 1;
                latencies.push(now_us().saturating_sub(data["t"].as_u64().unwrap()));
                received.fetch_add(1, Ordering::Relaxed);
            }
            (server, out_of_order, latencies)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let (http, url) = (
                http.clone(),
                format!("{}/broadcast?channel_id={channel}", servers[0].base),
            );
            tokio::spawn(async move {
                let mut tick = pace.map(|every| tokio::time::interval(every * publishers as u32));
                // Broadcasts are numbered in publishing order: each task publishes the
                // numbers that are its turn, one at a time, after the previous is
                // acknowledged, so that order across tasks is the order of the numbers
                // only with one task; with several, out-of-order counts the overlap.
                for n in (p..broadcasts).step_by(publishers as usize) {
                    if let Some(tick) = &mut tick {
                        tick.tick().await;
                    }
                    let response = http
                        .post(&url)
                        .json(&json!({"type": "n", "payload": {"n": n, "t": now_us()}}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let (mut same, mut across, mut out_of_order) = (Vec::new(), Vec::new(), 0);
    for reader in readers {
        // A reader that never finishes counts as lost events, not as a failure here.
        if let Ok(Ok((server, ooo, latencies))) =
            tokio::time::timeout(Duration::from_secs(30), reader).await
        {
            out_of_order += ooo;
            if server == 0 {
                same.extend(latencies)
            } else {
                across.extend(latencies)
            }
        }
    }
    let elapsed = start.elapsed();
    let received = received.load(Ordering::Relaxed);
    same.sort_unstable();
    across.sort_unstable();
    Outcome {
        deliveries_per_s: received as f64 / elapsed.as_secs_f64(),
        lost: broadcasts * streams as u64 - received,
        out_of_order,
        same,
        across,
    }
}

fn pct(sorted: &[u64], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let at = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    format!("{:.1} ms", sorted[at] as f64 / 1000.0)
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = redis_support::RedisServer::start();
    let url = redis.url();
    let streams = 300;
    let broadcasts: u64 = if quick { 300 } else { 1_000 };
    println!(
        "# cluster mode: {streams} streams spread over the processes; one redis-server; 2 cores for all\n"
    );
    println!(
        "## saturated: {broadcasts} broadcasts published on process 1 by one publisher awaiting each, as fast as acknowledged\n"
    );
    println!(
        "| processes | deliveries/s | ratio to one in-memory process | lost | out of order | p50 same process | p99 same | p50 across processes | p99 across |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut reference = 0.0;
    let mut summary = String::new();
    for processes in [0usize, 1, 2, 3] {
        let servers: Vec<EricServe> = if processes == 0 {
            vec![start_eric(None)]
        } else {
            (0..processes).map(|_| start_eric(Some(&url))).collect()
        };
        let o = rt.block_on(run(&servers, streams, broadcasts, 1, None));
        if processes == 0 {
            reference = o.deliveries_per_s;
        }
        let label = if processes == 0 {
            "reference: 1, in memory (no Redis)".to_owned()
        } else {
            format!("{processes}, cluster mode")
        };
        println!(
            "| {label} | {:.0} | {:.2} | {} | {} | {} | {} | {} | {} |",
            o.deliveries_per_s,
            o.deliveries_per_s / reference,
            o.lost,
            o.out_of_order,
            pct(&o.same, 0.5),
            pct(&o.same, 0.99),
            pct(&o.across, 0.5),
            pct(&o.across, 0.99)
        );
        if processes == 3 {
            summary = format!(
                "summary: | cluster: 3 processes on one Redis, {streams} streams | {:.0} deliveries/s, p99 across processes {} | one in-memory process {reference:.0}/s | {:.2}x |",
                o.deliveries_per_s,
                pct(&o.across, 0.99),
                o.deliveries_per_s / reference
            );
        }
    }
    println!("\n## paced: 100 broadcasts/s (latency without queueing)\n");
    println!(
        "| processes | deliveries/s | lost | out of order | p50 same process | p99 same | p50 across processes | p99 across |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for processes in [1usize, 3] {
        let servers: Vec<EricServe> = (0..processes).map(|_| start_eric(Some(&url))).collect();
        let o = rt.block_on(run(
            &servers,
            streams,
            broadcasts / 2,
            1,
            Some(Duration::from_millis(10)),
        ));
        println!(
            "| {processes} | {:.0} | {} | {} | {} | {} | {} | {} |",
            o.deliveries_per_s,
            o.lost,
            o.out_of_order,
            pct(&o.same, 0.5),
            pct(&o.same, 0.99),
            pct(&o.across, 0.5),
            pct(&o.across, 0.99)
        );
    }
    println!("\n{summary}");
}

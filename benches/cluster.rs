//! Cluster mode: deliveries/s with 1, 2 and 3 `eric serve --cluster` processes on one
//! Redis and on a Redis Cluster of 3 masters, and publish -> receive latency on the
//! publishing process and across processes; dispatches to stored listeners made on one
//! process and streamed on another; each next to one in-memory `eric serve` (no Redis)
//! driven the same way in the same run. Starts its own redis-server(s) and servers on
//! loopback ports.
//!
//! And the many-channels run ([`many_channels`]): two processes serving 1 to 20,000
//! channels with one stream each, on one Redis and on the Redis Cluster: Redis
//! connections, memory per channel, latency, nothing lost.
//!
//! `cargo bench --bench cluster [-- quick] [many | fixed]` (`many`: that run alone;
//! `fixed`: all but that run)
//!
//! All of it shares this machine's cores: with 2 cores, more processes add no
//! capacity; what the figures show is what the Redis hop and each extra process cost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/support/eric_serve.rs"]
mod eric_serve;
#[path = "cluster/many_channels.rs"]
mod many_channels;
#[path = "../crates/eric-persistence/tests/support/mod.rs"]
mod redis_support;
#[path = "../tests/support/sse_client.rs"]
mod sse_client;

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

/// Posts event `n` of type `n` (its number and send time) to `url`; must be 200.
async fn post_numbered(http: &reqwest::Client, url: &str, n: u64) {
    let response = http
        .post(url)
        .json(&json!({"type": "n", "payload": {"n": n, "t": now_us()}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Reads the events of type `n` (payload `{n, t}`) of `response`, counting each in
/// `received`, until `done(n, events read)` or the stream ends: how many `in_order`
/// refused, and each event's latency in µs.
async fn read_numbered(
    response: reqwest::Response,
    received: &AtomicU64,
    mut in_order: impl FnMut(u64) -> bool,
    done: impl Fn(u64, u64) -> bool,
) -> (u64, Vec<u64>) {
    let mut events = response.bytes_stream().eventsource();
    let (mut got, mut out_of_order, mut latencies) = (0u64, 0u64, Vec::new());
    while let Some(Ok(event)) = events.next().await {
        if event.event != "n" {
            continue;
        }
        let data: Value = serde_json::from_str(&event.data).unwrap();
        let n = data["n"].as_u64().unwrap();
        if !in_order(n) {
            out_of_order += 1;
        }
        got += 1;
        latencies.push(now_us().saturating_sub(data["t"].as_u64().unwrap()));
        received.fetch_add(1, Ordering::Relaxed);
        if done(n, got) {
            break;
        }
    }
    (out_of_order, latencies)
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
    assert_eq!(
        sse_client::create(&http, &servers[0].base, &channel).await,
        201
    );
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
            let mut next = 0;
            let in_order = move |n| {
                let expected = n == next;
                next = n + 1;
                expected
            };
            let done = |n, _| n + 1 >= broadcasts;
            let (out_of_order, latencies) =
                read_numbered(response, &received, in_order, done).await;
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
                    post_numbered(&http, &url, n).await;
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

/// `listeners` stored listeners made on process 0 and streamed on the last process;
/// `dispatches` made on process 0 round robin over them by `publishers` concurrent
/// tasks, each awaiting its previous one (`listeners` a multiple of `publishers`).
async fn run_dispatch(
    servers: &[EricServe],
    listeners: usize,
    dispatches: u64,
    publishers: u64,
) -> Outcome {
    let http = reqwest::Client::new();
    let channel = format!("dispatch-{}", now_us());
    let (first, last) = (&servers[0].base, &servers[servers.len() - 1].base);
    assert_eq!(sse_client::create(&http, first, &channel).await, 201);
    let received = Arc::new(AtomicU64::new(0));
    let (mut ids, mut readers) = (Vec::new(), Vec::new());
    for l in 0..listeners {
        let id = sse_client::add_listener(&http, first, &channel).await;
        let response = reqwest::Client::new()
            .get(format!("{last}/stream/{channel}/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        ids.push(id);
        // Listener l gets the dispatches n with n % listeners == l, in increasing order.
        let expected = (l as u64..dispatches).step_by(listeners).count() as u64;
        let received = Arc::clone(&received);
        readers.push(tokio::spawn(async move {
            let mut previous: Option<u64> = None;
            let in_order = move |n| {
                let increasing = previous.is_none_or(|p| n > p);
                previous = Some(n);
                increasing
            };
            let done = |_, got| got >= expected;
            read_numbered(response, &received, in_order, done).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids = Arc::new(ids);
    let start = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let (http, ids, url) = (
                http.clone(),
                Arc::clone(&ids),
                format!("{first}/dispatch?channel_id={channel}"),
            );
            tokio::spawn(async move {
                // Each listener's dispatches come from one task (listeners is a multiple
                // of the publishers), so their order is the order of their numbers.
                for n in (p..dispatches).step_by(publishers as usize) {
                    let listener = &ids[n as usize % ids.len()];
                    post_numbered(&http, &format!("{url}&listener_id={listener}"), n).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let (mut latencies, mut out_of_order) = (Vec::new(), 0);
    for reader in readers {
        if let Ok(Ok((ooo, got))) = tokio::time::timeout(Duration::from_secs(30), reader).await {
            out_of_order += ooo;
            latencies.extend(got);
        }
    }
    let elapsed = start.elapsed();
    let received = received.load(Ordering::Relaxed);
    latencies.sort_unstable();
    let (same, across) = if servers.len() == 1 {
        (latencies, Vec::new())
    } else {
        (Vec::new(), latencies)
    };
    Outcome {
        deliveries_per_s: received as f64 / elapsed.as_secs_f64(),
        lost: dispatches - received,
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

/// The head of a broadcast table; `ratio`: with the column [`print_row`] fills when
/// given a reference.
fn print_head(ratio: bool) {
    let ratio_head = if ratio {
        " ratio to one in-memory process |"
    } else {
        ""
    };
    println!(
        "| processes | deliveries/s |{ratio_head} lost | out of order | p50 same process | p99 same | p50 across processes | p99 across |"
    );
    println!(
        "|---|---:|{}---:|---:|---:|---:|---:|---:|",
        if ratio { "---:|" } else { "" }
    );
}

/// A row of the broadcast tables; the ratio column where a reference was measured (the
/// saturated ones, not the paced one).
fn print_row(label: &str, o: &Outcome, reference: Option<f64>) {
    let ratio = reference
        .map(|r| format!(" {:.2} |", o.deliveries_per_s / r))
        .unwrap_or_default();
    println!(
        "| {label} | {:.0} |{ratio} {} | {} | {} | {} | {} | {} |",
        o.deliveries_per_s,
        o.lost,
        o.out_of_order,
        pct(&o.same, 0.5),
        pct(&o.same, 0.99),
        pct(&o.across, 0.5),
        pct(&o.across, 0.99)
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let only = |run: &str| std::env::args().any(|a| a == run);
    if !only("many") {
        fixed_channels(&rt, quick);
    }
    if !only("fixed") {
        many(&rt, quick);
    }
}

/// The many-channels run: 1 channel (the reference), then 1,000 to 20,000, on one
/// Redis and on a Redis Cluster of 3 masters.
fn many(rt: &tokio::runtime::Runtime, quick: bool) {
    // Whatever the run needs on the clients' side, and room for more: raise the soft
    // limit as far as the hard one allows (the servers, started after this, inherit it).
    if let Err(e) = rlimit::increase_nofile_limit(20_000) {
        println!("could not raise the file-descriptor limit: {e}");
    }
    let counts: &[usize] = if quick {
        &[1, 1_000]
    } else {
        &[1, 1_000, 10_000, 20_000]
    };
    let redis = redis_support::RedisServer::start();
    println!(
        "\n## many channels: two processes, one stream per channel (h2c), {} paced broadcasts ({} ms apart) made on process 1, then one to every channel by {} publishers\n",
        many_channels::PACED,
        many_channels::PACE.as_millis(),
        many_channels::BURST_PUBLISHERS
    );
    println!("One Redis:\n");
    many_channels::print_head();
    let mut outcomes = Vec::new();
    for &count in counts {
        let o = rt.block_on(many_channels::run(&redis.url(), &[redis.url()], count));
        many_channels::print_row(&o);
        outcomes.push(o);
    }
    match redis_support::RedisClusterNodes::start() {
        Err(reason) => println!("\nnot measured: the Redis Cluster did not start: {reason}"),
        Ok(nodes) => {
            println!("\nA Redis Cluster of 3 masters:\n");
            many_channels::print_head();
            for &count in counts {
                let o = rt.block_on(many_channels::run(&nodes.urls(), &nodes.node_urls(), count));
                many_channels::print_row(&o);
            }
        }
    }
    if let [one, .., most] = &outcomes[..] {
        println!("\n{}", many_channels::summary(one, most));
    }
}

/// The 300-stream runs: 1-3 processes, paced, on a Redis Cluster, dispatch.
fn fixed_channels(rt: &tokio::runtime::Runtime, quick: bool) {
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
    print_head(true);
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
        print_row(&label, &o, Some(reference));
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
    print_head(false);
    for processes in [1usize, 3] {
        let servers: Vec<EricServe> = (0..processes).map(|_| start_eric(Some(&url))).collect();
        let o = rt.block_on(run(
            &servers,
            streams,
            broadcasts / 2,
            1,
            Some(Duration::from_millis(10)),
        ));
        print_row(&processes.to_string(), &o, None);
    }

    println!(
        "\n## on a Redis Cluster of 3 masters (3 more redis-servers on the same 2 cores): {broadcasts} broadcasts as above\n"
    );
    let mut cluster_summary = None;
    match redis_support::RedisClusterNodes::start() {
        Err(reason) => println!("not measured: the Redis Cluster did not start: {reason}"),
        Ok(nodes) => {
            print_head(true);
            for processes in [1usize, 2, 3] {
                let servers: Vec<EricServe> = (0..processes)
                    .map(|_| start_eric(Some(&nodes.urls())))
                    .collect();
                let o = rt.block_on(run(&servers, streams, broadcasts, 1, None));
                print_row(&format!("{processes}, cluster mode"), &o, Some(reference));
                if processes == 3 {
                    cluster_summary = Some(format!(
                        "summary: | cluster: 3 processes on a 3-master Redis Cluster, {streams} streams | {:.0} deliveries/s | one in-memory process {reference:.0}/s | {:.2}x |",
                        o.deliveries_per_s,
                        o.deliveries_per_s / reference
                    ));
                }
            }
        }
    }

    let (listeners, dispatches) = (100, if quick { 1_000 } else { 4_000 });
    println!(
        "\n## dispatch: {listeners} stored listeners made on process 1, streamed on process 2; {dispatches} dispatches on process 1, round robin, by publishers awaiting each\n"
    );
    println!(
        "| setup | publishers | dispatches/s delivered | ratio | lost | out of order | p50 | p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut dispatch_summary = String::new();
    for publishers in [4, 20] {
        let in_memory = rt.block_on(run_dispatch(
            &[start_eric(None)],
            listeners,
            dispatches,
            publishers,
        ));
        let servers: Vec<EricServe> = (0..2).map(|_| start_eric(Some(&url))).collect();
        let across = rt.block_on(run_dispatch(&servers, listeners, dispatches, publishers));
        for (label, o, latencies) in [
            (
                "reference: 1 in-memory process (made and streamed there)",
                &in_memory,
                &in_memory.same,
            ),
            (
                "2 processes in cluster mode (made on 1, streamed on 2)",
                &across,
                &across.across,
            ),
        ] {
            println!(
                "| {label} | {publishers} | {:.0} | {:.2} | {} | {} | {} | {} |",
                o.deliveries_per_s,
                o.deliveries_per_s / in_memory.deliveries_per_s,
                o.lost,
                o.out_of_order,
                pct(latencies, 0.5),
                pct(latencies, 0.99)
            );
        }
        dispatch_summary = format!(
            "summary: | cluster: dispatch to stored listeners across 2 processes, {publishers} publishers | {:.0}/s, p99 {} | one in-memory process {:.0}/s | {:.2}x |",
            across.deliveries_per_s,
            pct(&across.across, 0.99),
            in_memory.deliveries_per_s,
            across.deliveries_per_s / in_memory.deliveries_per_s
        );
    }

    println!("\n{summary}");
    if let Some(cluster_summary) = cluster_summary {
        println!("{cluster_summary}");
    }
    println!("{dispatch_summary}");
}

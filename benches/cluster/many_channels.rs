//! The many-channels run of `cargo bench --bench cluster`: two `eric serve --cluster`
//! processes serving 1 to 20,000 channels, one stream each (half on each process), and
//! what that costs in Redis connections, memory and latency.
//!
//! The streams ride HTTP/2 (h2c, 150 streams per connection): 20,000 HTTP/1.1 streams
//! would need more file descriptors on the client side than this machine allows one
//! process, and the figure measured here is Redis's side, not the clients'.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::eric_serve::EricServe;
use super::{now_us, pct};

/// Streams per HTTP/2 connection (hyper's server allows 200 at once by default).
const STREAMS_PER_CONNECTION: usize = 150;

/// Paced broadcasts: how many, and how often (latency without queueing).
pub(crate) const PACED: usize = 1_000;
pub(crate) const PACE: Duration = Duration::from_millis(4);

/// Concurrent publishers of the burst (one broadcast to every channel).
pub(crate) const BURST_PUBLISHERS: usize = 32;

pub(crate) struct Outcome {
    pub(crate) channels: usize,
    /// Redis clients on each node while every stream is open (this bench's own query
    /// connection not counted).
    pub(crate) clients: Vec<usize>,
    /// Growth of the two processes' resident memory, per channel served.
    pub(crate) rss_per_channel: f64,
    /// Paced latency in µs, on the publishing process and on the other.
    pub(crate) same: Vec<u64>,
    pub(crate) across: Vec<u64>,
    /// The burst: one broadcast to every channel, as fast as the publishers go.
    pub(crate) burst_deliveries_per_s: f64,
    pub(crate) lost: u64,
    pub(crate) out_of_order: u64,
}

/// The Redis clients connected to the node at `url`, but for the one asking.
async fn redis_clients(url: &str) -> usize {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut connection)
        .await
        .unwrap();
    list.lines().count() - 1
}

/// Runs `f` over `items` with at most `at_once` running.
async fn each<T, F, Fut>(items: Vec<T>, at_once: usize, f: F)
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures_util::stream::iter(items)
        .for_each_concurrent(at_once, f)
        .await;
}

/// Two processes on the Redis at `urls` (nodes `nodes`), `channels` channels with one
/// stream each, streams alternating between the processes; broadcasts made on the
/// first process.
pub(crate) async fn run(urls: &str, nodes: &[String], channels: usize) -> Outcome {
    // More channels than `eric serve` holds by default (10,000).
    let start = || {
        let args = [
            "--capacity",
            "0",
            "--max-channels",
            "50000",
            "--cluster",
            "--redis",
        ];
        EricServe::start(&[&args[..], &[urls]].concat())
    };
    let servers = [start(), start()];
    let rss_before: u64 = servers.iter().map(EricServe::rss).sum();
    let prefix = format!("many-{}", now_us());
    let ids: Vec<String> = (0..channels).map(|i| format!("{prefix}-{i}")).collect();
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    each(ids.clone(), 32, |id| {
        let (http, base) = (http.clone(), servers[0].base.clone());
        async move {
            let created = super::sse_client::create(&http, &base, &id).await;
            assert_eq!(created, 201);
        }
    })
    .await;

    // One stream per channel, alternating between the processes; a single channel has
    // one on each (the same-run reference: today's 1-channel figure).
    let streams: Vec<(usize, usize)> = (0..channels.max(2))
        .map(|i| (i % channels, i % 2))
        .collect();
    // The paced broadcasts go to channels of both processes' streams in turn, spread
    // over all of them; each channel also gets one broadcast of the burst.
    let paced: Vec<usize> = (0..PACED)
        .map(|k| match channels {
            1 => 0,
            _ => k % 2 + 2 * ((k / 2) * (channels / PACED).max(1) % (channels / 2)),
        })
        .collect();
    let mut expected = vec![1u64; channels];
    for &c in &paced {
        expected[c] += 1;
    }
    // One HTTP/2 connection per STREAMS_PER_CONNECTION streams of a process.
    let connections: Vec<Vec<reqwest::Client>> = (0..2)
        .map(|_| {
            (0..streams.len().div_ceil(2 * STREAMS_PER_CONNECTION))
                .map(|_| {
                    reqwest::Client::builder()
                        .http2_prior_knowledge()
                        .build()
                        .unwrap()
                })
                .collect()
        })
        .collect();
    let received = Arc::new(AtomicU64::new(0));
    let readers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let opened: Vec<(usize, (usize, usize))> = streams.iter().copied().enumerate().collect();
    each(opened, 256, |(i, (channel, server))| {
        let client = connections[server][i / 2 / STREAMS_PER_CONNECTION].clone();
        let url = format!("{}/channels/{}/events", servers[server].base, ids[channel]);
        let (received, readers, expected) = (
            Arc::clone(&received),
            Arc::clone(&readers),
            expected[channel],
        );
        async move {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let reader = tokio::spawn(read(response, received, expected));
            readers.lock().unwrap().push((server, reader));
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut clients = Vec::new();
    for node in nodes {
        clients.push(redis_clients(node).await);
    }
    let publish = |i: usize, phase: u64| {
        let url = format!("{}/broadcast?channel_id={}", servers[0].base, ids[i]);
        let http = http.clone();
        async move {
            let response = http
                .post(url)
                .json(&json!({"type": "n", "payload": {"t": now_us(), "phase": phase}}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    };

    let mut tick = tokio::time::interval(PACE);
    for &c in &paced {
        tick.tick().await;
        publish(c, 0).await;
    }
    let start = Instant::now();
    each((0..channels).collect(), BURST_PUBLISHERS, |i| publish(i, 1)).await;
    let rss_after: u64 = servers.iter().map(EricServe::rss).sum();

    let readers = std::mem::take(&mut *readers.lock().unwrap());
    let (mut same, mut across, mut out_of_order, mut burst_end) =
        (Vec::new(), Vec::new(), 0, start);
    for (server, reader) in readers {
        let Ok(Ok(read)) = tokio::time::timeout(Duration::from_secs(60), reader).await else {
            continue; // its missing events count as lost
        };
        out_of_order += read.out_of_order;
        burst_end = burst_end.max(read.burst_at.unwrap_or(start));
        if server == 0 {
            same.extend(read.paced);
        } else {
            across.extend(read.paced);
        }
    }
    same.sort_unstable();
    across.sort_unstable();
    let total: u64 = streams.iter().map(|&(channel, _)| expected[channel]).sum();
    Outcome {
        channels,
        clients,
        rss_per_channel: rss_after.saturating_sub(rss_before) as f64 / channels as f64,
        same,
        across,
        burst_deliveries_per_s: channels as f64 / (burst_end - start).as_secs_f64(),
        lost: total - received.load(Ordering::Relaxed),
        out_of_order,
    }
}

struct Read {
    paced: Vec<u64>,
    out_of_order: u64,
    /// When the burst's event arrived.
    burst_at: Option<Instant>,
}

/// Reads `expected` events of one stream: paced latencies, the burst's arrival, and
/// whether the event ids went up by one each time.
async fn read(response: reqwest::Response, received: Arc<AtomicU64>, expected: u64) -> Read {
    let mut events = response.bytes_stream().eventsource();
    let mut read = Read {
        paced: Vec::new(),
        out_of_order: 0,
        burst_at: None,
    };
    let (mut got, mut previous) = (0, None::<u64>);
    while got < expected {
        let Some(Ok(event)) = events.next().await else {
            break;
        };
        if event.event != "n" {
            continue;
        }
        let seq: Option<u64> = event.id.rsplit('-').next().and_then(|s| s.parse().ok());
        if previous.is_some_and(|p| Some(p + 1) != seq) {
            read.out_of_order += 1;
        }
        previous = seq;
        let data: Value = serde_json::from_str(&event.data).unwrap();
        match data["phase"].as_u64() {
            Some(0) => read
                .paced
                .push(now_us().saturating_sub(data["t"].as_u64().unwrap())),
            _ => read.burst_at = Some(Instant::now()),
        }
        got += 1;
        received.fetch_add(1, Ordering::Relaxed);
    }
    read
}

/// The table's head.
pub(crate) fn print_head() {
    println!(
        "| channels (one stream each) | Redis clients per node | per process per node | RSS per channel | p50 same process | p99 same | p50 across processes | p99 across | burst deliveries/s | lost | out of order |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
}

pub(crate) fn print_row(o: &Outcome) {
    let per_process = o.clients.iter().max().copied().unwrap_or(0) as f64 / 2.0;
    let clients: Vec<String> = o.clients.iter().map(usize::to_string).collect();
    // One channel's share of the growth is the first requests' warm-up: not shown.
    let rss = match o.channels {
        1 => "-".to_owned(),
        _ => format!("{:.1} KiB", o.rss_per_channel / 1024.0),
    };
    println!(
        "| {} | {} | {per_process} | {rss} | {} | {} | {} | {} | {:.0} | {} | {} |",
        o.channels,
        clients.join(", "),
        pct(&o.same, 0.5),
        pct(&o.same, 0.99),
        pct(&o.across, 0.5),
        pct(&o.across, 0.99),
        o.burst_deliveries_per_s,
        o.lost,
        o.out_of_order
    );
}

/// The `summary:` line of `cargo bench --bench all`: the most channels against one, on
/// one Redis.
pub(crate) fn summary(one: &Outcome, most: &Outcome) -> String {
    let clients = |o: &Outcome| o.clients.iter().max().copied().unwrap_or(0);
    format!(
        "summary: | cluster: {} channels, one stream each, over 2 processes on one Redis | {} Redis clients, p50 across processes {}, {} lost | 1 channel, same run: {} clients, p50 across {} | {:.1}x the clients |",
        most.channels,
        clients(most),
        pct(&most.across, 0.5),
        most.lost,
        clients(one),
        pct(&one.across, 0.5),
        clients(most) as f64 / clients(one) as f64
    )
}

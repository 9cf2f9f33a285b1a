//! The load generator: streams that read and check every event, and a publisher at a
//! fixed rate; what a run measured.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::pipeline::{self, Publish};
use super::{Server, allocator, latency};

/// A client that sends `GET path` to the server at `base` and never reads: a 4 KiB
/// receive buffer, so that kernel buffers fill soon.
pub(crate) async fn never_reading_client(
    base: &str,
    path: &str,
) -> std::io::Result<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;

    let addr: std::net::SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .map_err(std::io::Error::other)?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut client = socket.connect(addr).await?;
    client
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    Ok(client)
}

#[global_allocator]
static ALLOCATOR: allocator::Switch = allocator::Switch;

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) received: u64,
    pub(crate) out_of_order: u64,
    pub(crate) latencies_us: Vec<u64>,
    /// The chunks the stream's body arrived in: HTTP/1.1 chunks (a read may hold
    /// several; the client hands each on alone).
    pub(crate) chunks: u64,
}

pub(crate) struct Outcome {
    pub(crate) deliveries_per_s: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// (percentile, ms) at [`latency::PERCENTILES`].
    pub(crate) percentiles: Vec<(f64, f64)>,
    pub(crate) lost: u64,
    pub(crate) out_of_order: u64,
    /// Events received per body chunk, over all streams: how many the server put into
    /// each chunk of its body, each of which costs the client a round of decoding.
    pub(crate) events_per_chunk: f64,
    pub(crate) cpu_percent: f64,
    /// The user-space part of `cpu_percent`.
    pub(crate) user_cpu_percent: f64,
    pub(crate) bytes_per_idle_stream: f64,
    /// Instructions the server ran while the broadcasts were made and delivered, when
    /// it runs under callgrind.
    pub(crate) instructions: Option<u64>,
    /// The 99th percentile of a broadcast request's answer time, request sent to
    /// answer read, at a fixed rate (`None`: pipelined): how long a publisher waits
    /// while the server writes to its streams.
    pub(crate) publish_p99_ms: Option<f64>,
}

/// Sends `request` and reads its answer's JSON.
pub(crate) async fn json(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// How the streams of a run reach the server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Wire {
    /// One HTTP/1.1 connection per stream (what `EventSource` does in cleartext).
    Http1,
    /// HTTP/2 with prior knowledge (h2c): this many connections, the streams spread over
    /// them (what browsers do over TLS: every stream of a page on one connection).
    H2c(usize),
}

/// How the publisher sends a run's `rate × seconds` broadcasts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Pacing {
    /// At `rate` per second, each after the last one's answer: past what the server
    /// delivers, a lockstep. Each is due at a random point of its own interval (the
    /// same points for every server): the kernel splits a process's CPU time into user
    /// and system time by which of them its timer tick (250 Hz here) lands in, and
    /// broadcasts exactly 10 ms apart met that tick at a few fixed phases, a different
    /// few each run. The user time measured at
    /// 100/s then moved by half from run to run (0.27x to 0.54x the reference's, one
    /// build), while the total did not (0.63x to 0.72x).
    Fixed,
    /// All of them back to back on one pipelined connection, answers read beside
    /// ([`pipeline`]): streams fall behind.
    Pipelined,
}

pub(crate) async fn run(
    server: &Server,
    streams: usize,
    rate: u64,
    seconds: u64,
    stuck: bool,
) -> Outcome {
    run_over(
        server,
        streams,
        rate,
        seconds,
        stuck,
        Wire::Http1,
        Pacing::Fixed,
    )
    .await
}

pub(crate) async fn run_over(
    server: &Server,
    streams: usize,
    rate: u64,
    seconds: u64,
    stuck: bool,
    wire: Wire,
    pacing: Pacing,
) -> Outcome {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let h2_clients: Vec<reqwest::Client> = match wire {
        Wire::Http1 => Vec::new(),
        Wire::H2c(connections) => (0..connections)
            .map(|_| {
                reqwest::Client::builder()
                    .http2_prior_knowledge()
                    .build()
                    .unwrap()
            })
            .collect(),
    };
    let (channel, stream_url, publish) = if server.kind.starts_with("eric") {
        let created = json(http.put(format!("{}/create", server.base))).await;
        let channel = created["channel_id"].as_str().unwrap().to_owned();
        (
            channel.clone(),
            // eric-api has no subscribe-and-stream: each stream subscribes first, below.
            format!("{}/channels/{channel}/events", server.base),
            Publish {
                path: format!("/broadcast?channel_id={channel}"),
                content_type: "application/json",
                body: Box::new(|seq| {
                    json!({"type": "load", "payload": {"seq": seq, "sent_us": now_us()}})
                        .to_string()
                }),
            },
        )
    } else {
        (
            String::new(),
            format!("{}/events", server.base),
            Publish {
                path: "/publish".to_owned(),
                content_type: "text/plain",
                body: Box::new(|seq| json!({"seq": seq, "sent_us": now_us()}).to_string()),
            },
        )
    };

    // `stuck`: beside the readers, a client that never reads its socket and a listener
    // subscribed but never streamed (eric only).
    let mut stuck_client = None;
    if stuck && server.kind == "eric" {
        let path = stream_url.trim_start_matches(&server.base);
        stuck_client = Some(never_reading_client(&server.base, path).await.unwrap());
        http.post(format!("{}/subscribe?channel_id={channel}", server.base))
            .send()
            .await
            .unwrap();
    }
    let (_, _, rss_before) = server.usage();
    // Each reader sends its tally once it has read everything, then holds its stream
    // open until `release`: so that what the server counts while they finish (CPU,
    // callgrind's instructions) is the events' cost, not the streams' teardown.
    let (tally_tx, mut tally_rx) = tokio::sync::mpsc::unbounded_channel();
    let (release, released) = tokio::sync::watch::channel(false);
    let total = rate * seconds;
    let mut readers = Vec::with_capacity(streams);
    for n in 0..streams {
        let reader_http = if h2_clients.is_empty() {
            &http
        } else {
            &h2_clients[n % h2_clients.len()]
        };
        let url = if server.kind == "eric-api" {
            let subscribed =
                json(http.post(format!("{}/subscribe?channel_id={channel}", server.base))).await;
            let listener = subscribed["listener_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            format!("{}/stream/{channel}/{listener}", server.base)
        } else {
            stream_url.clone()
        };
        let response = reader_http.get(&url).send().await.unwrap();
        let (tally_tx, mut released) = (tally_tx.clone(), released.clone());
        readers.push(tokio::spawn(async move {
            let chunks = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let counted = Arc::clone(&chunks);
            let mut events = response
                .bytes_stream()
                .inspect(move |_| {
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                })
                .eventsource();
            let mut tally = Tally::default();
            let mut last: Option<u64> = None;
            while tally.received < total {
                let Ok(Some(Ok(event))) =
                    tokio::time::timeout(Duration::from_secs(30), events.next()).await
                else {
                    break;
                };
                // eric-api sends the payload as a Python repr: single quotes.
                let data: Value = serde_json::from_str(&event.data)
                    .or_else(|_| serde_json::from_str(&event.data.replace('\'', "\"")))
                    .unwrap_or(Value::Null);
                let (Some(seq), Some(sent)) = (data["seq"].as_u64(), data["sent_us"].as_u64())
                else {
                    continue;
                };
                if last.is_some_and(|l| seq <= l) {
                    tally.out_of_order += 1;
                }
                last = Some(seq);
                tally.received += 1;
                tally.latencies_us.push(now_us().saturating_sub(sent));
            }
            tally.chunks = chunks.load(std::sync::atomic::Ordering::Relaxed);
            let _ = tally_tx.send(tally);
            let _ = released.wait_for(|&go| go).await;
            drop(events);
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu_before, user_before, rss_idle) = server.usage();

    server.zero_instructions();
    let start = Instant::now();
    let mut publish_us = Vec::new();
    match pacing {
        Pacing::Fixed => {
            let url = format!("{}{}", server.base, publish.path);
            let interval = Duration::from_secs_f64(1.0 / rate as f64);
            let mut moves = fastrand::Rng::with_seed(21);
            for seq in 0..total {
                // Anywhere in its own interval: still in order.
                let due = start + interval * seq as u32 + interval.mul_f64(moves.f64());
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                http.post(&url)
                    .header("content-type", publish.content_type)
                    .body((publish.body)(seq))
                    .send()
                    .await
                    .unwrap();
                publish_us.push(sent.elapsed().as_micros() as u64);
            }
        }
        Pacing::Pipelined => {
            // Both servers hold that many unread per stream: none lags or is dropped.
            assert!(total as usize <= super::roles::BACKLOG);
            let refused = pipeline::publish_all(&server.base, publish, total).await;
            assert_eq!(refused, 0, "{} refused broadcasts", server.kind);
        }
    }
    drop(tally_tx);
    let mut tallies = Vec::with_capacity(streams);
    while tallies.len() < streams {
        tallies.push(tally_rx.recv().await.expect("every reader sends its tally"));
    }
    let elapsed = start.elapsed();
    let instructions = server.instructions();
    let (cpu_after, user_after, _) = server.usage();
    release.send_replace(true);
    for reader in readers {
        reader.await.unwrap();
    }
    drop(stuck_client);
    let received: u64 = tallies.iter().map(|t| t.received).sum();
    let mut latencies: Vec<u64> = tallies
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    publish_us.sort_unstable();
    let pct = |p: f64| latency::percentile_ms(&latencies, p);
    Outcome {
        deliveries_per_s: received as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        percentiles: latency::percentiles(&latencies),
        lost: total * streams as u64 - received,
        out_of_order: tallies.iter().map(|t| t.out_of_order).sum(),
        events_per_chunk: received as f64
            / tallies.iter().map(|t| t.chunks).sum::<u64>().max(1) as f64,
        cpu_percent: (cpu_after - cpu_before) / elapsed.as_secs_f64() * 100.0,
        user_cpu_percent: (user_after - user_before) / elapsed.as_secs_f64() * 100.0,
        bytes_per_idle_stream: rss_idle.saturating_sub(rss_before) as f64 / streams as f64,
        instructions,
        publish_p99_ms: (!publish_us.is_empty()).then(|| latency::percentile_ms(&publish_us, 0.99)),
    }
}

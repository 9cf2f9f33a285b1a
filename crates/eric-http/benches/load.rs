//! Load: 100 and 1,000 concurrent SSE streams, broadcasts at a fixed rate; deliveries/s,
//! p50/p99 latency, lost and out-of-order events, server CPU and memory per idle
//! stream. eric's server next to a minimal axum + `tokio::sync::broadcast` server (the
//! ratio's reference, served by `axum::serve`) and the same server with its connections
//! served by hyper's HTTP/1.1 connection as eric's are (the floor for memory per
//! stream), each in a process of its own, in the same run, driven by the same load
//! generator.
//!
//! `cargo bench -p eric-http --bench load [-- quick] [flood|stuck|h2]` (`flood`: 10,000
//! streams; `stuck`: 999 readers with and without clients that never read; `h2`: 1,000
//! streams over HTTP/1.1 and over h2c, 10 connections of 100 streams);
//! `-- write-delay` ([`write_delay`]); `-- instructions` (callgrind, [`instructions`]);
//! `cargo bench -p eric-http --bench load -- soak [minutes]`: mixed load for a set time,
//! the server's memory and open streams sampled, plotted to `docs/soak.svg`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Mutex;

const ROLE: &str = "ERIC_LOAD_ROLE";

#[path = "load/allocator.rs"]
mod allocator;
#[path = "load/instructions.rs"]
mod instructions;
#[path = "load/latency.rs"]
mod latency;
#[path = "load/soak.rs"]
mod soak;
#[path = "load/write_delay.rs"]
mod write_delay;

/// A client that sends `GET path` to the server at `base` and never reads: a 4 KiB
/// receive buffer, so that kernel buffers fill soon.
async fn never_reading_client(base: &str, path: &str) -> std::io::Result<tokio::net::TcpStream> {
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

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// One row of the load tables: the run's figures, with `ratio` to its reference.
fn print_row(streams: usize, rate: u64, label: &str, o: &Outcome, ratio: &str) {
    println!(
        "| {streams} | {rate} | {label} | {:.0} | {ratio} | {:.1} ms | {:.1} ms | {} | {} | {:.0} % | {:.1} KiB |",
        o.deliveries_per_s,
        o.p50_ms,
        o.p99_ms,
        o.lost,
        o.out_of_order,
        o.cpu_percent,
        o.bytes_per_idle_stream / 1024.0
    );
}

// ---- the servers (child processes) ----

/// A server process's runtime: tokio's multi-threaded one, as `eric serve` uses.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `write_delay`: `HttpConfig::write_delay` ([`write_delay::delay`]).
fn serve_eric(soak: bool, write_delay: bool) {
    let rt = runtime();
    rt.block_on(async {
        // The soak runs the server as `eric serve` does (keep-alive on, every default).
        let config = if soak {
            eric_http::HttpConfig::default().keep_alive(Some(Duration::from_secs(1)))
        } else {
            eric_http::HttpConfig::default().keep_alive(None)
        };
        let config = config.write_delay(write_delay.then(write_delay::delay));
        let server = eric_http::HttpServer::bind("127.0.0.1:0", config)
            .await
            .unwrap();
        println!("{}", server.local_addr().unwrap());
        server.run_until(std::future::pending()).await.unwrap();
    });
}

/// The reference: the least an axum SSE fan-out server can be. `hyper_direct`: its
/// connections served by hyper's HTTP/1.1 connection, as eric's are, instead of
/// `axum::serve` (hyper-util's auto HTTP/1+2 builder): the floor for memory per stream.
fn serve_reference(hyper_direct: bool) {
    use axum::Router;
    use axum::body::Body;
    use axum::extract::State;
    use axum::routing::{get, post};
    use tokio::sync::broadcast;

    let rt = runtime();
    rt.block_on(async {
        let (tx, _) = broadcast::channel::<bytes::Bytes>(4096);
        let app = Router::new()
            .route(
                "/events",
                get(
                    |State(tx): State<broadcast::Sender<bytes::Bytes>>| async move {
                        let rx = tx.subscribe();
                        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                            loop {
                                match rx.recv().await {
                                    Ok(b) => {
                                        return Some((Ok::<_, std::convert::Infallible>(b), rx));
                                    }
                                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                                    Err(_) => return None,
                                }
                            }
                        });
                        (
                            [("content-type", "text/event-stream")],
                            Body::from_stream(stream),
                        )
                    },
                ),
            )
            .route(
                "/publish",
                post(
                    |State(tx): State<broadcast::Sender<bytes::Bytes>>, body: String| async move {
                        let event = eric_prefabs::SseEvent::new(body)
                            .with_event("load")
                            .unwrap();
                        let _ = tx.send(bytes::Bytes::from(event.encode()));
                        "ok"
                    },
                ),
            )
            .with_state(tx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        if !hyper_direct {
            return axum::serve(listener, app).await.unwrap();
        }
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.set_nodelay(true);
            let app = app.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tcp),
                        hyper_util::service::TowerToHyperService::new(app),
                    )
                    .await;
            });
        }
    });
}

// ---- the load generator ----

struct Server {
    child: Child,
    base: String,
    kind: &'static str,
    /// What its memory is allocated by.
    allocator: &'static str,
    /// Whether it runs under callgrind ([`instructions`]).
    callgrind: bool,
}

/// The Python interpreter of the throwaway virtualenv the eric-socket `python_client`
/// test makes (`cargo bench --bench all` makes it first); eric-api is installed there.
fn python() -> Option<std::path::PathBuf> {
    let python =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-eric-sse/bin/python");
    python.exists().then_some(python)
}

impl Server {
    /// eric-sse's HTTP front end (eric-api 1.6.0.9 under uvicorn), installed into the
    /// virtualenv if need be; `None` where that cannot be done.
    fn start_eric_api() -> Option<Self> {
        let python = python()?;
        let installed = Command::new(&python)
            .args(["-c", "import eric_api"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            || Command::new(&python)
                .args(["-m", "pip", "install", "-q", "eric-api==1.6.0.9"])
                .status()
                .is_ok_and(|s| s.success());
        if !installed {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new(&python)
            .args([
                "-m",
                "uvicorn",
                "eric_api:app",
                "--host",
                "127.0.0.1",
                "--log-level",
                "warning",
            ])
            .args(["--port", &port.to_string()])
            .current_dir(env!("CARGO_TARGET_TMPDIR"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            kind: "eric-api",
            allocator: "CPython",
            callgrind: false,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(server)
    }

    /// A server as it ships ([`shipped_allocator`]).
    fn start(kind: &'static str) -> Self {
        Self::start_on(kind, shipped_allocator(kind))
    }

    /// `allocator`: `system` or `jemalloc`.
    fn start_on(kind: &'static str, allocator: &'static str) -> Self {
        Self::spawn(
            kind,
            allocator,
            Command::new(std::env::current_exe().unwrap()),
        )
    }

    /// A server as it ships, under callgrind ([`instructions`]).
    fn start_under_callgrind(kind: &'static str) -> Self {
        let command = instructions::command(kind, std::env::current_exe().unwrap());
        let mut server = Self::spawn(kind, shipped_allocator(kind), command);
        server.callgrind = true;
        server
    }

    /// Runs `command` as a `kind` server on `allocator`.
    fn spawn(kind: &'static str, allocator: &'static str, mut command: Command) -> Self {
        let mut child = command
            .env(ROLE, kind)
            .env(allocator::VAR, allocator)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            allocator,
            "the server runs on another allocator"
        );
        line.clear();
        out.read_line(&mut line).unwrap();
        Server {
            child,
            base: format!("http://{}", line.trim()),
            kind,
            allocator,
            callgrind: false,
        }
    }

    /// (CPU seconds used so far, of which in user space, RSS bytes).
    fn usage(&self) -> (f64, f64, u64) {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let tick = |at: usize| {
            fields
                .get(at)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime, in clock ticks (fields after the name).
        let (user, system) = (tick(11), tick(12));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        (
            (user + system) as f64 / 100.0,
            user as f64 / 100.0,
            rss_kb * 1024,
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
struct Tally {
    received: u64,
    out_of_order: u64,
    latencies_us: Vec<u64>,
}

struct Outcome {
    deliveries_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// (percentile, ms) at [`latency::PERCENTILES`].
    percentiles: Vec<(f64, f64)>,
    lost: u64,
    out_of_order: u64,
    cpu_percent: f64,
    /// The user-space part of `cpu_percent`.
    user_cpu_percent: f64,
    bytes_per_idle_stream: f64,
    /// Instructions the server ran while the broadcasts were made and delivered, when
    /// it runs under callgrind.
    instructions: Option<u64>,
}

/// Sends `request` and reads its answer's JSON.
async fn json(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// How the streams of a run reach the server.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Wire {
    /// One HTTP/1.1 connection per stream (what `EventSource` does in cleartext).
    Http1,
    /// HTTP/2 with prior knowledge (h2c): this many connections, the streams spread over
    /// them (what browsers do over TLS: every stream of a page on one connection).
    H2c(usize),
}

async fn run(server: &Server, streams: usize, rate: u64, seconds: u64, stuck: bool) -> Outcome {
    run_over(server, streams, rate, seconds, stuck, Wire::Http1).await
}

async fn run_over(
    server: &Server,
    streams: usize,
    rate: u64,
    seconds: u64,
    stuck: bool,
    wire: Wire,
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
    let (channel, stream_url, publish): (
        String,
        String,
        Box<dyn Fn(u64) -> reqwest::RequestBuilder + Send + Sync>,
    ) = if server.kind.starts_with("eric") {
        let created = json(http.put(format!("{}/create", server.base))).await;
        let channel = created["channel_id"].as_str().unwrap().to_owned();
        let url = format!("{}/broadcast?channel_id={channel}", server.base);
        let http = http.clone();
        (
            channel.clone(),
            // eric-api has no subscribe-and-stream: each stream subscribes first, below.
            format!("{}/channels/{channel}/events", server.base),
            Box::new(move |seq| {
                http.post(&url)
                    .json(&json!({"type": "load", "payload": {"seq": seq, "sent_us": now_us()}}))
            }),
        )
    } else {
        let url = format!("{}/publish", server.base);
        let http = http.clone();
        (
            String::new(),
            format!("{}/events", server.base),
            Box::new(move |seq| {
                http.post(&url)
                    .body(json!({"seq": seq, "sent_us": now_us()}).to_string())
            }),
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
    let tallies = Arc::new(Mutex::new(Vec::new()));
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
        let tallies = Arc::clone(&tallies);
        readers.push(tokio::spawn(async move {
            let mut events = response.bytes_stream().eventsource();
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
            tallies.lock().await.push(tally);
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu_before, user_before, rss_idle) = server.usage();

    server.zero_instructions();
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    for seq in 0..total {
        let due = start + interval * seq as u32;
        tokio::time::sleep_until(due.into()).await;
        publish(seq).send().await.unwrap();
    }
    for reader in readers {
        reader.await.unwrap();
    }
    let elapsed = start.elapsed();
    let instructions = server.instructions();
    drop(stuck_client);
    let (cpu_after, user_after, _) = server.usage();
    let tallies = tallies.lock().await;
    let received: u64 = tallies.iter().map(|t| t.received).sum();
    let mut latencies: Vec<u64> = tallies
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    Outcome {
        deliveries_per_s: received as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        percentiles: latency::percentiles(&latencies),
        lost: total * streams as u64 - received,
        out_of_order: tallies.iter().map(|t| t.out_of_order).sum(),
        cpu_percent: (cpu_after - cpu_before) / elapsed.as_secs_f64() * 100.0,
        user_cpu_percent: (user_after - user_before) / elapsed.as_secs_f64() * 100.0,
        bytes_per_idle_stream: rss_idle.saturating_sub(rss_before) as f64 / streams as f64,
        instructions,
    }
}

fn label(kind: &str) -> &'static str {
    match kind {
        "eric" => "eric",
        "reference" => "axum + broadcast",
        _ => "same, hyper http1",
    }
}

/// Each server on each allocator, 1,000 idle streams: what the allocator does to the
/// never-written parts of hyper's two 8 KiB buffers per connection.
fn memory_by_allocator(rt: &tokio::runtime::Runtime, summary: &mut Vec<String>) {
    const STREAMS: usize = 1_000;
    println!("\n# Memory per idle stream by allocator ({STREAMS} streams)\n");
    println!("| server | system allocator | jemalloc |");
    println!("|---|---:|---:|");
    let mut reference = [0.0; 2];
    for kind in ["reference", "reference-hyper", "eric"] {
        let kib = ["system", "jemalloc"].map(|allocator| {
            let server = Server::start_on(kind, allocator);
            rt.block_on(run(&server, STREAMS, 50, 1, false))
                .bytes_per_idle_stream
                / 1024.0
        });
        println!(
            "| {} | {:.1} KiB | {:.1} KiB |",
            label(kind),
            kib[0],
            kib[1]
        );
        if kind == "reference" {
            reference = kib;
        }
        if kind == "eric" {
            for (at, allocator) in ["system allocator", "jemalloc"].iter().enumerate() {
                summary.push(format!(
                    "summary: | HTTP: memory per idle stream, {allocator} ({STREAMS} streams) | {:.1} KiB | axum + broadcast {:.1} KiB | {:.2}x less (aim <= 10 KiB) |",
                    kib[at],
                    reference[at],
                    reference[at] / kib[at]
                ));
            }
        }
    }
}

fn main() {
    if std::env::var_os(ROLE).is_some() {
        // First line to the parent: the allocator this server really runs on.
        println!("{}", allocator::name());
    }
    match std::env::var(ROLE).as_deref() {
        Ok("eric") => return serve_eric(false, false),
        Ok("eric-soak") => return serve_eric(true, false),
        Ok("eric-write-delay") => return serve_eric(false, true),
        Ok("reference") => return serve_reference(false),
        Ok("reference-hyper") => return serve_reference(true),
        _ => {}
    }
    let quick = std::env::args().any(|a| a == "quick");
    let seconds = if quick { 2 } else { 4 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "soak") {
        let minutes: f64 = args
            .get(at + 1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(30.0);
        return rt.block_on(soak::run(minutes));
    }
    println!(
        "# HTTP SSE load ({seconds} s per run; server and load generator share this machine's cores)\n"
    );
    println!(
        "| streams | broadcasts/s | server | deliveries/s | ratio | p50 | p99 | lost | out of order | server CPU | server memory per idle stream |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let special = std::env::args().any(|a| a == "flood" || a == "stuck" || a == "h2");
    if std::env::args().any(|a| a == "instructions") {
        let mut summary = Vec::new();
        instructions::bench(&rt, &mut summary);
        return print_summary(&summary);
    }
    if std::env::args().any(|a| a == "write-delay") {
        let mut summary = Vec::new();
        write_delay::bench(&rt, seconds, &mut summary);
        return print_summary(&summary);
    }
    let mut panels = Vec::new();
    let mut summary = Vec::new();
    let mut eric_api_rate = None;
    if special {
        // The comparison with eric-api belongs to the default run.
    } else if let Some(eric_api) = Server::start_eric_api() {
        // eric-sse's own HTTP front end, same generator, same run.
        let (streams, rate) = (100, 150);
        let theirs = rt.block_on(run(&eric_api, streams, rate, seconds, false));
        drop(eric_api);
        let server = Server::start("eric");
        let ours = rt.block_on(run(&server, streams, rate, seconds, false));
        if theirs.cpu_percent > 90.0 {
            eric_api_rate = Some(theirs.deliveries_per_s);
        }
        summary.push(format!(
            "summary: | HTTP: {streams} streams, {rate} broadcasts/s offered | {:.0} deliveries/s, p99 {:.1} ms, {:.0} % CPU | eric-api {:.0}/s, p99 {:.1} ms, {:.0} % CPU | **{:.1}x** |",
            ours.deliveries_per_s,
            ours.p99_ms,
            ours.cpu_percent,
            theirs.deliveries_per_s,
            theirs.p99_ms,
            theirs.cpu_percent,
            ours.deliveries_per_s / theirs.deliveries_per_s
        ));
        summary.push(format!(
            "summary: | HTTP: memory per idle stream ({streams} streams) | {:.1} KiB | eric-api {:.1} KiB | **{:.1}x** less |",
            ours.bytes_per_idle_stream / 1024.0,
            theirs.bytes_per_idle_stream / 1024.0,
            theirs.bytes_per_idle_stream / ours.bytes_per_idle_stream
        ));
        panels.push(latency::Panel {
            title: format!("{streams} streams, {rate} broadcasts/s"),
            lines: vec![
                ("eric-api (Python)".to_owned(), theirs.percentiles.clone()),
                ("eric".to_owned(), ours.percentiles.clone()),
            ],
        });
        for (label, o, ratio) in [
            ("eric-api 1.6.0.9 (Python, uvicorn)", &theirs, 1.0),
            (
                "eric",
                &ours,
                ours.deliveries_per_s / theirs.deliveries_per_s,
            ),
        ] {
            print_row(
                streams,
                rate,
                label,
                o,
                &format!("{ratio:.2} (vs eric-api)"),
            );
        }
    } else {
        println!(
            "| | | (eric-api not measured: run `cargo test -p eric-socket --test python_client` once to make its virtualenv) | | | | | | | | |"
        );
    }
    if std::env::args().any(|a| a == "h2") {
        // Issue 22: the same load over HTTP/1.1 and over h2c, in the same run.
        for (streams, rate) in [(1_000, 50), (1_000, 200)] {
            let mut reference = None;
            for wire in [Wire::Http1, Wire::H2c(10)] {
                let server = Server::start("eric");
                let o = rt.block_on(run_over(&server, streams, rate, seconds, false, wire));
                let label = match wire {
                    Wire::Http1 => "eric, HTTP/1.1 (1,000 connections)".to_owned(),
                    Wire::H2c(c) => {
                        format!("eric, h2c ({c} connections, {} streams each)", streams / c)
                    }
                };
                let (rate_ref, memory_ref) =
                    *reference.get_or_insert((o.deliveries_per_s, o.bytes_per_idle_stream));
                print_row(
                    streams,
                    rate,
                    &label,
                    &o,
                    &format!("{:.2}", o.deliveries_per_s / rate_ref),
                );
                if wire != Wire::Http1 {
                    summary.push(format!(
                        "summary: | HTTP/2 (h2c): {streams} streams, {rate} broadcasts/s | {:.0} deliveries/s, {:.1} KiB per idle stream, {:.0} % CPU | HTTP/1.1 {rate_ref:.0}/s, {:.1} KiB | {:.2}x deliveries, {:.2}x memory |",
                        o.deliveries_per_s,
                        o.bytes_per_idle_stream / 1024.0,
                        o.cpu_percent,
                        memory_ref / 1024.0,
                        o.deliveries_per_s / rate_ref,
                        o.bytes_per_idle_stream / memory_ref,
                    ));
                }
            }
        }
        return print_summary(&summary);
    }
    if std::env::args().any(|a| a == "stuck") {
        // Issue 9: do 999 readers keep their rate beside clients that never read?
        for stuck in [false, true] {
            let server = Server::start("eric");
            let o = rt.block_on(run(&server, 999, 50, seconds, stuck));
            println!(
                "| 999 | 50 | eric{} | {:.0} | | {:.1} ms | {:.1} ms | {} | {} | {:.0} % | |",
                if stuck {
                    ", plus a stuck client and a never-streamed subscriber"
                } else {
                    ""
                },
                o.deliveries_per_s,
                o.p50_ms,
                o.p99_ms,
                o.lost,
                o.out_of_order,
                o.cpu_percent
            );
        }
        return;
    }
    // `flood`: 10,000 concurrent streams on one process (issue 9), a few broadcasts each.
    let shapes: &[(usize, u64)] = if std::env::args().any(|a| a == "flood") {
        // 10,000 connections on each side need more descriptors than the usual soft
        // limit of 1,024: raise it as far as the hard limit allows (the servers, started
        // after this, inherit it).
        match rlimit::increase_nofile_limit(24_000) {
            Ok(limit) if limit >= 10_100 => {}
            Ok(limit) => panic!("only {limit} file descriptors allowed; 10,000 streams need more"),
            Err(e) => panic!("cannot raise the file-descriptor limit: {e}"),
        }
        &[(10_000, 5)]
    } else {
        &[(100, 500), (100, 2_000), (1_000, 50), (1_000, 200)]
    };
    for &(streams, rate) in shapes {
        let mut reference_rate = 0.0;
        let mut reference_memory = 0.0;
        let mut panel = latency::Panel {
            title: format!("{streams} streams, {rate} broadcasts/s"),
            lines: Vec::new(),
        };
        for kind in ["reference", "reference-hyper", "eric"] {
            let server = Server::start(kind);
            let o = rt.block_on(run(&server, streams, rate, seconds, false));
            if kind == "reference" {
                reference_rate = o.deliveries_per_s;
                reference_memory = o.bytes_per_idle_stream;
            }
            let label = format!("{} ({})", label(kind), server.allocator);
            panel.lines.push((label.clone(), o.percentiles.clone()));
            if let (Some(theirs), "eric", (100, 2_000)) = (eric_api_rate, kind, (streams, rate)) {
                summary.push(format!(
                    "summary: | HTTP: saturated, 100 streams | {:.0} deliveries/s ({rate} broadcasts/s offered) | eric-api {theirs:.0}/s (saturated at 150) | **{:.1}x** |",
                    o.deliveries_per_s,
                    o.deliveries_per_s / theirs
                ));
            }
            if kind == "eric" && ((streams, rate) == (1_000, 200) || streams == 10_000) {
                summary.push(format!(
                    "summary: | HTTP: {streams} streams, {rate} broadcasts/s offered | {:.0} deliveries/s, {} lost | axum + broadcast {reference_rate:.0}/s | {:.2}x |",
                    o.deliveries_per_s,
                    o.lost,
                    o.deliveries_per_s / reference_rate
                ));
            }
            // 1,000 streams: `memory_by_allocator`.
            if kind == "eric" && streams == 10_000 {
                summary.push(format!(
                    "summary: | HTTP: memory per idle stream ({streams} streams) | {:.1} KiB | axum + broadcast {:.1} KiB | {:.2}x less (aim <= 10 KiB) |",
                    o.bytes_per_idle_stream / 1024.0,
                    reference_memory / 1024.0,
                    reference_memory / o.bytes_per_idle_stream
                ));
            }
            let ratio = format!("{:.2}", o.deliveries_per_s / reference_rate);
            print_row(streams, rate, &label, &o, &ratio);
        }
        if (streams, rate) == (1_000, 50) {
            panels.push(panel);
        }
    }
    if !special {
        memory_by_allocator(&rt, &mut summary);
        let svg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/latency.svg");
        latency::plot(&panels, &svg);
        println!("\nlatency percentiles: {}", svg.display());
    }
    print_summary(&summary);
}

/// The summary lines a run collected (`cargo bench --bench all` picks them up).
fn print_summary(summary: &[String]) {
    println!();
    for line in summary {
        println!("{line}");
    }
}

/// What a server kind runs on as it ships: eric on jemalloc, as the `eric` binary; the
/// references on the system allocator, as a plain axum program.
fn shipped_allocator(kind: &str) -> &'static str {
    if kind.starts_with("eric") {
        "jemalloc"
    } else {
        "system"
    }
}

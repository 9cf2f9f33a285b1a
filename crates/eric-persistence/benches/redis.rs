//! eric-persistence on Redis: dispatch + deliver, and broadcast to 1,000 and 100,000
//! stored listeners, next to raw redis-rs on the same server in the same run, and
//! `redis-benchmark` where installed. Starts its own redis-server on a free port.
//!
//! `cargo bench -p eric-persistence --bench redis [-- quick] [dispatch|fanout]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use eric_core::Message;
use eric_persistence::{ChannelSettings, KvStorage, RedisStorage, SseChannelRepository};
use futures_util::StreamExt;
use redis::AsyncCommands;
use support::RedisServer;

const PRODUCERS: usize = 64;

fn rate(n: usize, elapsed: Duration) -> String {
    let per_second = n as f64 / elapsed.as_secs_f64();
    if per_second >= 1e6 {
        format!("{:.2} M/s", per_second / 1e6)
    } else {
        format!("{:.1} k/s", per_second / 1e3)
    }
}

/// Raw redis-rs: one RPUSH and one LPOP per message, each awaited (what a queue that
/// lives in Redis does per message: eric-sse's add-on's pattern).
async fn raw_round_trips(url: &str, n: usize) -> Duration {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let start = Instant::now();
    for i in 0..n {
        let _: () = connection.rpush("raw:q", i).await.unwrap();
        let _: Option<u64> = connection.lpop("raw:q", None).await.unwrap();
    }
    start.elapsed()
}

/// Raw redis-rs: SETs pipelined 1,024 at a time, from 64 concurrent tasks (a ceiling
/// for what any client can store here).
async fn raw_pipelined(url: &str, n: usize) -> Duration {
    let client = redis::Client::open(url).unwrap();
    let connection = client.get_multiplexed_async_connection().await.unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|t| {
            let mut connection = connection.clone();
            tokio::spawn(async move {
                let mine: Vec<usize> = (t..n).step_by(PRODUCERS).collect();
                for chunk in mine.chunks(1024) {
                    let mut pipe = redis::pipe();
                    for i in chunk {
                        pipe.set(format!("raw:k:{i}"), "{\"v\":1}").ignore();
                    }
                    pipe.query_async::<()>(&mut connection).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
}

/// eric: `producers` tasks dispatch `n` messages to one stored listener while its
/// stream, read by a task of its own, reads them; the clock stops when all are read and
/// the reads recorded.
async fn eric_dispatch_deliver(
    storage: Arc<dyn KvStorage>,
    n: usize,
    producers: usize,
) -> Duration {
    let repository = SseChannelRepository::from_arc(storage);
    let channel = repository.create(ChannelSettings::default()).await.unwrap();
    let listener = channel.add_listener().await.unwrap();
    let mut stream = channel.message_stream(&listener).unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|t| {
            let channel = channel.clone();
            let listener = listener.clone();
            tokio::spawn(async move {
                for i in (t..n).step_by(producers) {
                    channel
                        .dispatch(&listener, Message::new("job", i))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    // The reader is a task, as every stream a server serves is (read from the thread
    // that blocks on the runtime, each delivery would cross threads).
    let reader = tokio::spawn(async move {
        for _ in 0..n {
            stream.next().await.unwrap().unwrap();
        }
    });
    reader.await.unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    channel.flush().await.unwrap();
    let elapsed = start.elapsed();
    repository.delete(channel.id()).await.unwrap();
    elapsed
}

struct Fanout {
    add: Duration,
    idle_broadcasts: usize,
    broadcast: Duration,
    deliver: Duration,
    record: Duration,
}

/// eric: `listeners` stored listeners. First, broadcasts stored while they are
/// registered but idle (the write path alone); then, each read by its own task,
/// `broadcasts` broadcasts delivered to all of them.
async fn eric_fanout(storage: Arc<dyn KvStorage>, listeners: usize, broadcasts: usize) -> Fanout {
    let repository = SseChannelRepository::from_arc(storage);
    let channel = repository.create(ChannelSettings::default()).await.unwrap();
    let start = Instant::now();
    let mut ids = Vec::with_capacity(listeners);
    for _ in 0..listeners {
        ids.push(channel.add_listener().await.unwrap());
    }
    let add = start.elapsed();

    let idle_broadcasts = 10_000;
    let start = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|t| {
            let channel = channel.clone();
            tokio::spawn(async move {
                let mut last = 0;
                for i in (t..idle_broadcasts).step_by(PRODUCERS) {
                    last = last.max(
                        channel
                            .broadcast(Message::new("news", i))
                            .await
                            .unwrap()
                            .seq,
                    );
                }
                last
            })
        })
        .collect();
    let mut last_seq = 0;
    for producer in producers {
        last_seq = last_seq.max(producer.await.unwrap());
    }
    let broadcast = start.elapsed();

    // Readers start after that backlog, as clients that saw it would.
    let last_id = channel.sse().adapter().event_id(last_seq);
    let mut readers = Vec::with_capacity(listeners);
    for id in &ids {
        let mut stream = channel.message_stream_resuming(id, Some(&last_id)).unwrap();
        readers.push(tokio::spawn(async move {
            for _ in 0..broadcasts {
                stream.next().await.unwrap().unwrap();
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    for i in 0..broadcasts {
        channel.broadcast(Message::new("news", i)).await.unwrap();
    }
    for reader in readers {
        reader.await.unwrap();
    }
    let deliver = start.elapsed();
    let before_record = Instant::now();
    channel.flush().await.unwrap();
    let record = before_record.elapsed();
    repository.delete(channel.id()).await.unwrap();
    Fanout {
        add,
        idle_broadcasts,
        broadcast,
        deliver,
        record,
    }
}

/// The same workloads on eric-sse 2.1.1.2 with its Redis add-on, eric-redis-queues
/// 2.0.0.10 (one RPUSH per listener per message, pickled), against this run's
/// redis-server.
const ERIC_REDIS_QUEUES: &str = r#"
import sys, time, json
from eric_sse.message import Message
from eric_sse.prefabs import SSEChannel
from eric_redis_queues import RedisConnection
from eric_redis_queues.repository import RedisConnectionFactory

port, n, listeners, broadcasts = (int(a) for a in sys.argv[1:5])
connection = RedisConnection(host="127.0.0.1", port=port)
out = {}

channel = SSEChannel(connections_factory=RedisConnectionFactory(connection))
listener = channel.add_listener()
listener.start()
start = time.perf_counter()
for i in range(n):
    channel.dispatch(listener.id, Message(msg_type="job", msg_payload=i))
for i in range(n):
    assert channel.deliver_next(listener.id).payload == i
out["dispatch_deliver"] = n / (time.perf_counter() - start)

channel = SSEChannel(connections_factory=RedisConnectionFactory(connection))
start = time.perf_counter()
for _ in range(listeners):
    channel.add_listener()
out["add_listeners"] = time.perf_counter() - start
start = time.perf_counter()
for i in range(broadcasts):
    channel.broadcast(Message(msg_type="news", msg_payload=i))
out["broadcasts"] = broadcasts / (time.perf_counter() - start)
print(json.dumps(out))
"#;

/// What eric-sse + eric-redis-queues measured, from the virtualenv the eric-socket
/// `python_client` test makes (`cargo bench --bench all` makes it first); `None`, with
/// the reason printed, where it cannot run.
struct PythonFigures {
    dispatch_deliver: f64,
    add_listeners: f64,
    broadcasts: f64,
}

fn eric_redis_queues(
    port: u16,
    n: usize,
    listeners: usize,
    broadcasts: usize,
) -> Option<PythonFigures> {
    use std::process::{Command, Stdio};
    let python =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-eric-sse/bin/python");
    if !python.exists() {
        println!(
            "(no eric-sse virtualenv at {}: `cargo test -p eric-socket --test python_client` makes it; eric-redis-queues not measured)\n",
            python.display()
        );
        return None;
    }
    let importable = |python: &std::path::Path| {
        Command::new(python)
            .args(["-c", "import eric_redis_queues"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !importable(&python) {
        let _ = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "eric-redis-queues==2.0.0.10",
            ])
            .status();
    }
    let out = Command::new(&python)
        .args(["-c", ERIC_REDIS_QUEUES])
        .arg(port.to_string())
        .args([n, listeners, broadcasts].map(|v| v.to_string()))
        .output()
        .ok()?;
    let figures: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(_) => {
            println!(
                "(eric-redis-queues did not run: {})\n",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("?")
            );
            return None;
        }
    };
    let get = |k: &str| figures[k].as_f64().unwrap_or(f64::NAN);
    Some(PythonFigures {
        dispatch_deliver: get("dispatch_deliver"),
        add_listeners: get("add_listeners"),
        broadcasts: get("broadcasts"),
    })
}

fn redis_benchmark(port: u16) -> Option<String> {
    let out = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "set",
            "-n",
            "200000",
            "-P",
            "16",
            "-q",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Progress lines end in CR; the summary is the last piece with the figure.
    text.split(['\r', '\n'])
        .rev()
        .find(|l| l.contains("requests per second"))
        .map(|l| l.trim().to_owned())
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let only = |part: &str| {
        let parts = ["dispatch", "fanout"];
        let chosen: Vec<String> = std::env::args()
            .filter(|a| parts.contains(&a.as_str()))
            .collect();
        chosen.is_empty() || chosen.iter().any(|c| c == part)
    };
    let server = RedisServer::start();
    let url = server.url();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n = if quick { 20_000 } else { 100_000 };
    println!(
        "# eric-persistence on Redis ({} cores, redis-server of its own on 127.0.0.1:{port})\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // eric-sse on its Redis add-on, same server, same run (slow: a fifth of the messages,
    // 1,000 listeners).
    let python = eric_redis_queues(port, n / 5, 1_000, if quick { 5 } else { 20 });

    rt.block_on(async {
        let storage: Arc<dyn KvStorage> = Arc::new(RedisStorage::connect(&url).await.unwrap());

        if only("dispatch") {
        println!("## dispatch + deliver, one listener, {n} messages\n");
        println!("| run | msg/s | notes |");
        println!("|---|---:|---|");
        let raw_n = n / 5;
        if let Some(p) = &python {
            println!("| eric-sse 2.1.1.2 + eric-redis-queues 2.0.0.10, dispatch then deliver_next, {raw_n} messages | {:.1} k/s | the Python original on this Redis |", p.dispatch_deliver / 1e3);
        }
        let raw = raw_round_trips(&url, raw_n).await;
        println!("| reference: raw redis-rs, RPUSH + LPOP per message, awaited | {} | eric-redis-queues' pattern without Python |", rate(raw_n, raw));
        let piped = raw_pipelined(&url, n).await;
        println!("| reference: raw redis-rs, SETs pipelined by 1,024 from {PRODUCERS} tasks | {} | a ceiling for storing here |", rate(n, piped));
        let one = eric_dispatch_deliver(Arc::clone(&storage), raw_n, 1).await;
        println!("| eric, 1 producer awaiting each dispatch | {} | one round trip per message |", rate(raw_n, one));
        let many = eric_dispatch_deliver(Arc::clone(&storage), n, PRODUCERS).await;
        let eric_rate = n as f64 / many.as_secs_f64();
        let python_rate = python.as_ref().map_or(f64::NAN, |p| p.dispatch_deliver);
        println!(
            "| eric, {PRODUCERS} producers (group commit), 2 tokio workers | **{}** | stored, delivered, reads recorded; {:.0}x eric-redis-queues; {:.2}x the pipelined ceiling |",
            rate(n, many),
            eric_rate / python_rate,
            piped.as_secs_f64() / many.as_secs_f64()
        );
        // The same on one tokio worker: on this 2-core machine, the other core is left
        // to the redis-server (and producers, writer and reader wake each other without
        // crossing threads).
        let one_worker = {
            let url = url.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let storage: Arc<dyn KvStorage> =
                        Arc::new(RedisStorage::connect(&url).await.unwrap());
                    eric_dispatch_deliver(storage, n, PRODUCERS).await
                })
            })
            .join()
            .unwrap()
        };
        let one_rate = n as f64 / one_worker.as_secs_f64();
        println!(
            "| eric, {PRODUCERS} producers, 1 tokio worker | **{}** | {:.0}x eric-redis-queues; {:.2}x the 2-worker run |",
            rate(n, one_worker),
            one_rate / python_rate,
            one_rate / eric_rate
        );

        let memory: Arc<dyn KvStorage> = Arc::new(eric_persistence::InMemoryStorage::new());
        let in_memory = eric_dispatch_deliver(memory, n, PRODUCERS).await;
        println!(
            "| eric on InMemoryStorage, {PRODUCERS} producers | {} | the same path with no Redis: what eric's own hand-offs cost |",
            rate(n, in_memory)
        );
        if let Some(line) = redis_benchmark(port) {
            println!("| reference: redis-benchmark -t set -P 16 | {line} | |");
        }
        println!(
            "\nsummary: | Redis: dispatch + deliver, one stored listener | {} | eric-redis-queues {:.1} k/s | **{:.0}x** |",
            rate(n, many),
            python_rate / 1e3,
            eric_rate / python_rate
        );
        }
        if !only("fanout") {
            return;
        }

        println!("\n## broadcast to stored listeners (each read by its own task)\n");
        println!("| listeners | add listeners | broadcasts stored/s, listeners idle | broadcasts delivered | listener-deliveries/s | record all reads |");
        println!("|---:|---:|---:|---:|---:|---:|");
        let shapes: &[(usize, usize)] = if quick { &[(1_000, 200), (10_000, 10)] } else { &[(1_000, 1_000), (100_000, 20)] };
        if let Some(p) = &python {
            println!("| 1000, eric-sse + eric-redis-queues | {:.2?} | {:.1}/s | | | |", Duration::from_secs_f64(p.add_listeners), p.broadcasts);
        }
        let mut summary = String::new();
        for &(listeners, broadcasts) in shapes {
            let f = eric_fanout(Arc::clone(&storage), listeners, broadcasts).await;
            if listeners == 1_000 {
                let per_second = f.idle_broadcasts as f64 / f.broadcast.as_secs_f64();
                let python_rate = python.as_ref().map_or(f64::NAN, |p| p.broadcasts);
                summary = format!(
                    "summary: | Redis: broadcasts stored, 1,000 stored listeners | {} | eric-redis-queues {python_rate:.1}/s | **{:.0}x** |",
                    rate(f.idle_broadcasts, f.broadcast),
                    per_second / python_rate
                );
            }
            println!(
                "| {listeners} | {:.2?} | {} | {broadcasts} | {} | {:.2?} |",
                f.add,
                rate(f.idle_broadcasts, f.broadcast),
                rate(listeners * broadcasts, f.deliver),
                f.record
            );
        }
        let clients: String = redis::cmd("INFO")
            .arg("clients")
            .query_async(&mut redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap())
            .await
            .unwrap();
        let connected = clients.lines().find(|l| l.starts_with("connected_clients")).unwrap_or("?");
        println!("\nRedis {connected} (this benchmark's raw-reference connections included): no connection per listener.");
        println!("\n{summary}");
    });
}

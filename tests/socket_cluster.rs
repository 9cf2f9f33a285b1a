//! The socket controller in cluster mode: two `eric socket serve --cluster` processes
//! and an `eric serve --cluster` on one Redis share their channels. eric-sse's own
//! Python `SocketClient` drives both sockets: a broadcast and a dispatch sent to one
//! reach a `listen` on the other; a broadcast sent to a socket reaches an HTTP
//! subscriber, and one made over HTTP reaches the socket's listener.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/eric_serve.rs"]
mod eric_serve;
#[path = "../crates/eric-socket/tests/support/python.rs"]
mod python;
#[path = "../crates/eric-persistence/tests/support/mod.rs"]
mod redis_support;
#[path = "support/sse_client.rs"]
mod sse_client;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eric_serve::EricServe;
use serde_json::{Value, json};

/// What each step does with eric-sse's `SocketClient`; prints JSON.
const SCENARIO: &str = r#"
import asyncio, json, sys
from eric_sse.clients import SocketClient

async def read(client, channel, listener, count):
    lines = []
    async def take():
        async for line in client.stream(channel, listener):
            lines.append(json.loads(line))
            if len(lines) == count:
                break
    await asyncio.wait_for(take(), 10)
    return lines

async def main(step, args):
    if step == "setup":
        a, b = SocketClient(args[0]), SocketClient(args[1])
        channel = await a.create_channel()
        listener = await a.register(channel)
        sent = [await a.broadcast_message(channel, "news", {"n": 1}),
                await a.dispatch(channel, listener, "dm", "for you")]
        lines = await read(b, channel, listener, 2)
        print(json.dumps({"channel": channel, "listener": listener, "sent": sent, "lines": lines}))
    elif step == "broadcast":
        print(json.dumps(await SocketClient(args[0]).broadcast_message(args[1], "news", {"n": int(args[2])})))
    elif step == "listen":
        print(json.dumps(await read(SocketClient(args[0]), args[1], args[2], int(args[3]))))

asyncio.run(main(sys.argv[1], sys.argv[2:]))
"#;

/// `eric socket serve PATH --redis URL --cluster`, killed on drop.
struct SocketServe {
    child: Child,
    path: PathBuf,
}

impl SocketServe {
    fn start(redis_url: &str, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("eric-socket-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let child = Command::new(env!("CARGO_BIN_EXE_eric"))
            .args(["socket", "serve"])
            .arg(&path)
            .args(["--redis", redis_url, "--cluster"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Owned at once, so that it is killed and reaped however this ends.
        let server = SocketServe { child, path };
        for _ in 0..200 {
            if server.path.exists() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("eric socket serve did not create {:?}", server.path);
    }
}

impl Drop for SocketServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn run(python: &Path, step: &str, args: &[&str]) -> Value {
    let out = Command::new(python)
        .args(["-c", SCENARIO, step])
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "the {step} step failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn step(python: &Path, step: &'static str, args: Vec<String>) -> Value {
    let python = python.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&python, step, &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_servers_and_an_http_server_in_cluster_mode_share_channels() {
    let Some(python) = python::venv() else { return };
    let redis = redis_support::RedisServer::start();
    let (a, b) = (
        SocketServe::start(&redis.url(), "a.sock"),
        SocketServe::start(&redis.url(), "b.sock"),
    );
    let http = EricServe::start(&["--cluster", "--redis", &redis.url()]);
    let path = |s: &SocketServe| s.path.to_string_lossy().into_owned();

    // Sent to socket A, read through socket B.
    let setup = step(&python, "setup", vec![path(&a), path(&b)]).await;
    assert_eq!(setup["sent"], json!(["ack", "ack"]));
    let lines = &setup["lines"];
    assert_eq!(
        lines[0],
        json!({"event": "news", "retry": 5, "data": {"n": 1}})
    );
    assert_eq!(
        lines[1],
        json!({"event": "dm", "retry": 5, "data": "for you"})
    );
    let channel = setup["channel"].as_str().unwrap().to_owned();
    let listener = setup["listener"].as_str().unwrap().to_owned();

    // Sent to socket A, read by an HTTP subscriber of `eric serve --cluster`.
    let mut subscriber = sse_client::subscribe_to(&http.base, &channel, None).await;
    let acked = step(
        &python,
        "broadcast",
        vec![path(&a), channel.clone(), "2".into()],
    )
    .await;
    assert_eq!(acked, "ack");
    let (_, event, data) = tokio::time::timeout(Duration::from_secs(10), subscriber.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((event.as_str(), data.as_str()), ("news", r#"{"n":2}"#));

    // Broadcast over HTTP, read through socket B by the stored listener, after what it
    // had not read yet.
    let client = reqwest::Client::new();
    sse_client::publish_to(&client, &http.base, &channel, 3).await;
    let read = step(
        &python,
        "listen",
        vec![path(&b), channel, listener, "2".into()],
    )
    .await;
    assert_eq!(read[0]["data"], json!({"n": 2}));
    assert_eq!(read[1]["data"], json!({"n": 3}));
}

//! Commands per second from 8 concurrent clients: eric's socket server, and eric-sse's
//! Python server in the same run where its virtualenv exists (the python_client test
//! makes it). `cargo bench -p eric-socket --bench commands [-- burst]` (`burst`: 100,000 more).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eric_socket::{SocketClient, SocketServer};
use serde_json::json;

const CLIENTS: usize = 8;

fn socket_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eric-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("s.sock")
}

/// `CLIENTS` tasks, each sending `per_client` broadcasts, one connection each; returns
/// commands per second.
async fn commands_per_second(path: &Path, per_client: usize) -> f64 {
    let client = SocketClient::new(path);
    let channel = client.create_channel().await.unwrap();
    for _ in 0..3 {
        client.register(&channel).await.unwrap();
    }
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let client = client.clone();
            let channel = channel.clone();
            tokio::spawn(async move {
                for n in 0..per_client {
                    client
                        .broadcast_message(&channel, "tick", json!({"client": t, "n": n}))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (CLIENTS * per_client) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "# socket commands/s, {CLIENTS} concurrent clients, one connection per command (broadcasts to a channel with 3 listeners)\n"
    );
    println!("| server | commands/s | ratio |");
    println!("|---|---:|---:|");

    // eric-sse's Python server, if the python_client test left its virtualenv.
    let python = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-eric-sse/bin/python");
    let theirs = python.exists().then(|| {
        let path = socket_path("python");
        let mut server = Command::new(&python)
            .args(["-c", "import sys, logging; logging.disable(logging.CRITICAL); from eric_sse.servers import SocketServer; SocketServer.start(sys.argv[1])"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if path.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let rate = rt.block_on(commands_per_second(&path, 250));
        let _ = server.kill();
        let _ = server.wait();
        rate
    });

    let path = socket_path("eric");
    let ours = rt.block_on(async {
        let server = SocketServer::bind(&path).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        // Warm up, then measure.
        commands_per_second(&path, 200).await;
        let rate = commands_per_second(&path, 5_000).await;
        if std::env::args().any(|a| a == "burst") {
            // Issue 9: a burst of 100,000 commands, every one acknowledged.
            let burst = commands_per_second(&path, 100_000 / CLIENTS).await;
            println!("| eric, a burst of 100,000 commands from {CLIENTS} clients | {burst:.0} | all acknowledged |");
        }
        let _ = stop.send(());
        running.await.unwrap().unwrap();
        rate
    });
    match theirs {
        Some(theirs) => {
            println!("| eric-sse 2.1.1.2 (Python) | {theirs:.0} | 1 |");
            println!("| eric | **{ours:.0}** | **{:.1}x** |", ours / theirs);
        }
        None => {
            println!(
                "| eric | **{ours:.0}** | (run `cargo test -p eric-socket --test python_client` once to measure eric-sse beside it) |"
            );
        }
    }
    println!("\ntarget (issue 6): >= 20,000 commands/s; eric-sse's server does about 2,100 here");
    if let Some(theirs) = theirs {
        println!(
            "\nsummary: | socket: commands/s, one connection each | {ours:.0}/s | eric-sse's server {theirs:.0}/s | **{:.1}x** |",
            ours / theirs
        );
    }
}

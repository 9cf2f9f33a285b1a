//! Broadcast + drain: eric's streams, `tokio::sync::broadcast` and `async-broadcast`,
//! each receiver read by its own tokio task, the same messages, in the same run.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use eric_core::{Channel, Message, MessageAdapter};
use futures_util::StreamExt;

use super::growth::plot_log_log;
use super::{RawMessage, SAMPLE_BUDGET, broadcasts_per_sample, docs_path, median, payload};

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    if std::env::var_os("ERIC_BENCH_CURRENT_THREAD").is_some() {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Broadcasts `per_sample` messages to `listeners` streams, each read by its own tokio
/// task; returns the time until every task has read every message.
pub(crate) async fn broadcast_and_drain(
    channel: &Channel,
    listeners: usize,
    per_sample: usize,
) -> Duration {
    let done = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(tokio::sync::Notify::new());
    let mut ids = Vec::with_capacity(listeners);
    for _ in 0..listeners {
        let listener = channel.add_listener().unwrap();
        let mut stream = channel.message_stream(listener.id()).unwrap();
        let (done, all_done) = (Arc::clone(&done), Arc::clone(&all_done));
        tokio::spawn(async move {
            for _ in 0..per_sample {
                black_box(stream.next().await.unwrap().unwrap());
            }
            if done.fetch_add(1, Ordering::AcqRel) + 1 == listeners {
                all_done.notify_one();
            }
        });
        ids.push(listener);
    }
    // Let every reader reach its first wait.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let msg = Message::new("news", payload());
    let start = Instant::now();
    for _ in 0..per_sample {
        channel.broadcast(msg.clone()).unwrap();
    }
    all_done.notified().await;
    let elapsed = start.elapsed();
    for listener in ids {
        channel.remove_listener(listener.id()).unwrap();
    }
    elapsed
}

/// The same as [`broadcast_and_drain`] through `tokio::sync::broadcast`: one task per
/// receiver, a capacity that never lags, the same message cloned into every slot.
pub(crate) async fn tokio_broadcast_and_drain(listeners: usize, per_sample: usize) -> Duration {
    let (sender, _) = tokio::sync::broadcast::channel(per_sample.max(2));
    let done = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(tokio::sync::Notify::new());
    for _ in 0..listeners {
        let mut receiver = sender.subscribe();
        let (done, all_done) = (Arc::clone(&done), Arc::clone(&all_done));
        tokio::spawn(async move {
            for _ in 0..per_sample {
                black_box(receiver.recv().await.unwrap());
            }
            if done.fetch_add(1, Ordering::AcqRel) + 1 == listeners {
                all_done.notify_one();
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let msg = Message::new("news", payload());
    let start = Instant::now();
    for _ in 0..per_sample {
        sender.send(msg.clone()).unwrap();
    }
    all_done.notified().await;
    start.elapsed()
}

/// The same through `async-broadcast` (smol-rs): one task per receiver, a capacity
/// that never overflows.
pub(crate) async fn async_broadcast_and_drain(listeners: usize, per_sample: usize) -> Duration {
    let (sender, receiver) = async_broadcast::broadcast(per_sample.max(2));
    let done = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(tokio::sync::Notify::new());
    for _ in 0..listeners {
        let mut receiver = receiver.clone();
        let (done, all_done) = (Arc::clone(&done), Arc::clone(&all_done));
        tokio::spawn(async move {
            for _ in 0..per_sample {
                black_box(receiver.recv_direct().await.unwrap());
            }
            if done.fetch_add(1, Ordering::AcqRel) + 1 == listeners {
                all_done.notify_one();
            }
        });
    }
    drop(receiver);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let msg = Message::new("news", payload());
    let start = Instant::now();
    for _ in 0..per_sample {
        sender.try_broadcast(msg.clone()).unwrap();
    }
    all_done.notified().await;
    start.elapsed()
}

/// The receiver counts to run: `ERIC_DRAIN_LISTENERS=1000,100000` picks some (to
/// profile one), all five otherwise.
fn drain_sizes() -> Vec<usize> {
    let all = vec![10, 100, 1_000, 10_000, 100_000];
    std::env::var("ERIC_DRAIN_LISTENERS").map_or(all, |sizes| {
        sizes
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("ERIC_DRAIN_LISTENERS: numbers, comma-separated")
            })
            .collect()
    })
}

pub(crate) fn bench_drain() {
    println!(
        "\n## broadcast + drain through message_stream (one tokio task per listener, 2 worker threads)\n"
    );
    println!(
        "Reference: the same fan-out into `Vec<VecDeque<Arc<_>>>` and a drain loop popping every queue, one thread, no wake-ups.\n"
    );
    println!(
        "Beside it, what a Rust user would pick instead, driven the same way (one task per receiver, same runtime, same message): `tokio::sync::broadcast` and `async-broadcast`.\n"
    );
    println!(
        "| listeners | msgs/listener | reference M deliveries/s | eric M deliveries/s | ratio | tokio broadcast M/s | eric / tokio | async-broadcast M/s | eric / async-broadcast | target |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let rt = runtime();
    let mut points = Vec::new();
    let mut summary = String::new();
    for listeners in drain_sizes() {
        let per_sample = broadcasts_per_sample(listeners);
        let deliveries = (per_sample * listeners) as f64;
        let raw = Arc::new(RawMessage {
            message_type: "news".into(),
            payload: payload(),
        });
        let mut reference: Vec<VecDeque<Arc<RawMessage>>> =
            (0..listeners).map(|_| VecDeque::new()).collect();
        let channel: Channel<MessageAdapter> = Channel::default();
        let (mut ref_rate, mut eric_rate) = (Vec::new(), Vec::new());
        let (mut tokio_rate, mut async_rate) = (Vec::new(), Vec::new());
        let start = Instant::now();
        while start.elapsed() < SAMPLE_BUDGET * 2 || ref_rate.len() < 5 {
            let t = Instant::now();
            for _ in 0..per_sample {
                for queue in reference.iter_mut() {
                    queue.push_back(Arc::clone(&raw));
                }
            }
            for queue in reference.iter_mut() {
                while let Some(m) = queue.pop_front() {
                    black_box(m);
                }
            }
            ref_rate.push(deliveries / t.elapsed().as_secs_f64() / 1e6);

            let elapsed = rt.block_on(broadcast_and_drain(&channel, listeners, per_sample));
            eric_rate.push(deliveries / elapsed.as_secs_f64() / 1e6);
            let elapsed = rt.block_on(tokio_broadcast_and_drain(listeners, per_sample));
            tokio_rate.push(deliveries / elapsed.as_secs_f64() / 1e6);
            let elapsed = rt.block_on(async_broadcast_and_drain(listeners, per_sample));
            async_rate.push(deliveries / elapsed.as_secs_f64() / 1e6);
        }
        let (r, e) = (median(ref_rate), median(eric_rate));
        let (t, a) = (median(tokio_rate), median(async_rate));
        let target = match listeners {
            1_000 => ">= 10 M/s; >= 1.5x tokio",
            10 | 10_000 => ">= 1.0x tokio",
            _ => "",
        };
        println!(
            "| {listeners} | {per_sample} | {r:.1} | {e:.1} | {:.2} | {t:.1} | {:.2} | {a:.1} | {:.2} | {target} |",
            e / r,
            e / t,
            e / a
        );
        if listeners == 1_000 {
            summary = format!(
                "summary: | core: broadcast + drain, 1,000 streams on tokio tasks | {e:.1} M deliveries/s | push + pop, one thread, no tasks: {r:.1} M/s | {:.2}x (target >= 10 M/s) |\nsummary: | core: broadcast + drain, 1,000 receivers on tokio tasks | {e:.1} M deliveries/s | tokio::sync::broadcast {t:.1} M/s; async-broadcast {a:.1} M/s | {:.2}x tokio, {:.2}x async-broadcast (target >= 1.5x tokio) |",
                e / r,
                e / t,
                e / a
            );
        }
        points.push((listeners as f64, e * 1e6, r * 1e6));
    }
    let svg = docs_path("throughput.svg");
    plot_log_log(
        &svg,
        "deliveries per second against listeners (log-log)",
        ("listeners", "deliveries/s"),
        &[
            (
                "eric: broadcast, each listener's stream read by its own tokio task",
                plotters::style::BLUE,
                points.iter().map(|p| (p.0, p.1)).collect(),
            ),
            (
                "reference: push to every queue, then pop them all, one thread",
                plotters::style::RED,
                points.iter().map(|p| (p.0, p.2)).collect(),
            ),
        ],
    );
    println!("\nplot: {}\n\n{summary}", svg.display());
}

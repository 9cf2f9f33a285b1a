//! eric-core's benchmark: broadcast enqueue and broadcast + drain next to a raw
//! reference measured in the same run (and the drain next to `tokio::sync::broadcast`
//! and `async-broadcast`, driven the same way), idle CPU of waiting streams, and memory per idle
//! listener.
//!
//! `cargo bench -p eric-core --bench broadcast [-- enqueue|drain|instructions|idle|memory ...]`;
//! `-- growth` (not in the default run): broadcast cost and memory from 10 to 1,000,000
//! listeners and up to 1,000,000 unread messages.
//!
//! The machine is shared and noisy: each figure is the median of many short samples,
//! eric's and the reference's interleaved, and the ratio is what to compare across runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use eric_core::{Channel, Message, MessageAdapter, MessageQueueListener};
use futures_util::StreamExt;
use serde_json::{Value, json};

#[path = "broadcast/instructions.rs"]
mod instructions;

/// Counts live heap bytes and allocations, to measure memory per listener exactly.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The reference's message: what eric's `Message` holds, behind one `Arc`.
#[allow(dead_code)]
struct RawMessage {
    message_type: String,
    payload: Value,
}

const SIZES: [usize; 3] = [10, 1_000, 100_000];
const SAMPLE_BUDGET: Duration = Duration::from_millis(1500);

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Broadcasts per sample: enough deliveries to time, few enough to stay in memory.
fn broadcasts_per_sample(listeners: usize) -> usize {
    (200_000 / listeners).clamp(2, 256)
}

fn payload() -> Value {
    json!({"text": "hello, listeners", "n": 42})
}

fn bench_enqueue() {
    let mut summary = String::new();
    println!(
        "\n## broadcast enqueue, and enqueue + drain on one thread (ns per listener-delivery, median)\n"
    );
    println!("ratio = reference time / eric time: above 1, eric is faster.\n");
    println!(
        "| listeners | reference enqueue ns | eric enqueue ns | ratio (target >= 0.5) | reference enqueue+drain ns | eric broadcast+deliver_next ns | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for listeners in SIZES {
        let per_sample = broadcasts_per_sample(listeners);
        let deliveries = (per_sample * listeners) as f64;

        let mut reference: Vec<VecDeque<Arc<RawMessage>>> =
            (0..listeners).map(|_| VecDeque::new()).collect();
        let raw = Arc::new(RawMessage {
            message_type: "news".into(),
            payload: payload(),
        });

        let channel = Channel::default();
        let listener_ids: Vec<String> = (0..listeners)
            .map(|_| {
                let listener = channel.add_listener().unwrap();
                listener.start();
                listener.id().to_owned()
            })
            .collect();
        let msg = Message::new("news", payload());
        let drain_eric = || {
            for id in &listener_ids {
                while let Ok(m) = channel.deliver_next(id) {
                    black_box(m);
                }
            }
        };

        let (mut ref_enq, mut eric_enq, mut ref_all, mut eric_all) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let start = Instant::now();
        while start.elapsed() < SAMPLE_BUDGET || ref_enq.len() < 5 {
            let t = Instant::now();
            for _ in 0..per_sample {
                for queue in reference.iter_mut() {
                    queue.push_back(Arc::clone(&raw));
                }
            }
            let enqueued = t.elapsed();
            for queue in reference.iter_mut() {
                while let Some(m) = queue.pop_front() {
                    black_box(m);
                }
            }
            ref_enq.push(enqueued.as_nanos() as f64 / deliveries);
            ref_all.push(t.elapsed().as_nanos() as f64 / deliveries);

            let t = Instant::now();
            for _ in 0..per_sample {
                black_box(channel.broadcast(msg.clone()).unwrap());
            }
            let enqueued = t.elapsed();
            drain_eric();
            eric_enq.push(enqueued.as_nanos() as f64 / deliveries);
            eric_all.push(t.elapsed().as_nanos() as f64 / deliveries);
        }
        let (re, ee, ra, ea) = (
            median(ref_enq),
            median(eric_enq),
            median(ref_all),
            median(eric_all),
        );
        println!(
            "| {listeners} | {re:.2} | {ee:.3} | {:.1} | {ra:.1} | {ea:.1} | {:.2} |",
            re / ee,
            ra / ea
        );
        if listeners == 1_000 {
            summary = format!(
                "summary: | core: broadcast to 1,000 listeners | {:.0} ns | a push per listener: {:.0} ns | **{:.0}x** |",
                ee * 1e3,
                re * 1e3,
                re / ee
            );
        }
    }
    println!("\n{summary}");
}

fn runtime() -> tokio::runtime::Runtime {
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
async fn broadcast_and_drain(channel: &Channel, listeners: usize, per_sample: usize) -> Duration {
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
async fn tokio_broadcast_and_drain(listeners: usize, per_sample: usize) -> Duration {
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
async fn async_broadcast_and_drain(listeners: usize, per_sample: usize) -> Duration {
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

fn bench_drain() {
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
    for listeners in [10, 100, 1_000, 10_000, 100_000] {
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

/// CPU time of this process so far (all threads), from the scheduler's own accounting.
fn process_cpu_time() -> Duration {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
            total += stat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(total)
}

fn bench_idle() {
    const STREAMS: usize = 1_000;
    const IDLE: Duration = Duration::from_secs(5);
    println!("\n## idle cost: {STREAMS} open streams waiting for {IDLE:?}\n");
    let rt = runtime();
    let channel: Channel<MessageAdapter> = Channel::default();
    let received = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        for _ in 0..STREAMS {
            let mut stream = channel.watch().unwrap();
            let received = Arc::clone(&received);
            tokio::spawn(async move {
                while let Some(item) = stream.next().await {
                    item.unwrap();
                    received.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Prove the streams are live: one broadcast reaches all of them.
        tokio::time::sleep(Duration::from_millis(50)).await;
        channel.broadcast(Message::of_type("hello")).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    assert_eq!(received.load(Ordering::Relaxed), STREAMS);

    // Reference: the same process, doing nothing, for the same time.
    let before = process_cpu_time();
    let wall = Instant::now();
    rt.block_on(async { tokio::time::sleep(IDLE).await });
    let cpu = process_cpu_time() - before;
    let share = cpu.as_secs_f64() / wall.elapsed().as_secs_f64() * 100.0;
    println!("| streams | wall | CPU used (all threads) | share of one core | target |");
    println!("|---:|---:|---:|---:|---|");
    println!(
        "| {STREAMS} | {:.2} s | {:.3} ms | {share:.4} % | < 1 % |",
        wall.elapsed().as_secs_f64(),
        cpu.as_secs_f64() * 1e3
    );
    println!(
        "\nsummary: | core: {STREAMS} idle streams, CPU | {share:.4} % of one core | target < 1 % | |"
    );
    channel.close();
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .unwrap_or(0)
        * 1024
}

fn bench_memory(alone: bool) {
    const LISTENERS: usize = 100_000;
    println!("\n## memory per idle in-memory listener ({LISTENERS} listeners)\n");
    println!(
        "| what | heap bytes per listener | allocations per listener | RSS growth per listener | target |"
    );
    println!("|---|---:|---:|---:|---|");

    let channel: Channel<MessageAdapter> = Channel::default();
    // The benchmark's own Vec of handles is allocated up front, outside the measurement.
    let mut listeners = Vec::with_capacity(LISTENERS);
    let (bytes0, allocs0, rss0) = (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_ALLOCS.load(Ordering::Relaxed),
        rss_bytes(),
    );
    for _ in 0..LISTENERS {
        listeners.push(channel.add_listener().unwrap());
    }
    let bytes = (LIVE_BYTES.load(Ordering::Relaxed) - bytes0) as f64 / LISTENERS as f64;
    let allocs = (LIVE_ALLOCS.load(Ordering::Relaxed) - allocs0) as f64 / LISTENERS as f64;
    let rss = (rss_bytes().saturating_sub(rss0)) as f64 / LISTENERS as f64;
    // RSS only means something in a fresh process: after other benchmarks, malloc
    // reuses what they freed and RSS does not move.
    let show_rss = |per: f64| {
        if alone {
            format!("{per:.0}")
        } else {
            "(run `memory` alone)".to_owned()
        }
    };
    println!(
        "| registered listener (queue empty) | {bytes:.0} | {allocs:.1} | {} | <= 512 |",
        show_rss(rss)
    );

    let rt = runtime();
    let (bytes1, rss1) = (LIVE_BYTES.load(Ordering::Relaxed), rss_bytes());
    rt.block_on(async {
        for listener in &listeners {
            let mut stream = channel.message_stream(listener.id()).unwrap();
            tokio::spawn(async move { while stream.next().await.is_some() {} });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let stream_bytes = (LIVE_BYTES.load(Ordering::Relaxed) - bytes1) as f64 / LISTENERS as f64;
    let stream_rss = (rss_bytes().saturating_sub(rss1)) as f64 / LISTENERS as f64;
    println!(
        "| + an open stream read by a waiting tokio task | +{stream_bytes:.0} | | +{} | (task memory is tokio's) |",
        show_rss(stream_rss)
    );
    println!(
        "\nsummary: | core: heap per idle listener | {bytes:.0} B ({allocs:.0} allocations) | target <= 512 B | |"
    );
    channel.close();
}

/// Issue 10: how each cost grows with listeners and with unread messages.
fn bench_growth() {
    let msg = Message::new("news", payload());
    println!("\n## how costs grow: listeners\n");
    println!(
        "| listeners | eric ns per broadcast | reference ns per broadcast (a push per listener) | heap bytes per idle listener |"
    );
    println!("|---:|---:|---:|---:|");
    let mut summary = String::new();
    let mut points = Vec::new();
    for listeners in [10usize, 100, 1_000, 10_000, 100_000, 1_000_000] {
        let channel = Channel::default();
        let mut handles = Vec::with_capacity(listeners);
        let counted = LIVE_BYTES.load(Ordering::Relaxed);
        for _ in 0..listeners {
            handles.push(channel.add_listener().unwrap());
        }
        let per_listener = (LIVE_BYTES.load(Ordering::Relaxed) - counted) as f64 / listeners as f64;
        // Idle listeners: every broadcast stays unread, in the channel's one log.
        let broadcasts = 1_000;
        let t = Instant::now();
        for _ in 0..broadcasts {
            black_box(channel.broadcast(msg.clone()).unwrap());
        }
        let eric_ns = t.elapsed().as_nanos() as f64 / broadcasts as f64;

        let reference_broadcasts = (10_000_000 / listeners).clamp(5, 1_000);
        let raw = Arc::new(RawMessage {
            message_type: "news".into(),
            payload: payload(),
        });
        let mut reference: Vec<VecDeque<Arc<RawMessage>>> =
            (0..listeners).map(|_| VecDeque::new()).collect();
        let t = Instant::now();
        for _ in 0..reference_broadcasts {
            for queue in reference.iter_mut() {
                queue.push_back(Arc::clone(&raw));
            }
        }
        let reference_ns = t.elapsed().as_nanos() as f64 / reference_broadcasts as f64;
        println!("| {listeners} | {eric_ns:.0} | {reference_ns:.0} | {per_listener:.0} |");
        if listeners == 1_000_000 {
            summary = format!(
                "summary: | core: broadcast to 1,000,000 listeners | {eric_ns:.0} ns | a push per listener: {:.1} ms | **{:.0}x** |",
                reference_ns / 1e6,
                reference_ns / eric_ns
            );
        }
        points.push((listeners as f64, eric_ns, reference_ns));
        drop(reference);
        channel.close();
        drop(handles);
    }

    let svg = docs_path("growth.svg");
    plot_log_log(
        &svg,
        "time per broadcast against listeners (log-log)",
        ("listeners", "ns per broadcast"),
        &[
            (
                "eric: one append to the channel's log",
                plotters::style::BLUE,
                points.iter().map(|p| (p.0, p.1)).collect(),
            ),
            (
                "reference: a push to every listener's queue",
                plotters::style::RED,
                points.iter().map(|p| (p.0, p.2)).collect(),
            ),
        ],
    );
    println!("\nplot: {}\n\n{summary}", svg.display());

    println!("\n## how costs grow: unread messages\n");
    println!(
        "| unread | listeners | heap bytes per unread broadcast | heap bytes per unread dispatch |"
    );
    println!("|---:|---:|---:|---:|");
    for listeners in [1usize, 1_000] {
        for unread in [10_000usize, 100_000, 1_000_000] {
            let per_broadcast = heap_per_unread(listeners, unread, |channel, _, n| {
                channel.broadcast(Message::new("news", n)).unwrap();
            });
            let per_dispatch = heap_per_unread(listeners, unread, |channel, handles, n| {
                let to = handles[n % handles.len()].id();
                channel.dispatch(to, Message::new("dm", n)).unwrap();
            });
            println!("| {unread} | {listeners} | {per_broadcast:.0} | {per_dispatch:.0} |");
        }
    }
}

/// Heap bytes per message, after `send(channel, listeners, n)` for n in 0..`unread` on a
/// channel of `listeners` idle listeners (so everything sent stays unread).
fn heap_per_unread(
    listeners: usize,
    unread: usize,
    send: impl Fn(&Channel, &[Arc<MessageQueueListener>], usize),
) -> f64 {
    let channel = Channel::default();
    let handles: Vec<_> = (0..listeners)
        .map(|_| channel.add_listener().unwrap())
        .collect();
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for n in 0..unread {
        send(&channel, &handles, n);
    }
    let per_message = (LIVE_BYTES.load(Ordering::Relaxed) - before) as f64 / unread as f64;
    channel.close();
    per_message
}

/// A plotted line: its label, its colour, its points.
type Series<'a> = (&'a str, plotters::style::RGBColor, Vec<(f64, f64)>);

/// One line per series, both axes logarithmic (docs/growth.svg, docs/throughput.svg).
fn plot_log_log(
    path: &std::path::Path,
    caption: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series<'_>],
) {
    use plotters::prelude::*;

    let points = || series.iter().flat_map(|s| s.2.iter());
    let x_max = points().map(|p| p.0).fold(1.0, f64::max) * 2.0;
    let y_min = points().map(|p| p.1).fold(f64::INFINITY, f64::min) / 3.0;
    let y_max = points().map(|p| p.1).fold(1.0, f64::max) * 3.0;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d((5.0..x_max).log_scale(), (y_min..y_max).log_scale())
        .unwrap();
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| human(*x))
        .y_label_formatter(&|y| human(*y))
        .draw()
        .unwrap();
    for (label, color, line) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))
            .unwrap()
            .label(*label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        chart
            .draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .unwrap();
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .unwrap();
    root.present().unwrap();
}

/// 1500 -> "1.5k", 2e6 -> "2M": axis labels a reader takes in at a glance.
fn human(v: f64) -> String {
    let (scaled, unit) = match v.abs() {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let text = format!("{scaled:.1}");
    format!("{}{unit}", text.trim_end_matches(".0"))
}

fn docs_path(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(file)
}

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        // `quick` (what `cargo bench --bench all -- quick` passes everyone) changes
        // nothing here: these sizes are already quick.
        .filter(|a| !a.starts_with('-') && a != "quick")
        .collect();
    if wanted.first().is_some_and(|w| w == "instructions-run") {
        return instructions::run_one(&wanted[1..]);
    }
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    println!(
        "# eric-core benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if run("enqueue") {
        bench_enqueue();
    }
    if run("drain") {
        bench_drain();
    }
    if run("instructions") {
        instructions::bench();
    }
    if run("idle") {
        bench_idle();
    }
    if run("memory") {
        bench_memory(wanted.len() == 1);
    }
    if wanted.iter().any(|w| w == "growth") {
        bench_growth();
    }
}

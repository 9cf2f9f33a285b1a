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
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use eric_core::{Channel, Message};
use serde_json::{Value, json};

#[path = "broadcast/drain.rs"]
mod drain;
#[path = "broadcast/growth.rs"]
mod growth;
#[path = "broadcast/idle.rs"]
mod idle;
#[path = "broadcast/instructions.rs"]
mod instructions;

use drain::bench_drain;
use growth::bench_growth;
use idle::{bench_idle, bench_memory};

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

//! What waiting streams cost: CPU while idle, and memory per idle listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use eric_core::{Channel, Message, MessageAdapter};
use futures_util::StreamExt;

use super::drain::runtime;
use super::{LIVE_ALLOCS, LIVE_BYTES};

/// CPU time of this process so far (all threads), from the scheduler's own accounting.
pub(crate) fn process_cpu_time() -> Duration {
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

pub(crate) fn bench_idle() {
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

pub(crate) fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .unwrap_or(0)
        * 1024
}

pub(crate) fn bench_memory(alone: bool) {
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

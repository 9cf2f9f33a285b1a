//! What an idle stream costs the server in heap, counted exactly: hyper's two connection
//! buffers (read, and response head: 8 KiB each, the read one sometimes 16 KiB, as
//! `bytes` grows it, when the request is still held as hyper reads on) plus at most
//! 3 KiB in smaller blocks for everything else (the connection task, hyper's
//! per-connection state and the queue it writes body chunks through, the keep-alive
//! timer, the listener and its stream), and all of it given back when the clients go. Resident memory, which depends on the allocator, is measured by `cargo
//! bench -p eric-http --bench load` (docs/BENCHMARKS.md).
//!
//! One test in this file: the counting allocator counts the whole process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, unsafe_code)]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use eric_http::HttpConfig;

/// Counts live heap bytes, and apart the blocks of 4 KiB and more (connection buffers).
struct Counting;

const LARGE: usize = 4096;
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static SMALL_BYTES: AtomicIsize = AtomicIsize::new(0);
static LARGE_BLOCKS: AtomicIsize = AtomicIsize::new(0);

fn count(size: usize, sign: isize) {
    LIVE_BYTES.fetch_add(sign * size as isize, Ordering::Relaxed);
    if size < LARGE {
        SMALL_BYTES.fetch_add(sign * size as isize, Ordering::Relaxed);
    } else {
        LARGE_BLOCKS.fetch_add(sign, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout.size(), -1);
        count(new_size, 1);
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// (live bytes, bytes in small blocks, large blocks).
fn heap() -> [isize; 3] {
    [&LIVE_BYTES, &SMALL_BYTES, &LARGE_BLOCKS].map(|c| c.load(Ordering::Relaxed))
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const STREAMS: usize = 300;
/// Measured at 2.8 KiB, the stream's first write (its `retry`) done and its keep-alive
/// timer set, as every stream is from its start. (Until 2026-12-03 a stream wrote
/// nothing before its first keep-alive, 15 s in, and this measured 2.2 KiB with the
/// keep-alive off: hyper's write queue, some 200 B, was not yet allocated, a state a
/// stream left at its first write.) The connection task holding its connection twice
/// (an async block around it) added 0.8 KiB when it happened.
const EVERYTHING_ELSE: isize = 3072;

/// Opens `STREAMS` EventSource-like connections with plain blocking sockets (no heap
/// of their own) and returns once each has its response head.
fn open_streams(addr: String, path: String) -> Vec<TcpStream> {
    (0..STREAMS)
        .map(|_| {
            let mut socket = TcpStream::connect(&addr).unwrap();
            write!(
                socket,
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .unwrap();
            let mut head = [0_u8; 1024];
            let mut read = 0;
            while !head[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut head[read..]).unwrap();
                assert!(n > 0, "the server closed the stream");
                read += n;
            }
            // A stream is written close-delimited (see `routes/streams.rs`).
            assert!(head.starts_with(b"HTTP/1.0 200"));
            socket
        })
        .collect()
}

/// Waits for the heap to stop moving (the server settles after the last head), and
/// returns it.
async fn settled_heap() -> [isize; 3] {
    let mut last = heap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = heap();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_holds_hyper_buffers_and_at_most_3_kib_more_until_its_client_goes() {
    let server = support::start(HttpConfig::default()).await;
    let channel = server.create().await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let path = format!("/channels/{channel}/events");
    // One round first, so that what the process keeps once (thread-local caches, the
    // channel's listener table at its size) is not counted per stream.
    let warm = {
        let (addr, path) = (addr.clone(), path.clone());
        tokio::task::spawn_blocking(move || open_streams(addr, path))
            .await
            .unwrap()
    };
    server.eventually("eric_open_streams", STREAMS as u64).await;
    drop(warm);
    server.eventually("eric_open_streams", 0).await;

    let before = settled_heap().await;
    let clients = tokio::task::spawn_blocking(move || open_streams(addr, path))
        .await
        .unwrap();
    server.eventually("eric_open_streams", STREAMS as u64).await;
    let open = settled_heap().await;
    let streams = STREAMS as isize;
    let [total, small, large] = [0, 1, 2].map(|i| open[i] - before[i]);
    println!(
        "heap per idle stream: {} B: {:.2} blocks of 4 KiB or more (hyper's buffers, {} B) and {} B in smaller ones",
        total / streams,
        large as f64 / STREAMS as f64,
        (total - small) / streams,
        small / streams
    );
    // Two per connection; a few more if the test's own HTTP client opened a connection.
    assert!(
        (2 * streams..2 * streams + 8).contains(&large),
        "{large} large blocks for {STREAMS} streams, not two each"
    );
    assert!(
        small / streams <= EVERYTHING_ELSE,
        "an idle stream holds {} B of heap besides hyper's buffers, more than {EVERYTHING_ELSE} B",
        small / streams
    );

    drop(clients);
    server.eventually("eric_open_streams", 0).await;
    let after = settled_heap().await;
    let kept = (after[0] - before[0]) / streams;
    assert!(
        kept < 64,
        "{kept} B per stream still held after every client went"
    );
}

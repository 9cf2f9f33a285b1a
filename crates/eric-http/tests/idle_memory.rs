//! What an idle stream costs the server in heap, counted exactly: at most 2 KiB in
//! all (the socket's registration, the stream's writer in its group and its keep-alive
//! timer, the listener and its stream), none of it a connection buffer of
//! hyper's (hyper is done with an HTTP/1.x connection once it has written the stream's
//! head: `handoff.rs`), and all of it given back when the clients go. Resident memory,
//! which depends on the allocator, is measured by `cargo bench -p eric-http --bench
//! load` (docs/BENCHMARKS.md).
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

/// Counts live heap bytes, and the blocks of 4 KiB and more (connection buffers).
struct Counting;

const LARGE: usize = 4096;
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LARGE_BLOCKS: AtomicIsize = AtomicIsize::new(0);

fn count(size: usize, sign: isize) {
    LIVE_BYTES.fetch_add(sign * size as isize, Ordering::Relaxed);
    if size >= LARGE {
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

/// (live bytes, large blocks).
fn heap() -> [isize; 2] {
    [&LIVE_BYTES, &LARGE_BLOCKS].map(|c| c.load(Ordering::Relaxed))
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const STREAMS: usize = 300;
/// Measured at 1,528 B, the stream's first write (its `retry`) done and its keep-alive
/// timer set, as every stream is from its start. Until 2026-12-04 (`serve/writers.rs`)
/// the connection's task went on as the stream's writer, its cell sized for hyper's
/// states: 2,272 B then, and this bound was 2.75 KiB. Until 2026-12-03 hyper wrote every
/// stream, and an idle one held hyper's two connection buffers (read, and response
/// head: 8 KiB each) and 2.8 KiB besides (hyper's per-connection state and write
/// queue among them): 19 KiB in all. The connection task holding its connection twice
/// (an async block around it) added 0.8 KiB when it happened; the handoff's slot, when
/// the connection task kept it for the stream's life, 0.2 KiB (it is dropped now).
const PER_STREAM: isize = 2048;

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
async fn settled_heap() -> [isize; 2] {
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
async fn an_idle_stream_holds_at_most_2_kib_of_heap_and_no_connection_buffer_until_its_client_goes()
{
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
    let [total, large] = [0, 1].map(|i| open[i] - before[i]);
    println!(
        "heap per idle stream: {} B, {:.2} blocks of 4 KiB or more (connection buffers)",
        total / streams,
        large as f64 / streams as f64,
    );
    // None per stream; a few if the test's own HTTP client opened a connection.
    assert!(
        large < 8,
        "{large} large blocks for {STREAMS} streams: a connection buffer held per stream"
    );
    assert!(
        total / streams <= PER_STREAM,
        "an idle stream holds {} B of heap, more than {PER_STREAM} B",
        total / streams
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

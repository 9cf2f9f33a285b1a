//! The memory budget of `eric serve` (`--max-retained-bytes`) against 1 MB messages
//! published without end into many channels: the process's memory stays under the
//! budget plus a stated overhead, replay windows give way before anything is refused,
//! refusals are 503 `MemoryBudgetExceeded` (never a silent drop, never an
//! out-of-memory kill), and a listener that keeps up loses nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/eric_serve.rs"]
mod eric_serve;
#[path = "support/sse_client.rs"]
mod sse_client;

use std::io::Write;
use std::time::Duration;

use eric_serve::EricServe;
use serde_json::{Value, json};
use sse_client::{Seen, create, subscribe_to};
use tokio::sync::mpsc;

const MB: u64 = 1 << 20;
/// The budget: room for about 30 of the messages below by their estimate (twice their
/// JSON text: the parsed payload and the text an SSE delivery caches).
const BUDGET: u64 = 64 * MB;
/// What the process holds besides the messages the budget counts: its own ~10 MB, the
/// requests and events in flight (a 1 MB body, its parsed copy, the event written),
/// and what the allocator keeps of memory freed a moment ago.
const OVERHEAD: u64 = 64 * MB;
const CHANNELS: usize = 10;

/// A broadcast of 1 MB of JSON text, numbered.
fn blob(n: u64) -> Value {
    json!({"type": "blob", "payload": {"n": n, "data": "x".repeat(1_000_000)}})
}

/// Publishes broadcast `n` to `channel`: the status and, if refused, the error kind.
async fn publish(http: &reqwest::Client, base: &str, channel: &str, n: u64) -> (u16, String) {
    let response = http
        .post(format!("{base}/broadcast?channel_id={channel}"))
        .json(&blob(n))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The numbers of the broadcasts `rx` has received so far, waiting `settle` for more.
async fn received(rx: &mut mpsc::UnboundedReceiver<Seen>, settle: Duration) -> Vec<u64> {
    let mut got = Vec::new();
    while let Ok(Some((_, event, data))) = tokio::time::timeout(settle, rx.recv()).await {
        if event == "blob" {
            let data: Value = serde_json::from_str(&data).unwrap();
            got.push(data["n"].as_u64().unwrap());
        }
    }
    got
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_megabyte_messages_without_end_stay_within_the_budget() {
    let budget = BUDGET.to_string();
    let server = EricServe::start(&["--max-retained-bytes", &budget]);
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let channels: Vec<String> = (0..CHANNELS).map(|i| format!("room{i}")).collect();
    for channel in &channels {
        assert!((200..300).contains(&create(&http, &base, channel).await));
    }
    let mut fast = subscribe_to(&base, &channels[0], None).await;
    let idle_rss = server.rss();

    // Round one: nobody falls behind. The replay windows (16 MiB a channel, 160 MiB in
    // all) would pass the budget (100 MB of messages, 200 MB by the estimate): they give way, and nothing is refused.
    let mut sent_to_fast = Vec::new();
    let mut peak = 0;
    for n in 0..100 {
        let channel = &channels[n as usize % CHANNELS];
        let (status, error) = publish(&http, &base, channel, n).await;
        assert_eq!(status, 200, "broadcast {n}: {error}");
        if (n as usize).is_multiple_of(CHANNELS) {
            sent_to_fast.push(n);
        }
        peak = peak.max(server.rss());
    }
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metric(&metrics, "eric_retained_bytes") <= BUDGET);
    assert_eq!(metric(&metrics, "eric_retained_bytes_limit"), BUDGET);

    // Round two: a client opens a stream and reads nothing. What its listener has not
    // read is kept, so it fills the budget, and then publishes are refused.
    let mut stalled = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    write!(
        stalled,
        "GET /channels/{}/events HTTP/1.1\r\nHost: x\r\n\r\n",
        channels[1]
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = 0;
    let mut n = 100;
    while refused < 20 {
        // To the stalled stream's channel and the reader's, in turn.
        let channel = &channels[n as usize % 2];
        let (status, error) = publish(&http, &base, channel, n).await;
        match status {
            200 if n.is_multiple_of(2) => sent_to_fast.push(n),
            200 => {}
            503 => {
                assert_eq!(error, "MemoryBudgetExceeded");
                refused += 1;
            }
            other => panic!("broadcast {n}: {other} {error}"),
        }
        peak = peak.max(server.rss());
        n += 1;
        assert!(n < 2_000, "the budget never refused a publish");
    }
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metric(&metrics, "eric_publishes_refused_memory_total") >= 20);

    // The listener that kept up got every broadcast accepted for it, in order.
    assert_eq!(
        received(&mut fast, Duration::from_secs(2)).await,
        sent_to_fast
    );
    println!(
        "RSS idle {} MB, peak {} MB; budget {} MB + overhead {} MB",
        idle_rss / MB,
        peak / MB,
        BUDGET / MB,
        OVERHEAD / MB
    );
    assert!(
        peak <= BUDGET + OVERHEAD,
        "peak RSS {} MB over {} MB + {} MB",
        peak / MB,
        BUDGET / MB,
        OVERHEAD / MB
    );

    // The stalled client goes: what it held is released, and publishes go through.
    drop(stalled);
    let mut accepted = false;
    for attempt in 0..50 {
        if publish(&http, &base, &channels[2], 10_000 + attempt)
            .await
            .0
            == 200
        {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        accepted,
        "publishes must go through once the stalled client is gone"
    );
}

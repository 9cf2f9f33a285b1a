//! Cluster mode: two `eric serve --cluster` processes on one Redis, and on a Redis
//! Cluster of three masters (all started here, on loopback ports of their own). A
//! broadcast on either reaches the subscribers of both, in one order, with the same
//! event ids; when one process is killed, its subscribers reconnect to the other with
//! `Last-Event-ID` and miss nothing; a stored listener is dispatched to and streamed
//! from either.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/eric_serve.rs"]
mod eric_serve;
#[path = "../crates/eric-http/tests/support/mod.rs"]
mod http_support;
#[path = "../crates/eric-persistence/tests/support/mod.rs"]
mod redis_support;
#[path = "support/sse_client.rs"]
mod sse_client;

use std::time::Duration;

use eric_serve::EricServe;
use serde_json::{Value, json};
use sse_client::{Seen, create, publish_to, subscribe_to};
use tokio::sync::mpsc;

/// An `eric serve --cluster` process on the Redis at `redis_url`.
fn start_eric(redis_url: &str) -> EricServe {
    EricServe::start(&["--cluster", "--redis", redis_url, "--keep-alive", "1"])
}

/// Subscribes to `news` at `base` (resuming after `last_event_id`).
async fn subscribe(base: &str, last_event_id: Option<&str>) -> mpsc::UnboundedReceiver<Seen> {
    subscribe_to(base, "news", last_event_id).await
}

/// `PUT /create?channel_id=news` at `base`: the status.
async fn create_news(http: &reqwest::Client, base: &str) -> u16 {
    create(http, base, "news").await
}

/// `GET /channels` at `base`.
async fn listed(http: &reqwest::Client, base: &str) -> Vec<String> {
    let response = http.get(format!("{base}/channels")).send().await.unwrap();
    response.json().await.unwrap()
}

async fn publish(http: &reqwest::Client, base: &str, n: u64) -> String {
    publish_to(http, base, "news", n).await
}

/// The next `count` events of `rx`, which must be the broadcasts `from..from + count`.
async fn expect_broadcasts(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    from: u64,
    count: u64,
    ids: &[String],
) -> String {
    let mut last = String::new();
    for n in from..from + count {
        let (id, event, data) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("broadcast {n} did not arrive"))
            .unwrap_or_else(|| panic!("the stream ended before broadcast {n}"));
        assert_eq!(event, "news", "event {n}: {data}");
        let data: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(data["n"], n, "broadcasts arrive in order, none missing");
        assert_eq!(id, ids[n as usize], "the same event id on every process");
        last = id;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_both_processes_and_clients_of_a_killed_one_resume_on_the_other() {
    let redis = redis_support::RedisServer::start();
    broadcasts_and_a_killed_process(&redis.url()).await;
}

/// Two cluster-mode processes on `redis_url`, a client, and the channel `news` made
/// on the first.
async fn two_processes_with_news(redis_url: &str) -> (EricServe, EricServe, reqwest::Client) {
    let (a, b) = (start_eric(redis_url), start_eric(redis_url));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_eq!(create_news(&http, &a.base).await, 201);
    (a, b, http)
}

async fn broadcasts_and_a_killed_process(redis_url: &str) {
    let (mut a, b, http) = two_processes_with_news(redis_url).await;
    // The channel is the cluster's: B lists it, and refuses to create it again.
    assert_eq!(listed(&http, &b.base).await, ["news"]);
    assert_eq!(create_news(&http, &b.base).await, 409);

    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for _ in 0..3 {
        on_a.push(subscribe(&a.base, None).await);
        on_b.push(subscribe(&b.base, None).await);
    }

    // 100 broadcasts, alternately on A and B.
    let mut ids = Vec::new();
    for n in 0..100 {
        let base = if n % 2 == 0 { &a.base } else { &b.base };
        ids.push(publish(&http, base, n).await);
    }
    let mut last_on_a = Vec::new();
    for rx in on_a.iter_mut() {
        last_on_a.push(expect_broadcasts(rx, 0, 100, &ids).await);
    }
    for rx in on_b.iter_mut() {
        expect_broadcasts(rx, 0, 100, &ids).await;
    }

    // A dies; 50 broadcasts on B while its clients are away.
    a.kill();
    for rx in on_a.iter_mut() {
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while rx.recv().await.is_some() {}
        })
        .await;
        assert!(ended.is_ok(), "a killed process's streams end");
    }
    for n in 100..150 {
        ids.push(publish(&http, &b.base, n).await);
    }
    // A's clients come back on B with the last id they saw: the 50 first, then live.
    let mut resumed = Vec::new();
    for last in &last_on_a {
        resumed.push(subscribe(&b.base, Some(last)).await);
    }
    for n in 150..160 {
        ids.push(publish(&http, &b.base, n).await);
    }
    for rx in resumed.iter_mut() {
        expect_broadcasts(rx, 100, 60, &ids).await;
    }
    for rx in on_b.iter_mut() {
        expect_broadcasts(rx, 100, 60, &ids).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_removed_on_one_process_ends_the_streams_of_the_other() {
    let redis = redis_support::RedisServer::start();
    let a = start_eric(&redis.url());
    let b = start_eric(&redis.url());
    let http = reqwest::Client::new();
    assert_eq!(create_news(&http, &a.base).await, 201);
    let mut on_b = subscribe(&b.base, None).await;
    let id = publish(&http, &a.base, 0).await;
    let ids = [id];
    expect_broadcasts(&mut on_b, 0, 1, &ids).await;

    let removed = http
        .delete(format!("{}/channel/news", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let (_, event, _) = tokio::time::timeout(Duration::from_secs(10), on_b.recv())
        .await
        .expect("B's stream hears of the removal")
        .expect("with an event");
    assert_eq!(event, eric::core::MESSAGE_TYPE_CLOSED);
    let ended = tokio::time::timeout(Duration::from_secs(10), on_b.recv()).await;
    assert!(matches!(ended, Ok(None)), "then it ends");

    // Gone everywhere: publishing on B is 404, and neither lists it.
    let response = http
        .post(format!("{}/broadcast?channel_id=news", b.base))
        .json(&json!({"type": "news", "payload": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(listed(&http, &a.base).await.is_empty());
    assert!(listed(&http, &b.base).await.is_empty());
}

/// `POST /subscribe?channel_id=news` at `base`: a stored listener's id.
async fn add_stored_listener(http: &reqwest::Client, base: &str) -> String {
    sse_client::add_listener(http, base, "news").await
}

/// Streams stored listener `listener` of `news` at `base`; aborting the task closes
/// the connection.
async fn stream_listener(
    base: &str,
    listener: &str,
    last_event_id: Option<&str>,
) -> (mpsc::UnboundedReceiver<Seen>, tokio::task::JoinHandle<()>) {
    sse_client::follow(&format!("{base}/stream/news/{listener}"), last_event_id).await
}

async fn dispatch(http: &reqwest::Client, base: &str, listener: &str, n: u64) -> u16 {
    let response = http
        .post(format!(
            "{base}/dispatch?channel_id=news&listener_id={listener}"
        ))
        .json(&json!({"type": "task", "payload": {"n": n}}))
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

/// The next events of `rx`, as `d<n>` for a dispatch and `b<n>` for a broadcast.
async fn expect_events(rx: &mut mpsc::UnboundedReceiver<Seen>, expected: &[&str]) {
    for want in expected {
        let (_, event, data) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{want} did not arrive"))
            .unwrap_or_else(|| panic!("the stream ended before {want}"));
        let data: Value = serde_json::from_str(&data).unwrap();
        let got = match event.as_str() {
            "task" => format!("d{}", data["n"]),
            "news" => format!("b{}", data["n"]),
            other => panic!("unexpected event {other}: {data}"),
        };
        assert_eq!(
            &got, want,
            "events arrive once each, in the order they were made"
        );
    }
}

/// Waits until `base` has no open stream (its server noticed the client left).
async fn no_open_stream(http: &reqwest::Client, base: &str) {
    for _ in 0..100 {
        if metric(http, base, "eric_open_streams").await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} kept a stream open after its client left");
}

/// `command`'s answer from the Redis at `urls`, or from the Redis Cluster whose seed
/// nodes they are (comma-separated).
async fn redis_query<T: redis::FromRedisValue>(urls: &str, command: &redis::Cmd) -> T {
    if urls.contains(',') {
        let client = redis::cluster::ClusterClient::new(urls.split(',')).unwrap();
        let mut connection = client.get_async_connection().await.unwrap();
        command.query_async(&mut connection).await.unwrap()
    } else {
        let client = redis::Client::open(urls).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        command.query_async(&mut connection).await.unwrap()
    }
}

/// Waits until Redis records that stored listener `listener` reads broadcast `next`
/// next (written when its stream ends).
async fn recorded_position(redis_url: &str, listener: &str, next: u64) {
    let mut command = redis::cmd("HGET");
    command.arg("eric:cluster:{news}:listeners").arg(listener);
    for _ in 0..100 {
        let at: Option<u64> = redis_query(redis_url, &command).await;
        if at == Some(next) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("listener {listener}'s position was not recorded as {next}");
}

/// Waits until Redis holds `count` undelivered dispatches for `listener`.
async fn queued_in_redis(redis_url: &str, listener: &str, count: usize) {
    let mut command = redis::cmd("LLEN");
    command.arg(format!("eric:cluster:{{news}}:queue:{listener}"));
    for _ in 0..100 {
        let queued: usize = redis_query(redis_url, &command).await;
        if queued == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("listener {listener} does not have {count} dispatches queued in Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_listener_is_dispatched_to_and_streamed_from_any_process() {
    let redis = redis_support::RedisServer::start();
    a_stored_listener_across_processes(&redis.url()).await;
}

async fn a_stored_listener_across_processes(redis_url: &str) {
    let (mut a, b, http) = two_processes_with_news(redis_url).await;
    let listener = add_stored_listener(&http, &a.base).await;

    // Made on A and B before anyone streams it: queued in Redis, in this order.
    assert_eq!(dispatch(&http, &b.base, &listener, 0).await, 200);
    publish(&http, &a.base, 0).await;
    assert_eq!(dispatch(&http, &a.base, &listener, 1).await, 200);
    publish(&http, &b.base, 1).await;
    assert_eq!(dispatch(&http, &b.base, &listener, 2).await, 200);
    // Streamed on B (it was made on A): everything, in order; then live ones from A.
    let (mut on_b, connection) = stream_listener(&b.base, &listener, None).await;
    expect_events(&mut on_b, &["d0", "b0", "d1", "b1", "d2"]).await;
    assert_eq!(dispatch(&http, &a.base, &listener, 3).await, 200);
    expect_events(&mut on_b, &["d3"]).await;

    // The client leaves B; while it is away, a broadcast and a dispatch. It comes
    // back on A without Last-Event-ID: exactly what it has not had.
    connection.abort();
    no_open_stream(&http, &b.base).await;
    recorded_position(redis_url, &listener, 3).await;
    publish(&http, &b.base, 2).await;
    assert_eq!(dispatch(&http, &b.base, &listener, 4).await, 200);
    let (mut on_a, _connection) = stream_listener(&a.base, &listener, None).await;
    expect_events(&mut on_a, &["b2", "d4"]).await;

    // A dies with the listener streaming there (what it delivered has left Redis's
    // queue); a dispatch meanwhile waits in Redis, and the client resumes on B with
    // the last id it saw.
    queued_in_redis(redis_url, &listener, 0).await;
    a.kill();
    assert_eq!(dispatch(&http, &b.base, &listener, 5).await, 200);
    let last = publish(&http, &b.base, 3).await;
    let resumed_after = {
        // The id of b2, the last broadcast the client saw.
        let (epoch, seq) = last.rsplit_once('-').unwrap();
        format!("{epoch}-{}", seq.parse::<u64>().unwrap() - 1)
    };
    let (mut resumed, _connection) =
        stream_listener(&b.base, &listener, Some(&resumed_after)).await;
    expect_events(&mut resumed, &["d5", "b3"]).await;

    // Removed on B: its stream there ends, and it is gone for dispatches everywhere.
    let removed = http
        .delete(format!("{}/listener/news/{listener}", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let ended = tokio::time::timeout(Duration::from_secs(10), resumed.recv()).await;
    assert!(matches!(ended, Ok(None)), "its stream ends");
    assert_eq!(dispatch(&http, &b.base, &listener, 6).await, 404);
}

/// A Redis Cluster of three masters, started here; `None` (and the reason printed)
/// only where it cannot start. `ERIC_REQUIRE_REDIS_CLUSTER=1` (set by `.ci/run`)
/// makes that a failure instead.
fn redis_cluster() -> Option<redis_support::RedisClusterNodes> {
    match redis_support::RedisClusterNodes::start() {
        Ok(cluster) => Some(cluster),
        Err(reason) if std::env::var_os("ERIC_REQUIRE_REDIS_CLUSTER").is_none() => {
            eprintln!("SKIPPED: no Redis Cluster could be started here: {reason}");
            None
        }
        Err(reason) => panic!("a Redis Cluster could not be started: {reason}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_channels_spread_over_the_masters_and_reach_both_processes() {
    let Some(cluster) = redis_cluster() else {
        return;
    };
    let a = start_eric(&cluster.urls());
    let b = start_eric(&cluster.urls());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let channels: Vec<String> = (0..12).map(|n| format!("room-{n}")).collect();
    let mut on_b = Vec::new();
    for channel in &channels {
        assert_eq!(create(&http, &a.base, channel).await, 201);
        on_b.push(subscribe_to(&b.base, channel, None).await);
    }
    // Each channel's keys live on the master of its hash tag's slot: the channels are
    // spread over the nodes, and eric follows them there.
    let mut nodes_with_keys = 0;
    for url in cluster.node_urls() {
        let client = redis::Client::open(url).unwrap();
        let mut node = client.get_multiplexed_async_connection().await.unwrap();
        let keys: usize = redis::cmd("DBSIZE").query_async(&mut node).await.unwrap();
        nodes_with_keys += usize::from(keys > 0);
    }
    assert!(nodes_with_keys >= 2, "12 channels all on one master");

    for (channel, rx) in channels.iter().zip(on_b.iter_mut()) {
        let ids = [
            publish_to(&http, &a.base, channel, 0).await,
            publish_to(&http, &b.base, channel, 1).await,
        ];
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (id, _, data) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{channel}: a broadcast did not arrive"))
                .unwrap();
            seen.push((id, data));
        }
        assert_eq!(seen[0], (ids[0].clone(), r#"{"n":0}"#.to_owned()));
        assert_eq!(seen[1], (ids[1].clone(), r#"{"n":1}"#.to_owned()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_clients_of_a_killed_process_resume_on_the_other() {
    let Some(cluster) = redis_cluster() else {
        return;
    };
    broadcasts_and_a_killed_process(&cluster.urls()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_a_stored_listener_works_from_any_process() {
    let Some(cluster) = redis_cluster() else {
        return;
    };
    a_stored_listener_across_processes(&cluster.urls()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_point_the_stream_trimmed_away_gets_a_reset_and_what_is_kept_on_another_process() {
    let redis = redis_support::RedisServer::start();
    // Replay 64: each process keeps 64 broadcasts, the Redis stream about 128 entries.
    let args = ["--cluster", "--redis", &redis.url(), "--replay", "64"];
    let (a, b) = (EricServe::start(&args), EricServe::start(&args));
    let http = reqwest::Client::new();
    assert_eq!(create_news(&http, &a.base).await, 201);
    let mut ids = Vec::new();
    for n in 0..300 {
        ids.push(publish(&http, &a.base, n).await);
    }
    // A client last saw broadcast 0 on A and comes back on B, which never read it.
    let mut resumed = subscribe(&b.base, Some(&ids[0])).await;
    let (_, event, data) = tokio::time::timeout(Duration::from_secs(10), resumed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event, eric::prefabs::MESSAGE_TYPE_RESET);
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["reason"], "too_old", "{data}");
    // Then every broadcast B keeps, from the oldest the reset names, then live events.
    let oldest = ids
        .iter()
        .position(|id| data["oldest_kept"] == id.as_str())
        .unwrap_or_else(|| panic!("oldest_kept is none of the ids: {data}"));
    assert!(oldest > 1 && oldest <= 300 - 64, "{oldest}");
    expect_broadcasts(&mut resumed, oldest as u64, 300 - oldest as u64, &ids).await;
    ids.push(publish(&http, &a.base, 300).await);
    expect_broadcasts(&mut resumed, 300, 1, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stream_of_a_stored_listener_on_another_process_takes_it_over() {
    let redis = redis_support::RedisServer::start();
    let (a, b, http) = two_processes_with_news(&redis.url()).await;
    let listener = add_stored_listener(&http, &a.base).await;
    let (mut on_a, _first) = stream_listener(&a.base, &listener, None).await;
    assert_eq!(dispatch(&http, &b.base, &listener, 0).await, 200);
    expect_events(&mut on_a, &["d0"]).await;
    queued_in_redis(&redis.url(), &listener, 0).await;

    // The client comes back on B while A still holds its old connection open (a
    // half-open connection, say): the stream on A ends, B's gets what follows.
    let (mut on_b, _second) = stream_listener(&b.base, &listener, None).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), on_a.recv()).await;
    assert!(
        matches!(ended, Ok(None)),
        "the older stream ends: {ended:?}"
    );
    assert_eq!(dispatch(&http, &a.base, &listener, 1).await, 200);
    expect_events(&mut on_b, &["d1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_types_that_cannot_be_sse_events_are_refused_before_they_reach_redis() {
    let redis = redis_support::RedisServer::start();
    let (a, b, http) = two_processes_with_news(&redis.url()).await;
    let mut on_b = subscribe(&b.base, None).await;
    let listener = add_stored_listener(&http, &a.base).await;
    for bad in ["two\nlines", "\u{0}closed", "\u{0}moved"] {
        let broadcast = http
            .post(format!("{}/broadcast?channel_id=news", a.base))
            .json(&json!({"type": bad, "payload": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(broadcast.status(), 400, "broadcast of type {bad:?}");
        let dispatched = http
            .post(format!(
                "{}/dispatch?channel_id=news&listener_id={listener}",
                a.base
            ))
            .json(&json!({"type": bad, "payload": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(dispatched.status(), 400, "dispatch of type {bad:?}");
    }
    // Nothing reached the stream: B's reader goes on, and the next broadcast arrives.
    let ids = [publish(&http, &a.base, 0).await];
    expect_broadcasts(&mut on_b, 0, 1, &ids).await;
}

/// A counter of `/metrics` at `base`.
async fn metric(http: &reqwest::Client, base: &str, name: &str) -> u64 {
    http_support::metric_at(http, base, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_overflow_reject_a_stuck_client_is_dropped_and_the_others_miss_nothing() {
    use tokio::io::AsyncWriteExt;

    let redis = redis_support::RedisServer::start();
    let args = [
        "--cluster",
        "--redis",
        &redis.url(),
        "--capacity",
        "64",
        "--overflow",
        "reject",
    ];
    let (a, b) = (EricServe::start(&args), EricServe::start(&args));
    let http = reqwest::Client::new();
    assert_eq!(create_news(&http, &a.base).await, 201);
    let mut reading = subscribe(&b.base, None).await;
    // On B, a client with a small receive buffer that sends its request and never
    // reads: once the kernel's and hyper's buffers are full it falls 64 behind.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = b.base.trim_start_matches("http://").parse().unwrap();
    let mut stuck = socket.connect(addr).await.unwrap();
    stuck
        .write_all(b"GET /channels/news/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    // 8 KiB broadcasts on A until B drops the stuck client (Redis acknowledged each:
    // B cannot refuse them).
    let filler = "x".repeat(8 * 1024);
    let mut sent = 0u64;
    while metric(&http, &b.base, "eric_disconnected_total").await == 0 {
        assert!(sent < 8192, "a client that never reads was never dropped");
        for _ in 0..64 {
            let response = http
                .post(format!("{}/broadcast?channel_id=news", a.base))
                .json(&json!({"type": "news", "payload": {"n": sent, "fill": filler}}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            sent += 1;
        }
    }
    // B's copy of the channel goes on: the reading client got every one, in order.
    for n in 0..sent {
        let (_, _, data) = tokio::time::timeout(Duration::from_secs(10), reading.recv())
            .await
            .unwrap_or_else(|_| panic!("broadcast {n} did not arrive"))
            .unwrap_or_else(|| panic!("the reading client's stream ended before {n}"));
        let data: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(data["n"], n);
    }
    drop(stuck);
}

//! The socket server, driven as a client would: every verb, every error reply, streams
//! that end when they should, and requests that must not hurt it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use eric_socket::{Error, SocketClient, SocketServer, SocketServerConfig};
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::Running;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

#[tokio::test]
async fn every_verb_does_what_eric_sse_does() {
    let server = Running::start().await;
    let client = SocketClient::new(&server.path);
    let channel = client.create_channel().await.unwrap();
    assert_eq!(channel.len(), 36, "a uuid: {channel}");
    let a = client.register(&channel).await.unwrap();
    let b = client.register(&channel).await.unwrap();
    assert_ne!(a, b);

    client
        .broadcast_message(&channel, "news", json!({"k": [1, "é"]}))
        .await
        .unwrap();
    client
        .dispatch(&channel, &b, "dm", json!("for b"))
        .await
        .unwrap();

    let mut a_lines = client.stream(&channel, &a).await.unwrap();
    assert_eq!(
        a_lines.next().await.unwrap().unwrap(),
        r#"{"event": "news", "retry": 5, "data": {"k": [1, "\u00e9"]}}"#
    );
    let mut b_lines = client.stream(&channel, &b).await.unwrap();
    assert_eq!(
        parse(&b_lines.next().await.unwrap().unwrap())["event"],
        "news"
    );
    assert_eq!(
        parse(&b_lines.next().await.unwrap().unwrap())["data"],
        "for b"
    );

    // w: a listener of its own for as long as the stream lasts.
    let mut watch = client.watch(&channel).await.unwrap();
    server
        .eventually("watch registered", |h| h.active_streams() == 3)
        .await;
    client
        .broadcast_message(&channel, "later", json!(1))
        .await
        .unwrap();
    assert_eq!(
        parse(&watch.next().await.unwrap().unwrap())["event"],
        "later"
    );
    assert_eq!(
        parse(&a_lines.next().await.unwrap().unwrap())["event"],
        "later"
    );

    // rl ends that listener's stream; rc closes the channel: the rest get the closed message.
    client.remove_listener(&channel, &a).await.unwrap();
    assert!(
        a_lines.next().await.is_none(),
        "a removed listener's stream ends"
    );
    client.remove_channel(&channel).await.unwrap();
    let last = parse(&watch.next().await.unwrap().unwrap());
    assert_eq!(last["event"], "_eric_channel_closed");
    assert!(watch.next().await.is_none());
    server
        .eventually("streams freed", |h| h.active_streams() == 0)
        .await;
    assert!(server.handle.channels().local().is_empty());
}

#[tokio::test]
async fn every_error_reply_names_the_exception_eric_sse_clients_look_for() {
    let server = Running::start().await;
    let client = SocketClient::new(&server.path);
    let channel = client.create_channel().await.unwrap();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"v": "b", "c": "nope", "t": "x"}),
            "InvalidChannelException('No channel with id nope')",
        ),
        (
            json!({"v": "r", "c": "nope"}),
            "InvalidChannelException('No channel with id nope')",
        ),
        (
            json!({"v": "rc", "c": "nope"}),
            "InvalidChannelException('No channel with id nope')",
        ),
        (
            json!({"v": "d", "c": channel, "r": "ghost", "t": "x"}),
            "InvalidListenerException('Invalid listener ghost')",
        ),
        (
            json!({"v": "rl", "c": channel, "r": "ghost"}),
            "InvalidListenerException('ghost')",
        ),
        (
            json!({"v": "l", "c": channel, "r": "ghost"}),
            "InvalidListenerException()",
        ),
        (
            json!({"v": "b", "c": channel}),
            "InvalidMessageFormat(\"missing message type 't'\")",
        ),
        (
            json!({"v": "b", "c": channel, "t": "two\nlines"}),
            "InvalidMessageFormat(",
        ),
        (
            json!({"c": channel}),
            "InvalidMessageFormat(\"missing verb 'v'\")",
        ),
        (
            json!({"v": "zz"}),
            "InvalidMessageFormat('unknown verb \"zz\"')",
        ),
        (
            json!({"v": "rl", "c": channel}),
            "InvalidMessageFormat(\"missing receiver 'r'\")",
        ),
    ];
    for (request, expected) in cases {
        let reply = client.send_payload(&request).await.unwrap();
        assert!(reply.starts_with(expected), "{request} -> {reply}");
    }
    assert!(matches!(
        client.register("nope").await,
        Err(Error::Refused { reply }) if reply.starts_with("InvalidChannelException")
    ));
}

#[tokio::test]
async fn bad_bytes_get_an_error_reply_and_the_server_goes_on() {
    let server = Running::start_with(SocketServerConfig::default().max_request_bytes(1024)).await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"not json".to_vec(),
            "InvalidMessageFormat('request is not JSON",
        ),
        (
            b"{\"v\": \"c\"".to_vec(),
            "InvalidMessageFormat('request is not JSON",
        ),
        (
            vec![0xff, 0xfe, 0x00],
            "InvalidMessageFormat('request is not UTF-8')",
        ),
        (
            b"[\"v\", \"c\"]".to_vec(),
            "InvalidMessageFormat('request is not a JSON object')",
        ),
        (
            vec![b' '; 4096],
            "InvalidMessageFormat('request larger than 1024 bytes')",
        ),
        (Vec::new(), "InvalidMessageFormat('request is not JSON"),
    ];
    for (request, expected) in cases {
        let reply = server.raw(&request).await;
        assert!(
            reply.starts_with(expected),
            "{:?} -> {reply}",
            String::from_utf8_lossy(&request[..request.len().min(20)])
        );
    }
    assert_eq!(
        server.raw(br#"{"v": "c"}"#).await.len(),
        36,
        "still serving"
    );
}

#[tokio::test]
async fn a_client_that_sends_nothing_times_out() {
    let server = Running::start_with(
        SocketServerConfig::default().request_timeout(Duration::from_millis(200)),
    )
    .await;
    let mut silent = UnixStream::connect(&server.path).await.unwrap();
    let mut reply = String::new();
    let read =
        tokio::time::timeout(Duration::from_secs(5), silent.read_to_string(&mut reply)).await;
    assert!(read.is_ok(), "the server must hang up on a silent client");
    assert!(
        reply.starts_with("InvalidMessageFormat('no complete request"),
        "{reply}"
    );
}

#[tokio::test]
async fn a_client_hanging_up_mid_stream_frees_its_stream_and_watch_listener() {
    let server = Running::start().await;
    let client = SocketClient::new(&server.path);
    let channel = client.create_channel().await.unwrap();
    let listener = client.register(&channel).await.unwrap();
    let listening = client.stream(&channel, &listener).await.unwrap();
    let watching = client.watch(&channel).await.unwrap();
    server
        .eventually("two streams open", |h| h.active_streams() == 2)
        .await;
    let core = server.handle.channels().local().get(&channel).unwrap();
    assert_eq!(core.listener_count(), 2);

    // Idle streams: nothing is being written when the clients go.
    drop(listening);
    drop(watching);
    server
        .eventually("streams freed", |h| h.active_streams() == 0)
        .await;
    assert_eq!(
        core.listener_count(),
        1,
        "the watch listener went with its stream; the registered one stays"
    );
    // The registered listener is still usable.
    client
        .dispatch(&channel, &listener, "t", json!(1))
        .await
        .unwrap();
}

#[tokio::test]
async fn shutdown_closes_streams_with_the_closed_message_and_removes_the_socket() {
    let mut server = Running::start().await;
    let client = SocketClient::new(&server.path);
    let channel = client.create_channel().await.unwrap();
    let mut watch = client.watch(&channel).await.unwrap();
    server
        .eventually("stream open", |h| h.active_streams() == 1)
        .await;
    server.stop().await.unwrap();
    assert_eq!(
        parse(&watch.next().await.unwrap().unwrap())["event"],
        "_eric_channel_closed"
    );
    assert!(watch.next().await.is_none());
    assert!(!server.path.exists(), "the socket file is removed");
}

#[tokio::test]
async fn the_socket_file_is_private_stale_ones_are_replaced_live_ones_kept() {
    let server = Running::start().await;
    let mode = std::fs::metadata(&server.path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(matches!(
        SocketServer::bind(&server.path).await,
        Err(Error::InUse { .. })
    ));

    // A stale socket: bound, then its server gone without removing it.
    let stale = support::fresh_path();
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let replaced = SocketServer::bind(&stale).await.unwrap();
    drop(replaced);

    // Not a socket: left alone.
    let file = support::fresh_path();
    std::fs::write(&file, "precious").unwrap();
    assert!(matches!(
        SocketServer::bind(&file).await,
        Err(Error::NotASocket { .. })
    ));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_concurrent_clients_is_served() {
    let server = Running::start().await;
    let client = SocketClient::new(&server.path);
    let channel = client.create_channel().await.unwrap();
    let mut watch = client.watch(&channel).await.unwrap();
    server
        .eventually("watching", |h| h.active_streams() == 1)
        .await;
    let tasks: Vec<_> = (0..200)
        .map(|t| {
            let client = client.clone();
            let channel = channel.clone();
            tokio::spawn(async move {
                for n in 0..10 {
                    client
                        .broadcast_message(&channel, "n", json!(t * 10 + n))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..2000 {
        seen.push(
            parse(&watch.next().await.unwrap().unwrap())["data"]
                .as_u64()
                .unwrap(),
        );
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..2000).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_server_with_a_repository_reloads_its_channels_after_a_restart() {
    use eric_persistence::{InMemoryStorage, KvStorage, SseChannelRepository};
    use std::sync::Arc;

    let storage: Arc<dyn KvStorage> = Arc::new(InMemoryStorage::new());
    let repository = || SseChannelRepository::from_arc(Arc::clone(&storage));
    let path = support::fresh_path();
    let config = SocketServerConfig::default;

    let mut first = Running::serve(
        SocketServer::bind_with_repository(&path, config(), repository())
            .await
            .unwrap(),
    );
    let client = SocketClient::new(&path);
    let channel = client.create_channel().await.unwrap();
    let listener = client.register(&channel).await.unwrap();
    client
        .broadcast_message(&channel, "before", json!(1))
        .await
        .unwrap();
    client
        .dispatch(&channel, &listener, "dm", json!("kept"))
        .await
        .unwrap();
    first.stop().await.unwrap();

    let second = Running::serve(
        SocketServer::bind_with_repository(&path, config(), repository())
            .await
            .unwrap(),
    );
    let mut lines = client.stream(&channel, &listener).await.unwrap();
    assert_eq!(
        parse(&lines.next().await.unwrap().unwrap())["event"],
        "before"
    );
    assert_eq!(parse(&lines.next().await.unwrap().unwrap())["data"], "kept");
    client
        .broadcast_message(&channel, "after", json!(2))
        .await
        .unwrap();
    assert_eq!(
        parse(&lines.next().await.unwrap().unwrap())["event"],
        "after"
    );

    client.remove_channel(&channel).await.unwrap();
    assert!(
        repository().load_all().await.unwrap().is_empty(),
        "removed from storage too"
    );
    drop(second);
}

//! HTTP/2 beside HTTP/1.1: cleartext HTTP/2 with prior knowledge (h2c) on the same port
//! as HTTP/1.1, and TLS (rustls) with ALPN choosing either, each carrying many streams
//! on one connection where HTTP/2 is spoken; `/metrics` counts connections by protocol.
//! A bad certificate or key file is an error that names it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use eric_http::{HttpConfig, HttpServer};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::json;
use support::{Running, next};

const STREAMS: usize = 20;

/// Opens `/channels/room-{n}/events` for each `n` through `http` and checks that a
/// broadcast to each channel reaches its stream; the streams, still open.
async fn twenty_streams_receive(
    server: &Running,
    http: &reqwest::Client,
) -> Vec<support::EventStream> {
    for n in 0..STREAMS {
        let created = http
            .put(server.url(&format!("/create?channel_id=room-{n}")))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    let mut streams: Vec<support::EventStream> = Vec::new();
    for n in 0..STREAMS {
        let response = http
            .get(server.url(&format!("/channels/room-{n}/events")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        streams.push(Box::pin(
            response.bytes_stream().eventsource().map(|e| e.unwrap()),
        ));
    }
    for n in 0..STREAMS {
        let sent = http
            .post(server.url(&format!("/broadcast?channel_id=room-{n}")))
            .json(&json!({"type": "n", "payload": n}))
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 200);
    }
    for (n, stream) in streams.iter_mut().enumerate() {
        assert_eq!(next(stream).await.data, n.to_string());
    }
    streams
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_carries_twenty_streams_on_one_connection_beside_http1_on_the_same_port() {
    let server = support::start(HttpConfig::default()).await;
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let _streams = twenty_streams_receive(&server, &h2c).await;
    // One HTTP/2 connection carried them all; the HTTP/1.1 client of the metrics is
    // served beside it on the same port.
    let h2 = h2c.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    let text = server.metrics_text().await;
    assert!(
        text.contains("eric_connections_by_protocol{protocol=\"h2\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("eric_connections_by_protocol{protocol=\"http/1.1\"} 1"),
        "{text}"
    );
    assert!(text.contains("eric_open_streams 20"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_and_limits_behave_the_same_over_h2c() {
    let config = HttpConfig::default()
        .keep_alive(Some(Duration::from_millis(200)))
        .limits(10_000, 1);
    let server = support::start(config).await;
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    h2c.put(server.url("/create?channel_id=c"))
        .send()
        .await
        .unwrap();
    let response = h2c
        .get(server.url("/channels/c/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut chunks = Vec::new();
    for _ in 0..2 {
        let next = tokio::time::timeout(Duration::from_secs(5), body.next());
        chunks.push(next.await.unwrap().unwrap().unwrap());
    }
    let [retry, comment] = &chunks[..] else {
        unreachable!()
    };
    assert!(
        retry.starts_with(b"retry: "),
        "the stream's retry first: {retry:?}"
    );
    assert_eq!(&comment[..], b":\n\n", "a keep-alive comment over HTTP/2");
    // The channel's one listener is taken: the limit answers 503 over HTTP/2 too.
    let refused = h2c
        .get(server.url("/channels/c/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let error: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(error["error"], "LimitReached");
}

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM files in a scratch
/// directory of the test's own.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (cert_path, key_path, cert.cert.der().to_vec())
}

fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("eric-tls-{name}-{}", std::process::id()))
}

/// A TLS connection to `addr` offering `alpn`, trusting `cert` alone.
async fn tls_connect(
    addr: std::net::SocketAddr,
    cert: &[u8],
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert.to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_offers_h2_and_http1_by_alpn() {
    use http_body_util::BodyExt;
    let dir = scratch("alpn");
    let (cert_path, key_path, der) = self_signed(&dir);
    let tls = eric_http::TlsConfig::from_pem_files(&cert_path, &key_path).unwrap();
    let server = HttpServer::bind("127.0.0.1:0", HttpConfig::default().tls(Some(tls)))
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    server
        .channels()
        .create(eric_persistence::ChannelSettings::with_id("news"))
        .await
        .unwrap();
    let channels = Arc::clone(server.channels());
    let _running = Running::serve(server);

    // HTTP/2: a stream and a broadcast on one connection.
    let tls = tls_connect(addr, &der, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("https://localhost/channels/news/events")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    channels
        .broadcast(
            "news",
            eric_core::Message::new("headline", json!("over h2")),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut text = String::new();
    // The stream's retry first, then the event (in one frame or two).
    while !text.contains("data: \"over h2\"") {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&frame.into_data().unwrap()).unwrap());
    }
    assert!(
        text.starts_with("retry: ") && text.contains("event: headline"),
        "{text}"
    );

    // HTTP/1.1 over TLS, when that is what the client offers.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_connect(addr, &der, b"http/1.1").await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A stream over HTTP/1.1 and TLS: written by eric once hyper has written its head
    // (`handoff.rs`), through the same TLS session.
    let mut tls = tls_connect(addr, &der, b"http/1.1").await;
    tls.write_all(b"GET /channels/news/events HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut received = String::new();
    let mut buf = [0u8; 4096];
    let mut broadcast = true;
    while !received.contains("data: \"over http/1.1\"") {
        if broadcast && received.contains("\r\n\r\nretry: ") {
            broadcast = false;
            let message = eric_core::Message::new("headline", json!("over http/1.1"));
            channels.broadcast("news", message).await.unwrap();
        }
        let read = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf));
        let n = read.await.expect("the event never came").unwrap();
        assert!(n > 0, "closed early: {received}");
        received.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    assert!(received.starts_with("HTTP/1.0 200"), "{received}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_certificate_or_key_file_is_an_error_that_names_it() {
    let dir = scratch("bad");
    let (cert, key, _) = self_signed(&dir);
    let missing = dir.join("missing.pem");
    let err = eric_http::TlsConfig::from_pem_files(&missing, &key)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("certificate") && err.contains("missing.pem"),
        "{err}"
    );
    let err = eric_http::TlsConfig::from_pem_files(&cert, &cert)
        .unwrap_err()
        .to_string();
    assert!(err.contains("key") && err.contains("cert.pem"), "{err}");
    let err = eric_http::TlsConfig::from_pem_files(&key, &key)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("certificate") && err.contains("key.pem"),
        "{err}"
    );
    // A key that is not the certificate's.
    let other = dir.join("other");
    let (_, other_key, _) = self_signed(&other);
    let err = eric_http::TlsConfig::from_pem_files(&cert, &other_key)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cert.pem") && err.contains("key.pem"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

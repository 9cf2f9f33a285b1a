//! `eric serve` over TLS to a real browser (issue 22): headless Chromium opens 20
//! `EventSource`s on 20 channels over https, all on one HTTP/2 connection (ALPN), and
//! every one receives its channel's broadcast. Over HTTP/1.1 the browser would hold six
//! connections per host and the seventh stream would wait. The test makes its own
//! self-signed certificate (rcgen) and tells Chromium to accept it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/browser.rs"]
mod browser;
#[path = "support/eric_serve.rs"]
mod eric_serve;

use std::time::{Duration, Instant};

use eric_serve::EricServe;
use serde_json::json;

const STREAMS: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_event_sources_over_https_all_receive_on_http2() {
    let Some((driver, chromium)) = browser::browser() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("eric-browser-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let server = EricServe::start(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]);
    assert!(server.base.starts_with("https://"), "{}", server.base);

    let tab = driver
        .session_with(&chromium, &["--ignore-certificate-errors"])
        .await;
    tab.goto(&format!("{}/healthz", server.base)).await.unwrap();
    // Everything from the page, same-origin: create, follow, then publish to each.
    tab.execute(
        "window.got = {}; window.opened = 0;
         const n = arguments[0];
         (async () => {
           for (let i = 0; i < n; i++) await fetch(`/create?channel_id=room-${i}`, {method: 'PUT'});
           for (let i = 0; i < n; i++) {
             const events = new EventSource(`/channels/room-${i}/events`);
             events.onopen = () => { window.opened += 1; };
             events.addEventListener('n', (e) => { window.got[`room-${i}`] = JSON.parse(e.data); });
           }
         })();",
        vec![json!(STREAMS)],
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let read = |expr: &'static str| {
        let tab = &tab;
        async move {
            tab.execute(&format!("return {expr}"), vec![])
                .await
                .unwrap()
        }
    };
    while read("window.opened").await.as_u64().unwrap() < STREAMS {
        assert!(
            Instant::now() < deadline,
            "{} of {STREAMS} streams opened",
            read("window.opened").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tab.execute(
        "for (let i = 0; i < arguments[0]; i++) {
           fetch(`/broadcast?channel_id=room-${i}`, {method: 'POST',
             headers: {'content-type': 'application/json'},
             body: JSON.stringify({type: 'n', payload: i})});
         }",
        vec![json!(STREAMS)],
    )
    .await
    .unwrap();
    let got = loop {
        let got = read("window.got").await;
        if got.as_object().unwrap().len() as u64 >= STREAMS {
            break got;
        }
        assert!(Instant::now() < deadline, "received: {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let protocols =
        read("[...new Set(performance.getEntriesByType('resource').map(e => e.nextHopProtocol))]")
            .await;
    tab.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    for i in 0..STREAMS {
        assert_eq!(got[format!("room-{i}")], json!(i), "room-{i}: {got}");
    }
    assert_eq!(
        protocols,
        json!(["h2"]),
        "every request of the page went over HTTP/2"
    );
}

//! No reconnection storms (issue 22): a headless Chromium tab follows a stream of
//! `eric serve`, which is then killed; the tab's `EventSource` retries at the pace of
//! the `retry` eric sent, counted through its `error` events. With the default
//! `--retry 3000` (each connection's own, in [1.5, 4.5] s) it tries a few times in 8 s;
//! with eric-sse's 5 ms, the reference measured in the same test, hundreds of times.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/browser.rs"]
mod browser;
#[path = "support/eric_serve.rs"]
mod eric_serve;
#[path = "support/sse_client.rs"]
mod sse_client;

use std::time::{Duration, Instant};

use eric_serve::EricServe;
use fantoccini::Client;
use serde_json::Value;

/// How long the tab is watched once the server is gone.
const WATCHED: Duration = Duration::from_secs(8);

/// Opens a stream in `tab` on a fresh `eric serve <args>`, kills the server, and counts
/// the tab's failed reconnects over [`WATCHED`].
async fn reconnects_after_a_kill(tab: &Client, args: &[&str]) -> u64 {
    let mut server = EricServe::start(args);
    let http = reqwest::Client::new();
    assert_eq!(sse_client::create(&http, &server.base, "room").await, 201);
    // The page is the server's own, so the stream is same-origin.
    tab.goto(&format!("{}/healthz", server.base)).await.unwrap();
    tab.execute(
        "window.opened = 0; window.errors = 0;
         const events = new EventSource('/channels/room/events');
         events.onopen = () => { window.opened += 1; };
         events.onerror = () => { window.errors += 1; };
         events.addEventListener('news', () => { window.news = true; });",
        vec![],
    )
    .await
    .unwrap();
    // One event, so that the tab has been sent this connection's retry.
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(tab, "opened").await == 0 {
        assert!(Instant::now() < deadline, "the tab's stream never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sse_client::publish_to(&http, &server.base, "room", 1).await;
    while !tab
        .execute("return window.news === true", vec![])
        .await
        .unwrap()
        .as_bool()
        .unwrap()
    {
        assert!(
            Instant::now() < deadline,
            "the tab never received the broadcast"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();
    tokio::time::sleep(WATCHED).await;
    counter(tab, "errors").await
}

async fn counter(tab: &Client, name: &str) -> u64 {
    let value: Value = tab
        .execute(&format!("return window.{name}"), vec![])
        .await
        .unwrap();
    value.as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_whose_server_died_retries_a_few_times_not_hundreds() {
    let Some((driver, chromium)) = browser::browser() else {
        return;
    };
    let tab = driver.session(&chromium).await;
    let spread = reconnects_after_a_kill(&tab, &[]).await;
    let storm = reconnects_after_a_kill(&tab, &["--retry", "5"]).await;
    tab.close().await.unwrap();
    eprintln!("reconnect attempts in {WATCHED:?}: --retry 3000: {spread}; --retry 5: {storm}");
    // At most one attempt per 1.5 s (the shortest retry drawn), and the first at once.
    assert!(
        spread <= 7,
        "{spread} attempts in {WATCHED:?} with --retry 3000"
    );
    assert!(
        storm > 50,
        "the 5 ms reference made only {storm} attempts: the test is blind"
    );
}

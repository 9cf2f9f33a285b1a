//! One `EventSource` in headless Chromium follows 10 channels of `eric serve` at once
//! (`GET /events?channel=…`), with a signed token in `?access_token=` that names them by
//! a pattern: it receives every channel's events, each channel's in order. Ten
//! `EventSource`s would take the browser's six HTTP/1.1 connections per host and stall.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/browser.rs"]
mod browser;
#[path = "support/eric_serve.rs"]
mod eric_serve;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eric_serve::EricServe;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "the browser test's secret";
const CHANNELS: usize = 10;
const PER_CHANNEL: u64 = 5;

fn token(claims: Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_source_follows_ten_channels_in_order() {
    let Some((driver, chromium)) = browser::browser() else {
        return;
    };
    let server = EricServe::start(&["--jwt-secret", SECRET]);
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let publisher = token(json!({"eric": {"publish": ["*"]}, "exp": exp}));
    let subscriber = token(json!({"eric": {"subscribe": ["room-*"]}, "exp": exp}));
    let http = reqwest::Client::new();
    let rooms: Vec<String> = (0..CHANNELS).map(|n| format!("room-{n}")).collect();
    for room in &rooms {
        let response = http
            .put(format!("{}/create?channel_id={room}", server.base))
            .bearer_auth(&publisher)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }

    let tab = driver.session(&chromium).await;
    tab.goto(&format!("{}/healthz", server.base)).await.unwrap();
    let query: String = rooms
        .iter()
        .map(|room| format!("channel={room}&"))
        .collect();
    tab.execute(
        "window.got = []; window.opened = false;
         const events = new EventSource('/events?' + arguments[0] + 'access_token=' + arguments[1]);
         events.onopen = () => { window.opened = true; };
         events.addEventListener('n', (e) => { window.got.push(JSON.parse(e.data)); });",
        vec![json!(query), json!(subscriber)],
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tab.execute("return window.opened", vec![]).await.unwrap() != json!(true) {
        assert!(Instant::now() < deadline, "the stream never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Interleaved across channels, as a busy page sees them.
    for n in 0..PER_CHANNEL {
        for room in &rooms {
            let response = http
                .post(format!("{}/broadcast?channel_id={room}", server.base))
                .bearer_auth(&publisher)
                .json(&json!({"type": "n", "payload": n}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    }
    let expected = CHANNELS * PER_CHANNEL as usize;
    let got = loop {
        let got = tab.execute("return window.got", vec![]).await.unwrap();
        let got = got.as_array().unwrap().clone();
        if got.len() >= expected {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {expected} events arrived",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tab.close().await.unwrap();
    assert_eq!(got.len(), expected);
    for room in &rooms {
        let order: Vec<u64> = got
            .iter()
            .filter(|event| event["channel"] == json!(room))
            .map(|event| event["data"].as_u64().unwrap())
            .collect();
        assert_eq!(order, (0..PER_CHANNEL).collect::<Vec<_>>(), "{room}");
    }
}

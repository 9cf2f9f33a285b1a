//! The seed-004 chat in a real browser: headless Chromium, driven through ChromeDriver,
//! opens the page three times; a message sent from one page arrives in the other of the
//! same room (and in the sender's own), through `EventSource` and eric's Publisher, and
//! not in the page of another room; a member's token does not open another room.
//!
//! Needs Debian's `chromium` and `chromium-driver` (tests/support/browser.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/browser.rs"]
mod browser;
#[path = "../examples/chat/app.rs"]
mod chat;

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};

/// Open the chat page and join `room` as `name`.
async fn join(browser: &Client, base: &str, name: &str, room: &str) {
    browser.goto(base).await.unwrap();
    let field = browser
        .wait()
        .for_element(Locator::Css("#join input[name=name]"))
        .await
        .unwrap();
    field.send_keys(name).await.unwrap();
    let room_field = browser
        .find(Locator::Css("#join input[name=room]"))
        .await
        .unwrap();
    room_field.clear().await.unwrap();
    room_field.send_keys(room).await.unwrap();
    browser
        .find(Locator::Css("#join button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Wait (up to 15 s) until the page's chat log contains `text`; the log's text if not.
async fn wait_for_log(browser: &Client, text: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = String::new();
    while Instant::now() < deadline {
        if let Ok(log) = browser.find(Locator::Css("#log")).await {
            seen = log.text().await.unwrap_or_default();
            if seen.contains(text) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_in_one_browser_window_arrives_in_another() {
    let Some((driver, chromium)) = browser::browser() else {
        return;
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, chat::router()).await });

    let alice = driver.session(&chromium).await;
    let bob = driver.session(&chromium).await;
    let carol = driver.session(&chromium).await;

    join(&carol, &base, "carol", "attic").await;
    wait_for_log(&carol, "welcome, carol!").await.unwrap();
    join(&alice, &base, "alice", "lobby").await;
    wait_for_log(&alice, "welcome, alice!").await.unwrap();
    join(&bob, &base, "bob", "lobby").await;
    // Bob's arrival is announced to each subscriber by name (a per-subscriber publication).
    wait_for_log(&bob, "welcome, bob!").await.unwrap();
    wait_for_log(&alice, "alice, say hello to bob!")
        .await
        .unwrap();

    let field = alice
        .find(Locator::Css("#say input[name=text]"))
        .await
        .unwrap();
    field.send_keys("hello from alice's window").await.unwrap();
    alice
        .find(Locator::Css("#say button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    let arrived = wait_for_log(&bob, "alice: hello from alice's window").await;
    let echoed = wait_for_log(&alice, "alice: hello from alice's window").await;
    // Alice's token, taken from her page, does not reach the attic.
    let token = alice.execute("return token", vec![]).await.unwrap();
    let http = reqwest::Client::new();
    let status = |response: reqwest::Response| response.status().as_u16();
    let sent_elsewhere = http
        .post(format!("{base}send"))
        .bearer_auth(token.as_str().unwrap())
        .json(&serde_json::json!({"room": "attic", "text": "psst"}))
        .send()
        .await
        .unwrap();
    assert_eq!(status(sent_elsewhere), 403);
    let followed_elsewhere = http
        .get(format!(
            "{base}stream?room=attic&token={}",
            token.as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(status(followed_elsewhere), 403);
    let carols_log = carol
        .find(Locator::Css("#log"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    carol.close().await.unwrap();
    assert!(
        !carols_log.contains("alice") && !carols_log.contains("psst"),
        "the attic saw the lobby: {carols_log:?}"
    );
    arrived.unwrap_or_else(|log| {
        panic!("bob's page never showed alice's message; it showed: {log:?}")
    });
    echoed.unwrap_or_else(|log| {
        panic!("alice's page never showed her own message; it showed: {log:?}")
    });
}

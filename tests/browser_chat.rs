//! The seed-004 chat in a real browser: headless Chromium, driven through ChromeDriver,
//! opens the page twice; a message sent from one page arrives in the other (and in the
//! sender's own), through `EventSource` and eric's Publisher.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Where they
//! are missing the test prints why and returns, unless `ERIC_REQUIRE_BROWSER` is set
//! (as `.ci/run` sets it), in which case a missing browser fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../examples/chat/app.rs"]
mod chat;

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Map, json};

/// The first of `names` found on PATH.
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// ChromeDriver on a free loopback port, killed on drop.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start(program: &Path) -> Self {
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A new browser session (its own window and profile), once the driver answers.
    async fn session(&self, chromium: &Path) -> Client {
        let mut capabilities = Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--no-first-run"],
            }),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&self.url)
                .await
            {
                Ok(client) => return client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("ChromeDriver at {} gave no session: {e}", self.url),
            }
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Open the chat page and join as `name`.
async fn join(browser: &Client, base: &str, name: &str) {
    browser.goto(base).await.unwrap();
    let field = browser
        .wait()
        .for_element(Locator::Css("#join input[name=name]"))
        .await
        .unwrap();
    field.send_keys(name).await.unwrap();
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
    let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = find_program(&["chromedriver"]);
    let (Some(chromium), Some(driver)) = (chromium, driver) else {
        let reason = "chromium and chromedriver are not on PATH (Debian: apt-get install \
                      chromium chromium-driver; .ci/run installs them)";
        if std::env::var_os("ERIC_REQUIRE_BROWSER").is_some() {
            panic!("ERIC_REQUIRE_BROWSER is set but {reason}");
        }
        eprintln!("skipping the browser test: {reason}");
        return;
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, chat::router()).await });

    let driver = ChromeDriver::start(&driver);
    let alice = driver.session(&chromium).await;
    let bob = driver.session(&chromium).await;

    join(&alice, &base, "alice").await;
    wait_for_log(&alice, "welcome, alice!").await.unwrap();
    join(&bob, &base, "bob").await;
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
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    arrived.unwrap_or_else(|log| {
        panic!("bob's page never showed alice's message; it showed: {log:?}")
    });
    echoed.unwrap_or_else(|log| {
        panic!("alice's page never showed her own message; it showed: {log:?}")
    });
}

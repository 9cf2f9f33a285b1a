//! Headless Chromium for the root's browser tests, driven through ChromeDriver on a free
//! loopback port. Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them); where they are missing a test says why and returns, unless
//! `ERIC_REQUIRE_BROWSER` is set (as `.ci/run` sets it), which makes it fail instead.
#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Map, json};

/// ChromeDriver and Chromium, or `None` (after saying why) where a test may skip.
pub(crate) fn browser() -> Option<(ChromeDriver, PathBuf)> {
    let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = find_program(&["chromedriver"]);
    let (Some(chromium), Some(driver)) = (chromium, driver) else {
        let reason = "chromium and chromedriver are not on PATH (Debian: apt-get install \
                      chromium chromium-driver; .ci/run installs them)";
        if std::env::var_os("ERIC_REQUIRE_BROWSER").is_some() {
            panic!("ERIC_REQUIRE_BROWSER is set but {reason}");
        }
        eprintln!("skipping the browser test: {reason}");
        return None;
    };
    Some((ChromeDriver::start(&driver), chromium))
}

/// The first of `names` found on PATH.
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// ChromeDriver on a free loopback port, killed on drop.
pub(crate) struct ChromeDriver {
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
    pub(crate) async fn session(&self, chromium: &Path) -> Client {
        self.session_with(chromium, &[]).await
    }

    /// A new browser session with Chromium's `extra` arguments too.
    pub(crate) async fn session_with(&self, chromium: &Path, extra: &[&str]) -> Client {
        let mut capabilities = Map::new();
        // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ];
        args.extend_from_slice(extra);
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
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

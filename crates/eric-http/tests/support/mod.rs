//! What the HTTP tests share: a server on a free loopback port, a reqwest client, an
//! SSE parser.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use eric_http::{HttpConfig, HttpServer};
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub type EventStream = std::pin::Pin<Box<dyn Stream<Item = Event> + Send>>;

/// A response body as the server writes it, chunk by chunk (not parsed into events).
pub type RawBody = std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

pub struct Running {
    pub base: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<eric_http::Result<()>>>,
}

pub async fn start(config: HttpConfig) -> Running {
    Running::serve(HttpServer::bind("127.0.0.1:0", config).await.unwrap())
}

impl Running {
    /// Runs `server` until [`shut_down`](Self::shut_down) or drop.
    pub fn serve(server: HttpServer) -> Self {
        let base = format!("http://{}", server.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        Running {
            base,
            http: reqwest::Client::new(),
            stop: Some(stop),
            serving: Some(serving),
        }
    }

    /// Tells the server to shut down, without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts the server down and waits until `run_until` has returned: 15 s at most,
    /// past the server's own bound (`shutdown_timeout`, 10 s), which a loaded machine
    /// can reach in cluster mode.
    pub async fn shut_down(mut self) {
        self.signal_shutdown();
        let serving = self.serving.take().unwrap();
        tokio::time::timeout(Duration::from_secs(15), serving)
            .await
            .expect("run_until did not return after shutdown")
            .unwrap()
            .unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn create(&self) -> String {
        let r = self.http.put(self.url("/create")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["channel_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn subscribe(&self, channel: &str) -> String {
        let r = self
            .http
            .post(self.url(&format!("/subscribe?channel_id={channel}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()["listener_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn broadcast(
        &self,
        channel: &str,
        message_type: &str,
        payload: Value,
    ) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/broadcast?channel_id={channel}")))
            .json(&json!({"type": message_type, "payload": payload}))
            .send()
            .await
            .unwrap()
    }

    pub async fn events(&self, path: &str, last_event_id: Option<&str>) -> EventStream {
        let mut request = self.http.get(self.url(path));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Box::pin(response.bytes_stream().eventsource().map(|e| e.unwrap()))
    }

    /// The body of `GET path` as written: for what the SSE parser hides (comments,
    /// an opening block without data, how events are split into writes).
    pub async fn raw_body(&self, path: &str) -> RawBody {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        Box::pin(response.bytes_stream())
    }

    pub async fn metric(&self, name: &str) -> u64 {
        metric_at(&self.http, &self.base, name).await
    }

    /// The whole of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        metrics_text_at(&self.http, &self.base).await
    }

    pub async fn eventually(&self, name: &str, value: u64) {
        for _ in 0..300 {
            if self.metric(name).await == value {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name} never became {value}");
    }
}

pub async fn next(events: &mut (impl Stream<Item = Event> + Unpin)) -> Event {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("no event within 5 s")
        .expect("the stream ended")
}

/// The next chunk `body` writes, within `within`.
pub async fn next_chunk(body: &mut RawBody, within: Duration) -> bytes::Bytes {
    tokio::time::timeout(within, body.next())
        .await
        .unwrap_or_else(|_| panic!("nothing written within {within:?}"))
        .expect("the stream ended")
        .unwrap()
}

/// A counter or gauge of `/metrics` at `base` (a server of this process or not).
pub async fn metric_at(http: &reqwest::Client, base: &str, name: &str) -> u64 {
    let text = metrics_text_at(http, base).await;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} "))?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

/// The whole of `/metrics` at `base`.
pub async fn metrics_text_at(http: &reqwest::Client, base: &str) -> String {
    let response = http.get(format!("{base}/metrics")).send().await.unwrap();
    response.text().await.unwrap()
}

//! The chat app itself (router and page), shared by `examples/chat/main.rs` and the
//! browser test `tests/browser_chat.rs`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use eric::prefabs::{Publication, Publisher};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

const HISTORY: usize = 50;

#[derive(Clone)]
struct Chat {
    publisher: Publisher,
    history: Arc<Mutex<VecDeque<Value>>>,
}

#[derive(Deserialize)]
struct Who {
    name: String,
}

#[derive(Deserialize)]
struct Said {
    name: String,
    text: String,
}

/// The chat: `/` the page, `/stream?name=` a subscriber's events, `POST /send` a message.
pub(crate) fn router() -> Router {
    let chat = Chat {
        publisher: Publisher::new(),
        history: Arc::default(),
    };
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/stream", get(stream))
        .route("/send", post(send))
        .with_state(chat)
}

/// A subscriber's stream: the history first, then everything said.
async fn stream(State(chat): State<Chat>, Query(who): Query<Who>) -> impl IntoResponse {
    let name: String = who.name.chars().take(32).collect();
    let history: Vec<Value> = chat
        .history
        .lock()
        .map(|h| h.iter().cloned().collect())
        .unwrap_or_default();
    let subscription = chat
        .publisher
        .subscribe_with("chat", json!({ "name": name }), history);
    // Greet everyone by their own name: one publication, made for each subscriber.
    let newcomer = name.clone();
    chat.publisher.publish(
        Publication::per_subscriber(move |properties| {
            let me = properties["name"].as_str().unwrap_or("you");
            let text = if me == newcomer {
                format!("welcome, {me}!")
            } else {
                format!("{me}, say hello to {newcomer}!")
            };
            json!({"name": "eric", "text": text})
        }),
        "chat",
    );
    let body = subscription
        .map(|event| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(event.encode())));
    (
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        Body::from_stream(body),
    )
}

async fn send(State(chat): State<Chat>, axum::Json(said): axum::Json<Said>) -> &'static str {
    let message = json!({
        "name": said.name.chars().take(32).collect::<String>(),
        "text": said.text.chars().take(2000).collect::<String>(),
    });
    if let Ok(mut history) = chat.history.lock() {
        history.push_back(message.clone());
        while history.len() > HISTORY {
            history.pop_front();
        }
    }
    chat.publisher.publish(message, "chat");
    "ok"
}

// The page: plain HTML and `EventSource`, no build step.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>eric chat</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }
  #log { border: 1px solid #ccc; height: 20rem; overflow-y: auto; padding: .5rem; }
  #log p { margin: .2rem 0; }
  .who { font-weight: bold; }
  form { display: flex; gap: .5rem; margin-top: .5rem; }
  input[name=text] { flex: 1; }
</style>
</head>
<body>
<h1>eric chat</h1>
<form id="join"><input name="name" placeholder="your name" required autofocus><button>join</button></form>
<div id="room" hidden>
  <div id="log"></div>
  <form id="say"><input name="text" placeholder="say something" autocomplete="off" required><button>send</button></form>
</div>
<script>
  let name = "";
  const log = document.getElementById("log");
  function show(message) {
    const p = document.createElement("p");
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = message.name + ": ";
    p.append(who, message.text);
    log.append(p);
    log.scrollTop = log.scrollHeight;
  }
  document.getElementById("join").addEventListener("submit", (e) => {
    e.preventDefault();
    name = e.target.name.value;
    e.target.hidden = true;
    document.getElementById("room").hidden = false;
    const events = new EventSource("/stream?name=" + encodeURIComponent(name));
    events.onmessage = (event) => show(JSON.parse(event.data));
  });
  document.getElementById("say").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = e.target.text.value;
    e.target.text.value = "";
    await fetch("/send", {method: "POST", headers: {"content-type": "application/json"},
                          body: JSON.stringify({name, text})});
  });
</script>
</body>
</html>
"#;

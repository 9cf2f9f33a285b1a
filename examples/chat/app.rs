//! The chat app itself (router and page), shared by `examples/chat/main.rs` and the
//! browser test `tests/browser_chat.rs`. Each room is a topic of the Publisher, and each
//! member gets a signed token for their room alone (eric-http's claims): it names the
//! room they may read and write, and their name, which the server takes from the token
//! rather than from what the page sends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use eric::http::{JwtKey, TokenClaims};
use eric::prefabs::{Publication, Publisher};
use futures_util::StreamExt;
use jsonwebtoken::{EncodingKey, Header};
use serde::Deserialize;
use serde_json::{Value, json};

const HISTORY: usize = 50;

#[derive(Clone)]
struct Chat {
    publisher: Publisher,
    /// Each room's recent messages.
    history: Arc<Mutex<HashMap<String, VecDeque<Value>>>>,
    /// Signs and checks the members' tokens: a secret of this process's own.
    secret: Arc<String>,
}

#[derive(Deserialize)]
struct Join {
    name: String,
    room: String,
}

#[derive(Deserialize)]
struct Follow {
    room: String,
    token: String,
}

#[derive(Deserialize)]
struct Said {
    room: String,
    text: String,
}

/// The chat: `/` the page, `POST /join` a member's token for a room, `/stream?room=&token=`
/// the room's events, `POST /send` (with the token as a bearer) a message to the room.
pub(crate) fn router() -> Router {
    let chat = Chat {
        publisher: Publisher::new(),
        history: Arc::default(),
        secret: Arc::new(uuid::Uuid::new_v4().to_string()),
    };
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/join", post(join))
        .route("/stream", get(stream))
        .route("/send", post(send))
        .with_state(chat)
}

fn short(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// A token for `room` alone, in `name`'s name, for an hour.
async fn join(State(chat): State<Chat>, axum::Json(join): axum::Json<Join>) -> Response {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + 3600;
    let room = short(&join.room, 32);
    let claims = json!({
        "eric": {"subscribe": [room], "publish": [room]},
        "sub": short(&join.name, 32),
        "exp": exp,
    });
    let signed = EncodingKey::from_secret(chat.secret.as_bytes())
        .and_then(|key| jsonwebtoken::encode(&Header::default(), &claims, &key));
    match signed {
        Ok(token) => axum::Json(json!({ "token": token })).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// What `token` allows, or the answer to give.
fn checked(chat: &Chat, token: &str) -> Result<TokenClaims, (StatusCode, String)> {
    JwtKey::secret(chat.secret.as_bytes())
        .and_then(|key| key.verify(token, true))
        .map_err(|err| (StatusCode::UNAUTHORIZED, err.to_string()))
}

fn forbidden(room: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        format!("your token is not for room {room:?}"),
    )
        .into_response()
}

/// A member's stream of their room: its history first, then everything said in it.
async fn stream(State(chat): State<Chat>, Query(follow): Query<Follow>) -> Response {
    let claims = match checked(&chat, &follow.token) {
        Ok(claims) => claims,
        Err(answer) => return answer.into_response(),
    };
    if !claims.may_subscribe(&follow.room) {
        return forbidden(&follow.room);
    }
    let name = claims.sub().unwrap_or("someone").to_owned();
    let room = follow.room;
    let history: Vec<Value> = chat
        .history
        .lock()
        .map(|h| h.get(&room).map(|h| h.iter().cloned().collect()))
        .unwrap_or_default()
        .unwrap_or_default();
    let subscription =
        chat.publisher
            .subscribe_with(room.as_str(), json!({ "name": name }), history);
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
        room.as_str(),
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
        .into_response()
}

/// A message to a room, from the member the token names.
async fn send(
    State(chat): State<Chat>,
    headers: HeaderMap,
    axum::Json(said): axum::Json<Said>,
) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let claims = match checked(&chat, token) {
        Ok(claims) => claims,
        Err(answer) => return answer.into_response(),
    };
    if !claims.may_publish(&said.room) {
        return forbidden(&said.room);
    }
    let message = json!({
        "name": claims.sub().unwrap_or("someone"),
        "text": short(&said.text, 2000),
    });
    if let Ok(mut history) = chat.history.lock() {
        let room = history.entry(said.room.clone()).or_default();
        room.push_back(message.clone());
        while room.len() > HISTORY {
            room.pop_front();
        }
    }
    chat.publisher.publish(message, said.room.as_str());
    "ok".into_response()
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
<form id="join"><input name="name" placeholder="your name" required autofocus>
  <input name="room" placeholder="room" value="lobby" required><button>join</button></form>
<div id="room" hidden>
  <div id="log"></div>
  <form id="say"><input name="text" placeholder="say something" autocomplete="off" required><button>send</button></form>
</div>
<script>
  let room = "", token = "";
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
  document.getElementById("join").addEventListener("submit", async (e) => {
    e.preventDefault();
    room = e.target.room.value;
    const joined = await fetch("/join", {method: "POST", headers: {"content-type": "application/json"},
                                         body: JSON.stringify({name: e.target.name.value, room})});
    token = (await joined.json()).token;
    e.target.hidden = true;
    document.getElementById("room").hidden = false;
    const events = new EventSource("/stream?room=" + encodeURIComponent(room) +
                                   "&token=" + encodeURIComponent(token));
    events.onmessage = (event) => show(JSON.parse(event.data));
  });
  document.getElementById("say").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = e.target.text.value;
    e.target.text.value = "";
    await fetch("/send", {method: "POST",
                          headers: {"content-type": "application/json", "authorization": "Bearer " + token},
                          body: JSON.stringify({room, text})});
  });
</script>
</body>
</html>
"#;

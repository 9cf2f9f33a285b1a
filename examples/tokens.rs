//! Signed tokens and many channels on one stream: an eric HTTP server that accepts
//! HS256 tokens, a token minted here in Rust for the channels `room-1` and `room-2`, and a
//! page whose one `EventSource` follows both with it. A ticker publishes to each.
//! `cargo run --example tokens`, then open http://localhost:5002 (`PORT=` to move it).
//!
//! In production the token comes from your login service, signed with the secret (or
//! the private key whose public half `eric serve --jwt-public-key` holds); the page gets
//! it from there, not from the server that streams.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::response::Html;
use axum::routing::get;
use eric::http::{HttpConfig, HttpServer, JwtConfig, JwtKey};
use eric::persistence::ChannelSettings;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "change me: the secret eric serve --jwt-secret would hold";

/// A token that may subscribe to the rooms (not publish), for `who`, for an hour.
fn mint(who: &str) -> Result<String, jsonwebtoken::errors::Error> {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + 3600;
    let claims = json!({"eric": {"subscribe": ["room-*"]}, "sub": who, "exp": exp});
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes())?,
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "5002".into());
    let config = HttpConfig::default().jwt(Some(JwtConfig::new(JwtKey::secret(SECRET)?)));
    // Its router is mounted below, beside the page, on a listener of this program's.
    let server = HttpServer::bind("127.0.0.1:0", config).await?;
    let channels = server.channels().clone();
    for room in ["room-1", "room-2"] {
        channels.create(ChannelSettings::with_id(room)).await?;
    }

    // The page, with a token minted for it, beside eric's routes.
    let page = PAGE.replace("TOKEN", &mint("reader")?);
    let app = server
        .router()
        .route("/", get(move || async move { Html(page) }));
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("open http://localhost:{port}");

    // A ticker: the server's own process publishes through the channel API.
    tokio::spawn(async move {
        for n in 0u64.. {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let room = if n % 3 == 0 { "room-2" } else { "room-1" };
            let message = eric::Message::new("tick", json!({ "n": n }));
            if channels.broadcast(room, message).await.is_err() {
                break;
            }
        }
    });
    axum::serve(listener, app).await?;
    Ok(())
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>eric: two rooms, one stream</title></head>
<body>
<h1>Two rooms, one EventSource</h1>
<ul id="log"></ul>
<script>
  const log = document.getElementById("log");
  const events = new EventSource("/events?channel=room-1&channel=room-2&access_token=TOKEN");
  events.addEventListener("tick", (e) => {
    const {channel, data} = JSON.parse(e.data);
    const li = document.createElement("li");
    li.textContent = `${channel}: tick ${data.n} (id ${e.lastEventId})`;
    log.prepend(li);
  });
  events.addEventListener("_eric_token_expired", () => { events.close(); /* fetch a new token, reopen */ });
</script>
</body></html>
"#;

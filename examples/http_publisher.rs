//! Publishes to an `eric serve` with the Rust client: creates the channel `news` and
//! broadcasts a headline a second. Start `eric serve` first, then this, then
//! `cargo run --example http_follower` in another terminal.
//! `ERIC_URL` (default `http://127.0.0.1:8000`) and `ERIC_TOKEN` (a publish token, if
//! the server wants one).

use std::time::Duration;

use eric::http::client::{Client, ClientError};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let url = std::env::var("ERIC_URL").unwrap_or_else(|_| "http://127.0.0.1:8000".into());
    let mut client = Client::new(url);
    if let Ok(token) = std::env::var("ERIC_TOKEN") {
        client = client.with_token(token);
    }
    match client.create(Some("news")).await {
        Ok(_) | Err(ClientError::Conflict(_)) => {}
        Err(err) => return Err(err),
    }
    for n in 0u64.. {
        match client
            .broadcast("news", "headline", json!({ "n": n }))
            .await
        {
            Ok(published) => println!("headline {n}: event {}", published.id),
            // The server restarting or away: say so and go on.
            Err(err) if err.is_transient() => eprintln!("headline {n} not sent: {err}"),
            Err(err) => return Err(err),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

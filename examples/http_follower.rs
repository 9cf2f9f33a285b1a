//! Follows `news` on an `eric serve` with the Rust client, printing each headline; it
//! reconnects by itself if the server restarts, resuming where it was. See
//! `examples/http_publisher.rs`. `ERIC_URL`, `ERIC_TOKEN` as there.

use eric::http::client::{Client, ClientError, Event};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let url = std::env::var("ERIC_URL").unwrap_or_else(|_| "http://127.0.0.1:8000".into());
    let mut client = Client::new(url);
    if let Ok(token) = std::env::var("ERIC_TOKEN") {
        client = client.with_token(token);
    }
    let mut news = client.follow("news");
    while let Some(event) = news.next().await {
        match event? {
            Event::Message(message) => {
                println!(
                    "{} {}: {}",
                    message.id.unwrap_or_default(),
                    message.event,
                    message.data
                )
            }
            Event::Reset(reset) => println!(
                "missed events of {} ({}): resync",
                reset.channel, reset.reason
            ),
            Event::ChannelClosed { channel } => println!("{channel} was removed"),
            other => println!("{other:?}"),
        }
    }
    Ok(())
}

//! An SSE channel: the exact bytes a browser receives, then a reconnect with
//! `Last-Event-ID` that replays what was missed, and one with a stale id that gets a
//! reset event. `cargo run --example sse`

use eric::Message;
use eric::prefabs::{SseChannel, SseStream};
use futures_util::{FutureExt, StreamExt};
use serde_json::json;

/// Prints the events the stream has ready; returns the last id seen.
fn print_ready(label: &str, stream: &mut SseStream) -> Option<String> {
    let mut last = None;
    while let Some(Some(event)) = stream.next().now_or_never() {
        let event = event.ok()?;
        println!("--- {label}\n{}", event.encode().trim_end());
        last = event.id().map(str::to_owned).or(last);
    }
    last
}

fn main() -> Result<(), eric::prefabs::Error> {
    let channel = SseChannel::builder().replay(64).build()?;
    let mut browser = channel.subscribe(None)?;

    channel.broadcast(Message::new("score", json!({"home": 1, "away": 0})))?;
    channel.broadcast(Message::new("note", "line one\nline two"))?;
    let last_seen = print_ready("live", &mut browser);

    // The connection drops; two events go out meanwhile.
    drop(browser);
    channel.broadcast(Message::new("score", json!({"home": 2, "away": 0})))?;
    channel.broadcast(Message::new("score", json!({"home": 2, "away": 1})))?;

    println!(
        "\nreconnecting with Last-Event-ID: {}",
        last_seen.as_deref().unwrap_or("none")
    );
    let mut resumed = channel.subscribe(last_seen.as_deref())?;
    print_ready("replayed", &mut resumed);

    println!("\nreconnecting with a stale id from before a restart");
    let mut stale = channel.subscribe(Some("0badc0de-17"))?;
    print_ready("reset", &mut stale);
    Ok(())
}

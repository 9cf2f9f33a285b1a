//! The README's twenty lines: a channel, a listener, a broadcast and a dispatch, and
//! the listener's stream printed to its end.

use eric::{Channel, Message};
use futures_util::StreamExt;
use serde_json::json;

#[tokio::main]
async fn main() -> eric::Result<()> {
    let channel = Channel::default();
    let alice = channel.add_listener()?;
    let mut stream = channel.message_stream(alice.id())?;

    channel.broadcast(Message::new("news", json!({"headline": "eric ships"})))?;
    channel.dispatch(alice.id(), Message::new("dm", "hi alice"))?;
    channel.close(); // streams end once they have read what was queued

    while let Some(item) = stream.next().await {
        let msg = item?;
        println!("{} {}", msg.message_type(), msg.payload_json());
    }
    Ok(())
}

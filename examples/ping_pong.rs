//! Two "nodes" of a distributed application playing ping-pong over one channel: each
//! answers the other's message until the rally is over, then the first stops the
//! second. `cargo run --example ping_pong`

use std::sync::Arc;

use eric::Message;
use eric::prefabs::{SimpleDistributedApplicationChannel, SimpleDistributedApplicationListener};
use futures_util::StreamExt;

const RALLY: u64 = 5;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let channel = SimpleDistributedApplicationChannel::new();
    let alice = SimpleDistributedApplicationListener::with_id("alice")?;
    let bob = SimpleDistributedApplicationListener::with_id("bob")?;

    // Bob answers every ping with a pong carrying the same count.
    bob.set_action("ping", |msg| {
        let n = msg.payload().as_u64().unwrap_or(0);
        println!("bob   <- ping {n} from {}", msg.sender_id().unwrap_or("?"));
        vec![Message::new("pong", n)]
    })?;
    // Alice serves the next ping until the rally is over, then tells bob to stop.
    alice.set_action("pong", |msg| {
        let n = msg.payload().as_u64().unwrap_or(0);
        println!("alice <- pong {n} from {}", msg.sender_id().unwrap_or("?"));
        if n < RALLY {
            vec![Message::new("ping", n + 1)]
        } else {
            vec![Message::of_type("stop")]
        }
    })?;
    channel.register_listener(Arc::clone(&alice))?;
    channel.register_listener(Arc::clone(&bob))?;

    // Each node reads its own stream; reading runs its actions.
    let mut alice_stream = channel.sse().message_stream(alice.id())?;
    let mut bob_stream = channel.sse().message_stream(bob.id())?;
    let alice_task = tokio::spawn(async move {
        while let Some(event) = alice_stream.next().await {
            event?;
        }
        Ok::<_, eric::Error>(())
    });
    let bob_task = tokio::spawn(async move {
        let mut seen = 0;
        while let Some(event) = bob_stream.next().await {
            event?;
            seen += 1;
        }
        Ok::<_, eric::Error>(seen)
    });

    alice.dispatch_to(bob.id(), Message::new("ping", 1))?;
    // Bob's stream ends when alice's "stop" stops him.
    let bob_events = bob_task.await??;
    println!("bob stopped after {bob_events} messages; closing the channel");
    channel.sse().close();
    alice_task.await??;
    Ok(())
}

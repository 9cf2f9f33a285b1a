//! The `eric` command.

use clap::{Parser, Subcommand};
use eric::{Channel, Message};
use futures_util::StreamExt;

#[derive(Parser)]
#[command(
    name = "eric",
    version,
    about = "Async messaging in the Server-Sent Events model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates an in-memory channel, adds listeners, broadcasts, and prints each
    /// listener's stream.
    Demo {
        /// How many listeners to add.
        #[arg(long, default_value_t = 3)]
        listeners: usize,
        /// How many messages to broadcast.
        #[arg(long, default_value_t = 3)]
        messages: usize,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Demo {
            listeners,
            messages,
        } => demo(listeners, messages).await,
    }
}

async fn demo(listeners: usize, messages: usize) -> Result<(), Box<dyn std::error::Error>> {
    let channel = Channel::default();
    println!("channel {}", channel.id());
    let mut readers = Vec::with_capacity(listeners);
    for _ in 0..listeners {
        let listener = channel.add_listener()?;
        let mut stream = channel.message_stream(listener.id())?;
        readers.push(tokio::spawn(async move {
            let mut lines = Vec::new();
            while let Some(item) = stream.next().await {
                let msg = item?;
                lines.push(format!(
                    "listener {} got {} {}",
                    stream.listener_id(),
                    msg.message_type(),
                    msg.payload_json()
                ));
            }
            Ok::<_, eric::Error>(lines)
        }));
    }
    for n in 0..messages {
        let report = channel.broadcast(Message::new(
            "greeting",
            serde_json::json!({ "n": n, "text": "hello" }),
        ))?;
        println!("broadcast #{n} to {} listener(s)", report.delivered);
    }
    channel.close();
    for reader in readers {
        for line in reader.await?? {
            println!("{line}");
        }
    }
    Ok(())
}

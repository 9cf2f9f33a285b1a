//! The server-sent-events Publisher: two subscribers with properties, initial data,
//! a plain publication and one made for each subscriber. `cargo run --example publisher`

use eric::prefabs::{Publication, Publisher};
use futures_util::{FutureExt, StreamExt};
use serde_json::json;

fn main() {
    let publisher = Publisher::new();
    let history = ["Ana joined", "Bo joined"];
    let mut ana = publisher.subscribe_with("chat", json!({"name": "Ana"}), history);
    let mut bo = publisher.subscribe_with(["chat", "alerts"], json!({"name": "Bo"}), history);

    publisher.publish("Ana: hello!", "chat");
    publisher.publish(
        Publication::per_subscriber(|p| {
            json!(format!(
                "(private) hi {}",
                p["name"].as_str().unwrap_or("?")
            ))
        }),
        "chat",
    );
    publisher.publish(json!({"alert": "server restarting soon"}), "alerts");

    let names: Vec<_> = publisher
        .subscribers("chat")
        .into_iter()
        .map(|s| s.properties["name"].clone())
        .collect();
    println!("subscribers of chat: {names:?}");
    for (who, subscription) in [("Ana", &mut ana), ("Bo", &mut bo)] {
        while let Some(Some(event)) = subscription.next().now_or_never() {
            print!("{who} gets: {}", event.encode());
        }
    }
    drop(ana);
    println!(
        "after Ana leaves: {} subscriber(s) of chat",
        publisher.subscribers("chat").len()
    );
}

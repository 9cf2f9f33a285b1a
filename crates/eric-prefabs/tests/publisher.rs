//! The Publisher of seed 004: channels by name ("default channel" by default), initial
//! data first, per-subscriber publications, subscriber listing, and unsubscribe on drop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use eric_prefabs::{DEFAULT_CHANNEL, Publication, Publisher, Subscription};
use futures_util::{FutureExt, StreamExt};
use serde_json::json;

fn ready(subscription: &mut Subscription) -> Vec<String> {
    std::iter::from_fn(|| subscription.next().now_or_never().flatten())
        .map(|event| event.data().to_owned())
        .collect()
}

#[test]
fn the_default_channel_is_used_when_none_is_named() {
    let publisher = Publisher::new();
    let mut sub = publisher.subscribe(eric_prefabs::Channels::default());
    publisher.publish("to the default", DEFAULT_CHANNEL);
    publisher.publish("elsewhere", "other");
    assert_eq!(ready(&mut sub), ["to the default"]);
}

#[test]
fn initial_data_comes_before_anything_published() {
    let publisher = Publisher::new();
    publisher.publish("before subscribing: not seen", "room");
    let mut sub = publisher.subscribe_with("room", json!(null), ["history 1", "history 2"]);
    publisher.publish("live", "room");
    assert_eq!(ready(&mut sub), ["history 1", "history 2", "live"]);
}

#[test]
fn strings_go_as_text_other_values_as_json() {
    let publisher = Publisher::new();
    let mut sub = publisher.subscribe("c");
    publisher.publish("plain text", "c");
    publisher.publish(json!({"a": [1, 2]}), "c");
    publisher.publish(json!(3.5), "c");
    assert_eq!(ready(&mut sub), ["plain text", "{\"a\":[1,2]}", "3.5"]);
}

#[test]
fn a_subscriber_of_several_channels_hears_each() {
    let publisher = Publisher::new();
    let mut both = publisher.subscribe(["chat", "global"]);
    let mut chat_only = publisher.subscribe("chat");
    publisher.publish("in chat", "chat");
    publisher.publish("in global", "global");
    publisher.publish("to both", vec!["chat", "global"]);
    let mut heard = ready(&mut both);
    heard.sort();
    assert_eq!(heard, ["in chat", "in global", "to both", "to both"]);
    assert_eq!(ready(&mut chat_only), ["in chat", "to both"]);
}

#[test]
fn a_callable_publication_is_made_for_each_subscriber_from_its_properties() {
    let publisher = Publisher::new();
    let mut ana = publisher.subscribe_with("chat", json!({"name": "Ana"}), Vec::<String>::new());
    let mut bo = publisher.subscribe_with("chat", json!({"name": "Bo"}), Vec::<String>::new());
    let sent = publisher.publish(
        Publication::per_subscriber(|p| {
            json!(format!("welcome, {}!", p["name"].as_str().unwrap()))
        }),
        "chat",
    );
    assert_eq!(sent, 2);
    assert_eq!(ready(&mut ana), ["welcome, Ana!"]);
    assert_eq!(ready(&mut bo), ["welcome, Bo!"]);
}

#[test]
fn subscribers_are_listed_once_and_leave_when_dropped() {
    let publisher = Publisher::new();
    let ana = publisher.subscribe_with(["a", "b"], json!({"name": "Ana"}), Vec::<String>::new());
    let bo = publisher.subscribe_with("b", json!({"name": "Bo"}), Vec::<String>::new());
    let names = |channels: Vec<&str>| {
        let mut names: Vec<String> = publisher
            .subscribers(channels)
            .into_iter()
            .map(|s| s.properties["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(vec!["a"]), ["Ana"]);
    assert_eq!(names(vec!["a", "b"]), ["Ana", "Bo"]);
    assert_eq!(ana.properties()["name"], "Ana");

    drop(ana);
    assert_eq!(names(vec!["a", "b"]), ["Bo"]);
    assert_eq!(publisher.publish("anyone?", "a"), 0);
    drop(bo);
    assert!(publisher.subscribers(vec!["a", "b"]).is_empty());
    assert!(
        publisher.channel_names().is_empty(),
        "empty channels are let go"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_from_threads_reaches_a_waiting_subscriber_in_order() {
    let publisher = Publisher::new();
    let mut sub = publisher.subscribe("ticks");
    let producer = {
        let publisher = publisher.clone();
        std::thread::spawn(move || {
            for n in 0..1_000 {
                publisher.publish(json!(n), "ticks");
            }
        })
    };
    let mut got = Vec::new();
    while got.len() < 1_000 {
        let event = sub.next().await.unwrap();
        got.push(event.data().parse::<u64>().unwrap());
    }
    producer.join().unwrap();
    assert_eq!(got, (0..1_000).collect::<Vec<_>>());
}

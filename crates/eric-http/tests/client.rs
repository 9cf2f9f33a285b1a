//! `eric_http::client::Client` against a real server of this process: publishing and
//! following in order, one channel, several, a listener; every error reply typed; the
//! reset surfaced; a token renewed when it expires, losing nothing.

#![cfg(feature = "client")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eric_http::HttpConfig;
use eric_http::client::{Client, ClientError, Event, EventStream};
use futures_util::StreamExt;
use serde_json::{Value, json};

async fn next(events: &mut EventStream) -> Event {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("no event within 10 s")
        .expect("the stream ended")
        .expect("an event, not an error")
}

/// The payloads of the next `n` messages, skipping nothing else.
async fn messages(events: &mut EventStream, n: usize) -> Vec<(String, Value)> {
    let mut got = Vec::new();
    while got.len() < n {
        match next(events).await {
            Event::Message(message) => got.push((message.channel, message.data)),
            other => panic!("expected a message, got {other:?}"),
        }
    }
    got
}

/// Waits until the server counts `n` open streams (a follow connects lazily).
async fn streams_open(server: &support::Running, n: u64) {
    server.eventually("eric_open_streams", n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_and_follows_one_channel_several_and_a_listener() {
    let server = support::start(HttpConfig::default()).await;
    let client = Client::new(&server.base);
    assert_eq!(client.create(Some("news")).await.unwrap(), "news");
    let sports = client.create(None).await.unwrap();
    let mut news = client.follow("news");
    let mut both = client.follow_many(&["news", &sports]);
    // Streams connect when first polled.
    let first_news = tokio::spawn(async move {
        let got = messages(&mut news, 2).await;
        (got, news)
    });
    let first_both = tokio::spawn(async move {
        let got = messages(&mut both, 3).await;
        (got, both)
    });
    streams_open(&server, 2).await;
    let published = client
        .broadcast("news", "headline", json!(1))
        .await
        .unwrap();
    assert_eq!(published.listeners, Some(2));
    client
        .broadcast(&sports, "score", json!({"home": 2}))
        .await
        .unwrap();
    client
        .broadcast("news", "headline", json!(2))
        .await
        .unwrap();
    let (got, mut news) = first_news.await.unwrap();
    assert_eq!(got, [("news".into(), json!(1)), ("news".into(), json!(2))]);
    let (got, mut both) = first_both.await.unwrap();
    let of = |channel: &str| -> Vec<Value> {
        got.iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, d)| d.clone())
            .collect()
    };
    assert_eq!(of("news"), [json!(1), json!(2)]);
    assert_eq!(of(&sports), [json!({"home": 2})]);

    // A listener of its own, dispatched to.
    let listener = client.add_listener("news").await.unwrap();
    let mut mine = client.follow_listener("news", &listener);
    let reading = tokio::spawn(async move { (next(&mut mine).await, mine) });
    streams_open(&server, 3).await;
    client
        .dispatch("news", &listener, "dm", json!("for you"))
        .await
        .unwrap();
    let (Event::Message(dm), _mine) = reading.await.unwrap() else {
        panic!("a message");
    };
    assert_eq!(
        (dm.event.as_str(), dm.data.clone(), dm.id),
        ("dm", json!("for you"), None)
    );

    // Removing a channel: its stream gets ChannelClosed and ends; the merged one goes on.
    client.remove_channel(&sports).await.unwrap();
    assert_eq!(
        next(&mut both).await,
        Event::ChannelClosed {
            channel: sports.clone()
        }
    );
    client
        .broadcast("news", "headline", json!(3))
        .await
        .unwrap();
    assert_eq!(messages(&mut both, 1).await, [("news".into(), json!(3))]);
    assert_eq!(messages(&mut news, 1).await, [("news".into(), json!(3))]);
    client.remove_channel("news").await.unwrap();
    assert_eq!(
        next(&mut news).await,
        Event::ChannelClosed {
            channel: "news".into()
        }
    );
    assert!(
        news.next().await.is_none(),
        "a removed channel's stream ends"
    );
    assert!(client.channels().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_reply_is_typed() {
    let server = support::start(HttpConfig::default().publish_token(Some("admin".into()))).await;
    let admin = Client::new(&server.base).with_token("admin");
    admin.create(Some("c")).await.unwrap();
    let err = admin.create(Some("c")).await.unwrap_err();
    assert!(matches!(err, ClientError::Conflict(_)), "{err:?}");
    let err = admin.broadcast("nope", "t", json!(1)).await.unwrap_err();
    assert!(matches!(err, ClientError::UnknownChannel(_)), "{err:?}");
    let err = admin
        .dispatch("c", "nobody", "t", json!(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::UnknownListener(_)), "{err:?}");
    let err = admin
        .broadcast("c", "_eric_reset", json!(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::BadRequest { status: 400, .. }),
        "{err:?}"
    );
    let err = Client::new(&server.base)
        .broadcast("c", "t", json!(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized(_)), "{err:?}");
    assert!(!err.is_transient());
    let mut gone = Client::new(&server.base).follow("nope");
    let err = gone.next().await.unwrap().unwrap_err();
    assert!(matches!(err, ClientError::UnknownChannel(_)), "{err:?}");
    assert!(
        gone.next().await.is_none(),
        "an error waiting cannot cure ends the stream"
    );
    let down = Client::new("http://127.0.0.1:1")
        .create(None)
        .await
        .unwrap_err();
    assert!(
        matches!(down, ClientError::Transport(_)) && down.is_transient(),
        "{down:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_the_server_cannot_honour_is_a_typed_reset() {
    let server = support::start(HttpConfig::default()).await;
    let client = Client::new(&server.base);
    client.create(Some("c")).await.unwrap();
    client.broadcast("c", "n", json!(1)).await.unwrap();
    let mut events = client.follow_from("c", "another-epoch-7");
    let Event::Reset(reset) = next(&mut events).await else {
        panic!("a reset first");
    };
    assert_eq!(
        (reset.channel.as_str(), reset.reason.as_str()),
        ("c", "other_epoch")
    );
    assert!(reset.oldest_kept.is_some());
    assert_eq!(
        messages(&mut events, 1).await,
        [("c".into(), json!(1))],
        "what it keeps follows"
    );
}

#[cfg(feature = "jwt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_renewed_and_the_stream_loses_nothing() {
    use jsonwebtoken::{EncodingKey, Header};
    const SECRET: &str = "the client test's secret";
    let key = eric_http::JwtKey::secret(SECRET).unwrap();
    let server =
        support::start(HttpConfig::default().jwt(Some(eric_http::JwtConfig::new(key)))).await;
    let minted = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&minted);
    let client = Client::new(&server.base).with_token_refresh(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let exp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 2;
            let claims = json!({"eric": {"publish": ["*"], "subscribe": ["*"]}, "exp": exp});
            let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
            jsonwebtoken::encode(&Header::default(), &claims, &key)
        }
    });
    client.create(Some("c")).await.unwrap();
    let mut events = client.follow("c");
    let reading = tokio::spawn(async move { messages(&mut events, 8).await });
    streams_open(&server, 1).await;
    for n in 0..8 {
        // Through the expiry of one token or two (each lives 2 s at most).
        client.broadcast("c", "n", json!(n)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let got = reading.await.unwrap();
    let numbers: Vec<Value> = got.into_iter().map(|(_, data)| data).collect();
    assert_eq!(numbers, (0..8).map(|n| json!(n)).collect::<Vec<_>>());
    assert!(minted.load(Ordering::SeqCst) >= 2, "the token was renewed");
}

//! Signed tokens, route by route: no token, a bad signature, an expired token, one for
//! another channel, one for the channel, one with a wildcard; for HS256 and ES256, in
//! memory and in cluster mode. And what goes with them: listeners that belong to a
//! `sub`, static tokens beside signed ones, the places a token comes from, streams
//! that end when their token expires and resume with a fresh one, losing nothing.

#![cfg(feature = "jwt")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "redis")]
#[path = "../../eric-persistence/tests/support/mod.rs"]
mod redis_support;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eric_http::{HttpConfig, HttpServer, JwtConfig, JwtKey};
use eric_persistence::ChannelSettings;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Running, next};

const SECRET: &str = "a secret long enough for HS256 tests";

#[derive(Clone, Copy, Debug)]
enum Alg {
    Hs256,
    Es256,
}

impl Alg {
    fn key(self) -> JwtKey {
        match self {
            Alg::Hs256 => JwtKey::secret(SECRET).unwrap(),
            Alg::Es256 => JwtKey::public_key_pem(include_bytes!("keys/es256_public.pem")).unwrap(),
        }
    }

    /// A token with these claims, signed as the server expects (`forged`: with another
    /// key).
    fn mint(self, claims: &Value, forged: bool) -> String {
        let (header, key) = match (self, forged) {
            (Alg::Hs256, false) => (
                Header::new(Algorithm::HS256),
                EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
            ),
            (Alg::Hs256, true) => (
                Header::new(Algorithm::HS256),
                EncodingKey::from_secret(b"another secret").unwrap(),
            ),
            (Alg::Es256, false) => (
                Header::new(Algorithm::ES256),
                EncodingKey::from_ec_pem(include_bytes!("keys/es256_private.pem")).unwrap(),
            ),
            // An RS256 token where ES256 is expected: another key, another algorithm.
            (Alg::Es256, true) => (
                Header::new(Algorithm::RS256),
                EncodingKey::from_rsa_pem(include_bytes!("keys/rsa_private.pem")).unwrap(),
            ),
        };
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that let their bearer publish to and subscribe to `channels`.
fn rights(channels: &[&str]) -> Value {
    json!({"eric": {"publish": channels, "subscribe": channels}, "exp": now() + 600})
}

/// The server under test, with the Redis it runs on (cluster mode) kept alive.
struct Server {
    running: Running,
    channels: eric_persistence::SharedChannels,
    #[cfg(feature = "redis")]
    _redis: Option<redis_support::RedisServer>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Memory,
    #[cfg(feature = "redis")]
    Cluster,
}

async fn serve(backend: Backend, config: HttpConfig) -> Server {
    #[cfg(feature = "redis")]
    let mut redis = None;
    let server = match backend {
        Backend::Memory => HttpServer::bind("127.0.0.1:0", config).await.unwrap(),
        #[cfg(feature = "redis")]
        Backend::Cluster => {
            let started = redis_support::RedisServer::start();
            let server = HttpServer::bind_cluster("127.0.0.1:0", config, &started.url(), "eric:")
                .await
                .unwrap();
            redis = Some(started);
            server
        }
    };
    let channels = server.channels().clone();
    for id in ["room-1", "room-2", "lobby"] {
        channels.create(ChannelSettings::with_id(id)).await.unwrap();
    }
    Server {
        running: Running::serve(server),
        channels,
        #[cfg(feature = "redis")]
        _redis: redis,
    }
}

/// The token a matrix row sends.
#[derive(Clone, Copy, Debug)]
enum Token {
    None,
    BadSignature,
    Expired,
    WrongChannel,
    RightChannel,
    Wildcard,
}

const TOKENS: [Token; 6] = [
    Token::None,
    Token::BadSignature,
    Token::Expired,
    Token::WrongChannel,
    Token::RightChannel,
    Token::Wildcard,
];

impl Token {
    /// The token for a request on `channels`.
    fn mint(self, alg: Alg, channels: &[&str]) -> Option<String> {
        Some(match self {
            Token::None => return None,
            Token::BadSignature => alg.mint(&rights(channels), true),
            Token::Expired => {
                let mut claims = rights(channels);
                claims["exp"] = json!(now() - 30);
                alg.mint(&claims, false)
            }
            Token::WrongChannel => alg.mint(&rights(&["lobby"]), false),
            Token::RightChannel => alg.mint(&rights(channels), false),
            Token::Wildcard => alg.mint(&rights(&["room-*"]), false),
        })
    }

    /// The status a route answers with this token when the bearer is allowed `ok`.
    fn expected(self, ok: StatusCode) -> StatusCode {
        match self {
            Token::None | Token::BadSignature | Token::Expired => StatusCode::UNAUTHORIZED,
            Token::WrongChannel => StatusCode::FORBIDDEN,
            Token::RightChannel | Token::Wildcard => ok,
        }
    }
}

async fn send(
    server: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = server
        .running
        .http
        .request(method, server.running.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// A request of the matrix: method, path, the channels it acts on, its body, and its
/// status when allowed.
type Case<'a> = (Method, String, Vec<&'a str>, Option<Value>, StatusCode);

/// Every route, with every kind of token.
async fn matrix(alg: Alg, backend: Backend) {
    let config = HttpConfig::default().jwt(Some(JwtConfig::new(alg.key())));
    let server = serve(backend, config).await;
    let message = || Some(json!({"type": "chat", "payload": "hi"}));
    for (n, token) in TOKENS.iter().copied().enumerate() {
        let ctx = format!("{alg:?} {backend:?} {token:?}");
        // Fresh ids for what a request removes or creates.
        let fresh = format!("room-new-{n}");
        let gone = format!("room-gone-{n}");
        server
            .channels
            .create(ChannelSettings::with_id(&gone))
            .await
            .unwrap();
        let listener = server.channels.add_listener("room-1").await.unwrap();
        let doomed = server.channels.add_listener("room-1").await.unwrap();

        let cases: Vec<Case<'_>> = vec![
            (
                Method::PUT,
                format!("/create?channel_id={fresh}"),
                vec![fresh.as_str()],
                None,
                StatusCode::CREATED,
            ),
            (
                Method::POST,
                "/broadcast?channel_id=room-1".into(),
                vec!["room-1"],
                message(),
                StatusCode::OK,
            ),
            (
                Method::POST,
                format!("/dispatch?channel_id=room-1&listener_id={listener}"),
                vec!["room-1"],
                message(),
                StatusCode::OK,
            ),
            (
                Method::POST,
                "/subscribe?channel_id=room-1".into(),
                vec!["room-1"],
                None,
                StatusCode::OK,
            ),
            (
                Method::GET,
                format!("/stream/room-1/{listener}"),
                vec!["room-1"],
                None,
                StatusCode::OK,
            ),
            (
                Method::GET,
                "/channels/room-1/events".into(),
                vec!["room-1"],
                None,
                StatusCode::OK,
            ),
            (
                Method::GET,
                "/events?channel=room-1&channel=room-2".into(),
                vec!["room-1", "room-2"],
                None,
                StatusCode::OK,
            ),
            (
                Method::DELETE,
                format!("/listener/room-1/{doomed}"),
                vec!["room-1"],
                None,
                StatusCode::NO_CONTENT,
            ),
            (
                Method::DELETE,
                format!("/channel/{gone}"),
                vec![gone.as_str()],
                None,
                StatusCode::NO_CONTENT,
            ),
        ];
        for (method, path, channels, body, ok) in cases {
            let minted = token.mint(alg, &channels);
            let response = send(&server, method.clone(), &path, minted.as_deref(), body).await;
            let status = response.status();
            let expected = token.expected(ok);
            let text = if status == StatusCode::OK && method == Method::GET {
                String::new() // A stream: dropped, not read.
            } else {
                response.text().await.unwrap()
            };
            assert_eq!(status, expected, "{ctx}: {method} {path}: {text}");
            if status.is_client_error() {
                let error: Value = serde_json::from_str(&text).unwrap();
                let kind = match token {
                    Token::None => "Unauthorized",
                    Token::BadSignature => "InvalidToken",
                    Token::Expired => "TokenExpired",
                    _ => "Forbidden",
                };
                assert_eq!(error["error"], kind, "{ctx}: {method} {path}: {text}");
            }
        }

        // GET /channels lists what the token may subscribe to.
        let minted = token.mint(alg, &["room-1"]);
        let response = send(&server, Method::GET, "/channels", minted.as_deref(), None).await;
        let listed = match token {
            Token::None | Token::BadSignature | Token::Expired => {
                assert_eq!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "{ctx}: /channels"
                );
                continue;
            }
            _ => {
                assert_eq!(response.status(), StatusCode::OK, "{ctx}: /channels");
                response.json::<Vec<String>>().await.unwrap()
            }
        };
        match token {
            Token::WrongChannel => assert_eq!(listed, ["lobby"], "{ctx}"),
            Token::RightChannel => assert_eq!(listed, ["room-1"], "{ctx}"),
            _ => {
                assert!(
                    listed.iter().all(|c| c.starts_with("room-")),
                    "{ctx}: {listed:?}"
                );
                assert!(listed.contains(&"room-2".to_owned()), "{ctx}: {listed:?}");
            }
        }
    }
    server.running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_with_every_token_hs256_in_memory() {
    matrix(Alg::Hs256, Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_with_every_token_es256_in_memory() {
    matrix(Alg::Es256, Backend::Memory).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_with_every_token_hs256_in_a_cluster() {
    matrix(Alg::Hs256, Backend::Cluster).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_with_every_token_es256_in_a_cluster() {
    matrix(Alg::Es256, Backend::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_made_with_a_sub_is_that_subs_alone() {
    let config = HttpConfig::default()
        .jwt(Some(JwtConfig::new(Alg::Hs256.key())))
        .publish_token(Some("admin".into()));
    let server = serve(Backend::Memory, config).await;
    let as_sub = |sub: Option<&str>| {
        // Subscribers alone: a token that may publish to the channel removes any of
        // its listeners.
        let mut claims = json!({"eric": {"subscribe": ["room-1"]}, "exp": now() + 600});
        if let Some(sub) = sub {
            claims["sub"] = json!(sub);
        }
        Alg::Hs256.mint(&claims, false)
    };
    let (alice, bob, nobody) = (as_sub(Some("alice")), as_sub(Some("bob")), as_sub(None));
    let made = send(
        &server,
        Method::POST,
        "/subscribe?channel_id=room-1",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(made.status(), StatusCode::OK);
    let listener = made.json::<Value>().await.unwrap()["listener_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !listener.contains("alice"),
        "the sub is not readable from the id: {listener}"
    );

    let stream = format!("/stream/room-1/{listener}");
    for (who, token) in [("bob", &bob), ("a token without sub", &nobody)] {
        let response = send(&server, Method::GET, &stream, Some(token), None).await;
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{who} streams alice's listener"
        );
        let response = send(
            &server,
            Method::DELETE,
            &format!("/listener/room-1/{listener}"),
            Some(token),
            None,
        )
        .await;
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{who} removes alice's listener"
        );
    }
    // Alice streams it and gets what is dispatched to it.
    let response = send(&server, Method::GET, &stream, Some(&alice), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = Box::pin(
        eventsource_stream::Eventsource::eventsource(response.bytes_stream()).map(|e| e.unwrap()),
    );
    let dispatched = send(
        &server,
        Method::POST,
        &format!("/dispatch?channel_id=room-1&listener_id={listener}"),
        Some("admin"),
        Some(json!({"type": "dm", "payload": "for alice"})),
    )
    .await;
    assert_eq!(dispatched.status(), StatusCode::OK);
    assert_eq!(next(&mut events).await.data, "\"for alice\"");
    // A listener made without a sub is anyone's who may subscribe to the channel.
    let made = send(
        &server,
        Method::POST,
        "/subscribe?channel_id=room-1",
        Some(&nobody),
        None,
    )
    .await;
    let shared = made.json::<Value>().await.unwrap()["listener_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = send(
        &server,
        Method::GET,
        &format!("/stream/room-1/{shared}"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    // The static publish token (an operator's) removes any listener.
    let response = send(
        &server,
        Method::DELETE,
        &format!("/listener/room-1/{listener}"),
        Some("admin"),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_tokens_keep_working_beside_signed_ones() {
    let config = HttpConfig::default()
        .jwt(Some(JwtConfig::new(Alg::Hs256.key())))
        .publish_token(Some("pub-static".into()))
        .subscribe_token(Some("sub-static".into()));
    let server = serve(Backend::Memory, config).await;
    let broadcast = |token: Option<String>| {
        let server = &server;
        async move {
            send(
                server,
                Method::POST,
                "/broadcast?channel_id=room-2",
                token.as_deref(),
                Some(json!({"type": "t"})),
            )
            .await
            .status()
        }
    };
    assert_eq!(broadcast(Some("pub-static".into())).await, StatusCode::OK);
    assert_eq!(
        broadcast(Some(Alg::Hs256.mint(&rights(&["room-2"]), false))).await,
        StatusCode::OK
    );
    assert_eq!(
        broadcast(Some("sub-static".into())).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        broadcast(Some("guess".into())).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(broadcast(None).await, StatusCode::UNAUTHORIZED);
    let listed = send(&server, Method::GET, "/channels", Some("sub-static"), None).await;
    assert_eq!(
        listed.json::<Vec<String>>().await.unwrap(),
        ["lobby", "room-1", "room-2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_comes_as_a_bearer_a_percent_encoded_query_or_a_cookie() {
    let config = HttpConfig::default()
        .jwt(Some(JwtConfig::new(Alg::Hs256.key())))
        .token_cookie("session");
    let server = serve(Backend::Memory, config).await;
    let token = Alg::Hs256.mint(&rights(&["room-1"]), false);
    let http = &server.running.http;
    let url = server.running.url("/channels/room-1/events");
    // Every character percent-encoded: what a careful client sends, and what today's
    // parsing did not decode.
    let encoded: String = token.bytes().map(|b| format!("%{b:02X}")).collect();
    let by_query = http
        .get(format!("{url}?access_token={encoded}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), StatusCode::OK);
    let by_cookie = http
        .get(&url)
        .header("cookie", format!("theme=dark; session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), StatusCode::OK);
    let other_cookie = http
        .get(&url)
        .header("cookie", format!("eric_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(other_cookie.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exp_is_required_when_the_flag_says_so() {
    let config =
        HttpConfig::default().jwt(Some(JwtConfig::new(Alg::Hs256.key()).require_exp(true)));
    let server = serve(Backend::Memory, config).await;
    let no_exp = Alg::Hs256.mint(&json!({"eric": {"subscribe": ["*"]}}), false);
    let response = send(&server, Method::GET, "/channels", Some(&no_exp), None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["message"].as_str().unwrap().contains("exp"),
        "{error}"
    );
}

/// Opens `path` with `token`, resuming after `last`.
async fn open(
    server: &Server,
    path: &str,
    token: &str,
    last: Option<&str>,
) -> support::EventStream {
    let mut request = server
        .running
        .http
        .get(server.running.url(path))
        .bearer_auth(token);
    if let Some(last) = last {
        request = request.header("Last-Event-ID", last);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    Box::pin(
        eventsource_stream::Eventsource::eventsource(response.bytes_stream()).map(|e| e.unwrap()),
    )
}

async fn publish(server: &Server, channel: &str, n: u64) {
    let status = server
        .running
        .broadcast(channel, "n", json!(n))
        .await
        .status();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_token_expires_and_resumes_with_a_fresh_one_losing_nothing() {
    let config = HttpConfig::default().jwt(
        Some(JwtKey::secret(SECRET).map(JwtConfig::new).unwrap()).map(|jwt| {
            let mut jwt = jwt;
            jwt.publisher = None; // Publishing is left open here.
            jwt
        }),
    );
    let server = serve(Backend::Memory, config).await;
    for path in [
        "/channels/room-1/events",
        "/events?channel=room-1&channel=room-2",
    ] {
        let expiring = {
            let mut claims = rights(&["room-*"]);
            claims["exp"] = json!(now() + 2);
            Alg::Hs256.mint(&claims, false)
        };
        let mut events = open(&server, path, &expiring, None).await;
        publish(&server, "room-1", 1).await;
        let first = next(&mut events).await;
        assert_eq!(first.event, "n");
        let expired = tokio::time::timeout(Duration::from_secs(6), events.next())
            .await
            .expect("the stream outlived its token")
            .unwrap();
        assert_eq!(expired.event, "_eric_token_expired", "{path}");
        assert_eq!(
            expired.id, first.id,
            "the expiry event carries no id: the last one stands"
        );
        assert!(
            events.next().await.is_none(),
            "{path}: the stream ends after it"
        );

        // Published while the client fetches a new token.
        publish(&server, "room-1", 2).await;
        publish(&server, "room-2", 3).await;
        let fresh = Alg::Hs256.mint(&rights(&["room-*"]), false);
        let mut resumed = open(&server, path, &fresh, Some(&first.id)).await;
        let mut got = vec![next(&mut resumed).await.data];
        if path.starts_with("/events") {
            got.push(next(&mut resumed).await.data);
            got.sort();
            assert_eq!(
                got,
                [
                    r#"{"channel":"room-1","data":2}"#,
                    r#"{"channel":"room-2","data":3}"#
                ],
                "{path}"
            );
        } else {
            assert_eq!(got, ["2"], "{path}");
        }
    }
}

#[test]
fn public_keys_of_each_kind_are_read_and_anything_else_is_a_clear_error() {
    for pem in [
        include_bytes!("keys/es256_public.pem").as_slice(),
        include_bytes!("keys/ed25519_public.pem"),
        include_bytes!("keys/rsa_public.pem"),
    ] {
        JwtKey::public_key_pem(pem).unwrap();
    }
    let err = JwtKey::public_key_pem(b"not a key").unwrap_err();
    assert!(err.to_string().contains("PEM"), "{err}");
}

//! `eric serve`'s token and TLS flags, on the real binary: a public key from a file
//! beside a static publish token, a key for subscribers alone, and a key, certificate
//! or TLS key file that cannot be used, which stops the server with a message naming
//! it instead of serving unguarded or in cleartext.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/eric_serve.rs"]
mod eric_serve;

use std::time::{SystemTime, UNIX_EPOCH};

use eric_serve::EricServe;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/eric-http/tests/keys");

fn claims(channels: &[&str]) -> Value {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    json!({"eric": {"subscribe": channels, "publish": channels}, "exp": exp})
}

fn es256(claims: &Value) -> String {
    let pem = std::fs::read(format!("{KEYS}/es256_private.pem")).unwrap();
    let key = EncodingKey::from_ec_pem(&pem).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &key).unwrap()
}

fn hs256(secret: &str, claims: &Value) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::default(), claims, &key).unwrap()
}

async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_key_file_beside_a_static_publish_token() {
    let key = format!("{KEYS}/es256_public.pem");
    let server = EricServe::start(&["--jwt-public-key", &key, "--publish-token", "admin"]);
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.base);
    assert_eq!(
        status(
            http.put(url("/create?channel_id=room-1"))
                .bearer_auth("admin")
        )
        .await,
        201
    );
    assert_eq!(
        status(
            http.put(url("/create?channel_id=lobby"))
                .bearer_auth("admin")
        )
        .await,
        201
    );
    let allowed = es256(&claims(&["room-*"]));
    assert_eq!(
        status(
            http.get(url("/channels/room-1/events"))
                .bearer_auth(&allowed)
        )
        .await,
        200
    );
    assert_eq!(
        status(
            http.get(url("/channels/lobby/events"))
                .bearer_auth(&allowed)
        )
        .await,
        403
    );
    let other_kind = hs256("guess", &claims(&["room-*"]));
    assert_eq!(
        status(
            http.get(url("/channels/room-1/events"))
                .bearer_auth(&other_kind)
        )
        .await,
        401
    );
    let broadcast = || {
        http.post(url("/broadcast?channel_id=room-1"))
            .json(&json!({"type": "t"}))
    };
    assert_eq!(status(broadcast().bearer_auth("admin")).await, 200);
    assert_eq!(status(broadcast().bearer_auth(&allowed)).await, 200);
    assert_eq!(status(broadcast()).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_for_subscribers_alone_leaves_publishing_as_it_was() {
    let server = EricServe::start(&["--jwt-subscriber-secret", "readers"]);
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.base);
    assert_eq!(status(http.put(url("/create?channel_id=news"))).await, 201);
    assert_eq!(status(http.get(url("/channels/news/events"))).await, 401);
    let reader = hs256("readers", &claims(&["news"]));
    assert_eq!(
        status(http.get(url("/channels/news/events")).bearer_auth(&reader)).await,
        200
    );
    let publish = http
        .post(url("/broadcast?channel_id=news"))
        .json(&json!({"type": "t"}));
    assert_eq!(status(publish).await, 200);
}

/// `eric serve <args>`, which must fail to start: what it wrote to standard error.
fn refused(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_eric"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    assert!(!output.status.success(), "eric serve {args:?} started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_key_file_that_cannot_be_read_stops_the_server_with_a_clear_message() {
    let stderr = refused(&["--jwt-public-key", "/nonexistent/key.pem"]);
    assert!(
        stderr.contains("cannot read the JWT public key"),
        "{stderr}"
    );
    let not_a_key = format!("{KEYS}/README.md");
    let stderr = refused(&["--jwt-public-key", &not_a_key]);
    assert!(
        stderr.contains("not an RSA, EC or Ed25519 public key"),
        "{stderr}"
    );
}

#[test]
fn a_tls_file_that_cannot_be_used_stops_the_server_naming_it() {
    let not_pem = format!("{KEYS}/README.md");
    let key = format!("{KEYS}/es256_private.pem");
    for (cert, named) in [
        ("/nonexistent/cert.pem", "/nonexistent/cert.pem"),
        (not_pem.as_str(), "README.md"),
    ] {
        let stderr = refused(&["--tls-cert", cert, "--tls-key", &key]);
        assert!(
            stderr.contains("TLS certificate") && stderr.contains(named),
            "{stderr}"
        );
    }
    // --tls-cert without --tls-key.
    refused(&["--tls-cert", "c.pem"]);
}

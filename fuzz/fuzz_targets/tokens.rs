//! Signed tokens and their claims, on the routes that read them: a token of any bytes,
//! and tokens correctly signed (HS256) over any claims, never make a panic or a 500;
//! every answer is 200 (a stream), 401 or 403, or 400/404 for what the request names.
//! And channel patterns: one without `*` matches its own text alone.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const SECRET: &[u8] = b"the fuzzer's secret";

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let router = runtime.block_on(async {
            let key = eric_http::JwtKey::secret(SECRET).unwrap();
            let config = eric_http::HttpConfig::default()
                .jwt(Some(eric_http::JwtConfig::new(key)))
                .max_body_bytes(4096);
            let server = eric_http::HttpServer::bind("127.0.0.1:0", config)
                .await
                .unwrap();
            for id in ["room-1", "room-2"] {
                server
                    .channels()
                    .create(eric_persistence::ChannelSettings::with_id(id))
                    .await
                    .unwrap();
            }
            server.router()
        });
        Harness { runtime, router }
    })
}

/// A token signed with the server's secret over `claims`, whatever they are.
fn signed(claims: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
    let key = EncodingKey::from_secret(SECRET).unwrap();
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{message}.{signature}")
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&mode, rest)) = bytes.split_first() else {
        return;
    };
    // Patterns: exact without a star, and never a panic with one.
    let text = String::from_utf8_lossy(rest);
    if let Some((pattern, channel)) = text.split_once('\u{0}') {
        let matched = eric_http::ChannelPattern::new(pattern).matches(channel);
        if !pattern.contains('*') {
            assert_eq!(matched, pattern == channel);
        }
        if pattern == "*" {
            assert!(matched);
        }
    }
    let token = if mode & 1 == 0 {
        text.into_owned()
    } else {
        signed(rest)
    };
    let (method, uri) = match (mode >> 1) % 4 {
        0 => (Method::GET, "/events?channel=room-1&channel=room-2".to_owned()),
        1 => (Method::POST, "/broadcast?channel_id=room-1".to_owned()),
        2 => (Method::GET, "/channels".to_owned()),
        _ => (Method::POST, "/subscribe?channel_id=room-2".to_owned()),
    };
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    request = match mode >> 3 & 1 {
        0 => request.header("authorization", format!("Bearer {token}")),
        _ => request.header("cookie", format!("eric_token={token}")),
    };
    let Ok(request) = request.body(Body::from(r#"{"type":"t","payload":1}"#)) else {
        return; // Not a valid header value: no request to make.
    };
    let harness = harness();
    let response = harness
        .runtime
        .block_on(harness.router.clone().oneshot(request))
        .unwrap();
    let status = response.status().as_u16();
    assert!(
        [200, 401, 403].contains(&status),
        "unexpected status {status}"
    );
});

//! The HTTP API's routes on any query, path and body: never a panic and never a 500;
//! every refusal is one of the documented statuses (503 once the fuzzer has made the
//! server's maximum of channels).
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

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
            let config = eric_http::HttpConfig::default().max_body_bytes(4096);
            let server = eric_http::HttpServer::bind("127.0.0.1:0", config)
                .await
                .unwrap();
            let router = server.router();
            // A channel and a listener for inputs to find.
            let created = router
                .clone()
                .oneshot(
                    Request::put("/create?channel_id=c")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(created.status(), StatusCode::CREATED);
            router
        });
        Harness { runtime, router }
    })
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&route, rest)) = bytes.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(2, '\u{0}');
    let target = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default().to_owned();
    let (method, uri) = match route % 9 {
        8 => (Method::GET, format!("/events?{target}")),
        0 => (Method::POST, format!("/broadcast?{target}")),
        1 => (Method::POST, format!("/dispatch?{target}")),
        2 => (Method::PUT, format!("/create?{target}")),
        3 => (Method::POST, format!("/subscribe?{target}")),
        4 => (Method::GET, format!("/channels/{target}")),
        5 => (Method::DELETE, format!("/listener/{target}")),
        6 => (Method::DELETE, format!("/channel/{target}")),
        _ => (Method::GET, format!("/stream/{target}")),
    };
    let Ok(request) = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
    else {
        return;
    };
    let harness = harness();
    let response = harness
        .runtime
        .block_on(harness.router.clone().oneshot(request))
        .unwrap();
    let status = response.status();
    assert!(
        status.is_success()
            || [400, 401, 404, 405, 409, 413, 415, 422, 503].contains(&status.as_u16()),
        "unexpected status {status}"
    );
});

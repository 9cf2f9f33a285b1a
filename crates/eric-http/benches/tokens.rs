//! What signed tokens and many-channel streams cost, each next to its reference in the
//! same run, in process (the router called directly: no sockets, so that the cost
//! measured is eric's own):
//! - a request (`GET /channels`, 10 channels) with no guard, a static token, an HS256
//!   and an ES256 token: requests/s and the ratio to no guard;
//! - events delivered on one `GET /events` stream of 10 channels (each in an envelope,
//!   under an id of 10 positions) against the same events on 10 single-channel streams:
//!   time per event and the ratio.
//!
//! `cargo bench -p eric-http --bench tokens [-- quick]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use eric_core::Message;
use eric_http::{HttpConfig, HttpServer, JwtConfig, JwtKey};
use eric_persistence::ChannelSettings;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tower_service::Service;

const SECRET: &str = "the benchmark's secret";
const CHANNELS: usize = 10;

async fn router(config: HttpConfig) -> (axum::Router, eric_persistence::SharedChannels) {
    let server = HttpServer::bind("127.0.0.1:0", config).await.unwrap();
    let channels = server.channels().clone();
    for n in 0..CHANNELS {
        channels
            .create(ChannelSettings::with_id(format!("c{n}")).replay(1 << 16))
            .await
            .unwrap();
    }
    (server.router(), channels)
}

/// Requests per second of `GET /channels` with `token`, over `duration`.
async fn requests_per_s(mut router: axum::Router, token: Option<&str>, duration: Duration) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < duration {
        let mut request = Request::get("/channels");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = router
            .call(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Seconds per event delivered: `events` broadcasts round-robin over the channels, read
/// from the streams `paths` open (all of them, every event once).
async fn per_event(
    router: &axum::Router,
    channels: &eric_persistence::SharedChannels,
    paths: &[String],
    events: usize,
) -> f64 {
    let mut bodies = Vec::new();
    for path in paths {
        let response = router
            .clone()
            .call(Request::get(path.as_str()).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        bodies.push(response.into_body().into_data_stream());
    }
    let mut merged = futures_util::stream::select_all(bodies);
    let started = Instant::now();
    for n in 0..events {
        let message = Message::new("n", json!({ "n": n }));
        channels
            .broadcast(&format!("c{}", n % CHANNELS), message)
            .await
            .unwrap();
    }
    let mut delivered = 0;
    while delivered < events {
        let chunk = merged.next().await.unwrap().unwrap();
        delivered += chunk.windows(9).filter(|w| w == b"event: n\n").count();
    }
    started.elapsed().as_secs_f64() / events as f64
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let (rounds, duration, events) = if quick {
        (3, Duration::from_millis(300), 20_000)
    } else {
        (7, Duration::from_secs(1), 100_000)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
        let claims = json!({"eric": {"subscribe": ["c*"]}, "exp": exp});
        let hs256 = jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap()).unwrap();
        let es_private = EncodingKey::from_ec_pem(include_bytes!("../tests/keys/es256_private.pem")).unwrap();
        let es256 = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &es_private).unwrap();
        let es_public = JwtKey::public_key_pem(include_bytes!("../tests/keys/es256_public.pem")).unwrap();

        let (open, _) = router(HttpConfig::default()).await;
        let (guarded, _) = router(HttpConfig::default().subscribe_token(Some("static".into()))).await;
        let (hs, _) = router(HttpConfig::default().jwt(Some(JwtConfig::new(JwtKey::secret(SECRET).unwrap())))).await;
        let (es, _) = router(HttpConfig::default().jwt(Some(JwtConfig::new(es_public)))).await;
        let cases: [(&str, &axum::Router, Option<&str>); 4] = [
            ("no guard (reference)", &open, None),
            ("static token", &guarded, Some("static")),
            ("HS256 token", &hs, Some(&hs256)),
            ("ES256 token", &es, Some(&es256)),
        ];
        let mut rates = vec![Vec::new(); cases.len()];
        for _ in 0..rounds {
            for (i, (_, router, token)) in cases.iter().enumerate() {
                rates[i].push(requests_per_s((*router).clone(), *token, duration).await);
            }
        }
        let reference = median(rates[0].clone());
        println!("| GET /channels ({CHANNELS} channels), in process | requests/s | vs no guard | µs per request added |");
        println!("|---|---|---|---|");
        for (i, (label, _, _)) in cases.iter().enumerate() {
            let rate = median(rates[i].clone());
            println!("| {label} | {rate:.0} | {:.2}x | {:.1} |", rate / reference, 1e6 / rate - 1e6 / reference);
            if i > 0 {
                println!("summary: | HTTP: a request with {label} | {rate:.0} req/s | no guard {reference:.0} req/s | {:.2}x |", rate / reference);
            }
        }

        let (router, channels) = router(HttpConfig::default().unbounded()).await;
        let all: String = (0..CHANNELS).map(|n| format!("channel=c{n}&")).collect();
        let one = [format!("/events?{all}")];
        let each: Vec<String> = (0..CHANNELS).map(|n| format!("/channels/c{n}/events")).collect();
        let (mut multi, mut single) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            single.push(per_event(&router, &channels, &each, events).await);
            multi.push(per_event(&router, &channels, &one, events).await);
        }
        let (multi, single) = (median(multi), median(single));
        println!();
        println!("| {events} events over {CHANNELS} channels, in process | ns per event | vs 10 streams |");
        println!("|---|---|---|");
        println!("| 10 single-channel streams (reference) | {:.0} | 1.00x |", single * 1e9);
        println!("| one GET /events stream of 10 channels | {:.0} | {:.2}x |", multi * 1e9, multi / single);
        println!("summary: | HTTP: an event on one stream of 10 channels | {:.0} ns | 10 streams {:.0} ns | {:.2}x the time |", multi * 1e9, single * 1e9, multi / single);
    });
}

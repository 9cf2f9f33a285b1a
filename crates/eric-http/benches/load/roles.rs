//! What the load bench's child processes run (`ERIC_LOAD_ROLE`): eric's server, and the
//! reference, the least an axum SSE fan-out can be.

use std::time::Duration;

use super::write_delay;

/// A server process's runtime: tokio's multi-threaded one, as `eric serve` uses.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `write_delay`: `HttpConfig::write_delay` ([`write_delay::delay`]). Listeners hold
/// [`BACKLOG`] unread, but in the soak (which runs every default).
pub(crate) fn serve_eric(soak: bool, write_delay: bool) {
    let rt = runtime();
    rt.block_on(async {
        // The soak runs the server as `eric serve` does (keep-alive on, every default).
        let config = if soak {
            eric_http::HttpConfig::default().keep_alive(Some(Duration::from_secs(1)))
        } else {
            eric_http::HttpConfig::default().keep_alive(None)
        };
        let mut config = config.write_delay(write_delay.then(write_delay::delay));
        if !soak {
            config.capacity = Some(BACKLOG);
        }
        let server = eric_http::HttpServer::bind("127.0.0.1:0", config)
            .await
            .unwrap();
        println!("{}", server.local_addr().unwrap());
        server.run_until(std::future::pending()).await.unwrap();
    });
}

/// How many broadcasts a stream of either server may have unread: more than a
/// pipelined run publishes ([`super::generator::Pacing::Pipelined`]), so that no stream,
/// however far behind, lags (the reference's receiver would skip events) or is dropped
/// (eric's listener would be disconnected, past its default 1,024).
pub(crate) const BACKLOG: usize = 1 << 16;

/// The reference: the least an axum SSE fan-out server can be. `hyper_direct`: its
/// connections served by hyper's HTTP/1.1 connection, as eric's are, instead of
/// `axum::serve` (hyper-util's auto HTTP/1+2 builder): the floor for memory per stream.
pub(crate) fn serve_reference(hyper_direct: bool) {
    use axum::Router;
    use axum::body::Body;
    use axum::extract::State;
    use axum::routing::{get, post};
    use tokio::sync::broadcast;

    let rt = runtime();
    rt.block_on(async {
        let (tx, _) = broadcast::channel::<bytes::Bytes>(BACKLOG);
        let app = Router::new()
            .route(
                "/events",
                get(
                    |State(tx): State<broadcast::Sender<bytes::Bytes>>| async move {
                        let rx = tx.subscribe();
                        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                            loop {
                                match rx.recv().await {
                                    Ok(b) => {
                                        return Some((Ok::<_, std::convert::Infallible>(b), rx));
                                    }
                                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                                    Err(_) => return None,
                                }
                            }
                        });
                        (
                            [("content-type", "text/event-stream")],
                            Body::from_stream(stream),
                        )
                    },
                ),
            )
            .route(
                "/publish",
                post(
                    |State(tx): State<broadcast::Sender<bytes::Bytes>>, body: String| async move {
                        let event = eric_prefabs::SseEvent::new(body)
                            .with_event("load")
                            .unwrap();
                        let _ = tx.send(bytes::Bytes::from(event.encode()));
                        "ok"
                    },
                ),
            )
            .with_state(tx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        if !hyper_direct {
            return axum::serve(listener, app).await.unwrap();
        }
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.set_nodelay(true);
            let app = app.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tcp),
                        hyper_util::service::TowerToHyperService::new(app),
                    )
                    .await;
            });
        }
    });
}

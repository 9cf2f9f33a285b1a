//! Helpers shared by eric-prefabs' integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::convert::Infallible;

use eventsource_stream::{Event, Eventsource};
use futures_util::{FutureExt, StreamExt};

/// Decodes `wire` with a real SSE parser (eventsource-stream), as a browser would.
pub fn parse(wire: &str) -> Vec<Event> {
    let bytes = vec![Ok::<_, Infallible>(wire.as_bytes().to_vec())];
    futures_util::stream::iter(bytes)
        .eventsource()
        .map(|event| event.unwrap())
        .collect::<Vec<_>>()
        .now_or_never()
        .unwrap()
}

//! The SSE encoder against a real SSE parser (eventsource-stream): whatever event type,
//! id and data are accepted, the parser reads back exactly them (data line breaks
//! normalized to LF, as the format defines); what is refused is refused with a typed
//! error, never a broken stream.
#![no_main]

use eventsource_stream::Eventsource;
use futures_util::{FutureExt, StreamExt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let mut parts = text.splitn(3, '\u{0}');
    let event_type = parts.next().unwrap_or_default().to_owned();
    let id = parts.next().unwrap_or_default().to_owned();
    let data = parts.next().unwrap_or_default().to_owned();

    let mut event = eric_prefabs::SseEvent::new(data.clone());
    if !event_type.is_empty() {
        match event.clone().with_event(event_type.clone()) {
            Ok(e) => event = e,
            Err(_) => {
                assert!(event_type.contains(['\r', '\n']));
                return;
            }
        }
    }
    if !id.is_empty() {
        match event.clone().with_id(id.clone()) {
            Ok(e) => event = e,
            Err(_) => {
                assert!(id.contains(['\r', '\n', '\u{0}']));
                return;
            }
        }
    }
    let wire = event.encode();
    let chunks = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        bytes::Bytes::from(wire.clone()),
    )]);
    let parsed: Vec<_> = chunks
        .eventsource()
        .collect()
        .now_or_never()
        .expect("a ready stream parses at once");
    assert_eq!(parsed.len(), 1, "one event in, one out: {wire:?}");
    let got = parsed.into_iter().next().unwrap().expect("parses");
    let expected_type = if event_type.is_empty() {
        "message"
    } else {
        &event_type
    };
    assert_eq!(got.event, expected_type, "{wire:?}");
    assert_eq!(got.id, id, "{wire:?}");
    let expected_data = data.replace("\r\n", "\n").replace('\r', "\n");
    assert_eq!(got.data, expected_data, "{wire:?}");
});

//! The SSE encoder writes the exact bytes of the WHATWG spec, refuses fields that a line
//! break would corrupt, and round-trips any payload through a real SSE parser.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use eric_prefabs::{Error, SseEvent, sse_comment};
use proptest::prelude::*;
use support::parse;

#[test]
fn fields_in_order_with_one_data_line() {
    let event = SseEvent::new("{\"n\":1}")
        .with_event("score")
        .unwrap()
        .with_id("ab12-7")
        .unwrap()
        .with_retry(5);
    assert_eq!(
        event.encode(),
        "event: score\nid: ab12-7\nretry: 5\ndata: {\"n\":1}\n\n"
    );
}

#[test]
fn data_splits_on_cr_lf_and_crlf() {
    let event = SseEvent::new("a\nb\rc\r\nd");
    assert_eq!(event.encode(), "data: a\ndata: b\ndata: c\ndata: d\n\n");
    // Line breaks at the edges make empty lines, which carry through.
    assert_eq!(SseEvent::new("\n").encode(), "data: \ndata: \n\n");
    assert_eq!(SseEvent::new("x\r\n").encode(), "data: x\ndata: \n\n");
    assert_eq!(SseEvent::new("\r\r").encode(), "data: \ndata: \ndata: \n\n");
}

#[test]
fn empty_data_is_still_an_event() {
    assert_eq!(SseEvent::new("").encode(), "data: \n\n");
    let parsed = parse(&SseEvent::new("").encode());
    assert_eq!(
        parsed.len(),
        1,
        "an event with no data line is never dispatched"
    );
    assert_eq!(parsed[0].data, "");
}

#[test]
fn unicode_and_leading_spaces_survive() {
    let event = SseEvent::new("  héllo 🦀 世界").with_event("ünï").unwrap();
    assert_eq!(event.encode(), "event: ünï\ndata:   héllo 🦀 世界\n\n");
    let parsed = parse(&event.encode());
    assert_eq!(parsed[0].data, "  héllo 🦀 世界");
    assert_eq!(parsed[0].event, "ünï");
}

#[test]
fn line_breaks_in_event_or_id_are_typed_errors_not_panics() {
    for bad in ["a\nb", "a\rb", "\r\n", "end\n"] {
        assert!(matches!(
            SseEvent::new("x").with_event(bad),
            Err(Error::InvalidSseField { field: "event", .. })
        ));
        assert!(matches!(
            SseEvent::new("x").with_id(bad),
            Err(Error::InvalidSseField { field: "id", .. })
        ));
    }
    let err = SseEvent::new("x").with_id("nul\0").unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
}

#[test]
fn comments_are_keep_alives_parsers_ignore() {
    assert_eq!(sse_comment(""), ":\n\n");
    assert_eq!(sse_comment("ping"), ": ping\n\n");
    assert_eq!(sse_comment("a\nb"), ": a\n: b\n\n");
    let wire = format!("{}{}", sse_comment("ping"), SseEvent::new("real").encode());
    let parsed = parse(&wire);
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].data, "real");
}

#[test]
fn several_events_in_one_stream_parse_apart() {
    let wire: String = (0..3)
        .map(|n| {
            SseEvent::new(n.to_string())
                .with_id(n.to_string())
                .unwrap()
                .encode()
        })
        .collect();
    let parsed = parse(&wire);
    let got: Vec<_> = parsed
        .iter()
        .map(|e| (e.id.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(got, [("0", "0"), ("1", "1"), ("2", "2")]);
}

/// What a parser gives back for `data`: lines joined with LF.
fn normalized(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_payload_round_trips_through_a_real_parser(
        data in any::<String>(),
        event in "[^\r\n]{1,20}",
        id in "[^\r\n\0]{0,20}",
        retry in proptest::option::of(0u64..100_000),
    ) {
        let mut sse = SseEvent::new(data.clone()).with_event(event.clone()).unwrap()
            .with_id(id.clone()).unwrap();
        if let Some(retry) = retry {
            sse = sse.with_retry(retry);
        }
        let parsed = parse(&sse.encode());
        prop_assert_eq!(parsed.len(), 1);
        prop_assert_eq!(&parsed[0].data, &normalized(&data));
        prop_assert_eq!(&parsed[0].event, &event);
        prop_assert_eq!(&parsed[0].id, &id);
        prop_assert_eq!(parsed[0].retry.map(|d| d.as_millis() as u64), retry);
    }

    #[test]
    fn json_payloads_round_trip_exactly(payload in any::<(String, i64, bool)>()) {
        let value = serde_json::json!({"s": payload.0, "n": payload.1, "b": payload.2});
        let text = value.to_string();
        let parsed = parse(&SseEvent::new(text.clone()).encode());
        let back: serde_json::Value = serde_json::from_str(&parsed[0].data).unwrap();
        prop_assert_eq!(back, value);
    }
}

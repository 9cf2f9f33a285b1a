//! The event id of a stream of several channels, as a client sends it back: any text
//! is read without a panic, within its bound, and what is read is written back to an
//! id that reads the same.
#![no_main]

use eric_http::{MAX_POSITION_BYTES, MultiEventId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Some((&channels, rest)) = bytes.split_first() else {
        return;
    };
    let channels = usize::from(channels % 70);
    let text = String::from_utf8_lossy(rest);
    if let Some(id) = MultiEventId::parse(&text, channels) {
        assert_eq!(id.positions().len(), channels);
        assert!(text.len() <= channels * (3 * MAX_POSITION_BYTES + 1));
        assert!(id.positions().iter().flatten().all(|p| p.len() <= MAX_POSITION_BYTES));
        let written = id.to_string();
        assert_eq!(MultiEventId::parse(&written, channels).as_ref(), Some(&id));
        assert!(!written.contains(['\n', '\r', '\0']), "an id must fit an SSE id: line");
    }
});

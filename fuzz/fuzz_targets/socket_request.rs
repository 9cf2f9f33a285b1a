//! The socket server's request parser, on any bytes: never panics; what it accepts
//! comes back out of the stream-line writer as the JSON it went in as.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|bytes: &[u8]| {
    let request = match eric_socket::parse_request(bytes) {
        Ok(request) => request,
        Err(reply) => {
            // Every refusal renders as the reply eric-sse's clients parse.
            let _ = reply.to_string();
            return;
        }
    };
    if let Some(message) = &request.message {
        let line = eric_socket::stream_line(message.message_type(), 5, message.payload());
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let back: Value = serde_json::from_str(&line).expect("a stream line is JSON");
        assert_eq!(back["event"], message.message_type());
        assert_eq!(&back["data"], message.payload());
    }
});

//! Stored values as they may be found in Redis (written by another version, or by
//! something else entirely): decoding never panics, and a message record that decodes
//! is written back and decodes to the same record.
#![no_main]

use eric_persistence::record::{ChannelRecord, ListenerRecord, MessageRecord, decode};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|bytes: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    let _ = decode::<ChannelRecord>("k", value.clone());
    let _ = decode::<ListenerRecord>("k", value.clone());
    if let Ok(record) = decode::<MessageRecord>("k", value) {
        let message = record.to_message();
        let again = MessageRecord::of(&message, record.broadcasts_before);
        let written = serde_json::to_value(&again).expect("serializes");
        let back: MessageRecord = decode("k", written).expect("decodes what it wrote");
        assert_eq!(back.message_type, record.message_type);
        assert_eq!(back.payload, record.payload);
        assert_eq!(back.broadcasts_before, record.broadcasts_before);
    }
});

#![no_main]

//! The node channel's messages, both ways: whatever decodes encodes again and decodes to the
//! same message; nothing panics.

use meshd_channel::protocol::{decode, encode};
use meshd_channel::{ControllerMessage, NodeMessage};

fn round_trip<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(msg) = decode::<T>(data) {
        let frame = encode(&msg).expect("a decoded message encodes");
        let again: T = decode(&frame[4..]).expect("an encoded message decodes");
        assert_eq!(again, msg);
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    round_trip::<NodeMessage>(data);
    round_trip::<ControllerMessage>(data);
});

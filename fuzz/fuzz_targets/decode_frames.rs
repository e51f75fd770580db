//! The split-decoding frames (OPEN, OPENED, STEP, NEXT, CLOSE) on arbitrary payloads: the first
//! byte picks the type, the rest is the payload, so every input reaches a payload decoder past
//! the header. Must never panic; whatever decodes re-encodes to the same bytes.
#![no_main]

use edgecut_wire::{decode_payload, encode_frame, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&t, payload)) = data.split_first() else {
        return;
    };
    let limits = Limits { max_frame: 1 << 16, max_batch: 64, max_seq: 512, max_width: 4096 };
    let ty = 6 + t % 5;
    if let Ok(frame) = decode_payload(ty, payload, &limits) {
        let bytes = encode_frame(&frame).expect("a decoded frame encodes");
        assert_eq!(&bytes[edgecut_wire::HEADER_BYTES..], payload, "re-encodes to the same payload");
    }
});

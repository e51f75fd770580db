//! The wire decoder on arbitrary bytes: a stream of frames read until the first error or the
//! end, with small limits so large announced sizes are refused quickly. Must never panic.
#![no_main]

use edgecut_wire::{read_frame, write_frame, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_frame: 1 << 16, max_batch: 64, max_seq: 512, max_width: 4096 };
    let mut r = data;
    while let Ok(Some(frame)) = read_frame(&mut r, &limits) {
        // Whatever decodes re-encodes to a frame that decodes to the same value. Compared as
        // bytes: f32 values may be NaN, which is not equal to itself.
        let mut out = Vec::new();
        write_frame(&mut out, &frame).expect("a decoded frame encodes");
        let again = read_frame(&mut &out[..], &limits).expect("re-decodes").expect("one frame");
        let mut out2 = Vec::new();
        write_frame(&mut out2, &again).expect("encodes again");
        assert_eq!(out, out2);
    }
});

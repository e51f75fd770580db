//! Fuzzes the GGUF header parser: any input must parse or give an error, and a file that parses
//! must have every tensor inside it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = edgecut_format::gguf::parse(data) {
        for t in &h.tensors {
            let end = h.data_offset + t.offset + t.size;
            assert!(end <= data.len() as u64);
        }
    }
});

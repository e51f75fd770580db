//! Thousands of mutated real model files through the parser: every one parses or gives a named
//! error; none panics or reads out of bounds (every view of a file that parses is inside it).

use edgecut_models::convert::WeightType;
use std::sync::{Mutex, OnceLock};

use edgecut_format::gguf::parse;
use edgecut_tests::{minilm, smollm_gguf};
use proptest::prelude::*;

/// Real files, whole, with the offset of their data section (the end of the header, where
/// mutations matter). Mutated in place and restored after each case, so no case copies a file.
type Files = Mutex<Vec<(Vec<u8>, usize)>>;

fn real() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| {
        let files = [minilm(WeightType::Q8_0), smollm_gguf()]
            .iter()
            .map(|p| {
                let bytes = std::fs::read(p).unwrap();
                let data_offset = parse(&bytes).unwrap().data_offset as usize;
                (bytes, data_offset)
            })
            .collect();
        Mutex::new(files)
    })
}

fn header_len(which: usize) -> usize {
    real().lock().unwrap_or_else(|e| e.into_inner())[which].1
}

/// Parses `buf`; a file that parses must have every tensor inside it.
fn check(buf: &[u8]) {
    match parse(buf) {
        Ok(h) => {
            for t in &h.tensors {
                let end = h.data_offset + t.offset + t.size;
                assert!(end <= buf.len() as u64, "tensor {} past the end", t.name);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite one byte.
    Byte(usize, u8),
    /// Overwrite 8 bytes with an extreme u64 (a count, length, dim or offset).
    Word(usize, u64),
}

fn mutation(header_len: usize) -> impl Strategy<Value = Mutation> {
    let extremes = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(i64::MAX as u64),
        Just(1 << 32),
        Just(1 << 63),
        any::<u64>()
    ];
    prop_oneof![
        (0..header_len, any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
        (0..header_len, extremes).prop_map(|(i, v)| Mutation::Word(i, v)),
    ]
}

fn mutate_and_check(which: usize, muts: &[Mutation], cut: Option<usize>) {
    let mut files = real().lock().unwrap_or_else(|e| e.into_inner());
    let (buf, header_len) = &mut files[which];
    let mut undo = Vec::new();
    for m in muts {
        let (at, bytes) = match *m {
            Mutation::Byte(i, b) => (i, vec![b]),
            Mutation::Word(i, v) => (i.min(*header_len - 8), v.to_le_bytes().to_vec()),
        };
        undo.push((at, buf[at..at + bytes.len()].to_vec()));
        buf[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    let end = cut.map_or(buf.len(), |c| c.min(buf.len()));
    check(&buf[..end]);
    for (at, old) in undo.into_iter().rev() {
        buf[at..at + old.len()].copy_from_slice(&old);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_minilm_headers(muts in proptest::collection::vec(mutation(header_len(0)), 1..6)) {
        mutate_and_check(0, &muts, None);
    }

    #[test]
    fn mutated_smollm2_headers(muts in proptest::collection::vec(mutation(header_len(1)), 1..6)) {
        mutate_and_check(1, &muts, None);
    }

    #[test]
    fn truncated_real_files(which in 0usize..2, frac in 0f64..1.0, muts in proptest::collection::vec(mutation(4096), 0..3)) {
        let len = real().lock().unwrap_or_else(|e| e.into_inner())[which].0.len();
        let cut = (len as f64 * frac) as usize;
        mutate_and_check(which, &muts, Some(cut));
    }
}

//! Hostile GGUF files: each gets a named error, never a panic or an out-of-bounds read.

use std::borrow::Cow;

use edgecut_format::gguf::{
    encode_str, parse, Array, GgufError, GgufFile, GgufWriter, TensorSpec, Value,
};
use edgecut_format::DType;

/// A small valid file with every kind of section: scalar, string and array keys, and tensors of
/// three types. Returns the bytes and the section boundaries (byte offsets).
fn sample() -> (Vec<u8>, Vec<usize>) {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::Str("bert".into()));
    w.set("bert.block_count", Value::U32(2));
    w.set(
        "tokenizer.ggml.tokens",
        Value::Array(Array::Str(vec!["[PAD]".into(), "hello".into(), "é".into()])),
    );
    w.set(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![3, 1, 1])),
    );
    w.set(
        "nested",
        Value::Array(Array::Array(vec![
            Array::U8(vec![1, 2]),
            Array::F64(vec![0.5]),
        ])),
    );
    w.set("flag", Value::Bool(true));
    for (name, dtype, dims) in [
        ("a.weight", DType::Q8_0, vec![64u64, 3]),
        ("b.bias", DType::F32, vec![5]),
        ("c.weight", DType::F16, vec![4, 2]),
    ] {
        w.add_tensor(TensorSpec {
            name: name.into(),
            dtype,
            dims,
        })
        .unwrap();
    }
    let mut out = Vec::new();
    w.write_to(&mut out, |_, s| {
        Ok(Cow::Owned(vec![0x11; s.size() as usize]))
    })
    .unwrap();
    // Section boundaries: after magic, version, counts, each kv, each tensor info, padding, data.
    let mut b = vec![0, 4, 8, 16, 24];
    let mut pos = 24;
    let mut tmp = Vec::new();
    for (k, v) in w.metadata() {
        tmp.clear();
        encode_str(k, &mut tmp);
        tmp.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
        v.encode(&mut tmp);
        pos += tmp.len();
        b.push(pos);
    }
    for t in w.tensors() {
        pos += 8 + t.name.len() + 4 + 8 * t.dims.len() + 4 + 8;
        b.push(pos);
    }
    let (header, _) = w.header_bytes();
    b.push(header.len());
    b.push(out.len());
    (out, b)
}

/// Position just after `name`'s bytes (a key or a tensor name) in the header.
fn after(buf: &[u8], name: &str) -> usize {
    let needle = name.as_bytes();
    buf.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len()
}

/// The bytes of a file with metadata and no tensors.
fn metadata_only(w: &GgufWriter) -> Vec<u8> {
    let mut out = Vec::new();
    w.write_to(&mut out, |_, _| Ok(Cow::Borrowed(&[][..])))
        .unwrap();
    out
}

fn err(buf: &[u8]) -> GgufError {
    match parse(buf) {
        Ok(_) => panic!("hostile file parsed"),
        Err(e) => e,
    }
}

fn set_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn sample_is_valid_and_round_trips() {
    let (buf, _) = sample();
    let f = GgufFile::from_bytes(buf).unwrap();
    assert_eq!(f.tensors().len(), 3);
    assert_eq!(f.get_u64("bert.block_count").unwrap(), 2);
    assert_eq!(f.get_array("tokenizer.ggml.tokens").unwrap().len(), 3);
    assert_eq!(f.require_tensor("b.bias").unwrap().to_f32().len(), 5);
    assert!(matches!(
        f.get_u64("general.architecture"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_u64("missing"),
        Err(GgufError::MissingKey(_))
    ));
    assert!(matches!(
        f.require_tensor("nope"),
        Err(GgufError::MissingTensor(_))
    ));
}

#[test]
fn bad_magic_and_version() {
    let (mut buf, _) = sample();
    assert!(matches!(err(b""), GgufError::BadMagic { .. }));
    assert!(matches!(err(b"GG"), GgufError::BadMagic { .. }));
    buf[0] = b'X';
    assert!(err(&buf).to_string().contains("not a GGUF file"));
    buf[0] = b'G';
    buf[4..8].copy_from_slice(&7u32.to_le_bytes());
    assert!(matches!(err(&buf), GgufError::UnsupportedVersion(7)));
}

#[test]
fn truncation_at_every_section_boundary_and_every_byte() {
    let (buf, bounds) = sample();
    let infos_end = bounds[bounds.len() - 3];
    let f = GgufFile::from_bytes(buf.clone()).unwrap();
    let data_end = f
        .tensors()
        .iter()
        .map(|t| f.header().data_offset + t.offset + t.size)
        .max();
    let data_end = data_end.unwrap() as usize;
    // Trailing padding after the last tensor is optional; everything before it is needed.
    assert!(parse(&buf[..data_end]).is_ok());
    for &b in &bounds[..bounds.len() - 1] {
        for cut in [b.saturating_sub(1), b, b + 1] {
            assert!(!err(&buf[..cut.min(data_end - 1)]).to_string().is_empty());
        }
    }
    for cut in 0..data_end {
        // Every prefix is rejected: past the header, the data section is too short.
        let e = err(&buf[..cut]);
        if cut >= infos_end {
            assert!(
                matches!(e, GgufError::TensorOutOfBounds { .. }),
                "cut {cut}: {e}"
            );
        } else if cut >= 4 {
            assert!(
                matches!(e, GgufError::Truncated { .. } | GgufError::BadCount { .. }),
                "cut {cut}: {e}"
            );
        }
    }
}

#[test]
fn counts_that_overflow_or_exceed_the_file() {
    let (buf, _) = sample();
    for (at, what) in [(8, "tensor"), (16, "metadata")] {
        for v in [u64::MAX, u64::MAX / 13 + 1, 1 << 40, 1_000_000] {
            let mut b = buf.clone();
            set_u64(&mut b, at, v);
            match err(&b) {
                GgufError::BadCount { what: w, count, .. } => {
                    assert_eq!(w, what);
                    assert_eq!(count, v);
                }
                e => panic!("{e}"),
            }
        }
    }
    // An array count larger than the file.
    let mut b = buf.clone();
    let at = after(&b, "tokenizer.ggml.tokens") + 4 + 4;
    set_u64(&mut b, at, u64::MAX / 2);
    assert!(matches!(err(&b), GgufError::BadCount { .. }));
}

#[test]
fn strings_longer_than_the_file() {
    let (buf, _) = sample();
    for len in [u64::MAX, buf.len() as u64, 1 << 33] {
        let mut b = buf.clone();
        set_u64(&mut b, 24, len); // the first key's length
        assert!(matches!(err(&b), GgufError::Truncated { .. }), "len {len}");
    }
    let mut b = buf.clone();
    let at = after(&b, "tokenizer.ggml.tokens") + 4 + 4 + 8; // first element's length
    set_u64(&mut b, at, u64::MAX);
    assert!(matches!(err(&b), GgufError::Truncated { .. }));
}

#[test]
fn invalid_utf8_is_named() {
    let (buf, _) = sample();
    let mut b = buf.clone();
    let at = after(&b, "hello") - 5;
    b[at] = 0xff;
    assert!(matches!(err(&b), GgufError::InvalidUtf8 { .. }));
}

#[test]
fn unknown_value_and_tensor_types() {
    let (buf, _) = sample();
    let mut b = buf.clone();
    let at = after(&b, "general.architecture");
    b[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    assert!(matches!(
        err(&b),
        GgufError::UnknownValueType { type_id: 99, .. }
    ));

    // A number ggml retired (Q4_2): its block size is unknown, so the layout cannot be checked.
    let mut b = buf.clone();
    let at = after(&b, "b.bias") + 4 + 8; // n_dims, one dim
    b[at..at + 4].copy_from_slice(&4u32.to_le_bytes());
    let e = err(&b);
    assert!(
        matches!(e, GgufError::UnsupportedTensorType { type_id: 4, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("unsupported tensor type Q4_2"),
        "{e}"
    );
    assert!(e.to_string().contains("b.bias"));
    b[at..at + 4].copy_from_slice(&4000u32.to_le_bytes());
    assert!(matches!(
        err(&b),
        GgufError::UnsupportedTensorType { type_id: 4000, .. }
    ));
}

#[test]
fn a_tensor_of_a_type_edgecut_cannot_decode_is_listed_and_refused_by_name() {
    // b.bias: 5 F32 values (20 bytes) become 5 I32 values (20 bytes): a well-formed file with a
    // type edgecut does not decode.
    let (buf, _) = sample();
    let mut b = buf.clone();
    let at = after(&b, "b.bias") + 4 + 8;
    b[at..at + 4].copy_from_slice(&26u32.to_le_bytes());
    let mut b2 = b.clone();
    let f = GgufFile::from_bytes(b).unwrap();
    assert_eq!(f.unreadable().len(), 1);
    assert_eq!(f.unreadable()[0].type_name, "I32");
    assert_eq!(f.unreadable()[0].size, 20);
    assert!(f.tensor("b.bias").is_none());
    assert!(f.tensors().iter().all(|t| t.name != "b.bias"));
    let e = f.require_tensor("b.bias").unwrap_err();
    assert!(
        matches!(e, GgufError::UnsupportedTensorType { type_id: 26, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("I32") && e.to_string().contains("b.bias"),
        "{e}"
    );
    assert!(f.require_tensor("a.weight").is_ok());
    // Its data still counts in the layout checks: moved onto a.weight's (offset 0), it overlaps.
    set_u64(&mut b2, at + 4, 0);
    assert!(
        matches!(err(&b2), GgufError::Overlap { .. }),
        "{}",
        err(&b2)
    );
}

/// A file holding one `[2 blocks, 3]` tensor of `dtype`, every data byte `fill`.
fn one_tensor(dtype: DType, fill: u8) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::Str("test".into()));
    w.add_tensor(TensorSpec {
        name: "w".into(),
        dtype,
        dims: vec![2 * dtype.block_len() as u64, 3],
    })
    .unwrap();
    let mut out = Vec::new();
    w.write_to(&mut out, |_, s| {
        Ok(Cow::Owned(vec![fill; s.size() as usize]))
    })
    .unwrap();
    out
}

#[test]
fn every_block_type_short_blocks_broken_rows_and_non_finite_scales() {
    for dtype in edgecut_backends::dtype::ALL_DTYPES {
        let buf = one_tensor(dtype, 0x11);
        let f = GgufFile::from_bytes(buf.clone()).unwrap();
        let t = f.require_tensor("w").unwrap();
        assert_eq!(t.data.len(), 6 * dtype.block_bytes(), "{dtype}");
        // Data cut short by one byte, or by one block: named, never read past the end.
        let end = (f.header().data_offset + t.info.offset + t.info.size) as usize;
        for cut in [1, dtype.block_bytes()] {
            let e = err(&buf[..end - cut]);
            assert!(
                matches!(e, GgufError::TensorOutOfBounds { .. }),
                "{dtype} cut by {cut}: {e}"
            );
        }
        // A row that is not whole blocks.
        if dtype.block_len() > 1 {
            let mut b = buf.clone();
            let at = after(&b, "w") + 4;
            set_u64(&mut b, at, 2 * dtype.block_len() as u64 + 16);
            let e = err(&b);
            assert!(matches!(e, GgufError::BadTensor { .. }), "{dtype}: {e}");
            assert!(e.to_string().contains(&dtype.to_string()), "{e}");
        }
        // Every byte 0xff: f16 scales of 0xffff are NaN; 0x7c00 infinite. Decoding gives
        // non-finite values and no panic; the decoder refuses a short slice.
        for fill in [0xff, 0x7c] {
            let f = GgufFile::from_bytes(one_tensor(dtype, fill)).unwrap();
            let v = f.require_tensor("w").unwrap().to_f32();
            assert_eq!(v.len(), 6 * dtype.block_len());
        }
        let mut out = vec![0f32; dtype.block_len()];
        let short = vec![0u8; dtype.block_bytes() - 1];
        if dtype.block_bytes() > 1 {
            assert!(dtype.decode(&short, &mut out).is_err(), "{dtype}");
        }
        assert!(
            dtype
                .decode(&vec![0u8; 2 * dtype.block_bytes()], &mut out)
                .is_err(),
            "{dtype}"
        );
    }
}

#[test]
fn dimensions_that_overflow_or_break_the_block_size() {
    let (buf, _) = sample();
    let at = after(&buf, "a.weight") + 4; // dims start
    for (d0, d1) in [
        (u64::MAX, 2),
        (1 << 32, 1 << 32),
        (33, 3),
        (0, 3),
        (64, u64::MAX),
    ] {
        let mut b = buf.clone();
        set_u64(&mut b, at, d0);
        set_u64(&mut b, at + 8, d1);
        assert!(matches!(err(&b), GgufError::BadTensor { .. }), "{d0}x{d1}");
    }
    for n_dims in [0u32, 5, 9, u32::MAX] {
        let mut b = buf.clone();
        b[at - 4..at].copy_from_slice(&n_dims.to_le_bytes());
        assert!(
            matches!(err(&b), GgufError::BadTensor { .. }),
            "{n_dims} dims"
        );
    }
}

#[test]
fn offsets_past_the_end_misaligned_and_overlapping() {
    let (buf, _) = sample();
    let mut b = buf.clone();
    let at = after(&b, "c.weight") + 4 + 16 + 4;
    set_u64(&mut b, at, u64::MAX - 31);
    assert!(matches!(err(&b), GgufError::TensorOutOfBounds { .. }));
    set_u64(&mut b, at, 1 << 20);
    assert!(matches!(err(&b), GgufError::TensorOutOfBounds { .. }));
    set_u64(&mut b, at, 3);
    assert!(matches!(err(&b), GgufError::Misaligned { offset: 3, .. }));
    set_u64(&mut b, at, 0); // on top of a.weight
    assert!(matches!(err(&b), GgufError::Overlap { .. }));
}

#[test]
fn duplicates_and_bad_alignment() {
    let (buf, _) = sample();
    let mut b = buf.clone();
    let at = after(&b, "c.weight") - 8;
    b[at..at + 8].copy_from_slice(b"a.weight");
    assert!(matches!(err(&b), GgufError::DuplicateTensor(_)));

    let mut w = GgufWriter::new();
    w.set("k", Value::U8(1));
    w.set("j", Value::U8(2));
    let mut out = metadata_only(&w);
    let at = after(&out, "j") - 1;
    out[at] = b'k';
    assert!(matches!(err(&out), GgufError::DuplicateKey(_)));

    for bad in [
        Value::U32(24),
        Value::U32(0),
        Value::U64(32),
        Value::Str("32".into()),
    ] {
        let mut w = GgufWriter::new();
        w.set("general.alignment", bad);
        let out = metadata_only(&w);
        assert!(matches!(err(&out), GgufError::BadAlignment(_)));
    }
}

#[test]
fn deep_arrays_and_bad_bools() {
    let (buf, _) = sample();
    let at = after(&buf, "flag") + 4;
    let mut b = buf.clone();
    b[at] = 7;
    assert!(matches!(err(&b), GgufError::BadValue { .. }));

    let mut a = Array::U8(vec![1]);
    for _ in 0..6 {
        a = Array::Array(vec![a]);
    }
    let mut w = GgufWriter::new();
    w.set("deep", Value::Array(a));
    let out = metadata_only(&w);
    assert!(matches!(err(&out), GgufError::TooDeep { .. }));
}

#[test]
fn missing_and_tiny_files_are_named() {
    let e = GgufFile::open("/nonexistent/model.gguf").err().unwrap();
    assert!(e.to_string().contains("/nonexistent/model.gguf"), "{e}");
    let dir = std::env::temp_dir().join(format!("edgecut-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("empty.gguf");
    std::fs::write(&p, b"").unwrap();
    assert!(matches!(
        GgufFile::open(&p),
        Err(GgufError::BadMagic { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writer_rejects_data_of_the_wrong_size_and_leaves_no_file() {
    let mut w = GgufWriter::new();
    w.add_tensor(TensorSpec {
        name: "t".into(),
        dtype: DType::F32,
        dims: vec![4],
    })
    .unwrap();
    assert!(w
        .add_tensor(TensorSpec {
            name: "t".into(),
            dtype: DType::F32,
            dims: vec![4]
        })
        .is_err());
    assert!(w
        .add_tensor(TensorSpec {
            name: "q".into(),
            dtype: DType::Q8_0,
            dims: vec![31]
        })
        .is_err());
    let dir = std::env::temp_dir().join(format!("edgecut-writer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("out.gguf");
    let e = w
        .write_file(&p, |_, _| Ok(Cow::Owned(vec![0u8; 3])))
        .unwrap_err();
    assert!(e.to_string().contains("got 3 bytes"), "{e}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "partial file left behind"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

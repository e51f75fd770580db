//! Frames round-trip, and hostile bytes give errors, never panics or huge allocations.

use edgecut_wire::*;
use embedded_io_adapters::std::FromStd;
use proptest::prelude::*;

fn encode(f: &Frame) -> Vec<u8> {
    let mut out = FromStd::new(Vec::new());
    write_frame(&mut out, f).unwrap();
    out.into_inner()
}

fn decode(bytes: &[u8], limits: &Limits) -> Result<Option<Frame>, WireError> {
    read_frame(&mut FromStd::new(bytes), limits)
}

fn infer(batch: u16, seq: u16, width: u32, enc: Encoding) -> Frame {
    let values = batch as u64 * (seq as u64).max(1) * width as u64;
    Frame::Infer(Infer {
        request_id: 7,
        cut: 3,
        activation: Activation {
            batch,
            seq,
            width,
            lengths: (0..batch)
                .map(|i| if seq == 0 { 0 } else { seq - (i % seq.max(1)) })
                .collect(),
            encoding: enc,
            data: (0..enc.bytes(values).unwrap()).map(|i| i as u8).collect(),
        },
    })
}

fn step(session: u64, position: u32, rows: u16, width: u32, enc: Encoding) -> Frame {
    let n = rows as u64 * width as u64;
    Frame::Step(Step {
        session,
        position,
        rows,
        width,
        sample: true,
        encoding: enc,
        data: (0..enc.bytes(n).unwrap()).map(|i| i as u8).collect(),
    })
}

#[test]
fn every_frame_type_round_trips() {
    let frames = vec![
        Frame::Hello(Hello {
            model_id: [9; 32],
            encodings: 0b111,
            token: b"secret".to_vec(),
        }),
        Frame::HelloOk(HelloOk {
            stages: 8,
            max_batch: 32,
        }),
        infer(3, 5, 384, Encoding::Int8),
        infer(2, 0, 10, Encoding::F32),
        infer(1, 4, 7, Encoding::F16),
        Frame::Result(InferResult {
            request_id: 9,
            rows: 2,
            cols: 3,
            server_us: 1234,
            values: vec![1.0, -2.5, 3.0, 0.0, 1e-3, 7.0],
        }),
        Frame::Error {
            request_id: 0,
            code: ErrorCode::Unauthorized,
            message: "bad token ✗".into(),
        },
        Frame::Open(Open {
            cut: 15,
            context: 2048,
            encoding: Encoding::Int8,
            top_logits: 0,
            temperature: 0.7,
            top_k: 40,
            top_p: 0.95,
            seed: 7,
        }),
        Frame::Opened(Opened {
            session: 3,
            context: 2048,
        }),
        step(3, 17, 2, 576, Encoding::F16),
        step(3, 0, 1, 5, Encoding::Int8),
        Frame::Next(Next {
            session: 3,
            held: 19,
            token: 42,
            server_us: 900,
            top: vec![(42, 3.5), (7, -1.0)],
        }),
        Frame::Close { session: 3 },
    ];
    let mut stream = Vec::new();
    for f in &frames {
        stream.extend(encode(f));
    }
    let mut r = FromStd::new(&stream[..]);
    for f in &frames {
        assert_eq!(
            read_frame(&mut r, &Limits::default()).unwrap().as_ref(),
            Some(f)
        );
    }
    assert_eq!(
        read_frame(&mut r, &Limits::default()),
        Ok(None),
        "clean end between frames"
    );
}

#[test]
fn hostile_headers_are_refused_before_allocating() {
    let good = encode(&Frame::HelloOk(HelloOk {
        stages: 1,
        max_batch: 1,
    }));
    let lim = Limits::default();
    assert_eq!(
        decode(b"GET / HTTP/1.1\r\n\r\n", &lim),
        Err(WireError::BadMagic)
    );
    let mut v = good.clone();
    v[4] = 9;
    assert_eq!(decode(&v, &lim), Err(WireError::Version(9)));
    let mut v = good.clone();
    v[5] = 200;
    assert_eq!(decode(&v, &lim), Err(WireError::FrameType(200)));
    // A payload length of 2^63: refused from the header alone.
    let mut v = good.clone();
    v[8..16].copy_from_slice(&(1u64 << 63).to_le_bytes());
    assert_eq!(
        decode(&v, &lim),
        Err(WireError::TooLong {
            len: 1 << 63,
            max: lim.max_frame as u64
        })
    );
    // Cut at every byte: truncated, never a panic.
    let f = encode(&infer(2, 3, 40, Encoding::Int8));
    for n in 1..f.len() {
        let e = decode(&f[..n], &lim).unwrap_err();
        assert!(matches!(e, WireError::Truncated), "{n}: {e:?}");
    }
}

#[test]
fn hostile_payloads_are_invalid() {
    let lim = Limits {
        max_batch: u16::MAX,
        max_seq: u16::MAX,
        max_width: u32::MAX,
        ..Limits::default()
    };
    // batch x seq x width overflows u64 bytes: refused, not allocated.
    let mut p = Vec::new();
    p.extend(7u64.to_le_bytes());
    p.extend(1u16.to_le_bytes());
    p.push(0); // f32
    p.extend(u16::MAX.to_le_bytes());
    p.extend(u16::MAX.to_le_bytes());
    p.extend(u32::MAX.to_le_bytes());
    for _ in 0..u16::MAX {
        p.extend(1u16.to_le_bytes());
    }
    let mut f = Vec::new();
    f.extend(MAGIC);
    f.extend([VERSION, 3, 0, 0]);
    f.extend((p.len() as u64).to_le_bytes());
    f.extend(&p);
    let e = decode(&f, &lim).unwrap_err();
    assert!(matches!(e, WireError::Invalid(_)), "{e:?}");
    // The default limits refuse the shape before reading the lengths.
    assert!(matches!(
        decode(&f, &Limits::default()),
        Err(WireError::Invalid(_))
    ));
    // A length above seq (99 > 4), data one byte short, an unknown encoding, trailing bytes.
    // Offsets: header 16, then request 8, cut 2, encoding 1, batch 2, seq 2, width 4, lengths.
    let lengths = 16 + 8 + 2 + 1 + 2 + 2 + 4;
    let mut g = encode(&infer(1, 4, 2, Encoding::F32));
    g[lengths] = 99;
    assert_eq!(
        decode(&g, &Limits::default()),
        Err(WireError::Invalid("infer: a length is 0 or above seq"))
    );
    let mut g = encode(&infer(1, 4, 2, Encoding::F32));
    g.pop();
    g[8] -= 1; // payload length
    assert_eq!(
        decode(&g, &Limits::default()),
        Err(WireError::Invalid(
            "infer: activation bytes do not match batch x seq x width"
        ))
    );
    let mut h = encode(&infer(1, 4, 2, Encoding::F32));
    h[16 + 10] = 7; // encoding byte
    assert_eq!(
        decode(&h, &Limits::default()),
        Err(WireError::Invalid("infer: unknown encoding"))
    );
    let mut g = encode(&Frame::HelloOk(HelloOk {
        stages: 1,
        max_batch: 1,
    }));
    g[8] += 1;
    g.push(0);
    assert_eq!(
        decode(&g, &Limits::default()),
        Err(WireError::Invalid("bytes after the last field"))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), ty in 1u8..=5) {
        // Random payloads behind a valid header, and random bytes as a whole stream.
        let mut f = Vec::new();
        f.extend(MAGIC);
        f.extend([VERSION, ty, 0, 0]);
        f.extend((bytes.len() as u64).to_le_bytes());
        f.extend(&bytes);
        let _ = decode(&f, &Limits::default());
        let _ = decode(&bytes, &Limits::default());
    }

    #[test]
    fn random_frames_round_trip(batch in 1u16..5, seq in 0u16..6, width in 1u32..70, enc in 0u8..4, id in any::<u64>()) {
        let mut f = infer(batch, seq, width, Encoding::from_u8(enc).unwrap());
        if let Frame::Infer(i) = &mut f { i.request_id = id; }
        prop_assert_eq!(decode(&encode(&f), &Limits::default()).unwrap(), Some(f));
    }
}

#[test]
fn an_infer_prefix_tells_the_whole_payload_size_and_is_checked() {
    for (batch, seq, width, enc) in [
        (1, 5, 384, Encoding::F32),
        (3, 7, 33, Encoding::Int8),
        (2, 0, 10, Encoding::F16),
        (4, 9, 1, Encoding::U32),
    ] {
        let bytes = encode(&infer(batch, seq, width, enc));
        let payload = &bytes[HEADER_BYTES..];
        let shape = parse_infer_prefix(&payload[..INFER_PREFIX_BYTES], &Limits::default()).unwrap();
        assert_eq!(
            (shape.batch, shape.seq, shape.width, shape.encoding),
            (batch, seq, width, enc)
        );
        assert_eq!(
            shape.payload_bytes(),
            Some(payload.len() as u64),
            "{batch} {seq} {width} {enc:?}"
        );
    }
    let bytes = encode(&infer(3, 4, 8, Encoding::F32));
    let prefix = &bytes[HEADER_BYTES..HEADER_BYTES + INFER_PREFIX_BYTES];
    let tight = Limits {
        max_batch: 2,
        ..Limits::default()
    };
    assert!(parse_infer_prefix(prefix, &tight).is_err());
    assert!(parse_infer_prefix(&prefix[..INFER_PREFIX_BYTES - 1], &Limits::default()).is_err());
    // The largest shape's size overflows u64: no size, so it matches no frame length.
    let huge = InferShape {
        request_id: 0,
        cut: 1,
        encoding: Encoding::F32,
        batch: u16::MAX,
        seq: u16::MAX,
        width: u32::MAX,
    };
    assert_eq!(huge.payload_bytes(), None);
    assert!(InferShape { width: 1, ..huge }
        .payload_bytes()
        .is_some_and(|b| b > u32::MAX as u64));
}

#[test]
fn hostile_decoder_frames_are_invalid() {
    let limits = Limits::default();
    let payload = |f: &Frame| encode(f)[HEADER_BYTES..].to_vec();
    let open = Open {
        cut: 1,
        context: 16,
        encoding: Encoding::F32,
        top_logits: 0,
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    };
    for bad in [
        Open {
            context: 0,
            ..open.clone()
        },
        Open {
            context: MAX_CONTEXT + 1,
            ..open.clone()
        },
        Open {
            top_logits: MAX_TOP_LOGITS + 1,
            ..open.clone()
        },
        Open {
            temperature: f32::NAN,
            ..open.clone()
        },
        Open {
            top_p: 0.0,
            ..open.clone()
        },
    ] {
        assert!(
            decode_payload(6, &payload(&Frame::Open(bad.clone())), &limits).is_err(),
            "{bad:?}"
        );
    }
    // A STEP whose data does not match rows x width, with 0 rows, too many rows, an unknown
    // sample flag or u32 values.
    let good = payload(&step(1, 0, 2, 8, Encoding::F32));
    assert!(decode_payload(8, &good, &limits).is_ok());
    assert!(decode_payload(8, &good[..good.len() - 1], &limits).is_err());
    let mut rows0 = good.clone();
    rows0[12..14].copy_from_slice(&0u16.to_le_bytes());
    assert!(decode_payload(8, &rows0, &limits).is_err());
    let mut many = good.clone();
    many[12..14].copy_from_slice(&(MAX_STEP_ROWS + 1).to_le_bytes());
    assert!(decode_payload(8, &many, &limits).is_err());
    let mut flag = good.clone();
    flag[18] = 2;
    assert!(decode_payload(8, &flag, &limits).is_err());
    let mut ids = good.clone();
    ids[19] = Encoding::U32 as u8;
    assert!(decode_payload(8, &ids, &limits).is_err());
    // A NEXT whose logits do not match their count.
    let next = payload(&Frame::Next(Next {
        session: 1,
        held: 1,
        token: NO_TOKEN,
        server_us: 0,
        top: vec![(1, 1.0)],
    }));
    assert!(decode_payload(9, &next[..next.len() - 4], &limits).is_err());
}

//! The C ABI used the way C code uses it, correctly and wrongly: null pointers, closed and
//! made-up handles, buffers too small, invalid UTF-8, several threads. Every misuse must give a
//! status and a message, never a crash. (Generation and chats: `abi_generate.rs`.)

use std::ffi::{c_char, CStr, CString};
use std::ptr::{null, null_mut};

use edgecut::WeightType;
use edgecut_mobile::*;
use edgecut_tests::{converted, minilm, repo_root};
use EdgecutStatus::*;

mod common;
use common::{embed, last_error, open};

#[test]
fn version_and_a_normal_embedding() {
    // SAFETY: a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(edgecut_version()) }
        .to_str()
        .unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    let h = open(&minilm(WeightType::Q8_0));
    let mut dim = 0;
    // SAFETY: a writable size_t.
    let s = unsafe { edgecut_embedding_dim(h, &mut dim) };
    assert_eq!(s, EDGECUT_STATUS_OK);
    assert_eq!(dim, 384);
    let mut out = vec![0f32; 2 * dim];
    let mut needed = 0;
    assert_eq!(
        embed(h, &[c"hello", c"world"], &mut out, &mut needed),
        EDGECUT_STATUS_OK
    );
    assert_eq!(needed, 768);
    assert_eq!(last_error(), "", "a success clears the message");
    let norm: f32 = out[..dim].iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-3, "unit vectors: {norm}");
    assert_eq!(edgecut_model_close(h), EDGECUT_STATUS_OK);
}

#[test]
fn null_pointers_are_statuses() {
    let mut h = 0;
    // SAFETY: null pointers are what is being tested; the ABI checks them.
    unsafe {
        assert_eq!(
            edgecut_model_open(null(), null(), &mut h),
            EDGECUT_STATUS_NULL_POINTER
        );
        assert!(last_error().contains("path is null"));
        assert_eq!(
            edgecut_model_open(c"x.gguf".as_ptr(), null(), null_mut()),
            EDGECUT_STATUS_NULL_POINTER
        );
    }
    let h = open(&minilm(WeightType::Q8_0));
    let mut needed = 0;
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            edgecut_embedding_dim(h, null_mut()),
            EDGECUT_STATUS_NULL_POINTER
        );
        assert_eq!(
            edgecut_embed(h, null(), 1, null_mut(), 0, &mut needed),
            EDGECUT_STATUS_NULL_POINTER
        );
        let texts = [null::<c_char>()];
        let mut out = vec![0f32; 384];
        let s = edgecut_embed(
            h,
            texts.as_ptr(),
            1,
            out.as_mut_ptr(),
            out.len(),
            null_mut(),
        );
        assert_eq!(s, EDGECUT_STATUS_NULL_POINTER);
        assert!(
            last_error().contains("texts[0] is null"),
            "{}",
            last_error()
        );
        // Large enough length, but a null buffer.
        let t = [c"a".as_ptr()];
        assert_eq!(
            edgecut_embed(h, t.as_ptr(), 1, null_mut(), 384, null_mut()),
            EDGECUT_STATUS_NULL_POINTER
        );
        assert_eq!(
            edgecut_generate(h, null(), null(), None, null_mut(), null()),
            EDGECUT_STATUS_INVALID_ARGUMENT
        );
    }
    edgecut_model_close(h);
}

#[test]
fn closed_and_made_up_handles_are_statuses() {
    let h = open(&minilm(WeightType::Q8_0));
    assert_eq!(edgecut_model_close(h), EDGECUT_STATUS_OK);
    let mut out = vec![0f32; 384];
    let mut needed = 0;
    assert_eq!(
        embed(h, &[c"a"], &mut out, &mut needed),
        EDGECUT_STATUS_INVALID_HANDLE
    );
    assert!(
        last_error().contains("unknown or closed"),
        "{}",
        last_error()
    );
    assert_eq!(
        edgecut_model_close(h),
        EDGECUT_STATUS_INVALID_HANDLE,
        "closing twice"
    );
    assert_eq!(
        embed(0, &[c"a"], &mut out, &mut needed),
        EDGECUT_STATUS_INVALID_HANDLE
    );
    assert_eq!(
        embed(u64::MAX, &[c"a"], &mut out, &mut needed),
        EDGECUT_STATUS_INVALID_HANDLE
    );
    // A file that does not exist or is not a model.
    let mut h2 = 0;
    // SAFETY: valid strings and a writable handle.
    unsafe {
        assert_eq!(
            edgecut_model_open(c"/nonexistent.gguf".as_ptr(), null(), &mut h2),
            EDGECUT_STATUS_MODEL_ERROR
        );
        assert!(last_error().contains("nonexistent"));
        let bad = EdgecutOptions {
            threads: 0,
            device: EdgecutDevice::EDGECUT_DEVICE_AUTO as u32,
            max_seq_len: 100_000,
            context: 0,
        };
        // A device value that names no device is refused (the field is an integer, so C may
        // pass anything without undefined behaviour on the Rust side).
        let no_device = EdgecutOptions {
            device: 7,
            max_seq_len: 0,
            ..bad
        };
        let p7 = CString::new(minilm(WeightType::Q8_0).to_str().unwrap()).unwrap();
        assert_eq!(
            edgecut_model_open(p7.as_ptr(), &no_device, &mut h2),
            EDGECUT_STATUS_INVALID_ARGUMENT
        );
        assert!(last_error().contains("device 7"), "{}", last_error());
        let p = CString::new(minilm(WeightType::Q8_0).to_str().unwrap()).unwrap();
        assert_eq!(
            edgecut_model_open(p.as_ptr(), &bad, &mut h2),
            EDGECUT_STATUS_MODEL_ERROR
        );
        assert!(
            last_error().contains("max sequence length"),
            "{}",
            last_error()
        );
    }
}

#[test]
fn small_buffers_report_the_size_needed() {
    let h = open(&minilm(WeightType::Q8_0));
    let mut needed = 0;
    let mut small = vec![0f32; 100];
    assert_eq!(
        embed(h, &[c"a", c"b", c"c"], &mut small, &mut needed),
        EDGECUT_STATUS_BUFFER_TOO_SMALL
    );
    assert_eq!(needed, 3 * 384);
    assert!(
        last_error().contains("holds 100 floats"),
        "{}",
        last_error()
    );
    assert!(
        small.iter().all(|&x| x == 0.0),
        "nothing written past a failed call"
    );
    // Size query without a buffer.
    // SAFETY: null output with length 0, a valid text array.
    let s = unsafe { edgecut_embed(h, [c"a".as_ptr()].as_ptr(), 1, null_mut(), 0, &mut needed) };
    assert_eq!((s, needed), (EDGECUT_STATUS_BUFFER_TOO_SMALL, 384));
    // Classification on a model without a head.
    let mut probs = [0f32; 4];
    // SAFETY: valid pointers.
    let s = unsafe {
        edgecut_classify(
            h,
            c"x".as_ptr(),
            probs.as_mut_ptr(),
            4,
            null_mut(),
            null_mut(),
        )
    };
    assert_eq!(s, EDGECUT_STATUS_INVALID_ARGUMENT);
    assert!(last_error().contains("no classification head"));
    edgecut_model_close(h);
}

#[test]
fn invalid_utf8_is_named() {
    let h = open(&minilm(WeightType::Q8_0));
    let bad = CString::new(vec![b'o', b'k', 0xff, 0xfe]).unwrap();
    let mut out = vec![0f32; 2 * 384];
    let mut needed = 0;
    assert_eq!(
        embed(h, &[c"fine", &bad], &mut out, &mut needed),
        EDGECUT_STATUS_INVALID_UTF8
    );
    assert!(
        last_error().contains("texts[1] is not valid UTF-8"),
        "{}",
        last_error()
    );
    let mut h2 = 0;
    // SAFETY: a NUL-terminated (invalid UTF-8) path and a writable handle.
    let s = unsafe { edgecut_model_open(bad.as_ptr(), null(), &mut h2) };
    assert_eq!(s, EDGECUT_STATUS_INVALID_UTF8);
    edgecut_model_close(h);
}

#[test]
fn many_threads_share_a_handle_and_one_closes_it() {
    let h = open(&minilm(WeightType::Q8_0));
    let mut want = vec![0f32; 384];
    let mut n = 0;
    assert_eq!(
        embed(h, &[c"the same text"], &mut want, &mut n),
        EDGECUT_STATUS_OK
    );
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20 {
                    let mut out = vec![0f32; 384];
                    let mut n = 0;
                    assert_eq!(
                        embed(h, &[c"the same text"], &mut out, &mut n),
                        EDGECUT_STATUS_OK
                    );
                    assert_eq!(out, want);
                }
            });
        }
    });
    // One thread closes the handle while others keep calling: they get statuses, no crash.
    std::thread::scope(|s| {
        for i in 0..4 {
            s.spawn(move || {
                for j in 0..30 {
                    if i == 0 && j == 10 {
                        edgecut_model_close(h);
                    }
                    let mut out = vec![0f32; 384];
                    let mut n = 0;
                    let st = embed(h, &[c"text"], &mut out, &mut n);
                    assert!(
                        st == EDGECUT_STATUS_OK || st == EDGECUT_STATUS_INVALID_HANDLE,
                        "{st:?}"
                    );
                }
            });
        }
    });
    let mut out = vec![0f32; 384];
    assert_eq!(
        embed(h, &[c"text"], &mut out, &mut n),
        EDGECUT_STATUS_INVALID_HANDLE
    );
}

#[test]
fn rerank_scores_documents_as_the_facade_does_and_refuses_misuse() {
    let path = converted(
        &repo_root().join("tests/fixtures/bert-rerank-tiny"),
        "bert-rerank-tiny",
        WeightType::F32,
    );
    let h = open(&path);
    let query = CString::new("What is the capital of France?").unwrap();
    let docs = [
        "Paris is the capital of France.",
        "The cat sat on the mat.",
        "北京",
    ];
    let cdocs: Vec<CString> = docs.iter().map(|d| CString::new(*d).unwrap()).collect();
    let ptrs: Vec<*const c_char> = cdocs.iter().map(|d| d.as_ptr()).collect();
    let mut scores = [0f32; 3];
    // SAFETY: valid strings and a buffer of 3 floats.
    let s = unsafe { edgecut_rerank(h, query.as_ptr(), ptrs.as_ptr(), 3, scores.as_mut_ptr(), 3) };
    assert_eq!(s, EDGECUT_STATUS_OK, "{}", last_error());
    let want = edgecut::Session::open(&path, &edgecut::SessionOptions::default())
        .unwrap()
        .rerank(query.to_str().unwrap(), &docs)
        .unwrap()
        .scores;
    assert_eq!(scores.to_vec(), want, "the facade's scores, bit for bit");
    // Too small a buffer, null documents, an embedder.
    // SAFETY: the buffer holds 2 floats, which the call must not pass.
    let s = unsafe { edgecut_rerank(h, query.as_ptr(), ptrs.as_ptr(), 3, scores.as_mut_ptr(), 2) };
    assert_eq!(s, EDGECUT_STATUS_BUFFER_TOO_SMALL);
    // SAFETY: null docs must be reported, not read.
    let s = unsafe { edgecut_rerank(h, query.as_ptr(), null(), 3, scores.as_mut_ptr(), 3) };
    assert_eq!(s, EDGECUT_STATUS_NULL_POINTER);
    let e = open(&minilm(WeightType::Q8_0));
    // SAFETY: valid strings and buffer.
    let s = unsafe { edgecut_rerank(e, query.as_ptr(), ptrs.as_ptr(), 3, scores.as_mut_ptr(), 3) };
    assert_eq!(s, EDGECUT_STATUS_MODEL_ERROR);
    assert!(
        last_error().contains("classification head"),
        "{}",
        last_error()
    );
    assert_eq!(edgecut_model_close(h), EDGECUT_STATUS_OK);
    assert_eq!(edgecut_model_close(e), EDGECUT_STATUS_OK);
}

#[test]
fn a_clip_model_embeds_pictures_and_refuses_what_is_not_one() {
    let clip = converted(
        &repo_root().join("tests/fixtures/clip-tiny"),
        "clip-tiny",
        WeightType::F32,
    );
    let h = open(&clip);
    let png = std::fs::read(repo_root().join("tests/fixtures/clip-images/02-coffee.png")).unwrap();
    let mut dim = 0;
    // SAFETY: a writable size_t.
    let s = unsafe { edgecut_embedding_dim(h, &mut dim) };
    assert_eq!(s, EDGECUT_STATUS_OK);
    let (mut out, mut needed) = (vec![0f32; dim], 0usize);
    // Too small a buffer first: the size needed comes back.
    // SAFETY: the buffers are as long as the lengths given.
    let s = unsafe {
        edgecut_embed_image(h, png.as_ptr(), png.len(), out.as_mut_ptr(), 1, &mut needed)
    };
    assert_eq!((s, needed), (EDGECUT_STATUS_BUFFER_TOO_SMALL, dim));
    // SAFETY: as above.
    let s = unsafe {
        edgecut_embed_image(
            h,
            png.as_ptr(),
            png.len(),
            out.as_mut_ptr(),
            dim,
            null_mut(),
        )
    };
    assert_eq!(s, EDGECUT_STATUS_OK, "{}", last_error());
    let session = edgecut::Session::open(&clip, &Default::default()).unwrap();
    assert_eq!(out, session.embed_images(&[&png]).unwrap()[0]);
    // Not a picture; a truncated one; a null pointer: statuses with reasons.
    for (bytes, says) in [
        (&b"hello"[..], "not a PNG or JPEG"),
        (&png[..png.len() / 2], "cannot decode the PNG"),
    ] {
        // SAFETY: as above.
        let s = unsafe {
            edgecut_embed_image(
                h,
                bytes.as_ptr(),
                bytes.len(),
                out.as_mut_ptr(),
                dim,
                null_mut(),
            )
        };
        assert_eq!(s, EDGECUT_STATUS_INVALID_ARGUMENT);
        assert!(last_error().contains(says), "{}", last_error());
    }
    // SAFETY: a null `bytes` is what is tested.
    let s = unsafe { edgecut_embed_image(h, null(), 3, out.as_mut_ptr(), dim, null_mut()) };
    assert_eq!(s, EDGECUT_STATUS_NULL_POINTER);
    assert_eq!(edgecut_model_close(h), EDGECUT_STATUS_OK);
    // A text model refuses pictures.
    let t = open(&minilm(WeightType::Q8_0));
    // SAFETY: as above.
    let s = unsafe {
        edgecut_embed_image(
            t,
            png.as_ptr(),
            png.len(),
            out.as_mut_ptr(),
            dim,
            null_mut(),
        )
    };
    assert_eq!(s, EDGECUT_STATUS_INVALID_ARGUMENT);
    assert!(last_error().contains("CLIP"), "{}", last_error());
    assert_eq!(edgecut_model_close(t), EDGECUT_STATUS_OK);
}

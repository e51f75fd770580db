//! The C ABI used the way C code uses it, correctly and wrongly: null pointers, closed and
//! made-up handles, buffers too small, invalid UTF-8, several threads, generation with a
//! callback and a cancel flag. Every misuse must give a status and a message, never a crash.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicI32, Ordering};

use edgecut::WeightType;
use edgecut_mobile::*;
use edgecut_tests::{converted, minilm, repo_root, smollm_gguf};
use EdgecutStatus::*;

fn last_error() -> String {
    // SAFETY: edgecut_last_error never returns null and the string lives until the next call.
    unsafe { CStr::from_ptr(edgecut_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn open(path: &std::path::Path) -> EdgecutModel {
    let p = CString::new(path.to_str().unwrap()).unwrap();
    let mut h = 0;
    // SAFETY: valid string, null options (defaults), a writable handle.
    let s = unsafe { edgecut_model_open(p.as_ptr(), null(), &mut h) };
    assert_eq!(s, EDGECUT_STATUS_OK, "{}", last_error());
    assert_ne!(h, 0);
    h
}

fn embed(h: EdgecutModel, texts: &[&CStr], out: &mut [f32], needed: &mut usize) -> EdgecutStatus {
    let ptrs: Vec<*const c_char> = texts.iter().map(|t| t.as_ptr()).collect();
    // SAFETY: ptrs holds texts.len() valid strings; out has out.len() floats.
    unsafe {
        edgecut_embed(
            h,
            ptrs.as_ptr(),
            ptrs.len(),
            out.as_mut_ptr(),
            out.len(),
            needed,
        )
    }
}

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

unsafe extern "C" fn collect(piece: *const c_char, len: usize, user: *mut c_void) -> c_int {
    // SAFETY: the ABI passes len valid bytes; user is the Vec<u8> the test passed.
    let (bytes, out) = unsafe {
        (
            std::slice::from_raw_parts(piece as *const u8, len),
            &mut *(user as *mut Vec<u8>),
        )
    };
    out.extend_from_slice(bytes);
    0
}

struct Cancel {
    flag: AtomicI32,
    seen: Vec<u8>,
}

unsafe extern "C" fn cancel_after_first(
    piece: *const c_char,
    len: usize,
    user: *mut c_void,
) -> c_int {
    // SAFETY: as in `collect`; user is the Cancel the test passed.
    let c = unsafe { &mut *(user as *mut Cancel) };
    // SAFETY: len valid bytes.
    c.seen
        .extend_from_slice(unsafe { std::slice::from_raw_parts(piece as *const u8, len) });
    c.flag.store(1, Ordering::Relaxed);
    0
}

#[test]
fn generation_streams_through_the_callback_and_can_be_cancelled() {
    let h = open(&smollm_gguf());
    let opts = EdgecutGenerateOptions {
        max_tokens: 8,
        temperature: 0.0,
        top_k: 0,
        top_p: 0.0,
        repetition_penalty: 0.0,
        seed: 0,
        chat: 0,
        constraint_kind: 0,
        constraint: std::ptr::null(),
    };
    let mut text: Vec<u8> = Vec::new();
    // SAFETY: valid prompt, options, callback and user pointer.
    let s = unsafe {
        edgecut_generate(
            h,
            c"The capital of France is".as_ptr(),
            &opts,
            Some(collect),
            &mut text as *mut _ as *mut c_void,
            null(),
        )
    };
    assert_eq!(s, EDGECUT_STATUS_OK, "{}", last_error());
    let text = String::from_utf8(text).unwrap();
    assert!(text.starts_with(" Paris."), "{text:?}");
    // Cancelled from the callback's side through the flag: status CANCELLED after one piece.
    let mut c = Cancel {
        flag: AtomicI32::new(0),
        seen: Vec::new(),
    };
    let flag = c.flag.as_ptr() as *const i32;
    // SAFETY: as above; the flag outlives the call.
    let s = unsafe {
        edgecut_generate(
            h,
            c"The capital of France is".as_ptr(),
            &opts,
            Some(cancel_after_first),
            &mut c as *mut _ as *mut c_void,
            flag,
        )
    };
    assert_eq!(s, EDGECUT_STATUS_CANCELLED);
    assert_eq!(String::from_utf8(c.seen).unwrap(), " Paris");
    // An encoder cannot generate, a decoder cannot embed; bad sampling values are named.
    let m = open(&minilm(WeightType::Q8_0));
    // SAFETY: valid pointers.
    unsafe {
        assert_eq!(
            edgecut_generate(m, c"x".as_ptr(), null(), None, null_mut(), null()),
            EDGECUT_STATUS_INVALID_ARGUMENT
        );
        let bad = EdgecutGenerateOptions { top_p: 2.0, ..opts };
        assert_eq!(
            edgecut_generate(h, c"x".as_ptr(), &bad, None, null_mut(), null()),
            EDGECUT_STATUS_INVALID_ARGUMENT
        );
        assert!(last_error().contains("top-p"));
    }
    // A constraint: the output is the regex's, whole; one the engine cannot take is named.
    let phone = EdgecutGenerateOptions {
        max_tokens: 20,
        chat: 1,
        constraint_kind: 2,
        constraint: c"[0-9]{3}-[0-9]{4}".as_ptr(),
        ..opts
    };
    let mut text: Vec<u8> = Vec::new();
    // SAFETY: valid prompt, options (a NUL-terminated constraint), callback and user pointer.
    let s = unsafe {
        edgecut_generate(
            h,
            c"Give me a phone number.".as_ptr(),
            &phone,
            Some(collect),
            &mut text as *mut _ as *mut c_void,
            null(),
        )
    };
    assert_eq!(s, EDGECUT_STATUS_OK, "{}", last_error());
    let text = String::from_utf8(text).unwrap();
    let b = text.as_bytes();
    assert!(
        b.len() == 8 && b[3] == b'-' && b.iter().filter(|c| c.is_ascii_digit()).count() == 7,
        "{text:?}"
    );
    let bad = EdgecutGenerateOptions {
        constraint_kind: 1,
        constraint: c"{\"type\": \"integer\", \"minimum\": 5, \"maximum\": 1}".as_ptr(),
        ..phone
    };
    // SAFETY: valid pointers.
    unsafe {
        assert_eq!(
            edgecut_generate(h, c"x".as_ptr(), &bad, None, null_mut(), null()),
            EDGECUT_STATUS_INVALID_ARGUMENT
        );
        assert!(
            last_error().contains("greater than maximum"),
            "{}",
            last_error()
        );
        let missing = EdgecutGenerateOptions {
            constraint: null(),
            ..bad
        };
        assert_eq!(
            edgecut_generate(h, c"x".as_ptr(), &missing, None, null_mut(), null()),
            EDGECUT_STATUS_NULL_POINTER
        );
        assert!(last_error().contains("constraint"), "{}", last_error());
    }
    let mut out = vec![0f32; 576];
    let mut n = 0;
    assert_eq!(
        embed(h, &[c"x"], &mut out, &mut n),
        EDGECUT_STATUS_INVALID_ARGUMENT
    );
    edgecut_model_close(h);
    edgecut_model_close(m);
}

/// Issue 10: a C chat handle keeps the conversation in its KV cache across turns, so the second
/// turn reuses the first turn's tokens instead of recomputing them.
#[test]
fn a_chat_handle_keeps_its_history_in_the_cache_across_turns() {
    let h = open(&smollm_gguf());
    let opts = EdgecutGenerateOptions {
        max_tokens: 6,
        temperature: 0.0,
        top_k: 0,
        top_p: 0.0,
        repetition_penalty: 0.0,
        seed: 0,
        chat: 0,
        constraint_kind: 0,
        constraint: std::ptr::null(),
    };
    let mut chat = 0;
    // SAFETY: a valid system message and a writable handle.
    let st = unsafe { edgecut_chat_open(h, c"You are brief.".as_ptr(), &mut chat) };
    assert_eq!(st, EDGECUT_STATUS_OK, "{}", last_error());
    let send = |msg: &CStr, text: &mut Vec<u8>, reused: &mut usize| {
        // SAFETY: valid message, options, callback, user pointer and out pointer.
        unsafe {
            edgecut_chat_send(
                chat,
                msg.as_ptr(),
                &opts,
                Some(collect),
                text as *mut Vec<u8> as *mut c_void,
                null(),
                reused,
            )
        }
    };
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let (mut reused1, mut reused2, mut cached1, mut cached2) = (usize::MAX, 0, 0, 0);
    assert_eq!(send(c"Hello!", &mut first, &mut reused1), EDGECUT_STATUS_OK);
    assert_eq!(reused1, 0, "a new chat has nothing cached");
    // SAFETY: a writable count.
    let st = unsafe { edgecut_chat_cached_tokens(chat, &mut cached1) };
    assert_eq!(st, EDGECUT_STATUS_OK);
    assert!(cached1 > 10 && !first.is_empty(), "{cached1}");
    assert_eq!(
        send(c"And again?", &mut second, &mut reused2),
        EDGECUT_STATUS_OK
    );
    // SAFETY: a writable count.
    let st = unsafe { edgecut_chat_cached_tokens(chat, &mut cached2) };
    assert_eq!(st, EDGECUT_STATUS_OK);
    // The second turn's prompt starts with the whole first turn: all of it (less at most the
    // reply's last token, whose keys the reply never computed) came from the cache.
    assert!(
        reused2 + 1 >= cached1 && reused2 <= cached1,
        "{reused2} of {cached1}"
    );
    assert!(cached2 > cached1);
    // Closing the model leaves the chat usable (it holds the model); closing the chat ends it.
    assert_eq!(edgecut_model_close(h), EDGECUT_STATUS_OK);
    let mut third = Vec::new();
    let mut r3 = 0;
    assert_eq!(send(c"Bye.", &mut third, &mut r3), EDGECUT_STATUS_OK);
    assert!(r3 >= cached2 - 1);
    assert_eq!(edgecut_chat_close(chat), EDGECUT_STATUS_OK);
    assert_eq!(edgecut_chat_close(chat), EDGECUT_STATUS_INVALID_HANDLE);
    assert_eq!(
        send(c"Still there?", &mut third, &mut r3),
        EDGECUT_STATUS_INVALID_HANDLE
    );
}

/// A tiny Qwen3 (q/k norms, NeoX rope, its own head size, ChatML) through the C chat handle,
/// unchanged from SmolLM2's path: the reply is transformers' greedy reply to the same turn
/// rendered by its own template (`tests/fixtures/decoders-tiny.json`).
#[test]
fn a_qwen3_chat_handle_replies_as_transformers_does() {
    chat_handle_replies_as_transformers("qwen3", "decoders-tiny.json", "/models/qwen3/chat");
}

/// A tiny Gemma 3 (its SentencePiece tokenizer, Gemma's template, sliding-window caches)
/// through the C chat handle: transformers' greedy reply (`tests/fixtures/gemma3-tiny.json`).
#[test]
fn a_gemma3_chat_handle_replies_as_transformers_does() {
    chat_handle_replies_as_transformers("gemma3", "gemma3-tiny.json", "/chat");
}

/// The chat turn at JSON `pointer` of fixture `file` through the C chat handle of the tiny
/// `arch` checkpoint converted by edgecut.
fn chat_handle_replies_as_transformers(arch: &str, file: &str, pointer: &str) {
    let fx = edgecut_tests::fixture(file);
    let chat_fx = fx.pointer(pointer).unwrap();
    let h = open(&edgecut_tests::tiny_decoder(arch, WeightType::F32));
    let want = chat_fx["text"].as_str().unwrap();
    let msgs = chat_fx["messages"].as_array().unwrap();
    let (system, user) = (
        CString::new(msgs[0]["content"].as_str().unwrap()).unwrap(),
        CString::new(msgs[1]["content"].as_str().unwrap()).unwrap(),
    );
    let opts = EdgecutGenerateOptions {
        max_tokens: chat_fx["greedy"].as_array().unwrap().len() as u32,
        temperature: 0.0,
        top_k: 0,
        top_p: 0.0,
        repetition_penalty: 0.0,
        seed: 0,
        chat: 0,
        constraint_kind: 0,
        constraint: std::ptr::null(),
    };
    let mut chat = 0;
    // SAFETY: a valid system message and a writable handle.
    let st = unsafe { edgecut_chat_open(h, system.as_ptr(), &mut chat) };
    assert_eq!(st, EDGECUT_STATUS_OK, "{}", last_error());
    let (mut text, mut reused) = (Vec::<u8>::new(), 0usize);
    // SAFETY: valid message, options, callback, user pointer and out pointer.
    let st = unsafe {
        edgecut_chat_send(
            chat,
            user.as_ptr(),
            &opts,
            Some(collect),
            &mut text as *mut Vec<u8> as *mut c_void,
            null(),
            &mut reused,
        )
    };
    assert_eq!(st, EDGECUT_STATUS_OK, "{}", last_error());
    assert_eq!(String::from_utf8(text).unwrap(), want);
    let mut cached = 0;
    // SAFETY: a writable count.
    let st = unsafe { edgecut_chat_cached_tokens(chat, &mut cached) };
    assert_eq!(st, EDGECUT_STATUS_OK);
    // The rendered turn (as transformers tokenizes it) and the reply, less the reply's last
    // token, whose keys the reply never computed.
    let all = chat_fx["ids"].as_array().unwrap().len() + opts.max_tokens as usize;
    assert!(cached + 1 >= all && cached <= all, "{cached} of {all}");
    assert_eq!(edgecut_chat_close(chat), EDGECUT_STATUS_OK);
    assert_eq!(edgecut_model_close(h), EDGECUT_STATUS_OK);
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

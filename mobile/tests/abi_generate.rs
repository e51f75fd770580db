//! Generation through the C ABI the way C code uses it: pieces through a callback, a cancel
//! flag, a constraint on the output, chat handles that keep their history in the cache.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicI32, Ordering};

use edgecut::WeightType;
use edgecut_mobile::*;
use edgecut_tests::{minilm, smollm_gguf};
use EdgecutStatus::*;

mod common;
use common::{embed, greedy, last_error, open};

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
    let opts = greedy(8);
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
    let opts = greedy(6);
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
    let opts = greedy(chat_fx["greedy"].as_array().unwrap().len() as u32);
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
fn generation_follows_a_constraint() {
    let h = open(&smollm_gguf());
    let opts = greedy(8);
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
    edgecut_model_close(h);
}

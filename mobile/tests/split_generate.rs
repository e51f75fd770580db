//! Split decoding through the C ABI (called from Rust as C would): a SmolLM2 split handle
//! generates through a real `edgecut serve` on loopback exactly what `edgecut_generate` gives
//! locally (f32 on the wire), keeps the conversation across calls, and finishes on the device,
//! saying so, when the server is gone.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;

use edgecut_mobile::*;
use edgecut_tests::smollm_gguf;

mod common;
use common::{greedy, last_error};

fn serve(model: &Path) -> (std::process::Child, String) {
    edgecut_tests::serve_model(model)
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

fn opts() -> EdgecutGenerateOptions {
    greedy(24)
}

/// `edgecut_split_generate`'s text and fallback flag.
fn split_generate(s: EdgecutSplit, prompt: &CStr) -> (String, u8) {
    let mut out = Vec::new();
    let mut fell = 9u8;
    // SAFETY: valid prompt, options, callback, user and out-pointers for the call.
    let st = unsafe {
        edgecut_split_generate(
            s,
            prompt.as_ptr(),
            &opts(),
            Some(collect),
            &mut out as *mut Vec<u8> as *mut c_void,
            std::ptr::null(),
            &mut fell,
        )
    };
    assert_eq!(st, EdgecutStatus::EDGECUT_STATUS_OK, "{}", last_error());
    (String::from_utf8(out).unwrap(), fell)
}

#[test]
fn a_decoder_split_generates_what_a_local_run_does_and_survives_the_server() {
    let path = CString::new(smollm_gguf().to_str().unwrap()).unwrap();
    let mut model = 0;
    // SAFETY: a valid path and out-pointer.
    let st = unsafe { edgecut_model_open(path.as_ptr(), std::ptr::null(), &mut model) };
    assert_eq!(st, EdgecutStatus::EDGECUT_STATUS_OK, "{}", last_error());
    let prompt = c"The three largest cities of Europe are";
    let mut local = Vec::new();
    // SAFETY: as above.
    let st = unsafe {
        edgecut_generate(
            model,
            prompt.as_ptr(),
            &opts(),
            Some(collect),
            &mut local as *mut Vec<u8> as *mut c_void,
            std::ptr::null(),
        )
    };
    assert_eq!(st, EdgecutStatus::EDGECUT_STATUS_OK);
    let local = String::from_utf8(local).unwrap();

    let (mut server, addr) = serve(&smollm_gguf());
    let addr = CString::new(addr).unwrap();
    let o = EdgecutSplitOptions {
        server: addr.as_ptr(),
        token: std::ptr::null(),
        cut: 15,
        encoding: 2,
        timeout_ms: 0,
    };
    let mut split = 0;
    // SAFETY: valid options and out-pointer.
    let st = unsafe { edgecut_split_open(model, &o, &mut split) };
    assert_eq!(st, EdgecutStatus::EDGECUT_STATUS_OK, "{}", last_error());
    let (text, fell) = split_generate(split, prompt);
    assert_eq!(fell, 0, "{}", last_error());
    assert_eq!(text, local);
    // The server goes: the same prompt again finishes on the device, and says so.
    let _ = server.kill();
    let _ = server.wait();
    let (text, fell) = split_generate(split, prompt);
    assert_eq!(fell, 1);
    assert!(
        last_error().contains("finished on the device"),
        "{}",
        last_error()
    );
    assert_eq!(text, local);
    // Embedding on a decoder split, and a cut outside the model, are statuses.
    let mut v = [0f32; 8];
    // SAFETY: valid text and buffers.
    let st = unsafe {
        edgecut_split_embed(
            split,
            c"x".as_ptr(),
            v.as_mut_ptr(),
            8,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(st, EdgecutStatus::EDGECUT_STATUS_INVALID_ARGUMENT);
    let bad = EdgecutSplitOptions { cut: 30, ..o };
    let mut h = 0;
    // SAFETY: valid options and out-pointer.
    let st = unsafe { edgecut_split_open(model, &bad, &mut h) };
    assert_eq!(st, EdgecutStatus::EDGECUT_STATUS_INVALID_ARGUMENT);
    assert_eq!(edgecut_split_close(split), EdgecutStatus::EDGECUT_STATUS_OK);
    assert_eq!(edgecut_model_close(model), EdgecutStatus::EDGECUT_STATUS_OK);
}

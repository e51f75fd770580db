//! What the C ABI tests share: the last error, greedy options, opening a model, embedding into
//! a buffer.
// Each test binary uses some of these.
#![allow(dead_code)]

use std::ffi::{c_char, CStr, CString};
use std::ptr::null;

use edgecut_mobile::*;
use EdgecutStatus::*;

pub fn last_error() -> String {
    // SAFETY: edgecut_last_error never returns null and the string lives until the next call.
    unsafe { CStr::from_ptr(edgecut_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Greedy generation of at most `max_tokens` tokens, everything else at its default.
pub fn greedy(max_tokens: u32) -> EdgecutGenerateOptions {
    EdgecutGenerateOptions {
        max_tokens,
        temperature: 0.0,
        top_k: 0,
        top_p: 0.0,
        repetition_penalty: 0.0,
        seed: 0,
        chat: 0,
        constraint_kind: 0,
        constraint: null(),
    }
}

pub fn open(path: &std::path::Path) -> EdgecutModel {
    let p = CString::new(path.to_str().unwrap()).unwrap();
    let mut h = 0;
    // SAFETY: valid string, null options (defaults), a writable handle.
    let s = unsafe { edgecut_model_open(p.as_ptr(), null(), &mut h) };
    assert_eq!(s, EDGECUT_STATUS_OK, "{}", last_error());
    assert_ne!(h, 0);
    h
}

pub fn embed(
    h: EdgecutModel,
    texts: &[&CStr],
    out: &mut [f32],
    needed: &mut usize,
) -> EdgecutStatus {
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

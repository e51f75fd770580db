//! Split inference through the C ABI: the device runs the first stages of a model and
//! `edgecut serve` the rest ([`edgecut_split_open`]). An encoder embeds
//! ([`edgecut_split_embed`]); a decoder generates token by token ([`edgecut_split_generate`],
//! the conversation kept across calls). When the server is unreachable, refuses or fails, the
//! device finishes alone, losing nothing, and the call says so. Plain TCP (the mobile library
//! carries no TLS, so its Android build needs no C toolchain).

use std::collections::HashMap;
use std::ffi::c_char;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use edgecut::split::SplitDecoder;
use edgecut::{Llm, SamplingParams, Session};
use edgecut_split::{ClientConfig, DecoderLink, SplitClient};
use edgecut_wire::Encoding;

use crate::EdgecutStatus::*;
use crate::{
    close_handle, fail, guard, handle, lookup, text, EdgecutModel, EdgecutStatus, Failure, Loaded,
    Res, NEXT_HANDLE,
};

/// How to split; zero-initialised fields take the defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EdgecutSplitOptions {
    /// `host:port` of `edgecut serve` (NUL-terminated; required).
    pub server: *const c_char,
    /// The access token (NUL-terminated), or null for none.
    pub token: *const c_char,
    /// Stages run on the device (K). An encoder: 0 sends the token ids; the stage count runs
    /// everything on the device. A decoder: blocks on the device, 1 to its blocks - 1.
    pub cut: u32,
    /// Activation encoding on the wire: 0 int8 with per-32 scales (the default), 1 f16, 2 f32
    /// (exact: the split result equals the local one).
    pub encoding: u32,
    /// Connect and per-request timeout in milliseconds; 0: 10 000.
    pub timeout_ms: u32,
}

/// A split handle (0 is never a valid handle).
pub type EdgecutSplit = u64;

/// What a split handle holds: an encoder's client, or a decoder's conversation and link.
enum Client {
    Encoder(SplitClient<Session>),
    Decoder {
        llm: Llm,
        conversation: SplitDecoder,
        link: DecoderLink,
    },
}

fn splits() -> &'static Mutex<HashMap<u64, Arc<Mutex<Client>>>> {
    static R: OnceLock<Mutex<HashMap<u64, Arc<Mutex<Client>>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Opens a split of a model with `edgecut serve` (running the same model) and writes its handle
/// to `out`: an encoder's for [`edgecut_split_embed`], a decoder's for
/// [`edgecut_split_generate`]. Nothing is sent until the first call (the connection is lazy, and re-made after a failure). The
/// split keeps the model alive. Thread-safe.
///
/// # Safety
/// `options` points to an `EdgecutSplitOptions` whose strings are NUL-terminated (or null where
/// allowed); `out` points to writable memory for a handle.
#[no_mangle]
pub unsafe extern "C" fn edgecut_split_open(
    model: EdgecutModel,
    options: *const EdgecutSplitOptions,
    out: *mut EdgecutSplit,
) -> EdgecutStatus {
    guard(|| {
        if out.is_null() || options.is_null() {
            return fail(EDGECUT_STATUS_NULL_POINTER, "options or out is null");
        }
        // SAFETY: non-null and pointing to an EdgecutSplitOptions (the contract).
        let o = unsafe { *options };
        // SAFETY: checked for null inside.
        let server = unsafe { text(o.server, "server") }?.to_string();
        let token = if o.token.is_null() {
            Vec::new()
        } else {
            // SAFETY: non-null and NUL-terminated (the contract).
            unsafe { text(o.token, "token") }?.as_bytes().to_vec()
        };
        let encoding = match o.encoding {
            0 => Encoding::Int8,
            1 => Encoding::F16,
            2 => Encoding::F32,
            e => {
                return fail(
                    EDGECUT_STATUS_INVALID_ARGUMENT,
                    format!("encoding {e} is not 0 (int8), 1 (f16) or 2 (f32)"),
                )
            }
        };
        let m = lookup(model)?;
        let timeout = if o.timeout_ms == 0 {
            10_000
        } else {
            o.timeout_ms
        };
        let cfg = ClientConfig {
            server,
            token,
            cut: o.cut as usize,
            encoding,
            timeout: Duration::from_millis(timeout.into()),
            tls: None,
            auto: None,
        };
        let client = match &*m {
            Loaded::Encoder(session) => {
                let stages = session.stage_count();
                if o.cut as usize > stages {
                    return fail(
                        EDGECUT_STATUS_INVALID_ARGUMENT,
                        format!("cut {} is not in 0..={stages} (the model's stages)", o.cut),
                    );
                }
                Client::Encoder(SplitClient::new(session.clone(), cfg))
            }
            Loaded::Decoder(llm) => {
                // The facade's SplitDecoder also takes the block count (all here); a split
                // handle keeps the range it documents.
                let n = llm.blocks();
                if o.cut as usize >= n {
                    return fail(
                        EDGECUT_STATUS_INVALID_ARGUMENT,
                        format!(
                            "cut {}: a split decoder runs 1 to {} blocks on the device",
                            o.cut,
                            n - 1
                        ),
                    );
                }
                let conversation = SplitDecoder::new(llm, o.cut as usize)
                    .map_err(|e| Failure(EDGECUT_STATUS_INVALID_ARGUMENT, e.to_string()))?;
                Client::Decoder {
                    llm: llm.clone(),
                    conversation,
                    link: DecoderLink::new(llm, cfg, SamplingParams::default()),
                }
            }
            _ => {
                return fail(
                    EDGECUT_STATUS_MODEL_ERROR,
                    "a kind of model the C ABI lacks",
                )
            }
        };
        let h = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
        splits()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(h, Arc::new(Mutex::new(client)));
        // SAFETY: checked non-null above.
        unsafe { *out = h };
        Ok(())
    })
}

fn split_of(h: EdgecutSplit) -> Res<Arc<Mutex<Client>>> {
    handle(splits(), h, "split")
}

/// Embeds `text` split with the server into `out` (`out_len` floats; too small: the size goes
/// to `needed` and `EDGECUT_STATUS_BUFFER_TOO_SMALL` is returned, as [`crate::edgecut_embed`]).
/// `fell_back` (if not null) is set to 1 when the text was embedded on the device alone (the
/// server unreachable, refusing or failing: [`crate::edgecut_last_error`] then holds the
/// reason, and the status is still OK), else 0. One thread at a time per split handle.
///
/// # Safety
/// `text` is a NUL-terminated string; `out` is null or has room for `out_len` floats; `needed`
/// and `fell_back` are null or writable.
#[no_mangle]
pub unsafe extern "C" fn edgecut_split_embed(
    split: EdgecutSplit,
    text: *const c_char,
    out: *mut f32,
    out_len: usize,
    needed: *mut usize,
    fell_back: *mut u8,
) -> EdgecutStatus {
    let mut reason = None;
    let status = guard(|| {
        let c = split_of(split)?;
        // SAFETY: checked for null inside.
        let t = unsafe { crate::text(text, "text") }?;
        let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
        let Client::Encoder(c) = &mut *c else {
            return fail(
                EDGECUT_STATUS_INVALID_ARGUMENT,
                "this split runs a decoder; use edgecut_split_generate",
            );
        };
        let o = c
            .embed(&[t])
            .map_err(|e| Failure(EDGECUT_STATUS_MODEL_ERROR, e.to_string()))?;
        let v = o.vectors.first().map(Vec::as_slice).unwrap_or_default();
        // SAFETY: `out` and `needed` as the caller's contract says.
        let dst = unsafe {
            crate::output(out, out_len, needed, v.len(), || {
                format!("the vector has {}", v.len())
            })
        }?;
        dst.copy_from_slice(v);
        if !fell_back.is_null() {
            // SAFETY: non-null and writable (the caller's contract).
            unsafe { *fell_back = u8::from(o.fell_back.is_some()) };
        }
        reason = o.fell_back;
        Ok(())
    });
    if let Some(r) = reason {
        crate::set_error(&format!("ran on the device: {r}"));
    }
    status
}

/// Generates after `prompt` on a decoder split (as [`crate::edgecut_generate`]: `options`,
/// `callback`, `user` and `cancel` alike; `chat` wraps the prompt in the chat template). The
/// conversation stays in the handle: a prompt that starts with the conversation so far (a
/// chat's next turn) computes only its new tokens, here and on the server. `fell_back` (if not
/// null) is set to 1 when the server was lost, refused or failed and the device finished alone
/// (the reply is the one a local run gives; [`crate::edgecut_last_error`] holds the reason and
/// the status is still OK), else 0. The next call tries the server again. One thread at a time
/// per split handle.
///
/// # Safety
/// As [`crate::edgecut_generate`], with `fell_back` null or writable.
#[no_mangle]
pub unsafe extern "C" fn edgecut_split_generate(
    split: EdgecutSplit,
    prompt: *const c_char,
    options: *const crate::generate::EdgecutGenerateOptions,
    callback: crate::generate::EdgecutPieceCallback,
    user: *mut std::ffi::c_void,
    cancel: *const i32,
    fell_back: *mut u8,
) -> EdgecutStatus {
    let mut reason = None;
    let status = guard(|| {
        let c = split_of(split)?;
        // SAFETY: checked for null inside.
        let prompt = unsafe { crate::text(prompt, "prompt") }?;
        let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
        let Client::Decoder {
            llm,
            conversation,
            link,
        } = &mut *c
        else {
            return fail(
                EDGECUT_STATUS_INVALID_ARGUMENT,
                "this split runs an encoder; use edgecut_split_embed",
            );
        };
        // SAFETY: null or pointing to an EdgecutGenerateOptions (the caller's contract).
        let (opts, chat) = unsafe { crate::generate::generate_options(options, llm) }?;
        let model = |e: edgecut::Error| Failure(EDGECUT_STATUS_MODEL_ERROR, e.to_string());
        let text = if chat {
            llm.render_chat(&[edgecut::Message::new("user", prompt)])
                .map_err(model)?
        } else {
            prompt.to_string()
        };
        let ids = llm.tokenize(&text).map_err(model)?;
        link.set_sampling(opts.sampling.clone());
        let mut fell = None;
        // SAFETY: the caller's contract on `callback`, `user` and `cancel`.
        unsafe {
            crate::generate::stream(callback, user, cancel, |on_piece| {
                conversation
                    .generate(&ids, &opts, link, on_piece)
                    .map(|g| fell = g.fell_back)
            })
        }?;
        if !fell_back.is_null() {
            // SAFETY: non-null and writable (the caller's contract).
            unsafe { *fell_back = u8::from(fell.is_some()) };
        }
        reason = fell.map(|(at, why)| format!("after {at} tokens: {why}"));
        Ok(())
    });
    if let Some(r) = reason {
        crate::set_error(&format!("finished on the device: {r}"));
    }
    status
}

/// Closes a split handle (its connection closes). Thread-safe.
#[no_mangle]
pub extern "C" fn edgecut_split_close(split: EdgecutSplit) -> EdgecutStatus {
    guard(|| close_handle(splits(), split, "split"))
}

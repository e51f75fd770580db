//! Generation through the C ABI: one-shot generation on a model handle
//! ([`edgecut_generate`], a fresh KV cache per call) and chat handles ([`EdgecutChat`]) that
//! keep a conversation's history in one KV cache across turns, so each turn computes only its
//! new tokens.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use edgecut::{Chat, Constraint, GenerateOptions, Llm, SamplingParams};

use crate::EdgecutStatus::*;
use crate::{
    close_handle, fail, guard, handle, lookup, text, EdgecutModel, EdgecutStatus, Failure, Loaded,
    Res, NEXT_HANDLE,
};

/// How to generate; zero-initialised means greedy with 256 tokens at most.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EdgecutGenerateOptions {
    /// Most tokens to generate; 0: 256.
    pub max_tokens: u32,
    /// Temperature; 0: greedy.
    pub temperature: f32,
    /// Sample among the k most likely tokens; 0: all.
    pub top_k: u32,
    /// Sample among the most likely tokens holding this probability; 0 or 1: all.
    pub top_p: f32,
    /// Repetition penalty; 0 or 1: off.
    pub repetition_penalty: f32,
    /// Random seed.
    pub seed: u64,
    /// Nonzero: wrap the prompt in the model's chat template as one user message.
    pub chat: u8,
    /// What the output must match: 0 nothing (free text), 1 the JSON schema in `constraint`,
    /// 2 the regular expression in `constraint`, 3 the grammar in `constraint` (llguidance's
    /// Lark-like syntax), 4 any JSON object.
    pub constraint_kind: u32,
    /// The schema (JSON text), expression or grammar, NUL-terminated; null for kinds 0 and 4.
    /// A constraint that cannot be compiled is `EDGECUT_STATUS_INVALID_ARGUMENT` naming why.
    pub constraint: *const c_char,
}

/// Receives each piece of generated text (`len` bytes of UTF-8, not NUL-terminated, valid only
/// during the call); returns nonzero to stop generating.
pub type EdgecutPieceCallback =
    Option<unsafe extern "C" fn(piece: *const c_char, len: usize, user: *mut c_void) -> c_int>;

/// Generates text after `prompt` with a decoder, calling `callback` with each piece as it is
/// produced (`callback` returns nonzero to stop; the call then returns `EDGECUT_STATUS_OK`).
/// `options` may be null (greedy, 256 tokens). `cancel` may be null; when not, generation stops
/// with `EDGECUT_STATUS_CANCELLED` as soon as another thread sets `*cancel` to nonzero.
/// Thread-safe: each call has its own KV cache, so several generations may share a handle; the
/// callback runs on the calling thread.
///
/// # Safety
/// `prompt` is a NUL-terminated string; `options` is null or points to an
/// `EdgecutGenerateOptions`; `cancel` is null or points to an `int32_t` that stays valid for the
/// call and is written atomically by other threads; `callback` is safe to call with `user`.
#[no_mangle]
pub unsafe extern "C" fn edgecut_generate(
    model: EdgecutModel,
    prompt: *const c_char,
    options: *const EdgecutGenerateOptions,
    callback: EdgecutPieceCallback,
    user: *mut c_void,
    cancel: *const i32,
) -> EdgecutStatus {
    guard(|| {
        let m = lookup(model)?;
        let llm = decoder(&m)?;
        // SAFETY: checked for null inside.
        let prompt = unsafe { text(prompt, "prompt") }?;
        // SAFETY: null or pointing to an EdgecutGenerateOptions (the caller's contract).
        let (opts, chat) = unsafe { generate_options(options, llm) }?;
        let text = if chat {
            llm.render_chat(&[edgecut::Message::new("user", prompt)])
                .map_err(model_error)?
        } else {
            prompt.to_string()
        };
        let ids = llm.tokenize(&text).map_err(model_error)?;
        let mut ctx = llm.new_context().map_err(model_error)?;
        // SAFETY: the caller's contract on `callback`, `user` and `cancel`.
        unsafe {
            stream(callback, user, cancel, |on_piece| {
                ctx.generate(&ids, &opts, on_piece).map(|_| ())
            })
        }
    })
}

fn model_error(e: edgecut::Error) -> Failure {
    Failure(EDGECUT_STATUS_MODEL_ERROR, e.to_string())
}

fn decoder(l: &Loaded) -> Res<&Llm> {
    match l {
        Loaded::Decoder(llm) => Ok(llm),
        _ => fail(
            EDGECUT_STATUS_INVALID_ARGUMENT,
            "this model is an encoder; use edgecut_embed",
        ),
    }
}

/// The generation options C passed (null: the defaults), with their constraint compiled for
/// `llm`, and whether to apply the chat template.
///
/// # Safety
/// `options` is null or points to an `EdgecutGenerateOptions` whose `constraint` is null or a
/// NUL-terminated string.
pub(crate) unsafe fn generate_options(
    options: *const EdgecutGenerateOptions,
    llm: &Llm,
) -> Res<(GenerateOptions, bool)> {
    let mut opts = GenerateOptions::default();
    let mut chat = false;
    if !options.is_null() {
        // SAFETY: non-null and pointing to an EdgecutGenerateOptions (the contract).
        let o = unsafe { *options };
        if o.max_tokens > 0 {
            opts.max_tokens = o.max_tokens as usize;
        }
        let nonzero = |v: f32, d: f32| if v == 0.0 { d } else { v };
        opts.sampling = SamplingParams {
            temperature: o.temperature,
            top_k: o.top_k as usize,
            top_p: nonzero(o.top_p, 1.0),
            repetition_penalty: nonzero(o.repetition_penalty, 1.0),
            seed: o.seed,
            ..SamplingParams::default()
        };
        chat = o.chat != 0;
        let source = || {
            // SAFETY: null (refused by name) or NUL-terminated (the contract).
            unsafe { text(o.constraint, "constraint") }
        };
        let constraint = match o.constraint_kind {
            0 => None,
            1 => {
                let schema = serde_json::from_str(source()?).map_err(|e| {
                    Failure(
                        EDGECUT_STATUS_INVALID_ARGUMENT,
                        format!("constraint: the JSON schema is not JSON: {e}"),
                    )
                })?;
                Some(Constraint::JsonSchema(schema))
            }
            2 => Some(Constraint::Regex(source()?.to_string())),
            3 => Some(Constraint::Grammar(source()?.to_string())),
            4 => Some(Constraint::JsonObject),
            k => {
                return fail(
                    EDGECUT_STATUS_INVALID_ARGUMENT,
                    format!("constraint_kind {k} is not 0 to 4"),
                )
            }
        };
        if let Some(c) = constraint {
            let guide = llm
                .guide(&c)
                .map_err(|e| Failure(EDGECUT_STATUS_INVALID_ARGUMENT, e.to_string()))?;
            opts = opts.with_guide(Some(guide));
        }
    }
    opts.sampling
        .validate()
        .map_err(|e| Failure(EDGECUT_STATUS_INVALID_ARGUMENT, e.to_string()))?;
    Ok((opts, chat))
}

/// Runs `generate` with a piece handler that calls `callback` and watches `cancel`.
///
/// # Safety
/// `callback` is safe to call with `user`; `cancel` is null or valid for the call and written
/// atomically by other threads.
pub(crate) unsafe fn stream(
    callback: EdgecutPieceCallback,
    user: *mut c_void,
    cancel: *const i32,
    generate: impl FnOnce(&mut dyn FnMut(&str) -> bool) -> edgecut::Result<()>,
) -> Res {
    // SAFETY: `cancel` is null or valid for the call and written atomically (the contract);
    // AtomicI32 has the layout of i32.
    let flag: Option<&AtomicI32> = unsafe { (cancel as *const AtomicI32).as_ref() };
    let mut cancelled = false;
    let mut on_piece = |piece: &str| -> bool {
        if flag.is_some_and(|f| f.load(Ordering::Relaxed) != 0) {
            cancelled = true;
            return false;
        }
        match callback {
            // SAFETY: the piece is valid for the call; `user` is the caller's.
            Some(cb) => unsafe { cb(piece.as_ptr() as *const c_char, piece.len(), user) == 0 },
            None => true,
        }
    };
    generate(&mut on_piece).map_err(model_error)?;
    if cancelled || flag.is_some_and(|f| f.load(Ordering::Relaxed) != 0) {
        return fail(EDGECUT_STATUS_CANCELLED, "generation was cancelled");
    }
    Ok(())
}

/// A chat handle (0 is never a valid handle): a conversation on a decoder whose history stays
/// in its KV cache across turns.
pub type EdgecutChat = u64;

fn chats() -> &'static Mutex<HashMap<u64, Arc<Mutex<Chat>>>> {
    static R: OnceLock<Mutex<HashMap<u64, Arc<Mutex<Chat>>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

fn chat_of(h: EdgecutChat) -> Res<Arc<Mutex<Chat>>> {
    handle(chats(), h, "chat")
}

/// Opens a chat on a decoder with the model's chat template, with an optional system message
/// (`system` may be null), and writes its handle to `out`. The chat keeps the model alive; it
/// has its own KV cache (the model's context length). Thread-safe.
///
/// # Safety
/// `system` is null or a NUL-terminated string; `out` points to writable memory for a handle.
#[no_mangle]
pub unsafe extern "C" fn edgecut_chat_open(
    model: EdgecutModel,
    system: *const c_char,
    out: *mut EdgecutChat,
) -> EdgecutStatus {
    guard(|| {
        if out.is_null() {
            return fail(EDGECUT_STATUS_NULL_POINTER, "out is null");
        }
        let m = lookup(model)?;
        let llm = decoder(&m)?;
        let system = if system.is_null() {
            None
        } else {
            // SAFETY: non-null and NUL-terminated (the contract).
            Some(unsafe { text(system, "system") }?)
        };
        let chat = Chat::new(llm, system).map_err(model_error)?;
        let h = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
        chats()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(h, Arc::new(Mutex::new(chat)));
        // SAFETY: checked non-null above.
        unsafe { *out = h };
        Ok(())
    })
}

/// Sends a user message and streams the reply to `callback` (as [`edgecut_generate`]; the
/// `chat` field of `options` is ignored: a chat always uses the template). The reply joins the
/// history; only the new tokens are computed: `reused` (if not null) receives how many prompt
/// tokens came from the cache. A failed turn leaves the history as it was. One thread at a time
/// per chat (a second caller waits).
///
/// # Safety
/// As [`edgecut_generate`], with `message` a NUL-terminated string and `reused` null or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn edgecut_chat_send(
    chat: EdgecutChat,
    message: *const c_char,
    options: *const EdgecutGenerateOptions,
    callback: EdgecutPieceCallback,
    user: *mut c_void,
    cancel: *const i32,
    reused: *mut usize,
) -> EdgecutStatus {
    guard(|| {
        let c = chat_of(chat)?;
        // SAFETY: checked for null inside.
        let message = unsafe { text(message, "message") }?;
        let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
        let llm = c.context().llm().clone();
        // SAFETY: null or pointing to an EdgecutGenerateOptions (the caller's contract).
        let (opts, _) = unsafe { generate_options(options, &llm) }?;
        let mut cached = 0;
        // SAFETY: the caller's contract on `callback`, `user` and `cancel`.
        unsafe {
            stream(callback, user, cancel, |on_piece| {
                c.send(message, &opts, on_piece)
                    .map(|g| cached = g.cached_tokens)
            })
        }?;
        if !reused.is_null() {
            // SAFETY: non-null and writable (the caller's contract).
            unsafe { *reused = cached };
        }
        Ok(())
    })
}

/// Writes to `out` how many tokens of the conversation are in the chat's KV cache (what the
/// next turn does not recompute). Thread-safe.
///
/// # Safety
/// `out` points to writable memory for a `size_t`.
#[no_mangle]
pub unsafe extern "C" fn edgecut_chat_cached_tokens(
    chat: EdgecutChat,
    out: *mut usize,
) -> EdgecutStatus {
    guard(|| {
        if out.is_null() {
            return fail(EDGECUT_STATUS_NULL_POINTER, "out is null");
        }
        let c = chat_of(chat)?;
        let n = c
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .context()
            .tokens()
            .len();
        // SAFETY: checked non-null above.
        unsafe { *out = n };
        Ok(())
    })
}

/// Closes a chat (its KV cache is freed when a turn running on it returns). Thread-safe.
#[no_mangle]
pub extern "C" fn edgecut_chat_close(chat: EdgecutChat) -> EdgecutStatus {
    guard(|| close_handle(chats(), chat, "chat"))
}

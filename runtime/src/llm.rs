//! Text generation with a decoder: [`Llm`] holds the model, [`Context`] holds one
//! conversation's KV cache, and [`Chat`] renders messages with the model's chat template and
//! keeps the history in that cache.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use edgecut_backends::{Device, DeviceKind, KvType};
use edgecut_format::{ChatTemplate, GgufFile, Message, TemplateTools, Tokenizer};
use edgecut_models::{Decoder, KvCache, Logits};

pub use edgecut_models::SamplingParams;

use crate::draw::Draw;
pub use crate::generate_options::{Finish, GenerateOptions, Generation, TokenLogprob};
use crate::generation::decode_loop;
use crate::guide::{Constraint, Guide, Guides};
use crate::{Error, Result, SharedDevice};

/// Context length used when none is asked for (and the model allows it): enough for long
/// chats while keeping the KV cache small on edge devices.
pub const DEFAULT_CONTEXT: usize = 2048;

/// How to open a decoder: `LlmOptions::default()` and `with_*` setters (fields may be added in
/// later versions).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LlmOptions {
    /// Device to run on.
    pub device: DeviceKind,
    /// Threads per op; 0 picks `EDGECUT_THREADS` when set, else one per core this process may
    /// use.
    pub threads: usize,
    /// Positions of each context's KV cache; `None`: the model's context length, at most
    /// [`DEFAULT_CONTEXT`].
    pub context: Option<usize>,
    /// A device shared with other models (its thread pool); `device` and `threads` are then
    /// unused.
    pub shared_device: Option<SharedDevice>,
    /// How the KV cache stores keys and values: f16 (the default: half the memory and the
    /// reads) or f32 (the values as computed, for results that must match an f32 reference to
    /// its last digits; the CPU only).
    pub kv_type: KvType,
}

impl LlmOptions {
    /// The device to run on.
    pub fn with_device(mut self, device: DeviceKind) -> Self {
        self.device = device;
        self
    }

    /// Threads per op (0: one per core).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Positions of each context (`None`: the model's, at most [`DEFAULT_CONTEXT`]).
    pub fn with_context(mut self, context: Option<usize>) -> Self {
        self.context = context;
        self
    }

    /// How the KV cache stores keys and values (see [`LlmOptions::kv_type`]).
    pub fn with_kv_type(mut self, kv_type: KvType) -> Self {
        self.kv_type = kv_type;
        self
    }

    /// Runs on `device`, shared with other models.
    pub fn with_shared_device(mut self, device: SharedDevice) -> Self {
        self.shared_device = Some(device);
        self
    }
}

impl Default for LlmOptions {
    fn default() -> Self {
        LlmOptions {
            device: DeviceKind::Auto,
            threads: 0,
            context: None,
            shared_device: None,
            kv_type: KvType::F16,
        }
    }
}

/// An open decoder: a cheap handle (clones share the model). `Send + Sync`: share it between
/// threads; each conversation has its own [`Context`], which holds a handle of its own, so
/// contexts and chats can live apart from the `Llm` they came from.
#[derive(Clone)]
pub struct Llm {
    pub(crate) inner: Arc<LlmInner>,
}

pub(crate) struct LlmInner {
    pub(crate) model: Decoder,
    pub(crate) tokenizer: Arc<Tokenizer>,
    template: Option<ChatTemplate>,
    /// The vocabulary as the constraint engine reads it, built at the first [`Llm::guide`].
    guides: std::sync::OnceLock<Guides>,
    device: Device,
    context: usize,
    id: std::sync::OnceLock<crate::ModelId>,
    longest_token: std::sync::OnceLock<usize>,
}

impl std::fmt::Debug for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Llm({:?} on {})", self.inner.model, self.inner.device)
    }
}

impl Llm {
    /// Opens a decoder model file (any architecture of the decoder spec table).
    pub fn open(path: impl AsRef<Path>, opts: &LlmOptions) -> Result<Llm> {
        Self::from_file(Arc::new(GgufFile::open(path.as_ref())?), opts)
    }

    /// A decoder on a model file already open.
    pub fn from_file(file: Arc<GgufFile>, opts: &LlmOptions) -> Result<Llm> {
        let device = crate::device::open_for(
            edgecut_models::Kind::Decoder,
            opts.device,
            opts.threads,
            opts.shared_device.as_ref(),
        )?;
        let mut model = Decoder::load(file.clone(), &device)?;
        model.config.kv_type = opts.kv_type;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let template = ChatTemplate::from_gguf(&file, &tokenizer).ok();
        let max = model.config.context;
        let context = match opts.context {
            None => max.min(DEFAULT_CONTEXT),
            Some(n) if (2..=max).contains(&n) => n,
            Some(n) => {
                return Err(Error::Input(format!(
                    "context of {n} tokens is outside 2..={max} (the model's context length)"
                )))
            }
        };
        Ok(Llm {
            inner: Arc::new(LlmInner {
                model,
                tokenizer: Arc::new(tokenizer),
                template,
                guides: std::sync::OnceLock::new(),
                device,
                context,
                id: std::sync::OnceLock::new(),
                longest_token: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The device it runs on, in words.
    pub fn device(&self) -> String {
        self.inner.device.to_string()
    }

    /// Positions of each context.
    pub fn context_len(&self) -> usize {
        self.inner.context
    }

    /// Values per position between blocks (what a split decoder sends per token).
    pub fn hidden_size(&self) -> usize {
        self.inner.model.config.hidden
    }

    /// Blocks (layers) of the model: a split decoder's cut is in `1..blocks`.
    pub fn blocks(&self) -> usize {
        self.inner.model.config.layers
    }

    /// Tokens of the vocabulary (the length of a row of logits).
    pub fn vocab_size(&self) -> usize {
        self.inner.model.config.vocab
    }

    /// Bytes of weights held outside the file map (re-quantized or repacked copies, norms).
    pub fn owned_bytes(&self) -> usize {
        self.inner.model.owned_bytes()
    }

    /// The model file's identity (a hash of its metadata and tensors, computed once).
    pub fn model_id(&self) -> crate::ModelId {
        *self
            .inner
            .id
            .get_or_init(|| self.inner.model.file().identity())
    }

    /// Bytes of one context's KV cache.
    pub fn kv_cache_bytes(&self) -> usize {
        self.inner.model.kv_bytes(self.inner.context)
    }

    /// Token ids of `text` as a prompt (with a leading BOS when the model asks for one).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.tokenizer.encode(text, true, None)?.ids)
    }

    /// Bytes of text past which a prompt cannot fit the context, whatever it says: no token
    /// stands for more bytes than the vocabulary's longest (plus 3, for a SentencePiece word
    /// mark that may stand for one byte of space). A server refuses such text before
    /// tokenizing it. `usize::MAX` where the vocabulary does not give its tokens' bytes.
    pub fn max_prompt_bytes(&self) -> usize {
        let longest = *self.inner.longest_token.get_or_init(|| {
            let t = &self.inner.tokenizer;
            (0..t.vocab_size() as u32)
                .map(|id| t.token_bytes(id).map_or(usize::MAX, |b| b.len()))
                .max()
                .unwrap_or(usize::MAX)
        });
        longest.saturating_add(3).saturating_mul(self.inner.context)
    }

    /// The bytes one token stands for (a special token's text; a byte-fallback piece its byte:
    /// possibly part of a character). Empty for an id outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let t = &self.inner.tokenizer;
        t.token_bytes(id)
            .or_else(|| t.decode(&[id], false).ok().map(String::into_bytes))
            .unwrap_or_default()
    }

    /// The text of token ids, special tokens left out (as generation shows it).
    pub fn detokenize(&self, ids: &[u32]) -> Result<String> {
        Ok(self.inner.tokenizer.decode(ids, true)?)
    }

    /// Whether the file has a chat template ([`Chat`] needs one).
    pub fn has_chat_template(&self) -> bool {
        self.inner.template.is_some()
    }

    /// Renders `messages` with the model's chat template, ending with the assistant's turn.
    pub fn render_chat(&self, messages: &[Message]) -> Result<String> {
        self.render_chat_with_tools(messages, None)
    }

    /// [`Llm::render_chat`] with the tools the model may call, for a template that takes
    /// them ([`Llm::template_tools`]).
    pub fn render_chat_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
    ) -> Result<String> {
        let t = self.inner.template.as_ref().ok_or_else(|| {
            Error::Input("the model file has no chat template (tokenizer.chat_template)".into())
        })?;
        t.render_with_tools(messages, tools, true)
            .map_err(|e| Error::Input(e.to_string()))
    }

    /// How the chat template treats tools ([`TemplateTools::Ignored`] without a template).
    pub fn template_tools(&self) -> TemplateTools {
        self.inner
            .template
            .as_ref()
            .map_or(TemplateTools::Ignored, ChatTemplate::tools)
    }

    /// Compiles a constraint for this model's vocabulary, for [`GenerateOptions::with_guide`]:
    /// a schema, regular expression or grammar that cannot be compiled, or is too large, is an
    /// [`Error::Input`] saying why. The first call also reads the vocabulary (tens of
    /// milliseconds); later ones compile only the constraint.
    pub fn guide(&self, c: &Constraint) -> Result<Guide> {
        let inner = &self.inner;
        if let Some(g) = inner.guides.get() {
            return g.compile(c);
        }
        // Not kept when it fails (a vocabulary the engine cannot read fails every time, and
        // says why each time).
        let g = Guides::new(inner.tokenizer.clone(), &inner.model.config.stop_ids)?;
        inner.guides.get_or_init(|| g).compile(c)
    }

    /// A new conversation with its own KV cache ([`Llm::kv_cache_bytes`] bytes).
    pub fn new_context(&self) -> Result<Context> {
        Ok(Context {
            llm: self.clone(),
            cache: self.inner.model.new_cache(self.inner.context)?,
            tokens: Vec::new(),
        })
    }

    /// Generates a continuation of `prompt` (plain text, no chat template) in a fresh context,
    /// calling `on_text` with each piece; `on_text` returns `false` to stop.
    pub fn generate(
        &self,
        prompt: &str,
        opts: &GenerateOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let ids = self.tokenize(prompt)?;
        self.new_context()?.generate(&ids, opts, on_text)
    }
}

/// One conversation: a KV cache and the tokens it holds. Generating from a prompt that starts
/// with tokens already in the cache computes only the rest.
pub struct Context {
    pub(crate) llm: Llm,
    pub(crate) cache: KvCache,
    pub(crate) tokens: Vec<u32>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Context({} of {} positions)",
            self.tokens.len(),
            self.cache.capacity()
        )
    }
}

impl Context {
    /// The model this context runs.
    pub fn llm(&self) -> &Llm {
        &self.llm
    }

    /// Runs `ids` after the tokens already cached, keeps them in the cache, and returns the
    /// logits of every position, `[ids.len(), vocab]` (for scoring and evaluation).
    pub fn logits(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let l = self
            .llm
            .inner
            .model
            .forward(&mut self.cache, ids, Logits::All)?;
        self.tokens.extend_from_slice(ids);
        Ok(l)
    }

    /// [`Context::logits`] of the last position only, `[vocab]` (what generation computes).
    pub fn last_logits(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let l = self
            .llm
            .inner
            .model
            .forward(&mut self.cache, ids, Logits::Last)?;
        self.tokens.extend_from_slice(ids);
        Ok(l)
    }

    /// The tokens whose keys and values are cached.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Makes this context hold what `src` holds, its tokens and their keys and values copied
    /// (a conversation forked: several replies to one prompt compute it once). Refused where
    /// the backend cannot copy a cache (this context is then unchanged).
    pub fn copy_from(&mut self, src: &Context) -> Result<()> {
        if !Arc::ptr_eq(&self.llm.inner, &src.llm.inner) {
            return Err(Error::Input(
                "the context belongs to another model (contexts run only with their own)".into(),
            ));
        }
        self.llm
            .inner
            .model
            .copy_cache(&src.cache, &mut self.cache)?;
        self.tokens.clone_from(&src.tokens);
        Ok(())
    }

    /// Forgets everything cached.
    pub fn clear(&mut self) {
        self.cache.clear();
        self.tokens.clear();
    }

    /// Generates after `prompt` (token ids). The longest prefix of `prompt` already in the
    /// cache is reused; the rest is computed. Pieces of text go to `on_text` as they are
    /// produced (valid UTF-8 each); it returns `false` to stop.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let model = &self.llm.inner.model;
        let common = start_turn(prompt, &self.tokens, self.cache.capacity(), opts)?;
        let start = Instant::now();
        // A sliding-window cache may keep less than asked (its ring was overwritten).
        let common = self.cache.truncate(common);
        self.tokens.truncate(common);
        let mut logits = model.forward(&mut self.cache, &prompt[common..], Logits::Last)?;
        self.tokens.extend_from_slice(&prompt[common..]);
        let mut draw = Draw::new(opts, &model.config.stop_ids);
        let greedy = draw.is_plain_greedy();
        let llm = self.llm.clone();
        let capacity = self.cache.capacity();
        let (generated, finish, text, prefill) = decode_loop(
            &llm.inner.tokenizer,
            &model.config.stop_ids,
            opts,
            prompt.len(),
            capacity,
            start,
            on_text,
            &mut |prev| {
                if let Some(t) = prev {
                    if greedy {
                        // The choice made where the logits are (a GPU returns 4 bytes).
                        let next = model.forward_greedy(&mut self.cache, t)?;
                        self.tokens.push(t);
                        return Ok((next, false));
                    }
                    let cache = &mut self.cache;
                    logits = draw.beside(|| model.forward(cache, &[t], Logits::Last))?;
                    self.tokens.push(t);
                }
                draw.pick(&mut logits, &self.tokens)
            },
        )?;
        let logprobs = draw.logprobs_of(generated.len());
        Ok(Generation {
            text,
            tokens: generated,
            finish,
            prompt_tokens: prompt.len(),
            cached_tokens: common,
            prefill,
            decode: start.elapsed().saturating_sub(prefill),
            logprobs,
        })
    }
}

/// Checks a turn's prompt and settings against a context of `capacity` positions holding
/// `cached`, and returns how many of the prompt's first tokens the context already holds: the
/// longest common prefix, but never the last prompt token (its logits choose the first new
/// token, so it is always run).
pub(crate) fn start_turn(
    prompt: &[u32],
    cached: &[u32],
    capacity: usize,
    opts: &GenerateOptions,
) -> Result<usize> {
    opts.sampling
        .validate()
        .map_err(|e| Error::Input(e.to_string()))?;
    if prompt.is_empty() {
        return Err(Error::Input("the prompt has no tokens".into()));
    }
    if prompt.len() >= capacity {
        // At least one position must stay free for the first generated token.
        return Err(Error::ContextFull {
            tokens: prompt.len() + 1,
            used: 0,
            capacity,
        });
    }
    if !opts.reuse_cache {
        return Ok(0);
    }
    Ok(cached
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count()
        .min(prompt.len() - 1))
}

/// A long prompt's runs: the chunks [`Decoder::forward`] runs it in, so that a split run groups
/// positions as a local one does (and its numbers are the same).
pub(crate) fn prefill_chunks(ids: &[u32]) -> Vec<&[u32]> {
    ids.chunks(edgecut_models::PREFILL_CHUNK).collect()
}

/// A chat: messages rendered with the model's chat template, the history kept in one
/// [`Context`] so each turn computes only its new tokens.
pub struct Chat {
    ctx: Context,
    messages: Vec<Message>,
}

impl Chat {
    /// A new chat, with an optional system message (the template's default otherwise).
    pub fn new(llm: &Llm, system: Option<&str>) -> Result<Chat> {
        if llm.inner.template.is_none() {
            return Err(Error::Input(
                "the model file has no chat template (tokenizer.chat_template)".into(),
            ));
        }
        Ok(Chat {
            ctx: llm.new_context()?,
            messages: system
                .map(|s| Message::new("system", s))
                .into_iter()
                .collect(),
        })
    }

    /// The messages so far.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The conversation's context (its cached tokens).
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Sends a user message and generates the reply, which joins the history.
    pub fn send(
        &mut self,
        user: &str,
        opts: &GenerateOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        self.messages.push(Message::new("user", user));
        let run = (|| {
            let text = self.ctx.llm.render_chat(&self.messages)?;
            let ids = self.ctx.llm.tokenize(&text)?;
            self.ctx.generate(&ids, opts, on_text)
        })();
        match run {
            Ok(g) => {
                self.messages
                    .push(Message::new("assistant", g.text.clone()));
                Ok(g)
            }
            Err(e) => {
                // Nothing lost: the history is as it was before the call.
                self.messages.pop();
                Err(e)
            }
        }
    }
}

//! Llama-family decoders (Llama 2/3, SmolLM, TinyLlama...): pre-norm blocks of RMSNorm,
//! grouped-query self-attention with rotary position embeddings, and a SwiGLU feed-forward.
//!
//! Paper: Touvron et al., "LLaMA: Open and Efficient Foundation Language Models" (2023); GQA:
//! Ainslie et al. (2023). Reference matched: Hugging Face transformers' `LlamaForCausalLM`.
//!
//! Files follow llama.cpp's `llama` layout, so the q and k rows of each head are in llama.cpp's
//! order and the rotary embedding pairs adjacent values ([`RopeStyle::Interleaved`]).
//! Stages: `embeddings`, `block 0..n-1`, `head` (final norm and the vocabulary projection, tied
//! to the embedding table when the file has no `output.weight`).

use std::ops::Range;
use std::sync::Arc;

use edgecut_backends::Device;
use edgecut_format::gguf::{GgufFile, Value};

use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::stages::{StageGraph, StageOutput};
use crate::weights::Table;

mod on;

/// Hyper-parameters read from the file.
#[derive(Clone, Debug)]
pub struct LlamaConfig {
    /// Hidden size.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Dimension per head.
    pub head_dim: usize,
    /// Blocks.
    pub layers: usize,
    /// Feed-forward size.
    pub ffn: usize,
    /// Vocabulary size (rows of the embedding table).
    pub vocab: usize,
    /// Context length the model was trained for.
    pub context: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Rotary base (`rope.freq_base`).
    pub rope_base: f32,
    /// Linear rotary scaling factor (1 without scaling).
    pub rope_scale: f32,
    /// Values of each head that are rotated.
    pub rope_dims: usize,
    /// Token ids that end generation (EOS, end of turn).
    pub stop_ids: Vec<u32>,
}

impl LlamaConfig {
    /// Reads the configuration of a `llama` file.
    pub fn from_gguf(f: &GgufFile) -> Result<LlamaConfig> {
        let arch = f.architecture()?;
        if arch != "llama" {
            return Err(ModelError::UnsupportedArchitecture {
                architecture: arch.to_string(),
                expected: "a Llama-family decoder (general.architecture = \"llama\")",
            });
        }
        let key = |k: &str| format!("llama.{k}");
        let u = |k: &str| f.get_u64(&key(k)).map(|v| v as usize);
        let (hidden, heads, layers, ffn, context) = (
            u("embedding_length")?,
            u("attention.head_count")?,
            u("block_count")?,
            u("feed_forward_length")?,
            u("context_length")?,
        );
        let kv_heads = u("attention.head_count_kv").unwrap_or(heads);
        let head_dim = u("attention.key_length").unwrap_or(hidden.checked_div(heads).unwrap_or(0));
        let rope_dims = u("rope.dimension_count").unwrap_or(head_dim);
        if heads == 0
            || kv_heads == 0
            || heads % kv_heads != 0
            || head_dim == 0
            || head_dim % 2 != 0
            || rope_dims > head_dim
            || rope_dims % 2 != 0
            || layers == 0
            || context == 0
            || ffn == 0
        {
            return Err(ModelError::Unsupported(format!(
                "bad hyper-parameters: hidden {hidden}, heads {heads}/{kv_heads} of {head_dim} \
                 (rotary {rope_dims}), blocks {layers}, ffn {ffn}, context {context}"
            )));
        }
        let rope_scale = match f.get_str(&key("rope.scaling.type")).ok() {
            None | Some("none") => 1.0,
            Some("linear") => f.get_f64(&key("rope.scaling.factor")).unwrap_or(1.0) as f32,
            Some(other) => {
                return Err(ModelError::Unsupported(format!("rope scaling {other:?}")));
            }
        };
        let id = |k: &str| f.get(k).and_then(Value::as_u64).map(|v| v as u32);
        let mut stop_ids: Vec<u32> = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
            .iter()
            .filter_map(|k| id(k))
            .collect();
        stop_ids.dedup();
        let vocab = f
            .tensor("token_embd.weight")
            .and_then(|t| t.info.dims.get(1).copied())
            .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?
            as usize;
        Ok(LlamaConfig {
            hidden,
            heads,
            kv_heads,
            head_dim,
            layers,
            ffn,
            vocab,
            context,
            eps: f
                .get_f64(&key("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5) as f32,
            rope_base: f.get_f64(&key("rope.freq_base")).unwrap_or(10_000.0) as f32,
            rope_scale,
            rope_dims,
            stop_ids,
        })
    }
}

/// Which logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// The last position's (what generation needs).
    Last,
    /// Every position's, `[tokens, vocab]`.
    All,
}

/// A loaded Llama-family decoder, on the device it was loaded for.
///
/// Stages: [`Llama::embed`] (token ids to vectors), [`Llama::blocks`] (the layers a
/// [`KvCache`] covers, appending to it), [`Llama::head`] (final norm and vocabulary
/// projection). [`Llama::forward`] runs all three; two caches over two layer ranges run a
/// model in two parts (a split between a device and a server) and give the one-range logits.
pub struct Llama {
    /// Hyper-parameters.
    pub config: LlamaConfig,
    /// A serial number of this load: a cache runs only with the model that made it.
    serial: u64,
    file: Arc<GgufFile>,
    embd: Table,
    on: Box<dyn on::Decoder>,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Llama({:?})", self.config)
    }
}

/// Rows per chunk of a long prompt: bounds the activation buffers (about `PREFILL_CHUNK * (2 *
/// ffn + 6 * hidden) * 4` bytes) while keeping matmuls large.
pub const PREFILL_CHUNK: usize = 256;

impl Llama {
    /// Loads a `llama` file for `dev`; the backend prepares the weights (on the CPU: quantized
    /// matrices stay in the map and are multiplied with f32 activations as stored).
    pub fn load(file: Arc<GgufFile>, dev: &Device) -> Result<Llama> {
        let config = LlamaConfig::from_gguf(&file)?;
        let embd = Table::load(&file, "token_embd.weight", config.hidden)?;
        let on = dev.instantiate(on::Load {
            file: &file,
            cfg: &config,
        })?;
        static LOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Ok(Llama {
            config,
            serial: LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            file,
            embd,
            on,
        })
    }

    /// The file the model was loaded from.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Bytes of weights held outside the file map (re-quantized and repacked matrices, norms).
    pub fn owned_bytes(&self) -> usize {
        self.on.owned_bytes()
    }

    /// An empty KV cache of every layer for `positions` positions (at most the model's context).
    pub fn new_cache(&self, positions: usize) -> Result<KvCache> {
        self.new_cache_for(0..self.config.layers, positions)
    }

    /// An empty KV cache of `layers` for `positions` positions: one part of a model run in
    /// parts ([`Llama::blocks`]).
    pub fn new_cache_for(&self, layers: Range<usize>, positions: usize) -> Result<KvCache> {
        let c = &self.config;
        if positions == 0 || positions > c.context {
            return Err(ModelError::Input(format!(
                "context of {positions} positions: the model supports 1 to {}",
                c.context
            )));
        }
        if layers.start >= layers.end || layers.end > c.layers {
            return Err(ModelError::Input(format!(
                "layers {}..{}: the model has 0..{}",
                layers.start, layers.end, c.layers
            )));
        }
        let state = self.on.new_state(layers.clone(), positions)?;
        Ok(KvCache::new(
            self.serial,
            layers,
            c.kv_heads * c.head_dim,
            positions,
            state,
        ))
    }

    /// The model's stages: embeddings, each block, the head (final norm and vocabulary
    /// projection: the last position's logits), with their weight bytes; a block hands on
    /// `hidden` values per token and holds its keys and values (f16) per position. A tied head (no `output.weight`) reads the embedding table,
    /// which then counts for the embeddings.
    pub fn stages(&self) -> StageGraph {
        let c = &self.config;
        let head = StageOutput {
            per_token: 0,
            fixed: c.vocab as u64,
            side_bytes_per_token: 0,
        };
        let names: &[&str] = &["output_norm", "output."];
        // Raw input: a u32 token id per token.
        let mut g = StageGraph::chain(&self.file, c.layers, names, c.hidden as u64, 0, head, 4);
        let kv = KvCache::bytes_for(1, c.kv_heads * c.head_dim, 1) as u64;
        for s in &mut g.stages[1..=c.layers] {
            s.kv_bytes_per_token = kv;
        }
        g
    }

    /// Stage `embeddings`: the vectors of `ids`, `[ids.len(), hidden]`.
    pub fn embed(&self, ids: &[u32]) -> Result<Vec<f32>> {
        // The gather refuses an id past the table (OpError::TokenId).
        let mut x = vec![0f32; ids.len() * self.config.hidden];
        self.embd.gather(&self.file, ids, &mut x)?;
        Ok(x)
    }

    /// Stages `block i` for the layers `cache` covers, on rows `x` (`[rows, hidden]`) at the
    /// positions after what the cache holds; appends their keys and values to it. Fails,
    /// leaving the cache as it was, when the rows do not fit.
    pub fn blocks(&self, cache: &mut KvCache, x: Vec<f32>) -> Result<Vec<f32>> {
        let rows = self.rows(&x)?;
        if cache.owner() != self.serial {
            return Err(ModelError::Input(
                "the KV cache belongs to another model (caches run only with the model that \
                 made them)"
                    .into(),
            ));
        }
        if rows > cache.capacity() - cache.len() {
            return Err(ModelError::ContextFull {
                tokens: rows,
                used: cache.len(),
                capacity: cache.capacity(),
            });
        }
        let pos0 = cache.len();
        let layers = cache.layers();
        let out = self.on.run(cache.state_mut(), layers, x, pos0)?;
        cache.advance(rows);
        Ok(out)
    }

    /// [`Llama::blocks`] for several conversations at once, each with its own cache (all of the
    /// same layers): `xs[i]` runs at the positions after what `caches[i]` holds. The matrix
    /// products of all rows run together (the weights are read once for the batch: what makes
    /// decoding many conversations cheaper than decoding them one by one); attention runs per
    /// conversation. Checks every cache and row count before anything runs.
    pub fn blocks_many(
        &self,
        caches: &mut [&mut KvCache],
        xs: Vec<Vec<f32>>,
    ) -> Result<Vec<Vec<f32>>> {
        if caches.len() != xs.len() || caches.is_empty() {
            return Err(ModelError::Input(format!(
                "{} caches for {} inputs",
                caches.len(),
                xs.len()
            )));
        }
        let layers = caches[0].layers();
        let mut rows = Vec::with_capacity(xs.len());
        let mut pos0 = Vec::with_capacity(xs.len());
        for (cache, x) in caches.iter().zip(&xs) {
            let n = self.rows(x)?;
            if cache.owner() != self.serial || cache.layers() != layers {
                return Err(ModelError::Input(
                    "the KV caches of one batch belong to this model and cover the same layers"
                        .into(),
                ));
            }
            if n > cache.capacity() - cache.len() {
                return Err(ModelError::ContextFull {
                    tokens: n,
                    used: cache.len(),
                    capacity: cache.capacity(),
                });
            }
            rows.push(n);
            pos0.push(cache.len());
        }
        if let ([cache], [_]) = (&mut caches[..], &xs[..]) {
            // One conversation: the plain path, whose buffers stay in the cache between calls
            // (the batched one copies each conversation's rows per layer).
            let x = xs.into_iter().next().expect("one input");
            return Ok(vec![self.blocks(cache, x)?]);
        }
        let x: Vec<f32> = xs.concat();
        let out = {
            let mut states: Vec<&mut (dyn std::any::Any + Send + Sync)> =
                caches.iter_mut().map(|c| c.state_mut()).collect();
            self.on.run_many(&mut states, layers, x, &rows, &pos0)?
        };
        let h = self.config.hidden;
        let mut at = 0;
        let mut outs = Vec::with_capacity(rows.len());
        for (cache, &n) in caches.iter_mut().zip(&rows) {
            cache.advance(n);
            outs.push(out[at * h..(at + n) * h].to_vec());
            at += n;
        }
        Ok(outs)
    }

    /// Stage `head`: the logits of rows `x` (`[rows, hidden]`), `[rows, vocab]`.
    pub fn head(&self, x: &[f32]) -> Result<Vec<f32>> {
        let rows = self.rows(x)?;
        self.on.head(x.to_vec(), rows)
    }

    /// Rows of `hidden` values in `x` (at least one).
    fn rows(&self, x: &[f32]) -> Result<usize> {
        let h = self.config.hidden;
        if x.is_empty() || !x.len().is_multiple_of(h) {
            return Err(ModelError::Input(format!(
                "{} values are not rows of {h}",
                x.len()
            )));
        }
        Ok(x.len() / h)
    }

    /// Greedy decoding's step: runs `id` at the position after what `cache` (of every layer)
    /// holds and returns the id of the next token's largest logit, chosen on the backend (a GPU
    /// sends back 4 bytes instead of the vocabulary's logits). The same choice as the first
    /// largest of [`Llama::forward`]'s logits. Fails, leaving the cache as it was, as
    /// [`Llama::forward`] does.
    pub fn forward_greedy(&self, cache: &mut KvCache, id: u32) -> Result<u32> {
        self.check_run(cache, &[id])?;
        let x = self.embed(&[id])?;
        let pos0 = cache.len();
        let next = self.on.greedy_step(cache.state_mut(), x, pos0)?;
        cache.advance(1);
        Ok(next)
    }

    /// What [`Llama::forward`] and [`Llama::forward_greedy`] check before anything runs.
    fn check_run(&self, cache: &KvCache, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(ModelError::Input("no tokens to run".into()));
        }
        if cache.owner() != self.serial {
            return Err(ModelError::Input(
                "the KV cache belongs to another model (caches run only with the model that \
                 made them)"
                    .into(),
            ));
        }
        if cache.layers() != (0..self.config.layers) {
            return Err(ModelError::Input(format!(
                "a cache of layers {:?} cannot run the whole model (0..{})",
                cache.layers(),
                self.config.layers
            )));
        }
        let free = cache.capacity() - cache.len();
        if ids.len() > free {
            return Err(ModelError::ContextFull {
                tokens: ids.len(),
                used: cache.len(),
                capacity: cache.capacity(),
            });
        }
        // Every id is checked before any position is written.
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.config.vocab) {
            return Err(edgecut_backends::ops::OpError::TokenId {
                id: bad,
                vocab: self.config.vocab,
            }
            .into());
        }
        Ok(())
    }

    /// Runs `ids` at the positions after what `cache` (of every layer) holds, appends their
    /// keys and values to it, and returns the logits `which` asks for. Fails, leaving the cache
    /// as it was, when the tokens do not fit the cache or an id is outside the vocabulary.
    pub fn forward(&self, cache: &mut KvCache, ids: &[u32], which: Logits) -> Result<Vec<f32>> {
        self.check_run(cache, ids)?;
        let (h, vocab) = (self.config.hidden, self.config.vocab);
        let mut logits = Vec::with_capacity(match which {
            Logits::Last => vocab,
            Logits::All => vocab * ids.len(),
        });
        let chunks = ids.chunks(PREFILL_CHUNK);
        let n_chunks = chunks.len();
        for (ci, chunk) in chunks.enumerate() {
            let rows_out = match which {
                Logits::All => chunk.len(),
                Logits::Last if ci + 1 == n_chunks => 1,
                Logits::Last => 0,
            };
            let x = self.blocks(cache, self.embed(chunk)?)?;
            if rows_out > 0 {
                let t = chunk.len();
                logits.extend(self.head(&x[(t - rows_out) * h..])?);
            }
        }
        Ok(logits)
    }
}

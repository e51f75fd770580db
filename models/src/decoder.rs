//! Decoders: pre-norm blocks of RMSNorm, grouped-query self-attention with rotary position
//! embeddings, and a SwiGLU feed-forward, one block for every architecture in the spec table
//! ([`spec::SPECS`]: Llama 2/3, SmolLM, Qwen2, Qwen3).
//!
//! Papers: Touvron et al., "LLaMA: Open and Efficient Foundation Language Models" (2023); GQA:
//! Ainslie et al. (2023); Qwen2 (Yang et al., 2024) and Qwen3 (2025) technical reports.
//! References matched: Hugging Face transformers' `LlamaForCausalLM`, `Qwen2ForCausalLM` and
//! `Qwen3ForCausalLM`, and llama.cpp's `src/models/{llama,qwen2,qwen3}.cpp`.
//!
//! Files follow llama.cpp's layout (tensor names, `{arch}.*` keys; the q and k rows of `llama`
//! files permuted into adjacent pairs). Stages: `embeddings`, `block 0..n-1`, `head` (final norm
//! and the vocabulary projection, tied to the embedding table when the file has no
//! `output.weight`).

use std::ops::Range;
use std::sync::Arc;

use edgecut_backends::Device;
use edgecut_format::gguf::GgufFile;

use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::stages::{StageGraph, StageOutput};
use crate::weights::Table;

mod on;
pub mod spec;

pub use spec::{DecoderConfig, DecoderSpec};

use on::Part;

/// Which logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// The last position's (what generation needs).
    Last,
    /// Every position's, `[tokens, vocab]`.
    All,
}

/// A loaded decoder of any architecture in the spec table, on the device it was loaded for.
///
/// Stages: [`Decoder::embed`] (token ids to vectors), [`Decoder::blocks`] (the layers a
/// [`KvCache`] covers, appending to it), [`Decoder::head`] (final norm and vocabulary
/// projection). [`Decoder::forward`] runs all three; two caches over two layer ranges run a
/// model in two parts (a split between a device and a server) and give the one-range logits.
pub struct Decoder {
    /// Hyper-parameters.
    pub config: DecoderConfig,
    /// A serial number of this load: a cache runs only with the model that made it.
    serial: u64,
    file: Arc<GgufFile>,
    embd: Table,
    on: Box<dyn on::Run>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Decoder({}, {:?})", self.config.spec.name, self.config)
    }
}

/// Rows per chunk of a long prompt: bounds the activation buffers (about `PREFILL_CHUNK * (2 *
/// ffn + 6 * hidden) * 4` bytes) while keeping matmuls large.
pub const PREFILL_CHUNK: usize = 256;

impl Decoder {
    /// Loads a decoder file for `dev`; the backend prepares the weights (on the CPU: quantized
    /// matrices stay in the map and are multiplied with f32 activations as stored).
    pub fn load(file: Arc<GgufFile>, dev: &Device) -> Result<Decoder> {
        let config = DecoderConfig::from_gguf(&file)?;
        let embd = Table::load(&file, "token_embd.weight", config.hidden)?;
        let on = dev.instantiate(on::Load {
            file: &file,
            cfg: &config,
        })?;
        static LOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Ok(Decoder {
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

    /// Bytes of a KV cache of every layer for `positions` positions (sliding layers hold a
    /// ring of their window, whatever the context).
    pub fn kv_bytes(&self, positions: usize) -> usize {
        self.config.kv_bytes(positions)
    }

    /// An empty KV cache of every layer for `positions` positions (at most the model's context).
    pub fn new_cache(&self, positions: usize) -> Result<KvCache> {
        self.new_cache_for(0..self.config.layers, positions)
    }

    /// Copies `src` into `dst`, caches of this model of the same layers and size: a
    /// conversation forked after its prompt. Refused where the backend cannot copy a cache
    /// ([`edgecut_backends::Backend::kv_copy`]); the caller then runs the prompt again.
    pub fn copy_cache(&self, src: &KvCache, dst: &mut KvCache) -> Result<()> {
        if src.owner() != self.serial || dst.owner() != self.serial {
            return Err(ModelError::Input(
                "a KV cache was made by another model (caches run only with their own)".into(),
            ));
        }
        if src.layers() != dst.layers() || src.capacity() != dst.capacity() {
            return Err(ModelError::Input(format!(
                "copying a KV cache of layers {:?} and {} positions into one of {:?} and {}",
                src.layers(),
                src.capacity(),
                dst.layers(),
                dst.capacity()
            )));
        }
        self.on.copy_state(src.state(), dst.state_mut())?;
        dst.copy_marks(src);
        Ok(())
    }

    /// An empty KV cache of `layers` for `positions` positions: one part of a model run in
    /// parts ([`Decoder::blocks`]).
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
        let groups = c.kv_groups(layers.clone(), positions);
        let bytes = groups.iter().map(|(s, _)| s.bytes()).sum();
        let ring = groups
            .iter()
            .find_map(|(s, _)| s.window.map(|w| (w, s.capacity)));
        let state = self.on.new_state(layers.clone(), groups)?;
        Ok(KvCache::new(
            self.serial,
            layers,
            positions,
            bytes,
            ring,
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
        let kv = (2 * c.kv_heads * c.head_dim * 2) as u64;
        let ring = c.window.map(|w| (2 * w + PREFILL_CHUNK - 1) as u64);
        for (l, s) in g.stages[1..=c.layers].iter_mut().enumerate() {
            s.kv_bytes_per_token = kv;
            // A sliding layer holds its ring (and the ring's mirrored start), whatever the
            // context.
            s.kv_positions = if c.sliding(l) { ring } else { None };
        }
        g
    }

    /// Stage `embeddings`: the vectors of `ids`, `[ids.len(), hidden]`.
    pub fn embed(&self, ids: &[u32]) -> Result<Vec<f32>> {
        // The gather refuses an id past the table (OpError::TokenId).
        let mut x = vec![0f32; ids.len() * self.config.hidden];
        self.embd.gather(&self.file, ids, &mut x)?;
        if self.config.spec.embed_scale {
            let scale = (self.config.hidden as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= scale);
        }
        Ok(x)
    }

    /// Stages `block i` for the layers `cache` covers, on rows `x` (`[rows, hidden]`) at the
    /// positions after what the cache holds; appends their keys and values to it. Fails,
    /// leaving the cache as it was, when the rows do not fit.
    pub fn blocks(&self, cache: &mut KvCache, x: Vec<f32>) -> Result<Vec<f32>> {
        let mut out = self.blocks_many(&mut [cache], vec![x])?;
        Ok(out.pop().unwrap_or_default())
    }

    /// [`Decoder::blocks`] for several conversations at once, each with its own cache (all of the
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
        let mut parts = Vec::with_capacity(xs.len());
        let mut row = 0;
        for (cache, x) in caches.iter().zip(&xs) {
            let rows = self.rows(x)?;
            if cache.owner() != self.serial || cache.layers() != layers {
                return Err(ModelError::Input(
                    "a KV cache belongs to another model (caches run only with the model that \
                     made them) or covers other layers than the batch's"
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
            parts.push(Part {
                row,
                rows,
                pos0: cache.len(),
            });
            row += rows;
        }
        let h = self.config.hidden;
        if self.config.window.is_some() && parts.iter().any(|p| p.rows > PREFILL_CHUNK) {
            // A sliding layer's ring holds its window and one chunk's rows: longer inputs run
            // a chunk at a time, each conversation on its own (all were checked above).
            let mut outs = Vec::with_capacity(xs.len());
            for (cache, x) in caches.iter_mut().zip(xs) {
                let mut out = Vec::with_capacity(x.len());
                for chunk in x.chunks(PREFILL_CHUNK * h) {
                    out.extend(self.blocks_many(&mut [&mut **cache], vec![chunk.to_vec()])?);
                }
                outs.push(out.concat());
            }
            return Ok(outs);
        }
        let x: Vec<f32> = xs.concat();
        let out = {
            let mut states: Vec<&mut on::AnyState> =
                caches.iter_mut().map(|c| c.state_mut()).collect();
            self.on.run(&mut states, layers, x, &parts)?
        };
        let mut outs = Vec::with_capacity(parts.len());
        for (cache, p) in caches.iter_mut().zip(&parts) {
            cache.advance(p.rows);
            outs.push(out[p.row * h..(p.row + p.rows) * h].to_vec());
        }
        Ok(outs)
    }

    /// Last-token pooling, as decoder embedders (Qwen3-Embedding, gte-Qwen) use: each text's
    /// hidden state at its last token after the final norm, `[hidden]` per text. The texts run
    /// together (their matrix products batched), each with a cache of its own length.
    pub fn last_hidden(&self, texts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let mut caches = Vec::with_capacity(texts.len());
        let mut xs = Vec::with_capacity(texts.len());
        for ids in texts {
            let cache = self.new_cache(ids.len().max(1))?;
            self.check_run(&cache, ids)?;
            caches.push(cache);
            xs.push(self.embed(ids)?);
        }
        let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
        let outs = self.blocks_many(&mut refs, xs)?;
        let h = self.config.hidden;
        let last: Vec<f32> = outs
            .iter()
            .flat_map(|o| o[o.len() - h..].iter().copied())
            .collect();
        let normed = self.on.final_norm(last, texts.len())?;
        Ok(normed.chunks_exact(h).map(<[f32]>::to_vec).collect())
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
    /// largest of [`Decoder::forward`]'s logits. Fails, leaving the cache as it was, as
    /// [`Decoder::forward`] does.
    pub fn forward_greedy(&self, cache: &mut KvCache, id: u32) -> Result<u32> {
        self.check_run(cache, &[id])?;
        let x = self.embed(&[id])?;
        let pos0 = cache.len();
        let next = self.on.greedy_step(cache.state_mut(), x, pos0)?;
        cache.advance(1);
        Ok(next)
    }

    /// What [`Decoder::forward`] and [`Decoder::forward_greedy`] check before anything runs.
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
        let vocab = self.config.vocab;
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
            // The blocks and the head run on the backend; only the logits come back.
            let pos0 = cache.len();
            let out = self
                .on
                .forward(cache.state_mut(), self.embed(chunk)?, pos0, rows_out)?;
            cache.advance(chunk.len());
            logits.extend(out);
        }
        Ok(logits)
    }
}

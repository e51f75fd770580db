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

use std::sync::Arc;

use half::f16;

use edgecut_backends::ops::{ActQuant, CausalAttention, RopeStyle};
use edgecut_backends::Device;
use edgecut_runtime::gguf::{GgufFile, Value};

use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::weights::{vector, Matrix, Table};

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

#[derive(Debug)]
struct Block {
    attn_norm: Vec<f32>,
    q: Matrix,
    k: Matrix,
    v: Matrix,
    wo: Matrix,
    ffn_norm: Vec<f32>,
    gate: Matrix,
    up: Matrix,
    down: Matrix,
}

/// Which logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// The last position's (what generation needs).
    Last,
    /// Every position's, `[tokens, vocab]`.
    All,
}

/// A loaded Llama-family decoder.
pub struct Llama {
    /// Hyper-parameters.
    pub config: LlamaConfig,
    file: Arc<GgufFile>,
    dev: Device,
    embd: Table,
    blocks: Vec<Block>,
    norm: Vec<f32>,
    output: Matrix,
    inv_freq: Vec<f32>,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Llama({:?})", self.config)
    }
}

/// Rows per chunk of a long prompt: bounds the activation buffers (about `PREFILL_CHUNK * (2 *
/// ffn + 6 * hidden) * 4` bytes) while keeping matmuls large.
const PREFILL_CHUNK: usize = 256;

impl Llama {
    /// Loads a `llama` file for `dev`: Q8_0 matrices stay in the map, Q4_0/Q4_1 matrices are
    /// re-quantized to Q8_0 once.
    pub fn load(file: Arc<GgufFile>, dev: &Device) -> Result<Llama> {
        let c = LlamaConfig::from_gguf(&file)?;
        let f = &*file;
        let (h, hd) = (c.hidden, c.head_dim);
        let embd = Table::load(f, "token_embd.weight", h)?;
        let mut blocks = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let p = |n: &str| format!("blk.{i}.{n}");
            let m = |n: &str, rows: usize, cols: usize| {
                Matrix::load_as(f, dev, &p(n), rows, cols, false, ActQuant::F32)
            };
            // Not stacked (unlike BERT's q/k/v): with f32 activations there is no shared
            // quantization to save, and separate matrices stay in the map instead of being
            // copied (44 MB for SmolLM2-135M).
            blocks.push(Block {
                attn_norm: vector(f, &p("attn_norm.weight"), h)?,
                q: m("attn_q", c.heads * hd, h)?,
                k: m("attn_k", c.kv_heads * hd, h)?,
                v: m("attn_v", c.kv_heads * hd, h)?,
                wo: m("attn_output", h, c.heads * hd)?,
                ffn_norm: vector(f, &p("ffn_norm.weight"), h)?,
                gate: m("ffn_gate", c.ffn, h)?,
                up: m("ffn_up", c.ffn, h)?,
                down: m("ffn_down", h, c.ffn)?,
            });
        }
        let out_name = if f.tensor("output.weight").is_some() {
            "output"
        } else {
            "token_embd"
        };
        let output = Matrix::load_as(f, dev, out_name, c.vocab, h, false, ActQuant::F32)?;
        let half = c.rope_dims / 2;
        let mut inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                let f = (c.rope_base as f64).powf(-(2.0 * i as f64) / c.rope_dims as f64);
                (f / c.rope_scale as f64) as f32
            })
            .collect();
        // Per-frequency factors (Llama 3.1's rope scaling, stored by llama.cpp as a tensor).
        if f.tensor("rope_freqs.weight").is_some() {
            let factors = vector(f, "rope_freqs.weight", half)?;
            inv_freq.iter_mut().zip(factors).for_each(|(v, d)| *v /= d);
        }
        Ok(Llama {
            norm: vector(f, "output_norm.weight", h)?,
            config: c,
            file: file.clone(),
            dev: dev.clone(),
            embd,
            blocks,
            output,
            inv_freq,
        })
    }

    /// The file the model was loaded from.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Bytes of weights held outside the file map (re-quantized and repacked matrices, norms).
    pub fn owned_bytes(&self) -> usize {
        let b = self.blocks.iter().map(|b| {
            [&b.q, &b.k, &b.v, &b.wo, &b.gate, &b.up, &b.down]
                .iter()
                .map(|m| m.owned_bytes())
                .sum::<usize>()
                + (b.attn_norm.len() + b.ffn_norm.len()) * 4
        });
        b.sum::<usize>() + self.output.owned_bytes() + self.norm.len() * 4
    }

    /// An empty KV cache for `positions` positions (at most the model's context length).
    pub fn new_cache(&self, positions: usize) -> Result<KvCache> {
        let c = &self.config;
        if positions == 0 || positions > c.context {
            return Err(ModelError::Input(format!(
                "context of {positions} positions: the model supports 1 to {}",
                c.context
            )));
        }
        KvCache::new(c.layers, c.kv_heads, c.head_dim, positions)
    }

    /// Runs `ids` at the positions after what `cache` holds, appends their keys and values to
    /// it, and returns the logits `which` asks for. Fails, leaving the cache as it was, when the
    /// tokens do not fit the cache or an id is outside the vocabulary.
    pub fn forward(&self, cache: &mut KvCache, ids: &[u32], which: Logits) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(ModelError::Input("no tokens to run".into()));
        }
        let free = cache.capacity() - cache.len();
        if ids.len() > free {
            return Err(ModelError::ContextFull {
                tokens: ids.len(),
                used: cache.len(),
                capacity: cache.capacity(),
            });
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.config.vocab) {
            return Err(edgecut_backends::ops::OpError::TokenId {
                id: bad,
                vocab: self.config.vocab,
            }
            .into());
        }
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
            self.forward_chunk(cache, chunk, rows_out, &mut logits)?;
        }
        Ok(logits)
    }

    /// One chunk: embeddings, every block, and the logits of the last `rows_out` rows.
    fn forward_chunk(
        &self,
        cache: &mut KvCache,
        ids: &[u32],
        rows_out: usize,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let c = &self.config;
        let (t, h, hd) = (ids.len(), c.hidden, c.head_dim);
        let (qw, kvw) = (c.heads * hd, c.kv_heads * hd);
        let pos0 = cache.len();
        let cap = cache.capacity();
        let cpu = self.dev.backend();
        let f = &*self.file;
        // Buffers: x (residual), xn (normed), q, k, v, att (attention out), gate, up.
        let sizes = [
            t * h,
            t * h,
            t * qw,
            t * kvw,
            t * kvw,
            t * qw,
            t * c.ffn,
            t * c.ffn,
        ];
        let mut scratch = std::mem::take(&mut cache.scratch);
        scratch.resize_with(sizes.len(), Vec::new);
        for (b, &n) in scratch.iter_mut().zip(&sizes) {
            b.resize(n, 0.0);
        }
        let [x, xn, q, k, v, att, gate, up] = &mut scratch[..] else {
            unreachable!("eight buffers")
        };
        let result = (|| -> Result<()> {
            self.embd.gather(f, ids, x)?;
            let rope = RopeStyle::Interleaved;
            for (l, b) in self.blocks.iter().enumerate() {
                cpu.rms_norm(x, xn, &b.attn_norm, c.eps)
                    .map_err(ModelError::from)?;
                cpu.linear(xn, t, &b.q.linear(f), q)
                    .map_err(ModelError::from)?;
                cpu.linear(xn, t, &b.k.linear(f), k)
                    .map_err(ModelError::from)?;
                cpu.linear(xn, t, &b.v.linear(f), v)
                    .map_err(ModelError::from)?;
                cpu.rope(q, c.heads, hd, pos0, &self.inv_freq, rope)
                    .map_err(ModelError::from)?;
                cpu.rope(k, c.kv_heads, hd, pos0, &self.inv_freq, rope)
                    .map_err(ModelError::from)?;
                // Keys transposed (`[kv_head][dim][position]`), values by position.
                for (i, (kr, vr)) in k.chunks_exact(kvw).zip(v.chunks_exact(kvw)).enumerate() {
                    let pos = pos0 + i;
                    for (gd, &kv) in kr.iter().enumerate() {
                        cache.k[l][gd * cap + pos] = f16::from_f32(kv);
                    }
                    for g in 0..c.kv_heads {
                        let at = (g * cap + pos) * hd;
                        for (o, &x) in cache.v[l][at..at + hd].iter_mut().zip(&vr[g * hd..]) {
                            *o = f16::from_f32(x);
                        }
                    }
                }
                let a = CausalAttention {
                    q,
                    k: &cache.k[l],
                    v: &cache.v[l],
                    pos0,
                    capacity: cap,
                    heads: c.heads,
                    kv_heads: c.kv_heads,
                    head_dim: hd,
                };
                cpu.causal_attention(&a, att).map_err(ModelError::from)?;
                cpu.linear(att, t, &b.wo.linear(f), xn)
                    .map_err(ModelError::from)?;
                cpu.add(x, xn).map_err(ModelError::from)?;
                cpu.rms_norm(x, xn, &b.ffn_norm, c.eps)
                    .map_err(ModelError::from)?;
                cpu.linear(xn, t, &b.gate.linear(f), gate)
                    .map_err(ModelError::from)?;
                cpu.linear(xn, t, &b.up.linear(f), up)
                    .map_err(ModelError::from)?;
                cpu.silu_mul(gate, up).map_err(ModelError::from)?;
                cpu.linear(gate, t, &b.down.linear(f), xn)
                    .map_err(ModelError::from)?;
                cpu.add(x, xn).map_err(ModelError::from)?;
            }
            if rows_out > 0 {
                let last = &x[(t - rows_out) * h..];
                let normed = &mut xn[..rows_out * h];
                cpu.rms_norm(last, normed, &self.norm, c.eps)
                    .map_err(ModelError::from)?;
                let start = logits.len();
                logits.resize(start + rows_out * c.vocab, 0.0);
                cpu.linear(
                    normed,
                    rows_out,
                    &self.output.linear(f),
                    &mut logits[start..],
                )
                .map_err(ModelError::from)?;
            }
            Ok(())
        })();
        cache.scratch = scratch;
        result?;
        cache.advance(t);
        Ok(())
    }
}

//! What one decoder architecture differs in, as data: one [`DecoderSpec`] row per
//! `general.architecture`, read by the one block in `on.rs`. Hyper-parameters and tensor names
//! come from the file (llama.cpp's keys and names), never from the row.
//!
//! Adding an architecture that the block already covers is one row in [`SPECS`] (with its
//! converter mapping and a test); a row that needs something the block lacks (another FFN, a
//! norm after the sublayer) adds that variant to this file and its few lines to the block.

use std::ops::Range;

use edgecut_backends::ops::RopeStyle;
use edgecut_backends::{KvShape, KvType};
use edgecut_format::gguf::{Array, GgufFile, Value};

use crate::error::{ModelError, Result};

/// One decoder architecture: what the shared block does differently for it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecoderSpec {
    /// `general.architecture`, also the prefix of its hyper-parameter keys.
    pub arch: &'static str,
    /// The architecture in words, for errors and `inspect`.
    pub name: &'static str,
    /// How the rotary embedding pairs the values of a head: llama.cpp's `llama` files are
    /// permuted by its converter into adjacent pairs; Qwen's keep Hugging Face's halves.
    pub rope: RopeStyle,
    /// Whether q and k carry an RMS norm over each head (`attn_q_norm`/`attn_k_norm`, Qwen3).
    pub qk_norm: bool,
    /// Whether q, k and v carry biases (Qwen2); they are taken wherever the file has them, and
    /// a file of an architecture that requires them and lacks them is refused.
    pub qkv_bias: bool,
    /// The feed-forward's gated activation.
    pub gate: Gate,
    /// RMS norms of the attention's and the feed-forward's outputs before each residual add
    /// (Gemma 2/3's `post_attention_norm` and `post_ffw_norm`).
    pub post_norms: bool,
    /// Whether the embeddings are scaled by the square root of the width (Gemma).
    pub embed_scale: bool,
    /// Sliding-window attention on some layers, when the file gives a window
    /// (`attention.sliding_window`).
    pub sliding: Option<Sliding>,
}

/// The feed-forward's gated activation: `down(act(gate(x)) * up(x))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// SwiGLU (Llama, Qwen).
    Silu,
    /// GeGLU with GELU's tanh form (Gemma).
    GeluTanh,
}

/// Which layers attend through a sliding window, and how they rotate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sliding {
    /// Layer `i` slides when `i % pattern < pattern - 1` (Gemma 3: five local layers, then one
    /// global; llama.cpp's `set_swa_pattern`).
    pub pattern: usize,
    /// The rotary base of the sliding layers (the global ones take the file's
    /// `rope.freq_base` and scaling), unless the file gives `rope.freq_base_swa`.
    pub rope_base: f32,
}

/// The Llama-shaped defaults that the rows below differ from.
const LLAMA_SHAPED: DecoderSpec = DecoderSpec {
    arch: "llama",
    name: "Llama",
    rope: RopeStyle::Interleaved,
    qk_norm: false,
    qkv_bias: false,
    gate: Gate::Silu,
    post_norms: false,
    embed_scale: false,
    sliding: None,
};

/// Every decoder architecture edgecut runs, keyed by `general.architecture`.
pub const SPECS: &[DecoderSpec] = &[
    // Llama 2/3, SmolLM, TinyLlama, Mistral-style files written as `llama`.
    LLAMA_SHAPED,
    // Qwen2 and Qwen2.5: biases on q, k and v.
    DecoderSpec {
        arch: "qwen2",
        name: "Qwen2",
        rope: RopeStyle::Halves,
        qkv_bias: true,
        ..LLAMA_SHAPED
    },
    // Qwen3: no biases, an RMS norm over each head of q and k, an explicit head size.
    DecoderSpec {
        arch: "qwen3",
        name: "Qwen3",
        rope: RopeStyle::Halves,
        qk_norm: true,
        ..LLAMA_SHAPED
    },
    // Gemma 3: GeGLU, norms after each sublayer as well as before, q/k norms, scaled
    // embeddings, five sliding-window layers (rotary base 10,000) for each global one. Its
    // files store the norms' weights as `1 + w` (llama.cpp's converter adds the one).
    DecoderSpec {
        arch: "gemma3",
        name: "Gemma 3",
        rope: RopeStyle::Halves,
        qk_norm: true,
        gate: Gate::GeluTanh,
        post_norms: true,
        embed_scale: true,
        sliding: Some(Sliding {
            pattern: 6,
            rope_base: 10_000.0,
        }),
        ..LLAMA_SHAPED
    },
];

/// The spec of architecture `arch`, if edgecut runs it as a decoder.
pub fn spec(arch: &str) -> Option<&'static DecoderSpec> {
    SPECS.iter().find(|s| s.arch == arch)
}

/// The decoder architectures, for messages: `"llama", "qwen2", ...`.
pub fn names() -> String {
    let names: Vec<String> = SPECS.iter().map(|s| format!("{:?}", s.arch)).collect();
    names.join(", ")
}

/// Hyper-parameters read from the file, with the architecture's spec.
#[derive(Clone, Debug)]
pub struct DecoderConfig {
    /// What the architecture does differently.
    pub spec: &'static DecoderSpec,
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
    /// The sliding layers' window (positions a query sees, itself included), when the spec
    /// has sliding layers and the file gives a window.
    pub window: Option<usize>,
    /// The sliding layers' rotary base.
    pub local_rope_base: f32,
    /// How the KV cache stores keys and values (f16 unless the caller asks for f32 after
    /// loading: not a property of the file).
    pub kv_type: KvType,
}

/// Texts of end-of-turn tokens that files do not always name under
/// `tokenizer.ggml.eot_token_id` (llama.cpp looks for the same ones).
const END_OF_TURN: &[&str] = &[
    "<end_of_turn>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<|eom_id|>",
];

impl DecoderConfig {
    /// Reads the configuration of a decoder file of any architecture in [`SPECS`].
    pub fn from_gguf(f: &GgufFile) -> Result<DecoderConfig> {
        let arch = f.architecture()?;
        let spec = spec(arch).ok_or_else(|| ModelError::UnsupportedArchitecture {
            architecture: arch.to_string(),
            expected: format!("a decoder edgecut runs ({})", names()),
        })?;
        let key = |k: &str| format!("{arch}.{k}");
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
            || rope_dims == 0
            || layers == 0
            || context == 0
            || ffn == 0
        {
            return Err(ModelError::Unsupported(format!(
                "bad hyper-parameters: hidden {hidden}, heads {heads}/{kv_heads} of {head_dim} \
                 (rotary {rope_dims}), blocks {layers}, ffn {ffn}, context {context}"
            )));
        }
        if let Some(v) = f
            .get(&key("attention.value_length"))
            .and_then(Value::as_u64)
        {
            if v as usize != head_dim {
                return Err(ModelError::Unsupported(format!(
                    "value heads of {v} values beside key heads of {head_dim}"
                )));
            }
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
        if let Some(Value::Array(Array::Str(tokens))) = f.get("tokenizer.ggml.tokens") {
            let types = match f.get("tokenizer.ggml.token_type") {
                Some(Value::Array(Array::I32(t))) => Some(t),
                _ => None,
            };
            for (i, t) in tokens.iter().enumerate() {
                // Only control tokens: a user's text of "<|end|>" is not a turn's end.
                let control = types.is_none_or(|ty| ty.get(i) == Some(&3));
                if control && END_OF_TURN.contains(&t.as_str()) {
                    stop_ids.push(i as u32);
                }
            }
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let window = match spec.sliding {
            Some(_) => match f
                .get(&key("attention.sliding_window"))
                .and_then(Value::as_u64)
            {
                Some(0) | None => None,
                Some(w) => Some(w as usize),
            },
            None => None,
        };
        let local_rope_base = f
            .get_f64(&key("rope.freq_base_swa"))
            .map(|b| b as f32)
            .unwrap_or(spec.sliding.map_or(10_000.0, |s| s.rope_base));
        let vocab = f
            .tensor("token_embd.weight")
            .and_then(|t| t.info.dims.get(1).copied())
            .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?
            as usize;
        Ok(DecoderConfig {
            spec,
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
            window,
            local_rope_base,
            kv_type: KvType::F16,
        })
    }

    /// The backend caches that hold `layers` for a context of `positions`: one per kind of
    /// layer present (full attention first, then sliding), each with the indices (within
    /// `layers`) of the layers it holds. A sliding layer's cache is a ring of the window and a
    /// prefill chunk's rows ([`super::PREFILL_CHUNK`]: the most rows run at once) when the
    /// context is longer than that.
    pub fn kv_groups(&self, layers: Range<usize>, positions: usize) -> Vec<(KvShape, Vec<usize>)> {
        let (full, sliding): (Vec<usize>, Vec<usize>) =
            layers.clone().partition(|&l| !self.sliding(l));
        let mut groups = Vec::with_capacity(2);
        let shape = |n: usize, capacity: usize, window: Option<usize>| KvShape {
            layers: n,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            capacity,
            window,
            dtype: self.kv_type,
        };
        let rel =
            |v: Vec<usize>| -> Vec<usize> { v.into_iter().map(|l| l - layers.start).collect() };
        if !full.is_empty() {
            groups.push((shape(full.len(), positions, None), rel(full)));
        }
        if !sliding.is_empty() {
            let w = self.window.unwrap_or(positions);
            let s = if positions <= w {
                // The window never excludes a position of this context.
                shape(sliding.len(), positions, None)
            } else {
                shape(
                    sliding.len(),
                    positions.min(w + super::PREFILL_CHUNK),
                    Some(w),
                )
            };
            groups.push((s, rel(sliding)));
        }
        groups
    }

    /// Bytes of the KV cache of every layer for a context of `positions`.
    pub fn kv_bytes(&self, positions: usize) -> usize {
        self.kv_groups(0..self.layers, positions)
            .iter()
            .map(|(s, _)| s.bytes())
            .sum()
    }

    /// Bytes of the KV cache of every layer for `positions` positions if every layer kept
    /// every position (what the sliding layers' rings save, by difference).
    pub fn kv_bytes_without_windows(&self, positions: usize) -> usize {
        KvShape {
            dtype: self.kv_type,
            ..KvShape::full(self.layers, self.kv_heads, self.head_dim, positions)
        }
        .bytes()
    }

    /// Whether layer `layer` attends through the sliding window.
    pub fn sliding(&self, layer: usize) -> bool {
        match (self.window, self.spec.sliding) {
            (Some(_), Some(s)) => s.pattern == 0 || layer % s.pattern < s.pattern - 1,
            _ => false,
        }
    }
}

//! What one decoder architecture differs in, as data: one [`DecoderSpec`] row per
//! `general.architecture`, read by the one block in `on.rs`. Hyper-parameters and tensor names
//! come from the file (llama.cpp's keys and names), never from the row.
//!
//! Adding an architecture that the block already covers is one row in [`SPECS`] (with its
//! converter mapping and a test); a row that needs something the block lacks (another FFN, a
//! norm after the sublayer) adds that variant to this file and its few lines to the block.

use edgecut_backends::ops::RopeStyle;
use edgecut_format::gguf::{GgufFile, Value};

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
}

/// Every decoder architecture edgecut runs, keyed by `general.architecture`.
pub const SPECS: &[DecoderSpec] = &[
    // Llama 2/3, SmolLM, TinyLlama, Mistral-style files written as `llama`.
    DecoderSpec {
        arch: "llama",
        name: "Llama",
        rope: RopeStyle::Interleaved,
        qk_norm: false,
        qkv_bias: false,
    },
    // Qwen2 and Qwen2.5: biases on q, k and v.
    DecoderSpec {
        arch: "qwen2",
        name: "Qwen2",
        rope: RopeStyle::Halves,
        qk_norm: false,
        qkv_bias: true,
    },
    // Qwen3: no biases, an RMS norm over each head of q and k, an explicit head size.
    DecoderSpec {
        arch: "qwen3",
        name: "Qwen3",
        rope: RopeStyle::Halves,
        qk_norm: true,
        qkv_bias: false,
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
}

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
        stop_ids.dedup();
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
        })
    }
}

//! Hugging Face decoder checkpoints (`LlamaForCausalLM`: Llama 2/3, SmolLM, TinyLlama;
//! `Qwen2ForCausalLM`; `Qwen3ForCausalLM`; `Gemma3ForCausalLM`) to GGUF with llama.cpp's architecture, key and tensor
//! names, as its `convert_hf_to_gguf.py` writes them: for `llama` the q and k projection rows of
//! each head are permuted from Hugging Face's rotate-half order to the adjacent-pair order
//! llama.cpp's rotary embedding uses (Qwen's files keep the halves); Llama 3's rope scaling is
//! written as llama.cpp's per-frequency `rope_freqs.weight`. llama.cpp reads the files edgecut
//! writes and edgecut runs both the same way.

use std::borrow::Cow;
use std::path::Path;

use edgecut_format::gguf::{TensorSpec, Value};
use serde_json::Value as Json;

use super::hf::Checkpoint;
use super::{
    common_metadata, encode, target_type, tokenizer_meta, ConvertOptions, ConvertReport, Progress,
};
use crate::error::{ModelError, Result};

/// What differs between the checkpoints this converter maps (the model side's differences are
/// the decoder spec table, `crate::decoder::spec`).
struct Family {
    /// `config.json`'s `model_type`.
    model_type: &'static str,
    /// llama.cpp's `general.architecture`.
    arch: &'static str,
    /// Whether q and k rows are permuted into adjacent pairs.
    permute_qk: bool,
    /// Whether q, k and v have biases (`*_proj.bias`).
    qkv_bias: bool,
    /// Whether q and k have per-head RMS norms (`q_norm`, `k_norm`).
    qk_norm: bool,
    /// Gemma's shape: norms of `1 + w` (stored with the one added, as llama.cpp does), norms
    /// after each sublayer (`post_attention_layernorm`, `post_feedforward_layernorm`; the FFN's
    /// pre-norm is `pre_feedforward_layernorm`), GeGLU, sliding-window layers, a SentencePiece
    /// `tokenizer.model`.
    gemma: bool,
}

/// Llama's row, which the others differ from.
const LLAMA: Family = Family {
    model_type: "llama",
    arch: "llama",
    permute_qk: true,
    qkv_bias: false,
    qk_norm: false,
    gemma: false,
};

/// The decoder checkpoints edgecut converts.
const FAMILIES: &[Family] = &[
    LLAMA,
    Family {
        model_type: "qwen2",
        arch: "qwen2",
        permute_qk: false,
        qkv_bias: true,
        ..LLAMA
    },
    Family {
        model_type: "qwen3",
        arch: "qwen3",
        permute_qk: false,
        qk_norm: true,
        ..LLAMA
    },
    // Gemma 3's text model (270M, 1B; the larger ones are `gemma3` with a vision tower).
    Family {
        model_type: "gemma3_text",
        arch: "gemma3",
        permute_qk: false,
        qk_norm: true,
        gemma: true,
        ..LLAMA
    },
];

/// Whether this converter maps checkpoints of `model_type`.
pub(super) fn converts(model_type: &str) -> bool {
    FAMILIES.iter().any(|f| f.model_type == model_type)
}

struct Hparams {
    hidden: usize,
    ffn: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    ctx: usize,
    eps: f64,
    vocab: usize,
    rope_theta: f64,
    rope_linear: Option<f64>,
    /// Llama 3's per-frequency divisors of the rotary frequencies.
    rope_factors: Option<Vec<f32>>,
    tied: bool,
    /// Gemma's sliding window and the sliding layers' rotary base.
    sliding: Option<(usize, f64)>,
}

/// Llama 3's rope scaling as llama.cpp stores it (`rope_freqs.weight`): each rotary frequency's
/// divisor, 1 above the high-frequency band, `factor` below the low one, smoothed between
/// (transformers' `_compute_llama3_parameters`).
fn llama3_factors(rope: &Json, theta: f64, head_dim: usize) -> Vec<f32> {
    let get = |k: &str, d: f64| rope.get(k).and_then(Json::as_f64).unwrap_or(d);
    let (factor, low, high) = (
        get("factor", 8.0),
        get("low_freq_factor", 1.0),
        get("high_freq_factor", 4.0),
    );
    let old = get("original_max_position_embeddings", 8192.0);
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = theta.powf(-(2.0 * i as f64) / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let divisor = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            divisor as f32
        })
        .collect()
}

fn hparams(c: &Checkpoint, fam: &Family) -> Result<Hparams> {
    let heads = c.cfg_usize("num_attention_heads")?;
    let hidden = c.cfg_usize("hidden_size")?;
    let unsupported = |what: String| {
        ModelError::Unsupported(format!("{}: {what}", c.dir.join("config.json").display()))
    };
    for flag in ["attention_bias", "mlp_bias"] {
        if c.config.get(flag).and_then(Json::as_bool) == Some(true) && !fam.qkv_bias {
            return Err(unsupported(format!(
                "{flag} = true (edgecut runs {} blocks without biases)",
                fam.model_type
            )));
        }
    }
    if c.config.get("use_sliding_window").and_then(Json::as_bool) == Some(true) {
        return Err(unsupported(
            "use_sliding_window = true (edgecut's decoders attend to the whole context)".into(),
        ));
    }
    let act = c.cfg_str("hidden_act").or(c.cfg_str("hidden_activation"));
    let want = if fam.gemma {
        "gelu_pytorch_tanh"
    } else {
        "silu"
    };
    if act.is_some_and(|a| a != want) {
        return Err(unsupported(format!(
            "activation {act:?} (edgecut runs {} with {want})",
            fam.model_type
        )));
    }
    for flag in ["final_logit_softcapping", "attn_logit_softcapping"] {
        if c.config.get(flag).is_some_and(|v| !v.is_null()) {
            return Err(unsupported(format!(
                "{flag} (edgecut runs Gemma 3, which has none)"
            )));
        }
    }
    // transformers 5 keeps rotary settings under `rope_parameters` (per layer type for
    // Gemma 3), earlier versions at the top.
    let mut rope = c
        .config
        .get("rope_parameters")
        .or(c.config.get("rope_scaling"));
    let local_theta = rope
        .and_then(|r| r.get("sliding_attention"))
        .and_then(|r| r.get("rope_theta"))
        .and_then(Json::as_f64)
        .or(c.config.get("rope_local_base_freq").and_then(Json::as_f64))
        .unwrap_or(10_000.0);
    if let Some(full) = rope.and_then(|r| r.get("full_attention")) {
        rope = Some(full);
    }
    let sliding = if fam.gemma {
        let window = c.cfg_usize("sliding_window")?;
        // llama.cpp's Gemma 3 (and edgecut's spec) fix the pattern: five sliding, one global.
        let layers = c.cfg_usize("num_hidden_layers")?;
        if let Some(types) = c.config.get("layer_types").and_then(Json::as_array) {
            for (i, t) in types.iter().enumerate() {
                let want = if i % 6 < 5 {
                    "sliding_attention"
                } else {
                    "full_attention"
                };
                if t.as_str() != Some(want) || types.len() != layers {
                    return Err(unsupported(format!(
                        "layer_types: layer {i} is {t}; Gemma 3 files have five sliding \
                         layers, then one global (llama.cpp reads no other pattern)"
                    )));
                }
            }
        }
        Some((window, local_theta))
    } else {
        None
    };
    let rope_theta = c
        .config
        .get("rope_theta")
        .or(rope.and_then(|r| r.get("rope_theta")))
        .and_then(Json::as_f64)
        .unwrap_or(10_000.0);
    let rope_type = rope
        .and_then(|r| r.get("rope_type").or(r.get("type")))
        .and_then(Json::as_str)
        .unwrap_or("default");
    let head_dim = match c.config.get("head_dim").and_then(Json::as_u64) {
        Some(d) => d as usize,
        None => hidden.checked_div(heads).unwrap_or(0),
    };
    let (rope_linear, rope_factors) = match (rope_type, rope) {
        ("default", _) => (None, None),
        ("linear", _) => (
            Some(
                rope.and_then(|r| r.get("factor"))
                    .and_then(Json::as_f64)
                    .unwrap_or(1.0),
            ),
            None,
        ),
        ("llama3", Some(r)) => (None, Some(llama3_factors(r, rope_theta, head_dim))),
        (other, _) => {
            return Err(unsupported(format!(
                "rope type {other:?} (edgecut runs default, linear and llama3)"
            )))
        }
    };
    Ok(Hparams {
        hidden,
        ffn: c.cfg_usize("intermediate_size")?,
        layers: c.cfg_usize("num_hidden_layers")?,
        heads,
        kv_heads: c.cfg_usize("num_key_value_heads").unwrap_or(heads),
        head_dim,
        ctx: c.cfg_usize("max_position_embeddings")?,
        eps: c.cfg_f64_or("rms_norm_eps", 1e-6)?,
        vocab: c.cfg_usize("vocab_size")?,
        rope_theta,
        rope_linear,
        rope_factors,
        tied: c
            .config
            .get("tie_word_embeddings")
            .and_then(Json::as_bool)
            .unwrap_or(fam.gemma),
        sliding,
    })
}

/// How a tensor is written.
#[derive(Clone)]
enum Transform {
    AsIs,
    /// Gemma's norm weights, stored as `1 + w`.
    PlusOne,
    /// llama.cpp's q/k permutation for heads of the given count.
    Permute(usize),
    /// Values computed here, not read from the checkpoint.
    Values(Vec<f32>),
}

/// Rows of each head reordered from `[2, hd/2]` to `[hd/2, 2]`: new row `2i + s` of a head is
/// old row `s * hd/2 + i`.
fn permute(v: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    let mut out = vec![0f32; v.len()];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for s in 0..2 {
                let (new, old) = (h * hd + 2 * i + s, h * hd + s * hd / 2 + i);
                out[new * cols..(new + 1) * cols].copy_from_slice(&v[old * cols..(old + 1) * cols]);
            }
        }
    }
    out
}

pub(super) fn convert(
    c: &Checkpoint,
    output: &Path,
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ConvertReport> {
    let model_type = c.cfg_str("model_type").unwrap_or("");
    let fam = FAMILIES
        .iter()
        .find(|f| f.model_type == model_type)
        .ok_or_else(|| ModelError::Unsupported(format!("model_type {model_type:?}")))?;
    let h = hparams(c, fam)?;
    if h.heads == 0
        || h.kv_heads == 0
        || h.heads % h.kv_heads != 0
        || h.head_dim == 0
        || h.head_dim % 2 != 0
    {
        return Err(ModelError::Unsupported(format!(
            "{} heads over {} key/value heads of {}",
            h.heads, h.kv_heads, h.head_dim
        )));
    }
    let arch = fam.arch;
    let mut w = super::writer_for(c, arch);
    let u = |v: usize| Value::U32(v as u32);
    w.set(format!("{arch}.context_length"), u(h.ctx));
    w.set(format!("{arch}.embedding_length"), u(h.hidden));
    w.set(format!("{arch}.feed_forward_length"), u(h.ffn));
    w.set(format!("{arch}.block_count"), u(h.layers));
    w.set(format!("{arch}.attention.head_count"), u(h.heads));
    w.set(format!("{arch}.attention.head_count_kv"), u(h.kv_heads));
    w.set(format!("{arch}.attention.key_length"), u(h.head_dim));
    w.set(format!("{arch}.attention.value_length"), u(h.head_dim));
    w.set(
        format!("{arch}.attention.layer_norm_rms_epsilon"),
        Value::F32(h.eps as f32),
    );
    w.set(
        format!("{arch}.rope.freq_base"),
        Value::F32(h.rope_theta as f32),
    );
    w.set(format!("{arch}.rope.dimension_count"), u(h.head_dim));
    w.set(format!("{arch}.vocab_size"), u(h.vocab));
    if let Some((window, local)) = h.sliding {
        w.set(format!("{arch}.attention.sliding_window"), u(window));
        if local != 10_000.0 {
            w.set(
                format!("{arch}.rope.freq_base_swa"),
                Value::F32(local as f32),
            );
        }
    }
    if let Some(f) = h.rope_linear {
        w.set(
            format!("{arch}.rope.scaling.type"),
            Value::Str("linear".into()),
        );
        w.set(format!("{arch}.rope.scaling.factor"), Value::F32(f as f32));
    }
    let tok_config = c.optional_json("tokenizer_config.json")?;
    if fam.gemma {
        let path = c.dir.join("tokenizer.model");
        let bytes = std::fs::read(&path).map_err(|e| {
            ModelError::Unsupported(format!(
                "{}: {e}; Gemma checkpoints carry their SentencePiece tokenizer there",
                path.display()
            ))
        })?;
        tokenizer_meta::sentencepiece(&mut w, &bytes, tok_config.as_ref(), &path)?;
    } else {
        let tok = c.require_tokenizer_json()?;
        tokenizer_meta::bpe(
            &mut w,
            tok,
            &c.config,
            tok_config.as_ref(),
            &c.dir.join("tokenizer.json"),
        )?;
        w.set("tokenizer.huggingface.json", Value::Str(tok.into()));
    }
    let template = match std::fs::read_to_string(c.dir.join("chat_template.jinja")) {
        Ok(t) => Some(t),
        Err(_) => tok_config
            .as_ref()
            .and_then(|t| t.get("chat_template"))
            .and_then(Json::as_str)
            .map(str::to_string),
    };
    if let Some(t) = template {
        w.set("tokenizer.chat_template", Value::Str(t));
    }
    w.set(
        "edgecut.source.model_type",
        Value::Str(fam.model_type.into()),
    );
    super::pooling::embedder_metadata(&mut w, c, arch)?;
    common_metadata(&mut w, opts, c.checksum()?);

    let (q_rows, kv_rows) = (h.heads * h.head_dim, h.kv_heads * h.head_dim);
    let norm = if fam.gemma {
        Transform::PlusOne
    } else {
        Transform::AsIs
    };
    let mut map: Vec<(String, String, Vec<usize>, Transform)> = vec![
        (
            "token_embd.weight".into(),
            "model.embed_tokens.weight".into(),
            vec![h.vocab, h.hidden],
            Transform::AsIs,
        ),
        (
            "output_norm.weight".into(),
            "model.norm.weight".into(),
            vec![h.hidden],
            norm.clone(),
        ),
    ];
    if !h.tied || c.has("lm_head.weight") {
        map.push((
            "output.weight".into(),
            "lm_head.weight".into(),
            vec![h.vocab, h.hidden],
            Transform::AsIs,
        ));
    }
    if let Some(f) = &h.rope_factors {
        map.push((
            "rope_freqs.weight".into(),
            String::new(),
            vec![f.len()],
            Transform::Values(f.clone()),
        ));
    }
    let qk = |heads: usize| {
        if fam.permute_qk {
            Transform::Permute(heads)
        } else {
            Transform::AsIs
        }
    };
    for i in 0..h.layers {
        let l = |s: &str| format!("model.layers.{i}.{s}");
        let b = |s: &str| format!("blk.{i}.{s}");
        if fam.qkv_bias {
            for (g, hf, rows) in [("q", "q", q_rows), ("k", "k", kv_rows), ("v", "v", kv_rows)] {
                map.push((
                    b(&format!("attn_{g}.bias")),
                    l(&format!("self_attn.{hf}_proj.bias")),
                    vec![rows],
                    Transform::AsIs,
                ));
            }
        }
        if fam.qk_norm {
            for g in ["q", "k"] {
                map.push((
                    b(&format!("attn_{g}_norm.weight")),
                    l(&format!("self_attn.{g}_norm.weight")),
                    vec![h.head_dim],
                    norm.clone(),
                ));
            }
        }
        let ffn_norm = if fam.gemma {
            map.extend([
                (
                    b("post_attention_norm.weight"),
                    l("post_attention_layernorm.weight"),
                    vec![h.hidden],
                    norm.clone(),
                ),
                (
                    b("post_ffw_norm.weight"),
                    l("post_feedforward_layernorm.weight"),
                    vec![h.hidden],
                    norm.clone(),
                ),
            ]);
            l("pre_feedforward_layernorm.weight")
        } else {
            l("post_attention_layernorm.weight")
        };
        map.extend([
            (
                b("attn_norm.weight"),
                l("input_layernorm.weight"),
                vec![h.hidden],
                norm.clone(),
            ),
            (
                b("attn_q.weight"),
                l("self_attn.q_proj.weight"),
                vec![q_rows, h.hidden],
                qk(h.heads),
            ),
            (
                b("attn_k.weight"),
                l("self_attn.k_proj.weight"),
                vec![kv_rows, h.hidden],
                qk(h.kv_heads),
            ),
            (
                b("attn_v.weight"),
                l("self_attn.v_proj.weight"),
                vec![kv_rows, h.hidden],
                Transform::AsIs,
            ),
            (
                b("attn_output.weight"),
                l("self_attn.o_proj.weight"),
                vec![h.hidden, q_rows],
                Transform::AsIs,
            ),
            (b("ffn_norm.weight"), ffn_norm, vec![h.hidden], norm.clone()),
            (
                b("ffn_gate.weight"),
                l("mlp.gate_proj.weight"),
                vec![h.ffn, h.hidden],
                Transform::AsIs,
            ),
            (
                b("ffn_up.weight"),
                l("mlp.up_proj.weight"),
                vec![h.ffn, h.hidden],
                Transform::AsIs,
            ),
            (
                b("ffn_down.weight"),
                l("mlp.down_proj.weight"),
                vec![h.hidden, h.ffn],
                Transform::AsIs,
            ),
        ]);
    }
    let mut sources = Vec::with_capacity(map.len());
    let blocks = super::block_count(map.iter().map(|m| m.0.as_str()));
    let tied = !map.iter().any(|m| m.0 == "output.weight");
    for (gname, src, shape, transform) in map {
        let found = match &transform {
            Transform::Values(v) => vec![v.len()],
            _ if !c.has(&src) => return Err(ModelError::MissingTensor(src)),
            _ => c.shape(&src)?,
        };
        if found != shape {
            return Err(ModelError::Shape {
                name: src,
                found,
                expected: shape,
            });
        }
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let dtype = target_type(&gname, &dims, opts.weight_type, blocks, tied);
        w.add_tensor(TensorSpec {
            name: gname,
            dtype,
            dims,
        })?;
        sources.push((src, shape, transform));
    }
    super::write(&w, output, progress, |i, spec| {
        let (src, shape, transform) = &sources[i];
        let v = match transform {
            Transform::AsIs => c.tensor_f32(src)?.0,
            Transform::PlusOne => c.tensor_f32(src)?.0.iter().map(|v| v + 1.0).collect(),
            Transform::Permute(heads) => permute(&c.tensor_f32(src)?.0, shape[0], shape[1], *heads),
            Transform::Values(v) => v.clone(),
        };
        encode(&v, spec.dtype).map(Cow::Owned)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn permute_interleaves_the_two_halves_of_each_head() {
        // 2 heads of 4 rows, 1 column: rows [a0 a1 b0 b1] per head become [a0 b0 a1 b1].
        let v: Vec<f32> = (0..8).map(|i| i as f32).collect();
        assert_eq!(
            super::permute(&v, 8, 1, 2),
            [0., 2., 1., 3., 4., 6., 5., 7.]
        );
    }
}

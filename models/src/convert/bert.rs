//! BERT, MiniLM, DistilBERT and XLM-RoBERTa checkpoints to GGUF with llama.cpp's `bert` names.
//!
//! XLM-RoBERTa is BERT with positions counted from the padding id plus one: as llama.cpp's
//! converter does, the rows before that are dropped, so position `i` of a text is row `i` and
//! the encoder runs it as BERT. Its SentencePiece Unigram vocabulary is stored whole (the
//! `tokenizer.json`) and as llama.cpp's `t5` arrays.

use std::borrow::Cow;
use std::path::Path;

use edgecut_format::gguf::{Array, TensorSpec, Value};
use serde_json::Value as Json;

use super::hf::Checkpoint;
use super::{
    common_metadata, encode, target_type, tokenizer_meta, ConvertOptions, ConvertReport, Progress,
};
use crate::error::{ModelError, Result};

/// Hyper-parameters, read from either config layout.
struct Hparams {
    distil: bool,
    /// RoBERTa-style: positions start at `pos_offset`, the head is `classifier.dense/out_proj`.
    roberta: bool,
    /// Position rows before the first token's (the padding id + 1 for RoBERTa, else 0).
    pos_offset: usize,
    hidden: usize,
    ffn: usize,
    layers: usize,
    heads: usize,
    ctx: usize,
    eps: f64,
    vocab: usize,
    type_vocab: usize,
    act: String,
}

fn hparams(c: &Checkpoint) -> Result<Hparams> {
    let distil = c.cfg_str("model_type") == Some("distilbert");
    let roberta = c.cfg_str("model_type") == Some("xlm-roberta");
    Ok(if distil {
        Hparams {
            distil,
            roberta,
            pos_offset: 0,
            hidden: c.cfg_usize("dim")?,
            ffn: c.cfg_usize("hidden_dim")?,
            layers: c.cfg_usize("n_layers")?,
            heads: c.cfg_usize("n_heads")?,
            ctx: c.cfg_usize("max_position_embeddings")?,
            eps: 1e-12,
            vocab: c.cfg_usize("vocab_size")?,
            type_vocab: 0,
            act: c.cfg_str("activation").unwrap_or("gelu").to_string(),
        }
    } else {
        let pos_offset = if roberta {
            c.cfg_usize("pad_token_id").unwrap_or(1) + 1
        } else {
            0
        };
        let positions = c.cfg_usize("max_position_embeddings")?;
        if positions <= pos_offset {
            return Err(ModelError::Unsupported(format!(
                "{positions} position embeddings leave none after the padding offset {pos_offset}"
            )));
        }
        Hparams {
            distil,
            roberta,
            pos_offset,
            hidden: c.cfg_usize("hidden_size")?,
            ffn: c.cfg_usize("intermediate_size")?,
            layers: c.cfg_usize("num_hidden_layers")?,
            heads: c.cfg_usize("num_attention_heads")?,
            ctx: positions - pos_offset,
            eps: c.cfg_f64_or("layer_norm_eps", 1e-12)?,
            vocab: c.cfg_usize("vocab_size")?,
            type_vocab: c.cfg_usize("type_vocab_size").unwrap_or(2),
            act: c.cfg_str("hidden_act").unwrap_or("gelu").to_string(),
        }
    })
}

/// Finds the checkpoint's name for a tensor, trying the usual prefixes and old LayerNorm names.
fn find(c: &Checkpoint, names: &[String], candidates: &[String]) -> Option<String> {
    for cand in candidates {
        for prefix in ["", "bert.", "distilbert.", "roberta.", "model."] {
            let full = format!("{prefix}{cand}");
            if names.binary_search(&full).is_ok() {
                return Some(full);
            }
            let old = full
                .replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta");
            if old != full && names.binary_search(&old).is_ok() {
                return Some(old);
            }
        }
    }
    let _ = c;
    None
}

/// (gguf name, checkpoint name candidates without the model prefix, required)
fn tensor_map(h: &Hparams) -> Vec<(String, Vec<String>, bool)> {
    let mut m: Vec<(String, Vec<String>, bool)> = Vec::new();
    let mut add = |g: String, hf: Vec<String>, req: bool| m.push((g, hf, req));
    let wb = ["weight", "bias"];
    add(
        "token_embd.weight".into(),
        vec!["embeddings.word_embeddings.weight".into()],
        true,
    );
    add(
        "position_embd.weight".into(),
        vec!["embeddings.position_embeddings.weight".into()],
        true,
    );
    if !h.distil {
        add(
            "token_types.weight".into(),
            vec!["embeddings.token_type_embeddings.weight".into()],
            true,
        );
    }
    for s in wb {
        add(
            format!("token_embd_norm.{s}"),
            vec![format!("embeddings.LayerNorm.{s}")],
            true,
        );
    }
    for i in 0..h.layers {
        let pairs: [(&str, &str); 7] = if h.distil {
            [
                ("attn_q", "attention.q_lin"),
                ("attn_k", "attention.k_lin"),
                ("attn_v", "attention.v_lin"),
                ("attn_output", "attention.out_lin"),
                ("attn_output_norm", "sa_layer_norm"),
                ("ffn_up", "ffn.lin1"),
                ("ffn_down", "ffn.lin2"),
            ]
        } else {
            [
                ("attn_q", "attention.self.query"),
                ("attn_k", "attention.self.key"),
                ("attn_v", "attention.self.value"),
                ("attn_output", "attention.output.dense"),
                ("attn_output_norm", "attention.output.LayerNorm"),
                ("ffn_up", "intermediate.dense"),
                ("ffn_down", "output.dense"),
            ]
        };
        let layer = if h.distil {
            format!("transformer.layer.{i}")
        } else {
            format!("encoder.layer.{i}")
        };
        let last_norm = if h.distil {
            "output_layer_norm"
        } else {
            "output.LayerNorm"
        };
        for (g, hf) in pairs
            .iter()
            .chain([("layer_output_norm", last_norm)].iter())
        {
            for s in wb {
                add(
                    format!("blk.{i}.{g}.{s}"),
                    vec![format!("{layer}.{hf}.{s}")],
                    true,
                );
            }
        }
    }
    // Sequence-classification heads: BERT's pooler (tanh), DistilBERT's pre_classifier (ReLU)
    // or RoBERTa's classifier.dense (tanh) become `cls`, the final projection `cls.output`
    // (llama.cpp's names).
    let (pre, out) = match (h.distil, h.roberta) {
        (true, _) => ("pre_classifier", "classifier"),
        (_, true) => ("classifier.dense", "classifier.out_proj"),
        _ => ("pooler.dense", "classifier"),
    };
    for s in wb {
        add(format!("cls.{s}"), vec![format!("{pre}.{s}")], false);
        add(format!("cls.output.{s}"), vec![format!("{out}.{s}")], false);
    }
    m
}

pub(super) fn convert(
    c: &Checkpoint,
    output: &Path,
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ConvertReport> {
    let h = hparams(c)?;
    if h.heads == 0 || h.hidden % h.heads != 0 {
        return Err(ModelError::Unsupported(format!(
            "hidden size {} is not a multiple of the head count {}",
            h.hidden, h.heads
        )));
    }
    let names = c.names();
    let labels = labels(&c.config);
    let head = if h.roberta {
        "classifier.out_proj.weight"
    } else {
        "classifier.weight"
    };
    let is_classifier = find(c, &names, &[head.to_string()]).is_some();

    let mut w = super::writer_for(c, "bert");
    let u = |v: usize| Value::U32(v as u32);
    w.set("bert.context_length", u(h.ctx));
    w.set("bert.embedding_length", u(h.hidden));
    w.set("bert.feed_forward_length", u(h.ffn));
    w.set("bert.block_count", u(h.layers));
    w.set("bert.attention.head_count", u(h.heads));
    w.set(
        "bert.attention.layer_norm_epsilon",
        Value::F32(h.eps as f32),
    );
    w.set("bert.attention.causal", Value::Bool(false));
    let (pooling, normalize) = pooling(c, is_classifier)?;
    let pooling_type = match pooling {
        "mean" => 1,
        "cls" => 2,
        _ => 0,
    };
    w.set("bert.pooling_type", Value::U32(pooling_type));
    let tok = c.require_tokenizer_json()?;
    let path = c.dir.join("tokenizer.json");
    if h.roberta {
        tokenizer_meta::unigram(&mut w, tok, h.type_vocab.max(1), &path)?;
    } else {
        tokenizer_meta::wordpiece(&mut w, tok, h.type_vocab.max(1), &path)?;
    }
    w.set("tokenizer.huggingface.json", Value::Str(tok.into()));
    let source_type = match (h.distil, h.roberta) {
        (true, _) => "distilbert",
        (_, true) => c.cfg_str("model_type").unwrap_or("xlm-roberta"),
        _ => "bert",
    };
    w.set("edgecut.source.model_type", Value::Str(source_type.into()));
    w.set("edgecut.hidden_act", Value::Str(h.act.clone()));
    w.set("edgecut.pooling", Value::Str(pooling.into()));
    w.set("edgecut.normalize", Value::Bool(normalize));
    if let Some(n) = super::pooling::max_seq_length(c)? {
        w.set(
            "edgecut.max_seq_len",
            Value::U32(n.min(h.ctx as u64) as u32),
        );
    }
    if is_classifier {
        w.set(
            "edgecut.classifier.activation",
            Value::Str(if h.distil { "relu" } else { "tanh" }.into()),
        );
        if !labels.is_empty() {
            w.set("edgecut.labels", Value::Array(Array::Str(labels)));
        }
    }
    common_metadata(&mut w, opts, c.checksum()?);

    // (checkpoint name, leading rows to drop)
    let mut sources: Vec<(String, usize)> = Vec::new();
    let map = tensor_map(&h);
    let blocks = super::block_count(map.iter().map(|m| m.0.as_str()));
    for (gname, cands, required) in map {
        if gname.starts_with("cls.") && !is_classifier {
            continue; // BERT's pooler is only used by classification heads
        }
        let Some(src) = find(c, &names, &cands) else {
            if required {
                return Err(ModelError::MissingTensor(cands[0].clone()));
            }
            continue;
        };
        let mut shape = c.shape(&src)?;
        check_shape(&gname, &shape, &h)?;
        let skip = if gname == "position_embd.weight" {
            h.pos_offset
        } else {
            0
        };
        shape[0] -= skip;
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        // An encoder's head is its pooler or classifier, never tied to the embeddings.
        let dtype = target_type(&gname, &dims, opts.weight_type, blocks, false);
        w.add_tensor(TensorSpec {
            name: gname,
            dtype,
            dims,
        })?;
        sources.push((src, skip));
    }
    super::write(&w, output, progress, |i, spec| {
        let (src, skip) = &sources[i];
        let (v, _) = c.tensor_f32(src)?;
        let row = spec.dims.first().copied().unwrap_or(1) as usize;
        encode(&v[skip * row..], spec.dtype).map(Cow::Owned)
    })
}

fn check_shape(name: &str, shape: &[usize], h: &Hparams) -> Result<()> {
    let expected: Option<Vec<usize>> = match name {
        "token_embd.weight" => Some(vec![h.vocab, h.hidden]),
        "position_embd.weight" => Some(vec![h.ctx + h.pos_offset, h.hidden]),
        n if n.ends_with("attn_q.weight")
            || n.ends_with("attn_k.weight")
            || n.ends_with("attn_v.weight")
            || n.ends_with("attn_output.weight") =>
        {
            Some(vec![h.hidden, h.hidden])
        }
        n if n.ends_with("ffn_up.weight") => Some(vec![h.ffn, h.hidden]),
        n if n.ends_with("ffn_down.weight") => Some(vec![h.hidden, h.ffn]),
        n if n.ends_with("norm.weight") || n.ends_with("norm.bias") => Some(vec![h.hidden]),
        _ => None,
    };
    match expected {
        Some(e) if e != shape => Err(ModelError::Shape {
            name: name.into(),
            found: shape.to_vec(),
            expected: e,
        }),
        _ => Ok(()),
    }
}

pub(super) fn labels(config: &Json) -> Vec<String> {
    let Some(map) = config.get("id2label").and_then(Json::as_object) else {
        return Vec::new();
    };
    let mut pairs: Vec<(usize, String)> = map
        .iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
        .collect();
    pairs.sort();
    if pairs.iter().enumerate().all(|(i, (k, _))| i == *k) {
        pairs.into_iter().map(|(_, v)| v).collect()
    } else {
        Vec::new()
    }
}

/// Pooling mode and L2 normalisation from sentence-transformers' files; classifiers and plain
/// BERT checkpoints use the CLS token.
pub(super) fn pooling(c: &Checkpoint, is_classifier: bool) -> Result<(&'static str, bool)> {
    use super::pooling::Pooling;
    let normalize = c.normalizes()?;
    if is_classifier {
        return Ok(("cls", normalize));
    }
    let mode = match super::pooling::pooling(c)? {
        None | Some(Pooling::Cls) => "cls",
        Some(Pooling::Mean) => "mean",
        Some(Pooling::Last) => {
            return Err(ModelError::Unsupported(format!(
                "{}: last-token pooling of a BERT-family encoder (edgecut pools them by mean or \
                 CLS)",
                c.dir.join("1_Pooling/config.json").display()
            )))
        }
    };
    Ok((mode, normalize))
}

//! ModernBERT checkpoints (`model_type = "modernbert"`) to GGUF as `modern-bert`, llama.cpp's
//! architecture name: q/k/v stay stacked (`attn_qkv`); the gated feed-forward's `Wi` is split
//! into its activated half (`ffn_gate`) and the half multiplied in (`ffn_up`), the decoders'
//! names, so the backend runs two plain products.

use std::borrow::Cow;
use std::path::Path;

use edgecut_format::gguf::{TensorSpec, Value};
use serde_json::Value as Json;

use super::hf::Checkpoint;
use super::{
    common_metadata, encode, target_type, tokenizer_meta, ConvertOptions, ConvertReport, Progress,
};
use crate::error::{ModelError, Result};

const ARCH: &str = "modern-bert";

/// The rotary bases of global and local layers: `rope_parameters` (transformers 5), else the
/// older `global_rope_theta` / `local_rope_theta`.
fn rope_bases(c: &Checkpoint) -> Result<(f64, f64)> {
    let theta = |kind: &str| {
        c.config
            .get("rope_parameters")?
            .get(kind)?
            .get("rope_theta")?
            .as_f64()
    };
    let global = match theta("full_attention") {
        Some(t) => t,
        None => c.cfg_f64_or("global_rope_theta", 160_000.0)?,
    };
    let local = match theta("sliding_attention") {
        Some(t) => t,
        None => match c.config.get("local_rope_theta").and_then(Json::as_f64) {
            Some(t) => t,
            None => global,
        },
    };
    for kind in ["full_attention", "sliding_attention"] {
        let rope_type = c
            .config
            .get("rope_parameters")
            .and_then(|r| r.get(kind)?.get("rope_type")?.as_str());
        if let Some(t) = rope_type.filter(|&t| t != "default") {
            return Err(ModelError::Unsupported(format!(
                "rope_type {t:?} on {kind} layers (edgecut runs the default rotary embedding)"
            )));
        }
    }
    Ok((global, local))
}

/// Every how many layers attention is global, from `layer_types` (which must be that
/// pattern: global at 0, n, 2n, ..) or `global_attn_every_n_layers`.
fn global_every(c: &Checkpoint, layers: usize) -> Result<usize> {
    let Some(types) = c.config.get("layer_types").and_then(Json::as_array) else {
        return c.cfg_usize("global_attn_every_n_layers").or(Ok(3));
    };
    let global: Vec<bool> = types
        .iter()
        .map(|t| t.as_str() == Some("full_attention"))
        .collect();
    let every = global
        .iter()
        .skip(1)
        .position(|&g| g)
        .map_or(layers.max(1), |p| p + 1);
    let regular = global.len() == layers
        && global
            .iter()
            .enumerate()
            .all(|(i, &g)| g == (i % every == 0));
    if !regular {
        return Err(ModelError::Unsupported(format!(
            "{}: layer_types {types:?} are not global attention every n layers from the first",
            c.dir.join("config.json").display()
        )));
    }
    Ok(every)
}

/// Finds `name` under the prefixes a ModernBERT checkpoint uses (`model.` under a task head).
fn find(names: &[String], name: &str) -> Option<String> {
    ["", "model."]
        .iter()
        .map(|p| format!("{p}{name}"))
        .find(|n| names.binary_search(n).is_ok())
}

pub(super) fn convert(
    c: &Checkpoint,
    output: &Path,
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ConvertReport> {
    let (hidden, ffn, layers, heads) = (
        c.cfg_usize("hidden_size")?,
        c.cfg_usize("intermediate_size")?,
        c.cfg_usize("num_hidden_layers")?,
        c.cfg_usize("num_attention_heads")?,
    );
    if heads == 0 || !hidden.is_multiple_of(heads) || !(hidden / heads).is_multiple_of(2) {
        return Err(ModelError::Unsupported(format!(
            "hidden size {hidden} is not {heads} heads of an even size"
        )));
    }
    let names = c.names();
    // A sequence classifier (a reranker: gte-reranker-modernbert's shape) keeps its head; a
    // masked-LM head (the hub's ModernBERT-base is saved with one) is dropped.
    let is_classifier = find(&names, "classifier.weight").is_some();
    let head_act = c.cfg_str("classifier_activation").unwrap_or("gelu");
    let head_pool = c.cfg_str("classifier_pooling").unwrap_or("cls");
    if is_classifier && (head_act != "gelu" || !["cls", "mean"].contains(&head_pool)) {
        return Err(ModelError::Unsupported(format!(
            "a ModernBERT classifier with classifier_activation {head_act:?} and \
             classifier_pooling {head_pool:?} (edgecut runs gelu, and cls or mean)"
        )));
    }
    let act = c.cfg_str("hidden_activation").unwrap_or("gelu");
    if act != "gelu" {
        return Err(ModelError::Unsupported(format!(
            "hidden_activation {act:?} (edgecut runs ModernBERT's gelu)"
        )));
    }
    let (base, local_base) = rope_bases(c)?;
    let every = global_every(c, layers)?;
    let window = c.cfg_usize("local_attention").unwrap_or(128);

    let mut w = super::writer_for(c, ARCH);
    let u = |v: usize| Value::U32(v as u32);
    let key = |k: &str| format!("{ARCH}.{k}");
    w.set(
        key("context_length"),
        u(c.cfg_usize("max_position_embeddings")?),
    );
    w.set(key("embedding_length"), u(hidden));
    w.set(key("feed_forward_length"), u(ffn));
    w.set(key("block_count"), u(layers));
    w.set(key("attention.head_count"), u(heads));
    w.set(
        key("attention.layer_norm_epsilon"),
        Value::F32(c.cfg_f64_or("norm_eps", 1e-5)? as f32),
    );
    w.set(key("attention.causal"), Value::Bool(false));
    w.set(key("attention.sliding_window"), u(window));
    w.set(key("attention.sliding_window_pattern"), u(every));
    w.set(key("rope.freq_base"), Value::F32(base as f32));
    w.set(key("rope.freq_base_swa"), Value::F32(local_base as f32));
    let (pooling, normalize) = super::bert::pooling(c, is_classifier)?;
    w.set(
        key("pooling_type"),
        Value::U32(if pooling == "mean" { 1 } else { 2 }),
    );
    let tok = c.require_tokenizer_json()?;
    let path = c.dir.join("tokenizer.json");
    let model_type = serde_json::from_str::<Json>(tok)
        .ok()
        .and_then(|j| Some(j.get("model")?.get("type")?.as_str()?.to_string()));
    match model_type.as_deref() {
        Some("WordPiece") => tokenizer_meta::wordpiece(&mut w, tok, 1, &path)?,
        _ => {
            let tok_config = c.optional_json("tokenizer_config.json")?;
            tokenizer_meta::bpe(&mut w, tok, &c.config, tok_config.as_ref(), &path)?
        }
    }
    w.set("tokenizer.huggingface.json", Value::Str(tok.into()));
    w.set("edgecut.source.model_type", Value::Str("modernbert".into()));
    w.set("edgecut.hidden_act", Value::Str(act.into()));
    w.set("edgecut.pooling", Value::Str(pooling.into()));
    w.set("edgecut.normalize", Value::Bool(normalize));
    if let Some(n) = super::pooling::max_seq_length(c)? {
        w.set("edgecut.max_seq_len", Value::U32(n as u32));
    }
    if is_classifier {
        w.set("edgecut.classifier.activation", Value::Str(head_act.into()));
        w.set("edgecut.classifier.pooling", Value::Str(head_pool.into()));
        let labels = super::bert::labels(&c.config);
        if !labels.is_empty() {
            w.set(
                "edgecut.labels",
                Value::Array(edgecut_format::gguf::Array::Str(labels)),
            );
        }
    }
    common_metadata(&mut w, opts, c.checksum()?);

    // (gguf name, checkpoint name, rows taken: all, or one half of Wi)
    let mut map: Vec<(String, String, Half)> = Vec::new();
    let mut add = |g: String, hf: String, half: Half, required: bool| -> Result<()> {
        match find(&names, &hf) {
            Some(src) => {
                map.push((g, src, half));
                Ok(())
            }
            None if required => Err(ModelError::MissingTensor(hf)),
            None => Ok(()),
        }
    };
    let wb = [("weight", true), ("bias", false)];
    for (s, req) in wb {
        add(
            format!("token_embd.{s}"),
            format!("embeddings.tok_embeddings.{s}"),
            Half::All,
            req,
        )?;
        add(
            format!("token_embd_norm.{s}"),
            format!("embeddings.norm.{s}"),
            Half::All,
            req,
        )?;
        add(
            format!("output_norm.{s}"),
            format!("final_norm.{s}"),
            Half::All,
            req,
        )?;
    }
    if is_classifier {
        // ModernBertPredictionHead (dense, GELU, norm) and the classifier: llama.cpp's names
        // for BERT's head, `cls` and `cls.output`, and the head's norm beside them.
        for (s, req) in wb {
            add(
                format!("cls.{s}"),
                format!("head.dense.{s}"),
                Half::All,
                req,
            )?;
            add(
                format!("cls.norm.{s}"),
                format!("head.norm.{s}"),
                Half::All,
                req,
            )?;
            add(
                format!("cls.output.{s}"),
                format!("classifier.{s}"),
                Half::All,
                req,
            )?;
        }
    }
    for i in 0..layers {
        let l = format!("layers.{i}");
        for (s, req) in wb {
            if i > 0 {
                add(
                    format!("blk.{i}.attn_norm.{s}"),
                    format!("{l}.attn_norm.{s}"),
                    Half::All,
                    req,
                )?;
            }
            add(
                format!("blk.{i}.attn_qkv.{s}"),
                format!("{l}.attn.Wqkv.{s}"),
                Half::All,
                req,
            )?;
            add(
                format!("blk.{i}.attn_output.{s}"),
                format!("{l}.attn.Wo.{s}"),
                Half::All,
                req,
            )?;
            add(
                format!("blk.{i}.ffn_norm.{s}"),
                format!("{l}.mlp_norm.{s}"),
                Half::All,
                req,
            )?;
            add(
                format!("blk.{i}.ffn_gate.{s}"),
                format!("{l}.mlp.Wi.{s}"),
                Half::First,
                req,
            )?;
            add(
                format!("blk.{i}.ffn_up.{s}"),
                format!("{l}.mlp.Wi.{s}"),
                Half::Second,
                req,
            )?;
            add(
                format!("blk.{i}.ffn_down.{s}"),
                format!("{l}.mlp.Wo.{s}"),
                Half::All,
                req,
            )?;
        }
    }
    let blocks = super::block_count(map.iter().map(|m| m.0.as_str()));
    let mut sources = Vec::new();
    for (gname, src, half) in map {
        let mut shape = c.shape(&src)?;
        let expected_rows = match gname.rsplit('.').nth(1).unwrap_or("") {
            "attn_qkv" => 3 * hidden,
            "ffn_gate" | "ffn_up" => 2 * ffn,
            "ffn_down" | "attn_output" | "token_embd_norm" | "output_norm" | "attn_norm"
            | "ffn_norm" | "cls" | "norm" => hidden,
            _ => shape[0],
        };
        let cols = match gname.as_str() {
            n if n.ends_with("ffn_down.weight") => Some(ffn),
            n if n.ends_with(".weight") && shape.len() == 2 && !n.starts_with("token_embd.") => {
                Some(hidden)
            }
            _ => None,
        };
        if shape[0] != expected_rows || cols.is_some_and(|k| shape.get(1) != Some(&k)) {
            let mut expected = vec![expected_rows];
            expected.extend(cols);
            return Err(ModelError::Shape {
                name: src,
                found: shape,
                expected,
            });
        }
        if half != Half::All {
            shape[0] /= 2;
        }
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let dtype = target_type(&gname, &dims, opts.weight_type, blocks, false);
        w.add_tensor(TensorSpec {
            name: gname,
            dtype,
            dims,
        })?;
        sources.push((src, half));
    }
    super::write(&w, output, progress, |i, spec| {
        let (src, half) = &sources[i];
        let (v, _) = c.tensor_f32(src)?;
        let n = v.len() / 2;
        let part = match half {
            Half::All => &v[..],
            Half::First => &v[..n],
            Half::Second => &v[n..],
        };
        encode(part, spec.dtype).map(Cow::Owned)
    })
}

/// Which rows of a checkpoint tensor a GGUF tensor takes (`Wi` holds two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Half {
    All,
    First,
    Second,
}

//! Hugging Face CLIP checkpoints (`CLIPModel`: both towers and their projections) to one GGUF.
//!
//! Names follow llama.cpp's CLIP files where it has them (`v.` for the image tower, `t.` for
//! the text tower, `blk.N.attn_q`, `ln1`, `ln2`, `ffn_up`, `ffn_down`); the patch embedding's
//! convolution is stored as the matrix it is (`[hidden, 3 * patch * patch]`, rows in the order
//! channel, row, column). The image processor's constants (`preprocessor_config.json`) go under
//! `clip.image.*`, so one file embeds both images and texts.

use std::borrow::Cow;
use std::path::Path;

use edgecut_format::gguf::{Array, TensorSpec, Value};
use serde_json::Value as Json;

use super::hf::Checkpoint;
use super::{common_metadata, encode, target_type, ConvertOptions, ConvertReport, Progress};
use crate::error::{ModelError, Result};

/// One tower's hyper-parameters.
struct Tower {
    hidden: usize,
    ffn: usize,
    layers: usize,
    heads: usize,
    eps: f64,
    act: String,
}

/// Reads `config[key]` (an object, or absent: every default) as a tower, with CLIP's defaults.
fn tower(c: &Checkpoint, key: &str, defaults: [usize; 4]) -> Result<Tower> {
    let empty = Json::Object(Default::default());
    let t = c.config.get(key).unwrap_or(&empty);
    let u = |k: &str, d: usize| -> Result<usize> {
        match t.get(k) {
            None => Ok(d),
            Some(v) => v.as_u64().map(|v| v as usize).ok_or_else(|| bad(c, key, k)),
        }
    };
    let act = t
        .get("hidden_act")
        .and_then(Json::as_str)
        .unwrap_or("quick_gelu");
    if act != "quick_gelu" && act != "gelu" {
        return Err(ModelError::Unsupported(format!(
            "{key}.hidden_act {act:?} (edgecut runs CLIP with quick_gelu or gelu)"
        )));
    }
    let tw = Tower {
        hidden: u("hidden_size", defaults[0])?,
        ffn: u("intermediate_size", defaults[1])?,
        layers: u("num_hidden_layers", defaults[2])?,
        heads: u("num_attention_heads", defaults[3])?,
        eps: t
            .get("layer_norm_eps")
            .and_then(Json::as_f64)
            .unwrap_or(1e-5),
        act: act.to_string(),
    };
    if tw.heads == 0 || !tw.hidden.is_multiple_of(tw.heads) || tw.layers == 0 {
        return Err(ModelError::Unsupported(format!(
            "{key}: hidden size {} with {} heads and {} layers",
            tw.hidden, tw.heads, tw.layers
        )));
    }
    Ok(tw)
}

fn bad(c: &Checkpoint, section: &str, key: &str) -> ModelError {
    ModelError::Json {
        path: c.dir.join("config.json"),
        reason: format!("{section}.{key} should be a non-negative integer"),
    }
}

/// The image processor's size as `(shortest edge, crop height, crop width)`, and its other
/// constants, from `preprocessor_config.json` (OpenAI's when absent).
struct Processor {
    shortest_edge: usize,
    crop: (usize, usize),
    mean: Vec<f32>,
    std: Vec<f32>,
    rescale: f64,
}

fn processor(c: &Checkpoint, image_size: usize) -> Result<Processor> {
    let p = c
        .optional_json("preprocessor_config.json")?
        .unwrap_or(Json::Object(Default::default()));
    let path = c.dir.join("preprocessor_config.json");
    let err = |reason: String| ModelError::Json {
        path: path.clone(),
        reason,
    };
    for (flag, what) in [
        ("do_resize", "resizing"),
        ("do_center_crop", "center cropping"),
        ("do_rescale", "rescaling"),
        ("do_normalize", "normalising"),
        ("do_convert_rgb", "RGB conversion"),
    ] {
        if p.get(flag).and_then(Json::as_bool) == Some(false) {
            return Err(err(format!(
                "{flag} is false; edgecut preprocesses as CLIPImageProcessor's defaults do, with {what}"
            )));
        }
    }
    if let Some(r) = p.get("resample").and_then(Json::as_u64) {
        if r != 3 {
            return Err(err(format!(
                "resample {r}; edgecut resizes with bicubic (3), as CLIP's processor does"
            )));
        }
    }
    let shortest_edge = match p.get("size") {
        None => image_size,
        Some(Json::Number(n)) => n.as_u64().unwrap_or(0) as usize,
        Some(s) => {
            s.get("shortest_edge")
                .and_then(Json::as_u64)
                .ok_or_else(|| err(format!("size {s} has no shortest_edge")))? as usize
        }
    };
    let crop = match p.get("crop_size") {
        None => (image_size, image_size),
        Some(Json::Number(n)) => (
            n.as_u64().unwrap_or(0) as usize,
            n.as_u64().unwrap_or(0) as usize,
        ),
        Some(s) => {
            let g = |k: &str| s.get(k).and_then(Json::as_u64).map(|v| v as usize);
            g("height")
                .zip(g("width"))
                .ok_or_else(|| err(format!("crop_size {s} needs height and width")))?
        }
    };
    if crop != (image_size, image_size) || shortest_edge < image_size {
        return Err(err(format!(
            "crop {}x{} from a shortest edge of {shortest_edge} does not give the model's \
             {image_size}x{image_size} images",
            crop.0, crop.1
        )));
    }
    let triple = |k: &str, d: [f32; 3]| -> Result<Vec<f32>> {
        match p.get(k) {
            None => Ok(d.to_vec()),
            Some(Json::Array(a)) if a.len() == 3 && a.iter().all(Json::is_number) => {
                Ok(a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect())
            }
            Some(v) => Err(err(format!("{k} {v} should be three numbers"))),
        }
    };
    let std = triple("image_std", [0.268_629_5, 0.261_302_6, 0.275_777_1])?;
    if std.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
        return Err(err(format!(
            "image_std {std:?} has a value that is not positive"
        )));
    }
    Ok(Processor {
        shortest_edge,
        crop,
        mean: triple("image_mean", [0.481_454_66, 0.457_827_5, 0.408_210_73])?,
        std,
        rescale: p
            .get("rescale_factor")
            .and_then(Json::as_f64)
            .unwrap_or(1.0 / 255.0),
    })
}

/// (GGUF name, checkpoint name) of one tower's tensors.
fn tower_tensors(ggml: &str, hf: &str, layers: usize) -> Vec<(String, String)> {
    let mut m = Vec::new();
    for i in 0..layers {
        let (g, h) = (
            format!("{ggml}.blk.{i}"),
            format!("{hf}.encoder.layers.{i}"),
        );
        for (gn, hn) in [
            ("attn_q", "self_attn.q_proj"),
            ("attn_k", "self_attn.k_proj"),
            ("attn_v", "self_attn.v_proj"),
            ("attn_output", "self_attn.out_proj"),
            ("ln1", "layer_norm1"),
            ("ln2", "layer_norm2"),
            ("ffn_up", "mlp.fc1"),
            ("ffn_down", "mlp.fc2"),
        ] {
            for part in ["weight", "bias"] {
                m.push((format!("{g}.{gn}.{part}"), format!("{h}.{hn}.{part}")));
            }
        }
    }
    m
}

pub(super) fn convert(
    c: &Checkpoint,
    output: &Path,
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ConvertReport> {
    let text = tower(c, "text_config", [512, 2048, 12, 8])?;
    let vision = tower(c, "vision_config", [768, 3072, 12, 12])?;
    let empty = Json::Object(Default::default());
    let vc = c.config.get("vision_config").unwrap_or(&empty);
    let tc = c.config.get("text_config").unwrap_or(&empty);
    let vu = |k: &str, d: u64| vc.get(k).and_then(Json::as_u64).unwrap_or(d) as usize;
    let (image_size, patch) = (vu("image_size", 224), vu("patch_size", 32));
    if vu("num_channels", 3) != 3 || patch == 0 || image_size % patch != 0 {
        return Err(ModelError::Unsupported(format!(
            "vision_config: {} channels, image {image_size}, patch {patch} (edgecut runs RGB \
             images cut into whole patches)",
            vu("num_channels", 3)
        )));
    }
    let context = tc
        .get("max_position_embeddings")
        .and_then(Json::as_u64)
        .unwrap_or(77) as usize;
    let eos = tc.get("eos_token_id").and_then(Json::as_u64).unwrap_or(2);
    let projection = c.cfg_usize("projection_dim").unwrap_or(512);
    let proc = processor(c, image_size)?;
    let tok = c.require_tokenizer_json()?;

    let mut w = super::writer_for(c, "clip");
    let u = |v: usize| Value::U32(v as u32);
    for (t, key) in [(&vision, "vision"), (&text, "text")] {
        w.set(format!("clip.{key}.embedding_length"), u(t.hidden));
        w.set(format!("clip.{key}.feed_forward_length"), u(t.ffn));
        w.set(format!("clip.{key}.block_count"), u(t.layers));
        w.set(format!("clip.{key}.attention.head_count"), u(t.heads));
        w.set(
            format!("clip.{key}.attention.layer_norm_epsilon"),
            Value::F32(t.eps as f32),
        );
        w.set(format!("clip.{key}.hidden_act"), Value::Str(t.act.clone()));
    }
    w.set("clip.vision.image_size", u(image_size));
    w.set("clip.vision.patch_size", u(patch));
    w.set("clip.text.context_length", u(context));
    w.set("clip.text.eos_token_id", Value::U32(eos as u32));
    w.set("clip.projection_dim", u(projection));
    w.set("clip.image.shortest_edge", u(proc.shortest_edge));
    w.set("clip.image.crop_height", u(proc.crop.0));
    w.set("clip.image.crop_width", u(proc.crop.1));
    w.set("clip.image.mean", Value::Array(Array::F32(proc.mean)));
    w.set("clip.image.std", Value::Array(Array::F32(proc.std)));
    w.set("clip.image.rescale_factor", Value::F64(proc.rescale));
    w.set("clip.image.resample", Value::Str("bicubic".into()));
    let (scale, _) = c.tensor_f32("logit_scale")?;
    let scale = *scale
        .first()
        .ok_or_else(|| ModelError::Input("logit_scale holds no value".into()))?;
    w.set("clip.logit_scale", Value::F32(scale));
    w.set("tokenizer.huggingface.json", Value::Str(tok.into()));
    w.set("edgecut.source.model_type", Value::Str("clip".into()));
    common_metadata(&mut w, opts, c.checksum()?);

    let mut map: Vec<(String, String)> = vec![
        (
            "v.patch_embd.weight".into(),
            "vision_model.embeddings.patch_embedding.weight".into(),
        ),
        (
            "v.class_embd".into(),
            "vision_model.embeddings.class_embedding".into(),
        ),
        (
            "v.position_embd.weight".into(),
            "vision_model.embeddings.position_embedding.weight".into(),
        ),
        (
            "v.pre_ln.weight".into(),
            "vision_model.pre_layrnorm.weight".into(),
        ),
        (
            "v.pre_ln.bias".into(),
            "vision_model.pre_layrnorm.bias".into(),
        ),
    ];
    map.extend(tower_tensors("v", "vision_model", vision.layers));
    map.extend([
        (
            "v.post_ln.weight".into(),
            "vision_model.post_layernorm.weight".into(),
        ),
        (
            "v.post_ln.bias".into(),
            "vision_model.post_layernorm.bias".into(),
        ),
        ("v.proj.weight".into(), "visual_projection.weight".into()),
        (
            "t.token_embd.weight".into(),
            "text_model.embeddings.token_embedding.weight".into(),
        ),
        (
            "t.position_embd.weight".into(),
            "text_model.embeddings.position_embedding.weight".into(),
        ),
    ]);
    map.extend(tower_tensors("t", "text_model", text.layers));
    map.extend([
        (
            "t.post_ln.weight".into(),
            "text_model.final_layer_norm.weight".into(),
        ),
        (
            "t.post_ln.bias".into(),
            "text_model.final_layer_norm.bias".into(),
        ),
        ("t.proj.weight".into(), "text_projection.weight".into()),
    ]);
    for (gname, src) in &map {
        let mut shape = c.shape(src)?;
        if gname == "v.patch_embd.weight" {
            // [hidden, 3, p, p]: the convolution with stride p is this matrix on patches.
            if shape != [vision.hidden, 3, patch, patch] {
                return Err(ModelError::Input(format!(
                    "{src} has shape {shape:?}, expected [{}, 3, {patch}, {patch}]",
                    vision.hidden
                )));
            }
            shape = vec![vision.hidden, 3 * patch * patch];
        }
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let dtype = target_type(gname, &dims, opts.weight_type, 0, false);
        w.add_tensor(TensorSpec {
            name: gname.clone(),
            dtype,
            dims,
        })?;
    }
    super::write(&w, output, progress, |i, spec| {
        let (v, _) = c.tensor_f32(&map[i].1)?;
        encode(&v, spec.dtype).map(Cow::Owned)
    })
}

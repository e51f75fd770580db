//! CLIP: an image tower (a ViT) and a text tower that embed pictures and texts into one space.
//!
//! Paper: Radford et al., "Learning Transferable Visual Models From Natural Language
//! Supervision" (2021). Reference implementation matched: Hugging Face transformers'
//! `CLIPModel` (`get_image_features`, `get_text_features`), vectors L2-normalised as its
//! similarity does.
//!
//! Both towers are pre-norm transformer encoders ([`edgecut_backends::encoder::pre_norm_blocks`]).
//! The image tower cuts a `3 x S x S` pixel tensor into `p x p` patches (its convolution is a
//! matrix on them), puts a learned class token first, adds positions, norms (`pre_ln`), runs its
//! blocks, and projects the class token's norm (`post_ln`). The text tower adds positions to
//! token embeddings, runs causal blocks, and projects the norm of the end-of-text token's vector.

use std::sync::Arc;

use edgecut_backends::ops::l2_normalize;
use edgecut_backends::{Act, Device};
use edgecut_format::gguf::{Array, GgufFile, Value};

use crate::bert::Activation;
use crate::error::{ModelError, Result};
use crate::stages::{StageGraph, StageOutput};
use crate::weights::{vector, Table};

mod on;

/// One tower's sizes.
#[derive(Clone, Debug)]
pub struct TowerConfig {
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Blocks.
    pub layers: usize,
    /// Feed-forward size.
    pub ffn: usize,
    /// Layer norm epsilon.
    pub eps: f32,
    /// The feed-forward's activation.
    pub act: Act,
}

/// How pictures become the image tower's input (`CLIPImageProcessor`'s constants).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageProcessing {
    /// The shortest side is resized (bicubic) to this many pixels.
    pub shortest_edge: usize,
    /// Then the center `crop_height x crop_width` is kept (the model's image size).
    pub crop: (usize, usize),
    /// Per-channel mean subtracted after rescaling.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
    /// Factor from 8-bit values to the model's range (`1 / 255`).
    pub rescale: f64,
}

/// CLIP's configuration, read from the file.
#[derive(Clone, Debug)]
pub struct ClipConfig {
    /// The image tower.
    pub vision: TowerConfig,
    /// The text tower.
    pub text: TowerConfig,
    /// Pixels per side of the model's square images.
    pub image_size: usize,
    /// Pixels per side of a patch.
    pub patch_size: usize,
    /// Tokens per text at most (position embeddings).
    pub context: usize,
    /// The end-of-text token whose vector embeds the text.
    pub eos_token: u32,
    /// Size of the shared embedding space.
    pub projection: usize,
    /// `ln` of the factor on cosine similarities before a softmax over labels.
    pub logit_scale: f32,
    /// The image processor's constants.
    pub processing: ImageProcessing,
}

fn tower(f: &GgufFile, key: &str) -> Result<TowerConfig> {
    let u = |k: &str| f.get_u64(&format!("clip.{key}.{k}")).map(|v| v as usize);
    let act = match f
        .get_str(&format!("clip.{key}.hidden_act"))
        .unwrap_or("quick_gelu")
    {
        "quick_gelu" => Act::QuickGelu,
        "gelu" => Act::Gelu,
        other => {
            return Err(ModelError::Unsupported(format!(
                "clip.{key}.hidden_act {other:?} (edgecut runs quick_gelu and gelu)"
            )))
        }
    };
    let t = TowerConfig {
        hidden: u("embedding_length")?,
        heads: u("attention.head_count")?,
        layers: u("block_count")?,
        ffn: u("feed_forward_length")?,
        eps: f
            .get_f64(&format!("clip.{key}.attention.layer_norm_epsilon"))
            .unwrap_or(1e-5) as f32,
        act,
    };
    if t.heads == 0 || !t.hidden.is_multiple_of(t.heads) || t.layers == 0 || t.ffn == 0 {
        return Err(ModelError::Unsupported(format!(
            "bad {key} tower: hidden {}, heads {}, blocks {}, feed-forward {}",
            t.hidden, t.heads, t.layers, t.ffn
        )));
    }
    Ok(t)
}

fn triple(f: &GgufFile, key: &str) -> Result<[f32; 3]> {
    match f.get(key) {
        Some(Value::Array(Array::F32(v))) if v.len() == 3 => Ok([v[0], v[1], v[2]]),
        _ => Err(ModelError::Unsupported(format!(
            "{key} should be three f32 values"
        ))),
    }
}

impl ClipConfig {
    /// Reads the configuration of a `clip` file.
    pub fn from_gguf(f: &GgufFile) -> Result<ClipConfig> {
        let arch = f.architecture()?;
        if arch != "clip" {
            return Err(ModelError::UnsupportedArchitecture {
                architecture: arch.to_string(),
                expected: "CLIP (general.architecture = \"clip\")".into(),
            });
        }
        let u = |k: &str| f.get_u64(k).map(|v| v as usize);
        let (image_size, patch_size) = (u("clip.vision.image_size")?, u("clip.vision.patch_size")?);
        if patch_size == 0 || image_size == 0 || image_size % patch_size != 0 {
            return Err(ModelError::Unsupported(format!(
                "images of {image_size} pixels in patches of {patch_size}"
            )));
        }
        let crop = (u("clip.image.crop_height")?, u("clip.image.crop_width")?);
        let shortest_edge = u("clip.image.shortest_edge")?;
        if crop != (image_size, image_size) || shortest_edge < image_size {
            return Err(ModelError::Unsupported(format!(
                "a {}x{} crop of a {shortest_edge}-pixel shortest edge for {image_size}-pixel images",
                crop.0, crop.1
            )));
        }
        let std = triple(f, "clip.image.std")?;
        if std.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
            return Err(ModelError::Unsupported(format!(
                "clip.image.std {std:?} has a value that is not positive"
            )));
        }
        let rescale = f.get_f64("clip.image.rescale_factor")?;
        if !(rescale > 0.0 && rescale.is_finite()) {
            return Err(ModelError::Unsupported(format!(
                "clip.image.rescale_factor {rescale}"
            )));
        }
        let logit_scale = f.get_f64("clip.logit_scale")? as f32;
        if !logit_scale.is_finite() || logit_scale > 20.0 {
            return Err(ModelError::Unsupported(format!(
                "clip.logit_scale {logit_scale} (exp of it scales similarities)"
            )));
        }
        Ok(ClipConfig {
            vision: tower(f, "vision")?,
            text: tower(f, "text")?,
            image_size,
            patch_size,
            context: u("clip.text.context_length")?,
            eos_token: f.get_u64("clip.text.eos_token_id")? as u32,
            projection: u("clip.projection_dim")?,
            logit_scale,
            processing: ImageProcessing {
                shortest_edge,
                crop,
                mean: triple(f, "clip.image.mean")?,
                std,
                rescale,
            },
        })
    }

    /// Patches per image.
    pub fn patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Values of one image's pixel tensor (`3 x S x S`).
    pub fn pixels_per_image(&self) -> usize {
        3 * self.image_size * self.image_size
    }
}

/// A loaded CLIP model, on the device it was loaded for.
pub struct Clip {
    /// Configuration.
    pub cfg: ClipConfig,
    file: Arc<GgufFile>,
    tok: Table,
    text_pos: Vec<f32>,
    class: Vec<f32>,
    image_pos: Vec<f32>,
    on: Box<dyn on::Run>,
}

impl std::fmt::Debug for Clip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Clip(image {} blocks, hidden {}; text {} blocks, hidden {}; projection {})",
            self.cfg.vision.layers,
            self.cfg.vision.hidden,
            self.cfg.text.layers,
            self.cfg.text.hidden,
            self.cfg.projection
        )
    }
}

/// Which tower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    Image,
    Text,
}

impl Clip {
    /// Loads both towers from an open file for `dev`, checking every tensor's shape.
    pub fn load(file: Arc<GgufFile>, dev: &Device) -> Result<Clip> {
        let f = &*file;
        let cfg = ClipConfig::from_gguf(f)?;
        let (vh, th) = (cfg.vision.hidden, cfg.text.hidden);
        let tok = Table::load(f, "t.token_embd.weight", th)?;
        let text_pos = table_rows(f, "t.position_embd.weight", th, cfg.context)?;
        let class = vector(f, "v.class_embd", vh)?;
        let image_pos = table_rows(f, "v.position_embd.weight", vh, cfg.patches() + 1)?;
        let on = dev.instantiate(on::Load {
            file: &file,
            cfg: &cfg,
        })?;
        Ok(Clip {
            cfg,
            file,
            tok,
            text_pos,
            class,
            image_pos,
            on,
        })
    }

    /// The file the model was loaded from.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Bytes of weights held outside the file map.
    pub fn owned_bytes(&self) -> usize {
        self.on.owned_bytes()
    }

    /// The image tower's stages, the chain a split of a picture cuts: `embeddings` (patches,
    /// class token, positions, `pre_ln`), each block, `head` (`post_ln` and the projection;
    /// the text tower's weights count here too: they are not on the image's path).
    pub fn stages(&self) -> StageGraph {
        let h = self.cfg.vision.hidden as u64;
        let head = StageOutput {
            per_token: 0,
            fixed: self.cfg.projection as u64,
            side_bytes_per_token: 0,
        };
        // Raw input: a patch's 3 p^2 pixel values as f32, per "token".
        let input = 4 * 3 * (self.cfg.patch_size as u64).pow(2);
        StageGraph::chain_of(
            &self.file,
            "v.blk.",
            self.cfg.vision.layers,
            &["v.post_ln", "v.proj", "t."],
            h,
            1,
            head,
            input,
        )
    }

    /// `exp(logit_scale)`: the factor on cosine similarities before a softmax over labels.
    pub fn similarity_scale(&self) -> f32 {
        self.cfg.logit_scale.exp()
    }

    /// Normalised embeddings `[n, projection]` of `n` preprocessed images, each a
    /// `3 x S x S` pixel tensor (channel, row, column), one after another in `pixels`.
    pub fn embed_images(&self, pixels: &[f32], n: usize) -> Result<Vec<f32>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let patches = self.patches(pixels, n)?;
        let mut a = self.image_embeddings(&patches, n)?;
        self.image_blocks(0..self.cfg.vision.layers, &mut a)?;
        self.image_head(&a)
    }

    /// The raw input of the image tower's stages: each image's patches as rows of
    /// `3 p^2` values (channel, row, column: the convolution's weight order),
    /// `[n * patches, 3 p^2]`.
    pub fn patches(&self, pixels: &[f32], n: usize) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        let (s, p) = (cfg.image_size, cfg.patch_size);
        let per = cfg.pixels_per_image();
        if pixels.len() != n * per {
            return Err(ModelError::Input(format!(
                "{} pixel values are not {n} images of 3x{s}x{s}",
                pixels.len()
            )));
        }
        if let Some(i) = pixels.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::Input(format!(
                "pixel value {i} is {} (pixel tensors must be finite)",
                pixels[i]
            )));
        }
        // Patches as rows of (channel, row, column), the convolution's weight order.
        let (grid, np, k) = (s / p, cfg.patches(), 3 * p * p);
        let mut patches = vec![0f32; n * np * k];
        for (img, out) in pixels
            .chunks_exact(per)
            .zip(patches.chunks_exact_mut(np * k))
        {
            for (pi, row) in out.chunks_exact_mut(k).enumerate() {
                let (py, px) = (pi / grid * p, pi % grid * p);
                for c in 0..3 {
                    for y in 0..p {
                        let src = &img[c * s * s + (py + y) * s + px..][..p];
                        row[c * p * p + y * p..][..p].copy_from_slice(src);
                    }
                }
            }
        }
        Ok(patches)
    }

    /// Stage `embeddings` of the image tower: patch rows ([`Clip::patches`]) embedded, the
    /// class token put first, positions added, `pre_ln`.
    pub fn image_embeddings(&self, patches: &[f32], n: usize) -> Result<Activation> {
        let cfg = &self.cfg;
        let (h, np, k) = (cfg.vision.hidden, cfg.patches(), 3 * cfg.patch_size.pow(2));
        if patches.len() != n * np * k {
            return Err(ModelError::Input(format!(
                "{} values are not {n} images' {np} patches of {k}",
                patches.len()
            )));
        }
        if patches.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::Input("patch values must be finite".into()));
        }
        let embedded = self.on.patch_embed(patches.to_vec(), n * np)?;
        // The class token first, then the patches; positions on all.
        let seq = np + 1;
        let mut x = vec![0f32; n * seq * h];
        for (img, out) in embedded
            .chunks_exact(np * h)
            .zip(x.chunks_exact_mut(seq * h))
        {
            out[..h].copy_from_slice(&self.class);
            out[h..].copy_from_slice(img);
            out.iter_mut()
                .zip(&self.image_pos)
                .for_each(|(v, p)| *v += p);
        }
        Ok(Activation {
            hidden: self.on.pre_norm(x)?,
            mask: vec![1u8; n * seq],
            batch: n,
            seq,
        })
    }

    /// Stages `block range.start..range.end` of the image tower, in place.
    pub fn image_blocks(&self, range: std::ops::Range<usize>, a: &mut Activation) -> Result<()> {
        let (h, seq) = (self.cfg.vision.hidden, self.cfg.patches() + 1);
        if a.seq != seq || a.hidden.len() != a.batch * seq * h || a.mask.len() != a.batch * seq {
            return Err(ModelError::Input(format!(
                "an activation of {} values is not {} images of {seq} rows of {h}",
                a.hidden.len(),
                a.batch
            )));
        }
        let x = std::mem::take(&mut a.hidden);
        a.hidden = self
            .on
            .blocks(Which::Image, range, x, &a.mask, a.batch, a.seq)?;
        Ok(())
    }

    /// Stage `head` of the image tower: the class token's `post_ln`, the projection,
    /// normalised, `[batch, projection]`.
    pub fn image_head(&self, a: &Activation) -> Result<Vec<f32>> {
        let (h, seq) = (self.cfg.vision.hidden, a.seq);
        let first: Vec<f32> = a
            .hidden
            .chunks_exact(seq * h)
            .flat_map(|t| t[..h].iter().copied())
            .collect();
        let mut out = self.on.head(Which::Image, first, a.batch)?;
        l2_normalize(&mut out, self.cfg.projection);
        Ok(out)
    }

    /// Normalised embeddings `[batch, projection]` of tokenized texts (each at most
    /// `context` tokens, ending with the end-of-text token where it is not cut).
    pub fn embed_texts(&self, ids: &[Vec<u32>]) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        let h = cfg.text.hidden;
        let batch = ids.len();
        if batch == 0 {
            return Ok(Vec::new());
        }
        let seq = ids.iter().map(Vec::len).max().unwrap_or(0);
        if seq > cfg.context {
            return Err(ModelError::ContextFull {
                tokens: seq,
                used: 0,
                capacity: cfg.context,
            });
        }
        if let Some(i) = ids.iter().position(Vec::is_empty) {
            return Err(ModelError::Input(format!("text {i} has no tokens")));
        }
        let mut flat = vec![0u32; batch * seq];
        let mut mask = vec![0u8; batch * seq];
        for (b, row) in ids.iter().enumerate() {
            flat[b * seq..b * seq + row.len()].copy_from_slice(row);
            mask[b * seq..b * seq + row.len()].fill(1);
        }
        let mut x = vec![0f32; batch * seq * h];
        self.tok.gather(&self.file, &flat, &mut x)?;
        for t in x.chunks_exact_mut(seq * h) {
            t.iter_mut().zip(&self.text_pos).for_each(|(v, p)| *v += p);
        }
        let x = self
            .on
            .blocks(Which::Text, 0..cfg.text.layers, x, &mask, batch, seq)?;
        // The text's vector at its first end-of-text token (transformers' pooling), or at its
        // last token when it has none (a text cut short).
        let pooled: Vec<f32> = ids
            .iter()
            .enumerate()
            .flat_map(|(b, row)| {
                let at = row
                    .iter()
                    .position(|&t| t == cfg.eos_token)
                    .unwrap_or(row.len() - 1);
                x[(b * seq + at) * h..(b * seq + at + 1) * h]
                    .iter()
                    .copied()
            })
            .collect();
        let mut out = self.on.head(Which::Text, pooled, batch)?;
        l2_normalize(&mut out, cfg.projection);
        Ok(out)
    }
}

/// The first `rows` rows of a table `[>= rows, dim]` as f32.
fn table_rows(f: &GgufFile, name: &str, dim: usize, rows: usize) -> Result<Vec<f32>> {
    let t = Table::load(f, name, dim)?;
    if t.vocab < rows {
        return Err(ModelError::Input(format!(
            "{name} has {} rows, the model needs {rows}",
            t.vocab
        )));
    }
    let mut out = vec![0f32; rows * dim];
    let which: Vec<u32> = (0..rows as u32).collect();
    t.gather(f, &which, &mut out)?;
    Ok(out)
}

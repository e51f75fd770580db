//! BERT-family encoders: BERT, MiniLM, DistilBERT and XLM-RoBERTa (post-layer-norm transformer
//! encoders), and ModernBERT (rotary pre-norm blocks, a gated feed-forward, local attention on
//! most layers).
//!
//! Papers: Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
//! Understanding" (2019); DistilBERT: Sanh et al. (2019); ModernBERT: Warner et al., "Smarter,
//! Better, Faster, Longer" (2024). Reference implementations matched: Hugging Face
//! transformers' `BertModel` / `DistilBertModel` / `ModernBertModel` (eager attention), with
//! sentence-transformers' pooling and normalisation on top.
//!
//! The model is a chain of stages, the unit the split planner cuts between:
//! `embeddings` (token + position + type embeddings, layer norm; ModernBERT: token embeddings
//! and their norm), `block 0..n-1` (self-attention and feed-forward, each followed by residual
//! add and layer norm; ModernBERT's: each preceded by its norm), and `head` (ModernBERT's final
//! norm, pooling and L2 normalisation, or the classification head).

use std::ops::Range;
use std::sync::Arc;

use edgecut_backends::ops::{l2_normalize, pool, softmax, Pooling};
use edgecut_backends::{Act, Device};
use edgecut_format::gguf::{Array, GgufFile, Value};

use crate::error::{ModelError, Result};
use crate::stages::{StageGraph, StageOutput};
use crate::weights::Table;

mod on;
mod rotary;

/// Hyper-parameters and options read from the file.
#[derive(Clone, Debug)]
pub struct BertConfig {
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Encoder blocks.
    pub layers: usize,
    /// Feed-forward size.
    pub ffn: usize,
    /// Position embeddings (the hard limit on tokens per text).
    pub context: usize,
    /// Default truncation length (sentence-transformers' `max_seq_length`, else `context`).
    pub max_seq_len: usize,
    /// Layer norm epsilon.
    pub eps: f32,
    /// Sentence pooling.
    pub pooling: Pooling,
    /// Whether sentence vectors are L2-normalised.
    pub normalize: bool,
    /// Class labels of a classification head (empty without one).
    pub labels: Vec<String>,
    /// Activation of the classification head's first layer.
    pub classifier_activation: ClassifierActivation,
    /// What the classification head reads: the first token (BERT's pooler), or the mean of the
    /// tokens (`edgecut.classifier.pooling`: ModernBERT's `classifier_pooling`).
    pub classifier_pooling: Pooling,
    /// ModernBERT's rotary blocks (`general.architecture = "modern-bert"`); `None`: BERT's
    /// learned positions and post-norm blocks.
    pub rotary: Option<RotaryConfig>,
}

/// What a rotary encoder (ModernBERT) adds to the configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RotaryConfig {
    /// Rotary base of the global layers (`{arch}.rope.freq_base`).
    pub base: f32,
    /// Rotary base of the local layers (`{arch}.rope.freq_base_swa`).
    pub local_base: f32,
    /// Local attention's reach on either side: half of `{arch}.attention.sliding_window`
    /// (ModernBERT's `local_attention`, the whole window).
    pub window: usize,
    /// Blocks `0, n, 2n, ..` attend globally (`{arch}.attention.sliding_window_pattern`), the
    /// rest locally.
    pub global_every: usize,
}

/// The activation of a classification head's first layer (`edgecut.classifier.activation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassifierActivation {
    /// `tanh`: BERT's pooler.
    Tanh,
    /// `relu`: DistilBERT's pre-classifier.
    Relu,
    /// `gelu`: ModernBERT's prediction head (followed by its norm).
    Gelu,
}

impl ClassifierActivation {
    /// The contract's activation.
    fn act(self) -> Act {
        match self {
            ClassifierActivation::Tanh => Act::Tanh,
            ClassifierActivation::Relu => Act::Relu,
            ClassifierActivation::Gelu => Act::Gelu,
        }
    }
}

impl BertConfig {
    /// Reads the configuration of a `bert` file (edgecut's or llama.cpp's).
    pub fn from_gguf(f: &GgufFile) -> Result<BertConfig> {
        let arch = f.architecture()?;
        if arch != "bert" && arch != "modern-bert" {
            return Err(ModelError::UnsupportedArchitecture {
                architecture: arch.to_string(),
                expected: "a BERT-family encoder (general.architecture = \"bert\" or \
                           \"modern-bert\")"
                    .into(),
            });
        }
        let u = |k: &str| f.get_u64(&format!("{arch}.{k}")).map(|v| v as usize);
        let (hidden, heads, layers, ffn, context) = (
            u("embedding_length")?,
            u("attention.head_count")?,
            u("block_count")?,
            u("feed_forward_length")?,
            u("context_length")?,
        );
        if heads == 0 || hidden % heads != 0 || layers == 0 || context == 0 {
            return Err(ModelError::Unsupported(format!(
                "bad hyper-parameters: hidden {hidden}, heads {heads}, blocks {layers}, context {context}"
            )));
        }
        let pooling = match f.get_str("edgecut.pooling").ok() {
            Some("cls") => Pooling::Cls,
            Some("mean") => Pooling::Mean,
            Some(other) => return Err(ModelError::Unsupported(format!("pooling {other:?}"))),
            // llama.cpp's converter records pooling as LLAMA_POOLING_TYPE (0 none, 1 mean,
            // 2 CLS, 3 last token, 4 rank: a reranker's head on the CLS token).
            None => match f.get_u64(&format!("{arch}.pooling_type")).unwrap_or(2) {
                1 => Pooling::Mean,
                0 | 2 | 4 => Pooling::Cls,
                other => {
                    return Err(ModelError::Unsupported(format!(
                        "{arch}.pooling_type {other} (edgecut pools BERT encoders by mean or CLS)"
                    )))
                }
            },
        };
        let labels = match f.get("edgecut.labels") {
            Some(Value::Array(Array::Str(v))) => v.clone(),
            _ => Vec::new(),
        };
        // An activation edgecut does not know is refused at load, not run as another one.
        let classifier_activation = match f.get_str("edgecut.classifier.activation").ok() {
            None | Some("tanh") => ClassifierActivation::Tanh,
            Some("relu") => ClassifierActivation::Relu,
            Some("gelu") => ClassifierActivation::Gelu,
            Some(other) => {
                return Err(ModelError::Unsupported(format!(
                    "classifier activation {other:?} (edgecut runs tanh, relu and gelu)"
                )))
            }
        };
        let act = f.get_str("edgecut.hidden_act").unwrap_or("gelu");
        if act != "gelu" {
            return Err(ModelError::Unsupported(format!(
                "hidden activation {act:?} (edgecut runs gelu)"
            )));
        }
        Ok(BertConfig {
            hidden,
            heads,
            layers,
            ffn,
            context,
            max_seq_len: f
                .get_u64("edgecut.max_seq_len")
                .map_or(context, |v| (v as usize).min(context)),
            eps: f
                .get_f64(&format!("{arch}.attention.layer_norm_epsilon"))
                .unwrap_or(1e-12) as f32,
            pooling,
            // llama.cpp normalises embeddings by default; so does edgecut when the file is silent.
            normalize: f
                .get("edgecut.normalize")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            labels,
            classifier_activation,
            classifier_pooling: match f.get_str("edgecut.classifier.pooling").ok() {
                None | Some("cls") => Pooling::Cls,
                Some("mean") => Pooling::Mean,
                Some(other) => {
                    return Err(ModelError::Unsupported(format!(
                        "classifier pooling {other:?} (edgecut runs cls and mean)"
                    )))
                }
            },
            rotary: match arch {
                "modern-bert" => Some(rotary_config(f, arch, layers)?),
                _ => None,
            },
        })
    }

    /// The sizes every block shares: GELU feed-forwards, attention over the whole text (a
    /// rotary block's window is its own).
    pub(crate) fn dims(&self) -> edgecut_backends::encoder::EncoderDims {
        edgecut_backends::encoder::EncoderDims {
            hidden: self.hidden,
            heads: self.heads,
            ffn: self.ffn,
            eps: self.eps,
            act: Act::Gelu,
            causal: false,
        }
    }
}

/// ModernBERT's rotary bases and local attention from the file.
fn rotary_config(f: &GgufFile, arch: &str, layers: usize) -> Result<RotaryConfig> {
    let key = |k: &str| format!("{arch}.{k}");
    let base = f.get_f64(&key("rope.freq_base"))? as f32;
    let local_base = f
        .get_f64(&key("rope.freq_base_swa"))
        .map_or(base, |b| b as f32);
    let whole = f.get_u64(&key("attention.sliding_window"))? as usize;
    let every = f.get_u64(&key("attention.sliding_window_pattern"))? as usize;
    let finite = |b: f32| b.is_finite() && b > 1.0;
    if !finite(base) || !finite(local_base) || whole < 2 || every == 0 {
        return Err(ModelError::Unsupported(format!(
            "bad rotary settings: bases {base} and {local_base}, window {whole}, global every \
             {every} of {layers} blocks"
        )));
    }
    Ok(RotaryConfig {
        base,
        local_base,
        window: whole / 2,
        global_every: every,
    })
}

/// The activation between stages: token vectors of a padded batch and its mask.
#[derive(Clone, Debug)]
pub struct Activation {
    /// `[batch * seq, hidden]`.
    pub hidden: Vec<f32>,
    /// `[batch * seq]`: 1 for tokens, 0 for padding.
    pub mask: Vec<u8>,
    /// Texts in the batch.
    pub batch: usize,
    /// Tokens per text (padded).
    pub seq: usize,
}

/// A loaded encoder, on the device it was loaded for: BERT-family post-norm blocks, or
/// ModernBERT's rotary ones (the registry opens `bert` and `modern-bert` files as it).
pub struct Encoder {
    /// Configuration.
    pub cfg: BertConfig,
    file: Arc<GgufFile>,
    tok: Table,
    /// Learned positions (`None`: rotary positions inside the blocks).
    pos: Option<Table>,
    types: Option<Table>,
    /// The embedding norm, the blocks and the head, prepared for the device's backend.
    on: Box<dyn on::Run>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Encoder({}, {} blocks, hidden {})",
            if self.cfg.rotary.is_some() {
                "ModernBERT"
            } else {
                "BERT"
            },
            self.cfg.layers,
            self.cfg.hidden
        )
    }
}

impl Encoder {
    /// Loads the encoder from an open file for `dev`, checking every tensor's shape.
    pub fn load(file: Arc<GgufFile>, dev: &Device) -> Result<Encoder> {
        let f = &*file;
        let cfg = BertConfig::from_gguf(f)?;
        let h = cfg.hidden;
        let tok = Table::load(f, "token_embd.weight", h)?;
        let pos = match cfg.rotary {
            Some(_) => None,
            None => {
                let pos = Table::load(f, "position_embd.weight", h)?;
                if pos.vocab < cfg.context {
                    return Err(ModelError::Input(format!(
                        "position_embd.weight has {} rows, the context length is {}",
                        pos.vocab, cfg.context
                    )));
                }
                Some(pos)
            }
        };
        let types = match f.tensor("token_types.weight") {
            Some(_) => Some(Table::load(f, "token_types.weight", h)?),
            None => None,
        };
        let on = match &cfg.rotary {
            Some(rotary) => dev.instantiate(rotary::Load {
                file: &file,
                cfg: &cfg,
                rotary,
            })?,
            None => dev.instantiate(on::Load {
                file: &file,
                cfg: &cfg,
            })?,
        };
        Ok(Encoder {
            cfg,
            file,
            tok,
            pos,
            types,
            on,
        })
    }

    /// The file the model was loaded from.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Number of classes of the classification head, if the model has one.
    pub fn n_classes(&self) -> Option<usize> {
        self.on.n_classes()
    }

    /// Bytes of weights held outside the file map (copies, repacked layouts, device memory).
    pub fn owned_bytes(&self) -> usize {
        self.on.owned_bytes()
    }

    /// The model's stages: embeddings, each block, the head (pooling or the classifier), with
    /// their weight bytes; a block hands on `hidden` values and a mask byte per token.
    pub fn stages(&self) -> StageGraph {
        let h = self.cfg.hidden as u64;
        let out = self.n_classes().map_or(h, |c| c as u64);
        let head = StageOutput {
            per_token: 0,
            fixed: out,
            side_bytes_per_token: 0,
        };
        // Raw input: a u32 token id and a mask byte per token.
        StageGraph::chain(
            &self.file,
            self.cfg.layers,
            &["cls", "output_norm"],
            h,
            1,
            head,
            5,
        )
    }

    /// Stage `embeddings`: token ids of a batch (each at most `context` long) to token vectors.
    pub fn embeddings(&self, ids: &[Vec<u32>]) -> Result<Activation> {
        self.embeddings_typed(ids, None)
    }

    /// Stage `embeddings` with a token type (segment) per token, as a cross-encoder's
    /// query/document pair has; `None` is type 0 throughout.
    pub fn embeddings_typed(
        &self,
        ids: &[Vec<u32>],
        types: Option<&[Vec<u32>]>,
    ) -> Result<Activation> {
        let h = self.cfg.hidden;
        let batch = ids.len();
        let seq = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        if seq > self.cfg.context {
            return Err(ModelError::ContextFull {
                tokens: seq,
                used: 0,
                capacity: self.cfg.context,
            });
        }
        if let Some(t) = types {
            if t.len() != batch || t.iter().zip(ids).any(|(t, i)| t.len() != i.len()) {
                return Err(ModelError::Input(
                    "token types do not match the token ids text for text".into(),
                ));
            }
        }
        // A model without a type table (DistilBERT, ModernBERT) takes no token types: its
        // PyTorch forward has no such input, so a pair template's types are not used.
        let types = types.filter(|_| self.types.is_some());
        // The types in use (type 0 always: padding and untyped texts).
        let n_types = types
            .into_iter()
            .flatten()
            .flatten()
            .map(|&t| t as usize + 1)
            .max()
            .unwrap_or(1);
        let table_rows = self.types.as_ref().map_or(1, |t| t.vocab);
        if n_types > table_rows {
            return Err(ModelError::Input(format!(
                "token type {} is past the model's {table_rows} token types",
                n_types - 1
            )));
        }
        let mut flat = vec![0u32; batch * seq];
        let mut mask = vec![0u8; batch * seq];
        for (b, row) in ids.iter().enumerate() {
            flat[b * seq..b * seq + row.len()].copy_from_slice(row);
            mask[b * seq..b * seq + row.len()].fill(1);
        }
        let mut hidden = vec![0f32; batch * seq * h];
        self.tok.gather(&self.file, &flat, &mut hidden)?;
        // Rotary encoders have neither learned positions nor token types: nothing to add.
        if self.pos.is_some() || self.types.is_some() {
            let positions: Vec<u32> = (0..seq as u32).collect();
            let mut pos = vec![0f32; seq * h];
            if let Some(p) = &self.pos {
                p.gather(&self.file, &positions, &mut pos)?;
            }
            let mut ty = vec![0f32; n_types * h];
            if let Some(t) = &self.types {
                let which: Vec<u32> = (0..n_types as u32).collect();
                t.gather(&self.file, &which, &mut ty)?;
            }
            // Position plus type embedding once per type in use, then one vectorisable add per
            // token (the same sums).
            let mut pos_ty = vec![0f32; n_types * seq * h];
            for (t, block) in pos_ty.chunks_exact_mut(seq * h).enumerate() {
                let trow = &ty[t * h..(t + 1) * h];
                for (out, prow) in block.chunks_exact_mut(h).zip(pos.chunks_exact(h)) {
                    out.iter_mut()
                        .zip(prow.iter().zip(trow))
                        .for_each(|(o, (p, t))| *o = p + t);
                }
            }
            for (b, row) in hidden.chunks_exact_mut(seq * h).enumerate() {
                let text_types = types.map(|t| &t[b]);
                for (s, x) in row.chunks_exact_mut(h).enumerate() {
                    let t = text_types.and_then(|t| t.get(s)).copied().unwrap_or(0) as usize;
                    let add = &pos_ty[(t * seq + s) * h..(t * seq + s + 1) * h];
                    x.iter_mut().zip(add).for_each(|(x, p)| *x += p);
                }
            }
        }
        let hidden = self.on.embedding_norm(hidden)?;
        Ok(Activation {
            hidden,
            mask,
            batch,
            seq,
        })
    }

    /// Stage `block i`: one encoder block, in place.
    pub fn block(&self, i: usize, a: &mut Activation) -> Result<()> {
        self.blocks(i..i + 1, a)
    }

    /// Stages `block range.start` to `block range.end - 1`, in place. On a GPU the activation
    /// crosses to the device and back once for the whole run.
    pub fn blocks(&self, range: Range<usize>, a: &mut Activation) -> Result<()> {
        if range.start > range.end || range.end > self.cfg.layers {
            return Err(ModelError::Input(format!(
                "no blocks {}..{} (the model has {})",
                range.start, range.end, self.cfg.layers
            )));
        }
        let rows = a.batch * a.seq;
        if a.hidden.len() != rows * self.cfg.hidden || a.mask.len() != rows {
            return Err(ModelError::Input(format!(
                "an activation of {} values and {} mask entries is not {} texts of {} tokens",
                a.hidden.len(),
                a.mask.len(),
                a.batch,
                a.seq
            )));
        }
        self.on.blocks(range, a)
    }

    /// Every stage but the head.
    pub fn encode(&self, ids: &[Vec<u32>]) -> Result<Activation> {
        self.encode_typed(ids, None)
    }

    /// Every stage but the head, with token types (see [`Encoder::embeddings_typed`]).
    pub fn encode_typed(&self, ids: &[Vec<u32>], types: Option<&[Vec<u32>]>) -> Result<Activation> {
        let mut a = self.embeddings_typed(ids, types)?;
        self.blocks(0..self.cfg.layers, &mut a)?;
        Ok(a)
    }

    /// Stage `head` for embeddings: pooled (and normalised) sentence vectors, `[batch, hidden]`.
    pub fn pool(&self, a: &Activation) -> Result<Vec<f32>> {
        let h = self.cfg.hidden;
        let mut out = vec![0f32; a.batch * h];
        let normed = self.on.final_norm(&a.hidden)?;
        pool(
            normed.as_deref().unwrap_or(&a.hidden),
            &a.mask,
            a.batch,
            a.seq,
            h,
            self.cfg.pooling,
            &mut out,
        )?;
        if self.cfg.normalize {
            l2_normalize(&mut out, h);
        }
        Ok(out)
    }

    /// Every stage and the classification head ([`Encoder::encode_typed`] then
    /// [`Encoder::classify`]). Where the head reads each text's first token, the last block
    /// runs its output projection and feed-forward on those rows alone (the other rows'
    /// outputs are never read: a sixth of MiniLM's products in reranking); the logits are those
    /// of the whole run up to the rounding of product kernels run on fewer rows.
    pub fn classify_ids(&self, ids: &[Vec<u32>], types: Option<&[Vec<u32>]>) -> Result<Vec<f32>> {
        let mut a = self.embeddings_typed(ids, types)?;
        let layers = self.cfg.layers;
        if self.cfg.classifier_pooling == Pooling::Cls && layers > 0 && a.batch > 0 {
            self.blocks(0..layers - 1, &mut a)?;
            if let Some(first) = self.on.block_first_rows(layers - 1, &a)? {
                return self.on.classify(first, a.batch);
            }
            self.blocks(layers - 1..layers, &mut a)?;
        } else {
            self.blocks(0..layers, &mut a)?;
        }
        self.classify(&a)
    }

    /// Stage `head` for classification: logits `[batch, classes]` from the first token (or the
    /// mean of the tokens, as the file says).
    pub fn classify(&self, a: &Activation) -> Result<Vec<f32>> {
        let h = self.cfg.hidden;
        let mut first = vec![0f32; a.batch * h];
        let normed = self.on.final_norm(&a.hidden)?;
        pool(
            normed.as_deref().unwrap_or(&a.hidden),
            &a.mask,
            a.batch,
            a.seq,
            h,
            self.cfg.classifier_pooling,
            &mut first,
        )?;
        self.on.classify(first, a.batch)
    }
}

/// Softmax over each row of `logits` (rows of `n`).
pub fn probabilities(logits: &[f32], n: usize) -> Vec<f32> {
    let mut p = logits.to_vec();
    p.chunks_exact_mut(n).for_each(softmax);
    p
}

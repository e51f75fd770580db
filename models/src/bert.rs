//! BERT-family encoders: BERT, MiniLM and DistilBERT (post-layer-norm transformer encoders).
//!
//! Paper: Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
//! Understanding" (2019); DistilBERT: Sanh et al. (2019). Reference implementation matched:
//! Hugging Face transformers' `BertModel` / `DistilBertModel` (eager attention), with
//! sentence-transformers' pooling and normalisation on top.
//!
//! The model is a chain of stages, the unit the split planner cuts between:
//! `embeddings` (token + position + type embeddings, layer norm), `block 0..n-1` (self-attention
//! and feed-forward, each followed by residual add and layer norm), and `head` (pooling and L2
//! normalisation, or the classification head).

use std::ops::Range;
use std::sync::Arc;

use edgecut_backends::ops::{l2_normalize, pool, softmax, ActQuant, Pooling};
use edgecut_backends::Device;
use edgecut_runtime::gguf::{Array, GgufFile, Value};

use crate::error::{ModelError, Result};
use crate::weights::{vector, Matrix, Table};

mod cpu;

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
}

/// The activation of a classification head's first layer (`edgecut.classifier.activation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassifierActivation {
    /// `tanh`: BERT's pooler.
    Tanh,
    /// `relu`: DistilBERT's pre-classifier.
    Relu,
}

impl ClassifierActivation {
    /// Applies the activation in place.
    fn apply(self, x: &mut [f32]) {
        match self {
            ClassifierActivation::Tanh => x.iter_mut().for_each(|v| *v = v.tanh()),
            ClassifierActivation::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
    }
}

impl BertConfig {
    /// Reads the configuration of a `bert` file (edgecut's or llama.cpp's).
    pub fn from_gguf(f: &GgufFile) -> Result<BertConfig> {
        let arch = f.architecture()?;
        if arch != "bert" {
            return Err(ModelError::UnsupportedArchitecture {
                architecture: arch.to_string(),
                expected: "a BERT-family encoder (general.architecture = \"bert\")",
            });
        }
        let u = |k: &str| f.get_u64(&format!("bert.{k}")).map(|v| v as usize);
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
            // llama.cpp's converter records pooling as LLAMA_POOLING_TYPE (1 mean, 2 CLS).
            None => match f.get_u64("bert.pooling_type").unwrap_or(2) {
                1 => Pooling::Mean,
                _ => Pooling::Cls,
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
            Some(other) => {
                return Err(ModelError::Unsupported(format!(
                    "classifier activation {other:?} (edgecut runs tanh and relu)"
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
                .get_f64("bert.attention.layer_norm_epsilon")
                .unwrap_or(1e-12) as f32,
            pooling,
            // llama.cpp normalises embeddings by default; so does edgecut when the file is silent.
            normalize: f
                .get("edgecut.normalize")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            labels,
            classifier_activation,
        })
    }
}

#[derive(Debug)]
pub(crate) struct Norm {
    pub(crate) gamma: Vec<f32>,
    pub(crate) beta: Vec<f32>,
}

impl Norm {
    fn load(f: &GgufFile, prefix: &str, dim: usize) -> Result<Norm> {
        Ok(Norm {
            gamma: vector(f, &format!("{prefix}.weight"), dim)?,
            beta: vector(f, &format!("{prefix}.bias"), dim)?,
        })
    }

    /// BERT's post-norm residual: `x = LayerNorm(x + delta)`, rows of `dim`.
    fn residual(
        &self,
        dev: &Device,
        x: &mut [f32],
        delta: &[f32],
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        dev.backend()
            .add_layer_norm(x, delta, dim, &self.gamma, &self.beta, eps)
            .map_err(ModelError::from)
    }
}

#[derive(Debug)]
pub(crate) enum Qkv {
    Stacked(Matrix),
    Separate(Box<[Matrix; 3]>),
}

#[derive(Debug)]
pub(crate) struct Block {
    /// q, k and v, stacked (3 x hidden rows) when their storage allows, else separate.
    pub(crate) qkv: Qkv,
    pub(crate) o: Matrix,
    pub(crate) attn_norm: Norm,
    pub(crate) up: Matrix,
    pub(crate) down: Matrix,
    pub(crate) out_norm: Norm,
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

/// A loaded BERT-family encoder.
pub struct Bert {
    /// Configuration.
    pub cfg: BertConfig,
    file: Arc<GgufFile>,
    tok: Table,
    pos: Table,
    types: Option<Table>,
    emb_norm: Norm,
    blocks: Vec<Block>,
    head: Option<(Matrix, Matrix)>,
    /// The blocks uploaded, when loaded for a GPU device.
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    gpu: Option<crate::bert_gpu::GpuEncoder>,
}

impl std::fmt::Debug for Bert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Bert({} blocks, hidden {})",
            self.cfg.layers, self.cfg.hidden
        )
    }
}

impl Bert {
    /// Loads the encoder from an open file for `dev`, checking every tensor's shape.
    pub fn load(file: Arc<GgufFile>, dev: &Device) -> Result<Bert> {
        let f = &*file;
        let cfg = BertConfig::from_gguf(f)?;
        let h = cfg.hidden;
        let tok = Table::load(f, "token_embd.weight", h)?;
        let pos = Table::load(f, "position_embd.weight", h)?;
        if pos.vocab < cfg.context {
            return Err(ModelError::Input(format!(
                "position_embd.weight has {} rows, the context length is {}",
                pos.vocab, cfg.context
            )));
        }
        let types = match f.tensor("token_types.weight") {
            Some(_) => Some(Table::load(f, "token_types.weight", h)?),
            None => None,
        };
        let emb_norm = Norm::load(f, "token_embd_norm", h)?;
        let blocks = (0..cfg.layers)
            .map(|i| {
                let p = |n: &str| format!("blk.{i}.{n}");
                // Layer-norm outputs carry outlier channels that make int8 per 32 values coarse
                // (MiniLM's worst cosine to PyTorch 0.9981); q, k, v and ffn_up read them, so
                // their outlier columns run in f32 (worst cosine 0.9993). The attention output
                // and ffn_down inputs gain little from it.
                let x2 = |mut m: Matrix| {
                    m.act = ActQuant::Int8Outliers;
                    m
                };
                Ok(Block {
                    qkv: {
                        let parts = ["attn_q", "attn_k", "attn_v"]
                            .iter()
                            .map(|n| Matrix::load(f, dev, &p(n), h, h, true).map(x2))
                            .collect::<Result<Vec<_>>>()?;
                        match Matrix::stack(parts, f, dev) {
                            Ok(m) => Qkv::Stacked(m),
                            Err(parts) => {
                                Qkv::Separate(Box::new(parts.try_into().expect("three parts")))
                            }
                        }
                    },
                    o: Matrix::load(f, dev, &p("attn_output"), h, h, true)?,
                    attn_norm: Norm::load(f, &p("attn_output_norm"), h)?,
                    up: x2(Matrix::load(f, dev, &p("ffn_up"), cfg.ffn, h, true)?),
                    down: Matrix::load(f, dev, &p("ffn_down"), h, cfg.ffn, true)?,
                    out_norm: Norm::load(f, &p("layer_output_norm"), h)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let head = match f.tensor("cls.output.weight") {
            None => None,
            Some(t) => {
                let n_labels = t.info.dims.get(1).copied().unwrap_or(0) as usize;
                Some((
                    Matrix::load(f, dev, "cls", h, h, true)?,
                    Matrix::load(f, dev, "cls.output", n_labels, h, true)?,
                ))
            }
        };
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        let gpu = match dev.gpu() {
            Some(g) => Some(crate::bert_gpu::GpuEncoder::upload(g, &file, &blocks)?),
            None => None,
        };
        Ok(Bert {
            cfg,
            file,
            tok,
            pos,
            types,
            emb_norm,
            blocks,
            head,
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            gpu,
        })
    }

    /// The file the model was loaded from.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Number of classes of the classification head, if the model has one.
    pub fn n_classes(&self) -> Option<usize> {
        self.head.as_ref().map(|(_, o)| o.n)
    }

    /// Stage `embeddings`: token ids of a batch (each at most `context` long) to token vectors.
    pub fn embeddings(&self, dev: &Device, ids: &[Vec<u32>]) -> Result<Activation> {
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
        let mut flat = vec![0u32; batch * seq];
        let mut mask = vec![0u8; batch * seq];
        for (b, row) in ids.iter().enumerate() {
            flat[b * seq..b * seq + row.len()].copy_from_slice(row);
            mask[b * seq..b * seq + row.len()].fill(1);
        }
        let mut hidden = vec![0f32; batch * seq * h];
        self.tok.gather(&self.file, &flat, &mut hidden)?;
        let positions: Vec<u32> = (0..seq as u32).collect();
        let mut pos = vec![0f32; seq * h];
        self.pos.gather(&self.file, &positions, &mut pos)?;
        let mut ty = vec![0f32; h];
        if let Some(t) = &self.types {
            t.gather(&self.file, &[0], &mut ty)?;
        }
        // Position plus type embedding once, then one vectorisable add per text (the same sums).
        for prow in pos.chunks_exact_mut(h) {
            prow.iter_mut().zip(&ty).for_each(|(p, t)| *p += t);
        }
        for row in hidden.chunks_exact_mut(seq * h) {
            row.iter_mut().zip(&pos).for_each(|(x, p)| *x += p);
        }
        let cpu = dev.backend();
        cpu.layer_norm(
            &mut hidden,
            h,
            &self.emb_norm.gamma,
            &self.emb_norm.beta,
            self.cfg.eps,
        )
        .map_err(ModelError::from)?;
        Ok(Activation {
            hidden,
            mask,
            batch,
            seq,
        })
    }

    /// Stage `block i`: one encoder block, in place.
    pub fn block(&self, dev: &Device, i: usize, a: &mut Activation) -> Result<()> {
        self.blocks(dev, i..i + 1, a)
    }

    /// Stages `block range.start` to `block range.end - 1`, in place. On a GPU device the
    /// activation crosses to the GPU and back once for the whole run.
    pub fn blocks(&self, dev: &Device, range: Range<usize>, a: &mut Activation) -> Result<()> {
        if range.end > self.blocks.len() {
            return Err(ModelError::Input(format!(
                "no block {} (the model has {})",
                range.end - 1,
                self.blocks.len()
            )));
        }
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        if let (Some(g), Some(enc)) = (dev.gpu(), &self.gpu) {
            return enc.run(g, &self.cfg, range, a);
        }
        self.cpu_blocks(dev, range, a)
    }

    /// Every stage but the head.
    pub fn encode(&self, dev: &Device, ids: &[Vec<u32>]) -> Result<Activation> {
        let mut a = self.embeddings(dev, ids)?;
        self.blocks(dev, 0..self.cfg.layers, &mut a)?;
        Ok(a)
    }

    /// Stage `head` for embeddings: pooled (and normalised) sentence vectors, `[batch, hidden]`.
    pub fn pool(&self, a: &Activation) -> Result<Vec<f32>> {
        let h = self.cfg.hidden;
        let mut out = vec![0f32; a.batch * h];
        pool(
            &a.hidden,
            &a.mask,
            a.batch,
            a.seq,
            h,
            self.cfg.pooling,
            &mut out,
        )
        .map_err(ModelError::from)?;
        if self.cfg.normalize {
            l2_normalize(&mut out, h);
        }
        Ok(out)
    }

    /// Stage `head` for classification: logits `[batch, classes]` from the first token.
    pub fn classify(&self, dev: &Device, a: &Activation) -> Result<Vec<f32>> {
        let (pre, out) = self.head.as_ref().ok_or(ModelError::NoClassifier)?;
        let h = self.cfg.hidden;
        let mut first = vec![0f32; a.batch * h];
        pool(
            &a.hidden,
            &a.mask,
            a.batch,
            a.seq,
            h,
            Pooling::Cls,
            &mut first,
        )
        .map_err(ModelError::from)?;
        let cpu = dev.backend();
        let mut x = vec![0f32; a.batch * h];
        cpu.linear(&first, a.batch, &pre.linear(&self.file), &mut x)
            .map_err(ModelError::from)?;
        self.cfg.classifier_activation.apply(&mut x);
        let mut logits = vec![0f32; a.batch * out.n];
        cpu.linear(&x, a.batch, &out.linear(&self.file), &mut logits)
            .map_err(ModelError::from)?;
        Ok(logits)
    }
}

/// Softmax over each row of `logits` (rows of `n`).
pub fn probabilities(logits: &[f32], n: usize) -> Vec<f32> {
    let mut p = logits.to_vec();
    p.chunks_exact_mut(n).for_each(softmax);
    p
}

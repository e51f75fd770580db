//! BERT's weights and runs on one backend, written once over the contract: [`On<B>`] is
//! monomorphised for each backend by [`Load`] (the [`edgecut_backends::Device`] picks which),
//! and the model holds it as a [`Run`] trait object, so nothing generic leaks out.

use std::ops::Range;
use std::sync::Arc;

use edgecut_backends::encoder::{EncoderBlock, EncoderDims, LayerNorm};
use edgecut_backends::ops::ActQuant;
use edgecut_backends::{Backend, Instantiate, Op, PreparedMatrix};
use edgecut_format::gguf::GgufFile;

use super::{Activation, BertConfig, ClassifierActivation};
use crate::error::Result;
use crate::weights::{Bias, Weights};

/// What the model asks of its backend-specific half.
pub(super) trait Run: Send + Sync {
    fn n_classes(&self) -> Option<usize>;
    fn owned_bytes(&self) -> usize;
    /// The embedding layer norm of summed embeddings `[rows, hidden]`.
    fn embedding_norm(&self, hidden: Vec<f32>) -> Result<Vec<f32>>;
    /// Blocks `range` (checked by the caller) on `a`, in place.
    fn blocks(&self, range: Range<usize>, a: &mut Activation) -> Result<()>;
    /// The classification head on first-token vectors `[batch, hidden]`.
    fn classify(&self, first: Vec<f32>, batch: usize) -> Result<Vec<f32>>;
}

/// The classification head: a pre-classifier layer, its activation, the output layer.
struct Head<B: Backend> {
    pre: B::Matrix,
    act: ClassifierActivation,
    out: B::Matrix,
}

/// Everything of BERT that runs on backend `B`.
struct On<B: Backend> {
    b: B,
    dims: EncoderDims,
    emb_norm: LayerNorm<B>,
    blocks: Vec<EncoderBlock<B>>,
    head: Option<Head<B>>,
}

/// Loads BERT's weights for the device's backend.
pub(super) struct Load<'a> {
    pub(super) file: &'a Arc<GgufFile>,
    pub(super) cfg: &'a BertConfig,
}

impl Instantiate for Load<'_> {
    type Output = Result<Box<dyn Run>>;

    fn on<B: Backend>(self, b: &B) -> Self::Output {
        let (f, cfg) = (self.file, self.cfg);
        let w = Weights::new(f, b);
        let h = cfg.hidden;
        let norm = |p: &str| -> Result<LayerNorm<B>> {
            Ok(LayerNorm {
                gamma: w.vector(&format!("{p}.weight"), h)?,
                beta: w.vector(&format!("{p}.bias"), h)?,
            })
        };
        // Layer-norm outputs carry outlier channels that make int8 per 32 values coarse
        // (MiniLM's worst cosine to PyTorch 0.9981); q, k, v and ffn_up read them, so their
        // outlier columns run in f32 (worst cosine 0.9993). The attention output and ffn_down
        // inputs gain little from it.
        let (plain, outliers) = (ActQuant::Int8, ActQuant::Int8Outliers);
        w.check_ops(&Op::ENCODER, "an encoder")?;
        // Every matrix's weight type is asked of the backend before any is read.
        let matrices = |names: &[&str]| -> Vec<String> {
            (0..cfg.layers)
                .flat_map(|i| names.iter().map(move |n| format!("blk.{i}.{n}")))
                .collect()
        };
        w.check_supported(
            &matrices(&["attn_q", "attn_k", "attn_v", "ffn_up"]),
            outliers,
        )?;
        w.check_supported(&matrices(&["attn_output", "ffn_down"]), plain)?;
        let blocks = (0..cfg.layers)
            .map(|i| {
                let p = |n: &str| format!("blk.{i}.{n}");
                let (q, k, v) = (p("attn_q"), p("attn_k"), p("attn_v"));
                Ok(EncoderBlock {
                    qkv: w.stacked([&q, &k, &v], h, h, Bias::Required, outliers)?,
                    o: w.matrix(&p("attn_output"), h, h, Bias::Required, plain)?,
                    attn_norm: norm(&p("attn_output_norm"))?,
                    up: w.matrix(&p("ffn_up"), cfg.ffn, h, Bias::Required, outliers)?,
                    down: w.matrix(&p("ffn_down"), h, cfg.ffn, Bias::Required, plain)?,
                    out_norm: norm(&p("layer_output_norm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let head = match f.tensor("cls.output.weight") {
            None => None,
            Some(t) => {
                let n_labels = t.info.dims.get(1).copied().unwrap_or(0) as usize;
                Some(Head {
                    pre: w.matrix("cls", h, h, Bias::Required, plain)?,
                    act: cfg.classifier_activation,
                    out: w.matrix("cls.output", n_labels, h, Bias::Required, plain)?,
                })
            }
        };
        Ok(Box::new(On {
            b: b.clone(),
            dims: EncoderDims {
                hidden: h,
                heads: cfg.heads,
                ffn: cfg.ffn,
                eps: cfg.eps,
                act: edgecut_backends::Act::Gelu,
                causal: false,
            },
            emb_norm: norm("token_embd_norm")?,
            blocks,
            head,
        }))
    }
}

impl<B: Backend> Run for On<B> {
    fn n_classes(&self) -> Option<usize> {
        self.head.as_ref().map(|h| h.out.n())
    }

    fn owned_bytes(&self) -> usize {
        let blocks = self.blocks.iter().map(|b| {
            let qkv = match &b.qkv {
                edgecut_backends::encoder::Qkv::Stacked(m) => m.owned_bytes(),
                edgecut_backends::encoder::Qkv::Separate(p) => {
                    p.iter().map(PreparedMatrix::owned_bytes).sum()
                }
            };
            qkv + b.o.owned_bytes() + b.up.owned_bytes() + b.down.owned_bytes()
        });
        let head = self
            .head
            .as_ref()
            .map_or(0, |h| h.pre.owned_bytes() + h.out.owned_bytes());
        blocks.sum::<usize>() + head
    }

    fn embedding_norm(&self, hidden: Vec<f32>) -> Result<Vec<f32>> {
        let mut x = self.b.upload(hidden);
        let n = &self.emb_norm;
        let (h, eps) = (self.dims.hidden, self.dims.eps);
        self.b.layer_norm(&mut x, None, h, &n.gamma, &n.beta, eps)?;
        Ok(self.b.download(x)?)
    }

    fn blocks(&self, range: Range<usize>, a: &mut Activation) -> Result<()> {
        let mut x = self.b.upload(std::mem::take(&mut a.hidden));
        let (mask, batch, seq) = (&a.mask, a.batch, a.seq);
        self.b
            .encoder_blocks(&self.blocks[range], &self.dims, &mut x, mask, batch, seq)?;
        a.hidden = self.b.download(x)?;
        Ok(())
    }

    fn classify(&self, first: Vec<f32>, batch: usize) -> Result<Vec<f32>> {
        let head = self.head.as_ref().ok_or(crate::ModelError::NoClassifier)?;
        let x = self.b.upload(first);
        let mut y = self.b.buffer(batch * head.pre.n());
        self.b.linear(&x, batch, &head.pre, &mut y)?;
        self.b.activate(&mut y, head.act.act())?;
        let mut logits = self.b.buffer(batch * head.out.n());
        self.b.linear(&y, batch, &head.out, &mut logits)?;
        Ok(self.b.download(logits)?)
    }
}

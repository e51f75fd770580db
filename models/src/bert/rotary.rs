//! ModernBERT's weights and runs on one backend, written once over the contract (as BERT's
//! `on.rs`): token embeddings and their norm, rotary pre-norm blocks
//! ([`edgecut_backends::encoder_rotary`]) of global or local attention, the final norm.

use std::ops::Range;
use std::sync::Arc;

use edgecut_backends::encoder::{EncoderDims, LayerNorm};
use edgecut_backends::encoder_rotary::RotaryBlock;
use edgecut_backends::ops::ActQuant;
use edgecut_backends::{Backend, Instantiate, Op, PreparedMatrix};
use edgecut_format::gguf::GgufFile;

use super::on::Run;
use super::{Activation, BertConfig, RotaryConfig};
use crate::error::{ModelError, Result};
use crate::weights::{Bias, Weights};

/// ModernBERT's classification head: the prediction head (dense, GELU, norm), then the
/// classifier.
struct Head<B: Backend> {
    dense: B::Matrix,
    norm: LayerNorm<B>,
    out: B::Matrix,
}

/// Everything of a rotary encoder that runs on backend `B`.
struct On<B: Backend> {
    b: B,
    dims: EncoderDims,
    emb_norm: LayerNorm<B>,
    blocks: Vec<RotaryBlock<B>>,
    final_norm: LayerNorm<B>,
    head: Option<Head<B>>,
}

/// Loads a rotary encoder's weights for the device's backend.
pub(super) struct Load<'a> {
    pub(super) file: &'a Arc<GgufFile>,
    pub(super) cfg: &'a BertConfig,
    pub(super) rotary: &'a RotaryConfig,
}

/// One frequency per rotated pair of a head of `head_dim`: `base^(-2p / head_dim)`, as
/// transformers' default rotary embedding computes them.
fn inv_freq(base: f32, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|p| 1.0 / (base as f64).powf(2.0 * p as f64 / head_dim as f64) as f32)
        .collect()
}

impl Instantiate for Load<'_> {
    type Output = Result<Box<dyn Run>>;

    fn on<B: Backend>(self, b: &B) -> Self::Output {
        let (f, cfg, r) = (self.file, self.cfg, self.rotary);
        let w = Weights::new(f, b);
        let (h, ffn) = (cfg.hidden, cfg.ffn);
        let head_dim = h / cfg.heads;
        w.check_ops(&Op::ROTARY_ENCODER, "a rotary encoder")?;
        // ModernBERT normalises before each product (pre-norm), so no input of a matrix is a
        // residual stream with BERT's outlier channels: int8 activations throughout.
        let act = ActQuant::Int8;
        let names =
            |n: &str| -> Vec<String> { (0..cfg.layers).map(|i| format!("blk.{i}.{n}")).collect() };
        for n in ["attn_qkv", "attn_output", "ffn_gate", "ffn_up", "ffn_down"] {
            w.check_supported(&names(n), act)?;
        }
        let blocks = (0..cfg.layers)
            .map(|i| {
                let p = |n: &str| format!("blk.{i}.{n}");
                let global = i % r.global_every == 0;
                Ok(RotaryBlock {
                    attn_norm: match i {
                        0 => None,
                        _ => Some(w.layer_norm_shift_optional(&p("attn_norm"), h)?),
                    },
                    qkv: w.matrix(&p("attn_qkv"), 3 * h, h, Bias::IfPresent, act)?,
                    o: w.matrix(&p("attn_output"), h, h, Bias::IfPresent, act)?,
                    window: (!global).then_some(r.window),
                    inv_freq: b.vector(&inv_freq(
                        if global { r.base } else { r.local_base },
                        head_dim,
                    )),
                    ffn_norm: w.layer_norm_shift_optional(&p("ffn_norm"), h)?,
                    gate: w.matrix(&p("ffn_gate"), ffn, h, Bias::IfPresent, act)?,
                    up: w.matrix(&p("ffn_up"), ffn, h, Bias::IfPresent, act)?,
                    down: w.matrix(&p("ffn_down"), h, ffn, Bias::IfPresent, act)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let head = match super::on::head_labels(f) {
            None => None,
            Some(n_labels) => Some(Head {
                dense: w.matrix("cls", h, h, Bias::IfPresent, act)?,
                norm: w.layer_norm_shift_optional("cls.norm", h)?,
                out: w.matrix("cls.output", n_labels, h, Bias::IfPresent, act)?,
            }),
        };
        Ok(Box::new(On {
            b: b.clone(),
            dims: cfg.dims(),
            emb_norm: w.layer_norm_shift_optional("token_embd_norm", h)?,
            blocks,
            final_norm: w.layer_norm_shift_optional("output_norm", h)?,
            head,
        }))
    }
}

impl<B: Backend> On<B> {
    fn norm(&self, n: &LayerNorm<B>, hidden: Vec<f32>) -> Result<Vec<f32>> {
        let mut x = self.b.upload(hidden);
        let (h, eps) = (self.dims.hidden, self.dims.eps);
        self.b.layer_norm(&mut x, None, h, &n.gamma, &n.beta, eps)?;
        Ok(self.b.download(x)?)
    }
}

impl<B: Backend> Run for On<B> {
    fn n_classes(&self) -> Option<usize> {
        self.head.as_ref().map(|h| h.out.n())
    }

    fn owned_bytes(&self) -> usize {
        let head = self
            .head
            .as_ref()
            .map_or(0, |h| h.dense.owned_bytes() + h.out.owned_bytes());
        self.blocks
            .iter()
            .map(RotaryBlock::owned_bytes)
            .sum::<usize>()
            + head
    }

    fn embedding_norm(&self, hidden: Vec<f32>) -> Result<Vec<f32>> {
        self.norm(&self.emb_norm, hidden)
    }

    fn blocks(&self, range: Range<usize>, a: &mut Activation) -> Result<()> {
        let mut x = self.b.upload(std::mem::take(&mut a.hidden));
        self.b.rotary_encoder_blocks(
            &self.blocks[range],
            &self.dims,
            &mut x,
            &a.mask,
            a.batch,
            a.seq,
        )?;
        a.hidden = self.b.download(x)?;
        Ok(())
    }

    fn final_norm(&self, hidden: &[f32]) -> Result<Option<Vec<f32>>> {
        self.norm(&self.final_norm, hidden.to_vec()).map(Some)
    }

    fn classify(&self, pooled: Vec<f32>, batch: usize) -> Result<Vec<f32>> {
        let head = self.head.as_ref().ok_or(ModelError::NoClassifier)?;
        let (h, eps) = (self.dims.hidden, self.dims.eps);
        let x = self.b.upload(pooled);
        let mut y = self.b.buffer(batch * h);
        self.b.linear(&x, batch, &head.dense, &mut y)?;
        self.b.activate(&mut y, edgecut_backends::Act::Gelu)?;
        let n = &head.norm;
        self.b.layer_norm(&mut y, None, h, &n.gamma, &n.beta, eps)?;
        let mut logits = self.b.buffer(batch * head.out.n());
        self.b.linear(&y, batch, &head.out, &mut logits)?;
        Ok(self.b.download(logits)?)
    }
}

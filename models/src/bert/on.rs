//! BERT's weights and runs on one backend, written once over the contract: [`On<B>`] is
//! monomorphised for each backend by [`Load`] (the [`edgecut_backends::Device`] picks which),
//! and the model holds it as a [`Run`] trait object, so nothing generic leaks out.

use std::ops::Range;
use std::sync::Arc;

use edgecut_backends::encoder::{self, EncoderBlock, EncoderDims, LayerNorm};
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
    /// Block `layer` on `a` where only each text's first row goes on (a head that reads the
    /// first token): every row's attention, then the output projection and feed-forward of the
    /// first rows alone, which come back as `[batch, hidden]`. `None`: these blocks run whole.
    fn block_first_rows(&self, layer: usize, a: &Activation) -> Result<Option<Vec<f32>>> {
        let _ = (layer, a);
        Ok(None)
    }
    /// The norm after the last block (ModernBERT's) of token vectors `[rows, hidden]`, before
    /// pooling; `None` where the blocks end normed (BERT's post-norm).
    fn final_norm(&self, hidden: &[f32]) -> Result<Option<Vec<f32>>> {
        let _ = hidden;
        Ok(None)
    }
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
        let plain = ActQuant::Int8;
        w.check_ops(&Op::ENCODER, "an encoder")?;
        let blocks = w.encoder_blocks(
            "blk.",
            cfg.layers,
            h,
            cfg.ffn,
            ["attn_output_norm", "layer_output_norm"],
        )?;
        let head = match head_labels(f) {
            None => None,
            Some(n_labels) => Some(Head {
                pre: w.matrix("cls", h, h, Bias::Required, plain)?,
                act: cfg.classifier_activation,
                out: w.matrix("cls.output", n_labels, h, Bias::Required, plain)?,
            }),
        };
        Ok(Box::new(On {
            b: b.clone(),
            dims: cfg.dims(),
            emb_norm: w.layer_norm("token_embd_norm", h)?,
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
        let blocks = self.blocks.iter().map(EncoderBlock::owned_bytes);
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

    fn block_first_rows(&self, layer: usize, a: &Activation) -> Result<Option<Vec<f32>>> {
        let (b, dims) = (&self.b, &self.dims);
        let (h, batch, seq) = (dims.hidden, a.batch, a.seq);
        let blk = &self.blocks[layer];
        // The contract's own two halves of a block (`encoder_blocks` runs the same ops): the
        // attention over every row, a group of texts at a time as the CPU groups them (so that
        // their q/k/v stay in cache: the whole batch at once made attention the slower by
        // half), then the row-local rest on the first rows.
        let group = encoder::texts_per_group(seq);
        let mut s = encoder::Scratch::new(b);
        let (mut ctx, mut first) = (b.buffer(batch * h), b.buffer(batch * h));
        let mut t0 = 0;
        while t0 < batch {
            let n = group.min(batch - t0);
            let x = b.upload(a.hidden[t0 * seq * h..(t0 + n) * seq * h].to_vec());
            let mask = &a.mask[t0 * seq..(t0 + n) * seq];
            encoder::attention_part(b, blk, dims, &x, mask, n, seq, &mut s)?;
            for t in 0..n {
                b.copy(&s.ctx, t * seq * h, &mut ctx, (t0 + t) * h, h)?;
                b.copy(&x, t * seq * h, &mut first, (t0 + t) * h, h)?;
            }
            t0 += n;
        }
        let (mut o, mut up) = (b.buffer(batch * h), b.buffer(batch * dims.ffn));
        encoder::rows_part(b, blk, dims, &ctx, &mut first, batch, &mut o, &mut up)?;
        Ok(Some(b.download(first)?))
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

/// The labels of the file's classification head (`cls.output`'s rows), if it has one.
pub(super) fn head_labels(f: &GgufFile) -> Option<usize> {
    let t = f.tensor("cls.output.weight")?;
    Some(t.info.dims.get(1).copied().unwrap_or(0) as usize)
}

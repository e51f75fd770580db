//! CLIP's weights and runs on one backend, written once over the contract (as BERT's
//! `on.rs`): [`On<B>`] is monomorphised per backend by [`Load`], held as a [`Run`].

use edgecut_backends::encoder::{pre_norm_blocks, EncoderBlock, EncoderDims, LayerNorm};
use edgecut_backends::ops::ActQuant;
use edgecut_backends::{Backend, Instantiate, Op, PreparedMatrix};
use edgecut_format::gguf::GgufFile;
use std::sync::Arc;

use super::{ClipConfig, TowerConfig, Which};
use crate::error::Result;
use crate::weights::{Bias, Weights};

/// What the model asks of its backend-specific half.
pub(super) trait Run: Send + Sync {
    fn owned_bytes(&self) -> usize;
    /// The patch embedding of `rows` patch vectors.
    fn patch_embed(&self, patches: Vec<f32>, rows: usize) -> Result<Vec<f32>>;
    /// The image tower's input norm (`pre_ln`) on `[rows, hidden]`.
    fn pre_norm(&self, x: Vec<f32>) -> Result<Vec<f32>>;
    /// A tower's blocks `range` on `[batch * seq, hidden]`.
    fn blocks(
        &self,
        which: Which,
        range: std::ops::Range<usize>,
        x: Vec<f32>,
        mask: &[u8],
        batch: usize,
        seq: usize,
    ) -> Result<Vec<f32>>;
    /// A tower's output norm and projection on `n` pooled vectors.
    fn head(&self, which: Which, pooled: Vec<f32>, n: usize) -> Result<Vec<f32>>;
}

/// One tower on backend `B`.
struct Tower<B: Backend> {
    dims: EncoderDims,
    pre: Option<LayerNorm<B>>,
    blocks: Vec<EncoderBlock<B>>,
    post: LayerNorm<B>,
    proj: B::Matrix,
}

struct On<B: Backend> {
    b: B,
    patch: B::Matrix,
    image: Tower<B>,
    text: Tower<B>,
}

/// Loads CLIP's weights for the device's backend.
pub(super) struct Load<'a> {
    pub(super) file: &'a Arc<GgufFile>,
    pub(super) cfg: &'a ClipConfig,
}

fn load_tower<B: Backend>(
    w: &Weights<'_, B>,
    p: &str,
    t: &TowerConfig,
    causal: bool,
    projection: usize,
) -> Result<Tower<B>> {
    let h = t.hidden;
    let blocks = w.encoder_blocks(&format!("{p}.blk."), t.layers, h, t.ffn, ["ln1", "ln2"])?;
    Ok(Tower {
        dims: EncoderDims {
            hidden: h,
            heads: t.heads,
            ffn: t.ffn,
            eps: t.eps,
            act: t.act,
            causal,
        },
        pre: match p {
            "v" => Some(w.layer_norm("v.pre_ln", h)?),
            _ => None,
        },
        blocks,
        post: w.layer_norm(&format!("{p}.post_ln"), h)?,
        proj: w.matrix(
            &format!("{p}.proj"),
            projection,
            h,
            Bias::IfPresent,
            ActQuant::Int8,
        )?,
    })
}

impl Instantiate for Load<'_> {
    type Output = Result<Box<dyn Run>>;

    fn on<B: Backend>(self, b: &B) -> Self::Output {
        let (f, cfg) = (self.file, self.cfg);
        let w = Weights::new(f, b);
        let mut ops = vec![
            Op::LayerNorm,
            Op::Attention,
            Op::EncoderCausalAttention,
            Op::Add,
        ];
        ops.extend([cfg.vision.act, cfg.text.act].map(Op::Activate));
        w.check_ops(&ops, "CLIP")?;
        let k = 3 * cfg.patch_size * cfg.patch_size;
        Ok(Box::new(On {
            b: b.clone(),
            patch: w.matrix(
                "v.patch_embd",
                cfg.vision.hidden,
                k,
                Bias::IfPresent,
                ActQuant::Int8,
            )?,
            image: load_tower(&w, "v", &cfg.vision, false, cfg.projection)?,
            text: load_tower(&w, "t", &cfg.text, true, cfg.projection)?,
        }))
    }
}

impl<B: Backend> On<B> {
    fn which(&self, which: Which) -> &Tower<B> {
        match which {
            Which::Image => &self.image,
            Which::Text => &self.text,
        }
    }
}

impl<B: Backend> Run for On<B> {
    fn owned_bytes(&self) -> usize {
        let tower = |t: &Tower<B>| {
            t.blocks
                .iter()
                .map(EncoderBlock::owned_bytes)
                .sum::<usize>()
                + t.proj.owned_bytes()
        };
        self.patch.owned_bytes() + tower(&self.image) + tower(&self.text)
    }

    fn patch_embed(&self, patches: Vec<f32>, rows: usize) -> Result<Vec<f32>> {
        let x = self.b.upload(patches);
        let mut y = self.b.buffer(rows * self.patch.n());
        self.b.linear(&x, rows, &self.patch, &mut y)?;
        Ok(self.b.download(y)?)
    }

    fn pre_norm(&self, x: Vec<f32>) -> Result<Vec<f32>> {
        let t = &self.image;
        let mut x = self.b.upload(x);
        if let Some(n) = &t.pre {
            let d = &t.dims;
            self.b
                .layer_norm(&mut x, None, d.hidden, &n.gamma, &n.beta, d.eps)?;
        }
        Ok(self.b.download(x)?)
    }

    fn blocks(
        &self,
        which: Which,
        range: std::ops::Range<usize>,
        x: Vec<f32>,
        mask: &[u8],
        batch: usize,
        seq: usize,
    ) -> Result<Vec<f32>> {
        let t = self.which(which);
        let blocks = t.blocks.get(range.clone()).ok_or_else(|| {
            crate::ModelError::Input(format!(
                "no blocks {}..{} (the tower has {})",
                range.start,
                range.end,
                t.blocks.len()
            ))
        })?;
        let mut x = self.b.upload(x);
        pre_norm_blocks(&self.b, blocks, &t.dims, &mut x, mask, batch, seq)?;
        Ok(self.b.download(x)?)
    }

    fn head(&self, which: Which, pooled: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        let t = self.which(which);
        let mut x = self.b.upload(pooled);
        let d = &t.dims;
        self.b
            .layer_norm(&mut x, None, d.hidden, &t.post.gamma, &t.post.beta, d.eps)?;
        let mut y = self.b.buffer(n * t.proj.n());
        self.b.linear(&x, n, &t.proj, &mut y)?;
        Ok(self.b.download(y)?)
    }
}

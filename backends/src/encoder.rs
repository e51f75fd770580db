//! The encoder blocks, written once against the contract. BERT's post-norm block:
//! `x = LN(x + O(attention(QKV x)))`, then `x = LN(x + Down(GELU(Up x)))`; the pre-norm block of
//! ViT and CLIP ([`pre_norm_blocks`]): `x += O(attention(QKV LN(x)))`, then
//! `x += Down(act(Up LN(x)))`.
//!
//! It is split where the data flow splits: [`attention_part`] needs every row of a text (it mixes
//! tokens), [`rows_part`] works on each row alone (the attention output projection, the first
//! residual norm, the feed-forward and the second norm). [`blocks_op_by_op`] runs both over all
//! rows, one op after another: the contract's default. A backend that fuses (the CPU's row
//! tasks) runs [`rows_part`] on chunks of rows, so the block's math still exists once.

use crate::backend::{Act, Backend, EncoderAttention, PreparedMatrix};
use crate::ops::OpError;

/// q, k and v: one stacked `[3 hidden, hidden]` matrix (one product, the input quantized
/// once), or three when their storage differs.
pub enum Qkv<M> {
    /// Stacked rows q, k, v.
    Stacked(M),
    /// Separate q, k, v.
    Separate(Box<[M; 3]>),
}

/// A layer norm's parameters.
pub struct LayerNorm<B: Backend> {
    /// Scale.
    pub gamma: B::Vector,
    /// Shift.
    pub beta: B::Vector,
}

/// One encoder block's weights, prepared for backend `B`.
pub struct EncoderBlock<B: Backend> {
    /// q, k, v.
    pub qkv: Qkv<B::Matrix>,
    /// The attention output projection.
    pub o: B::Matrix,
    /// The norm after attention.
    pub attn_norm: LayerNorm<B>,
    /// The feed-forward's first matrix.
    pub up: B::Matrix,
    /// The feed-forward's second matrix.
    pub down: B::Matrix,
    /// The norm after the feed-forward.
    pub out_norm: LayerNorm<B>,
}

impl<B: Backend> EncoderBlock<B> {
    /// Bytes of the block's matrices held outside the file map.
    pub fn owned_bytes(&self) -> usize {
        let qkv = match &self.qkv {
            Qkv::Stacked(m) => m.owned_bytes(),
            Qkv::Separate(p) => p.iter().map(PreparedMatrix::owned_bytes).sum(),
        };
        qkv + self.o.owned_bytes() + self.up.owned_bytes() + self.down.owned_bytes()
    }
}

/// Token rows an encoder block runs at once when a batch has more (whole texts; a text longer
/// than this runs alone): 256 rows keep MiniLM's ffn_up output (1.5 MiB) within L2/L3 reach,
/// and a group's q/k/v in cache for its attention.
pub const GROUP_ROWS: usize = 256;

/// Whole texts of `seq` rows per group of [`GROUP_ROWS`] (at least one).
pub fn texts_per_group(seq: usize) -> usize {
    (GROUP_ROWS / seq.max(1)).max(1)
}

/// Sizes shared by every block.
#[derive(Clone, Copy, Debug)]
pub struct EncoderDims {
    /// Hidden size.
    pub hidden: usize,
    /// Heads.
    pub heads: usize,
    /// Feed-forward size.
    pub ffn: usize,
    /// Layer norm epsilon.
    pub eps: f32,
    /// The feed-forward's activation (BERT: [`Act::Gelu`]).
    pub act: Act,
    /// Whether attention is causal (CLIP's text tower).
    pub causal: bool,
}

/// The buffers one run of blocks uses.
pub struct Scratch<B: Backend> {
    /// q, k, v (stacked, or q alone).
    pub qkv: B::Buffer,
    /// k, when separate.
    pub k: B::Buffer,
    /// v, when separate.
    pub v: B::Buffer,
    /// Attention output.
    pub ctx: B::Buffer,
    /// Row-part buffers.
    pub o: B::Buffer,
    /// The feed-forward's inner activation.
    pub up: B::Buffer,
}

impl<B: Backend> Scratch<B> {
    /// Empty buffers on `b`.
    pub fn new(b: &B) -> Scratch<B> {
        Scratch {
            qkv: b.buffer(0),
            k: b.buffer(0),
            v: b.buffer(0),
            ctx: b.buffer(0),
            o: b.buffer(0),
            up: b.buffer(0),
        }
    }
}

/// The q/k/v product of `rows` rows of `x` into `s`, then attention into `s.ctx`.
#[allow(clippy::too_many_arguments)]
pub fn attention_part<B: Backend>(
    b: &B,
    blk: &EncoderBlock<B>,
    dims: &EncoderDims,
    x: &B::Tensor,
    mask: &[u8],
    batch: usize,
    seq: usize,
    s: &mut Scratch<B>,
) -> Result<(), OpError> {
    let rows = batch * seq;
    match &blk.qkv {
        Qkv::Stacked(m) => {
            b.resize(&mut s.qkv, rows * m.n());
            b.linear(x, rows, m, &mut s.qkv)?;
        }
        Qkv::Separate(parts) => {
            let [mq, mk, mv] = &**parts;
            for (m, out) in [(mq, &mut s.qkv), (mk, &mut s.k), (mv, &mut s.v)] {
                b.resize(out, rows * m.n());
                b.linear(x, rows, m, out)?;
            }
        }
    }
    attend(b, blk, dims, s, mask, batch, seq)
}

/// Attention over q/k/v already in `s` (stacked or separate), into `s.ctx`.
pub fn attend<B: Backend>(
    b: &B,
    blk: &EncoderBlock<B>,
    dims: &EncoderDims,
    s: &mut Scratch<B>,
    mask: &[u8],
    batch: usize,
    seq: usize,
) -> Result<(), OpError> {
    let h = dims.hidden;
    // Stacked: q, k and v at offsets within one product's rows; separate: three buffers.
    let (k, v, offsets, stride) = match &blk.qkv {
        Qkv::Stacked(_) => (&*s.qkv, &*s.qkv, [0, h, 2 * h], 3 * h),
        Qkv::Separate(_) => (&*s.k, &*s.v, [0, 0, 0], h),
    };
    let a = EncoderAttention {
        q: &*s.qkv,
        k,
        v,
        offsets,
        stride,
        mask,
        batch,
        seq,
        heads: dims.heads,
        head_dim: h / dims.heads,
        causal: dims.causal,
        window: None,
    };
    b.resize(&mut s.ctx, batch * seq * h);
    b.attention(&a, &mut s.ctx)
}

/// The row-local rest of a block on `rows` rows: `x = LN(x + O ctx)`, then
/// `x = LN(x + Down(GELU(Up x)))`, with `o` and `up` as the caller's buffers (`rows * hidden`
/// and `rows * ffn` values).
#[allow(clippy::too_many_arguments)]
pub fn rows_part<B: Backend>(
    b: &B,
    blk: &EncoderBlock<B>,
    dims: &EncoderDims,
    ctx: &B::Tensor,
    x: &mut B::Tensor,
    rows: usize,
    o: &mut B::Tensor,
    up: &mut B::Tensor,
) -> Result<(), OpError> {
    let (h, eps) = (dims.hidden, dims.eps);
    b.linear(ctx, rows, &blk.o, o)?;
    let n = &blk.attn_norm;
    b.layer_norm(x, Some(o), h, &n.gamma, &n.beta, eps)?;
    b.linear(x, rows, &blk.up, up)?;
    b.activate(up, dims.act)?;
    b.linear(up, rows, &blk.down, o)?;
    let n = &blk.out_norm;
    b.layer_norm(x, Some(o), h, &n.gamma, &n.beta, eps)
}

/// Blocks op by op over all rows, with the caller's scratch: the contract's default.
#[allow(clippy::too_many_arguments)]
pub fn blocks_with_scratch<B: Backend>(
    b: &B,
    blocks: &[EncoderBlock<B>],
    dims: &EncoderDims,
    x: &mut B::Tensor,
    mask: &[u8],
    batch: usize,
    seq: usize,
    s: &mut Scratch<B>,
) -> Result<(), OpError> {
    let rows = batch * seq;
    OpError::check("encoder input", b.len(x), rows * dims.hidden)?;
    OpError::check("encoder mask", mask.len(), rows)?;
    for blk in blocks {
        attention_part(b, blk, dims, x, mask, batch, seq, s)?;
        b.resize(&mut s.o, rows * dims.hidden);
        b.resize(&mut s.up, rows * dims.ffn);
        rows_part(b, blk, dims, &s.ctx, x, rows, &mut s.o, &mut s.up)?;
    }
    Ok(())
}

/// [`blocks_with_scratch`] with fresh buffers.
pub fn blocks_op_by_op<B: Backend>(
    b: &B,
    blocks: &[EncoderBlock<B>],
    dims: &EncoderDims,
    x: &mut B::Tensor,
    mask: &[u8],
    batch: usize,
    seq: usize,
) -> Result<(), OpError> {
    let mut s = Scratch::new(b);
    blocks_with_scratch(b, blocks, dims, x, mask, batch, seq, &mut s)
}

/// Pre-norm blocks (ViT, CLIP) op by op, in place: per block, `x += O(attention(QKV LN1(x)))`
/// then `x += Down(act(Up LN2(x)))`, with a block's `attn_norm` as LN1 and `out_norm` as LN2.
pub fn pre_norm_blocks<B: Backend>(
    b: &B,
    blocks: &[EncoderBlock<B>],
    dims: &EncoderDims,
    x: &mut B::Tensor,
    mask: &[u8],
    batch: usize,
    seq: usize,
) -> Result<(), OpError> {
    let h = dims.hidden;
    let rows = batch * seq;
    OpError::check("encoder input", b.len(x), rows * h)?;
    OpError::check("encoder mask", mask.len(), rows)?;
    let mut s = Scratch::new(b);
    let mut normed = b.buffer(rows * h);
    b.resize(&mut s.o, rows * h);
    b.resize(&mut s.up, rows * dims.ffn);
    for blk in blocks {
        norm_into(b, x, &mut normed, &blk.attn_norm, dims)?;
        attention_part(b, blk, dims, &normed, mask, batch, seq, &mut s)?;
        b.linear(&s.ctx, rows, &blk.o, &mut s.o)?;
        b.add(x, &s.o)?;
        norm_into(b, x, &mut normed, &blk.out_norm, dims)?;
        b.linear(&normed, rows, &blk.up, &mut s.up)?;
        b.activate(&mut s.up, dims.act)?;
        b.linear(&s.up, rows, &blk.down, &mut s.o)?;
        b.add(x, &s.o)?;
    }
    Ok(())
}

/// `normed = LN(x)`, `x` left as it is: a pre-norm block's input to its next product.
pub(crate) fn norm_into<B: Backend>(
    b: &B,
    x: &B::Tensor,
    normed: &mut B::Tensor,
    n: &LayerNorm<B>,
    dims: &EncoderDims,
) -> Result<(), OpError> {
    b.copy(x, 0, normed, 0, b.len(x))?;
    b.layer_norm(normed, None, dims.hidden, &n.gamma, &n.beta, dims.eps)
}

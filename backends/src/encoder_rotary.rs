//! The rotary encoder block (ModernBERT), written once against the contract: pre-norm,
//! rotary positions on q and k, attention over the whole text or a window of it, a gated
//! feed-forward. Per block:
//! `x += O(attention(rope(QKV LN1(x))))`, then `x += Down(act(Gate LN2(x)) * Up LN2(x))`,
//! where the first block has no LN1 (its input is the embeddings' norm already).

use crate::backend::{Backend, EncoderAttention, PreparedMatrix};
use crate::encoder::{norm_into, EncoderDims, LayerNorm};
use crate::ops::{OpError, RopeStyle};

/// One rotary encoder block's weights, prepared for backend `B`.
pub struct RotaryBlock<B: Backend> {
    /// The norm before attention (`None`: the first block's input is normed already).
    pub attn_norm: Option<LayerNorm<B>>,
    /// q, k and v stacked: `[3 hidden, hidden]`.
    pub qkv: B::Matrix,
    /// The attention output projection.
    pub o: B::Matrix,
    /// Local attention's reach on either side (`None`: the whole text).
    pub window: Option<usize>,
    /// Rotary frequencies, one per rotated pair (the block's own base: local and global
    /// layers differ).
    pub inv_freq: B::Vector,
    /// The norm before the feed-forward.
    pub ffn_norm: LayerNorm<B>,
    /// The feed-forward's activated half.
    pub gate: B::Matrix,
    /// The feed-forward's other half, multiplied in.
    pub up: B::Matrix,
    /// The feed-forward's output matrix.
    pub down: B::Matrix,
}

impl<B: Backend> RotaryBlock<B> {
    /// Bytes of the block's matrices held outside the file map.
    pub fn owned_bytes(&self) -> usize {
        [&self.qkv, &self.o, &self.gate, &self.up, &self.down]
            .iter()
            .map(|m| m.owned_bytes())
            .sum()
    }
}

/// Rotary blocks op by op over `batch` texts of `seq` tokens (`x`: their rows), in place.
#[allow(clippy::too_many_arguments)]
pub fn rotary_blocks<B: Backend>(
    b: &B,
    blocks: &[RotaryBlock<B>],
    dims: &EncoderDims,
    x: &mut B::Tensor,
    mask: &[u8],
    batch: usize,
    seq: usize,
) -> Result<(), OpError> {
    let (h, heads) = (dims.hidden, dims.heads);
    let rows = batch * seq;
    OpError::check("encoder input", b.len(x), rows * h)?;
    OpError::check("encoder mask", mask.len(), rows)?;
    if heads == 0 || !h.is_multiple_of(heads) {
        return Err(OpError::Shape(format!("{heads} heads do not divide {h}")));
    }
    let hd = h / heads;
    let mut normed = b.buffer(rows * h);
    let mut qkv = b.buffer(rows * 3 * h);
    let mut ctx = b.buffer(rows * h);
    let mut o = b.buffer(rows * h);
    let mut gate = b.buffer(rows * dims.ffn);
    let mut up = b.buffer(rows * dims.ffn);
    for blk in blocks {
        let input: &B::Tensor = match &blk.attn_norm {
            Some(n) => {
                norm_into(b, x, &mut normed, n, dims)?;
                &normed
            }
            None => x,
        };
        b.linear(input, rows, &blk.qkv, &mut qkv)?;
        // q and k are the first two thirds of each row: 2 * heads heads, one position each.
        b.rope_texts(
            &mut qkv,
            3 * h,
            2 * heads,
            hd,
            seq,
            &blk.inv_freq,
            RopeStyle::Halves,
        )?;
        let a = EncoderAttention {
            q: &*qkv,
            k: &*qkv,
            v: &*qkv,
            offsets: [0, h, 2 * h],
            stride: 3 * h,
            mask,
            batch,
            seq,
            heads,
            head_dim: hd,
            causal: false,
            window: blk.window,
        };
        b.attention(&a, &mut ctx)?;
        b.linear(&ctx, rows, &blk.o, &mut o)?;
        b.add(x, &o)?;
        norm_into(b, x, &mut normed, &blk.ffn_norm, dims)?;
        b.linear(&normed, rows, &blk.gate, &mut gate)?;
        b.linear(&normed, rows, &blk.up, &mut up)?;
        b.activate(&mut gate, dims.act)?;
        b.mul(&mut gate, &up)?;
        b.linear(&gate, rows, &blk.down, &mut o)?;
        b.add(x, &o)?;
    }
    Ok(())
}

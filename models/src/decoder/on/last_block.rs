//! A run's last block when only its last rows go on to the head.

use edgecut_backends::Backend;

use super::{Block, On, Part, Scratch};
use crate::error::Result;

impl<B: Backend> On<B> {
    /// The last block of a run of one conversation `p` of which only the last `keep` rows go
    /// on (to the head): every row's keys and values into the cache, and the rest (queries,
    /// attention, output projection, feed-forward) for the kept rows alone; the kept rows
    /// come back. The other rows' outputs are never read, and computing them was a whole
    /// block's products of a prompt (1/18 of a Gemma 3 270M prompt's, which llama.cpp's graph
    /// skips too).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn last_block(
        &self,
        blk: &Block<B>,
        layer: usize,
        x: &B::Tensor,
        kv: &mut B::KvCache,
        p: Part,
        keep: usize,
        s: &mut Scratch<B>,
    ) -> Result<B::Buffer> {
        let (b, c) = (&self.b, &self.c);
        let (h, hd, rope) = (c.hidden, c.head_dim, c.spec.rope);
        let skip = p.rows - keep;
        let freqs = self.freqs(blk);
        // The kept rows' buffers.
        let mut tail = self.new_scratch();
        let kept = Part {
            row: 0,
            rows: keep,
            pos0: p.pos0 + skip,
        };
        self.fit(&mut tail, &[kept]);
        {
            let [xn, _, k, v, _, kn, ..] = &mut s.rows;
            let [txn, tq, _, _, tatt, ..] = &mut tail.rows;
            b.rms_norm(x, xn, h, &blk.attn_norm, c.eps)?;
            b.linear_seqs_each(xn, &[p.rows], &[&blk.k, &blk.v], &mut [k, v])?;
            if keep > 0 {
                b.copy(xn, skip * h, txn, 0, keep * h)?;
                b.linear(txn, keep, &blk.q, tq)?;
            }
            if let Some((qn, kn_w)) = &blk.qk_norm {
                if keep > 0 {
                    b.rms_norm(tq, tatt, hd, qn, c.eps)?;
                    std::mem::swap(tq, tatt);
                }
                b.rms_norm(k, kn, hd, kn_w, c.eps)?;
                std::mem::swap(k, kn);
            }
            b.rope(k, c.kv_heads, hd, p.pos0, freqs, rope)?;
            b.kv_append(kv, layer, p.pos0, k, v)?;
            if keep == 0 {
                return Ok(b.buffer(0));
            }
            b.rope(tq, c.heads, hd, kept.pos0, freqs, rope)?;
            b.causal_attention(tq, kv, layer, kept.pos0, c.heads, tatt)?;
        }
        let mut out = b.buffer(keep * h);
        b.copy(x, skip * h, &mut out, 0, keep * h)?;
        self.feed_forward(blk, &mut out, &[keep], &mut tail)?;
        Ok(out)
    }
}

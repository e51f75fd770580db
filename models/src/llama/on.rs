//! The Llama block, written once over the contract: [`On<B>`] is monomorphised for each
//! backend by [`Load`] and held as a [`Decoder`] trait object. A KV cache's backend half is a
//! [`State<B>`] (the backend's cache over a range of layers, and the forward pass's buffers,
//! kept between calls so decoding allocates nothing).

use std::any::Any;
use std::ops::Range;
use std::sync::Arc;

use edgecut_backends::ops::{ActQuant, RopeStyle};
use edgecut_backends::{Backend, Instantiate, KvShape, Op, PreparedMatrix};
use edgecut_format::gguf::GgufFile;

use super::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::weights::{vector, Bias, Weights};

/// What the model asks of its backend-specific half.
pub(super) trait Decoder: Send + Sync {
    fn owned_bytes(&self) -> usize;
    /// A cache's backend half for `layers` and `capacity` positions.
    fn new_state(
        &self,
        layers: Range<usize>,
        capacity: usize,
    ) -> Result<Box<dyn Any + Send + Sync>>;
    /// Layers `layers` on rows `x` at positions `pos0..` (checked by the caller).
    fn run(
        &self,
        state: &mut (dyn Any + Send + Sync),
        layers: Range<usize>,
        x: Vec<f32>,
        pos0: usize,
    ) -> Result<Vec<f32>>;
    /// [`Decoder::run`] for several caches at once (one conversation each): `rows[i]` rows of
    /// `x` at positions `pos0[i]..` go with `states[i]`. The matrix products run on all rows
    /// together (each weight read once for the batch); rotary embedding and attention run per
    /// conversation.
    fn run_many(
        &self,
        states: &mut [&mut (dyn Any + Send + Sync)],
        layers: Range<usize>,
        x: Vec<f32>,
        rows: &[usize],
        pos0: &[usize],
    ) -> Result<Vec<f32>>;
    /// The final norm and the vocabulary projection of `rows` rows.
    fn head(&self, x: Vec<f32>, rows: usize) -> Result<Vec<f32>>;
    /// [`Decoder::run`] of every layer on one row, then the head and the greedy choice, all on
    /// the backend: only the chosen token's id comes back (a GPU sends 4 bytes, not the
    /// vocabulary's logits).
    fn greedy_step(
        &self,
        state: &mut (dyn Any + Send + Sync),
        x: Vec<f32>,
        pos0: usize,
    ) -> Result<u32>;
}

struct Block<B: Backend> {
    attn_norm: B::Vector,
    q: B::Matrix,
    k: B::Matrix,
    v: B::Matrix,
    wo: B::Matrix,
    ffn_norm: B::Vector,
    gate: B::Matrix,
    up: B::Matrix,
    down: B::Matrix,
}

/// Everything of the decoder that runs on backend `B`.
struct On<B: Backend> {
    b: B,
    c: LlamaConfig,
    blocks: Vec<Block<B>>,
    norm: B::Vector,
    output: B::Matrix,
    inv_freq: B::Vector,
}

/// A KV cache's backend half: the backend's cache of the `KvCache`'s layers and the
/// activation buffers.
struct State<B: Backend> {
    kv: B::KvCache,
    /// xn (normed), q, k, v, att (attention out), gate, up.
    scratch: [B::Buffer; 7],
}

/// Loads the decoder's weights for the device's backend.
pub(super) struct Load<'a> {
    pub(super) file: &'a Arc<GgufFile>,
    pub(super) cfg: &'a LlamaConfig,
}

impl Instantiate for Load<'_> {
    type Output = Result<Box<dyn Decoder>>;

    fn on<B: Backend>(self, b: &B) -> Self::Output {
        let (f, c) = (self.file, self.cfg);
        if let Some(op) = Op::DECODER.iter().find(|&&op| !b.supports(op)) {
            return Err(edgecut_backends::ops::OpError::Unsupported {
                what: format!("a decoder ({op:?})"),
                backend: b.describe(),
            }
            .into());
        }
        let w = Weights::new(f, b);
        let (h, hd) = (c.hidden, c.head_dim);
        // Decoders multiply f32 activations with the stored blocks (their greedy choices turn
        // on small logit margins); matrices stay in the map. Not stacked (unlike BERT's q/k/v):
        // with f32 activations there is no shared quantization to save, and separate matrices
        // stay in the map instead of being copied (44 MB for SmolLM2-135M).
        let m = |n: &str, rows: usize, cols: usize| {
            w.matrix(n, rows, cols, Bias::IfPresent, ActQuant::F32)
        };
        let mut blocks = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let p = |n: &str| format!("blk.{i}.{n}");
            blocks.push(Block {
                attn_norm: w.vector(&p("attn_norm.weight"), h)?,
                q: m(&p("attn_q"), c.heads * hd, h)?,
                k: m(&p("attn_k"), c.kv_heads * hd, h)?,
                v: m(&p("attn_v"), c.kv_heads * hd, h)?,
                wo: m(&p("attn_output"), h, c.heads * hd)?,
                ffn_norm: w.vector(&p("ffn_norm.weight"), h)?,
                gate: m(&p("ffn_gate"), c.ffn, h)?,
                up: m(&p("ffn_up"), c.ffn, h)?,
                down: m(&p("ffn_down"), h, c.ffn)?,
            });
        }
        // The vocabulary projection, tied to the embedding table without `output.weight`.
        let out_name = if f.tensor("output.weight").is_some() {
            "output"
        } else {
            "token_embd"
        };
        let output = m(out_name, c.vocab, h)?;
        let half = c.rope_dims / 2;
        let mut inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                let f = (c.rope_base as f64).powf(-(2.0 * i as f64) / c.rope_dims as f64);
                (f / c.rope_scale as f64) as f32
            })
            .collect();
        // Per-frequency factors (Llama 3.1's rope scaling, stored by llama.cpp as a tensor).
        if f.tensor("rope_freqs.weight").is_some() {
            let factors = vector(f, "rope_freqs.weight", half)?;
            inv_freq.iter_mut().zip(factors).for_each(|(v, d)| *v /= d);
        }
        Ok(Box::new(On {
            b: b.clone(),
            c: c.clone(),
            blocks,
            norm: w.vector("output_norm.weight", h)?,
            output,
            inv_freq: b.vector(&inv_freq),
        }))
    }
}

impl<B: Backend> On<B> {
    /// One Llama block (pre-norm attention, then pre-norm SwiGLU) on `t` rows of `x`.
    fn block(
        &self,
        blk: &Block<B>,
        st: &mut State<B>,
        layer: usize,
        x: &mut B::Tensor,
        t: usize,
        pos0: usize,
    ) -> Result<()> {
        let (b, c) = (&self.b, &self.c);
        let (h, hd) = (c.hidden, c.head_dim);
        let [xn, q, k, v, att, gate, up] = &mut st.scratch;
        // llama.cpp's `llama` layout pairs adjacent values (its converter permutes q and k).
        let rope = RopeStyle::Interleaved;
        b.rms_norm(x, xn, h, &blk.attn_norm, c.eps)?;
        b.linear(xn, t, &blk.q, q)?;
        b.linear(xn, t, &blk.k, k)?;
        b.linear(xn, t, &blk.v, v)?;
        b.rope(q, c.heads, hd, pos0, &self.inv_freq, rope)?;
        b.rope(k, c.kv_heads, hd, pos0, &self.inv_freq, rope)?;
        b.kv_append(&mut st.kv, layer, pos0, k, v)?;
        b.causal_attention(q, &st.kv, layer, pos0, c.heads, att)?;
        b.linear(att, t, &blk.wo, xn)?;
        b.add(x, xn)?;
        b.rms_norm(x, xn, h, &blk.ffn_norm, c.eps)?;
        b.linear(xn, t, &blk.gate, gate)?;
        b.linear(xn, t, &blk.up, up)?;
        b.silu_mul(gate, up)?;
        b.linear(gate, t, &blk.down, xn)?;
        b.add(x, xn)?;
        Ok(())
    }
}

impl<B: Backend> On<B> {
    /// One Llama block on the rows of several conversations: `parts[i]` is conversation i's
    /// (state, first row, rows, first position). Matrix products run on every row at once; the
    /// rows of each conversation go through rotary embedding, its KV cache and attention on
    /// their own (copied out of and back into the batch).
    fn block_many(
        &self,
        blk: &Block<B>,
        states: &mut [&mut State<B>],
        parts: &[(usize, usize, usize)],
        layer: usize,
        x: &mut B::Tensor,
        t: usize,
    ) -> Result<()> {
        let (b, c) = (&self.b, &self.c);
        let (h, hd) = (c.hidden, c.head_dim);
        let (qw, kvw) = (c.heads * hd, c.kv_heads * hd);
        let rope = RopeStyle::Interleaved;
        let mut xn = b.buffer(t * h);
        let (mut q, mut k, mut v) = (b.buffer(t * qw), b.buffer(t * kvw), b.buffer(t * kvw));
        b.rms_norm(x, &mut xn, h, &blk.attn_norm, c.eps)?;
        b.linear(&xn, t, &blk.q, &mut q)?;
        b.linear(&xn, t, &blk.k, &mut k)?;
        b.linear(&xn, t, &blk.v, &mut v)?;
        let (q, k, v) = (b.download(q)?, b.download(k)?, b.download(v)?);
        // Each conversation's rows at its own positions into its own cache; then the attention
        // of all of them in one call (the backend may run them together).
        let mut qs = Vec::with_capacity(parts.len());
        let mut outs = Vec::with_capacity(parts.len());
        for (st, &(row, n, pos0)) in states.iter_mut().zip(parts) {
            let mut qi = b.upload(q[row * qw..(row + n) * qw].to_vec());
            let mut ks = b.upload(k[row * kvw..(row + n) * kvw].to_vec());
            let vs = b.upload(v[row * kvw..(row + n) * kvw].to_vec());
            b.rope(&mut qi, c.heads, hd, pos0, &self.inv_freq, rope)?;
            b.rope(&mut ks, c.kv_heads, hd, pos0, &self.inv_freq, rope)?;
            b.kv_append(&mut st.kv, layer, pos0, &ks, &vs)?;
            qs.push(qi);
            outs.push(b.buffer(n * qw));
        }
        {
            let q: Vec<&B::Tensor> = qs.iter().map(|q| &**q).collect();
            let caches: Vec<&B::KvCache> = states.iter().map(|st| &st.kv).collect();
            let pos0: Vec<usize> = parts.iter().map(|p| p.2).collect();
            let mut out: Vec<&mut B::Tensor> = outs.iter_mut().map(|o| &mut **o).collect();
            b.causal_attention_many(&q, &caches, layer, &pos0, c.heads, &mut out)?;
        }
        let mut att = Vec::with_capacity(t * qw);
        for o in outs {
            att.extend_from_slice(&b.download(o)?);
        }
        let att = b.upload(att);
        b.linear(&att, t, &blk.wo, &mut xn)?;
        b.add(x, &xn)?;
        let (mut gate, mut up) = (b.buffer(t * c.ffn), b.buffer(t * c.ffn));
        b.rms_norm(x, &mut xn, h, &blk.ffn_norm, c.eps)?;
        b.linear(&xn, t, &blk.gate, &mut gate)?;
        b.linear(&xn, t, &blk.up, &mut up)?;
        b.silu_mul(&mut gate, &up)?;
        b.linear(&gate, t, &blk.down, &mut xn)?;
        b.add(x, &xn)?;
        Ok(())
    }
}

impl<B: Backend> On<B> {
    /// [`Decoder::run`], the output left on the backend.
    fn run_on(
        &self,
        state: &mut (dyn Any + Send + Sync),
        layers: Range<usize>,
        x: Vec<f32>,
        pos0: usize,
    ) -> Result<B::Buffer> {
        let st = state.downcast_mut::<State<B>>().ok_or_else(|| {
            ModelError::Input("the KV cache was made by another model or device".into())
        })?;
        let c = &self.c;
        let t = x.len() / c.hidden;
        let (qw, kvw) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let sizes = [
            t * c.hidden,
            t * qw,
            t * kvw,
            t * kvw,
            t * qw,
            t * c.ffn,
            t * c.ffn,
        ];
        for (buf, n) in st.scratch.iter_mut().zip(sizes) {
            self.b.resize(buf, n);
        }
        let mut x = self.b.upload(x);
        for (i, l) in layers.clone().enumerate() {
            self.block(&self.blocks[l], st, i, &mut x, t, pos0)?;
        }
        Ok(x)
    }

    /// The final norm and the vocabulary projection of `rows` rows on the backend.
    fn head_on(&self, x: &B::Tensor, rows: usize) -> Result<B::Buffer> {
        let c = &self.c;
        let mut xn = self.b.buffer(rows * c.hidden);
        self.b.rms_norm(x, &mut xn, c.hidden, &self.norm, c.eps)?;
        let mut logits = self.b.buffer(rows * c.vocab);
        self.b.linear(&xn, rows, &self.output, &mut logits)?;
        Ok(logits)
    }
}

impl<B: Backend> Decoder for On<B> {
    fn owned_bytes(&self) -> usize {
        let b = self.blocks.iter().map(|b| {
            [&b.q, &b.k, &b.v, &b.wo, &b.gate, &b.up, &b.down]
                .iter()
                .map(|m| m.owned_bytes())
                .sum::<usize>()
                + 2 * self.c.hidden * 4
        });
        b.sum::<usize>() + self.output.owned_bytes() + self.c.hidden * 4
    }

    fn new_state(
        &self,
        layers: Range<usize>,
        capacity: usize,
    ) -> Result<Box<dyn Any + Send + Sync>> {
        let c = &self.c;
        let kv = self.b.kv_cache(KvShape {
            layers: layers.len(),
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            capacity,
        })?;
        let scratch = std::array::from_fn(|_| self.b.buffer(0));
        Ok(Box::new(State::<B> { kv, scratch }))
    }

    fn run(
        &self,
        state: &mut (dyn Any + Send + Sync),
        layers: Range<usize>,
        x: Vec<f32>,
        pos0: usize,
    ) -> Result<Vec<f32>> {
        let x = self.run_on(state, layers, x, pos0)?;
        Ok(self.b.download(x)?)
    }

    fn run_many(
        &self,
        states: &mut [&mut (dyn Any + Send + Sync)],
        layers: Range<usize>,
        x: Vec<f32>,
        rows: &[usize],
        pos0: &[usize],
    ) -> Result<Vec<f32>> {
        let mut sts = Vec::with_capacity(states.len());
        for s in states.iter_mut() {
            sts.push(s.downcast_mut::<State<B>>().ok_or_else(|| {
                ModelError::Input("a KV cache was made by another model or device".into())
            })?);
        }
        let t = x.len() / self.c.hidden;
        let mut parts = Vec::with_capacity(rows.len());
        let mut row = 0;
        for (&n, &p) in rows.iter().zip(pos0) {
            parts.push((row, n, p));
            row += n;
        }
        let mut x = self.b.upload(x);
        for (i, l) in layers.clone().enumerate() {
            self.block_many(&self.blocks[l], &mut sts, &parts, i, &mut x, t)?;
        }
        Ok(self.b.download(x)?)
    }

    fn head(&self, x: Vec<f32>, rows: usize) -> Result<Vec<f32>> {
        let x = self.b.upload(x);
        Ok(self.b.download(self.head_on(&x, rows)?)?)
    }

    fn greedy_step(
        &self,
        state: &mut (dyn Any + Send + Sync),
        x: Vec<f32>,
        pos0: usize,
    ) -> Result<u32> {
        let x = self.run_on(state, 0..self.c.layers, x, pos0)?;
        let logits = self.head_on(&x, 1)?;
        let ids = self.b.argmax(&logits, self.c.vocab)?;
        ids.first()
            .copied()
            .ok_or_else(|| ModelError::Input("a greedy step of no row".into()))
    }
}

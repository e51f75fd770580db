//! The decoder block, written once over the contract and read from the architecture's
//! [`DecoderSpec`](super::DecoderSpec): [`On<B>`] is monomorphised for each backend by [`Load`]
//! and held as a [`Run`] trait object. One block function serves one conversation and several
//! ([`On::block`]); every tensor stays on the backend from the embeddings' upload to the logits
//! (a batch's conversations are copied out of and back into it on the device). A KV cache's
//! backend half is a [`State<B>`] (the backend's cache over a range of layers, and the forward
//! pass's buffers, kept between calls so decoding allocates nothing).

use std::any::Any;
use std::ops::Range;
use std::sync::Arc;

use edgecut_backends::ops::ActQuant;
use edgecut_backends::{Backend, Instantiate, KvShape, Op, PreparedMatrix};
use edgecut_format::gguf::GgufFile;

use super::spec::Gate;
use super::DecoderConfig;
use crate::error::{ModelError, Result};
use crate::weights::{vector, Bias, Weights};

/// One conversation's rows within a batch: `rows` rows from row `row`, at positions `pos0..`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Part {
    pub(super) row: usize,
    pub(super) rows: usize,
    pub(super) pos0: usize,
}

/// A cache's backend half, as the model holds it.
pub(super) type AnyState = dyn Any + Send + Sync;

/// What the model asks of its backend-specific half.
pub(super) trait Run: Send + Sync {
    fn owned_bytes(&self) -> usize;
    /// A cache's backend half for `layers`: the backend caches `groups` (each shape with the
    /// indices, within `layers`, of the layers it holds: [`super::DecoderConfig::kv_groups`]).
    fn new_state(
        &self,
        layers: Range<usize>,
        groups: Vec<(KvShape, Vec<usize>)>,
    ) -> Result<Box<AnyState>>;
    /// Copies the keys and values of `src` into `dst` (states of the same layers and size).
    fn copy_state(&self, src: &AnyState, dst: &mut AnyState) -> Result<()>;
    /// Layers `layers` on rows `x`: conversation `i`'s `parts[i]` with `states[i]` (checked by
    /// the caller). Matrix products run on all rows together (each weight read once for the
    /// batch); rotary embedding, the cache and attention run per conversation.
    fn run(
        &self,
        states: &mut [&mut AnyState],
        layers: Range<usize>,
        x: Vec<f32>,
        parts: &[Part],
    ) -> Result<Vec<f32>>;
    /// The final norm and the vocabulary projection of `rows` rows.
    fn head(&self, x: Vec<f32>, rows: usize) -> Result<Vec<f32>>;
    /// The final norm of rows `x` (what the head projects), `[rows, hidden]`.
    fn final_norm(&self, x: Vec<f32>, rows: usize) -> Result<Vec<f32>>;
    /// Every layer on rows `x` at positions `pos0..`, then the head of the last `rows_out`
    /// rows, on the backend: only the logits come back.
    fn forward(
        &self,
        state: &mut AnyState,
        x: Vec<f32>,
        pos0: usize,
        rows_out: usize,
    ) -> Result<Vec<f32>>;
    /// [`Run::forward`] of one row and the greedy choice, all on the backend: only the chosen
    /// token's id comes back (a GPU sends 4 bytes, not the vocabulary's logits).
    fn greedy_step(&self, state: &mut AnyState, x: Vec<f32>, pos0: usize) -> Result<u32>;
}

struct Block<B: Backend> {
    attn_norm: B::Vector,
    q: B::Matrix,
    k: B::Matrix,
    v: B::Matrix,
    /// RMS norms over each head of q and k (the spec's `qk_norm`).
    qk_norm: Option<(B::Vector, B::Vector)>,
    wo: B::Matrix,
    /// The norm of the attention's output before its residual add (the spec's `post_norms`).
    post_attn_norm: Option<B::Vector>,
    ffn_norm: B::Vector,
    gate: B::Matrix,
    up: B::Matrix,
    down: B::Matrix,
    /// The norm of the feed-forward's output before its residual add.
    post_ffn_norm: Option<B::Vector>,
    /// Whether the layer attends through the sliding window (its own cache and rotary base).
    sliding: bool,
}

/// Everything of the decoder that runs on backend `B`.
struct On<B: Backend> {
    b: B,
    c: DecoderConfig,
    blocks: Vec<Block<B>>,
    norm: B::Vector,
    output: B::Matrix,
    inv_freq: B::Vector,
    /// The sliding layers' rotary frequencies (their own base, no scaling).
    inv_freq_local: B::Vector,
}

/// A forward pass's buffers: the batch's rows, and each conversation's rows of q, k, v and the
/// attention output when a batch holds several.
struct Scratch<B: Backend> {
    /// xn (normed), q, k, v, att (attention out; the normed q's), kn (the normed k's), gate,
    /// up, post (a sublayer's output normed, with the spec's `post_norms`).
    rows: [B::Buffer; 9],
    parts: Vec<[B::Buffer; 4]>,
}

/// A KV cache's backend half: the backend's caches of the `KvCache`'s layers (one per kind of
/// layer: full attention, sliding window) and the buffers.
struct State<B: Backend> {
    kv: Vec<B::KvCache>,
    /// Per layer of the range: its cache in `kv` and its index there.
    at: Vec<(usize, usize)>,
    scratch: Scratch<B>,
}

/// Loads the decoder's weights for the device's backend.
pub(super) struct Load<'a> {
    pub(super) file: &'a Arc<GgufFile>,
    pub(super) cfg: &'a DecoderConfig,
}

impl Instantiate for Load<'_> {
    type Output = Result<Box<dyn Run>>;

    fn on<B: Backend>(self, b: &B) -> Self::Output {
        let (f, c) = (self.file, self.cfg);
        let spec = c.spec;
        let w = Weights::new(f, b);
        let mut ops = Op::DECODER.to_vec();
        if spec.gate == Gate::GeluTanh {
            ops.push(Op::GeluTanhMul);
        }
        w.check_ops(&ops, "a decoder")?;
        let (h, hd) = (c.hidden, c.head_dim);
        let out_name = if f.tensor("output.weight").is_some() {
            "output"
        } else {
            // The vocabulary projection tied to the embedding table.
            "token_embd"
        };
        // Every matrix's weight type is asked of the backend before any is read.
        let mut names = vec![out_name.to_string()];
        for i in 0..c.layers {
            for m in [
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ] {
                names.push(format!("blk.{i}.{m}"));
            }
        }
        w.check_supported(&names, ActQuant::F32)?;
        // Decoders multiply f32 activations with the stored blocks (their greedy choices turn
        // on small logit margins); matrices stay in the map. Not stacked (unlike BERT's q/k/v):
        // with f32 activations there is no shared quantization to save, and separate matrices
        // stay in the map instead of being copied (44 MB for SmolLM2-135M).
        let qkv_bias = if spec.qkv_bias {
            Bias::Required
        } else {
            Bias::IfPresent
        };
        let m = |n: &str, rows: usize, cols: usize, bias: Bias| {
            w.matrix(n, rows, cols, bias, ActQuant::F32)
        };
        let mut blocks = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let p = |n: &str| format!("blk.{i}.{n}");
            let qk_norm = if spec.qk_norm {
                Some((
                    w.vector(&p("attn_q_norm.weight"), hd)?,
                    w.vector(&p("attn_k_norm.weight"), hd)?,
                ))
            } else {
                None
            };
            let post = |n: &str| -> Result<Option<B::Vector>> {
                Ok(if spec.post_norms {
                    Some(w.vector(&p(n), h)?)
                } else {
                    None
                })
            };
            blocks.push(Block {
                attn_norm: w.vector(&p("attn_norm.weight"), h)?,
                q: m(&p("attn_q"), c.heads * hd, h, qkv_bias)?,
                k: m(&p("attn_k"), c.kv_heads * hd, h, qkv_bias)?,
                v: m(&p("attn_v"), c.kv_heads * hd, h, qkv_bias)?,
                qk_norm,
                wo: m(&p("attn_output"), h, c.heads * hd, Bias::IfPresent)?,
                post_attn_norm: post("post_attention_norm.weight")?,
                ffn_norm: w.vector(&p("ffn_norm.weight"), h)?,
                gate: m(&p("ffn_gate"), c.ffn, h, Bias::IfPresent)?,
                up: m(&p("ffn_up"), c.ffn, h, Bias::IfPresent)?,
                down: m(&p("ffn_down"), h, c.ffn, Bias::IfPresent)?,
                post_ffn_norm: post("post_ffw_norm.weight")?,
                sliding: c.sliding(i),
            });
        }
        let output = m(out_name, c.vocab, h, Bias::IfPresent)?;
        let half = c.rope_dims / 2;
        let freqs = |base: f32, scale: f32| -> Vec<f32> {
            (0..half)
                .map(|i| {
                    let f = (base as f64).powf(-(2.0 * i as f64) / c.rope_dims as f64);
                    (f / scale as f64) as f32
                })
                .collect()
        };
        let mut inv_freq = freqs(c.rope_base, c.rope_scale);
        // Per-frequency factors (Llama 3's rope scaling, stored by llama.cpp as a tensor).
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
            inv_freq_local: b.vector(&freqs(c.local_rope_base, 1.0)),
        }))
    }
}

impl<B: Backend> On<B> {
    /// One decoder block on `x`, the rows of one conversation or of several (`parts[i]` goes
    /// with `kv[i]`): pre-norm attention, then a pre-norm SwiGLU, as the spec says.
    fn block(
        &self,
        blk: &Block<B>,
        layer: usize,
        x: &mut B::Tensor,
        kv: &mut [&mut B::KvCache],
        parts: &[Part],
        s: &mut Scratch<B>,
    ) -> Result<()> {
        let (b, c) = (&self.b, &self.c);
        let (h, hd, rope) = (c.hidden, c.head_dim, c.spec.rope);
        let (qw, kvw) = (c.heads * hd, c.kv_heads * hd);
        // Each conversation's rows get the products they get alone (`Backend::linear_seqs`).
        let seqs: Vec<usize> = parts.iter().map(|p| p.rows).collect();
        let freqs = if blk.sliding {
            &self.inv_freq_local
        } else {
            &self.inv_freq
        };
        let [xn, q, k, v, att, kn, gate, up, post] = &mut s.rows;
        b.rms_norm(x, xn, h, &blk.attn_norm, c.eps)?;
        b.linear_seqs_each(xn, &seqs, &[&blk.q, &blk.k, &blk.v], &mut [q, k, v])?;
        if let Some((qn, kn_w)) = &blk.qk_norm {
            b.rms_norm(q, att, hd, qn, c.eps)?;
            b.rms_norm(k, kn, hd, kn_w, c.eps)?;
            std::mem::swap(q, att);
            std::mem::swap(k, kn);
        }
        if let [p] = parts {
            // One conversation: its rows are the batch.
            b.rope(q, c.heads, hd, p.pos0, freqs, rope)?;
            b.rope(k, c.kv_heads, hd, p.pos0, freqs, rope)?;
            b.kv_append(kv[0], layer, p.pos0, k, v)?;
            b.causal_attention(q, kv[0], layer, p.pos0, c.heads, att)?;
        } else {
            // Each conversation's rows at its own positions into its own cache, copied on the
            // device; then the attention of all of them in one call.
            for (p, [pq, pk, pv, _]) in parts.iter().zip(&mut s.parts) {
                b.copy(q, p.row * qw, pq, 0, p.rows * qw)?;
                b.copy(k, p.row * kvw, pk, 0, p.rows * kvw)?;
                b.copy(v, p.row * kvw, pv, 0, p.rows * kvw)?;
                b.rope(pq, c.heads, hd, p.pos0, freqs, rope)?;
                b.rope(pk, c.kv_heads, hd, p.pos0, freqs, rope)?;
            }
            for ((p, kv), [_, pk, pv, _]) in parts.iter().zip(kv.iter_mut()).zip(&s.parts) {
                b.kv_append(kv, layer, p.pos0, pk, pv)?;
            }
            let n = parts.len();
            let (qs, mut outs): (Vec<&B::Tensor>, Vec<&mut B::Tensor>) = s.parts[..n]
                .iter_mut()
                .map(|[pq, _, _, po]| (&**pq, &mut **po))
                .unzip();
            let caches: Vec<&B::KvCache> = kv.iter().map(|c| &**c).collect();
            let pos0: Vec<usize> = parts.iter().map(|p| p.pos0).collect();
            b.causal_attention_many(&qs, &caches, layer, &pos0, c.heads, &mut outs)?;
            for (p, o) in parts.iter().zip(outs) {
                b.copy(o, 0, att, p.row * qw, p.rows * qw)?;
            }
        }
        b.linear_seqs(att, &seqs, &blk.wo, xn)?;
        self.residual(x, xn, post, blk.post_attn_norm.as_ref())?;
        b.rms_norm(x, xn, h, &blk.ffn_norm, c.eps)?;
        b.linear_seqs_each(xn, &seqs, &[&blk.gate, &blk.up], &mut [gate, up])?;
        match c.spec.gate {
            Gate::Silu => b.silu_mul(gate, up)?,
            Gate::GeluTanh => b.gelu_tanh_mul(gate, up)?,
        }
        b.linear_seqs(gate, &seqs, &blk.down, xn)?;
        self.residual(x, xn, post, blk.post_ffn_norm.as_ref())?;
        Ok(())
    }

    /// `x += y`, or `x += norm(y)` with a sublayer's post-norm (into `post`).
    fn residual(
        &self,
        x: &mut B::Tensor,
        y: &B::Tensor,
        post: &mut B::Tensor,
        norm: Option<&B::Vector>,
    ) -> Result<()> {
        match norm {
            Some(g) => {
                self.b.rms_norm(y, post, self.c.hidden, g, self.c.eps)?;
                self.b.add(x, post)?;
            }
            None => self.b.add(x, y)?,
        }
        Ok(())
    }

    fn new_scratch(&self) -> Scratch<B> {
        Scratch {
            rows: std::array::from_fn(|_| self.b.buffer(0)),
            parts: Vec::new(),
        }
    }

    /// Sizes `s` for `parts`; buffers only grow or shrink where the sizes change.
    fn fit(&self, s: &mut Scratch<B>, parts: &[Part]) {
        let c = &self.c;
        let t: usize = parts.iter().map(|p| p.rows).sum();
        let (qw, kvw) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let post = if c.spec.post_norms { c.hidden } else { 0 };
        let sizes = [c.hidden, qw, kvw, kvw, qw, kvw, c.ffn, c.ffn, post];
        for (buf, n) in s.rows.iter_mut().zip(sizes) {
            self.b.resize(buf, t * n);
        }
        if parts.len() > 1 {
            while s.parts.len() < parts.len() {
                s.parts.push(std::array::from_fn(|_| self.b.buffer(0)));
            }
            for (p, bufs) in parts.iter().zip(&mut s.parts) {
                for (buf, n) in bufs.iter_mut().zip([qw, kvw, kvw, qw]) {
                    self.b.resize(buf, p.rows * n);
                }
            }
        }
    }

    /// [`Run::run`], the output left on the backend.
    fn run_on(
        &self,
        states: &mut [&mut AnyState],
        layers: Range<usize>,
        x: Vec<f32>,
        parts: &[Part],
    ) -> Result<B::Buffer> {
        let mut kvs = Vec::with_capacity(states.len());
        let mut scratch = None;
        let mut at: Option<&[(usize, usize)]> = None;
        for s in states.iter_mut() {
            let st = s.downcast_mut::<State<B>>().ok_or_else(|| {
                ModelError::Input("a KV cache was made by another model or device".into())
            })?;
            // The batch's buffers are the first conversation's (kept between calls).
            let State {
                kv: k,
                at: a,
                scratch: sc,
            } = st;
            // Every cache of the batch maps the range's layers the same way (the first's map).
            if **at.get_or_insert(a) != a[..] || a.len() != layers.len() {
                return Err(ModelError::Input(
                    "the batch's KV caches cover other layers than the run's".into(),
                ));
            }
            kvs.push(k);
            scratch.get_or_insert(sc);
        }
        let s = scratch.ok_or_else(|| ModelError::Input("a run of no conversation".into()))?;
        let at = at.unwrap_or_default();
        self.fit(s, parts);
        let mut x = self.b.upload(x);
        for (l, &(group, index)) in layers.zip(at) {
            let mut kv: Vec<&mut B::KvCache> = kvs.iter_mut().map(|k| &mut k[group]).collect();
            self.block(&self.blocks[l], index, &mut x, &mut kv, parts, s)?;
        }
        Ok(x)
    }

    /// The final norm and the vocabulary projection of the last `rows` rows of `x`.
    fn head_on(&self, x: &B::Tensor, rows: usize) -> Result<B::Buffer> {
        let (b, c) = (&self.b, &self.c);
        let all = b.len(x) / c.hidden;
        let mut last;
        let x = if rows < all {
            last = b.buffer(rows * c.hidden);
            b.copy(x, (all - rows) * c.hidden, &mut last, 0, rows * c.hidden)?;
            &*last
        } else {
            x
        };
        let mut xn = b.buffer(rows * c.hidden);
        b.rms_norm(x, &mut xn, c.hidden, &self.norm, c.eps)?;
        let mut logits = b.buffer(rows * c.vocab);
        b.linear(&xn, rows, &self.output, &mut logits)?;
        Ok(logits)
    }
}

impl<B: Backend> Run for On<B> {
    fn owned_bytes(&self) -> usize {
        let b = self.blocks.iter().map(|b| {
            [&b.q, &b.k, &b.v, &b.wo, &b.gate, &b.up, &b.down]
                .iter()
                .map(|m| m.owned_bytes())
                .sum::<usize>()
                + if self.c.spec.post_norms { 4 } else { 2 } * self.c.hidden * 4
        });
        b.sum::<usize>() + self.output.owned_bytes() + self.c.hidden * 4
    }

    fn copy_state(&self, src: &AnyState, dst: &mut AnyState) -> Result<()> {
        let other = || ModelError::Input("a KV cache was made by another model or device".into());
        let src = src.downcast_ref::<State<B>>().ok_or_else(other)?;
        let dst = dst.downcast_mut::<State<B>>().ok_or_else(other)?;
        if src.kv.len() != dst.kv.len() {
            return Err(ModelError::Input("the KV caches cover other layers".into()));
        }
        for (d, s) in dst.kv.iter_mut().zip(&src.kv) {
            self.b.kv_copy(s, d)?;
        }
        Ok(())
    }

    fn new_state(
        &self,
        layers: Range<usize>,
        groups: Vec<(KvShape, Vec<usize>)>,
    ) -> Result<Box<AnyState>> {
        let mut at = vec![(0, 0); layers.len()];
        let mut kv = Vec::with_capacity(groups.len());
        for (g, (shape, members)) in groups.into_iter().enumerate() {
            for (index, &l) in members.iter().enumerate() {
                at[l] = (g, index);
            }
            kv.push(self.b.kv_cache(shape)?);
        }
        Ok(Box::new(State::<B> {
            kv,
            at,
            scratch: self.new_scratch(),
        }))
    }

    fn run(
        &self,
        states: &mut [&mut AnyState],
        layers: Range<usize>,
        x: Vec<f32>,
        parts: &[Part],
    ) -> Result<Vec<f32>> {
        let x = self.run_on(states, layers, x, parts)?;
        Ok(self.b.download(x)?)
    }

    fn head(&self, x: Vec<f32>, rows: usize) -> Result<Vec<f32>> {
        let x = self.b.upload(x);
        Ok(self.b.download(self.head_on(&x, rows)?)?)
    }

    fn final_norm(&self, x: Vec<f32>, rows: usize) -> Result<Vec<f32>> {
        let (b, c) = (&self.b, &self.c);
        let x = b.upload(x);
        let mut xn = b.buffer(rows * c.hidden);
        b.rms_norm(&x, &mut xn, c.hidden, &self.norm, c.eps)?;
        Ok(b.download(xn)?)
    }

    fn forward(
        &self,
        state: &mut AnyState,
        x: Vec<f32>,
        pos0: usize,
        rows_out: usize,
    ) -> Result<Vec<f32>> {
        let rows = x.len() / self.c.hidden;
        let part = [Part { row: 0, rows, pos0 }];
        let x = self.run_on(&mut [state], 0..self.c.layers, x, &part)?;
        if rows_out == 0 {
            return Ok(Vec::new());
        }
        Ok(self.b.download(self.head_on(&x, rows_out)?)?)
    }

    fn greedy_step(&self, state: &mut AnyState, x: Vec<f32>, pos0: usize) -> Result<u32> {
        let part = [Part {
            row: 0,
            rows: 1,
            pos0,
        }];
        let x = self.run_on(&mut [state], 0..self.c.layers, x, &part)?;
        let logits = self.head_on(&x, 1)?;
        let ids = self.b.argmax(&logits, self.c.vocab)?;
        ids.first()
            .copied()
            .ok_or_else(|| ModelError::Input("a greedy step of no row".into()))
    }
}

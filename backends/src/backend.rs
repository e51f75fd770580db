//! The backend contract: the dozen ops the models need, the capability query that says which of
//! them a backend runs, weight preparation owned by the backend, device buffers, and a KV cache
//! whose layout the backend owns. The CPU ([`crate::cpu::CpuBackend`]) and the GPU
//! (`gpu::GpuBackend`) implement it; models are written once, generic over it, and the
//! [`crate::Device`] enum picks the implementation once, at the top ([`crate::Device::instantiate`]).
//!
//! A fused op is a backend's override of a method whose default is the op-by-op sequence: the
//! encoder block ([`Backend::encoder_blocks`], written once in [`crate::encoder`]) is the one
//! there is; the CPU overrides it with row tasks, and a test holds the two bit-identical.

use std::ops::DerefMut;
use std::sync::Arc;

use crate::encoder::{EncoderBlock, EncoderDims};
use crate::encoder_rotary::RotaryBlock;
pub use crate::kv_shape::{KvShape, KvType};
use crate::ops::{ActQuant, OpError, RopeStyle};
use crate::DType;

/// Bytes a prepared weight may keep borrowing instead of copying (a memory-mapped model file).
pub trait Storage: Send + Sync {
    /// The whole storage.
    fn bytes(&self) -> &[u8];
}

/// Shared [`Storage`]: what a zero-copy weight holds on to.
pub type SharedStorage = Arc<dyn Storage>;

/// A weight matrix `[n, k]` as stored, for [`Backend::prepare`].
#[derive(Clone, Copy)]
pub struct WeightSource<'a> {
    /// How the values are stored (blocks of 32 for the quantized types).
    pub dtype: DType,
    /// The stored bytes, row-major.
    pub data: &'a [u8],
    /// Storage that holds `data` and outlives the weight: a backend may keep it and read `data`
    /// in place (zero copy). `None`: `data` is the caller's, copy what is kept.
    pub storage: Option<&'a SharedStorage>,
    /// Output features (rows).
    pub n: usize,
    /// Input features (columns).
    pub k: usize,
    /// The bias, `n` values.
    pub bias: Option<&'a [f32]>,
    /// How the input is multiplied: int8 (with or without f32 outlier columns), or f32 against
    /// the stored blocks as they are.
    pub act: ActQuant,
}

/// What every prepared matrix tells about itself.
pub trait PreparedMatrix: Send + Sync {
    /// Output features.
    fn n(&self) -> usize;
    /// Input features.
    fn k(&self) -> usize;
    /// Bytes held outside the model file (copies, repacked layouts, device memory).
    fn owned_bytes(&self) -> usize;
}

/// How encoder attention products are computed: a backend-neutral choice (the CPU honours it;
/// the GPU computes f32 either way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionPrecision {
    /// The fastest this CPU offers at unchanged fidelity: with the AVX-512 VNNI kernel set on a
    /// CPU with AVX-512 BF16, q, k, v and the probabilities rounded to bf16 (products summed
    /// in f32); elsewhere f32.
    #[default]
    Fast,
    /// f32 throughout, as the GPU backend computes (for comparing backends value for value).
    F32,
}

/// An elementwise activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Act {
    /// GELU, the exact erf form (BERT's feed-forward).
    Gelu,
    /// tanh (BERT's pooler).
    Tanh,
    /// max(0, x) (DistilBERT's pre-classifier).
    Relu,
    /// `x * sigmoid(1.702 x)`, the GELU approximation OpenAI's CLIP was trained with
    /// (`quick_gelu`).
    QuickGelu,
}

/// The ops of the contract, for [`Backend::supports`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// [`Backend::prepare`] and [`Backend::linear`] of weights stored as the [`DType`], with
    /// activations as the [`ActQuant`] says (int8, or f32 against the stored blocks). Asked per
    /// matrix before any weight is read, so that a model refuses a file it cannot run at once.
    Linear(ActQuant, DType),
    /// [`Backend::layer_norm`].
    LayerNorm,
    /// [`Backend::activate`].
    Activate(Act),
    /// [`Backend::attention`] (encoders: padded batches, no cache).
    Attention,
    /// [`Backend::attention`] with [`EncoderAttention::causal`] set: each token attends to
    /// itself and those before it (CLIP's text tower).
    EncoderCausalAttention,
    /// [`Backend::attention`] with [`EncoderAttention::window`] set: each token attends to
    /// the tokens within that distance on either side (ModernBERT's local layers).
    EncoderWindowedAttention,
    /// [`Backend::rope_texts`]: rotary embeddings of an encoder's padded batch.
    RopeTexts,
    /// [`Backend::mul`].
    Mul,
    /// [`Backend::rms_norm`].
    RmsNorm,
    /// [`Backend::silu_mul`].
    SiluMul,
    /// [`Backend::gelu_tanh_mul`].
    GeluTanhMul,
    /// [`Backend::add`].
    Add,
    /// [`Backend::rope`].
    Rope,
    /// [`Backend::kv_cache`], [`Backend::kv_append`] and [`Backend::causal_attention`].
    CausalAttention,
}

impl Op {
    /// Every op a decoder block needs besides its matrices' [`Op::Linear`].
    pub const DECODER: [Op; 5] = [
        Op::RmsNorm,
        Op::SiluMul,
        Op::Add,
        Op::Rope,
        Op::CausalAttention,
    ];
    /// Every op an encoder (a BERT block) needs besides its matrices' [`Op::Linear`].
    pub const ENCODER: [Op; 3] = [Op::LayerNorm, Op::Activate(Act::Gelu), Op::Attention];
    /// Every op a rotary encoder (ModernBERT's block) needs besides its matrices'.
    pub const ROTARY_ENCODER: [Op; 7] = [
        Op::LayerNorm,
        Op::Activate(Act::Gelu),
        Op::Attention,
        Op::EncoderWindowedAttention,
        Op::RopeTexts,
        Op::Mul,
        Op::Add,
    ];
}

/// Multi-head attention over padded batches: q, k and v rows read at offsets within rows
/// `stride` apart (a stacked q/k/v product: offsets `0, h, 2h`, stride `3h`).
pub struct EncoderAttention<'a, T: ?Sized> {
    /// Holds the queries.
    pub q: &'a T,
    /// Holds the keys.
    pub k: &'a T,
    /// Holds the values.
    pub v: &'a T,
    /// Offsets of q, k and v within a row.
    pub offsets: [usize; 3],
    /// Values from one row to the next.
    pub stride: usize,
    /// 1 for tokens, 0 for padding, `[batch * seq]`.
    pub mask: &'a [u8],
    /// Texts.
    pub batch: usize,
    /// Tokens per text (padded).
    pub seq: usize,
    /// Heads.
    pub heads: usize,
    /// Values per head.
    pub head_dim: usize,
    /// Whether a token sees only itself and the tokens before it (CLIP's text tower), as well
    /// as only unmasked ones.
    pub causal: bool,
    /// Local attention: token `i` sees only tokens `j` with `|i - j| <= window` (ModernBERT's
    /// sliding layers: half its `local_attention`); `None` sees the whole text.
    pub window: Option<usize>,
}

/// The keys a query of encoder attention sees, as distances `(before, after)`: key `j` is seen
/// from query `i` when `i - before <= j <= i + after` (both at most `seq`, so sums stay small),
/// from [`EncoderAttention::window`] and [`EncoderAttention::causal`]. Every backend's kernels
/// read their reach from here.
pub(crate) fn key_reach(window: Option<usize>, causal: bool, seq: usize) -> (usize, usize) {
    let before = window.unwrap_or(seq).min(seq);
    (before, if causal { 0 } else { before })
}

/// A backend: a device with its kernels. Tensors are flat f32 values (`Tensor`, borrowed;
/// `Buffer`, owned); weights and vectors are prepared once, at load, into the backend's own
/// layout. Every op checks its operands and answers a shape that does not fit with
/// [`OpError::Shape`]; an op the backend does not run answers [`OpError::Unsupported`] (ask
/// [`Backend::supports`] first).
pub trait Backend: Clone + Send + Sync + Sized + 'static {
    /// Values on the device (CPU: `[f32]`).
    type Tensor: ?Sized + Send + Sync;
    /// An owned tensor (CPU: `Vec<f32>`).
    type Buffer: DerefMut<Target = Self::Tensor> + Send + Sync;
    /// A prepared weight matrix with its bias.
    type Matrix: PreparedMatrix;
    /// A prepared vector (norm weights, rotary frequencies).
    type Vector: Send + Sync;
    /// A KV cache in the backend's layout.
    type KvCache: Send + Sync;

    /// The device in words (kernels, threads, adapter).
    fn describe(&self) -> String;
    /// Whether the backend runs `op`.
    fn supports(&self, op: Op) -> bool;

    /// Prepares a weight matrix: kept in place, re-quantized, repacked or uploaded.
    fn prepare(&self, w: WeightSource<'_>) -> Result<Self::Matrix, OpError>;
    /// Prepares a vector.
    fn vector(&self, v: &[f32]) -> Self::Vector;
    /// Host values onto the device.
    fn upload(&self, x: Vec<f32>) -> Self::Buffer;
    /// A buffer's values back on the host.
    fn download(&self, x: Self::Buffer) -> Result<Vec<f32>, OpError>;
    /// Values crossing between the host and the device so far ([`Backend::upload`],
    /// [`Backend::download`] and [`Backend::argmax`]'s answers): what a test counts to hold the
    /// models to their promise that a block keeps its tensors on the device.
    fn transfers(&self) -> u64;
    /// A buffer of `len` values, contents unspecified.
    fn buffer(&self, len: usize) -> Self::Buffer;
    /// Copies `len` values of `src` from `src_at` into `dst` at `dst_at`, on the device (the
    /// rows of one conversation out of a batch and back, without a trip to the host).
    fn copy(
        &self,
        src: &Self::Tensor,
        src_at: usize,
        dst: &mut Self::Tensor,
        dst_at: usize,
        len: usize,
    ) -> Result<(), OpError>;
    /// Makes `b` hold `len` values (contents unspecified), reusing it where it can.
    fn resize(&self, b: &mut Self::Buffer, len: usize);
    /// Values in a tensor.
    fn len(&self, x: &Self::Tensor) -> usize;

    /// `out = x W^T + bias` for `rows` rows of `x`.
    fn linear(
        &self,
        x: &Self::Tensor,
        rows: usize,
        w: &Self::Matrix,
        out: &mut Self::Tensor,
    ) -> Result<(), OpError>;
    /// [`Backend::linear`] over the rows of several sequences, `seqs[i]` rows each in turn:
    /// each sequence's rows get the result a call with them alone gives (a backend whose
    /// kernels depend on the row count keeps them apart; by default, one call).
    fn linear_seqs(
        &self,
        x: &Self::Tensor,
        seqs: &[usize],
        w: &Self::Matrix,
        out: &mut Self::Tensor,
    ) -> Result<(), OpError> {
        self.linear(x, seqs.iter().sum(), w, out)
    }
    /// [`Backend::linear_seqs`] of the same rows with several matrices of the same input width
    /// (a block's q, k and v; its gate and up), `outs[i]` for `ws[i]`: a backend may prepare
    /// the rows once and run the products together, each row getting the bits a call with
    /// one matrix gives; by default, one call each.
    fn linear_seqs_each(
        &self,
        x: &Self::Tensor,
        seqs: &[usize],
        ws: &[&Self::Matrix],
        outs: &mut [&mut Self::Tensor],
    ) -> Result<(), OpError> {
        OpError::check("linear_seqs_each outputs", outs.len(), ws.len())?;
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            self.linear_seqs(x, seqs, w, out)?;
        }
        Ok(())
    }
    /// Layer norm of each row of `x` (rows of `dim`) in place, after adding `residual`.
    fn layer_norm(
        &self,
        x: &mut Self::Tensor,
        residual: Option<&Self::Tensor>,
        dim: usize,
        gamma: &Self::Vector,
        beta: &Self::Vector,
        eps: f32,
    ) -> Result<(), OpError>;
    /// An activation of every value, in place.
    fn activate(&self, x: &mut Self::Tensor, act: Act) -> Result<(), OpError>;
    /// Multi-head attention with padding masked, into `out` (`batch * seq` rows of
    /// `heads * head_dim`).
    fn attention(
        &self,
        a: &EncoderAttention<'_, Self::Tensor>,
        out: &mut Self::Tensor,
    ) -> Result<(), OpError>;
    /// RMS norm of each row of `x` (rows of `dim`) into `out`.
    fn rms_norm(
        &self,
        x: &Self::Tensor,
        out: &mut Self::Tensor,
        dim: usize,
        gamma: &Self::Vector,
        eps: f32,
    ) -> Result<(), OpError>;
    /// SwiGLU's product: `gate = silu(gate) * up`.
    fn silu_mul(&self, gate: &mut Self::Tensor, up: &Self::Tensor) -> Result<(), OpError>;
    /// GeGLU's product with GELU's tanh form (Gemma): `gate = gelu_tanh(gate) * up`, where
    /// `gelu_tanh(x) = x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))`.
    fn gelu_tanh_mul(&self, gate: &mut Self::Tensor, up: &Self::Tensor) -> Result<(), OpError>;
    /// `a += b`.
    fn add(&self, a: &mut Self::Tensor, b: &Self::Tensor) -> Result<(), OpError>;
    /// `a *= b`, elementwise (a gated feed-forward's product after its activation).
    fn mul(&self, a: &mut Self::Tensor, b: &Self::Tensor) -> Result<(), OpError>;
    /// The index of the largest value of each row of `width` values of `x` (the first of
    /// equal ones; rows holding NaN may differ between backends): greedy decoding's choice, made where the logits are, so that a GPU sends
    /// back a few bytes per row instead of the whole vocabulary's logits.
    fn argmax(&self, x: &Self::Tensor, width: usize) -> Result<Vec<u32>, OpError>;
    /// Rotary embeddings of rows of `heads * head_dim` (row `i` at position `pos0 + i`), in
    /// place; `inv_freq` holds one frequency per rotated pair.
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &mut Self::Tensor,
        heads: usize,
        head_dim: usize,
        pos0: usize,
        inv_freq: &Self::Vector,
        style: RopeStyle,
    ) -> Result<(), OpError>;
    /// Rotary embeddings of an encoder's padded batch, in place: `x` holds rows of `stride`
    /// values whose first `heads * head_dim` are rotated (q and k of a stacked q/k/v product are
    /// the first two thirds: `2 * heads` heads), row `i` at position `i % seq` (every text
    /// counts from 0).
    #[allow(clippy::too_many_arguments)]
    fn rope_texts(
        &self,
        x: &mut Self::Tensor,
        stride: usize,
        heads: usize,
        head_dim: usize,
        seq: usize,
        inv_freq: &Self::Vector,
        style: RopeStyle,
    ) -> Result<(), OpError>;

    /// An empty KV cache (fails without allocating when it does not fit in memory).
    fn kv_cache(&self, shape: KvShape) -> Result<Self::KvCache, OpError>;
    /// Stores the keys and values of rows at positions `pos0..` of `layer`
    /// (`[rows, kv_heads * head_dim]` each); refused when a query among them could no longer
    /// read its positions ([`KvShape::check_positions`]: a windowed cache is a ring).
    fn kv_append(
        &self,
        cache: &mut Self::KvCache,
        layer: usize,
        pos0: usize,
        k: &Self::Tensor,
        v: &Self::Tensor,
    ) -> Result<(), OpError>;
    /// Copies the keys and values of `src` into `dst`, a cache of the same shape: a
    /// conversation forked after its prompt (several replies to one prompt) computes the prompt
    /// once. The default refuses, and the caller runs the prompt again.
    fn kv_copy(&self, src: &Self::KvCache, dst: &mut Self::KvCache) -> Result<(), OpError> {
        let _ = (src, dst);
        Err(OpError::Unsupported {
            what: "copying a KV cache".into(),
            backend: "this backend".into(),
        })
    }
    /// Causal grouped-query attention of query rows at positions `pos0..` (`[rows, heads *
    /// head_dim]`, rotary applied) against `layer` of a cache that holds their keys and
    /// values; query head `h` reads KV head `h / (heads / kv_heads)`. With a window
    /// ([`KvShape::window`]) a row at position `p` reads only the last `window` positions up to
    /// `p`.
    fn causal_attention(
        &self,
        q: &Self::Tensor,
        cache: &Self::KvCache,
        layer: usize,
        pos0: usize,
        heads: usize,
        out: &mut Self::Tensor,
    ) -> Result<(), OpError>;
    /// [`Backend::causal_attention`] of several conversations at `layer` (a decode step of
    /// several at once): conversation `i`'s query rows `q[i]`, at positions `pos0[i]..` of
    /// `caches[i]`, into `out[i]`. Each result is the one [`Backend::causal_attention`] gives.
    /// The default runs them one after another; a backend may run them together (the CPU
    /// backend: one parallel region over every conversation's heads, where one conversation's
    /// few rows are too little work to share out).
    fn causal_attention_many(
        &self,
        q: &[&Self::Tensor],
        caches: &[&Self::KvCache],
        layer: usize,
        pos0: &[usize],
        heads: usize,
        out: &mut [&mut Self::Tensor],
    ) -> Result<(), OpError> {
        check_many(q.len(), caches.len(), pos0.len(), out.len())?;
        for (((q, cache), &pos0), out) in q.iter().zip(caches).zip(pos0).zip(out.iter_mut()) {
            self.causal_attention(q, cache, layer, pos0, heads, out)?;
        }
        Ok(())
    }

    /// Encoder blocks over `batch` texts of `seq` tokens (`x`: their rows), in place. The
    /// default runs them op by op ([`crate::encoder::blocks_op_by_op`]); a backend may fuse.
    fn encoder_blocks(
        &self,
        blocks: &[EncoderBlock<Self>],
        dims: &EncoderDims,
        x: &mut Self::Tensor,
        mask: &[u8],
        batch: usize,
        seq: usize,
    ) -> Result<(), OpError> {
        crate::encoder::blocks_op_by_op(self, blocks, dims, x, mask, batch, seq)
    }

    /// Rotary encoder blocks (ModernBERT's) over `batch` texts of `seq` tokens, in place. The
    /// default runs them op by op over every row ([`crate::encoder_rotary::rotary_blocks`]); a
    /// backend may run them in groups of texts (the CPU: groups whose intermediates stay in
    /// cache).
    fn rotary_encoder_blocks(
        &self,
        blocks: &[RotaryBlock<Self>],
        dims: &EncoderDims,
        x: &mut Self::Tensor,
        mask: &[u8],
        batch: usize,
        seq: usize,
    ) -> Result<(), OpError> {
        crate::encoder_rotary::rotary_blocks(self, blocks, dims, x, mask, batch, seq)
    }
}

/// A count of host-device transfers a backend and its clones share ([`Backend::transfers`]).
#[derive(Clone, Debug, Default)]
pub struct TransferCount(Arc<std::sync::atomic::AtomicU64>);

impl TransferCount {
    /// Counts one transfer.
    pub fn note(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Transfers so far.
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Checks a [`Backend::copy`] of `len` values from `src_at` of `src_len` values into `dst_at` of
/// `dst_len`.
pub fn check_copy(
    src_len: usize,
    src_at: usize,
    dst_len: usize,
    dst_at: usize,
    len: usize,
) -> Result<(), OpError> {
    let fits = |at: usize, total: usize| at.checked_add(len).is_some_and(|end| end <= total);
    if !fits(src_at, src_len) || !fits(dst_at, dst_len) {
        return Err(OpError::Shape(format!(
            "copy of {len} values from {src_at} of {src_len} to {dst_at} of {dst_len}"
        )));
    }
    Ok(())
}

/// The operands of [`Backend::causal_attention_many`] name as many conversations each.
pub fn check_many(q: usize, caches: usize, pos0: usize, out: usize) -> Result<(), OpError> {
    if caches != q || pos0 != q || out != q {
        return Err(OpError::Shape(format!(
            "attention of several conversations: {q} queries, {caches} caches, {pos0} \
             positions, {out} outputs"
        )));
    }
    Ok(())
}

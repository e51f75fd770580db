//! The CPU's op descriptors: plain data that [`super::CpuBackend`]'s inherent ops take (the
//! contract's methods build them from prepared weights and tensors).

use crate::ops::ActQuant;

/// A weight matrix `[n, k]` (n output rows of k inputs), as stored.
#[derive(Clone, Copy, Debug)]
pub enum WeightData<'a> {
    /// Q8_0 blocks, row-major: `n * k / 32` blocks of 34 bytes.
    Q8_0(&'a [u8]),
    /// Plain f32, row-major.
    F32(&'a [f32]),
    /// Q8_0 weights repacked for the CPU's VNNI GEMM, with the Q8_0 blocks they came from
    /// (read for outlier columns).
    Packed(&'a super::PackedQ8_0, &'a [u8]),
    /// Blocks of 32 of a quantized type (Q8_0, Q4_0 or Q4_1), row-major, used as stored and
    /// multiplied with f32 activations (whatever [`Linear::act`] says).
    Blocks(crate::DType, &'a [u8]),
}

/// A linear layer: `y = x W^T + b`.
#[derive(Clone, Copy, Debug)]
pub struct Linear<'a> {
    /// The weights.
    pub w: WeightData<'a>,
    /// The bias, `n` values.
    pub bias: Option<&'a [f32]>,
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// Activation quantization for Q8_0 weights (ignored for f32 weights).
    pub act: ActQuant,
}

/// Inputs of multi-head attention.
#[derive(Clone, Copy, Debug)]
pub struct Attention<'a> {
    /// Queries: `batch * seq` rows of `heads * head_dim` values, each row [`stride`](Self::stride)
    /// floats after the one before.
    pub q: &'a [f32],
    /// Keys, same layout.
    pub k: &'a [f32],
    /// Values, same layout.
    pub v: &'a [f32],
    /// Floats from one row of `q`, `k` or `v` to the next: `heads * head_dim` for separate
    /// arrays, `3 * heads * head_dim` for views into one stacked q/k/v product.
    pub stride: usize,
    /// 1 for real tokens, 0 for padding, `[batch * seq]`.
    pub mask: &'a [u8],
    /// Sequences in the batch.
    pub batch: usize,
    /// Tokens per sequence (padded).
    pub seq: usize,
    /// Attention heads.
    pub heads: usize,
    /// Dimension per head.
    pub head_dim: usize,
    /// Whether token `i` attends only to unmasked tokens `0..=i` (CLIP's text tower).
    pub causal: bool,
    /// Local attention: token `i` attends only to tokens within this distance (ModernBERT).
    pub window: Option<usize>,
}

/// Inputs of causal grouped-query attention for rows appended to a KV cache.
///
/// Query row `i` sits at position `pos0 + i` and attends to cache positions `0..=pos0 + i`
/// (the last `window` of them with a window, read from a ring: see [`crate::kv_shape`]);
/// its keys and values must already be in the cache, stored as `T` (f16 by default: half the
/// bytes that every decoded token reads, llama.cpp's default too; or f32). Keys are stored transposed,
/// `[kv_heads, head_dim, slots]`, so scores are computed along positions; values are
/// `[kv_heads, slots, head_dim]`. Query head `h` reads KV head `h / (heads / kv_heads)`.
#[derive(Clone, Copy, Debug)]
pub struct CausalAttention<'a, T = half::f16> {
    /// Queries, `[rows, heads * head_dim]`, rotary embeddings applied.
    pub q: &'a [f32],
    /// Key cache, transposed: `[kv_heads, head_dim, slots]`.
    pub k: &'a [T],
    /// Value cache, `[kv_heads, slots, head_dim]`.
    pub v: &'a [T],
    /// Position of the first query row.
    pub pos0: usize,
    /// Positions the cache holds ([`KvShape::capacity`](crate::KvShape): with a window, the
    /// ring's length; the key and value planes hold [`KvShape::slots`](crate::KvShape::slots)).
    pub capacity: usize,
    /// Sliding-window attention ([`KvShape::window`](crate::KvShape)).
    pub window: Option<usize>,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Dimension per head.
    pub head_dim: usize,
}

impl<T: super::KvElem> CausalAttention<'_, T> {
    /// The cache's shape as one layer of a [`crate::KvShape`].
    pub fn shape(&self) -> crate::KvShape {
        crate::KvShape {
            layers: 1,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            capacity: self.capacity,
            window: self.window,
            dtype: T::TYPE,
        }
    }
}

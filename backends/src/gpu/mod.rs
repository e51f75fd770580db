//! The GPU backend: the op contract as CubeCL kernels ([`kernels`]), written once and launched on
//! cubecl's wgpu runtime (feature `wgpu`: Vulkan, Metal, DX12; `vulkan` for SPIR-V shaders) and
//! on its CUDA runtime (feature `cuda`, the driver loaded at run time).
//!
//! Data stays on the GPU between ops: models upload their weights once ([`GpuBackend::upload_q8_0`],
//! Q8_0 repacked into int8 words and f32 scales, since Q8_0's 34-byte blocks are not 4-byte
//! aligned) and pass [`GpuBuffer`]s from op to op; only a stage's input and output cross the bus.
//!
//! [`GpuBackend`] hides the runtime: no cubecl generic leaks out of this module.

mod contract;
mod decoder_kernels;
mod decoder_ops;
mod kernels;
mod kv;
mod matmul_blocks;
mod matmul_q8;
mod open;
mod ops;

use std::fmt;
use std::sync::Arc;

use cubecl::server::Handle;

use crate::ops::{ActQuant, OpError, RopeStyle};

pub use contract::GpuLinear;
pub use kv::GpuKvCache;
pub use open::GpuKind;

/// A buffer of 4-byte values (f32 or u32) on a GPU.
#[derive(Clone)]
pub struct GpuBuffer {
    handle: Handle,
    len: usize,
}

impl GpuBuffer {
    /// Values in the buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpuBuffer({} values)", self.len)
    }
}

/// A Q8_0 weight matrix `[n, k]` on a GPU: int8 values four to a word, one f32 scale per 32.
#[derive(Clone, Debug)]
pub struct GpuMatrix {
    q: GpuBuffer,
    d: GpuBuffer,
    /// Output features (rows).
    pub n: usize,
    /// Input features (columns).
    pub k: usize,
}

/// A weight matrix `[n, k]` on a GPU for f32 activations, its stored values repacked into aligned
/// words: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K as units of 32 quantized values
/// (4 or 8 bits) with f32 scales (and minimums), the other types as f32 words.
#[derive(Clone, Debug)]
pub struct GpuBlocks {
    kind: u32,
    q: GpuBuffer,
    d: GpuBuffer,
    mn: GpuBuffer,
    /// Output features (rows).
    pub n: usize,
    /// Input features (columns).
    pub k: usize,
}

impl GpuBlocks {
    /// Bytes of device memory the matrix holds.
    pub fn bytes(&self) -> usize {
        (self.q.len() + self.d.len() + self.mn.len()) * 4
    }
}

/// Inputs of multi-head attention on a GPU: q, k and v rows read from one buffer at offsets
/// within rows `stride` apart (a stacked q/k/v product: offsets `0, h, 2h`, stride `3h`).
#[derive(Clone, Copy, Debug)]
pub struct GpuAttention<'a> {
    /// The q/k/v rows, `batch * seq` rows of `stride` values.
    pub qkv: &'a GpuBuffer,
    /// Offset of the queries within a row.
    pub q_off: usize,
    /// Offset of the keys within a row.
    pub k_off: usize,
    /// Offset of the values within a row.
    pub v_off: usize,
    /// Values from one row to the next.
    pub stride: usize,
    /// One value per token (u32): 1 for tokens, 0 for padding.
    pub mask: &'a GpuBuffer,
    /// Texts in the batch.
    pub batch: usize,
    /// Tokens per text (padded).
    pub seq: usize,
    /// Attention heads.
    pub heads: usize,
    /// Dimension per head.
    pub head_dim: usize,
    /// Whether token `i` sees only unmasked tokens `0..=i` (CLIP's text tower).
    pub causal: bool,
    /// Local attention: token `i` sees only tokens within this distance (ModernBERT).
    pub window: Option<usize>,
}

#[derive(Clone)]
enum Runtime {
    #[cfg(feature = "wgpu")]
    Wgpu(Arc<ops::Gpu<cubecl::wgpu::WgpuRuntime>>),
    #[cfg(feature = "cuda")]
    Cuda(Arc<ops::Gpu<cubecl::cuda::CudaRuntime>>),
}

/// Runs `$e` with `$g` bound to the runtime's [`ops::Gpu`].
macro_rules! on_gpu {
    ($self:expr, $g:ident => $e:expr) => {
        match &$self.rt {
            #[cfg(feature = "wgpu")]
            Runtime::Wgpu($g) => $e,
            #[cfg(feature = "cuda")]
            Runtime::Cuda($g) => $e,
        }
    };
}

/// A GPU ready to run ops, on the runtime picked at run time.
#[derive(Clone)]
pub struct GpuBackend {
    rt: Runtime,
    kind: GpuKind,
    name: String,
    software: bool,
    discrete: bool,
    transfers: crate::backend::TransferCount,
    /// A smaller largest buffer than the device's ([`GpuBackend::with_max_buffer_bytes`]).
    max_buffer: Option<u64>,
}

impl fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpuBackend({self})")
    }
}

impl fmt::Display for GpuBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.kind, self.name)
    }
}

impl GpuBackend {
    /// The runtime: wgpu or CUDA.
    pub fn kind(&self) -> GpuKind {
        self.kind
    }

    /// The adapter's name as the driver reports it (with wgpu's shader path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the adapter is a software rasteriser on the CPU (such as Mesa's lavapipe).
    pub fn is_software(&self) -> bool {
        self.software
    }

    /// Whether the adapter is a discrete GPU (every CUDA device counts as one).
    pub fn is_discrete(&self) -> bool {
        self.discrete
    }

    /// A new buffer holding `x`.
    pub fn upload(&self, x: &[f32]) -> GpuBuffer {
        on_gpu!(self, g => g.upload_f32(x))
    }

    /// A new buffer holding `x` (u32 values, such as masks).
    pub fn upload_u32(&self, x: &[u32]) -> GpuBuffer {
        on_gpu!(self, g => g.upload_u32(x))
    }

    /// A new buffer of `len` values, contents unspecified (an op's output).
    pub fn empty(&self, len: usize) -> GpuBuffer {
        on_gpu!(self, g => g.empty(len))
    }

    /// The f32 values of `b` (waits for the ops writing it).
    pub fn download(&self, b: &GpuBuffer) -> Result<Vec<f32>, OpError> {
        on_gpu!(self, g => g.download(b))
    }

    /// Uploads Q8_0 blocks (`n` rows of `k`, `n * k / 32` blocks of 34 bytes), repacked.
    pub fn upload_q8_0(&self, blocks: &[u8], n: usize, k: usize) -> Result<GpuMatrix, OpError> {
        if k == 0 || !k.is_multiple_of(crate::quant::QK) {
            return Err(OpError::Shape(format!(
                "Q8_0 rows of {k} values are not whole blocks of 32"
            )));
        }
        OpError::check("Q8_0 weight bytes", blocks.len(), n * k / 32 * 34)?;
        on_gpu!(self, g => g.upload_q8_0(blocks, n, k))
    }

    /// `out = x w^T + bias` for `rows` rows of `x`, activations quantized as `act`
    /// ([`ActQuant::Int8`] or [`ActQuant::Int8Outliers`], computed as the CPU does).
    pub fn linear(
        &self,
        x: &GpuBuffer,
        rows: usize,
        w: &GpuMatrix,
        bias: Option<&GpuBuffer>,
        act: ActQuant,
        out: &GpuBuffer,
    ) -> Result<(), OpError> {
        on_gpu!(self, g => g.linear(x, rows, w, bias, act, out))
    }

    /// Layer norm of each row of `x` (rows of `dim`) in place, after adding `delta` if given.
    pub fn layer_norm(
        &self,
        x: &GpuBuffer,
        delta: Option<&GpuBuffer>,
        dim: usize,
        gamma: &GpuBuffer,
        beta: &GpuBuffer,
        eps: f32,
    ) -> Result<(), OpError> {
        on_gpu!(self, g => g.layer_norm(x, delta, dim, gamma, beta, eps))
    }

    /// GELU (erf form) of every value of `x`, in place.
    pub fn gelu(&self, x: &GpuBuffer) -> Result<(), OpError> {
        on_gpu!(self, g => g.gelu(x))
    }

    /// CLIP's `quick_gelu` (`x * sigmoid(1.702 x)`) of every value of `x`, in place.
    pub fn quick_gelu(&self, x: &GpuBuffer) -> Result<(), OpError> {
        on_gpu!(self, g => g.quick_gelu(x))
    }

    /// Multi-head attention with padding masked, into `out` (`batch * seq` rows of
    /// `heads * head_dim`).
    pub fn attention(&self, a: &GpuAttention<'_>, out: &GpuBuffer) -> Result<(), OpError> {
        on_gpu!(self, g => g.attention(a, out))
    }

    /// RMS norm of each row of `x` (rows of `gamma.len()`) into `out`.
    pub fn rms_norm(
        &self,
        x: &GpuBuffer,
        out: &GpuBuffer,
        gamma: &GpuBuffer,
        eps: f32,
    ) -> Result<(), OpError> {
        on_gpu!(self, g => g.rms_norm(x, out, gamma, eps))
    }

    /// SwiGLU's product: `gate = silu(gate) * up`, in place.
    pub fn silu_mul(&self, gate: &GpuBuffer, up: &GpuBuffer) -> Result<(), OpError> {
        on_gpu!(self, g => g.silu_mul(gate, up))
    }

    /// GeGLU's product: `gate = gelu_tanh(gate) * up`, in place.
    pub fn gelu_tanh_mul(&self, gate: &GpuBuffer, up: &GpuBuffer) -> Result<(), OpError> {
        on_gpu!(self, g => g.gelu_tanh_mul(gate, up))
    }

    /// Rotary embeddings of `x` (rows of `heads * head_dim`, the first at position `pos0`),
    /// in place; `inv_freq` holds one frequency per rotated pair.
    pub fn rope(
        &self,
        x: &GpuBuffer,
        heads: usize,
        head_dim: usize,
        pos0: usize,
        inv_freq: &GpuBuffer,
        style: RopeStyle,
    ) -> Result<(), OpError> {
        on_gpu!(self, g => g.rope(x, heads, head_dim, pos0, inv_freq, style))
    }

    /// Rotary embeddings of an encoder's padded batch (see [`crate::Backend::rope_texts`]).
    #[allow(clippy::too_many_arguments)]
    pub fn rope_texts(
        &self,
        x: &GpuBuffer,
        stride: usize,
        heads: usize,
        head_dim: usize,
        seq: usize,
        inv_freq: &GpuBuffer,
        style: RopeStyle,
    ) -> Result<(), OpError> {
        on_gpu!(self, g => g.rope_texts(x, stride, heads, head_dim, seq, inv_freq, style))
    }

    /// Uploads a matrix of `n` rows of `k` values stored as `dtype` for products with f32
    /// activations ([`Self::linear_f32`]): Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K
    /// as quantized words with f32 scales, the other types decoded to f32.
    pub fn upload_blocks(
        &self,
        dtype: crate::DType,
        data: &[u8],
        n: usize,
        k: usize,
    ) -> Result<GpuBlocks, OpError> {
        on_gpu!(self, g => g.upload_blocks(dtype, data, n, k))
    }

    /// `out = x w^T + bias` for `rows` rows of f32 activations `x`.
    pub fn linear_f32(
        &self,
        x: &GpuBuffer,
        rows: usize,
        w: &GpuBlocks,
        bias: Option<&GpuBuffer>,
        out: &GpuBuffer,
    ) -> Result<(), OpError> {
        on_gpu!(self, g => g.linear_f32(x, rows, w, bias, out))
    }

    /// `a += b`.
    pub fn add(&self, a: &GpuBuffer, b: &GpuBuffer) -> Result<(), OpError> {
        on_gpu!(self, g => g.add(a, b))
    }

    /// `a *= b`, elementwise.
    pub fn mul(&self, a: &GpuBuffer, b: &GpuBuffer) -> Result<(), OpError> {
        on_gpu!(self, g => g.mul(a, b))
    }

    /// The index of the largest value of each row of `width` values of `x` (the first of equal
    /// ones; a NaN is never chosen): only the indices come back from the GPU.
    pub fn argmax(&self, x: &GpuBuffer, width: usize) -> Result<Vec<u32>, OpError> {
        on_gpu!(self, g => g.argmax(x, width))
    }

    /// The most bytes one buffer may hold and a kernel bind (wgpu's
    /// `max_storage_buffer_binding_size`: 128 MiB on lavapipe; larger matrices are split).
    pub fn max_buffer_bytes(&self) -> u64 {
        let device = on_gpu!(self, g => g.client.properties().memory.max_page_size);
        self.max_buffer.map_or(device, |m| m.min(device))
    }

    /// This backend with matrices split as if the device's largest buffer held `bytes` (tests
    /// run the split on small matrices with it).
    pub fn with_max_buffer_bytes(mut self, bytes: u64) -> Self {
        self.max_buffer = Some(bytes);
        self
    }

    /// Copies `len` values of `src` from `src_at` into `dst` at `dst_at`, on the GPU.
    pub fn copy(
        &self,
        src: &GpuBuffer,
        src_at: usize,
        dst: &GpuBuffer,
        dst_at: usize,
        len: usize,
    ) -> Result<(), OpError> {
        crate::backend::check_copy(src.len, src_at, dst.len, dst_at, len)?;
        on_gpu!(self, g => g.copy(src, src_at, dst, dst_at, len))
    }

    /// An empty KV cache of `shape` in GPU memory (keys and values as f16).
    pub fn kv_cache(&self, shape: crate::backend::KvShape) -> Result<GpuKvCache, OpError> {
        on_gpu!(self, g => g.kv_cache(shape))
    }

    /// Stores keys and values (`[rows, kv_heads * head_dim]`) at positions `pos0..` of `layer`.
    pub fn kv_append(
        &self,
        cache: &GpuKvCache,
        layer: usize,
        pos0: usize,
        k: &GpuBuffer,
        v: &GpuBuffer,
    ) -> Result<(), OpError> {
        on_gpu!(self, g => g.kv_append(cache, layer, pos0, k, v))
    }

    /// Causal grouped-query attention of query rows `q` (at positions `pos0..`, `heads` heads)
    /// against `layer` of `cache`, into `out`.
    pub fn causal_attention(
        &self,
        q: &GpuBuffer,
        cache: &GpuKvCache,
        layer: usize,
        pos0: usize,
        heads: usize,
        out: &GpuBuffer,
    ) -> Result<(), OpError> {
        on_gpu!(self, g => g.causal_attention(q, cache, layer, pos0, heads, out))
    }

    /// Embedding gather: rows `ids` of a Q8_0 table uploaded with [`Self::upload_q8_0`]
    /// (`n` rows of `k`), as f32, into `out`. An id past the table is an error.
    pub fn gather(&self, table: &GpuMatrix, ids: &[u32], out: &GpuBuffer) -> Result<(), OpError> {
        on_gpu!(self, g => g.gather(table, ids, out))
    }
}

//! The CPU backend: the op contract on f32 activations and Q8_0 (or f32) weights, with INT8 dot
//! products picked for this CPU at run time and work spread over a thread pool.

mod act_quant;
#[cfg(target_arch = "x86_64")]
mod attn_avx2;
#[cfg(target_arch = "x86_64")]
mod attn_avx512;
#[cfg(target_arch = "x86_64")]
mod attn_bf16;
#[cfg(target_arch = "x86_64")]
mod attn_f16;
mod contract;
mod decoder;
mod descriptors;
#[cfg(target_arch = "x86_64")]
mod f32_avx2;
#[cfg(target_arch = "x86_64")]
mod f32_avx512;
#[cfg(target_arch = "x86_64")]
mod f32_rows_avx512;
#[cfg(target_arch = "x86_64")]
mod gelu_avx512;
#[cfg(target_arch = "x86_64")]
mod gemm_i16;
#[cfg(target_arch = "x86_64")]
mod gemm_vnni;
#[cfg(target_arch = "x86_64")]
mod gemv_i16;
#[cfg(target_arch = "x86_64")]
mod gemv_i16_avx2;
pub mod kernels;
mod kv_cache;
mod matmul;
mod matmul_f32;
mod matmul_seqs;
pub(crate) mod multiversion;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "aarch64")]
mod neon_sdot;
#[cfg(target_arch = "aarch64")]
mod neon_units;
mod nn;
mod packed;
mod pool;
mod row_i16;
#[cfg(target_arch = "x86_64")]
mod row_i16_avx512;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod units_avx2;
mod weights;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::Arc;

pub use crate::backend::AttentionPrecision;
pub use crate::ops::OUTLIER_RATIO;
pub use act_quant::outlier_columns;
pub use descriptors::{Attention, CausalAttention, Linear, WeightData};
pub use kernels::Kernels;
pub use kv_cache::{CpuKvCache, KvElem};
pub use nn::{erf, exp_approx, gelu_scalar};
pub use packed::PackedQ8_0;
pub use pool::{default_threads, ThreadPool};
pub use weights::CpuMatrix;

use crate::ops::OpError;

/// A task of [`CpuBackend::for_chunk_pairs`]: `(index, chunk of a, chunk of b)`.
pub(crate) type ChunkPairTask<'a> = dyn Fn(usize, &mut [f32], &mut [f32]) + Sync + 'a;

/// The CPU backend: a kernel set and a thread pool. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct CpuBackend {
    kernels: Kernels,
    pool: Arc<ThreadPool>,
    min_task_macs: usize,
    attention: AttentionPrecision,
    transfers: crate::backend::TransferCount,
}

/// Mutable access to disjoint parts of one slice from several pool tasks.
pub(crate) struct SharedMut<T> {
    ptr: *mut T,
    len: usize,
}
// SAFETY: tasks only write disjoint indices (each caller documents its partition), and the pool
// joins every task before the borrow the pointer came from ends.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    pub(crate) fn new(s: &mut [T]) -> Self {
        SharedMut {
            ptr: s.as_mut_ptr(),
            len: s.len(),
        }
    }

    /// # Safety
    /// No two tasks may access the same index concurrently.
    pub(crate) unsafe fn set(&self, i: usize, v: T) {
        assert!(i < self.len, "index {i} out of bounds ({})", self.len);
        // SAFETY: in bounds (checked above); exclusivity is the caller's contract.
        unsafe { *self.ptr.add(i) = v };
    }

    /// # Safety
    /// No other task may access `start..start + len` while the slice is alive.
    // Handing out `&mut` from `&self` is the point of this type: the exclusivity that the borrow
    // checker cannot see is the caller's documented partition of the indices.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start + len <= self.len, "range out of bounds");
        // SAFETY: in bounds (checked above); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// Runs `f` with this thread's buffers in `key`, reused from call to call so a steady-state
/// forward pass does not allocate. A re-entrant call gets fresh buffers rather than a panic.
pub(crate) fn with_scratch<T: Default + 'static, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut t) => f(&mut t),
        Err(_) => f(&mut T::default()),
    })
}

/// An AVX-512 elementwise kernel (its caller has detected AVX-512F).
type Simd = unsafe fn(&mut [f32]);

/// Work of one element of a vectorised elementwise op (GELU, layer norm), in multiply-adds,
/// for deciding whether to split it across threads.
const ELEMENTWISE_MACS: usize = 16;
/// Work of one element of layer norm (three passes over its row), in multiply-adds: a
/// 128-token MiniLM activation splits across two threads.
const NORM_MACS: usize = 32;

impl CpuBackend {
    /// A backend with the best kernels for this CPU and `threads` threads (0: the default,
    /// see [`default_threads`]).
    pub fn new(threads: usize) -> CpuBackend {
        Self::with_kernels(kernels::best(), threads)
    }

    /// A backend with a chosen kernel set (for tests and benchmarks).
    pub fn with_kernels(kernels: Kernels, threads: usize) -> CpuBackend {
        let threads = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        CpuBackend {
            kernels,
            pool: Arc::new(ThreadPool::new(threads)),
            min_task_macs: matmul::MIN_TASK_MACS,
            attention: AttentionPrecision::Fast,
            transfers: Default::default(),
        }
    }

    /// This backend computing attention at precision `p`.
    pub fn with_attention(mut self, p: AttentionPrecision) -> CpuBackend {
        self.attention = p;
        self
    }

    /// Splits every op across all threads however small (tests use it to exercise the split
    /// paths on small shapes).
    pub fn split_everything(mut self) -> CpuBackend {
        self.min_task_macs = 1;
        self
    }

    /// Tasks for an op of `macs` multiply-adds: only work big enough to pay for waking the
    /// other threads (a few microseconds) is split.
    pub(crate) fn tasks_for(&self, macs: usize) -> usize {
        self.threads().min(macs.div_ceil(self.min_task_macs)).max(1)
    }

    /// The kernel set in use.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Repacks a Q8_0 matrix `[n, k]` for this backend's GEMM, when it has one (AVX-512 VNNI);
    /// `None` means the Q8_0 blocks are used as they are.
    pub fn pack(&self, w: &[u8], n: usize, k: usize) -> Option<PackedQ8_0> {
        #[cfg(target_arch = "x86_64")]
        if self.kernels.gemm_vnni && gemm_vnni::available() && k.is_multiple_of(crate::quant::QK) {
            return Some(PackedQ8_0::pack(w, n, k));
        }
        let _ = (w, n, k);
        None
    }

    /// Threads used per op.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Runs `f(task)` for `n` tasks on the pool. Ops called from inside a task run on that
    /// task's thread alone (the pool is busy), so a caller can make one parallel region of a
    /// chain of ops over disjoint rows.
    pub(crate) fn parallel(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        self.pool.run(n, f)
    }

    /// Splits `data` into chunks of `chunk` values (the last may be shorter) and runs
    /// `f(index, chunk)` for each on the pool, every chunk borrowed mutably by one task.
    pub(crate) fn for_chunks(
        &self,
        data: &mut [f32],
        chunk: usize,
        f: &(dyn Fn(usize, &mut [f32]) + Sync),
    ) {
        if data.is_empty() || chunk == 0 {
            return;
        }
        let (len, n) = (data.len(), data.len().div_ceil(chunk));
        let dp = SharedMut::new(data);
        self.pool.run(n, &|t| {
            let start = t * chunk;
            // SAFETY: task t alone takes values start..start + chunk (or to the end).
            f(t, unsafe { dp.slice(start, chunk.min(len - start)) })
        })
    }

    /// [`Self::for_chunks`] over two buffers at once: task `t` gets chunk `t` of `a` (chunks of
    /// `chunk_a`) and chunk `t` of `b` (chunks of `chunk_b`). The two must split into as many
    /// chunks.
    pub(crate) fn for_chunk_pairs(
        &self,
        a: &mut [f32],
        chunk_a: usize,
        b: &mut [f32],
        chunk_b: usize,
        f: &ChunkPairTask<'_>,
    ) -> Result<(), OpError> {
        if chunk_a == 0 || chunk_b == 0 {
            return Err(OpError::Shape("chunks of zero values".into()));
        }
        let n = a.len().div_ceil(chunk_a);
        OpError::check("chunks of the second buffer", b.len().div_ceil(chunk_b), n)?;
        let (la, lb) = (a.len(), b.len());
        let (ap, bp) = (SharedMut::new(a), SharedMut::new(b));
        self.pool.run(n, &|t| {
            let (sa, sb) = (t * chunk_a, t * chunk_b);
            // SAFETY: task t alone takes chunk t of each buffer.
            let (ca, cb) = unsafe {
                (
                    ap.slice(sa, chunk_a.min(la - sa)),
                    bp.slice(sb, chunk_b.min(lb - sb)),
                )
            };
            f(t, ca, cb)
        });
        Ok(())
    }

    /// Layer normalisation of each row of `x` (rows of `dim`), in place.
    pub fn layer_norm(
        &self,
        x: &mut [f32],
        dim: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) -> Result<(), OpError> {
        self.norm_rows(x, None, dim, gamma, beta, eps)
    }

    /// BERT's post-norm residual, fused: `x = LayerNorm(x + delta)` per row of `dim`, in place.
    pub fn add_layer_norm(
        &self,
        x: &mut [f32],
        delta: &[f32],
        dim: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) -> Result<(), OpError> {
        OpError::check("residual operand", delta.len(), x.len())?;
        self.norm_rows(x, Some(delta), dim, gamma, beta, eps)
    }

    fn norm_rows(
        &self,
        x: &mut [f32],
        delta: Option<&[f32]>,
        dim: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) -> Result<(), OpError> {
        OpError::check("layer norm gamma", gamma.len(), dim)?;
        OpError::check("layer norm beta", beta.len(), dim)?;
        if dim == 0 || !x.len().is_multiple_of(dim) {
            return Err(OpError::Shape(format!(
                "layer norm: {} values are not rows of {dim}",
                x.len()
            )));
        }
        let rows = x.len() / dim;
        let tasks = self.tasks_for(x.len() * NORM_MACS).min(rows.max(1));
        let xp = SharedMut::new(x);
        self.parallel(tasks, &|t| {
            let (r0, r1) = (t * rows / tasks, (t + 1) * rows / tasks);
            // SAFETY: task t alone owns rows r0..r1.
            let xs = unsafe { xp.slice(r0 * dim, (r1 - r0) * dim) };
            let ds = delta.map(|d| &d[r0 * dim..r1 * dim]);
            nn::layer_norm_rows(&self.kernels, xs, ds, dim, gamma, beta, eps);
        });
        Ok(())
    }

    /// GELU (the exact, erf-based form BERT uses), in place.
    pub fn gelu(&self, x: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        let simd: Option<Simd> = Some(gelu_avx512::gelu);
        #[cfg(not(target_arch = "x86_64"))]
        let simd = None;
        self.elementwise(x, simd, &|x| nn::gelu_slice(&self.kernels, x));
    }

    /// CLIP's quick GELU, `x * sigmoid(1.702 x)`, in place.
    pub fn quick_gelu(&self, x: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        let simd: Option<Simd> = Some(gelu_avx512::quick_gelu);
        #[cfg(not(target_arch = "x86_64"))]
        let simd = None;
        self.elementwise(x, simd, &|x| {
            x.iter_mut().for_each(|v| *v /= 1.0 + (-1.702 * *v).exp())
        });
    }

    /// An activation of every value, split across threads in whole 16-value vectors: the
    /// AVX-512 kernel `simd` where the table's `gelu` slot is set, else `portable`.
    fn elementwise(
        &self,
        x: &mut [f32],
        simd: Option<Simd>,
        portable: &(dyn Fn(&mut [f32]) + Sync),
    ) {
        let n = x.len();
        let tasks = self.tasks_for(n * ELEMENTWISE_MACS);
        let xp = SharedMut::new(x);
        self.parallel(tasks, &|t| {
            let (a, b) = ((t * n / tasks) & !15, ((t + 1) * n / tasks) & !15);
            let b = if t + 1 == tasks { n } else { b };
            // SAFETY: task t alone owns values a..b.
            let x = unsafe { xp.slice(a, b - a) };
            #[cfg(target_arch = "x86_64")]
            if let Some(simd) = simd.filter(|_| self.kernels.gelu && gelu_avx512::available()) {
                kernels::note_simd();
                // SAFETY: AVX-512F was just detected.
                return unsafe { simd(x) };
            }
            let _ = simd;
            portable(x);
        });
    }

    /// `a += b`, elementwise.
    pub fn add(&self, a: &mut [f32], b: &[f32]) -> Result<(), OpError> {
        OpError::check("add operand", b.len(), a.len())?;
        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        Ok(())
    }

    /// `a *= b`, elementwise.
    pub fn mul(&self, a: &mut [f32], b: &[f32]) -> Result<(), OpError> {
        OpError::check("mul operand", b.len(), a.len())?;
        a.iter_mut().zip(b).for_each(|(x, y)| *x *= y);
        Ok(())
    }

    /// Multi-head softmax attention over padded batches. `q`, `k`, `v` and `out` are
    /// `[batch * seq, heads * head_dim]`; `mask` is `[batch * seq]` with 1 for real tokens and 0
    /// for padding (padded keys get no weight).
    pub fn attention(&self, a: &Attention<'_>, out: &mut [f32]) -> Result<(), OpError> {
        nn::attention(self, a, out)
    }
}

//! The CPU backend: the op contract on f32 activations and Q8_0 (or f32) weights, with INT8 dot
//! products picked for this CPU at run time and work spread over a thread pool.

pub mod kernels;
#[cfg(target_arch = "aarch64")]
mod neon;
mod nn;
mod pool;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::Arc;

pub use kernels::Kernels;
pub use nn::{erf, gelu_scalar};
pub use pool::{default_threads, ThreadPool};

use crate::ops::{ActQuant, Linear, OpError, WeightData};
use crate::quant::{Q8_0_BYTES, QK};

/// The CPU backend: a kernel set and a thread pool. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct CpuBackend {
    kernels: Kernels,
    pool: Arc<ThreadPool>,
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

/// Quantizes `m` rows of `k` activations to int8 per 32 values; with two passes, the second
/// quantizes what the first rounded away. Returns `passes` stacked `[m * k]` value arrays and
/// `[m * k / 32]` scale arrays.
fn quantize_activations(x: &[f32], m: usize, k: usize, passes: usize) -> (Vec<i8>, Vec<f32>) {
    let kb = k / QK;
    let mut xq = vec![0i8; passes * m * k];
    let mut xd = vec![0f32; passes * m * kb];
    let (q1, q2) = xq.split_at_mut(m * k);
    let (d1, d2) = xd.split_at_mut(m * kb);
    for i in 0..m {
        let (xs, qs, ds) = (
            &x[i * k..(i + 1) * k],
            &mut q1[i * k..(i + 1) * k],
            &mut d1[i * kb..(i + 1) * kb],
        );
        scalar::quantize_row(xs, qs, ds);
        if passes == 2 {
            let r: Vec<f32> = xs
                .iter()
                .zip(qs.iter())
                .enumerate()
                .map(|(t, (v, q))| v - *q as f32 * ds[t / QK])
                .collect();
            scalar::quantize_row(
                &r,
                &mut q2[i * k..(i + 1) * k],
                &mut d2[i * kb..(i + 1) * kb],
            );
        }
    }
    (xq, xd)
}

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
        }
    }

    /// The kernel set in use.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Threads used per op.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Runs `f(task)` for `n` tasks on the pool.
    pub fn parallel(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        self.pool.run(n, f)
    }

    /// `out[m, n] = x[m, k] . W[n, k]^T + bias`, with activations quantized to int8 per 32 values
    /// on the fly for Q8_0 weights (i32 accumulation per block, as llama.cpp does).
    pub fn linear(
        &self,
        x: &[f32],
        m: usize,
        lin: &Linear<'_>,
        out: &mut [f32],
    ) -> Result<(), OpError> {
        let (n, k) = (lin.n, lin.k);
        OpError::check("linear input", x.len(), m * k)?;
        OpError::check("linear output", out.len(), m * n)?;
        if let Some(b) = lin.bias {
            OpError::check("linear bias", b.len(), n)?;
        }
        let tasks = self.threads().min(n).max(1);
        let chunk = n.div_ceil(tasks);
        let outp = SharedMut::new(out);
        match lin.w {
            WeightData::Q8_0(w) => {
                if k % QK != 0 {
                    return Err(OpError::Shape(format!(
                        "linear: k = {k} is not a multiple of {QK}"
                    )));
                }
                let kb = k / QK;
                OpError::check("Q8_0 weight bytes", w.len(), n * kb * Q8_0_BYTES)?;
                let passes = if lin.act == ActQuant::Int8x2 { 2 } else { 1 };
                let (xq, xd) = quantize_activations(x, m, k, passes);
                let dot = self.kernels.dot_q8_0;
                let (rs, rd) = (m * k, m * kb); // stride between passes
                self.parallel(tasks, &|t| {
                    for j in t * chunk..((t + 1) * chunk).min(n) {
                        let row = &w[j * kb * Q8_0_BYTES..(j + 1) * kb * Q8_0_BYTES];
                        let b = lin.bias.map_or(0.0, |b| b[j]);
                        for i in 0..m {
                            let mut v = b;
                            for p in 0..passes {
                                let q = &xq[p * rs + i * k..p * rs + (i + 1) * k];
                                v += dot(row, q, &xd[p * rd + i * kb..p * rd + (i + 1) * kb]);
                            }
                            // SAFETY: task t writes only columns j of its own chunk.
                            unsafe { outp.set(i * n + j, v) };
                        }
                    }
                });
            }
            WeightData::F32(w) => {
                OpError::check("f32 weight", w.len(), n * k)?;
                self.parallel(tasks, &|t| {
                    for j in t * chunk..((t + 1) * chunk).min(n) {
                        let row = &w[j * k..(j + 1) * k];
                        let b = lin.bias.map_or(0.0, |b| b[j]);
                        for i in 0..m {
                            let v = nn::dot_f32(row, &x[i * k..(i + 1) * k]) + b;
                            // SAFETY: task t writes only columns j of its own chunk.
                            unsafe { outp.set(i * n + j, v) };
                        }
                    }
                });
            }
        }
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
        OpError::check("layer norm gamma", gamma.len(), dim)?;
        OpError::check("layer norm beta", beta.len(), dim)?;
        if dim == 0 || !x.len().is_multiple_of(dim) {
            return Err(OpError::Shape(format!(
                "layer norm: {} values are not rows of {dim}",
                x.len()
            )));
        }
        for row in x.chunks_exact_mut(dim) {
            nn::layer_norm_row(row, gamma, beta, eps);
        }
        Ok(())
    }

    /// GELU (the exact, erf-based form BERT uses), in place.
    pub fn gelu(&self, x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = gelu_scalar(*v));
    }

    /// `a += b`, elementwise.
    pub fn add(&self, a: &mut [f32], b: &[f32]) -> Result<(), OpError> {
        OpError::check("add operand", b.len(), a.len())?;
        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        Ok(())
    }

    /// Multi-head softmax attention over padded batches. `q`, `k`, `v` and `out` are
    /// `[batch * seq, heads * head_dim]`; `mask` is `[batch * seq]` with 1 for real tokens and 0
    /// for padding (padded keys get no weight).
    pub fn attention(&self, a: &crate::ops::Attention<'_>, out: &mut [f32]) -> Result<(), OpError> {
        nn::attention(self, a, out)
    }
}

//! The linear op on the CPU: `out[m, n] = x[m, k] . W[n, k]^T + bias`.
//!
//! For Q8_0 weights the activations are quantized to int8 per 32 values on the fly and each
//! block's i32 dot product is scaled in f32, as llama.cpp does. With
//! [`ActQuant::Int8Outliers`](crate::ops::ActQuant::Int8Outliers), the few outlier columns
//! are first taken out and multiplied in f32.

use super::act_quant::{quantize, Outlier};
use super::multiversion::multiversion;
#[cfg(target_arch = "x86_64")]
use super::packed::{PackedQ8_0, PANEL};
use super::{CpuBackend, SharedMut};
use super::{Linear, WeightData};
use crate::ops::OpError;
use crate::quant::{Q8_0_BYTES, QK};

/// Multiply-adds a task must have before a matmul is split across threads. 1 M since the pool's
/// threads look for work before sleeping (a split costs about a microsecond): MiniLM at 16 tokens
/// went from 2.35 to 2.10 ms; 4 M was right when waking a thread cost tens of microseconds.
pub(crate) const MIN_TASK_MACS: usize = 1 << 20;
/// Weight `W[j, c]`, dequantized from its Q8_0 block.
#[inline]
fn weight_at(w: &[u8], kb: usize, j: usize, c: usize) -> f32 {
    let blk = &w[(j * kb + c / QK) * Q8_0_BYTES..][..Q8_0_BYTES];
    half::f16::from_le_bytes([blk[0], blk[1]]).to_f32() * (blk[2 + c % QK] as i8) as f32
}

fn check_q8_0(w: &[u8], n: usize, k: usize) -> Result<(), OpError> {
    if !k.is_multiple_of(QK) {
        return Err(OpError::Shape(format!(
            "linear: k = {k} is not a multiple of {QK}"
        )));
    }
    OpError::check("Q8_0 weight bytes", w.len(), n * (k / QK) * Q8_0_BYTES)
}

multiversion! {
    /// `out += a * w`, elementwise.
    fn axpy(out: &mut [f32], w: &[f32], a: f32) {
        out.iter_mut().zip(w).for_each(|(o, w)| *o += a * w);
    }
}

/// Adds the outliers' f32 products to output columns `j0..j1` of every row; `column(c)` gives
/// weight column `c` for those outputs. A borrowed column (the packed copy's) is used as it is;
/// a column made for the call is kept for the later outliers of the same column.
fn add_outliers<'c>(
    kernels: &super::Kernels,
    outp: &SharedMut<f32>,
    outliers: &[Outlier],
    mut column: impl FnMut(usize) -> std::borrow::Cow<'c, [f32]>,
    n: usize,
    j0: usize,
    j1: usize,
) {
    let mut made: Vec<(usize, Vec<f32>)> = Vec::new();
    for &(i, c, xc) in outliers {
        // SAFETY: the calling task owns columns j0..j1 of every row.
        let out = unsafe { outp.slice(i * n + j0, j1 - j0) };
        if let Some((_, col)) = made.iter().find(|(cc, _)| *cc == c) {
            axpy(kernels, out, col, xc);
            continue;
        }
        match column(c) {
            std::borrow::Cow::Borrowed(col) => axpy(kernels, out, col, xc),
            std::borrow::Cow::Owned(col) => {
                axpy(kernels, out, &col, xc);
                made.push((c, col));
            }
        }
    }
}

/// Activation rows per packed micro-tile: 4 rows x 32 columns keep 16 zmm accumulators, and each
/// weight load feeds 8 `vpdpbusd`. (6 rows measured no faster on Zen 4.)
#[cfg(target_arch = "x86_64")]
const TILE_ROWS: usize = 4;

/// Runs the packed GEMM for `R` (1 to [`TILE_ROWS`]) rows starting at `xu` / `xd`, one panel,
/// writing `out[r] = x[r] . W^T + bias` for the panel's columns (`out[r].len()` of them).
#[cfg(target_arch = "x86_64")]
fn packed_rows<const R: usize>(
    pk: &PackedQ8_0,
    p: usize,
    xu: &[u8],
    xd: &[f32],
    out: [&mut [f32]; R],
    bias: Option<&[f32]>,
) {
    let (k, kb) = (pk.k, pk.k / QK);
    let u: [&[u8]; R] = std::array::from_fn(|i| &xu[i * k..(i + 1) * k]);
    let d: [&[f32]; R] = std::array::from_fn(|i| &xd[i * kb..(i + 1) * kb]);
    // SAFETY: packed weights exist only where `gemm_vnni::available()` held (see
    // `CpuBackend::pack`), and reach here only from a table whose `gemm_vnni` slot is set,
    // which detection sets only on such CPUs; each row slice holds k bytes and k / 32 scales.
    unsafe { super::gemm_vnni::panel::<R>(pk, p, u, d, out, bias) };
}

impl CpuBackend {
    /// `out[m, n] = x[m, k] . W[n, k]^T + bias`.
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
        // Split only work big enough to pay for waking the other threads (a few microseconds).
        let tasks = self.tasks_for(m * n * k).min(n);
        let chunk = n.div_ceil(tasks);
        // Weights packed for a GEMM this table lacks (packed by another backend) run from their
        // Q8_0 blocks.
        let weights = match lin.w {
            WeightData::Packed(_, q8) if !self.kernels.gemm_vnni => WeightData::Q8_0(q8),
            w => w,
        };
        if let Some(blocks) = super::matmul_f32::stored_blocks(lin) {
            return self.linear_dequant(x, m, blocks, lin, out, None);
        }
        let outp = SharedMut::new(out);
        match weights {
            WeightData::Blocks(..) => unreachable!("handled above"),
            WeightData::Q8_0(w) => {
                check_q8_0(w, n, k)?;
                let kb = k / QK;
                quantize(self, x, m, k, lin.act, false, |qz| {
                    // SAFETY: i8 and u8 have the same size and alignment; every bit pattern is valid.
                    let xq = unsafe {
                        std::slice::from_raw_parts(qz.q.as_ptr() as *const i8, qz.q.len())
                    };
                    let (xd, outliers) = (&qz.d[..], &qz.outliers[..]);
                    let (dot, dot4) = (self.kernels.dot_q8_0, self.kernels.dot4_q8_0);
                    let dot4x2 = self.kernels.dot4x2_q8_0;
                    let row_bytes = kb * Q8_0_BYTES;
                    // Tasks take whole groups of four output columns where they can.
                    let chunk = n.div_ceil(tasks).next_multiple_of(4);
                    self.parallel(tasks, &|t| {
                        let (j0, j1) = ((t * chunk).min(n), ((t + 1) * chunk).min(n));
                        let wr = |j: usize| &w[j * row_bytes..(j + 1) * row_bytes];
                        let bias = |j: usize| lin.bias.map_or(0.0, |b| b[j]);
                        let set = |i: usize, j: usize, v: f32| {
                            // SAFETY: task t writes only columns j0..j1, its own.
                            unsafe { outp.set(i * n + j, v + bias(j)) };
                        };
                        let mut j = j0;
                        while j + 4 <= j1 {
                            let rows = [wr(j), wr(j + 1), wr(j + 2), wr(j + 3)];
                            let xrow = |i: usize| &xq[i * k..(i + 1) * k];
                            let drow = |i: usize| &xd[i * kb..(i + 1) * kb];
                            // Two activation rows at a time where a matrix instruction takes
                            // them together; the rest one by one.
                            let mut i0 = 0;
                            if let Some(dot4x2) = dot4x2 {
                                while i0 + 2 <= m {
                                    let v = dot4x2(
                                        rows,
                                        [xrow(i0), xrow(i0 + 1)],
                                        [drow(i0), drow(i0 + 1)],
                                    );
                                    for (a, v) in v.into_iter().enumerate() {
                                        for (r, v) in v.into_iter().enumerate() {
                                            set(i0 + a, j + r, v);
                                        }
                                    }
                                    i0 += 2;
                                }
                            }
                            for i in i0..m {
                                let v = dot4(rows, xrow(i), drow(i));
                                for (r, v) in v.into_iter().enumerate() {
                                    set(i, j + r, v);
                                }
                            }
                            j += 4;
                        }
                        for j in j..j1 {
                            for i in 0..m {
                                set(
                                    i,
                                    j,
                                    dot(wr(j), &xq[i * k..(i + 1) * k], &xd[i * kb..(i + 1) * kb]),
                                );
                            }
                        }
                        add_outliers(
                            &self.kernels,
                            &outp,
                            outliers,
                            |c| {
                                (j0..j1)
                                    .map(|j| weight_at(w, kb, j, c))
                                    .collect::<Vec<_>>()
                                    .into()
                            },
                            n,
                            j0,
                            j1,
                        );
                    });
                });
            }
            WeightData::Packed(pk, w) => {
                check_q8_0(w, n, k)?;
                if pk.n != n || pk.k != k {
                    return Err(OpError::Shape(format!(
                        "packed weights are {}x{}, the op wants {n}x{k}",
                        pk.n, pk.k
                    )));
                }
                #[cfg(target_arch = "x86_64")]
                super::kernels::note_simd();
                #[cfg(target_arch = "x86_64")]
                quantize(self, x, m, k, lin.act, true, |qz| {
                    let kb = k / QK;
                    let (xu, xd) = (&qz.q[..], &qz.d[..]);
                    let tasks = tasks.min(pk.panels);
                    let per = pk.panels.div_ceil(tasks);
                    self.parallel(tasks, &|t| {
                        let (p0, p1) = ((t * per).min(pk.panels), ((t + 1) * per).min(pk.panels));
                        for p in p0..p1 {
                            let (c0, cols) = (p * PANEL, (n - p * PANEL).min(PANEL));
                            let bias = lin.bias.map(|b| &b[c0..c0 + cols]);
                            // SAFETY: task t writes only the columns of its panels p0..p1.
                            let row = |i: usize| unsafe { outp.slice(i * n + c0, cols) };
                            let mut i = 0;
                            while i < m {
                                let (u, d) = (&xu[i * k..], &xd[i * kb..]);
                                match m - i {
                                    1 => packed_rows::<1>(pk, p, u, d, [row(i)], bias),
                                    2 => packed_rows::<2>(pk, p, u, d, [row(i), row(i + 1)], bias),
                                    3 => packed_rows::<3>(
                                        pk,
                                        p,
                                        u,
                                        d,
                                        [row(i), row(i + 1), row(i + 2)],
                                        bias,
                                    ),
                                    _ => packed_rows::<TILE_ROWS>(
                                        pk,
                                        p,
                                        u,
                                        d,
                                        [row(i), row(i + 1), row(i + 2), row(i + 3)],
                                        bias,
                                    ),
                                }
                                i += (m - i).min(TILE_ROWS);
                            }
                        }
                        let (j0, j1) = ((p0 * PANEL).min(n), (p1 * PANEL).min(n));
                        add_outliers(
                            &self.kernels,
                            &outp,
                            &qz.outliers,
                            |c| pk.column(c)[j0..j1].into(),
                            n,
                            j0,
                            j1,
                        );
                    });
                });
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("packed weights are only made on x86-64");
            }
            WeightData::F32(w) => {
                OpError::check("f32 weight", w.len(), n * k)?;
                self.parallel(tasks, &|t| {
                    for j in t * chunk..((t + 1) * chunk).min(n) {
                        let wr = &w[j * k..(j + 1) * k];
                        let b = lin.bias.map_or(0.0, |b| b[j]);
                        for i in 0..m {
                            let v = super::nn::dot_f32(wr, &x[i * k..(i + 1) * k]) + b;
                            // SAFETY: task t writes only columns j of its own chunk.
                            unsafe { outp.set(i * n + j, v) };
                        }
                    }
                });
            }
        }
        Ok(())
    }
}

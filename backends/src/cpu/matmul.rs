//! The linear op on the CPU: `out[m, n] = x[m, k] . W[n, k]^T + bias`.
//!
//! For Q8_0 weights the activations are quantized to int8 per 32 values on the fly and each
//! block's i32 dot product is scaled in f32, as llama.cpp does. With
//! [`ActQuant::Int8Outliers`], the few outlier columns are first taken out and multiplied in f32.

use super::{scalar, CpuBackend, SharedMut};
use crate::ops::{ActQuant, Linear, OpError, WeightData};
use crate::quant::{Q8_0_BYTES, QK};

/// A value is an outlier when its magnitude exceeds this many times its row's median magnitude.
/// Chosen on MiniLM, whose layer-norm outputs have a few such channels: it lifts the worst cosine
/// to PyTorch from 0.9981 to 0.9993.
pub const OUTLIER_RATIO: f32 = 5.0;
/// At most this fraction of the columns (1/16) is taken out, to bound the f32 work.
const MAX_OUTLIER_SHARE: usize = 16;

/// The outlier columns of one activation row (`|x_c|` above [`OUTLIER_RATIO`] times the row's
/// median `|x|`), largest first, at most `k / 16`. Chosen per row, so a text's result never
/// depends on the other texts of its batch.
pub fn outlier_columns(row: &[f32]) -> Vec<usize> {
    let k = row.len();
    if k < MAX_OUTLIER_SHARE {
        return Vec::new();
    }
    let mut mags: Vec<f32> = row.iter().map(|v| v.abs()).collect();
    let (_, median, _) = mags.select_nth_unstable_by(k / 2, f32::total_cmp);
    let limit = *median * OUTLIER_RATIO;
    let mut cols: Vec<usize> = (0..k).filter(|&c| row[c].abs() > limit).collect();
    cols.sort_by(|&a, &b| row[b].abs().total_cmp(&row[a].abs()));
    cols.truncate(k / MAX_OUTLIER_SHARE);
    cols
}

/// Weight `W[j, c]`, dequantized from its Q8_0 block.
#[inline]
fn weight_at(w: &[u8], kb: usize, j: usize, c: usize) -> f32 {
    let blk = &w[(j * kb + c / QK) * Q8_0_BYTES..][..Q8_0_BYTES];
    half::f16::from_le_bytes([blk[0], blk[1]]).to_f32() * (blk[2 + c % QK] as i8) as f32
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
                // Per row: the outlier (column, value) pairs, run in f32; the int8 path sees
                // zeros in their place.
                let mut outliers: Vec<Vec<(usize, f32)>> = vec![Vec::new(); m];
                let mut xq = vec![0i8; m * k];
                let mut xd = vec![0f32; m * kb];
                let mut row = vec![0f32; k];
                for i in 0..m {
                    row.copy_from_slice(&x[i * k..(i + 1) * k]);
                    if lin.act == ActQuant::Int8Outliers {
                        for c in outlier_columns(&row) {
                            outliers[i].push((c, row[c]));
                            row[c] = 0.0;
                        }
                    }
                    scalar::quantize_row(
                        &row,
                        &mut xq[i * k..(i + 1) * k],
                        &mut xd[i * kb..(i + 1) * kb],
                    );
                }
                let (dot, dot4) = (self.kernels.dot_q8_0, self.kernels.dot4_q8_0);
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
                        for i in 0..m {
                            let v = dot4(rows, &xq[i * k..(i + 1) * k], &xd[i * kb..(i + 1) * kb]);
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
                    // Outliers: each distinct column's weights (for this task's outputs) are
                    // dequantized once, then added to every row that has that outlier.
                    let mut columns: Vec<(usize, Vec<f32>)> = Vec::new();
                    for (i, row) in outliers.iter().enumerate() {
                        for &(c, xc) in row {
                            let p = match columns.iter().position(|(cc, _)| *cc == c) {
                                Some(p) => p,
                                None => {
                                    columns.push((
                                        c,
                                        (j0..j1).map(|j| weight_at(w, kb, j, c)).collect(),
                                    ));
                                    columns.len() - 1
                                }
                            };
                            // SAFETY: task t writes only row i's columns j0..j1, its own.
                            let out = unsafe { outp.slice(i * n + j0, j1 - j0) };
                            out.iter_mut()
                                .zip(&columns[p].1)
                                .for_each(|(o, w)| *o += xc * w);
                        }
                    }
                });
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

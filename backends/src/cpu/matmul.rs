//! The linear op on the CPU: `out[m, n] = x[m, k] . W[n, k]^T + bias`.
//!
//! For Q8_0 weights the activations are quantized to int8 per 32 values on the fly and each
//! block's i32 dot product is scaled in f32, as llama.cpp does. With
//! [`ActQuant::Int8Outliers`], the few outlier columns are first taken out and multiplied in f32.

use super::multiversion::multiversion;
use super::packed::{PackedQ8_0, PANEL};
use super::{scalar, CpuBackend, SharedMut};
use crate::ops::{ActQuant, Linear, OpError, WeightData};
use crate::quant::{Q8_0_BYTES, QK};

/// A value is an outlier when its magnitude exceeds this many times its row's mean magnitude.
/// Chosen on MiniLM, whose layer-norm outputs have a few such channels: it lifts the worst cosine
/// to PyTorch from 0.9981 to 0.9993. (For normal data the threshold sits at about 3.4 standard
/// deviations; the mean is one vectorisable pass, where a median needs a selection.)
pub const OUTLIER_RATIO: f32 = 4.2;
/// Multiply-adds a task must have before a matmul is split across threads. 1 M since the pool's
/// threads look for work before sleeping (a split costs about a microsecond): MiniLM at 16 tokens
/// went from 2.35 to 2.10 ms; 4 M was right when waking a thread cost tens of microseconds.
pub(crate) const MIN_TASK_MACS: usize = 1 << 20;
/// At most this fraction of the columns (1/16) is taken out, to bound the f32 work.
const MAX_OUTLIER_SHARE: usize = 16;

/// The outlier columns of one activation row (`|x_c|` above [`OUTLIER_RATIO`] times the row's
/// mean `|x|`), largest first, at most `k / 16`. Chosen per row, so a text's result never
/// depends on the other texts of its batch.
#[inline]
pub fn outlier_columns(row: &[f32]) -> Vec<usize> {
    let k = row.len();
    if k < MAX_OUTLIER_SHARE {
        return Vec::new();
    }
    let limit = row.iter().map(|v| v.abs()).sum::<f32>() / k as f32 * OUTLIER_RATIO;
    let mut cols: Vec<usize> = (0..k).filter(|&c| row[c].abs() > limit).collect();
    if cols.len() > k / MAX_OUTLIER_SHARE {
        cols.sort_by(|&a, &b| row[b].abs().total_cmp(&row[a].abs()));
        cols.truncate(k / MAX_OUTLIER_SHARE);
    }
    cols
}

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

type Prepared = (Vec<Vec<(usize, f32)>>, Vec<i8>, Vec<f32>);

multiversion! {
    /// Per row: the outlier `(column, value)` pairs (for [`ActQuant::Int8Outliers`]), then the
    /// activations quantized to int8 per 32 values with the outliers zeroed, and their scales.
    fn prepare(x: &[f32], m: usize, k: usize, act: ActQuant) -> Prepared {
        let kb = k / QK;
        let mut outliers: Vec<Vec<(usize, f32)>> = vec![Vec::new(); m];
        let mut xq = vec![0i8; m * k];
        let mut xd = vec![0f32; m * kb];
        let mut row = vec![0f32; k];
        for i in 0..m {
            row.copy_from_slice(&x[i * k..(i + 1) * k]);
            if act == ActQuant::Int8Outliers {
                for c in outlier_columns(&row) {
                    outliers[i].push((c, row[c]));
                    row[c] = 0.0;
                }
            }
            scalar::quantize_row(&row, &mut xq[i * k..(i + 1) * k], &mut xd[i * kb..(i + 1) * kb]);
        }
        (outliers, xq, xd)
    }
}

/// Adds the outliers' f32 products to output columns `j0..j1` of every row; `column(c)` gives
/// weight column `c` for those outputs.
fn add_outliers<'c>(
    outp: &SharedMut<f32>,
    outliers: &[Vec<(usize, f32)>],
    mut column: impl FnMut(usize) -> std::borrow::Cow<'c, [f32]>,
    n: usize,
    j0: usize,
    j1: usize,
) {
    let mut seen: Vec<(usize, std::borrow::Cow<'c, [f32]>)> = Vec::new();
    for (i, row) in outliers.iter().enumerate() {
        for &(c, xc) in row {
            let p = match seen.iter().position(|(cc, _)| *cc == c) {
                Some(p) => p,
                None => {
                    seen.push((c, column(c)));
                    seen.len() - 1
                }
            };
            // SAFETY: the calling task owns columns j0..j1 of every row.
            let out = unsafe { outp.slice(i * n + j0, j1 - j0) };
            out.iter_mut()
                .zip(seen[p].1.iter())
                .for_each(|(o, w)| *o += xc * w);
        }
    }
}

/// Activation rows per packed micro-tile: 4 rows x 32 columns keep 16 zmm accumulators, and each
/// weight load feeds 8 `vpdpbusd`. (6 rows measured no faster on Zen 4.)
const TILE_ROWS: usize = 4;

/// Runs the packed GEMM for `r` (1 to [`TILE_ROWS`]) rows starting at `xu` / `xd`, one panel.
#[allow(clippy::too_many_arguments)]
fn packed_rows(
    pk: &PackedQ8_0,
    p: usize,
    xu: &[u8],
    xd: &[f32],
    k: usize,
    kb: usize,
    r: usize,
    tile: &mut [[f32; PANEL]; TILE_ROWS],
) {
    #[cfg(target_arch = "x86_64")]
    {
        fn go<const R: usize>(
            pk: &PackedQ8_0,
            p: usize,
            xu: &[u8],
            xd: &[f32],
            k: usize,
            kb: usize,
            tile: &mut [[f32; PANEL]; TILE_ROWS],
        ) {
            let u: [&[u8]; R] = std::array::from_fn(|i| &xu[i * k..(i + 1) * k]);
            let d: [&[f32]; R] = std::array::from_fn(|i| &xd[i * kb..(i + 1) * kb]);
            let mut t = [[0f32; PANEL]; R];
            // SAFETY: packed weights exist only where `gemm_vnni::available()` held (see
            // `CpuBackend::pack`); each row slice holds k bytes and k / 32 scales.
            unsafe { super::gemm_vnni::panel::<R>(pk, p, u, d, &mut t) };
            tile[..R].copy_from_slice(&t);
        }
        match r {
            4 => go::<4>(pk, p, xu, xd, k, kb, tile),
            3 => go::<3>(pk, p, xu, xd, k, kb, tile),
            2 => go::<2>(pk, p, xu, xd, k, kb, tile),
            _ => go::<1>(pk, p, xu, xd, k, kb, tile),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (pk, p, xu, xd, k, kb, r, tile);
        unreachable!("packed weights are only made on x86-64");
    }
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
        match lin.w {
            WeightData::Blocks(dtype, w) => return self.linear_dequant(x, m, dtype, w, lin, out),
            WeightData::Q8_0(w) | WeightData::Packed(_, w) if lin.act == ActQuant::F32 => {
                return self.linear_dequant(x, m, crate::DType::Q8_0, w, lin, out);
            }
            _ => {}
        }
        let outp = SharedMut::new(out);
        match lin.w {
            WeightData::Blocks(..) => unreachable!("handled above"),
            WeightData::Q8_0(w) => {
                check_q8_0(w, n, k)?;
                let kb = k / QK;
                let (outliers, xq, xd) = prepare(x, m, k, lin.act);
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
                    add_outliers(
                        &outp,
                        &outliers,
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
            }
            WeightData::Packed(pk, w) => {
                check_q8_0(w, n, k)?;
                if pk.n != n || pk.k != k {
                    return Err(OpError::Shape(format!(
                        "packed weights are {}x{}, the op wants {n}x{k}",
                        pk.n, pk.k
                    )));
                }
                let kb = k / QK;
                let (outliers, xq, xd) = prepare(x, m, k, lin.act);
                let xu: Vec<u8> = xq.iter().map(|&q| (q as i16 + 128) as u8).collect();
                let tasks = tasks.min(pk.panels);
                let per = pk.panels.div_ceil(tasks);
                self.parallel(tasks, &|t| {
                    let (p0, p1) = ((t * per).min(pk.panels), ((t + 1) * per).min(pk.panels));
                    for p in p0..p1 {
                        let mut i = 0;
                        while i < m {
                            let r = (m - i).min(TILE_ROWS);
                            let mut tile = [[0f32; PANEL]; TILE_ROWS];
                            packed_rows(pk, p, &xu[i * k..], &xd[i * kb..], k, kb, r, &mut tile);
                            for (dr, row) in tile.iter().enumerate().take(r) {
                                let cols = (n - p * PANEL).min(PANEL);
                                // SAFETY: task t writes only the columns of its panels p0..p1.
                                let o = unsafe { outp.slice((i + dr) * n + p * PANEL, cols) };
                                for (c, (o, v)) in o.iter_mut().zip(row).enumerate() {
                                    *o = v + lin.bias.map_or(0.0, |b| b[p * PANEL + c]);
                                }
                            }
                            i += r;
                        }
                    }
                    let (j0, j1) = ((p0 * PANEL).min(n), (p1 * PANEL).min(n));
                    add_outliers(&outp, &outliers, |c| pk.column(c)[j0..j1].into(), n, j0, j1);
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

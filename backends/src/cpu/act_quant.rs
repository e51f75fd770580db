//! Activation quantization for the INT8 linear op: int8 per 32 values with an f32 scale each,
//! as llama.cpp quantizes activations for Q8_0 weights, optionally with the few outlier columns
//! of each row taken out first (they are multiplied in f32).
//!
//! The packed VNNI GEMM wants the int8 values offset by +128 as unsigned bytes; [`quantize`]
//! writes them that way directly (AVX-512 where present) into buffers the calling thread keeps,
//! so the steady-state forward pass allocates nothing here.

use std::cell::RefCell;

use super::{scalar, with_scratch, CpuBackend, SharedMut};
use crate::ops::{ActQuant, OUTLIER_RATIO};
use crate::quant::QK;

/// At most this fraction of the columns (1/16) is taken out, to bound the f32 work.
const MAX_OUTLIER_SHARE: usize = 16;

/// One outlier taken out of the int8 product: `(row, column, value)`.
pub(crate) type Outlier = (usize, usize, f32);

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
    let cols: Vec<usize> = (0..k).filter(|&c| row[c].abs() > limit).collect();
    largest(row, cols)
}

/// `cols` ordered largest `|row[c]|` first when there are more than `k / 16`, cut to that many.
fn largest(row: &[f32], mut cols: Vec<usize>) -> Vec<usize> {
    let k = row.len();
    if cols.len() > k / MAX_OUTLIER_SHARE {
        cols.sort_by(|&a, &b| row[b].abs().total_cmp(&row[a].abs()));
        cols.truncate(k / MAX_OUTLIER_SHARE);
    }
    cols
}

/// Quantized activation rows, reused from call to call on one thread.
#[derive(Default)]
pub(crate) struct Quantized {
    /// `m * k` values: int8, or int8 + 128 as u8 (see [`quantize`]'s `offset`).
    pub q: Vec<u8>,
    /// `m * k / 32` scales.
    pub d: Vec<f32>,
    /// Outliers taken out (zero in `q`), rows ascending.
    pub outliers: Vec<Outlier>,
}

/// A worker's buffers: one row with its outliers zeroed, and the outliers it found.
#[derive(Default)]
struct Local {
    row: Vec<f32>,
    cols: Vec<usize>,
    found: Vec<Outlier>,
}

thread_local! {
    static SCRATCH: RefCell<Quantized> = RefCell::new(Quantized::default());
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// Work of quantizing one value, in multiply-adds (for splitting across threads).
const QUANT_MACS: usize = 32;

/// Quantizes `x` (`m` rows of `k`, `k` a multiple of 32) with this thread's reused buffers and
/// hands them to `f`; rows are split across `cpu`'s threads when there are enough. With
/// `offset`, values are stored as `q + 128` (u8), else as i8 bits.
pub(crate) fn quantize<R>(
    cpu: &CpuBackend,
    x: &[f32],
    m: usize,
    k: usize,
    act: ActQuant,
    offset: bool,
    f: impl FnOnce(&Quantized) -> R,
) -> R {
    with_scratch(&SCRATCH, |qz| {
        fill(cpu, qz, x, m, k, act, offset);
        f(qz)
    })
}

fn fill(
    cpu: &CpuBackend,
    qz: &mut Quantized,
    x: &[f32],
    m: usize,
    k: usize,
    act: ActQuant,
    offset: bool,
) {
    let kb = k / QK;
    qz.q.resize(m * k, 0);
    qz.d.resize(m * kb, 0.0);
    qz.outliers.clear();
    let tasks = cpu.tasks_for(m * k * QUANT_MACS).min(m.max(1));
    let (qp, dp) = (SharedMut::new(&mut qz.q), SharedMut::new(&mut qz.d));
    let all = std::sync::Mutex::new(&mut qz.outliers);
    cpu.parallel(tasks, &|t| {
        with_scratch(&LOCAL, |Local { row, cols, found }| {
            found.clear();
            for i in (t * m / tasks)..((t + 1) * m / tasks) {
                let src = &x[i * k..(i + 1) * k];
                cols.clear();
                if act == ActQuant::Int8Outliers {
                    outliers_of(&cpu.kernels, src, cols);
                }
                let row: &[f32] = if cols.is_empty() {
                    src
                } else {
                    row.clear();
                    row.extend_from_slice(src);
                    for &c in cols.iter() {
                        found.push((i, c, src[c]));
                        row[c] = 0.0;
                    }
                    row
                };
                // SAFETY: task t alone writes rows t*m/tasks..(t+1)*m/tasks of `q` and `d`.
                let (q, d) = unsafe { (qp.slice(i * k, k), dp.slice(i * kb, kb)) };
                quantize_row(&cpu.kernels, row, q, d, offset);
            }
            if !found.is_empty() {
                // A poisoned lock only means another task panicked; the vector is still whole.
                let mut all = all.lock().unwrap_or_else(|e| e.into_inner());
                all.extend_from_slice(found);
            }
        })
    });
    // Tasks append in any order; consumers want rows ascending.
    qz.outliers.sort_unstable_by_key(|o| (o.0, o.1));
}

/// [`outlier_columns`] into `cols`, vectorised where AVX-512 is present (the mean is summed in
/// another order, so a value within rounding of the limit may fall the other way).
fn outliers_of(kernels: &super::Kernels, row: &[f32], cols: &mut Vec<usize>) {
    #[cfg(target_arch = "x86_64")]
    if kernels.act_quant
        && avx512_available()
        && row.len().is_multiple_of(16)
        && row.len() >= MAX_OUTLIER_SHARE
    {
        super::kernels::note_simd();
        // SAFETY: AVX-512F was detected; the row is whole 16-float vectors.
        unsafe { x86::outliers(row, cols) };
        if cols.len() > row.len() / MAX_OUTLIER_SHARE {
            let keep = largest(row, std::mem::take(cols));
            cols.extend_from_slice(&keep);
        }
        return;
    }
    let _ = kernels;
    cols.extend(outlier_columns(row));
}

fn quantize_row(kernels: &super::Kernels, row: &[f32], q: &mut [u8], d: &mut [f32], offset: bool) {
    #[cfg(target_arch = "x86_64")]
    if kernels.act_quant && avx512_available() {
        super::kernels::note_simd();
        // SAFETY: AVX-512F and BW were detected; `q` holds `row.len()` bytes, `d` one scale
        // per 32 values (the caller sliced them so).
        return unsafe { x86::quantize_row(row, q, d, if offset { 128 } else { 0 }) };
    }
    let _ = kernels;
    // SAFETY: i8 and u8 have the same size and alignment, and every bit pattern is valid.
    let qi = unsafe { std::slice::from_raw_parts_mut(q.as_mut_ptr() as *mut i8, q.len()) };
    scalar::quantize_row(row, qi, d);
    if offset {
        q.iter_mut().for_each(|v| *v = v.wrapping_add(128));
    }
}

/// Whether this CPU can run the AVX-512 quantization kernels (the table's `act_quant` slot).
#[cfg(target_arch = "x86_64")]
pub(super) fn avx512_available() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{OUTLIER_RATIO, QK};

    /// Pushes the columns of `row` above [`OUTLIER_RATIO`] times its mean magnitude onto `cols`,
    /// ascending.
    ///
    /// # Safety
    /// AVX-512F is present; `row.len()` is a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn outliers(row: &[f32], cols: &mut Vec<usize>) {
        assert!(row.len().is_multiple_of(16));
        let p = row.as_ptr();
        let mut s = _mm512_setzero_ps();
        for c in (0..row.len()).step_by(16) {
            // SAFETY: c + 16 <= row.len().
            s = _mm512_add_ps(s, _mm512_abs_ps(unsafe { _mm512_loadu_ps(p.add(c)) }));
        }
        let limit = _mm512_reduce_add_ps(s) / row.len() as f32 * OUTLIER_RATIO;
        let lim = _mm512_set1_ps(limit);
        for c in (0..row.len()).step_by(16) {
            // SAFETY: as above.
            let v = _mm512_abs_ps(unsafe { _mm512_loadu_ps(p.add(c)) });
            let mut mask = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, lim);
            while mask != 0 {
                cols.push(c + mask.trailing_zeros() as usize);
                mask &= mask - 1;
            }
        }
    }

    /// `scalar::quantize_row` (same scale, same rounding: half away from zero), values stored
    /// as `q + offset` bytes.
    ///
    /// # Safety
    /// AVX-512F and AVX-512BW are present; `row.len()` is a multiple of 32, `q` holds as many
    /// bytes and `d` one float per 32 values.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn quantize_row(row: &[f32], q: &mut [u8], d: &mut [f32], offset: i32) {
        let kb = row.len() / QK;
        assert!(row.len() == kb * QK && q.len() == row.len() && d.len() == kb);
        let sign = _mm512_set1_epi32(i32::MIN);
        let half = _mm512_castps_si512(_mm512_set1_ps(0.5));
        let off = _mm512_set1_epi32(offset);
        let (xp, qp) = (row.as_ptr(), q.as_mut_ptr());
        for (b, db) in d.iter_mut().enumerate() {
            // SAFETY: b < kb, so the block's 32 floats and 32 bytes lie in `row` and `q`.
            let (a0, a1) = unsafe {
                (
                    _mm512_loadu_ps(xp.add(b * QK)),
                    _mm512_loadu_ps(xp.add(b * QK + 16)),
                )
            };
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a0), _mm512_abs_ps(a1)));
            let scale = amax / 127.0;
            let inv = _mm512_set1_ps(if scale != 0.0 { 1.0 / scale } else { 0.0 });
            for (h, a) in [a0, a1].into_iter().enumerate() {
                let r = _mm512_mul_ps(a, inv);
                // r + copysign(0.5, r), then truncate: round half away from zero.
                let rs = _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(r), sign), half);
                let t = _mm512_cvttps_epi32(_mm512_add_ps(r, _mm512_castsi512_ps(rs)));
                let bytes = _mm512_cvtepi32_epi8(_mm512_add_epi32(t, off));
                // SAFETY: as above; 16 bytes at b * 32 + h * 16.
                unsafe { _mm_storeu_si128(qp.add(b * QK + h * 16) as *mut __m128i, bytes) };
            }
            *db = scale;
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn the_avx512_quantizer_is_the_scalar_one_bit_for_bit() {
        if !super::super::x86::runs_here(avx512_available(), "the AVX-512 int8 quantizer") {
            return;
        }
        // Rows with ties at .5 after scaling, zero blocks, negative and tiny values.
        let mut rows: Vec<Vec<f32>> = vec![
            (0..256).map(|i| (i as f32 - 128.0) * 0.5).collect(),
            vec![0.0; 64],
            (0..128)
                .map(|i| ((i * 7919) % 255) as f32 - 127.0)
                .collect(),
            (0..96).map(|i| (i as f32 * 0.37).sin() * 1e-30).collect(),
        ];
        let mut s = 3u64;
        rows.push(
            (0..1024)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 40.0
                })
                .collect(),
        );
        for row in &rows {
            let n = row.len();
            let (mut qs, mut ds) = (vec![0i8; n], vec![0f32; n / QK]);
            scalar::quantize_row(row, &mut qs, &mut ds);
            for offset in [0i32, 128] {
                let (mut qv, mut dv) = (vec![0u8; n], vec![0f32; n / QK]);
                // SAFETY: AVX-512F/BW were detected; the buffers are sized as required.
                unsafe { x86::quantize_row(row, &mut qv, &mut dv, offset) };
                assert_eq!(dv, ds, "scales");
                let want: Vec<u8> = qs.iter().map(|&q| (q as i32 + offset) as u8).collect();
                assert_eq!(qv, want, "values, offset {offset}");
            }
        }
    }
}

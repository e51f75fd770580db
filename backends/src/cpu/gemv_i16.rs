//! The token (decoding) kernel of the f32-activation matmul on AVX-512 VNNI for the types
//! whose prompts take the AVX-512 f32 kernels (Q8_0, Q4_0, Q4_1) and those whose units decode
//! in 512-bit registers (Q5_0, Q5_1): the activation row is
//! quantized to int16 per unit of 32 (relative error below 2^-15, against 2^-8 for int8), each
//! weight unit decoded to int16 in registers ([`super::units_avx2`]), and
//! `vpdpwssd` multiplies them; 16 weight rows' int32 sums are folded into one vector and scaled
//! together. For a unit with scale `d` and offset `m` (`w = d q + m`) and activations
//! `x ~ s xq`: `sum w x = d s sum(q xq) + m sum(x)`.
//!
//! The numbers are the int16 GEMM's ([`super::gemm_i16`]), operation for operation (each
//! unit's exact int32 sum, converted once, then `d s` and `m sum(x)` by fused multiply-adds in
//! unit order), so several conversations' tokens stepped together run the GEMM, which decodes
//! the weights once for all of them, and each row still gets the bits it gets alone.

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::gemm_i16::{activation_max, store};
use super::row_i16::RowI16;
use super::row_i16_avx512::quantize_row;
use super::units_avx2::{by_layout, Layout};
use super::{CpuBackend, Linear, SharedMut};
use crate::quant::QK;
use crate::DType;

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    super::gemm_vnni::available() && super::multiversion::avx512() && super::units_avx2::available()
}

/// Weight rows per call of [`dot16`]: one vector of results.
pub const GROUP: usize = 16;

/// Activation rows up to which each row runs [`dot16`] on its own; more take the GEMM (the
/// same bits, the weights decoded once).
const TOKEN_ROWS: usize = 2;

/// Groups ahead whose weights are prefetched (into L2: into L1, a group of Gemma 3's head,
/// 11 KB, and the next would not fit beside the rest).
const AHEAD: usize = 2;

/// Multiply-adds below which the product runs on one thread.
const MIN_SPLIT_MACS: usize = 1 << 16;

/// `rows` (at most [`GROUP`]) rows of `dtype` blocks (`w`: rows of `row_bytes`) times the
/// quantized activation row `x` (from [`quantize_row`] with [`activation_max`]): lane `r` is row
/// `r`'s product, the others 0.
///
/// # Safety
/// [`available`] is true, [`super::units_avx2::decodes`] reads `dtype`; `w` holds `rows` rows
/// of `x.q.len()` values of `dtype`.
pub unsafe fn dot16(
    dtype: DType,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    x: &RowI16,
) -> [f32; 16] {
    let units = x.s.len();
    assert!(
        rows <= GROUP
            && x.q.len() == units * QK
            && x.sum.len() == units
            && row_bytes * dtype.block_len() == units * QK * dtype.block_bytes()
            && w.len() >= rows * row_bytes,
        "dot16: bad lengths"
    );
    unsafe fn full<T: Layout>(w: &[u8], row_bytes: usize, rows: usize, x: &RowI16) -> [f32; 16] {
        // SAFETY: as `dot16`'s caller guarantees.
        unsafe { dot16_t::<T, true>(w, row_bytes, rows, x) }
    }
    unsafe fn part<T: Layout>(w: &[u8], row_bytes: usize, rows: usize, x: &RowI16) -> [f32; 16] {
        // SAFETY: as `dot16`'s caller guarantees.
        unsafe { dot16_t::<T, false>(w, row_bytes, rows, x) }
    }
    // SAFETY: the caller guarantees the CPU features and the type; lengths asserted above.
    unsafe {
        if rows == GROUP {
            by_layout!(dtype, full(w, row_bytes, rows, x))
        } else {
            by_layout!(dtype, part(w, row_bytes, rows, x))
        }
    }
}

/// `FULL`: a whole group, so that the written-out rows need no test.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot16_t<T: Layout, const FULL: bool>(
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    x: &RowI16,
) -> [f32; 16] {
    let rows = if FULL { GROUP } else { rows };
    let mut acc = _mm512_setzero_ps();
    let zero = _mm512_setzero_si512();
    let wp = w.as_ptr();
    let (mut d, mut m) = ([0f32; GROUP], [0f32; GROUP]);
    for blk in 0..x.s.len() / T::UNITS {
        for u in 0..T::UNITS {
            let at = blk * T::UNITS + u;
            // SAFETY: block `blk` of each of the `rows` rows, and the row's unit `at`, are in
            // bounds (asserted by `dot16`).
            unsafe {
                let xv = _mm512_loadu_si512(x.q.as_ptr().add(at * QK) as *const _);
                if u == 0 {
                    // The group's rows lie one after another: the group AHEAD groups on is
                    // fetched as one stream, as far into it as this group has come (sixteen
                    // rows read side by side are sixteen streams to the hardware prefetcher).
                    let ahead = wp.wrapping_add((blk * T::BYTES + AHEAD * row_bytes) * GROUP);
                    for line in (0..GROUP * T::BYTES).step_by(64) {
                        _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(line) as *const i8);
                    }
                }
                let mut v = [zero; GROUP];
                // Written out, so that the vectors stay in registers.
                macro_rules! rows {
                    ($($r:literal)*) => {$(
                        if $r < rows {
                            let b = wp.add($r * row_bytes + blk * T::BYTES);
                            v[$r] = row::<T>(b, u, xv, &mut d[$r], &mut m[$r]);
                        }
                    )*};
                }
                rows!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
                let ds = _mm512_mul_ps(
                    _mm512_loadu_ps(d.as_ptr()),
                    _mm512_set1_ps(*x.s.get_unchecked(at)),
                );
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum16(&v)), ds, acc);
                if T::OFFSETS {
                    let sum = _mm512_set1_ps(*x.sum.get_unchecked(at));
                    acc = _mm512_fmadd_ps(_mm512_loadu_ps(m.as_ptr()), sum, acc);
                }
            }
        }
    }
    let mut out = [0f32; 16];
    // SAFETY: 16 floats.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), acc) };
    out
}

/// Unit `u` of the block at `b` times the activations `xv`: 16 int32 pair sums, the unit's
/// scale and offset in `d` and `m`.
///
/// # Safety
/// AVX-512 VNNI and AVX2 (inlined into [`dot16_t`]); a whole block at `b`.
#[inline(always)]
unsafe fn row<T: Layout>(b: *const u8, u: usize, xv: __m512i, d: &mut f32, m: &mut f32) -> __m512i {
    // SAFETY: the caller's block and features.
    unsafe {
        let (q, ud, um) = T::unit512(b, u);
        *d = ud;
        *m = if T::SHIFT != 0 { 0.0 } else { um };
        _mm512_dpwssd_epi32(_mm512_setzero_si512(), q, xv)
    }
}

/// Lane `r` of the result is the sum of `v[r]`'s 16 lanes (exact: int32 wraps as the GEMM's
/// sums do, and neither reaches the bounds [`activation_max`] keeps).
///
/// # Safety
/// AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn sum16(v: &[__m512i; 16]) -> __m512i {
    // Pairs: within each 128-bit lane, rows 2i and 2i + 1 alternate.
    let t: [__m512i; 8] = std::array::from_fn(|i| {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
    });
    // Quads: within each 128-bit lane, rows 4i..4i + 4 in order.
    let u: [__m512i; 4] = std::array::from_fn(|i| {
        let (a, b) = (t[2 * i], t[2 * i + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
    });
    // The four 128-bit lanes of each quad summed, quad g ending in lane g.
    let half = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0x88>(a, b),
            _mm512_shuffle_i32x4::<0xdd>(a, b),
        )
    };
    half(half(u[0], u[1]), half(u[2], u[3]))
}

thread_local! {
    /// The activation rows as int16, reused across calls.
    static ROWS_I16: RefCell<Vec<RowI16>> = const { RefCell::new(Vec::new()) };
}

impl CpuBackend {
    /// `out[m, n] = x[m, k] . W[n, k]^T + bias` for the rows of decoding steps over Q8_0, Q4_0,
    /// Q4_1, Q5_0 or Q5_1 weights (the caller checks [`available`], the table's slot, and the
    /// shapes): a row or two by [`dot16`], more by the int16 GEMM, which gives each row the same
    /// bits.
    pub(super) fn linear_tokens_i16(
        &self,
        x: &[f32],
        m: usize,
        dtype: DType,
        w: &[u8],
        lin: &Linear<'_>,
        out: &mut [f32],
    ) {
        let (n, k) = (lin.n, lin.k);
        if m > TOKEN_ROWS && self.kernels().gemm_i16 && super::gemm_i16::available() {
            return self.linear_gemm_i16(x, m, dtype, w, lin, out);
        }
        let row_bytes = w.len() / n;
        let qmax = activation_max(dtype);
        let mut rows_i16 = ROWS_I16.take();
        rows_i16.resize_with(m, Default::default);
        for (r, xr) in rows_i16.iter_mut().zip(x.chunks_exact(k)) {
            // SAFETY: AVX-512 (the caller checked `available`); k is whole units.
            unsafe { quantize_row(r, xr, qmax) };
        }
        let groups = n.div_ceil(GROUP);
        let tasks = if m * n * k < MIN_SPLIT_MACS.min(self.min_task_macs) {
            1
        } else {
            self.threads().min(groups)
        };
        let per = groups.div_ceil(tasks);
        let outp = SharedMut::new(out);
        let rows = &rows_i16[..];
        self.parallel(tasks, &|t| {
            for g in (t * per).min(groups)..((t + 1) * per).min(groups) {
                let j = g * GROUP;
                let cols = (n - j).min(GROUP);
                for (i, xr) in rows.iter().enumerate() {
                    // SAFETY: the caller checked the features and the type; the slice holds
                    // `cols` whole rows.
                    let v = unsafe { dot16(dtype, &w[j * row_bytes..], row_bytes, cols, xr) };
                    // SAFETY: task t writes only the columns of its own groups.
                    let o = unsafe { outp.slice(i * n + j, cols) };
                    store(o, &v, lin.bias.map(|b| &b[j..j + cols]));
                }
            }
        });
        ROWS_I16.set(rows_i16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum16_adds_each_vector_into_its_lane() {
        if !super::super::x86::runs_here(std::is_x86_feature_detected!("avx512f"), "sum16") {
            return;
        }
        let rows: Vec<[i32; 16]> = (0..16i32)
            .map(|r| std::array::from_fn(|c| (r + 1) * 1000 + c as i32 * (r - 7)))
            .collect();
        // SAFETY: AVX-512F was detected; each row is 16 i32.
        let got = unsafe {
            let v: [__m512i; 16] =
                std::array::from_fn(|r| _mm512_loadu_si512(rows[r].as_ptr() as *const _));
            let mut o = [0i32; 16];
            _mm512_storeu_si512(o.as_mut_ptr() as *mut _, sum16(&v));
            o
        };
        for (r, row) in rows.iter().enumerate() {
            assert_eq!(got[r], row.iter().sum::<i32>(), "lane {r}");
        }
    }
}

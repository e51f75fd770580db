//! aarch64 kernels of the f32-activation matmul over the types a Q4_K_M, Q5_K_M or Q6_K file
//! is made of (Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), on baseline NEON (every aarch64 CPU, so the
//! dotprod and i8mm sets run them too): x86's int16 scheme ([`super::gemv_i16`]). Each unit of
//! 32 weights (`w = d q + m`, as `quant::units` reads it) is decoded in registers to int16 once
//! per call and four weight rows; the activation rows are rounded to int16 per block of 32
//! ([`RowI16`]: relative error below 2^-15 of the block's largest value, where int8 activations
//! break the decoders' fidelity); `smull`/`smlal` sum each unit's products exactly in int32,
//! and `d s sum + m sum(x)` adds it in f32 in unit order. A row's result does not depend on
//! which rows share the call. Q6_K's sub-block scales are folded into its int16 values
//! (`|q sc| <= 4096`), so a unit has one scale as for the other types.
//!
//! What the reference decoder (`dtype.decode` into f32, then f32 products) cost here is the
//! scalar decoding of every value once per call: the units below decode 16 values per
//! instruction.

use std::arch::aarch64::*;
use std::cell::RefCell;

use super::row_i16::RowI16;
use super::{CpuBackend, Linear, SharedMut};
use crate::quant::k_quants::{scale_min_k4, QK_K};
use crate::quant::QK;
use crate::DType;

/// Weight rows decoded together (and the results of one activation row written at once).
pub(super) const ROWS: usize = 4;

/// Whether these kernels read `dtype`.
pub(super) fn decodes(dtype: DType) -> bool {
    crate::quant::units::UNIT_TYPES.contains(&dtype)
}

#[inline(always)]
fn f16(b: &[u8], at: usize) -> f32 {
    crate::quant::f16_bits_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// 0x10 in byte `j` where bit `j` of `bits` is set (Q5_0/Q5_1's fifth bits of 16 values).
#[inline]
#[target_feature(enable = "neon")]
fn fifth_bits(bits: u16) -> uint8x16_t {
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: BIT holds 16 bytes; NEON is part of the aarch64 baseline.
    let mask = unsafe { vld1q_u8(BIT.as_ptr()) };
    let bytes = vcombine_u8(vdup_n_u8(bits as u8), vdup_n_u8((bits >> 8) as u8));
    vandq_u8(vtstq_u8(bytes, mask), vdupq_n_u8(0x10))
}

/// A unit's 32 values as signed bytes (values 0..16 and 16..32), the int8 scales of its two
/// halves (Q6_K's sub-blocks; 1 for the other types), its scale and its offset: `w = d sc q + m`.
#[derive(Clone, Copy)]
pub(super) struct UnitBytes {
    /// Values 0..16 and 16..32.
    pub v: [int8x16_t; 2],
    /// Each half's int8 scale (1 but for Q6_K).
    pub sc: [i16; 2],
    /// The unit's scale.
    pub d: f32,
    /// The unit's offset.
    pub m: f32,
}

/// Sixteen bytes holding `value + bias` (unsigned) as signed values.
#[inline]
#[target_feature(enable = "neon")]
fn unbias(v: uint8x16_t, bias: u8) -> int8x16_t {
    vreinterpretq_s8_u8(vsubq_u8(v, vdupq_n_u8(bias)))
}

/// Unit `u` (of `k / 32`) of the row at `row`, of `dtype` ([`decodes`]).
///
/// # Safety
/// `row` holds whole blocks of `dtype` up to and including unit `u`'s.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn unit_bytes(dtype: DType, row: &[u8], u: usize) -> UnitBytes {
    let low4 = vdupq_n_u8(0x0f);
    // Values below 128 read as signed bytes unchanged.
    let same = |v: uint8x16_t| vreinterpretq_s8_u8(v);
    // SAFETY: every load below reads 16 bytes at an offset the block's layout puts inside
    // the unit's block, which the caller guarantees lies in `row`.
    unsafe {
        match dtype {
            DType::Q5_0 | DType::Q5_1 => {
                let (bytes, head) = if dtype == DType::Q5_0 {
                    (22, 2)
                } else {
                    (24, 4)
                };
                let b = &row[u * bytes..(u + 1) * bytes];
                let qh = u32::from_le_bytes([b[head], b[head + 1], b[head + 2], b[head + 3]]);
                let qs = vld1q_u8(b.as_ptr().add(head + 4));
                let lo = vorrq_u8(vandq_u8(qs, low4), fifth_bits(qh as u16));
                let hi = vorrq_u8(vshrq_n_u8::<4>(qs), fifth_bits((qh >> 16) as u16));
                if dtype == DType::Q5_0 {
                    UnitBytes {
                        v: [unbias(lo, 16), unbias(hi, 16)],
                        sc: [1, 1],
                        d: f16(b, 0),
                        m: 0.0,
                    }
                } else {
                    UnitBytes {
                        v: [same(lo), same(hi)],
                        sc: [1, 1],
                        d: f16(b, 0),
                        m: f16(b, 2),
                    }
                }
            }
            DType::Q4_K | DType::Q5_K => {
                let bytes = dtype.block_bytes();
                let (blk, i) = (u / (QK_K / QK), u % (QK_K / QK));
                let b = &row[blk * bytes..(blk + 1) * bytes];
                let (sc, mn) = scale_min_k4(i, &b[4..16]);
                let qs = (if dtype == DType::Q4_K { 16 } else { 48 }) + 32 * (i / 2);
                let nib = |at: usize| {
                    let v = vld1q_u8(b.as_ptr().add(at));
                    if i % 2 == 0 {
                        vandq_u8(v, low4)
                    } else {
                        vshrq_n_u8::<4>(v)
                    }
                };
                let (mut lo, mut hi) = (nib(qs), nib(qs + 16));
                if dtype == DType::Q5_K {
                    // Bit i of qh[l] is value l's fifth bit.
                    let bit = vdupq_n_u8(1 << i);
                    let five = vdupq_n_u8(0x10);
                    let h0 = vandq_u8(vtstq_u8(vld1q_u8(b.as_ptr().add(16)), bit), five);
                    let h1 = vandq_u8(vtstq_u8(vld1q_u8(b.as_ptr().add(32)), bit), five);
                    lo = vorrq_u8(lo, h0);
                    hi = vorrq_u8(hi, h1);
                }
                // The reference's `d sc q - dmin m` as `q (d sc) + (-(dmin m))`.
                let (d, dmin) = (f16(b, 0), f16(b, 2));
                UnitBytes {
                    v: [same(lo), same(hi)],
                    sc: [1, 1],
                    d: d * sc as f32,
                    m: -(dmin * mn as f32),
                }
            }
            DType::Q6_K => {
                let bytes = dtype.block_bytes();
                let (blk, i) = (u / (QK_K / QK), u % (QK_K / QK));
                let b = &row[blk * bytes..(blk + 1) * bytes];
                let (h, s) = (i / 4, i % 4);
                let ql = 64 * h + 32 * (s % 2);
                let low = |at: usize| {
                    let v = vld1q_u8(b.as_ptr().add(at));
                    if s < 2 {
                        vandq_u8(v, low4)
                    } else {
                        vshrq_n_u8::<4>(v)
                    }
                };
                let high = |at: usize| {
                    let v = vld1q_u8(b.as_ptr().add(128 + 32 * h + at));
                    let v = vshlq_u8(v, vdupq_n_s8(-2 * s as i8));
                    vshlq_n_u8::<4>(vandq_u8(v, vdupq_n_u8(3)))
                };
                UnitBytes {
                    v: [
                        unbias(vorrq_u8(low(ql), high(0)), 32),
                        unbias(vorrq_u8(low(ql + 16), high(16)), 32),
                    ],
                    sc: [b[192 + 2 * i] as i8 as i16, b[193 + 2 * i] as i8 as i16],
                    d: f16(b, 208),
                    m: 0.0,
                }
            }
            _ => unreachable!("neon_units: {dtype} is not decoded here"),
        }
    }
}

/// A unit as 32 int16 values (four vectors of eight), each half's scale folded in
/// (`|q sc| <= 32 * 128`), with its scale and offset.
#[inline]
#[target_feature(enable = "neon")]
fn widen(u: &UnitBytes) -> [int16x8_t; 4] {
    let w = |v: int8x16_t, sc: i16| {
        let (a, b) = (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v));
        if sc == 1 {
            [a, b]
        } else {
            [vmulq_n_s16(a, sc), vmulq_n_s16(b, sc)]
        }
    };
    let (lo, hi) = (w(u.v[0], u.sc[0]), w(u.v[1], u.sc[1]));
    [lo[0], lo[1], hi[0], hi[1]]
}

/// Up to [`ROWS`] weight rows decoded to int16: `q[row][k]`, `d[row][unit]`, `m[row][unit]`;
/// missing rows are zero.
#[derive(Default)]
pub(super) struct Decoded {
    q: Vec<i16>,
    d: Vec<f32>,
    m: Vec<f32>,
    units: usize,
}

/// Each unit of the first [`ROWS`] rows of `w` (`row_bytes` each, `k` values of `dtype`) to
/// `f(row, unit, Some(unit))`, and `f(row, unit, None)` for the units of rows past `rows`
/// (the decoded forms zero them), after checking the shapes.
///
/// # Safety
/// NEON (the aarch64 baseline).
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn each_unit_of_rows(
    dtype: DType,
    w: &[u8],
    rows: usize,
    row_bytes: usize,
    k: usize,
    mut f: impl FnMut(usize, usize, Option<&UnitBytes>),
) {
    assert!(
        rows <= ROWS
            && decodes(dtype)
            && k.is_multiple_of(dtype.block_len())
            && row_bytes * dtype.block_len() == k * dtype.block_bytes()
            && w.len() >= rows * row_bytes,
        "neon_units: {} bytes of {dtype} for {rows} rows of {k}",
        w.len()
    );
    for r in 0..ROWS {
        let row = (r < rows).then(|| &w[r * row_bytes..(r + 1) * row_bytes]);
        for u in 0..k / QK {
            match row {
                // SAFETY: `row` is whole blocks of dtype covering every unit (asserted above).
                Some(row) => f(r, u, Some(&unsafe { unit_bytes(dtype, row, u) })),
                None => f(r, u, None),
            }
        }
    }
}

/// Weight rows decoded for one of the two kernels, and their products.
pub(super) trait Rows: Default + 'static {
    /// Whether the activation rows need their int8 halves.
    const HILO: bool;
    /// Runs `f` on this thread's decoded rows.
    fn with<R>(f: impl FnOnce(&mut Self) -> R) -> R;
    /// Decodes the `rows` rows of `w` (`row_bytes` each, `k` values of `dtype`).
    ///
    /// # Safety
    /// The CPU has the kernel's instructions.
    unsafe fn fill(&mut self, dtype: DType, w: &[u8], rows: usize, row_bytes: usize, k: usize);
    /// The decoded rows' products with `R` activation rows: `[activation row][weight row]`.
    ///
    /// # Safety
    /// As [`Rows::fill`].
    unsafe fn dot<const R: usize>(&self, xs: [&ActRow; R], off: bool) -> [[f32; ROWS]; R];
}

impl Rows for Decoded {
    const HILO: bool = false;
    fn with<R>(f: impl FnOnce(&mut Self) -> R) -> R {
        super::with_scratch(&DECODED, f)
    }
    /// Decodes the `rows` rows of `w` (`row_bytes` each, `k` values of `dtype`).
    #[target_feature(enable = "neon")]
    unsafe fn fill(&mut self, dtype: DType, w: &[u8], rows: usize, row_bytes: usize, k: usize) {
        let units = k / QK;
        self.units = units;
        // Grown, never shrunk (every value of the `ROWS * k` used is written below): a
        // shrink then a grow zero-filled the difference each time a block's widths alternated.
        if self.q.len() < ROWS * k {
            self.q.resize(ROWS * k, 0);
            self.d.resize(ROWS * units, 0.0);
            self.m.resize(ROWS * units, 0.0);
        }
        let (q, d, m) = (&mut self.q, &mut self.d, &mut self.m);
        // SAFETY: NEON is part of the aarch64 baseline; the four stores below write the 32
        // values of the slice `q` of one unit.
        unsafe {
            each_unit_of_rows(dtype, w, rows, row_bytes, k, |r, u, ub| {
                let (at, i) = (r * k + u * QK, r * units + u);
                let Some(ub) = ub else {
                    q[at..at + QK].fill(0);
                    (d[i], m[i]) = (0.0, 0.0);
                    return;
                };
                let q = &mut q[at..at + QK];
                for (c, v) in widen(ub).into_iter().enumerate() {
                    vst1q_s16(q.as_mut_ptr().add(8 * c), v);
                }
                (d[i], m[i]) = (ub.d, ub.m);
            })
        }
    }

    /// The decoded rows' products with `R` activation rows: `[activation row][weight row]`.
    // `r` indexes the decoded rows and each activation row's results alike.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "neon")]
    unsafe fn dot<const R: usize>(&self, xs: [&ActRow; R], off: bool) -> [[f32; ROWS]; R] {
        let (units, k) = (self.units, self.units * QK);
        assert!(
            xs.iter()
                .all(|x| x.q.q.len() == k && x.q.s.len() == units && x.q.sum.len() == units),
            "neon_units: an activation row of another length"
        );
        let mut acc = [[0f32; ROWS]; R];
        for u in 0..units {
            // SAFETY: unit u's 32 values lie in every activation row (k values, asserted).
            let xv: [[int16x8_t; 4]; R] = std::array::from_fn(|i| unsafe {
                let p = xs[i].q.q.as_ptr().add(u * QK);
                [
                    vld1q_s16(p),
                    vld1q_s16(p.add(8)),
                    vld1q_s16(p.add(16)),
                    vld1q_s16(p.add(24)),
                ]
            });
            for r in 0..ROWS {
                // SAFETY: row r's unit u lies in q (ROWS rows of k, sized by `fill`).
                let w: [int16x8_t; 4] = unsafe {
                    let p = self.q.as_ptr().add(r * k + u * QK);
                    [
                        vld1q_s16(p),
                        vld1q_s16(p.add(8)),
                        vld1q_s16(p.add(16)),
                        vld1q_s16(p.add(24)),
                    ]
                };
                let (d, m) = (self.d[r * units + u], self.m[r * units + u]);
                for (i, x) in xv.iter().enumerate() {
                    // Each lane sums four products of at most 4096 * 32767: exact in int32.
                    let mut a = vmull_s16(vget_low_s16(w[0]), vget_low_s16(x[0]));
                    let mut b = vmull_s16(vget_low_s16(w[1]), vget_low_s16(x[1]));
                    a = vmlal_high_s16(a, w[0], x[0]);
                    b = vmlal_high_s16(b, w[1], x[1]);
                    a = vmlal_s16(a, vget_low_s16(w[2]), vget_low_s16(x[2]));
                    b = vmlal_s16(b, vget_low_s16(w[3]), vget_low_s16(x[3]));
                    a = vmlal_high_s16(a, w[2], x[2]);
                    b = vmlal_high_s16(b, w[3], x[3]);
                    let sum = vaddlvq_s32(a) + vaddlvq_s32(b);
                    let (s, sx) = (xs[i].q.s[u], xs[i].q.sum[u]);
                    acc[i][r] = (sum as f32).mul_add(d * s, acc[i][r]);
                    if off {
                        acc[i][r] = m.mul_add(sx, acc[i][r]);
                    }
                }
            }
        }
        acc
    }
}

thread_local! {
    /// The decoded weight rows, per thread, reused across calls.
    static DECODED: RefCell<Decoded> = RefCell::new(Decoded::default());
    /// The activation rows, reused across calls.
    static ROWS_I16: RefCell<Vec<ActRow>> = const { RefCell::new(Vec::new()) };
}

/// An activation row for these kernels: int16 per block ([`RowI16`]), and for the dot-product
/// kernels the same values as two int8 rows ([`super::neon_sdot::HiLo`]).
#[derive(Default)]
pub(super) struct ActRow {
    /// The row as int16 per block.
    pub q: RowI16,
    /// Its int8 halves (filled for the dot-product kernels only).
    pub hilo: super::neon_sdot::HiLo,
}

impl CpuBackend {
    /// `out[m, n] = x[m, k] . W[n, k]^T + bias` for `dtype` weights these kernels read
    /// ([`decodes`]; the caller checked the table's slot and the shapes), over `tasks` tasks:
    /// the dot-product kernels where the table has them, else the NEON ones (the same bits).
    pub(super) fn linear_units_neon(
        &self,
        x: &[f32],
        m: usize,
        w: (DType, &[u8]),
        lin: &Linear<'_>,
        out: &mut [f32],
        tasks: usize,
    ) {
        if self.kernels.units_sdot {
            self.linear_units::<super::neon_sdot::Decoded8>(x, m, w, lin, out, tasks)
        } else {
            self.linear_units::<Decoded>(x, m, w, lin, out, tasks)
        }
    }

    fn linear_units<D: Rows>(
        &self,
        x: &[f32],
        m: usize,
        (dtype, w): (DType, &[u8]),
        lin: &Linear<'_>,
        out: &mut [f32],
        tasks: usize,
    ) {
        let (n, k) = (lin.n, lin.k);
        if n == 0 || m == 0 {
            return;
        }
        let row_bytes = w.len() / n;
        let mut acts = ROWS_I16.take();
        acts.resize_with(m, Default::default);
        for (r, xr) in acts.iter_mut().zip(x.chunks_exact(k)) {
            r.q.quantize(xr);
            if D::HILO {
                r.hilo.split(&r.q);
            }
        }
        let off = crate::quant::units::has_offsets(dtype);
        let chunk = n.div_ceil(tasks).next_multiple_of(ROWS);
        let outp = SharedMut::new(out);
        let xs = &acts[..];
        self.parallel(tasks, &|t| {
            D::with(|dec| {
                let (j0, j1) = ((t * chunk).min(n), ((t + 1) * chunk).min(n));
                let mut j = j0;
                while j < j1 {
                    let rows = (j1 - j).min(ROWS);
                    // SAFETY: the table holds this kernel only where the CPU has its
                    // instructions (NEON is the aarch64 baseline; dotprod is detected).
                    unsafe { dec.fill(dtype, &w[j * row_bytes..], rows, row_bytes, k) };
                    let put = |i: usize, v: &[f32; ROWS]| {
                        // SAFETY: task t writes only columns j0..j1 (j + rows <= j1), its own.
                        let o = unsafe { outp.slice(i * n + j, rows) };
                        for (c, o) in o.iter_mut().enumerate() {
                            *o = v[c] + lin.bias.map_or(0.0, |b| b[j + c]);
                        }
                    };
                    // Two activation rows share each weight load; an odd last row alone (each
                    // row's sums are the same either way).
                    let pairs = m / 2 * 2;
                    for i in (0..pairs).step_by(2) {
                        // SAFETY: as above.
                        let v = unsafe { dec.dot::<2>([&xs[i], &xs[i + 1]], off) };
                        put(i, &v[0]);
                        put(i + 1, &v[1]);
                    }
                    if pairs < m {
                        // SAFETY: as above.
                        put(pairs, &unsafe { dec.dot::<1>([&xs[pairs]], off) }[0]);
                    }
                    j += rows;
                }
            })
        });
        ROWS_I16.set(acts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::units::each_unit;

    /// Random blocks with finite scales of either sign.
    fn random_blocks(dtype: DType, blocks: usize, seed: u64) -> Vec<u8> {
        crate::quant::units::random_blocks(dtype, blocks, seed, [0.01, -0.03])
    }

    /// Every unit the NEON decoders make equals `quant::units` (the reference decoder's
    /// factors) exactly: values, scale and offset; Q6_K's values carry their half's scale.
    #[test]
    fn neon_units_equal_the_reference_units() {
        for dtype in crate::quant::units::UNIT_TYPES {
            let blocks = 3;
            let data = random_blocks(dtype, blocks, 0x9e37_79b9_7f4a_7c15);
            let k = blocks * dtype.block_len();
            let mut want = Vec::new();
            each_unit(dtype, &data, |u| want.push(u)).unwrap();
            assert_eq!(want.len(), k / QK);
            let mut dec = Decoded::default();
            // SAFETY: NEON is part of the aarch64 baseline.
            unsafe { dec.fill(dtype, &data, 1, data.len(), k) };
            for (u, w) in want.iter().enumerate() {
                let signed = matches!(dtype, DType::Q5_0 | DType::Q6_K);
                for l in 0..QK {
                    let q = if signed {
                        w.q[l] as i8 as i16
                    } else {
                        w.q[l] as i16
                    };
                    let got = dec.q[u * QK + l];
                    if dtype == DType::Q6_K {
                        // The reference's half scale is d times the int8 scale: the NEON
                        // unit's value over its d.
                        let sc = data[(u / 8) * 210 + 192 + 2 * (u % 8) + l / 16] as i8 as i16;
                        assert_eq!(got, q * sc, "{dtype} unit {u} value {l}");
                        assert_eq!(dec.d[u] * sc as f32, w.d[l / 16], "{dtype} unit {u}");
                    } else {
                        assert_eq!(got, q, "{dtype} unit {u} value {l}");
                    }
                }
                if dtype != DType::Q6_K {
                    assert_eq!(dec.d[u], w.d[0], "{dtype} unit {u}: scale");
                }
                assert_eq!(dec.m[u], w.m, "{dtype} unit {u}: offset");
            }
        }
    }

    /// The products equal f64 over the same int16 activations and decoded weights, to f32
    /// rounding; rows past `rows` are zero.
    #[test]
    fn neon_products_equal_f64_of_the_units() {
        for dtype in [DType::Q5_1, DType::Q4_K, DType::Q6_K] {
            let blocks = 2;
            let k = blocks * dtype.block_len();
            let row_bytes = k / dtype.block_len() * dtype.block_bytes();
            let data = random_blocks(dtype, 3 * blocks, 7);
            let x: Vec<f32> = (0..k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.07)
                .collect();
            let mut act = ActRow::default();
            act.q.quantize(&x);
            let row = &act.q;
            let mut dec = Decoded::default();
            // SAFETY: NEON is part of the aarch64 baseline.
            let got = unsafe {
                dec.fill(dtype, &data, 3, row_bytes, k);
                dec.dot::<1>([&act], crate::quant::units::has_offsets(dtype))[0]
            };
            assert_eq!(got[3], 0.0);
            for (r, &got) in got[..3].iter().enumerate() {
                let mut want = 0f64;
                let mut mag = 0f64;
                for u in 0..k / QK {
                    let (d, m) = (
                        dec.d[r * (k / QK) + u] as f64,
                        dec.m[r * (k / QK) + u] as f64,
                    );
                    for l in 0..QK {
                        let c = u * QK + l;
                        let t = d * dec.q[r * k + c] as f64 * row.q[c] as f64 * row.s[u] as f64;
                        want += t;
                        mag += t.abs();
                    }
                    want += m * row.sum[u] as f64;
                    mag += (m * row.sum[u] as f64).abs();
                }
                assert!(
                    (got as f64 - want).abs() <= 1e-6 * mag,
                    "{dtype} row {r}: {got} vs {want}"
                );
            }
        }
    }

    /// The NEON sets run these kernels for every type they decode (the table's slot is read),
    /// and the scalar set does not.
    #[test]
    fn the_neon_sets_take_the_unit_kernels() {
        let dtype = DType::Q4_K;
        let (n, k) = (8, 256);
        let w = random_blocks(dtype, n, 3);
        let x = vec![0.5f32; 2 * k];
        let lin = Linear {
            w: super::super::WeightData::Blocks(dtype, &w),
            bias: None,
            n,
            k,
            act: crate::ops::ActQuant::F32,
        };
        let _alone = super::super::kernels::COUNT_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        super::super::kernels::count_simd_calls(true);
        for ks in super::super::kernels::available() {
            let before = super::super::kernels::simd_calls();
            let cpu = CpuBackend::with_kernels(ks, 1);
            cpu.linear(&x, 2, &lin, &mut vec![0f32; 2 * n]).unwrap();
            let ran = super::super::kernels::simd_calls() - before;
            assert_eq!(ks.units_neon, ks.name != "scalar", "{}", ks.name);
            if ks.units_neon {
                assert!(ran >= 1, "{}: the unit kernels did not run", ks.name);
            } else {
                assert_eq!(ran, 0, "the scalar set ran a SIMD kernel");
            }
        }
    }
}

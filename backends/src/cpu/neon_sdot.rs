//! The dot-product extension's form of [`super::neon_units`]' int16 products (the `dotprod`
//! and `i8mm` sets): `sdot` multiplies int8 by int8, so each int16 activation value is split
//! into two int8 halves, `q = 256 hi + lo + 128` (`hi = q >> 8`, `lo = (q & 255) - 128`), and
//! the weights stay int8 (Q6_K's sub-block scales apply to the two halves' sums instead of
//! being folded into the values): `sum w q = 256 sum(w hi) + sum(w lo) + 128 sum(w)`, with
//! `sum(w)` per half unit computed once at decoding. Every sum is exact in integers, so a
//! unit's total is the int16 kernel's integer and each result its bits; per 32 values a
//! weight row takes four `sdot` where the int16 kernel takes eight `smull`/`smlal`, and the
//! decoded rows are half as many bytes.

use std::arch::aarch64::*;
use std::cell::RefCell;

use super::neon::sdot;
use super::neon_units::{each_unit_of_rows, ActRow, Rows, ROWS};
use super::row_i16::RowI16;
use crate::quant::QK;
use crate::DType;

/// An int16 activation row as two int8 rows: `q = 256 hi + lo + 128`.
#[derive(Default)]
pub struct HiLo {
    hi: Vec<i8>,
    lo: Vec<i8>,
}

impl HiLo {
    /// Splits `r`'s values.
    pub(super) fn split(&mut self, r: &RowI16) {
        self.hi.clear();
        self.lo.clear();
        self.hi.extend(r.q.iter().map(|&q| (q >> 8) as i8));
        self.lo
            .extend(r.q.iter().map(|&q| ((q & 0xff) - 128) as i8));
    }
}

/// Up to [`ROWS`] weight rows decoded to int8: `q[row][k]`, and per row and unit the sums of
/// its two halves' values, the halves' int8 scales, the unit's scale and offset; missing rows
/// are zero.
#[derive(Default)]
pub(super) struct Decoded8 {
    q: Vec<i8>,
    sums: Vec<[i32; 2]>,
    sc: Vec<[i32; 2]>,
    d: Vec<f32>,
    m: Vec<f32>,
    units: usize,
}

thread_local! {
    /// The decoded weight rows, per thread, reused across calls.
    static DECODED8: RefCell<Decoded8> = RefCell::new(Decoded8::default());
}

impl Rows for Decoded8 {
    const HILO: bool = true;
    fn with<R>(f: impl FnOnce(&mut Self) -> R) -> R {
        super::with_scratch(&DECODED8, f)
    }
    /// Decodes the `rows` rows of `w` (`row_bytes` each, `k` values of `dtype`).
    #[target_feature(enable = "neon")]
    unsafe fn fill(&mut self, dtype: DType, w: &[u8], rows: usize, row_bytes: usize, k: usize) {
        let units = k / QK;
        self.units = units;
        // Grown, never shrunk, as the int16 form's.
        if self.q.len() < ROWS * k {
            self.q.resize(ROWS * k, 0);
            self.sums.resize(ROWS * units, [0; 2]);
            self.sc.resize(ROWS * units, [0; 2]);
            self.d.resize(ROWS * units, 0.0);
            self.m.resize(ROWS * units, 0.0);
        }
        let Decoded8 {
            q, sums, sc, d, m, ..
        } = self;
        // SAFETY: NEON is part of the aarch64 baseline; the two stores below write the 32
        // values of the slice `q` of one unit.
        unsafe {
            each_unit_of_rows(dtype, w, rows, row_bytes, k, |r, u, ub| {
                let (at, i) = (r * k + u * QK, r * units + u);
                let Some(ub) = ub else {
                    q[at..at + QK].fill(0);
                    (sums[i], sc[i], d[i], m[i]) = ([0; 2], [0; 2], 0.0, 0.0);
                    return;
                };
                let q = &mut q[at..at + QK];
                vst1q_s8(q.as_mut_ptr(), ub.v[0]);
                vst1q_s8(q.as_mut_ptr().add(16), ub.v[1]);
                sums[i] = [vaddlvq_s8(ub.v[0]) as i32, vaddlvq_s8(ub.v[1]) as i32];
                sc[i] = [ub.sc[0] as i32, ub.sc[1] as i32];
                (d[i], m[i]) = (ub.d, ub.m);
            })
        }
    }

    /// The decoded rows' products with `R` activation rows: `[activation row][weight row]`.
    ///
    /// # Safety
    /// The CPU has the dot-product extension.
    // `r` indexes the decoded rows and each activation row's results alike.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn dot<const R: usize>(&self, xs: [&ActRow; R], off: bool) -> [[f32; ROWS]; R] {
        let (units, k) = (self.units, self.units * QK);
        assert!(
            xs.iter().all(|x| x.hilo.hi.len() == k
                && x.hilo.lo.len() == k
                && x.q.s.len() == units
                && x.q.sum.len() == units),
            "neon_sdot: an activation row of another length"
        );
        let zero = vdupq_n_s32(0);
        let mut acc = [[0f32; ROWS]; R];
        for u in 0..units {
            // SAFETY: unit u's 32 values lie in every activation row's halves (asserted).
            let xv: [[int8x16_t; 4]; R] = std::array::from_fn(|i| unsafe {
                let (h, l) = (
                    xs[i].hilo.hi.as_ptr().add(u * QK),
                    xs[i].hilo.lo.as_ptr().add(u * QK),
                );
                [
                    vld1q_s8(h),
                    vld1q_s8(h.add(16)),
                    vld1q_s8(l),
                    vld1q_s8(l.add(16)),
                ]
            });
            for r in 0..ROWS {
                let at = r * units + u;
                // SAFETY: row r's unit u lies in q (ROWS rows of k, sized by `fill`).
                let (w0, w1) = unsafe {
                    let p = self.q.as_ptr().add(r * k + u * QK);
                    (vld1q_s8(p), vld1q_s8(p.add(16)))
                };
                let (sums, sc, d, m) = (self.sums[at], self.sc[at], self.d[at], self.m[at]);
                for (i, [h0, h1, l0, l1]) in xv.iter().enumerate() {
                    // Each lane sums at most eight products of |w| <= 32 and |x| <= 128.
                    // SAFETY: the caller promises dotprod.
                    let sum: i64 = unsafe {
                        if sc == [1, 1] {
                            let hi = vaddvq_s32(sdot(sdot(zero, w0, *h0), w1, *h1)) as i64;
                            let lo = vaddvq_s32(sdot(sdot(zero, w0, *l0), w1, *l1)) as i64;
                            256 * hi + lo + 128 * (sums[0] + sums[1]) as i64
                        } else {
                            let half = |w, h, l, s: i32| {
                                256 * vaddvq_s32(sdot(zero, w, h)) as i64
                                    + vaddvq_s32(sdot(zero, w, l)) as i64
                                    + 128 * s as i64
                            };
                            sc[0] as i64 * half(w0, *h0, *l0, sums[0])
                                + sc[1] as i64 * half(w1, *h1, *l1, sums[1])
                        }
                    };
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

#[cfg(test)]
mod tests {
    use super::super::kernels;
    use super::super::neon_units::Decoded;
    use super::super::{CpuBackend, Linear, WeightData};
    use super::*;

    /// The dot-product kernels give the NEON kernels' results bit for bit (both sum each unit
    /// exactly in integers), for every type, weight and activation rows of either sign and
    /// size, one and several rows, short last groups and a bias.
    #[test]
    fn the_dotprod_kernels_give_the_neon_kernels_bits() {
        // No other test's kernels while the SIMD calls are counted there.
        let _alone = kernels::COUNT_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let all = kernels::available();
        let Some(dotprod) = all.iter().find(|k| k.units_sdot) else {
            if std::env::var_os("EDGECUT_EXPECT_DOTPROD").is_some() {
                panic!("EDGECUT_EXPECT_DOTPROD is set but this CPU has no dotprod set");
            }
            eprintln!("no dotprod on this CPU: the dot-product kernels are not compared here");
            return;
        };
        let neon = all.iter().find(|k| k.name == "neon").expect("the NEON set");
        let mut state = 0x1234_5678_9abc_def1u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for dtype in crate::quant::units::UNIT_TYPES {
            let (n, k) = (7, 512);
            let blocks = n * k / dtype.block_len();
            let w = crate::quant::units::random_blocks(dtype, blocks, next(), [0.02, -0.01]);
            let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.1 - 0.3).collect();
            let lin = Linear {
                w: WeightData::Blocks(dtype, &w),
                bias: Some(&bias),
                n,
                k,
                act: crate::ops::ActQuant::F32,
            };
            for m in [1, 2, 5] {
                // Magnitudes from 1e-3 to 1e3, both signs: every int16 value's halves.
                let x: Vec<f32> = (0..m * k)
                    .map(|_| {
                        let r = next();
                        let v = ((r >> 40) % 2001) as f32 - 1000.0;
                        v * 10f32.powi((r % 4) as i32 - 3)
                    })
                    .collect();
                let run = |ks: kernels::Kernels| {
                    let mut out = vec![0f32; m * n];
                    CpuBackend::with_kernels(ks, 2)
                        .split_everything()
                        .linear(&x, m, &lin, &mut out)
                        .unwrap();
                    out
                };
                let (a, b) = (run(*dotprod), run(*neon));
                assert!(
                    a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{dtype} m={m}: {a:?} vs {b:?}"
                );
                // The two kernels called directly on the same rows (the comparison above holds
                // only if the table sends each set to its own kernel: checked below).
                let mut act = ActRow::default();
                act.q.quantize(&x[..k]);
                act.hilo.split(&act.q);
                let rb = w.len() / n;
                let (mut d16, mut d8) = (Decoded::default(), Decoded8::default());
                // SAFETY: dotprod was detected (the set exists); NEON is the baseline.
                let (a, b) = unsafe {
                    d16.fill(dtype, &w, 4, rb, k);
                    d8.fill(dtype, &w, 4, rb, k);
                    let off = crate::quant::units::has_offsets(dtype);
                    (d8.dot::<1>([&act], off)[0], d16.dot::<1>([&act], off)[0])
                };
                assert!(
                    a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{dtype} direct: {a:?} vs {b:?}"
                );
            }
        }
        // Dispatch: on a thread of its own (a one-thread backend runs its tasks there), the
        // NEON set leaves the dot-product kernel's rows untouched and the dotprod set fills them.
        let (neon, dotprod) = (*neon, *dotprod);
        std::thread::spawn(move || {
            let dtype = DType::Q4_K;
            let (n, k) = (4, 256);
            let w = crate::quant::units::random_blocks(dtype, n * k / 256, 5, [0.02; 2]);
            let lin = Linear {
                w: WeightData::Blocks(dtype, &w),
                bias: None,
                n,
                k,
                act: crate::ops::ActQuant::F32,
            };
            let filled = || DECODED8.with_borrow(|d| d.units);
            let x = vec![0.25f32; k];
            let mut out = vec![0f32; n];
            CpuBackend::with_kernels(neon, 1)
                .linear(&x, 1, &lin, &mut out)
                .unwrap();
            assert_eq!(filled(), 0, "the NEON set ran the dot-product kernel");
            CpuBackend::with_kernels(dotprod, 1)
                .linear(&x, 1, &lin, &mut out)
                .unwrap();
            assert_eq!(
                filled(),
                k / QK,
                "the dotprod set did not run the dot-product kernel"
            );
        })
        .join()
        .unwrap();
    }
}

//! The few-row kernel of the f32-activation matmul on AVX-512 (several conversations decoded
//! together: one activation row each). Two weight rows are decoded a block at a time into
//! registers and multiplied with up to eight activation rows, so the decoded weights are never
//! stored and loaded again, and each activation load serves two weight rows.
//!
//! Measured against the buffered path ([`super::f32_avx512::decode_row`] into an L1 buffer,
//! then [`super::f32_avx512::dot4x4`]) in `cargo bench -p edgecut-backends --bench gemv`
//! (eight rows); figures in `docs/benchmarks.md`. Each dot product is summed in the order of
//! [`super::f32_avx512::dot4`] (16 lanes at a time along k, then `reduce4`) from the same
//! decoded weights, so the three kernels agree bit for bit.

use std::arch::x86_64::*;

use super::f32_avx512::{block, iota, layout, reduce4, scales, SCALE_GROUP};
use crate::quant::QK;
use crate::DType;

/// Activation rows one call multiplies at most.
pub const MAX_ROWS: usize = 8;

/// `out[i][r]`: the dot product of activation row `i` (`x[i * k..(i + 1) * k]`) with weight
/// row `r` of `w` (two rows of `row_bytes`, blocks of `dtype`: Q8_0, Q4_0 or Q4_1).
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL (see [`super::f32_avx512::available`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub unsafe fn dot2<const N: usize>(
    dtype: DType,
    w: &[u8],
    row_bytes: usize,
    x: &[f32],
    k: usize,
) -> [[f32; 2]; N] {
    let (bytes, qs) = layout(dtype);
    let nb = k / QK;
    assert!(
        N <= MAX_ROWS
            && k.is_multiple_of(QK)
            && row_bytes == nb * bytes
            && w.len() >= 2 * row_bytes
            && x.len() >= N * k,
        "dot2: bad lengths"
    );
    // SAFETY: AVX-512F is enabled in this function.
    let iota = unsafe { iota() };
    let mut acc = [[_mm512_setzero_ps(); 2]; N];
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut g = 0;
    while g < nb {
        let n = (nb - g).min(SCALE_GROUP);
        // SAFETY: blocks g..g + n of both rows are inside `w` (asserted), and activation
        // values (g + b) * 32 .. + 32 of rows 0..N inside `x`; the loads are unaligned ones.
        unsafe {
            let r0 = wp.add(g * bytes);
            let r1 = r0.add(row_bytes);
            let (d0, m0) = scales(dtype, r0, bytes, n);
            let (d1, m1) = scales(dtype, r1, bytes, n);
            for b in 0..n {
                let (w0l, w0h) = block(dtype, r0.add(b * bytes), qs, d0[b], m0[b], iota);
                let (w1l, w1h) = block(dtype, r1.add(b * bytes), qs, d1[b], m1[b], iota);
                let c = (g + b) * QK;
                for (i, a) in acc.iter_mut().enumerate() {
                    let xl = _mm512_loadu_ps(xp.add(i * k + c));
                    let xh = _mm512_loadu_ps(xp.add(i * k + c + 16));
                    a[0] = _mm512_fmadd_ps(w0l, xl, a[0]);
                    a[1] = _mm512_fmadd_ps(w1l, xl, a[1]);
                    a[0] = _mm512_fmadd_ps(w0h, xh, a[0]);
                    a[1] = _mm512_fmadd_ps(w1h, xh, a[1]);
                }
            }
        }
        g += n;
    }
    let mut out = [[0f32; 2]; N];
    let zero = _mm512_setzero_ps();
    let mut i = 0;
    // Plain loops, not closures: a closure does not inherit this function's instruction set.
    while i < N {
        if i + 1 < N {
            // SAFETY: AVX-512F is enabled in this function.
            let v = unsafe { reduce4([acc[i][0], acc[i][1], acc[i + 1][0], acc[i + 1][1]]) };
            out[i] = [v[0], v[1]];
            out[i + 1] = [v[2], v[3]];
        } else {
            // SAFETY: as above.
            let v = unsafe { reduce4([acc[i][0], acc[i][1], zero, zero]) };
            out[i] = [v[0], v[1]];
        }
        i += 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::f32_avx512::{available, decode_row, dot4};

    /// Random-looking but valid blocks: small normal f16 scales and offsets, any quants.
    fn blocks(dtype: DType, rows: usize, k: usize, seed: usize) -> Vec<u8> {
        let (bytes, qs) = layout(dtype);
        let v = |i: usize| (((i + seed) * 2654435761) >> 7) as u8;
        let mut w = vec![0u8; rows * k / QK * bytes];
        for (bi, b) in w.chunks_exact_mut(bytes).enumerate() {
            let f = |x: f32| half::f16::from_f32(x).to_le_bytes();
            b[..2].copy_from_slice(&f(0.01 + (v(bi) as f32) / 4096.0));
            if qs == 4 {
                b[2..4].copy_from_slice(&f(-0.05 + (v(bi + 9) as f32) / 8192.0));
            }
            for (j, q) in b[qs..].iter_mut().enumerate() {
                *q = v(bi * 31 + j);
            }
        }
        w
    }

    #[test]
    fn two_rows_in_registers_equal_the_buffered_kernels_bit_for_bit() {
        if !available() {
            return;
        }
        // k of 18 blocks (one partial scale group) and of 48 (two whole groups and a part).
        for dtype in [DType::Q8_0, DType::Q4_0, DType::Q4_1] {
            for k in [576, 1536] {
                let row_bytes = k / QK * layout(dtype).0;
                let w = blocks(dtype, 2, k, k);
                let x: Vec<f32> = (0..MAX_ROWS * k)
                    .map(|i| ((i * 7919) % 2001) as f32 / 500.0 - 2.0)
                    .collect();
                let mut dec = vec![0f32; 4 * k];
                for r in 0..2 {
                    // SAFETY: AVX-512 is available; row r holds k / 32 blocks.
                    unsafe {
                        decode_row(
                            dtype,
                            &w[r * row_bytes..(r + 1) * row_bytes],
                            &mut dec[r * k..(r + 1) * k],
                        )
                    };
                }
                // The decoded weights against a scalar decoding (the f16 values, then
                // d q + m in one rounding, as the table holds them).
                let (bytes, qs) = layout(dtype);
                for (bi, b) in w.chunks_exact(bytes).enumerate() {
                    let f = |i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
                    let d = f(0);
                    let m = match dtype {
                        DType::Q4_1 => f(2),
                        _ => -8.0 * d,
                    };
                    for c in 0..QK {
                        let want = match dtype {
                            DType::Q8_0 => b[qs + c] as i8 as f32 * d,
                            _ => {
                                let q = b[qs + c % 16];
                                let q = if c < 16 { q & 15 } else { q >> 4 };
                                (q as f32).mul_add(d, m)
                            }
                        };
                        let got = dec[bi / (k / QK) * k + bi % (k / QK) * QK + c];
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{dtype} block {bi} value {c}"
                        );
                    }
                }
                // SAFETY: as above; both hold what dot2 and dot4 ask.
                let eight = unsafe { dot2::<8>(dtype, &w, row_bytes, &x, k) };
                // SAFETY: as above.
                let one = unsafe { dot2::<1>(dtype, &w, row_bytes, &x[3 * k..], k) };
                assert_eq!(one[0].map(f32::to_bits), eight[3].map(f32::to_bits));
                for (i, got) in eight.iter().enumerate() {
                    let xr = &x[i * k..(i + 1) * k];
                    // SAFETY: as above.
                    let want = unsafe { dot4(&dec, xr) };
                    for r in 0..2 {
                        assert_eq!(
                            got[r].to_bits(),
                            want[r].to_bits(),
                            "{dtype} k {k} row {i} col {r}"
                        );
                        let exact: f64 = (0..k).map(|c| dec[r * k + c] as f64 * xr[c] as f64).sum();
                        assert!(
                            (got[r] as f64 - exact).abs() < 1e-3 * (1.0 + exact.abs()),
                            "{dtype} k {k} row {i} col {r}: {} vs {exact}",
                            got[r]
                        );
                    }
                }
            }
        }
    }
}

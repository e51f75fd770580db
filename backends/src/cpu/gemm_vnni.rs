//! The AVX-512 VNNI GEMM micro-kernel over [`PackedQ8_0`] weights: up to 4 activation rows x one
//! 32-column panel per call, int32 accumulation within each 32-value block, then one f32 FMA per
//! block with the weight and activation scales.

use std::arch::x86_64::*;

use super::packed::{PackedQ8_0, PANEL, PANEL_BLOCK_BYTES};
use crate::quant::QK;

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// `out[r][c] = sum_k x[r][k] * W[panel * 32 + c][k] + bias[c]` for `R` rows (`xu`: the
/// activations plus 128 as u8, `xd`: their per-block scales) and the first `out[r].len()` (at
/// most 32) columns of one panel.
///
/// # Safety
/// [`available`] is true; each `xu[r]` holds `k` bytes and each `xd[r]` `k / 32` floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn panel<const R: usize>(
    w: &PackedQ8_0,
    p: usize,
    xu: [&[u8]; R],
    xd: [&[f32]; R],
    out: [&mut [f32]; R],
    bias: Option<&[f32]>,
) {
    let kb = w.k / QK;
    assert!(p < w.panels && xu.iter().all(|x| x.len() >= w.k) && xd.iter().all(|d| d.len() >= kb));
    let cols = out.first().map_or(0, |o| o.len());
    assert!(cols <= PANEL && out.iter().all(|o| o.len() == cols));
    assert!(bias.is_none_or(|b| b.len() == cols));
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for b in 0..kb {
        let at = p * kb + b;
        let wp = w.data[at * PANEL_BLOCK_BYTES..(at + 1) * PANEL_BLOCK_BYTES].as_ptr();
        // SAFETY: `at * 32 + 32` is within `scales` and `sums` (one entry per panel column).
        let (s0, s1, c0, c1) = unsafe {
            let sp = w.scales.as_ptr().add(at * PANEL);
            let cp = w.sums.as_ptr().add(at * PANEL);
            (
                _mm512_loadu_ps(sp),
                _mm512_loadu_ps(sp.add(16)),
                _mm512_loadu_si512(cp as *const __m512i),
                _mm512_loadu_si512(cp.add(16) as *const __m512i),
            )
        };
        // Each block's sums start at -128 * sum(w), which cancels the activations' +128 offset.
        let mut iacc = [[c0, c1]; R];
        for g in 0..QK / 4 {
            // SAFETY: g < 8, so both 64-byte loads are inside this panel block's 1024 bytes.
            let (w0, w1) = unsafe {
                (
                    _mm512_loadu_si512(wp.add(g * PANEL * 4) as *const __m512i),
                    _mm512_loadu_si512(wp.add(g * PANEL * 4 + 64) as *const __m512i),
                )
            };
            for r in 0..R {
                // SAFETY: b * 32 + g * 4 + 4 <= k, which the assert above checked `xu[r]` holds.
                let x4 = unsafe {
                    std::ptr::read_unaligned(xu[r].as_ptr().add(b * QK + g * 4) as *const i32)
                };
                let xb = _mm512_set1_epi32(x4);
                iacc[r][0] = _mm512_dpbusd_epi32(iacc[r][0], xb, w0);
                iacc[r][1] = _mm512_dpbusd_epi32(iacc[r][1], xb, w1);
            }
        }
        for r in 0..R {
            // SAFETY: b < kb, and the assert above checked `xd[r]` holds kb scales.
            let dx = _mm512_set1_ps(unsafe { *xd[r].get_unchecked(b) });
            let f0 = _mm512_cvtepi32_ps(iacc[r][0]);
            let f1 = _mm512_cvtepi32_ps(iacc[r][1]);
            acc[r][0] = _mm512_fmadd_ps(f0, _mm512_mul_ps(s0, dx), acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(f1, _mm512_mul_ps(s1, dx), acc[r][1]);
        }
    }
    // Lanes of the two 16-column halves that exist in the output.
    let m0 = if cols >= 16 {
        0xffff
    } else {
        (1u16 << cols) - 1
    };
    let m1 = if cols > 16 {
        ((1u32 << (cols - 16)) - 1) as u16
    } else {
        0
    };
    let (b0, b1) = match bias {
        // SAFETY: masked loads touch only the `cols` floats of `b`.
        Some(b) => unsafe {
            (
                _mm512_maskz_loadu_ps(m0, b.as_ptr()),
                _mm512_maskz_loadu_ps(m1, b.as_ptr().wrapping_add(16)),
            )
        },
        None => (_mm512_setzero_ps(), _mm512_setzero_ps()),
    };
    for (r, o) in out.into_iter().enumerate() {
        // SAFETY: masked stores touch only the `cols` floats of row r.
        unsafe {
            _mm512_mask_storeu_ps(o.as_mut_ptr(), m0, _mm512_add_ps(acc[r][0], b0));
            _mm512_mask_storeu_ps(
                o.as_mut_ptr().wrapping_add(16),
                m1,
                _mm512_add_ps(acc[r][1], b1),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::Q8_0_BYTES;

    /// Whether the kernel can run here ([`super::super::x86::runs_here`]).
    pub(crate) fn runs_here(what: &str) -> bool {
        super::super::x86::runs_here(available(), what)
    }

    /// Integers in `[-127, 127]` from a small generator.
    fn ints(n: usize, seed: u64) -> Vec<i8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (((s >> 33) % 255) as i32 - 127) as i8
            })
            .collect()
    }

    #[test]
    fn the_panel_equals_exact_integer_arithmetic() {
        if !runs_here("the VNNI GEMM panel") {
            return;
        }
        // Scales that are powers of two, equal for every block: each block's int32 sum times
        // 2^-5 and the sum over blocks are exact in f32, whatever the order, so the kernel
        // must give the integer result bit for bit.
        let (n, k) = (39, 256);
        let kb = k / QK;
        let wq = ints(n * k, 1);
        let mut w = Vec::with_capacity(n * kb * Q8_0_BYTES);
        for j in 0..n {
            for b in 0..kb {
                w.extend_from_slice(&half::f16::from_f32(0.125).to_le_bytes());
                w.extend(wq[j * k + b * QK..][..QK].iter().map(|&q| q as u8));
            }
        }
        let packed = PackedQ8_0::pack(&w, n, k);
        let xq: Vec<Vec<i8>> = (0..4).map(|r| ints(k, 10 + r)).collect();
        let xu: Vec<Vec<u8>> = xq
            .iter()
            .map(|r| r.iter().map(|&q| (q as i32 + 128) as u8).collect())
            .collect();
        let xd = vec![0.25f32; kb];
        let bias: Vec<f32> = (0..PANEL).map(|c| c as f32 * 0.03125 - 0.5).collect();
        let want = |r: usize, j: usize, with_bias: bool| {
            let s: i64 = (0..k).map(|c| wq[j * k + c] as i64 * xq[r][c] as i64).sum();
            s as f32 / 32.0 + if with_bias { bias[j % PANEL] } else { 0.0 }
        };
        for p in 0..packed.panels {
            let cols = (n - p * PANEL).min(PANEL);
            for with_bias in [false, true] {
                let mut out = [[0f32; PANEL]; 4];
                let [o0, o1, o2, o3] = &mut out;
                let b = with_bias.then(|| &bias[..cols]);
                // SAFETY: `available()` held; each row holds k bytes and kb scales.
                unsafe {
                    panel::<4>(
                        &packed,
                        p,
                        [&xu[0], &xu[1], &xu[2], &xu[3]],
                        [&xd, &xd, &xd, &xd],
                        [
                            &mut o0[..cols],
                            &mut o1[..cols],
                            &mut o2[..cols],
                            &mut o3[..cols],
                        ],
                        b,
                    )
                };
                for (r, row) in out.iter().enumerate() {
                    for (c, &v) in row[..cols].iter().enumerate() {
                        let j = p * PANEL + c;
                        assert_eq!(v, want(r, j, with_bias), "row {r}, column {j}");
                    }
                    assert!(row[cols..].iter().all(|&v| v == 0.0), "past the panel");
                }
            }
        }
    }
}

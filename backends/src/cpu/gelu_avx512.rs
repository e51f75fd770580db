//! GELU and CLIP's quick GELU in AVX-512. GELU: the same rational erf as [`erf`](super::erf) (Eigen's coefficients), with
//! fused multiply-adds and a reciprocal refined by one Newton step instead of a division (the
//! division alone took half of the autovectorised loop's time). Relative error of the
//! reciprocal below 1e-7, so results stay within a few f32 ulps of [`gelu_scalar`](super::gelu_scalar).

use std::arch::x86_64::*;

/// Whether this CPU can run [`gelu`].
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// `x * (1 + erf(x / sqrt(2))) / 2` in place.
///
/// # Safety
/// [`available`] is true.
#[target_feature(enable = "avx512f")]
pub unsafe fn gelu(x: &mut [f32]) {
    map16(x, |v| gelu16(v));
}

/// `x[i] = f(x[i])`, 16 values at a time, the last few through a masked load and store.
#[inline]
#[target_feature(enable = "avx512f")]
fn map16(x: &mut [f32], f: impl Fn(__m512) -> __m512) {
    let (n, p) = (x.len(), x.as_mut_ptr());
    let full = n / 16 * 16;
    for i in (0..full).step_by(16) {
        // SAFETY: i + 16 <= n.
        unsafe { _mm512_storeu_ps(p.add(i), f(_mm512_loadu_ps(p.add(i)))) };
    }
    if full < n {
        let m: __mmask16 = (1 << (n - full)) - 1;
        // SAFETY: the masked load and store touch only values full..n.
        unsafe {
            let v = _mm512_maskz_loadu_ps(m, p.add(full));
            _mm512_mask_storeu_ps(p.add(full), m, f(v));
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn gelu16(v: __m512) -> __m512 {
    let s = |c: f32| _mm512_set1_ps(c);
    let x = _mm512_mul_ps(v, s(std::f32::consts::FRAC_1_SQRT_2));
    let x = _mm512_min_ps(_mm512_max_ps(x, s(-4.0)), s(4.0));
    let x2 = _mm512_mul_ps(x, x);
    let mut p = s(-2.726_142_3e-10);
    for c in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_600_1e-3,
        -1.609_603_3e-2,
    ] {
        p = _mm512_fmadd_ps(p, x2, s(c));
    }
    let mut q = s(-1.456_607_2e-5);
    for c in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        q = _mm512_fmadd_ps(q, x2, s(c));
    }
    // q <= -1.4e-2 on the clamped range: its reciprocal is well conditioned.
    let r = _mm512_rcp14_ps(q);
    let r = _mm512_mul_ps(r, _mm512_fnmadd_ps(q, r, s(2.0)));
    let erf = _mm512_mul_ps(_mm512_mul_ps(x, p), r);
    let h = _mm512_mul_ps(v, s(0.5));
    _mm512_fmadd_ps(h, erf, h)
}

/// `x * sigmoid(1.702 x)` (CLIP's quick GELU) in place: `exp` as [`exp16`], the reciprocal as
/// in [`gelu`] (libm's scalar `expf` per value was 5% of a CLIP picture).
///
/// # Safety
/// [`available`] is true.
#[target_feature(enable = "avx512f")]
pub unsafe fn quick_gelu(x: &mut [f32]) {
    map16(x, |v| quick16(v));
}

#[inline]
#[target_feature(enable = "avx512f")]
fn quick16(v: __m512) -> __m512 {
    let arg = _mm512_mul_ps(v, _mm512_set1_ps(-1.702));
    let q = _mm512_add_ps(_mm512_set1_ps(1.0), exp16(arg));
    // q >= 1: rcp14 and one Newton step (relative error 2^-28).
    let r = _mm512_rcp14_ps(q);
    let r = _mm512_mul_ps(r, _mm512_fnmadd_ps(q, r, _mm512_set1_ps(2.0)));
    // Where e^arg passes 1.6e38 (x below -51.7) the result is below 4e-37: 0, as x / inf is
    // for libm (the clamped exp would leave x / 3.4e38, not 0, for huge x).
    let huge = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(arg, _mm512_set1_ps(88.0));
    _mm512_maskz_mul_ps(!huge, v, r)
}

/// `e^x` of 16 values, Cephes' `expf`: `x = n ln 2 + r` (ln 2 in two parts), a degree-6
/// polynomial of `r` on |r| <= ln 2 / 2, times `2^n` (`vscalefps`); `x` clamped to
/// [-87.3, 88.7], where `e^x` is a normal f32. Within 2 ulps of the exact value.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn exp16(x: __m512) -> __m512 {
    let s = |c: f32| _mm512_set1_ps(c);
    let x = _mm512_min_ps(_mm512_max_ps(x, s(-87.336_54)), s(88.722_83));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, s(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, s(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, s(-2.121_944_4e-4), r);
    let mut p = s(1.987_569_1e-4);
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm512_fmadd_ps(p, r, s(c));
    }
    let y = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, s(1.0)));
    _mm512_scalef_ps(y, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_gelu_matches_f64() {
        if !available() {
            return;
        }
        // Every 1/64 over [-100, 100] and a few extremes, against f64 from the f32 argument
        // `-1.702 x` (its rounding is the scalar formula's too: up to 2e-6 of the result where
        // the argument is near 60); relative 1e-6, or absolute 1e-30 for tiny results.
        let mut x: Vec<f32> = (-6400..=6400).map(|i| i as f32 / 64.0).collect();
        x.extend([-1e30, -1e6, -60.0, 60.0, 1e6, 1e30, 0.0, -0.0, 1e-30]);
        let want: Vec<f64> = x
            .iter()
            .map(|&v| v as f64 / (1.0 + ((-1.702f32 * v) as f64).exp()))
            .collect();
        let mut got = x.clone();
        // SAFETY: AVX-512F was detected.
        unsafe { quick_gelu(&mut got) };
        for ((g, w), x) in got.iter().zip(&want).zip(&x) {
            let err = (*g as f64 - w).abs();
            assert!(err <= (1e-6 * w.abs()).max(1e-30), "x = {x}: {g} vs {w}");
        }
    }

    #[test]
    fn exp16_within_two_ulps() {
        if !available() {
            return;
        }
        for i in -8733..=8872 {
            let x = i as f32 / 100.0;
            // SAFETY: AVX-512F was detected.
            let got = unsafe {
                let mut o = [0f32; 16];
                _mm512_storeu_ps(o.as_mut_ptr(), exp16(_mm512_set1_ps(x)));
                o[0]
            };
            let want = (x as f64).exp();
            let ulp = (want as f32).abs() * f32::EPSILON;
            assert!(
                ((got as f64) - want).abs() <= 2.0 * ulp as f64,
                "exp({x}) = {got}, want {want}"
            );
        }
    }
}

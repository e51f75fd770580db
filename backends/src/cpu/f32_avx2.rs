//! The f32 products of the f32-activation matmul on AVX2 with FMA: weight rows decoded to f32
//! (four at a time, into an L1 buffer) times activation rows. [`dot4x3`] is the prompt kernel:
//! three activation rows against four weight rows, twelve accumulators (enough to cover the FMA
//! latency on two ports) and seven loads per twelve multiply-adds, so it is bound by the FMA
//! ports, not the loads. [`dot4x2`] and [`dot4`] serve the last rows and sum in the same order,
//! bit for bit.

use std::arch::x86_64::*;

/// Whether this CPU can run these kernels.
pub fn available() -> bool {
    super::multiversion::avx2()
}

/// The sums of four vectors' lanes, as one transposing tree ([`dot4`] and [`dot4x2`] both
/// reduce by it, so they agree bit for bit).
///
/// # Safety
/// The CPU must have AVX2.
#[inline(always)]
unsafe fn reduce4(a: [__m256; 4]) -> [f32; 4] {
    // SAFETY: register-only AVX operations (the caller's instruction set).
    unsafe {
        // Pairwise horizontal adds: [a0 01 23, a1 01 23, a0 45 67, a1 45 67] per 128-bit half.
        let s01 = _mm256_hadd_ps(a[0], a[1]);
        let s23 = _mm256_hadd_ps(a[2], a[3]);
        let s = _mm256_hadd_ps(s01, s23);
        // Low half: lanes 0-3 of each row, high half: lanes 4-7.
        let t = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
        let mut v = [0f32; 4];
        _mm_storeu_ps(v.as_mut_ptr(), t);
        v
    }
}

/// Dot products of four rows `w[r * k..(r + 1) * k]` with `x` (`k` values, a multiple of 8).
///
/// # Safety
/// The CPU must have AVX2 and FMA (see [`available`]).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot4(w: &[f32], x: &[f32]) -> [f32; 4] {
    let k = x.len();
    assert!(w.len() >= 4 * k && k.is_multiple_of(8), "dot4: bad lengths");
    let mut a = [_mm256_setzero_ps(); 4];
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let mut c = 0;
    while c < k {
        // SAFETY: c + 8 <= k, and row r's values r * k + c .. + 8 are inside `w` (asserted).
        unsafe {
            let xv = _mm256_loadu_ps(xp.add(c));
            for (r, a) in a.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(wp.add(r * k + c)), xv, *a);
            }
        }
        c += 8;
    }
    // SAFETY: AVX2 is enabled in this function.
    unsafe { reduce4(a) }
}

/// [`dot4`] of two activation rows at once: `out[i][r]` is activation row `i` (`x[i * k..]`)
/// times weight row `r` (`w[r * k..]`), bit for bit what [`dot4`] gives for row `i` alone.
///
/// # Safety
/// The CPU must have AVX2 and FMA (see [`available`]); `w` holds `4 * k` values, `x` `2 * k`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot4x2(w: &[f32], x: &[f32], k: usize) -> [[f32; 4]; 2] {
    assert!(
        w.len() >= 4 * k && x.len() >= 2 * k && k.is_multiple_of(8),
        "dot4x2: bad lengths"
    );
    let mut acc = [[_mm256_setzero_ps(); 4]; 2];
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let mut c = 0;
    while c < k {
        // SAFETY: c + 8 <= k, and rows 0..4 of `w` and 0..2 of `x` hold k values (asserted).
        unsafe {
            let x0 = _mm256_loadu_ps(xp.add(c));
            let x1 = _mm256_loadu_ps(xp.add(k + c));
            let [a0, a1] = &mut acc;
            for (r, (a0, a1)) in a0.iter_mut().zip(a1.iter_mut()).enumerate() {
                let wv = _mm256_loadu_ps(wp.add(r * k + c));
                *a0 = _mm256_fmadd_ps(wv, x0, *a0);
                *a1 = _mm256_fmadd_ps(wv, x1, *a1);
            }
        }
        c += 8;
    }
    // SAFETY: AVX2 is enabled in this function.
    unsafe { [reduce4(acc[0]), reduce4(acc[1])] }
}

/// [`dot4`] of three activation rows at once (twelve accumulators, seven loads per twelve
/// multiply-adds): the prompt kernel's main tile, bit for bit [`dot4`] for each row.
///
/// # Safety
/// The CPU must have AVX2 and FMA (see [`available`]); `w` holds `4 * k` values, `x` `3 * k`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot4x3(w: &[f32], x: &[f32], k: usize) -> [[f32; 4]; 3] {
    assert!(
        w.len() >= 4 * k && x.len() >= 3 * k && k.is_multiple_of(8),
        "dot4x3: bad lengths"
    );
    let mut acc = [[_mm256_setzero_ps(); 4]; 3];
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let mut c = 0;
    while c < k {
        // SAFETY: c + 8 <= k, and rows 0..4 of `w` and 0..3 of `x` hold k values (asserted).
        unsafe {
            let x0 = _mm256_loadu_ps(xp.add(c));
            let x1 = _mm256_loadu_ps(xp.add(k + c));
            let x2 = _mm256_loadu_ps(xp.add(2 * k + c));
            let [a0, a1, a2] = &mut acc;
            for (r, ((a0, a1), a2)) in a0
                .iter_mut()
                .zip(a1.iter_mut())
                .zip(a2.iter_mut())
                .enumerate()
            {
                let wv = _mm256_loadu_ps(wp.add(r * k + c));
                *a0 = _mm256_fmadd_ps(wv, x0, *a0);
                *a1 = _mm256_fmadd_ps(wv, x1, *a1);
                *a2 = _mm256_fmadd_ps(wv, x2, *a2);
            }
        }
        c += 8;
    }
    // SAFETY: AVX2 is enabled in this function.
    unsafe { [reduce4(acc[0]), reduce4(acc[1]), reduce4(acc[2])] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_and_three_rows_at_once_equal_one_at_a_time_bit_for_bit() {
        if !available() {
            return;
        }
        let k = 104;
        let val = |s: usize| ((s * 2654435761) % 1000) as f32 / 250.0 - 2.0;
        let w: Vec<f32> = (0..4 * k).map(val).collect();
        let x: Vec<f32> = (0..3 * k).map(|i| val(i + 77)).collect();
        // SAFETY: AVX2/FMA are available (checked); w holds 4 rows of k, x 3, k % 8 == 0.
        let (two, three) = unsafe { (dot4x2(&w, &x, k), dot4x3(&w, &x, k)) };
        assert_eq!(two[..], three[..2]);
        for (i, row) in three.iter().enumerate() {
            // SAFETY: as above, with one activation row.
            let one = unsafe { dot4(&w, &x[i * k..(i + 1) * k]) };
            assert_eq!(row.map(f32::to_bits), one.map(f32::to_bits), "row {i}");
            for (r, &v) in row.iter().enumerate() {
                let want: f64 = (0..k)
                    .map(|c| w[r * k + c] as f64 * x[i * k + c] as f64)
                    .sum();
                assert!(
                    (v as f64 - want).abs() < 1e-3,
                    "row {i} col {r}: {v} vs {want}"
                );
            }
        }
    }
}

//! x86-64 kernels: AVX2 (with FMA and F16C) and AVX-512 VNNI (256-bit `vpdpbusd`).
//!
//! Both use the sign trick for the u8 x i8 instructions: `|x| * (w * sign(x)) == x * w`. The
//! activation quantizer never produces -128, so `|x|` fits in a u8 lane; a weight of -128 (which
//! ggml's quantizer never writes either) would wrap when negated.

use std::arch::x86_64::*;

use super::kernels::Kernels;
use crate::quant::{Q8_0_BYTES, QK};

/// The sets this CPU supports, best first.
pub fn available() -> Vec<Kernels> {
    let mut v = Vec::new();
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    if avx2 && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
        v.push(Kernels {
            name: "avx512vnni",
            dot_q8_0: dot_q8_0_vnni,
        });
    }
    if avx2 {
        v.push(Kernels {
            name: "avx2",
            dot_q8_0: dot_q8_0_avx2,
        });
    }
    v
}

fn check(w: &[u8], xq: &[i8], xd: &[f32]) -> usize {
    let nb = xd.len();
    assert!(
        w.len() >= nb * Q8_0_BYTES && xq.len() >= nb * QK,
        "dot_q8_0: short input"
    );
    nb
}

// The safe wrappers are only reachable through the table `available` builds after detecting
// the features they need.
fn dot_q8_0_avx2(w: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    let nb = check(w, xq, xd);
    // SAFETY: AVX2, FMA and F16C were detected before this function was put in a table, and
    // `check` proved the slices hold `nb` blocks.
    unsafe { dot_avx2(w.as_ptr(), xq.as_ptr(), xd.as_ptr(), nb) }
}

fn dot_q8_0_vnni(w: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    let nb = check(w, xq, xd);
    // SAFETY: AVX-512 VNNI/VL, AVX2, FMA and F16C were detected before this function was put in
    // a table, and `check` proved the slices hold `nb` blocks.
    unsafe { dot_vnni(w.as_ptr(), xq.as_ptr(), xd.as_ptr(), nb) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_scale(p: *const u8) -> f32 {
    // SAFETY: the caller passes a pointer to a block's 2-byte scale inside the slice.
    let bits = unsafe { std::ptr::read_unaligned(p as *const u16) };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// # Safety
/// `w` holds `nb` Q8_0 blocks, `xq` `nb * 32` bytes, `xd` `nb` floats; AVX2/FMA/F16C present.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2(w: *const u8, xq: *const i8, xd: *const f32, nb: usize) -> f32 {
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    for b in 0..nb {
        // SAFETY: b < nb, so every read below is inside the blocks the caller vouched for.
        unsafe {
            let blk = w.add(b * Q8_0_BYTES);
            let wv = _mm256_loadu_si256(blk.add(2) as *const __m256i);
            let xv = _mm256_loadu_si256(xq.add(b * QK) as *const __m256i);
            let ax = _mm256_sign_epi8(xv, xv);
            let sw = _mm256_sign_epi8(wv, xv);
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), ones);
            let scale = _mm256_set1_ps(f16_scale(blk) * *xd.add(b));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc);
        }
    }
    hsum(acc)
}

/// # Safety
/// As [`dot_avx2`], and AVX-512 VNNI with VL present.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn dot_vnni(w: *const u8, xq: *const i8, xd: *const f32, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for b in 0..nb {
        // SAFETY: b < nb, so every read below is inside the blocks the caller vouched for.
        unsafe {
            let blk = w.add(b * Q8_0_BYTES);
            let wv = _mm256_loadu_si256(blk.add(2) as *const __m256i);
            let xv = _mm256_loadu_si256(xq.add(b * QK) as *const __m256i);
            let ax = _mm256_sign_epi8(xv, xv);
            let sw = _mm256_sign_epi8(wv, xv);
            let p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sw);
            let scale = _mm256_set1_ps(f16_scale(blk) * *xd.add(b));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc);
        }
    }
    hsum(acc)
}

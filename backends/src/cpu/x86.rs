//! x86-64 kernels: AVX2 (with FMA and F16C) and AVX-512 VNNI (256-bit `vpdpbusd`).
//!
//! Both use the sign trick for the u8 x i8 instructions: `|x| * (w * sign(x)) == x * w`. The
//! activation quantizer never produces -128, so `|x|` fits in a u8 lane; a weight of -128 (which
//! ggml's quantizer never writes either) would wrap when negated.

use std::arch::x86_64::*;

use super::kernels::Kernels;
use crate::quant::{Q8_0_BYTES, QK};

/// The sets this CPU supports, best first, each plugging its kernels into the table's slots
/// after detecting the features they need.
pub fn available() -> Vec<Kernels> {
    let mut v = Vec::new();
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    if !avx2 {
        return v;
    }
    let plain = Kernels {
        name: "avx2",
        dot_q8_0: dot_q8_0_avx2,
        dot4_q8_0: dot4_q8_0_avx2,
        dot4x2_q8_0: Some(dot4x2_q8_0_avx2),
        wide_avx2: super::multiversion::avx2(),
        f32_linear_avx2: super::f32_avx2::available(),
        gemv_i16_avx2: super::gemv_i16_avx2::available(),
        attention_f16_avx2: super::attn_avx2::available(),
        ..super::kernels::SCALAR
    };
    let wide = super::multiversion::avx512();
    // The AVX-512 slots that need no VNNI.
    let avx512 = Kernels {
        name: "avx512",
        wide,
        act_quant: super::act_quant::avx512_available(),
        gelu: super::gelu_avx512::available(),
        f32_linear: super::f32_avx512::available(),
        attention_f32: super::attn_avx512::available(),
        attention_f16: super::attn_f16::available(),
        ..plain
    };
    if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
        v.push(Kernels {
            name: "avx512vnni",
            dot_q8_0: dot_q8_0_vnni,
            dot4_q8_0: dot4_q8_0_vnni,
            dot4x2_q8_0: Some(dot4x2_q8_0_vnni),
            gemm_vnni: super::gemm_vnni::available(),
            gemv_i16: super::gemv_i16::available(),
            gemm_i16: super::gemm_i16::available(),
            attention_bf16: super::attn_bf16::available(),
            ..avx512
        });
    } else if wide {
        // AVX-512 without VNNI (Skylake-SP): the f32 and elementwise kernels, AVX2 products.
        v.push(avx512);
    }
    v.push(plain);
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

fn check4(w: &[&[u8]; 4], xq: &[i8], xd: &[f32]) -> usize {
    let nb = xd.len();
    assert!(
        w.iter().all(|w| w.len() >= nb * Q8_0_BYTES) && xq.len() >= nb * QK,
        "dot4_q8_0: short input"
    );
    nb
}

fn dot4_q8_0_avx2(w: [&[u8]; 4], xq: &[i8], xd: &[f32]) -> [f32; 4] {
    let nb = check4(&w, xq, xd);
    let p = w.map(<[u8]>::as_ptr);
    // SAFETY: AVX2, FMA and F16C were detected before this function was put in a table, and
    // `check4` proved every slice holds `nb` blocks.
    unsafe { dot4::<false>(p, xq.as_ptr(), xd.as_ptr(), nb) }
}

fn dot4_q8_0_vnni(w: [&[u8]; 4], xq: &[i8], xd: &[f32]) -> [f32; 4] {
    let nb = check4(&w, xq, xd);
    let p = w.map(<[u8]>::as_ptr);
    // SAFETY: AVX-512 VNNI/VL, AVX2, FMA and F16C were detected before this function was put
    // in a table, and `check4` proved every slice holds `nb` blocks.
    unsafe { dot4_vnni(p, xq.as_ptr(), xd.as_ptr(), nb) }
}

fn check4x2(w: &[&[u8]; 4], xq: &[&[i8]; 2], xd: &[&[f32]; 2]) -> usize {
    let nb = xd[0].len();
    assert!(
        xd[1].len() == nb
            && w.iter().all(|w| w.len() >= nb * Q8_0_BYTES)
            && xq.iter().all(|x| x.len() >= nb * QK),
        "dot4x2_q8_0: short input"
    );
    nb
}

fn dot4x2_q8_0_avx2(w: [&[u8]; 4], xq: [&[i8]; 2], xd: [&[f32]; 2]) -> [[f32; 4]; 2] {
    let nb = check4x2(&w, &xq, &xd);
    let (p, x, d) = (
        w.map(<[u8]>::as_ptr),
        xq.map(<[i8]>::as_ptr),
        xd.map(<[f32]>::as_ptr),
    );
    // SAFETY: AVX2, FMA and F16C were detected before this function was put in a table, and
    // `check4x2` proved every slice holds `nb` blocks.
    unsafe { dot4x2::<false>(p, x, d, nb) }
}

fn dot4x2_q8_0_vnni(w: [&[u8]; 4], xq: [&[i8]; 2], xd: [&[f32]; 2]) -> [[f32; 4]; 2] {
    let nb = check4x2(&w, &xq, &xd);
    let (p, x, d) = (
        w.map(<[u8]>::as_ptr),
        xq.map(<[i8]>::as_ptr),
        xd.map(<[f32]>::as_ptr),
    );
    // SAFETY: AVX-512 VNNI/VL, AVX2, FMA and F16C were detected before this function was put
    // in a table, and `check4x2` proved every slice holds `nb` blocks.
    unsafe { dot4x2_vnni(p, x, d, nb) }
}

/// Products of `|x|` (u8 lanes) and `w * sign(x)` (i8 lanes), summed in fours into i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn madd_avx2(ax: __m256i, sw: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), _mm256_set1_epi16(1))
}

#[inline]
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
fn madd_vnni(ax: __m256i, sw: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sw)
}

/// # Safety
/// Each `w[r]` holds `nb` Q8_0 blocks, `xq` `nb * 32` bytes, `xd` `nb` floats; AVX2/FMA/F16C
/// present (and AVX-512 VNNI/VL when `VNNI`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4<const VNNI: bool>(
    w: [*const u8; 4],
    xq: *const i8,
    xd: *const f32,
    nb: usize,
) -> [f32; 4] {
    let mut acc = [_mm256_setzero_ps(); 4];
    for b in 0..nb {
        // SAFETY: b < nb, so every read is inside the blocks the caller vouched for.
        unsafe {
            let xv = _mm256_loadu_si256(xq.add(b * QK) as *const __m256i);
            let ax = _mm256_sign_epi8(xv, xv);
            let dx = *xd.add(b);
            for r in 0..4 {
                let blk = w[r].add(b * Q8_0_BYTES);
                let wv = _mm256_loadu_si256(blk.add(2) as *const __m256i);
                let sw = _mm256_sign_epi8(wv, xv);
                let p = if VNNI {
                    madd_vnni_unchecked(ax, sw)
                } else {
                    madd_avx2(ax, sw)
                };
                let scale = _mm256_set1_ps(f16_scale(blk) * dx);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc[r]);
            }
        }
    }
    acc.map(|a| hsum(a))
}

/// [`dot4`] for two activation rows at once: each weight block is loaded, and its scale
/// converted, once for both rows (the GEMM's rows come in pairs). Every output is computed as
/// [`dot4`] computes it, so the bits are the same.
///
/// # Safety
/// As [`dot4`], for both activation rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4x2<const VNNI: bool>(
    w: [*const u8; 4],
    xq: [*const i8; 2],
    xd: [*const f32; 2],
    nb: usize,
) -> [[f32; 4]; 2] {
    let mut acc = [[_mm256_setzero_ps(); 4]; 2];
    for b in 0..nb {
        // SAFETY: b < nb, so every read is inside the blocks the caller vouched for.
        unsafe {
            let xv = xq.map(|x| _mm256_loadu_si256(x.add(b * QK) as *const __m256i));
            let ax = xv.map(|v| _mm256_sign_epi8(v, v));
            let dx = xd.map(|d| *d.add(b));
            for r in 0..4 {
                let blk = w[r].add(b * Q8_0_BYTES);
                let wv = _mm256_loadu_si256(blk.add(2) as *const __m256i);
                let dw = f16_scale(blk);
                for a in 0..2 {
                    let sw = _mm256_sign_epi8(wv, xv[a]);
                    let p = if VNNI {
                        madd_vnni_unchecked(ax[a], sw)
                    } else {
                        madd_avx2(ax[a], sw)
                    };
                    let scale = _mm256_set1_ps(dw * dx[a]);
                    acc[a][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc[a][r]);
                }
            }
        }
    }
    acc.map(|row| row.map(|a| hsum(a)))
}

/// # Safety
/// As [`dot4x2`], with AVX-512 VNNI/VL present.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn dot4x2_vnni(
    w: [*const u8; 4],
    xq: [*const i8; 2],
    xd: [*const f32; 2],
    nb: usize,
) -> [[f32; 4]; 2] {
    // SAFETY: forwarded contract; the features `dot4x2::<true>` needs are enabled here.
    unsafe { dot4x2::<true>(w, xq, xd, nb) }
}

/// # Safety
/// Only called from `dot4::<true>`, which runs only where AVX-512 VNNI/VL were detected.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn madd_vnni_unchecked(ax: __m256i, sw: __m256i) -> __m256i {
    // SAFETY: the caller guarantees AVX-512 VNNI/VL are present.
    unsafe { madd_vnni(ax, sw) }
}

/// # Safety
/// As [`dot4`], with AVX-512 VNNI/VL present.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn dot4_vnni(w: [*const u8; 4], xq: *const i8, xd: *const f32, nb: usize) -> [f32; 4] {
    // SAFETY: forwarded contract; the features `dot4::<true>` needs are enabled here.
    unsafe { dot4::<true>(w, xq, xd, nb) }
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

/// One row: [`dot4`]'s loop for a single weight row.
///
/// # Safety
/// `w` holds `nb` Q8_0 blocks, `xq` `nb * 32` bytes, `xd` `nb` floats; AVX2/FMA/F16C present
/// (and AVX-512 VNNI/VL when `VNNI`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot1<const VNNI: bool>(w: *const u8, xq: *const i8, xd: *const f32, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for b in 0..nb {
        // SAFETY: b < nb, so every read below is inside the blocks the caller vouched for, and
        // the VNNI path is only taken where the caller vouched for VNNI.
        unsafe {
            let blk = w.add(b * Q8_0_BYTES);
            let wv = _mm256_loadu_si256(blk.add(2) as *const __m256i);
            let xv = _mm256_loadu_si256(xq.add(b * QK) as *const __m256i);
            let ax = _mm256_sign_epi8(xv, xv);
            let sw = _mm256_sign_epi8(wv, xv);
            let p = if VNNI {
                madd_vnni_unchecked(ax, sw)
            } else {
                madd_avx2(ax, sw)
            };
            let scale = _mm256_set1_ps(f16_scale(blk) * *xd.add(b));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc);
        }
    }
    hsum(acc)
}

/// # Safety
/// As [`dot1`], with AVX2/FMA/F16C present.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2(w: *const u8, xq: *const i8, xd: *const f32, nb: usize) -> f32 {
    // SAFETY: forwarded contract.
    unsafe { dot1::<false>(w, xq, xd, nb) }
}

/// # Safety
/// As [`dot1`], with AVX-512 VNNI/VL present.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn dot_vnni(w: *const u8, xq: *const i8, xd: *const f32, nb: usize) -> f32 {
    // SAFETY: forwarded contract; the features `dot1::<true>` needs are enabled here.
    unsafe { dot1::<true>(w, xq, xd, nb) }
}

/// For tests of kernels this CPU may lack: whether the kernel (`ok`: its features are here) can
/// run; where the environment says AVX-512 is expected (`EDGECUT_EXPECT_AVX512`), not being able
/// to is a failure, not a skip.
#[cfg(test)]
pub(crate) fn runs_here(ok: bool, what: &str) -> bool {
    if !ok {
        assert!(
            std::env::var_os("EDGECUT_EXPECT_AVX512").is_none(),
            "EDGECUT_EXPECT_AVX512 is set, yet {what} cannot run on this CPU"
        );
        println!("{what}: its AVX-512 features are missing on this CPU; not run");
    }
    ok
}

//! aarch64 kernels: baseline NEON (every aarch64 CPU), the dot-product extension (`sdot`, Armv8.2
//! dotprod: four int8 products summed into each int32 lane) and the int8 matrix multiply
//! extension (`smmla`, Armv8.6 i8mm: a 2x8 by 8x2 int8 product into a 2x2 int32 tile, twice
//! `sdot`'s work per instruction), each chosen at run time where the CPU has it.
//!
//! The `sdot` and `smmla` intrinsics are not stable Rust yet, so those two instructions are
//! written as inline assembly inside functions compiled for the feature; everything else uses
//! the stable NEON intrinsics. Every kernel sums a block's int8 products exactly in int32 and
//! then adds `sum * weight scale * activation scale` in f32 in block order, as the scalar
//! reference does, so all of them give the scalar reference's results bit for bit.

use std::arch::aarch64::*;
use std::arch::asm;

use super::kernels::Kernels;
use crate::quant::{Q8_0_BYTES, QK};

/// The sets this CPU supports, best first.
pub fn available() -> Vec<Kernels> {
    let neon = Kernels {
        name: "neon",
        dot_q8_0: dot_q8_0_neon,
        dot4_q8_0: dot4_q8_0_neon,
        units_neon: true,
        ..super::kernels::SCALAR
    };
    let mut v = Vec::new();
    if std::arch::is_aarch64_feature_detected!("dotprod") {
        let dotprod = Kernels {
            name: "dotprod",
            dot_q8_0: dot_q8_0_sdot,
            dot4_q8_0: dot4_q8_0_sdot,
            units_sdot: true,
            ..neon
        };
        if std::arch::is_aarch64_feature_detected!("i8mm") {
            v.push(Kernels {
                name: "i8mm",
                dot4x2_q8_0: Some(dot4x2_q8_0_smmla),
                ..dotprod
            });
        }
        v.push(dotprod);
    }
    v.push(neon);
    v
}

/// The number of blocks, after checking that every operand holds them.
fn blocks(w: &[&[u8]], xq: &[&[i8]], xd: &[&[f32]]) -> usize {
    let nb = xd[0].len();
    assert!(
        w.iter().all(|w| w.len() >= nb * Q8_0_BYTES)
            && xq.iter().all(|x| x.len() >= nb * QK)
            && xd.iter().all(|d| d.len() >= nb),
        "dot_q8_0: short input"
    );
    nb
}

/// A Q8_0 block's scale.
fn scale(blk: &[u8]) -> f32 {
    half::f16::from_le_bytes([blk[0], blk[1]]).to_f32()
}

fn dot4_q8_0_neon(w: [&[u8]; 4], xq: &[i8], xd: &[f32]) -> [f32; 4] {
    w.map(|w| dot_q8_0_neon(w, xq, xd))
}

fn dot_q8_0_neon(w: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    let nb = blocks(&[w], &[xq], &[xd]);
    let mut acc = 0f32;
    for b in 0..nb {
        let blk = &w[b * Q8_0_BYTES..(b + 1) * Q8_0_BYTES];
        let xs = &xq[b * QK..(b + 1) * QK];
        // SAFETY: NEON is part of the aarch64 baseline; each load reads 16 bytes inside `blk`
        // (bytes 2..34) or `xs` (32 bytes).
        let s = unsafe {
            let w0 = vld1q_s8(blk.as_ptr().add(2) as *const i8);
            let w1 = vld1q_s8(blk.as_ptr().add(18) as *const i8);
            let x0 = vld1q_s8(xs.as_ptr());
            let x1 = vld1q_s8(xs.as_ptr().add(16));
            let mut p = vpaddlq_s16(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)));
            p = vpadalq_s16(p, vmull_high_s8(w0, x0));
            p = vpadalq_s16(p, vmull_s8(vget_low_s8(w1), vget_low_s8(x1)));
            p = vpadalq_s16(p, vmull_high_s8(w1, x1));
            vaddvq_s32(p)
        };
        acc += s as f32 * scale(blk) * xd[b];
    }
    acc
}

/// `acc` + the four-products sums of `a` and `b`, lane by lane (`sdot`).
///
/// # Safety
/// The CPU must have the dot-product extension.
#[inline]
#[target_feature(enable = "dotprod")]
pub(super) unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: the caller promises dotprod; the instruction reads and writes registers only.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// `acc` + the 2x2 tile of `a`'s two 8-value rows times `b`'s two 8-value rows (`smmla`):
/// lanes `[a0.b0, a0.b1, a1.b0, a1.b1]`.
///
/// # Safety
/// The CPU must have the int8 matrix multiply extension.
#[inline]
#[target_feature(enable = "i8mm")]
unsafe fn smmla(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: the caller promises i8mm; the instruction reads and writes registers only.
    unsafe {
        asm!(
            "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

fn dot_q8_0_sdot(w: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    // SAFETY: this kernel is in the table only where dotprod was detected.
    unsafe { dot4_sdot::<1>([w], xq, xd)[0] }
}

fn dot4_q8_0_sdot(w: [&[u8]; 4], xq: &[i8], xd: &[f32]) -> [f32; 4] {
    // SAFETY: this kernel is in the table only where dotprod was detected.
    unsafe { dot4_sdot::<4>(w, xq, xd) }
}

/// `R` Q8_0 rows against one activation row with `sdot`: the activation block is loaded once
/// for all rows.
///
/// # Safety
/// The CPU must have the dot-product extension.
#[target_feature(enable = "dotprod")]
unsafe fn dot4_sdot<const R: usize>(w: [&[u8]; R], xq: &[i8], xd: &[f32]) -> [f32; R] {
    let nb = blocks(&w, &[xq], &[xd]);
    let mut acc = [0f32; R];
    for b in 0..nb {
        // SAFETY: `blocks` checked that the activation row holds block b's 32 values.
        let (x0, x1) = unsafe {
            let xs = xq.as_ptr().add(b * QK);
            (vld1q_s8(xs), vld1q_s8(xs.add(16)))
        };
        for (r, w) in w.iter().enumerate() {
            let blk = &w[b * Q8_0_BYTES..(b + 1) * Q8_0_BYTES];
            // SAFETY: both loads read 16 bytes inside `blk` (bytes 2..34); dotprod is promised.
            let s = unsafe {
                let w0 = vld1q_s8(blk.as_ptr().add(2) as *const i8);
                let w1 = vld1q_s8(blk.as_ptr().add(18) as *const i8);
                vaddvq_s32(sdot(sdot(vdupq_n_s32(0), w0, x0), w1, x1))
            };
            acc[r] += s as f32 * scale(blk) * xd[b];
        }
    }
    acc
}

fn dot4x2_q8_0_smmla(w: [&[u8]; 4], xq: [&[i8]; 2], xd: [&[f32]; 2]) -> [[f32; 4]; 2] {
    // SAFETY: this kernel is in the table only where i8mm was detected.
    unsafe { dot4x2_smmla(w, xq, xd) }
}

/// Four Q8_0 rows against two activation rows with `smmla`: per block, each pair of weight
/// rows meets both activation rows in four instructions (8 values each), eight outputs from
/// eight instructions where `sdot` needs sixteen.
///
/// # Safety
/// The CPU must have the int8 matrix multiply extension.
#[target_feature(enable = "i8mm")]
unsafe fn dot4x2_smmla(w: [&[u8]; 4], xq: [&[i8]; 2], xd: [&[f32]; 2]) -> [[f32; 4]; 2] {
    let nb = blocks(&w, &xq, &xd);
    let mut acc = [[0f32; 4]; 2];
    for b in 0..nb {
        // The two activation rows' block, 8 values of each per register: [x0 | x1].
        // SAFETY: `blocks` checked that both rows hold block b's 32 values.
        let a: [int8x16_t; 4] = unsafe {
            let (p0, p1) = (xq[0].as_ptr().add(b * QK), xq[1].as_ptr().add(b * QK));
            std::array::from_fn(|c| vcombine_s8(vld1_s8(p0.add(8 * c)), vld1_s8(p1.add(8 * c))))
        };
        for pair in 0..2 {
            let (r0, r1) = (2 * pair, 2 * pair + 1);
            let b0 = &w[r0][b * Q8_0_BYTES..(b + 1) * Q8_0_BYTES];
            let b1 = &w[r1][b * Q8_0_BYTES..(b + 1) * Q8_0_BYTES];
            // SAFETY: each 8-byte load lies inside its block's values (bytes 2..34); i8mm is
            // promised.
            let tile = unsafe {
                let (q0, q1) = (
                    b0.as_ptr().add(2) as *const i8,
                    b1.as_ptr().add(2) as *const i8,
                );
                let mut t = vdupq_n_s32(0);
                for (c, a) in a.iter().enumerate() {
                    let wv = vcombine_s8(vld1_s8(q0.add(8 * c)), vld1_s8(q1.add(8 * c)));
                    t = smmla(t, *a, wv);
                }
                let mut lanes = [0i32; 4];
                vst1q_s32(lanes.as_mut_ptr(), t);
                lanes
            };
            // Lanes: [x0.w_r0, x0.w_r1, x1.w_r0, x1.w_r1].
            let (d0, d1) = (scale(b0), scale(b1));
            acc[0][r0] += tile[0] as f32 * d0 * xd[0][b];
            acc[0][r1] += tile[1] as f32 * d1 * xd[0][b];
            acc[1][r0] += tile[2] as f32 * d0 * xd[1][b];
            acc[1][r1] += tile[3] as f32 * d1 * xd[1][b];
        }
    }
    acc
}

//! aarch64 NEON kernels (baseline NEON, present on every aarch64 CPU).

use std::arch::aarch64::*;

use super::kernels::Kernels;
use crate::quant::{Q8_0_BYTES, QK};

/// The sets this CPU supports, best first.
pub fn available() -> Vec<Kernels> {
    vec![Kernels {
        name: "neon",
        dot_q8_0: dot_q8_0_neon,
        dot4_q8_0: dot4_q8_0_neon,
        ..super::kernels::SCALAR
    }]
}

fn dot4_q8_0_neon(w: [&[u8]; 4], xq: &[i8], xd: &[f32]) -> [f32; 4] {
    w.map(|w| dot_q8_0_neon(w, xq, xd))
}

fn dot_q8_0_neon(w: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    let nb = xd.len();
    assert!(
        w.len() >= nb * Q8_0_BYTES && xq.len() >= nb * QK,
        "dot_q8_0: short input"
    );
    let mut acc = 0f32;
    for b in 0..nb {
        let blk = &w[b * Q8_0_BYTES..(b + 1) * Q8_0_BYTES];
        let dw = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
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
        acc += s as f32 * dw * xd[b];
    }
    acc
}

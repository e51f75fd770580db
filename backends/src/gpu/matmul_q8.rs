//! The int8 matmul of encoder layers on the GPU: activations quantized by
//! `kernels::quantize_blocks` against Q8_0 weights, i32 sums per block of 32 scaled by both
//! blocks' scales (fused, as the CPU's VNNI kernel adds them), then the bias and the outlier
//! columns' f32 products in the CPU's order. Two tilings of the same arithmetic: 16 x 16
//! outputs per cube for a few rows, 64 x 64 for many.

use cubecl::prelude::*;

use super::kernels::{byte_i8, QK, QW};

/// Rows of activations and columns of weights one matmul cube covers.
pub const TILE: u32 = 16;

/// Sum of the products of the four int8 values packed in `a` and in `b`.
#[cube]
fn dot4(a: u32, b: u32) -> i32 {
    byte_i8(a, 0u32) * byte_i8(b, 0u32)
        + byte_i8(a, 1u32) * byte_i8(b, 1u32)
        + byte_i8(a, 2u32) * byte_i8(b, 2u32)
        + byte_i8(a, 3u32) * byte_i8(b, 3u32)
}
/// `out = xq · wq^T` over int8 blocks (i32 sums per block, scaled by both blocks' scales), plus
/// the outliers' f32 products with the dequantized weights, plus `bias` when `has_bias` is 1.
/// `x` is `m` rows of `k` (packed `xq`, scales `xd`), the weights `n` rows of `k`. A cube
/// computes a [`TILE`] x [`TILE`] output tile, staging each block of both operands in shared
/// memory; one unit per output.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn matmul_q8(
    xq: &Array<u32>,
    xd: &Array<f32>,
    wq: &Array<u32>,
    wd: &Array<f32>,
    bias: &Array<f32>,
    ocols: &Array<u32>,
    ovals: &Array<f32>,
    ocount: &Array<u32>,
    out: &mut Array<f32>,
    m: u32,
    n: u32,
    k: u32,
    cap: u32,
    has_bias: u32,
) {
    let mut sx = SharedMemory::<u32>::new((TILE * QW) as usize);
    let mut sw = SharedMemory::<u32>::new((TILE * QW) as usize);
    let mut sxd = SharedMemory::<f32>::new(TILE as usize);
    let mut swd = SharedMemory::<f32>::new(TILE as usize);
    let tx = UNIT_POS_X;
    let ty = UNIT_POS_Y;
    let row0 = CUBE_POS_Y * TILE;
    let col0 = CUBE_POS_X * TILE;
    let i = row0 + ty;
    let j = col0 + tx;
    let nb = k / QK;
    let kw = k / 4u32;
    let lin = ty * TILE + tx;
    let half = TILE * QW;
    let mut acc = 0.0f32;
    for b in 0..nb {
        if lin < half {
            let rr = row0 + lin / QW;
            let mut v = 0u32;
            if rr < m {
                v = xq[(rr * kw + b * QW + lin % QW) as usize];
            }
            sx[lin as usize] = v;
        } else {
            let l = lin - half;
            let cc = col0 + l / QW;
            let mut v = 0u32;
            if cc < n {
                v = wq[(cc * kw + b * QW + l % QW) as usize];
            }
            sw[l as usize] = v;
        }
        if lin < TILE {
            let rr = row0 + lin;
            let mut v = 0.0f32;
            if rr < m {
                v = xd[(rr * nb + b) as usize];
            }
            sxd[lin as usize] = v;
        } else if lin < 2u32 * TILE {
            let l = lin - TILE;
            let cc = col0 + l;
            let mut v = 0.0f32;
            if cc < n {
                v = wd[(cc * nb + b) as usize];
            }
            swd[l as usize] = v;
        }
        sync_cube();
        let mut isum = 0i32;
        for w in 0..QW {
            isum += dot4(sx[(ty * QW + w) as usize], sw[(tx * QW + w) as usize]);
        }
        // Fused, as the CPU's VNNI kernel adds each block's term.
        acc = fma(
            f32::cast_from(isum),
            swd[tx as usize] * sxd[ty as usize],
            acc,
        );
        sync_cube();
    }
    if i < m && j < n {
        // The CPU's order: the bias, then each outlier's product (fused), in column order.
        if has_bias == 1u32 {
            acc += bias[j as usize];
        }
        // `cap` 0: no outliers were looked for, and `ocount` is not read.
        let mut cnt = 0u32;
        if cap > 0u32 {
            cnt = ocount[i as usize];
        }
        for o in 0..cnt {
            let slot = (i * cap + o) as usize;
            let c = ocols[slot];
            let wv = byte_i8(wq[(j * kw + c / 4u32) as usize], c % 4u32);
            acc = fma(
                ovals[slot],
                f32::cast_from(wv) * wd[(j * nb + c / QK) as usize],
                acc,
            );
        }
        out[(i * n + j) as usize] = acc;
    }
}

/// Output tile side of [`matmul_q8_wide`]: 64 x 64 outputs per cube of 16 x 16 units.
pub const WIDE: u32 = 64;
/// Words per staged row of [`matmul_q8_wide`] in shared memory (one of padding: units reading
/// successive rows at the same word hit different banks).
const SROW: u32 = QW + 1;

/// [`matmul_q8`] for many rows: each unit computes 4 x 4 outputs (rows `ty + 16a`, columns
/// `tx + 16b`), so every staged word is unpacked once for four outputs instead of once for
/// each. The per-block integer sums and their scaling are the same as [`matmul_q8`]'s, so the
/// results are the same bit for bit.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn matmul_q8_wide(
    xq: &Array<u32>,
    xd: &Array<f32>,
    wq: &Array<u32>,
    wd: &Array<f32>,
    bias: &Array<f32>,
    ocols: &Array<u32>,
    ovals: &Array<f32>,
    ocount: &Array<u32>,
    out: &mut Array<f32>,
    m: u32,
    n: u32,
    k: u32,
    cap: u32,
    has_bias: u32,
) {
    let mut sx = SharedMemory::<u32>::new((WIDE * SROW) as usize);
    let mut sw = SharedMemory::<u32>::new((WIDE * SROW) as usize);
    let mut sxd = SharedMemory::<f32>::new(WIDE as usize);
    let mut swd = SharedMemory::<f32>::new(WIDE as usize);
    let mut acc = Array::<f32>::new(16usize);
    let mut isum = Array::<i32>::new(16usize);
    let mut xv = Array::<i32>::new(16usize);
    let mut wv = Array::<i32>::new(16usize);
    let tx = UNIT_POS_X;
    let ty = UNIT_POS_Y;
    let lin = ty * TILE + tx;
    let row0 = CUBE_POS_Y * WIDE;
    let col0 = CUBE_POS_X * WIDE;
    let nb = k / QK;
    let kw = k / 4u32;
    #[unroll]
    for i in 0..16u32 {
        acc[i as usize] = 0.0f32;
    }
    for b in 0..nb {
        // 64 rows x 8 words of each operand: two words of each per unit.
        #[unroll]
        for h in 0..2u32 {
            let e = lin + h * 256u32;
            let (r, w) = (e / QW, e % QW);
            let rr = row0 + r;
            let mut v = 0u32;
            if rr < m {
                v = xq[(rr * kw + b * QW + w) as usize];
            }
            sx[(r * SROW + w) as usize] = v;
            let cc = col0 + r;
            let mut u = 0u32;
            if cc < n {
                u = wq[(cc * kw + b * QW + w) as usize];
            }
            sw[(r * SROW + w) as usize] = u;
        }
        if lin < WIDE {
            let rr = row0 + lin;
            let mut v = 0.0f32;
            if rr < m {
                v = xd[(rr * nb + b) as usize];
            }
            sxd[lin as usize] = v;
        } else if lin < 2u32 * WIDE {
            let l = lin - WIDE;
            let cc = col0 + l;
            let mut v = 0.0f32;
            if cc < n {
                v = wd[(cc * nb + b) as usize];
            }
            swd[l as usize] = v;
        }
        sync_cube();
        #[unroll]
        for i in 0..16u32 {
            isum[i as usize] = 0i32;
        }
        for w in 0..QW {
            #[unroll]
            for a in 0..4u32 {
                let xw = sx[((ty + TILE * a) * SROW + w) as usize];
                let ww = sw[((tx + TILE * a) * SROW + w) as usize];
                #[unroll]
                for e in 0..4u32 {
                    xv[(a * 4u32 + e) as usize] = byte_i8(xw, e);
                    wv[(a * 4u32 + e) as usize] = byte_i8(ww, e);
                }
            }
            #[unroll]
            for a in 0..4u32 {
                #[unroll]
                for c in 0..4u32 {
                    let (xa, wc) = (a * 4u32, c * 4u32);
                    isum[(a * 4u32 + c) as usize] += xv[xa as usize] * wv[wc as usize]
                        + xv[(xa + 1u32) as usize] * wv[(wc + 1u32) as usize]
                        + xv[(xa + 2u32) as usize] * wv[(wc + 2u32) as usize]
                        + xv[(xa + 3u32) as usize] * wv[(wc + 3u32) as usize];
                }
            }
        }
        #[unroll]
        for a in 0..4u32 {
            #[unroll]
            for c in 0..4u32 {
                let o = (a * 4u32 + c) as usize;
                acc[o] = fma(
                    f32::cast_from(isum[o]),
                    swd[(tx + TILE * c) as usize] * sxd[(ty + TILE * a) as usize],
                    acc[o],
                );
            }
        }
        sync_cube();
    }
    #[unroll]
    for a in 0..4u32 {
        #[unroll]
        for c in 0..4u32 {
            let i = row0 + ty + TILE * a;
            let j = col0 + tx + TILE * c;
            if i < m && j < n {
                let mut v = acc[(a * 4u32 + c) as usize];
                if has_bias == 1u32 {
                    v += bias[j as usize];
                }
                let mut cnt = 0u32;
                if cap > 0u32 {
                    cnt = ocount[i as usize];
                }
                for o in 0..cnt {
                    let slot = (i * cap + o) as usize;
                    let col = ocols[slot];
                    let wv8 = byte_i8(wq[(j * kw + col / 4u32) as usize], col % 4u32);
                    v = fma(
                        ovals[slot],
                        f32::cast_from(wv8) * wd[(j * nb + col / QK) as usize],
                        v,
                    );
                }
                out[(i * n + j) as usize] = v;
            }
        }
    }
}

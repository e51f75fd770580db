//! The GPU kernels, written once in CubeCL and compiled for each runtime (WGSL or SPIR-V on
//! wgpu, CUDA C++ on CUDA). They follow the CPU's scalar reference arithmetic step by step
//! (same activation quantization, same rounding, same erf), so the two backends differ only
//! by f32 summation order.
//!
//! Int8 values travel packed four to a `u32` (byte `i` of a word holds element `4w + i`), as
//! WGSL has no 8-bit type; a byte is sign-extended with integer arithmetic, which every target
//! compiles the same way.
//!
//! Every kernel is launched checked (`#[cube(launch)]`): an index outside an array reads zero
//! and a write outside it is dropped, so a wrong size cannot touch memory it does not own.

use cubecl::prelude::*;

/// Rows of activations and columns of weights one matmul cube covers.
pub const TILE: u32 = 16;
/// Values per quantization block (Q8_0's).
const QK: u32 = 32;
/// Packed words per quantization block.
const QW: u32 = QK / 4;

/// Byte `i` (0..4) of `word` as a signed int8 value.
#[cube]
pub(crate) fn byte_i8(word: u32, i: u32) -> i32 {
    let b = (word >> (i * 8)) & 255u32;
    i32::cast_from(b) - i32::cast_from((b >> 7u32) * 256u32)
}

/// Sum of the products of the four int8 values packed in `a` and in `b`.
#[cube]
fn dot4(a: u32, b: u32) -> i32 {
    byte_i8(a, 0u32) * byte_i8(b, 0u32)
        + byte_i8(a, 1u32) * byte_i8(b, 1u32)
        + byte_i8(a, 2u32) * byte_i8(b, 2u32)
        + byte_i8(a, 3u32) * byte_i8(b, 3u32)
}

/// For [`crate::ops::ActQuant::Int8Outliers`]: per row of `x` (`rows` of `k`), the outlier
/// threshold (`thr`: values with a larger magnitude are outliers) and the outliers themselves
/// (`cols`/`vals`, `cap` slots per row, `count` used). An outlier's magnitude exceeds `ratio`
/// times the row's mean magnitude; when more than `cap` do, only the `cap` largest count (the
/// threshold rises to the next one). One unit per row.
#[cube(launch)]
pub fn row_outliers(
    x: &Array<f32>,
    thr: &mut Array<f32>,
    cols: &mut Array<u32>,
    vals: &mut Array<f32>,
    count: &mut Array<u32>,
    rows: u32,
    k: u32,
    cap: u32,
    ratio: f32,
) {
    let r = ABSOLUTE_POS as u32;
    if r < rows {
        let base = (r * k) as usize;
        let mut s = 0.0f32;
        for c in 0..k {
            s += f32::abs(x[base + c as usize]);
        }
        let limit = s / f32::cast_from(k) * ratio;
        let mut n = 0u32;
        for c in 0..k {
            if f32::abs(x[base + c as usize]) > limit {
                n += 1u32;
            }
        }
        let mut t = limit;
        if n > cap {
            // The (cap + 1)-th largest magnitude, by bisection on the bits of non-negative
            // floats (ordered as integers): the smallest `hi` with at most `cap` values above
            // it. 31 counting passes, each a loop of its own length: llvmpipe stops a loop
            // after 65535 iterations, so a pass per candidate would not do for long rows.
            let mut lo: u32 = 0u32;
            let mut hi: u32 = 2139095040u32;
            for _step in 0..31u32 {
                let mid = lo + (hi - lo) / 2u32;
                let tm = f32::reinterpret(mid);
                let mut above = 0u32;
                for c in 0..k {
                    if f32::abs(x[base + c as usize]) > tm {
                        above += 1u32;
                    }
                }
                if above <= cap {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            t = f32::reinterpret(hi);
        }
        let mut used = 0u32;
        for c in 0..k {
            let v = x[base + c as usize];
            if f32::abs(v) > t && used < cap {
                let slot = (r * cap + used) as usize;
                cols[slot] = c;
                vals[slot] = v;
                used += 1u32;
            }
        }
        thr[r as usize] = t;
        count[r as usize] = used;
    }
}

/// Quantizes `x` (`rows` of `k`) to int8 per block of 32 values with an f32 scale each
/// (`amax / 127`, rounding half away from zero), packed four to a word into `q`, scales into
/// `d`. With `outliers` 1, values whose magnitude exceeds their row's `thr` are outliers and
/// count as zero. One unit per block.
#[cube(launch)]
pub fn quantize_blocks(
    x: &Array<f32>,
    thr: &Array<f32>,
    q: &mut Array<u32>,
    d: &mut Array<f32>,
    rows: u32,
    k: u32,
    outliers: u32,
) {
    let nb = k / QK;
    let id = ABSOLUTE_POS as u32;
    if id < rows * nb {
        let r = id / nb;
        let b = id % nb;
        // Without outliers (`outliers` 0) `thr` is not read: every value counts.
        let mut t = 3.4e38f32;
        if outliers == 1u32 {
            t = thr[r as usize];
        }
        let base = r * k + b * QK;
        let mut amax = 0.0f32;
        for i in 0..QK {
            let a = f32::abs(x[(base + i) as usize]);
            if a <= t && a > amax {
                amax = a;
            }
        }
        let scale = amax / 127.0f32;
        let mut inv = 0.0f32;
        if scale != 0.0f32 {
            inv = 1.0f32 / scale;
        }
        for w in 0..QW {
            let mut word = 0u32;
            for j in 0..4u32 {
                let mut v = x[(base + w * 4u32 + j) as usize];
                if f32::abs(v) > t {
                    v = 0.0f32;
                }
                let s = v * inv;
                let mut half = 0.5f32;
                if s < 0.0f32 {
                    half = -0.5f32;
                }
                let qi = i32::cast_from(s + half);
                word |= (u32::cast_from(qi + 256i32) & 255u32) << (j * 8u32);
            }
            q[(base / 4u32 + w) as usize] = word;
        }
        d[id as usize] = scale;
    }
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
        acc += f32::cast_from(isum) * (sxd[ty as usize] * swd[tx as usize]);
        sync_cube();
    }
    if i < m && j < n {
        // `cap` 0: no outliers were looked for, and `ocount` is not read.
        let mut cnt = 0u32;
        if cap > 0u32 {
            cnt = ocount[i as usize];
        }
        for o in 0..cnt {
            let slot = (i * cap + o) as usize;
            let c = ocols[slot];
            let wv = byte_i8(wq[(j * kw + c / 4u32) as usize], c % 4u32);
            acc += ovals[slot] * (f32::cast_from(wv) * wd[(j * nb + c / QK) as usize]);
        }
        if has_bias == 1u32 {
            acc += bias[j as usize];
        }
        out[(i * n + j) as usize] = acc;
    }
}

/// Layer normalisation of each row of `x` (`rows` of `dim`), in place, after adding `delta`
/// when `has_delta` is 1 (BERT's post-norm residual). One unit per row.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    x: &mut Array<f32>,
    delta: &Array<f32>,
    gamma: &Array<f32>,
    beta: &Array<f32>,
    rows: u32,
    dim: u32,
    eps: f32,
    has_delta: u32,
) {
    let r = ABSOLUTE_POS as u32;
    if r < rows {
        let base = (r * dim) as usize;
        if has_delta == 1u32 {
            for c in 0..dim {
                let p = base + c as usize;
                x[p] = x[p] + delta[p];
            }
        }
        let mut s = 0.0f32;
        for c in 0..dim {
            s += x[base + c as usize];
        }
        let mean = s / f32::cast_from(dim);
        let mut v = 0.0f32;
        for c in 0..dim {
            let t = x[base + c as usize] - mean;
            v += t * t;
        }
        let inv = 1.0f32 / f32::sqrt(v / f32::cast_from(dim) + eps);
        for c in 0..dim {
            let p = base + c as usize;
            x[p] = (x[p] - mean) * inv * gamma[c as usize] + beta[c as usize];
        }
    }
}

/// `erf(x)`: the same rational approximation as the CPU's `nn::erf` (clamped to [-4, 4]).
#[cube]
#[allow(clippy::manual_clamp)] // `clamp` is not a CubeCL intrinsic for f32 here
fn erf_rational(v: f32) -> f32 {
    let mut x = v;
    if v > 4.0f32 {
        x = 4.0f32;
    }
    if v < -4.0f32 {
        x = -4.0f32;
    }
    let x2 = x * x;
    // c0 * x2 + c1 with c0 < 0, written so the first term is a run-time value.
    let mut p = 2.7706814e-8f32 - x2 * 2.7261423e-10f32;
    p = p * x2 - 2.101024e-6f32;
    p = p * x2 - 5.6925064e-5f32;
    p = p * x2 - 7.3499063e-4f32;
    p = p * x2 - 2.9546001e-3f32;
    p = p * x2 - 1.6096033e-2f32;
    let mut q = 0.0f32 - x2 * 1.4566072e-5f32 - 2.1337406e-4f32;
    q = q * x2 - 1.682827e-3f32;
    q = q * x2 - 7.373329e-3f32;
    q = q * x2 - 1.426474e-2f32;
    x * p / q
}

/// GELU (`x (1 + erf(x / sqrt 2)) / 2`) of the first `len` values of `x`, in place.
#[cube(launch)]
pub fn gelu(x: &mut Array<f32>, len: u32) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let v = x[i as usize];
        x[i as usize] = 0.5f32 * v * (1.0f32 + erf_rational(v * 0.70710677f32));
    }
}

/// Multi-head attention with a key mask. Query, key and value rows are read from `qkv` at
/// offsets `q_off`, `k_off` and `v_off` within rows `stride` apart (one stacked q/k/v product
/// or three arrays laid out alike); `out` has rows of `heads * hd`. Softmax over the unmasked
/// keys (`mask`: one word per token, 0 for padding) of the query's own text. One unit per
/// (text, head, query).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn attention(
    qkv: &Array<f32>,
    mask: &Array<u32>,
    out: &mut Array<f32>,
    q_off: u32,
    k_off: u32,
    v_off: u32,
    stride: u32,
    batch: u32,
    seq: u32,
    heads: u32,
    hd: u32,
    scale: f32,
) {
    let id = ABSOLUTE_POS as u32;
    if id < batch * heads * seq {
        let i = id % seq;
        let h = (id / seq) % heads;
        let b = id / (seq * heads);
        let qb = (b * seq + i) * stride + q_off + h * hd;
        let ob = ((b * seq + i) * heads * hd + h * hd) as usize;
        let mut mx = scale * 0.0f32 - 3.4e38f32;
        for j in 0..seq {
            if mask[(b * seq + j) as usize] != 0u32 {
                let kb = (b * seq + j) * stride + k_off + h * hd;
                let mut s = 0.0f32;
                for d in 0..hd {
                    s += qkv[(qb + d) as usize] * qkv[(kb + d) as usize];
                }
                if s * scale > mx {
                    mx = s * scale;
                }
            }
        }
        for d in 0..hd {
            out[ob + d as usize] = 0.0f32;
        }
        let mut l = 0.0f32;
        for j in 0..seq {
            if mask[(b * seq + j) as usize] != 0u32 {
                let kb = (b * seq + j) * stride + k_off + h * hd;
                let vb = (b * seq + j) * stride + v_off + h * hd;
                let mut s = 0.0f32;
                for d in 0..hd {
                    s += qkv[(qb + d) as usize] * qkv[(kb + d) as usize];
                }
                let p = f32::exp(s * scale - mx);
                l += p;
                for d in 0..hd {
                    let o = ob + d as usize;
                    out[o] = out[o] + p * qkv[(vb + d) as usize];
                }
            }
        }
        let mut inv = 0.0f32;
        if l > 0.0f32 {
            inv = 1.0f32 / l;
        }
        for d in 0..hd {
            let o = ob + d as usize;
            out[o] = out[o] * inv;
        }
    }
}

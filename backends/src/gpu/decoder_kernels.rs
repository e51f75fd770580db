//! Kernels of the decoder's ops (RMS norm, SwiGLU, rotary embeddings) and the embedding
//! gather, in CubeCL, following the CPU backend's formulas (`cpu::decoder`).

use cubecl::prelude::*;

use super::kernels::{byte_i8, cube_row, cube_sum, ROW_UNITS};

/// `out = x / sqrt(mean(x^2) + eps) * gamma`, each row of `dim`. One cube of [`ROW_UNITS`] per
/// row, each unit taking values `t, t + 64, ..`.
#[cube(launch)]
pub fn rms_norm(
    x: &Array<f32>,
    out: &mut Array<f32>,
    gamma: &Array<f32>,
    rows: u32,
    dim: u32,
    eps: f32,
) {
    let mut red = SharedMemory::<f32>::new(ROW_UNITS as usize);
    let r = cube_row();
    let t = UNIT_POS_X;
    let mut len = 0u32;
    if r < rows {
        len = dim;
    }
    let base = r * dim;
    let mut ss = 0.0f32;
    for c in range_stepped(t, len, ROW_UNITS) {
        let v = x[(base + c) as usize];
        ss += v * v;
    }
    let inv = 1.0f32 / f32::sqrt(cube_sum(&mut red, ss) / f32::cast_from(dim) + eps);
    for c in range_stepped(t, len, ROW_UNITS) {
        let p = (base + c) as usize;
        out[p] = x[p] * inv * gamma[c as usize];
    }
}

/// SwiGLU: `gate = silu(gate) * up` over the first `len` values.
#[cube(launch)]
pub fn silu_mul(gate: &mut Array<f32>, up: &Array<f32>, len: u32) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let g = gate[i as usize];
        gate[i as usize] = g / (1.0f32 + f32::exp(0.0f32 - g)) * up[i as usize];
    }
}

/// GeGLU with GELU's tanh form: `gate = gelu_tanh(gate) * up` over the first `len` values,
/// as `x * sigmoid(2 y)` (equal to `x / 2 * (1 + tanh(y))`), the CPU's form.
#[cube(launch)]
pub fn gelu_tanh_mul(gate: &mut Array<f32>, up: &Array<f32>, len: u32) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let x = gate[i as usize];
        let y2 = -1.595_769_2f32 * (x + 0.044_715f32 * x * x * x);
        gate[i as usize] = x / (1.0f32 + f32::exp(y2)) * up[i as usize];
    }
}

/// Rotary embeddings in place: row `i` of `x` (`rows` of `stride`, the first `heads * hd`
/// rotated) sits at position `pos0 + i % period`; pair `p` of each head turns by that position
/// times `inv_freq[p]`. Pairs are `(2p, 2p+1)` when `interleaved` is 1, else `(p, p + half)`.
/// One unit per (row, head, pair).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn rope(
    x: &mut Array<f32>,
    inv_freq: &Array<f32>,
    rows: u32,
    stride: u32,
    heads: u32,
    hd: u32,
    half: u32,
    pos0: u32,
    period: u32,
    interleaved: u32,
) {
    let id = ABSOLUTE_POS as u32;
    if id < rows * heads * half {
        let p = id % half;
        let h = (id / half) % heads;
        let i = id / (half * heads);
        let base = i * stride + h * hd;
        let mut a = base + p;
        let mut b = base + p + half;
        if interleaved == 1u32 {
            a = base + 2u32 * p;
            b = a + 1u32;
        }
        let ang = f32::cast_from(pos0 + i % period) * inv_freq[p as usize];
        let (c, s) = (f32::cos(ang), f32::sin(ang));
        let (x0, x1) = (x[a as usize], x[b as usize]);
        x[a as usize] = x0 * c - x1 * s;
        x[b as usize] = x0 * s + x1 * c;
    }
}

/// Gathers rows `ids` of a Q8_0 table (packed as `GpuMatrix`: int8 words `q`, scales `d`, rows
/// of `dim`) into `out` as f32. One unit per output value.
#[cube(launch)]
pub fn gather_q8(
    q: &Array<u32>,
    d: &Array<f32>,
    ids: &Array<u32>,
    out: &mut Array<f32>,
    n_ids: u32,
    dim: u32,
) {
    let id = ABSOLUTE_POS as u32;
    if id < n_ids * dim {
        let t = id / dim;
        let c = id % dim;
        let e = ids[t as usize] * dim + c;
        let v = byte_i8(q[(e / 4u32) as usize], e % 4u32);
        out[id as usize] = f32::cast_from(v) * d[(e / 32u32) as usize];
    }
}

/// `a += b` over the first `len` values.
#[cube(launch)]
pub fn add(a: &mut Array<f32>, b: &Array<f32>, len: u32) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        a[i as usize] = a[i as usize] + b[i as usize];
    }
}

/// `a *= b` over the first `len` values.
#[cube(launch)]
pub fn mul(a: &mut Array<f32>, b: &Array<f32>, len: u32) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        a[i as usize] = a[i as usize] * b[i as usize];
    }
}

/// `dst[dst_at + i] = src[src_at + i]` for `i < len`.
#[cube(launch)]
pub fn copy(src: &Array<f32>, dst: &mut Array<f32>, src_at: u32, dst_at: u32, len: u32) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        dst[(dst_at + i) as usize] = src[(src_at + i) as usize];
    }
}

/// Units of an [`argmax`] cube (a power of two: the reduction halves it).
pub(crate) const ARGMAX_UNITS: u32 = 256;

/// The index of the largest value of row `CUBE_POS_X` (of `width` values) into `out`, as a
/// `u32`; the first of equal values (as the CPU's scan), a NaN never (the CPU's scan keeps a NaN
/// at index 0; a row of NaNs gives 0). Unit `t`
/// scans values `t, t + 256, ..`, then the cube keeps the better of pairs in shared memory.
#[cube(launch)]
pub fn argmax(x: &Array<f32>, out: &mut Array<u32>, width: u32) {
    let mut bv = SharedMemory::<f32>::new(ARGMAX_UNITS as usize);
    let mut bi = SharedMemory::<u32>::new(ARGMAX_UNITS as usize);
    let r = CUBE_POS_X;
    let t = UNIT_POS_X;
    let base = r * width;
    // -inf (bits 0xff800000).
    let mut v = f32::reinterpret(4286578688u32);
    // No index yet: past every real one, so any real one wins a tie against it.
    let mut i = 4294967295u32;
    for c in range_stepped(t, width, ARGMAX_UNITS) {
        let x0 = x[(base + c) as usize];
        if x0 > v || (i == 4294967295u32 && x0 == v) {
            v = x0;
            i = c;
        }
    }
    bv[t as usize] = v;
    bi[t as usize] = i;
    sync_cube();
    let mut half = CUBE_DIM_X / 2u32;
    while half > 0u32 {
        if t < half {
            let (ov, oi) = (bv[(t + half) as usize], bi[(t + half) as usize]);
            let (mv, mi) = (bv[t as usize], bi[t as usize]);
            if ov > mv || (ov == mv && oi < mi) {
                bv[t as usize] = ov;
                bi[t as usize] = oi;
            }
        }
        sync_cube();
        half /= 2u32;
    }
    if t == 0u32 {
        let mut best = bi[0];
        if best == 4294967295u32 {
            best = 0u32;
        }
        out[r as usize] = best;
    }
}

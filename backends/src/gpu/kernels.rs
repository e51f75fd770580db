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

/// Values per quantization block (Q8_0's).
pub(crate) const QK: u32 = 32;
/// Packed words per quantization block.
pub(crate) const QW: u32 = QK / 4;

/// Byte `i` (0..4) of `word` as a signed int8 value.
#[cube]
pub(crate) fn byte_i8(word: u32, i: u32) -> i32 {
    let b = (word >> (i * 8)) & 255u32;
    i32::cast_from(b) - i32::cast_from((b >> 7u32) * 256u32)
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

/// Units of a row cube ([`layer_norm`], `rms_norm`): a power of two, the reductions halve it.
pub const ROW_UNITS: u32 = 64;

/// The row a row cube works on (cubes numbered along x, then y, past 65535 rows).
#[cube]
pub(crate) fn cube_row() -> u32 {
    CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X
}

/// The sum of every unit's `v` in a row cube, through `red` (one slot per unit); every unit
/// gets it.
#[cube]
pub(crate) fn cube_sum(red: &mut SharedMemory<f32>, v: f32) -> f32 {
    let t = UNIT_POS_X;
    red[t as usize] = v;
    sync_cube();
    let mut half = CUBE_DIM_X / 2u32;
    while half > 0u32 {
        if t < half {
            red[t as usize] = red[t as usize] + red[(t + half) as usize];
        }
        sync_cube();
        half /= 2u32;
    }
    let total = red[0];
    // Nobody writes `red` again before every unit has read the total.
    sync_cube();
    total
}

/// The CPU's `sum16` of `f(x)` over a row (`f`: the value, or its squared distance to `mean`
/// when `centred` is 1): sixteen lanes, lane `l` summing values `l, l + 16, ..` of the whole
/// chunks of 16 in order, then the lanes in order, then the values past the last whole chunk
/// in order. Units 0..16 of the cube sum a lane each; every unit gets the total. Summed in the
/// CPU's order, the sums are the CPU's where the shader compiler does not fuse a multiply and
/// an add (SPIR-V as lavapipe runs it: tested bit for bit; NVRTC may fuse, by default): a layer
/// norm's output is quantized to int8 next, where a last-bit difference can move a value
/// across a rounding boundary.
#[cube]
fn row_sum16(
    red: &mut SharedMemory<f32>,
    x: &Array<f32>,
    base: u32,
    len: u32,
    mean: f32,
    centred: u32,
) -> f32 {
    let t = UNIT_POS_X;
    let whole = len / 16u32;
    if t < 16u32 {
        let mut acc = 0.0f32;
        for i in 0..whole {
            let mut v = x[(base + i * 16u32 + t) as usize];
            if centred == 1u32 {
                v = (v - mean) * (v - mean);
            }
            acc += v;
        }
        red[t as usize] = acc;
    }
    sync_cube();
    let mut total = 0.0f32;
    for l in 0..16u32 {
        total += red[l as usize];
    }
    let mut tail = 0.0f32;
    for c in whole * 16u32..len {
        let mut v = x[(base + c) as usize];
        if centred == 1u32 {
            v = (v - mean) * (v - mean);
        }
        tail += v;
    }
    // Nobody writes `red` again before every unit has read it.
    sync_cube();
    total + tail
}

/// Layer normalisation of each row of `x` (`rows` of `dim`), in place, after adding `delta`
/// when `has_delta` is 1 (BERT's post-norm residual). One cube of [`ROW_UNITS`] per row: the
/// residual add and the output spread over its units, the mean and the variance about it
/// summed in the CPU's order ([`row_sum16`]).
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
    let mut red = SharedMemory::<f32>::new(16usize);
    let r = cube_row();
    let t = UNIT_POS_X;
    // Rows past the last: a cube still takes part in the barriers, on nothing.
    let mut len = 0u32;
    if r < rows {
        len = dim;
    }
    let base = r * dim;
    if has_delta == 1u32 {
        for c in range_stepped(t, len, ROW_UNITS) {
            let p = (base + c) as usize;
            x[p] = x[p] + delta[p];
        }
        // The sums below read values other units wrote.
        sync_storage();
    }
    let mean = row_sum16(&mut red, x, base, len, 0.0f32, 0u32) / f32::cast_from(dim);
    let var = row_sum16(&mut red, x, base, len, mean, 1u32) / f32::cast_from(dim);
    let inv = 1.0f32 / f32::sqrt(var + eps);
    for c in range_stepped(t, len, ROW_UNITS) {
        let p = (base + c) as usize;
        x[p] = (x[p] - mean) * inv * gamma[c as usize] + beta[c as usize];
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

/// `x * sigmoid(1.702 x)` (CLIP's `quick_gelu`) of the first `len` values of `x`, in place.
#[cube(launch)]
pub fn quick_gelu(x: &mut Array<f32>, len: u32) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let v = x[i as usize];
        x[i as usize] = v / (1.0f32 + f32::exp(-1.702f32 * v));
    }
}

/// Multi-head attention with a key mask. Query, key and value rows are read from `qkv` at
/// offsets `q_off`, `k_off` and `v_off` within rows `stride` apart (one stacked q/k/v product
/// or three arrays laid out alike); `out` has rows of `heads * hd`. Softmax over the unmasked
/// keys (`mask`: one word per token, 0 for padding) of the query's own text within reach: key
/// `j` from query `i` when `i - before <= j <= i + after` (causal: `after` 0; a window: both
/// the window). One unit per (text, head, query).
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
    before: u32,
    after: u32,
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
            if mask[(b * seq + j) as usize] != 0u32 && j + before >= i && j <= i + after {
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
            if mask[(b * seq + j) as usize] != 0u32 && j + before >= i && j <= i + after {
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

/// Queries per cube of [`attention_tiled`] (one per unit).
pub const ATT_Q: u32 = 64;
/// Keys per tile [`attention_tiled`] stages in shared memory.
const ATT_K: u32 = 16;
/// The widest head [`attention_tiled`] stages (wider heads take [`attention`]).
pub const ATT_MAX_HD: u32 = 64;

/// [`attention`] with keys and values staged in shared memory: a cube takes 64 queries of one
/// text and head (a unit each); tiles of 16 keys and values are loaded once for all of them,
/// and each unit keeps a running softmax (its maximum so far, the sum of exponentials and the
/// output, rescaled when the maximum grows), so the keys are read once, not twice. Cubes are
/// numbered (text, head, block of 64 queries).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn attention_tiled(
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
    before: u32,
    after: u32,
) {
    let mut sk = SharedMemory::<f32>::new((ATT_K * ATT_MAX_HD) as usize);
    let mut sv = SharedMemory::<f32>::new((ATT_K * ATT_MAX_HD) as usize);
    let mut sm = SharedMemory::<u32>::new(ATT_K as usize);
    #[allow(clippy::manual_div_ceil)] // `div_ceil` is not a CubeCL intrinsic
    let blocks = (seq + ATT_Q - 1u32) / ATT_Q;
    let cube = cube_row();
    let qblk = cube % blocks;
    let h = (cube / blocks) % heads;
    let b = cube / (blocks * heads);
    let t = UNIT_POS_X;
    let i = qblk * ATT_Q + t;
    // Cubes past the last text stage nothing real but still meet every barrier.
    let live = b < batch;
    let active = live && i < seq;
    let qb = (b * seq + i) * stride + q_off + h * hd;
    let ob = (b * seq + i) * heads * hd + h * hd;
    if active {
        for d in 0..hd {
            out[(ob + d) as usize] = 0.0f32;
        }
    }
    let mut mx = scale * 0.0f32 - 3.4e38f32;
    let mut l = 0.0f32;
    for j0 in range_stepped(0u32, seq, ATT_K) {
        for e in range_stepped(t, ATT_K * hd, ATT_Q) {
            let jj = e / hd;
            let d = e % hd;
            let j = j0 + jj;
            let mut kv = 0.0f32;
            let mut vv = 0.0f32;
            if live && j < seq {
                let row = (b * seq + j) * stride + h * hd + d;
                kv = qkv[(row + k_off) as usize];
                vv = qkv[(row + v_off) as usize];
            }
            sk[(jj * hd + d) as usize] = kv;
            sv[(jj * hd + d) as usize] = vv;
        }
        if t < ATT_K {
            let j = j0 + t;
            let mut mk = 0u32;
            if live && j < seq {
                mk = mask[(b * seq + j) as usize];
            }
            sm[t as usize] = mk;
        }
        sync_cube();
        if active {
            for jj in 0..ATT_K {
                let j = j0 + jj;
                if sm[jj as usize] != 0u32 && j + before >= i && j <= i + after {
                    let mut s = 0.0f32;
                    for d in 0..hd {
                        s += qkv[(qb + d) as usize] * sk[(jj * hd + d) as usize];
                    }
                    s *= scale;
                    if s > mx {
                        let c = f32::exp(mx - s);
                        l *= c;
                        for d in 0..hd {
                            let o = (ob + d) as usize;
                            out[o] = out[o] * c;
                        }
                        mx = s;
                    }
                    let p = f32::exp(s - mx);
                    l += p;
                    for d in 0..hd {
                        let o = (ob + d) as usize;
                        out[o] = out[o] + p * sv[(jj * hd + d) as usize];
                    }
                }
            }
        }
        sync_cube();
    }
    if active {
        let mut inv = 0.0f32;
        if l > 0.0f32 {
            inv = 1.0f32 / l;
        }
        for d in 0..hd {
            let o = (ob + d) as usize;
            out[o] = out[o] * inv;
        }
    }
}

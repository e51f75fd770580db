//! A decoder's KV cache on the GPU and causal grouped-query attention over it. Keys and values
//! are kept as f16, as on the CPU (half the memory of f32), two to a `u32` word (WGSL has no
//! 16-bit storage type everywhere): the conversion is written out in integer arithmetic,
//! rounding to nearest even as the CPU's `half` does, so both caches hold the same bits for
//! every number (a NaN stays a NaN, its payload not kept).
//!
//! Layout per layer: `[kv_head][slot][head_dim / 2 words]`, so a head's keys at successive
//! positions are contiguous; with a sliding window the slots are a ring with a mirrored start
//! ([`crate::kv_shape`]), so a query's positions are always one run of slots.

use cubecl::prelude::*;

use super::kernels::cube_sum;
use super::ops::{arg, array, grid_1d, Gpu, MAX_CUBES};
use super::GpuBuffer;
use crate::backend::KvShape;
use crate::ops::OpError;

/// Units of an attention cube (a power of two: the reductions halve it).
const UNITS: u32 = 64;

/// A KV cache in GPU memory (see the module doc for its layout).
pub struct GpuKvCache {
    k: GpuBuffer,
    v: GpuBuffer,
    shape: KvShape,
}

impl GpuKvCache {
    /// The cache's shape.
    pub fn shape(&self) -> KvShape {
        self.shape
    }
}

/// The f16 bits of `x`, rounded to nearest even (overflow to infinity, NaN kept a NaN).
#[cube]
pub(crate) fn f16_bits(x: f32) -> u32 {
    let b = u32::reinterpret(x);
    let sign = (b >> 16u32) & 32768u32;
    let e = (b >> 23u32) & 255u32;
    let m = b & 8388607u32;
    let mut out = 0u32;
    if e == 255u32 {
        out = 31744u32;
        if m != 0u32 {
            out = 32256u32;
        }
    } else if e > 142u32 {
        out = 31744u32;
    } else if e > 112u32 {
        // A normal f16: 10 of the 23 fraction bits, rounded on the 13 dropped (a carry into
        // the exponent is right, up to infinity).
        let hm = m >> 13u32;
        out = ((e - 112u32) << 10u32) | hm;
        let rem = m & 8191u32;
        if rem > 4096u32 {
            out += 1u32;
        } else if rem == 4096u32 {
            out += hm & 1u32;
        }
    } else if e >= 102u32 {
        // A subnormal f16: value = out * 2^-24.
        let mm = m | 8388608u32;
        let shift = 126u32 - e;
        let hm = mm >> shift;
        let rem = mm & ((1u32 << shift) - 1u32);
        let tie = 1u32 << (shift - 1u32);
        out = hm;
        if rem > tie {
            out += 1u32;
        } else if rem == tie {
            out += hm & 1u32;
        }
    }
    sign | out
}

/// The value of f16 bits `h` (the low 16 bits).
#[cube]
pub(crate) fn f16_value(h: u32) -> f32 {
    let e = (h >> 10u32) & 31u32;
    let m = h & 1023u32;
    // Zero or subnormal: m * 2^-24.
    let mut v = f32::cast_from(m) * 5.9604645e-8f32;
    if e == 31u32 {
        v = f32::reinterpret(2139095040u32 | (m << 13u32));
    } else if e != 0u32 {
        v = f32::reinterpret(((e + 112u32) << 23u32) | (m << 13u32));
    }
    if (h & 32768u32) != 0u32 {
        v = 0.0f32 - v;
    }
    v
}

/// Stores rows `row0..row0 + rows` of keys and values (rows of `kv_heads * 2 * hdw` f32) at
/// slots `slot0..` of the layer whose words start at `base` (`cap` slots per KV head). One unit
/// per word (two values) of keys and values.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn kv_append(
    k: &Array<f32>,
    v: &Array<f32>,
    kc: &mut Array<u32>,
    vc: &mut Array<u32>,
    rows: u32,
    kv_heads: u32,
    hdw: u32,
    cap: u32,
    base: u32,
    row0: u32,
    slot0: u32,
) {
    let id = ABSOLUTE_POS as u32;
    if id < rows * kv_heads * hdw {
        let w = id % hdw;
        let g = (id / hdw) % kv_heads;
        let r = id / (hdw * kv_heads);
        let src = (((row0 + r) * kv_heads + g) * hdw + w) * 2u32;
        let dst = (base + (g * cap + slot0 + r) * hdw + w) as usize;
        kc[dst] = f16_bits(k[src as usize]) | (f16_bits(k[(src + 1u32) as usize]) << 16u32);
        vc[dst] = f16_bits(v[src as usize]) | (f16_bits(v[(src + 1u32) as usize]) << 16u32);
    }
}

/// Causal attention of query row `CUBE_POS_Y` (at position `p = pos0 + row`), head
/// `CUBE_POS_X`, against the cache layer at `base` (`cap` slots per KV head): the positions
/// `p + 1 - len..=p` (`len` = `p + 1`, or the `window` when one is set and shorter) at slots
/// from `(p + 1 - len) % ring` on. The cube's units take positions `t, t + 64, ..` for the
/// scores (kept in `sc`, `npos` per row and head), reduce their maximum and sum in shared
/// memory, then take output values `t, t + 64, ..` over every position.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn causal_attention(
    q: &Array<f32>,
    kc: &Array<u32>,
    vc: &Array<u32>,
    sc: &mut Array<f32>,
    out: &mut Array<f32>,
    base: u32,
    cap: u32,
    ring: u32,
    window: u32,
    pos0: u32,
    heads: u32,
    group: u32,
    hd: u32,
    npos: u32,
    scale: f32,
) {
    let mut red = SharedMemory::<f32>::new(UNITS as usize);
    let h = CUBE_POS_X;
    let r = CUBE_POS_Y;
    let t = UNIT_POS_X;
    let hdw = hd / 2u32;
    let mut n = pos0 + r + 1u32;
    if window > 0u32 && n > window {
        n = window;
    }
    let first = (pos0 + r + 1u32 - n) % ring;
    let qb = (r * heads + h) * hd;
    let sb = (r * heads + h) * npos;
    let kb = base + ((h / group) * cap + first) * hdw;
    let mut mx = scale * 0.0f32 - 3.4e38f32;
    for j in range_stepped(t, n, UNITS) {
        let mut s = 0.0f32;
        for w in 0..hdw {
            let word = kc[(kb + j * hdw + w) as usize];
            s += q[(qb + 2u32 * w) as usize] * f16_value(word & 65535u32)
                + q[(qb + 2u32 * w + 1u32) as usize] * f16_value(word >> 16u32);
        }
        s *= scale;
        sc[(sb + j) as usize] = s;
        if s > mx {
            mx = s;
        }
    }
    red[t as usize] = mx;
    sync_cube();
    let mut half = CUBE_DIM_X / 2u32;
    while half > 0u32 {
        if t < half {
            let o = red[(t + half) as usize];
            if o > red[t as usize] {
                red[t as usize] = o;
            }
        }
        sync_cube();
        half /= 2u32;
    }
    let top = red[0];
    sync_cube();
    let mut l = 0.0f32;
    for j in range_stepped(t, n, UNITS) {
        let p = f32::exp(sc[(sb + j) as usize] - top);
        sc[(sb + j) as usize] = p;
        l += p;
    }
    let inv = 1.0f32 / cube_sum(&mut red, l);
    // Every unit reads every position's probability next, written by other units.
    sync_storage();
    for dd in range_stepped(t, hd, UNITS) {
        let w = dd / 2u32;
        let shift = (dd % 2u32) * 16u32;
        let mut acc = 0.0f32;
        for j in 0..n {
            let word = vc[(kb + j * hdw + w) as usize];
            acc += sc[(sb + j) as usize] * f16_value((word >> shift) & 65535u32);
        }
        out[(qb + dd) as usize] = acc * inv;
    }
}

impl<R: Runtime> Gpu<R> {
    /// An empty KV cache of `shape` (refused before allocating when its words do not fit the
    /// kernels' 32-bit indices).
    pub(crate) fn kv_cache(&self, shape: KvShape) -> Result<GpuKvCache, OpError> {
        if shape.dtype != crate::KvType::F16 {
            return Err(OpError::Unsupported {
                what: format!("a KV cache of {:?} values (the GPU keeps f16)", shape.dtype),
                backend: "the GPU backend".into(),
            });
        }
        if shape.head_dim == 0 || !shape.head_dim.is_multiple_of(2) || shape.kv_heads == 0 {
            return Err(OpError::Shape(format!(
                "KV cache: {} kv heads of {} values (an even number is needed)",
                shape.kv_heads, shape.head_dim
            )));
        }
        let words = shape
            .kv_heads
            .checked_mul(shape.head_dim / 2)
            .and_then(|w| w.checked_mul(shape.layers))
            .and_then(|w| w.checked_mul(shape.slots()))
            .filter(|&w| u32::try_from(w).is_ok())
            .ok_or_else(|| {
                OpError::OutOfMemory(format!(
                    "a GPU KV cache of {} layers x {} positions is past 4 G words per buffer",
                    shape.layers, shape.capacity
                ))
            })?;
        Ok(GpuKvCache {
            k: self.empty(words),
            v: self.empty(words),
            shape,
        })
    }

    /// Stores `k` and `v` (`[rows, kv_heads * head_dim]`) at positions `pos0..` of `layer`.
    pub(crate) fn kv_append(
        &self,
        cache: &GpuKvCache,
        layer: usize,
        pos0: usize,
        k: &GpuBuffer,
        v: &GpuBuffer,
    ) -> Result<(), OpError> {
        let rows = cache.shape.check_append(layer, pos0, k.len, v.len)?;
        let shape = cache.shape;
        let (kv_heads, hd, slots) = (shape.kv_heads, shape.head_dim, shape.slots());
        let kvw = kv_heads * hd;
        arg("kv append values", k.len)?;
        for (row0, slot0, n) in shape.writes(pos0, rows) {
            let (cc, cd) = grid_1d(n * kvw / 2)?;
            kv_append::launch::<R>(
                &self.client,
                cc,
                cd,
                array(k),
                array(v),
                array(&cache.k),
                array(&cache.v),
                arg("rows", n)?,
                arg("kv heads", kv_heads)?,
                arg("head words", hd / 2)?,
                arg("slots", slots)?,
                arg("layer start", layer * slots * kvw / 2)?,
                arg("row", row0)?,
                arg("slot", slot0)?,
            );
        }
        Ok(())
    }

    /// Causal attention of query rows `q` at positions `pos0..` against `layer` of `cache`.
    pub(crate) fn causal_attention(
        &self,
        q: &GpuBuffer,
        cache: &GpuKvCache,
        layer: usize,
        pos0: usize,
        heads: usize,
        out: &GpuBuffer,
    ) -> Result<(), OpError> {
        let shape = cache.shape;
        let KvShape {
            layers,
            kv_heads,
            head_dim: hd,
            capacity: cap,
            window,
            ..
        } = shape;
        let slots = shape.slots();
        if heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(OpError::Shape(format!(
                "attention: {heads} heads over {kv_heads} kv heads of {hd}"
            )));
        }
        let rows = q.len / (heads * hd);
        OpError::check("attention q", q.len, rows * heads * hd)?;
        OpError::check("attention output", out.len, q.len)?;
        if layer >= layers {
            return Err(OpError::Shape(format!(
                "attention: layer {layer} of a cache of {layers}"
            )));
        }
        shape.check_positions(pos0, rows)?;
        if rows == 0 {
            return Ok(());
        }
        if heads > MAX_CUBES as usize || rows > MAX_CUBES as usize {
            return Err(OpError::Shape(format!(
                "attention of {rows} rows x {heads} heads is more than one launch covers"
            )));
        }
        let npos = shape.longest_span(pos0, rows);
        let scores = self.empty(rows * heads * npos);
        arg("attention scores", rows * heads * npos)?;
        causal_attention::launch::<R>(
            &self.client,
            CubeCount::Static(heads as u32, rows as u32, 1),
            CubeDim::new_1d(UNITS),
            array(q),
            array(&cache.k),
            array(&cache.v),
            array(&scores),
            array(out),
            arg("layer start", layer * slots * kv_heads * hd / 2)?,
            arg("slots", slots)?,
            arg("ring", cap)?,
            arg("window", window.unwrap_or(0))?,
            arg("position", pos0)?,
            arg("heads", heads)?,
            arg("group", heads / kv_heads)?,
            arg("head size", hd)?,
            arg("positions", npos)?,
            1.0 / (hd as f32).sqrt(),
        );
        Ok(())
    }
}

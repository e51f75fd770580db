//! Products of f32 activations with weights kept in their stored blocks (a decoder's matmuls):
//! Q8_0, Q4_0 and Q4_1 blocks repacked at upload into aligned words (the quantized values) and
//! f32 scales (and Q4_1's minimums), since the stored blocks (34, 18 and 20 bytes) are not
//! 4-byte aligned; the rest of a Q4_K_M/Q5_K_M/Q6_K file (Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) as
//! units of 32 bytes or nibbles with the scales the reference decoder forms ([`crate::quant::units`]:
//! 24 to 40 bytes per 32 values where f32 took 128); the other types and f16/f32 matrices as
//! f32 words. The values are the stored ones: an f16 scale widens to f32 exactly, and a unit's
//! scale is the reference's product.
//!
//! Two kernels: for a few rows (decode) a cube reduces one output over the whole row (every unit
//! takes words of the row, then a tree in shared memory); for more rows (prefill) 16 x 16 output
//! tiles with a block of both operands staged in shared memory (the weights decoded once per
//! tile instead of once per output).

use cubecl::prelude::*;

use super::kernels::{byte_i8, cube_row, cube_sum, ROW_UNITS};
use super::ops::{arg, array, Gpu, MAX_CUBES};
use super::{GpuBlocks, GpuBuffer};
use crate::ops::OpError;
use crate::{quant, DType};

/// Word layouts of [`GpuBlocks`] (the `kind` argument of the kernels).
const KIND_Q8_0: u32 = 0;
const KIND_Q4_0: u32 = 1;
const KIND_Q4_1: u32 = 2;
const KIND_F32: u32 = 3;
/// Unsigned bytes with a scale and an offset per unit (Q5_1, Q5_K).
const KIND_U8: u32 = 4;
/// Signed bytes with a scale per 16 values (Q6_K).
const KIND_I8X2: u32 = 5;
/// Output tile side of the tiled kernel.
const TILE: u32 = 16;
/// Shared-memory row stride of a staged block (32 values and one of padding, so the 16 units
/// reading 16 rows at the same column hit different banks).
const STRIDE: u32 = 33;
/// Up to this many activation rows take the row-reducing kernel.
pub(crate) const GEMV_MAX_ROWS: usize = 4;

/// Packed words per block of 32 values for `kind`.
#[cube]
fn words_per_block(kind: u32) -> u32 {
    let mut w = 8u32;
    if kind == KIND_Q4_0 {
        w = 4u32;
    }
    if kind == KIND_Q4_1 {
        w = 4u32;
    }
    if kind == KIND_F32 {
        w = 32u32;
    }
    w
}

/// Value `e` (0..32) of block `blk` (its words from `wbase`).
#[cube]
fn block_value(
    q: &Array<u32>,
    d: &Array<f32>,
    mn: &Array<f32>,
    kind: u32,
    blk: u32,
    wbase: u32,
    e: u32,
) -> f32 {
    let mut v = 0.0f32;
    if kind == KIND_F32 {
        v = f32::reinterpret(q[(wbase + e) as usize]);
    }
    if kind == KIND_Q8_0 {
        v = f32::cast_from(byte_i8(q[(wbase + e / 4u32) as usize], e % 4u32)) * d[blk as usize];
    }
    if kind == KIND_U8 {
        let byte = (q[(wbase + e / 4u32) as usize] >> ((e % 4u32) * 8u32)) & 255u32;
        v = f32::cast_from(byte) * d[blk as usize] + mn[blk as usize];
    }
    if kind == KIND_I8X2 {
        let s = d[(blk * 2u32 + e / 16u32) as usize];
        v = f32::cast_from(byte_i8(q[(wbase + e / 4u32) as usize], e % 4u32)) * s;
    }
    if kind == KIND_Q4_0 || kind == KIND_Q4_1 {
        // Byte j of a 4-bit block holds value j (low nibble) and value j + 16 (high nibble).
        let j = e % 16u32;
        let byte = (q[(wbase + j / 4u32) as usize] >> ((j % 4u32) * 8u32)) & 255u32;
        let mut nib = byte & 15u32;
        if e >= 16u32 {
            nib = byte >> 4u32;
        }
        if kind == KIND_Q4_0 {
            v = (f32::cast_from(nib) - 8.0f32) * d[blk as usize];
        } else {
            v = f32::cast_from(nib) * d[blk as usize] + mn[blk as usize];
        }
    }
    v
}

/// `out[i, j] = x[i] · w[j] + bias[j]`, one cube of [`ROW_UNITS`] per output (the weight row
/// numbered along x then y, so a vocabulary past 65,535 rows fits; `CUBE_POS_Z`: the
/// activation row). Unit `t` takes words `t, t + 64, ..` of the
/// weight row (4 or 8 values each), then the cube sums the units' parts in shared memory.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn gemv_blocks(
    x: &Array<f32>,
    q: &Array<u32>,
    d: &Array<f32>,
    mn: &Array<f32>,
    bias: &Array<f32>,
    out: &mut Array<f32>,
    n: u32,
    k: u32,
    kind: u32,
    has_bias: u32,
) {
    let mut part = SharedMemory::<f32>::new(ROW_UNITS as usize);
    let j = cube_row();
    let i = CUBE_POS_Z;
    let t = UNIT_POS_X;
    let nb = k / 32u32;
    let wpb = words_per_block(kind);
    let words = nb * wpb;
    let xb = i * k;
    let mut acc = 0.0f32;
    if j < n {
        for wi in range_stepped(t, words, ROW_UNITS) {
            let b = wi / wpb;
            let w = wi % wpb;
            let blk = j * nb + b;
            let word = q[(j * words + wi) as usize];
            if kind == KIND_F32 {
                acc += x[(xb + b * 32u32 + w) as usize] * f32::reinterpret(word);
            } else if kind == KIND_Q8_0 || kind == KIND_I8X2 {
                let c = xb + b * 32u32 + w * 4u32;
                let mut s = 0.0f32;
                for e in 0..4u32 {
                    s += f32::cast_from(byte_i8(word, e)) * x[(c + e) as usize];
                }
                // Q6_K: words 0..4 are the unit's first 16 values, with the first scale.
                let mut at = blk;
                if kind == KIND_I8X2 {
                    at = blk * 2u32 + w / 4u32;
                }
                acc += s * d[at as usize];
            } else if kind == KIND_U8 {
                let c = xb + b * 32u32 + w * 4u32;
                let mut s = 0.0f32;
                let mut sx = 0.0f32;
                for e in 0..4u32 {
                    let xe = x[(c + e) as usize];
                    s += f32::cast_from((word >> (e * 8u32)) & 255u32) * xe;
                    sx += xe;
                }
                acc += s * d[blk as usize] + sx * mn[blk as usize];
            } else {
                let c = xb + b * 32u32 + w * 4u32;
                let mut s = 0.0f32;
                let mut sx = 0.0f32;
                for e in 0..4u32 {
                    let byte = (word >> (e * 8u32)) & 255u32;
                    let (lo, hi) = (x[(c + e) as usize], x[(c + 16u32 + e) as usize]);
                    let (nl, nh) = (f32::cast_from(byte & 15u32), f32::cast_from(byte >> 4u32));
                    if kind == KIND_Q4_0 {
                        s += (nl - 8.0f32) * lo + (nh - 8.0f32) * hi;
                    } else {
                        s += nl * lo + nh * hi;
                        sx += lo + hi;
                    }
                }
                // Q4_1: sum((d q + m) x) = d sum(q x) + m sum(x).
                acc += s * d[blk as usize];
                if kind == KIND_Q4_1 {
                    acc += sx * mn[blk as usize];
                }
            }
        }
    }
    let total = cube_sum(&mut part, acc);
    if t == 0u32 && j < n {
        let mut v = total;
        if has_bias == 1u32 {
            v += bias[j as usize];
        }
        out[(i * n + j) as usize] = v;
    }
}

/// `out = x w^T + bias` for `m` rows: a cube computes a [`TILE`] x [`TILE`] output tile; per
/// block of 32 inputs its 256 units stage 16 activation rows and decode 16 weight rows into
/// shared memory, then each unit sums its output's 32 products.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn gemm_blocks(
    x: &Array<f32>,
    q: &Array<u32>,
    d: &Array<f32>,
    mn: &Array<f32>,
    bias: &Array<f32>,
    out: &mut Array<f32>,
    m: u32,
    n: u32,
    k: u32,
    kind: u32,
    has_bias: u32,
) {
    let mut sx = SharedMemory::<f32>::new((TILE * STRIDE) as usize);
    let mut sw = SharedMemory::<f32>::new((TILE * STRIDE) as usize);
    let tx = UNIT_POS_X;
    let ty = UNIT_POS_Y;
    let row0 = CUBE_POS_Y * TILE;
    let col0 = CUBE_POS_X * TILE;
    let lin = ty * TILE + tx;
    let nb = k / 32u32;
    let wpb = words_per_block(kind);
    let words = nb * wpb;
    let mut acc = 0.0f32;
    for b in 0..nb {
        // 16 x 32 values of each operand, two per unit.
        for h in 0..2u32 {
            let e = lin * 2u32 + h;
            let (r, c) = (e / 32u32, e % 32u32);
            let rr = row0 + r;
            let mut xv = 0.0f32;
            if rr < m {
                xv = x[(rr * k + b * 32u32 + c) as usize];
            }
            sx[(r * STRIDE + c) as usize] = xv;
            let cc = col0 + r;
            let mut wv = 0.0f32;
            if cc < n {
                wv = block_value(q, d, mn, kind, cc * nb + b, cc * words + b * wpb, c);
            }
            sw[(r * STRIDE + c) as usize] = wv;
        }
        sync_cube();
        for e in 0..32u32 {
            acc += sx[(ty * STRIDE + e) as usize] * sw[(tx * STRIDE + e) as usize];
        }
        sync_cube();
    }
    let (i, j) = (row0 + ty, col0 + tx);
    if i < m && j < n {
        if has_bias == 1u32 {
            acc += bias[j as usize];
        }
        out[(i * n + j) as usize] = acc;
    }
}

/// A matrix repacked on the host, before upload.
pub(super) struct Repacked {
    kind: u32,
    pub(super) q: Vec<u32>,
    pub(super) d: Vec<f32>,
    mn: Vec<f32>,
}

/// Host side: the words, scales and minimums of `n` rows of `k` values stored as `dtype`.
pub(super) fn repack(dtype: DType, data: &[u8], n: usize, k: usize) -> Result<Repacked, OpError> {
    /// Where a type's words come from.
    enum Source {
        /// The stored 32-value blocks: an f16 scale (and Q4_1's minimum), then the values
        /// from byte `off`.
        Blocks { off: usize },
        /// Units of 32 read by `quant::units`.
        Units,
        /// The reference decoder's f32 values.
        F32,
    }
    let (kind, source) = match dtype {
        DType::Q8_0 => (KIND_Q8_0, Source::Blocks { off: 2 }),
        DType::Q4_0 => (KIND_Q4_0, Source::Blocks { off: 2 }),
        DType::Q4_1 => (KIND_Q4_1, Source::Blocks { off: 4 }),
        // A Q4_K_M/Q5_K_M/Q6_K file's other types: Q4_K in Q4_1's layout, Q5_0 in Q8_0's
        // (signed bytes), Q5_1 and Q5_K as unsigned bytes with offsets, Q6_K as signed bytes
        // with a scale per 16.
        DType::Q4_K => (KIND_Q4_1, Source::Units),
        DType::Q5_0 => (KIND_Q8_0, Source::Units),
        DType::Q5_1 | DType::Q5_K => (KIND_U8, Source::Units),
        DType::Q6_K => (KIND_I8X2, Source::Units),
        // Float types, and the block types without a GPU kernel yet: decoded to f32 at upload
        // by the table's reference decoder (4 to 8 times the memory of the blocks).
        DType::F16
        | DType::F32
        | DType::BF16
        | DType::Q2_K
        | DType::Q3_K
        | DType::IQ4_NL
        | DType::IQ4_XS => (KIND_F32, Source::F32),
    };
    let size = dtype.block_bytes();
    OpError::check("weight bytes", data.len(), n * k / dtype.block_len() * size)?;
    let words = |qs: &[u8], out: &mut Vec<u32>| {
        out.extend(
            qs.chunks_exact(4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])),
        )
    };
    let units = n * k / quant::QK;
    let (mut q, mut d, mut mn) = (Vec::new(), Vec::new(), Vec::new());
    match source {
        Source::Blocks { off } => {
            let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            q.reserve(units * (size - off) / 4);
            d.reserve(units);
            for b in data.chunks_exact(size) {
                d.push(f16(b));
                if kind == KIND_Q4_1 {
                    mn.push(f16(&b[2..]));
                }
                words(&b[off..], &mut q);
            }
        }
        Source::Units => {
            q.reserve(units * if kind == KIND_Q4_1 { 4 } else { 8 });
            quant::units::each_unit(dtype, data, |u| {
                if kind == KIND_Q4_1 {
                    // Byte j holds value j (low nibble) and value j + 16 (high nibble).
                    let bytes: [u8; 16] = std::array::from_fn(|j| u.q[j] | (u.q[j + 16] << 4));
                    words(&bytes, &mut q);
                } else {
                    words(&u.q, &mut q);
                }
                d.push(u.d[0]);
                if kind == KIND_I8X2 {
                    d.push(u.d[1]);
                }
                if kind == KIND_Q4_1 || kind == KIND_U8 {
                    mn.push(u.m);
                }
            });
        }
        Source::F32 => {
            let mut f = vec![0f32; n * k];
            quant::dequantize(dtype, data, &mut f).map_err(|e| OpError::Shape(e.to_string()))?;
            q = f.into_iter().map(f32::to_bits).collect();
        }
    }
    Ok(Repacked { kind, q, d, mn })
}

impl<R: Runtime> Gpu<R> {
    /// Uploads a matrix of `n` rows of `k` values stored as `dtype` (see [`repack`]).
    pub(crate) fn upload_blocks(
        &self,
        dtype: DType,
        data: &[u8],
        n: usize,
        k: usize,
    ) -> Result<GpuBlocks, OpError> {
        if k == 0 || !k.is_multiple_of(quant::QK) {
            return Err(OpError::Shape(format!(
                "rows of {k} values are not whole blocks of 32"
            )));
        }
        let Repacked { kind, q, d, mn } = repack(dtype, data, n, k)?;
        arg("weight words", q.len())?;
        Ok(GpuBlocks {
            kind,
            q: self.upload_u32(&q),
            d: self.upload_f32(&d),
            mn: self.upload_f32(&mn),
            n,
            k,
        })
    }

    /// `out = x w^T + bias` for `rows` rows of f32 `x`.
    pub(crate) fn linear_f32(
        &self,
        x: &GpuBuffer,
        rows: usize,
        w: &GpuBlocks,
        bias: Option<&GpuBuffer>,
        out: &GpuBuffer,
    ) -> Result<(), OpError> {
        let (n, k) = (w.n, w.k);
        super::ops::check_linear(x, rows, (n, k), bias, out)?;
        let (m32, n32, k32) = (arg("rows", rows)?, arg("outputs", n)?, arg("inputs", k)?);
        arg("output values", rows * n)?;
        arg("input values", rows * k)?;
        let dummy;
        let bias_buf = match bias {
            Some(b) => b,
            None => {
                dummy = self.empty(1);
                &dummy
            }
        };
        let has_bias = u32::from(bias.is_some());
        if rows <= GEMV_MAX_ROWS {
            let (CubeCount::Static(gx, gy, _), dim) = super::ops::grid_rows(n)? else {
                unreachable!("grid_rows gives a static count")
            };
            gemv_blocks::launch::<R>(
                &self.client,
                CubeCount::Static(gx, gy, m32.max(1)),
                dim,
                array(x),
                array(&w.q),
                array(&w.d),
                array(&w.mn),
                array(bias_buf),
                array(out),
                n32,
                k32,
                w.kind,
                has_bias,
            );
        } else {
            let tile = TILE as usize;
            let (gx, gy) = (n.div_ceil(tile), rows.div_ceil(tile));
            if gx > MAX_CUBES as usize || gy > MAX_CUBES as usize {
                return Err(OpError::Shape(format!(
                    "a {rows}x{n} product is more than one launch covers"
                )));
            }
            gemm_blocks::launch::<R>(
                &self.client,
                CubeCount::Static(gx as u32, gy as u32, 1),
                CubeDim::new_2d(TILE, TILE),
                array(x),
                array(&w.q),
                array(&w.d),
                array(&w.mn),
                array(bias_buf),
                array(out),
                m32,
                n32,
                k32,
                w.kind,
                has_bias,
            );
        }
        Ok(())
    }
}

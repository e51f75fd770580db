//! The op contract on one CubeCL runtime: buffers, uploads and kernel launches, generic over
//! the runtime (wgpu or CUDA). [`super::GpuBackend`] picks the runtime at run time.

use cubecl::prelude::*;
use cubecl::server::Handle;

use super::kernels;
use super::matmul_q8;
use super::{GpuBuffer, GpuMatrix};
use crate::ops::{ActQuant, OpError, OUTLIER_RATIO};
use crate::quant::QK;

/// Units per cube for the one-dimensional kernels.
const UNITS: u32 = 64;
/// The most cubes along one grid dimension every runtime accepts.
pub(crate) const MAX_CUBES: u32 = 65_535;

/// One runtime's client, with the launches of the op contract.
pub(crate) struct Gpu<R: Runtime> {
    pub(crate) client: ComputeClient<R>,
}

/// A grid of cubes of [`UNITS`] covering `units` units (in two dimensions past [`MAX_CUBES`]).
pub(crate) fn grid_1d(units: usize) -> Result<(CubeCount, CubeDim), OpError> {
    let cubes = units.div_ceil(UNITS as usize).max(1);
    let x = cubes.min(MAX_CUBES as usize);
    let y = cubes.div_ceil(x);
    if y > MAX_CUBES as usize {
        return Err(OpError::Shape(format!(
            "{units} work items are more than one launch covers"
        )));
    }
    Ok((
        CubeCount::Static(x as u32, y as u32, 1),
        CubeDim::new_1d(UNITS),
    ))
}

/// A grid of one cube of [`kernels::ROW_UNITS`] per row (numbered by `kernels::cube_row`).
pub(crate) fn grid_rows(rows: usize) -> Result<(CubeCount, CubeDim), OpError> {
    let x = rows.clamp(1, MAX_CUBES as usize);
    let y = rows.div_ceil(x).max(1);
    if y > MAX_CUBES as usize {
        return Err(OpError::Shape(format!(
            "{rows} rows are more than one launch covers"
        )));
    }
    Ok((
        CubeCount::Static(x as u32, y as u32, 1),
        CubeDim::new_1d(kernels::ROW_UNITS),
    ))
}

/// The operands of a product `out = x w^T + bias` of `rows` rows against `n x k` weights.
pub(crate) fn check_linear(
    x: &GpuBuffer,
    rows: usize,
    (n, k): (usize, usize),
    bias: Option<&GpuBuffer>,
    out: &GpuBuffer,
) -> Result<(), OpError> {
    OpError::check("linear input", x.len, rows * k)?;
    OpError::check("linear output", out.len, rows * n)?;
    if let Some(b) = bias {
        OpError::check("linear bias", b.len, n)?;
    }
    Ok(())
}

/// `v` as a `u32` kernel argument, or an error naming `what`.
pub(crate) fn arg(what: &str, v: usize) -> Result<u32, OpError> {
    u32::try_from(v).map_err(|_| OpError::Shape(format!("{what} {v} does not fit 32 bits")))
}

/// An array argument over `b`'s whole length.
pub(crate) fn array<R: Runtime>(b: &GpuBuffer) -> ArrayArg<R> {
    // SAFETY: the length is the buffer's own, recorded when it was created; kernels are
    // launched checked, so no index past it is dereferenced either way.
    unsafe { ArrayArg::from_raw_parts(b.handle.clone(), b.len) }
}

impl<R: Runtime> Gpu<R> {
    fn buffer(&self, handle: Handle, len: usize) -> GpuBuffer {
        GpuBuffer { handle, len }
    }

    /// A new buffer holding `x`.
    pub(crate) fn upload_f32(&self, x: &[f32]) -> GpuBuffer {
        // Zero-length buffers are not allowed on every runtime: keep one value.
        let data: &[f32] = if x.is_empty() { &[0.0] } else { x };
        self.buffer(self.client.create_from_slice(f32::as_bytes(data)), x.len())
    }

    /// A new buffer holding `x`.
    pub(crate) fn upload_u32(&self, x: &[u32]) -> GpuBuffer {
        let data: &[u32] = if x.is_empty() { &[0] } else { x };
        self.buffer(self.client.create_from_slice(u32::as_bytes(data)), x.len())
    }

    /// A new buffer of `len` 4-byte values, contents unspecified.
    pub(crate) fn empty(&self, len: usize) -> GpuBuffer {
        self.buffer(self.client.empty(len.max(1) * 4), len)
    }

    /// The f32 values of `b`.
    pub(crate) fn download(&self, b: &GpuBuffer) -> Result<Vec<f32>, OpError> {
        let bytes = self
            .client
            .read_one(b.handle.clone())
            .map_err(|e| OpError::Device(format!("reading a GPU buffer failed: {e:?}")))?;
        let v = f32::from_bytes(&bytes);
        if v.len() < b.len {
            return Err(OpError::Device(format!(
                "a GPU buffer of {} values read back {}",
                b.len,
                v.len()
            )));
        }
        Ok(v[..b.len].to_vec())
    }

    /// Repacks Q8_0 blocks (`n` rows of `k`) into int8 words and f32 scales and uploads them.
    pub(crate) fn upload_q8_0(
        &self,
        blocks: &[u8],
        n: usize,
        k: usize,
    ) -> Result<GpuMatrix, OpError> {
        // The same words and scales as a Q8_0 matrix for f32 activations.
        let r = super::matmul_blocks::repack(crate::DType::Q8_0, blocks, n, k)?;
        Ok(GpuMatrix {
            q: self.upload_u32(&r.q),
            d: self.upload_f32(&r.d),
            n,
            k,
        })
    }

    /// `out = x w^T + bias` with `x` quantized as `act` on the GPU.
    pub(crate) fn linear(
        &self,
        x: &GpuBuffer,
        rows: usize,
        w: &GpuMatrix,
        bias: Option<&GpuBuffer>,
        act: ActQuant,
        out: &GpuBuffer,
    ) -> Result<(), OpError> {
        let (n, k) = (w.n, w.k);
        check_linear(x, rows, (n, k), bias, out)?;
        let outliers = match act {
            ActQuant::Int8 => false,
            ActQuant::Int8Outliers => true,
            ActQuant::F32 => {
                return Err(OpError::Shape(
                    "the GPU backend multiplies int8 activations only (ActQuant::F32 asked)".into(),
                ))
            }
        };
        // At most k/16 outlier columns per row, as on the CPU (none below 16 columns).
        let cap = if outliers && k >= 16 { k / 16 } else { 0 };
        let (m32, n32, k32, cap32) = (
            arg("rows", rows)?,
            arg("outputs", n)?,
            arg("inputs", k)?,
            arg("outliers", cap)?,
        );
        let (thr, cols, vals, count_buf) = if cap > 0 {
            let thr = self.empty(rows);
            let (cols, vals, count) = (
                self.empty(rows * cap),
                self.empty(rows * cap),
                self.empty(rows),
            );
            let (cc, cd) = grid_1d(rows)?;
            kernels::row_outliers::launch::<R>(
                &self.client,
                cc,
                cd,
                array(x),
                array(&thr),
                array(&cols),
                array(&vals),
                array(&count),
                m32,
                k32,
                cap32,
                OUTLIER_RATIO,
            );
            (thr, cols, vals, count)
        } else {
            // Not read by the kernels when `cap` is 0.
            (self.empty(1), self.empty(1), self.empty(1), self.empty(1))
        };
        let (xq, xd) = (self.empty(rows * k / 4), self.empty(rows * k / QK));
        let (cc, cd) = grid_1d(rows * k / QK)?;
        kernels::quantize_blocks::launch::<R>(
            &self.client,
            cc,
            cd,
            array(x),
            array(&thr),
            array(&xq),
            array(&xd),
            m32,
            k32,
            u32::from(cap > 0),
        );
        // 64 x 64 tiles where there are rows enough to fill them (encoder batches); 16 x 16
        // ones for a few rows, so that a short product still spreads over many cubes.
        let wide = rows >= matmul_q8::WIDE as usize;
        let tile = if wide {
            matmul_q8::WIDE
        } else {
            matmul_q8::TILE
        } as usize;
        let (gx, gy) = (n.div_ceil(tile), rows.div_ceil(tile));
        if gx > MAX_CUBES as usize || gy > MAX_CUBES as usize {
            return Err(OpError::Shape(format!(
                "a {rows}x{n} product is more than one launch covers"
            )));
        }
        let dummy;
        let bias_buf = match bias {
            Some(b) => b,
            None => {
                dummy = self.empty(1);
                &dummy
            }
        };
        let count = CubeCount::Static(gx as u32, gy as u32, 1);
        let dim = CubeDim::new_2d(matmul_q8::TILE, matmul_q8::TILE);
        let has_bias = u32::from(bias.is_some());
        if wide {
            matmul_q8::matmul_q8_wide::launch::<R>(
                &self.client,
                count,
                dim,
                array(&xq),
                array(&xd),
                array(&w.q),
                array(&w.d),
                array(bias_buf),
                array(&cols),
                array(&vals),
                array(&count_buf),
                array(out),
                m32,
                n32,
                k32,
                cap32,
                has_bias,
            );
        } else {
            matmul_q8::matmul_q8::launch::<R>(
                &self.client,
                count,
                dim,
                array(&xq),
                array(&xd),
                array(&w.q),
                array(&w.d),
                array(bias_buf),
                array(&cols),
                array(&vals),
                array(&count_buf),
                array(out),
                m32,
                n32,
                k32,
                cap32,
                has_bias,
            );
        }
        Ok(())
    }

    /// Layer norm of each row of `x` (rows of `dim`), after adding `delta` when given.
    pub(crate) fn layer_norm(
        &self,
        x: &GpuBuffer,
        delta: Option<&GpuBuffer>,
        dim: usize,
        gamma: &GpuBuffer,
        beta: &GpuBuffer,
        eps: f32,
    ) -> Result<(), OpError> {
        if dim == 0 || !x.len.is_multiple_of(dim) {
            return Err(OpError::Shape(format!(
                "layer norm input of {} values is not rows of {dim}",
                x.len
            )));
        }
        OpError::check("layer norm gamma", gamma.len, dim)?;
        OpError::check("layer norm beta", beta.len, dim)?;
        if let Some(d) = delta {
            OpError::check("residual", d.len, x.len)?;
        }
        let rows = x.len / dim;
        let (cc, cd) = grid_rows(rows)?;
        let dummy;
        let d = match delta {
            Some(d) => d,
            None => {
                dummy = self.empty(1);
                &dummy
            }
        };
        kernels::layer_norm::launch::<R>(
            &self.client,
            cc,
            cd,
            array(x),
            array(d),
            array(gamma),
            array(beta),
            arg("rows", rows)?,
            arg("dim", dim)?,
            eps,
            u32::from(delta.is_some()),
        );
        Ok(())
    }

    /// GELU of every value of `x`, in place.
    pub(crate) fn gelu(&self, x: &GpuBuffer) -> Result<(), OpError> {
        let (cc, cd) = grid_1d(x.len)?;
        kernels::gelu::launch::<R>(&self.client, cc, cd, array(x), arg("length", x.len)?);
        Ok(())
    }

    /// CLIP's `quick_gelu` of `x`, in place.
    pub(crate) fn quick_gelu(&self, x: &GpuBuffer) -> Result<(), OpError> {
        let (cc, cd) = grid_1d(x.len)?;
        kernels::quick_gelu::launch::<R>(&self.client, cc, cd, array(x), arg("length", x.len)?);
        Ok(())
    }

    /// Attention over `qkv` (see [`super::GpuAttention`]) into `out`.
    pub(crate) fn attention(
        &self,
        a: &super::GpuAttention<'_>,
        out: &GpuBuffer,
    ) -> Result<(), OpError> {
        let hidden = a.heads * a.head_dim;
        let rows = a.batch * a.seq;
        if a.heads == 0 || a.head_dim == 0 {
            return Err(OpError::Shape(
                "attention needs heads and a head size".into(),
            ));
        }
        let last = [a.q_off, a.k_off, a.v_off].into_iter().max().unwrap_or(0) + hidden;
        if last > a.stride {
            return Err(OpError::Shape(format!(
                "q/k/v offsets {}/{}/{} with rows of {hidden} do not fit a row stride of {}",
                a.q_off, a.k_off, a.v_off, a.stride
            )));
        }
        OpError::check("attention q/k/v", a.qkv.len, rows * a.stride)?;
        OpError::check("attention mask", a.mask.len, rows)?;
        OpError::check("attention output", out.len, rows * hidden)?;
        let scale = 1.0 / (a.head_dim as f32).sqrt();
        let (before, after) = crate::backend::key_reach(a.window, a.causal, a.seq);
        if a.head_dim <= kernels::ATT_MAX_HD as usize {
            let blocks = a.seq.div_ceil(kernels::ATT_Q as usize);
            let (cc, _) = grid_rows(a.batch * a.heads * blocks)?;
            kernels::attention_tiled::launch::<R>(
                &self.client,
                cc,
                CubeDim::new_1d(kernels::ATT_Q),
                array(a.qkv),
                array(a.mask),
                array(out),
                arg("q offset", a.q_off)?,
                arg("k offset", a.k_off)?,
                arg("v offset", a.v_off)?,
                arg("stride", a.stride)?,
                arg("batch", a.batch)?,
                arg("seq", a.seq)?,
                arg("heads", a.heads)?,
                arg("head size", a.head_dim)?,
                scale,
                arg("window", before)?,
                arg("window", after)?,
            );
            return Ok(());
        }
        let (cc, cd) = grid_1d(a.batch * a.heads * a.seq)?;
        kernels::attention::launch::<R>(
            &self.client,
            cc,
            cd,
            array(a.qkv),
            array(a.mask),
            array(out),
            arg("q offset", a.q_off)?,
            arg("k offset", a.k_off)?,
            arg("v offset", a.v_off)?,
            arg("stride", a.stride)?,
            arg("batch", a.batch)?,
            arg("seq", a.seq)?,
            arg("heads", a.heads)?,
            arg("head size", a.head_dim)?,
            scale,
            arg("window", before)?,
            arg("window", after)?,
        );
        Ok(())
    }
}

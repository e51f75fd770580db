//! Launches of the decoder's ops and the embedding gather (see `decoder_kernels`).

use cubecl::prelude::*;

use super::decoder_kernels as k;
use super::ops::{arg, array, grid_1d, grid_rows, Gpu, MAX_CUBES};
use super::{GpuBuffer, GpuMatrix};
use crate::ops::{OpError, RopeStyle};

impl<R: Runtime> Gpu<R> {
    /// RMS norm of each row of `x` into `out` (rows of `gamma.len`).
    pub(crate) fn rms_norm(
        &self,
        x: &GpuBuffer,
        out: &GpuBuffer,
        gamma: &GpuBuffer,
        eps: f32,
    ) -> Result<(), OpError> {
        let dim = gamma.len;
        OpError::check("rms norm output", out.len, x.len)?;
        if dim == 0 || !x.len.is_multiple_of(dim) {
            return Err(OpError::Shape(format!(
                "rms norm: {} values are not rows of {dim}",
                x.len
            )));
        }
        let rows = x.len / dim;
        let (cc, cd) = grid_rows(rows)?;
        k::rms_norm::launch::<R>(
            &self.client,
            cc,
            cd,
            array(x),
            array(out),
            array(gamma),
            arg("rows", rows)?,
            arg("dim", dim)?,
            eps,
        );
        Ok(())
    }

    /// `gate = silu(gate) * up`.
    pub(crate) fn silu_mul(&self, gate: &GpuBuffer, up: &GpuBuffer) -> Result<(), OpError> {
        self.pairwise("swiglu up", gate, up, |c, cc, cd, x, y, n| {
            k::silu_mul::launch::<R>(c, cc, cd, x, y, n);
        })
    }

    /// `gate = gelu_tanh(gate) * up`.
    pub(crate) fn gelu_tanh_mul(&self, gate: &GpuBuffer, up: &GpuBuffer) -> Result<(), OpError> {
        self.pairwise("geglu up", gate, up, |c, cc, cd, x, y, n| {
            k::gelu_tanh_mul::launch::<R>(c, cc, cd, x, y, n);
        })
    }

    /// Rotary embeddings of `x` (rows of `heads * head_dim`, the first at `pos0`), in place.
    pub(crate) fn rope(
        &self,
        x: &GpuBuffer,
        heads: usize,
        head_dim: usize,
        pos0: usize,
        inv_freq: &GpuBuffer,
        style: RopeStyle,
    ) -> Result<(), OpError> {
        let width = heads * head_dim;
        let rows = x.len.checked_div(width).unwrap_or(0);
        self.rope_rows(
            x,
            width,
            heads,
            head_dim,
            pos0,
            rows.max(1),
            inv_freq,
            style,
        )
    }

    /// Rotary embeddings of an encoder's padded batch: rows of `stride`, the first
    /// `heads * head_dim` values rotated, row `i` at position `i % seq`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rope_texts(
        &self,
        x: &GpuBuffer,
        stride: usize,
        heads: usize,
        head_dim: usize,
        seq: usize,
        inv_freq: &GpuBuffer,
        style: RopeStyle,
    ) -> Result<(), OpError> {
        if seq == 0 || !x.len.is_multiple_of(stride.max(1) * seq) {
            return Err(OpError::Shape(format!(
                "rope: {} values are not texts of {seq} rows of {stride}",
                x.len
            )));
        }
        self.rope_rows(x, stride, heads, head_dim, 0, seq, inv_freq, style)
    }

    /// Rows of `stride` whose first `heads * head_dim` values are rotated, row `i` at
    /// position `pos0 + i % period`.
    #[allow(clippy::too_many_arguments)]
    fn rope_rows(
        &self,
        x: &GpuBuffer,
        stride: usize,
        heads: usize,
        head_dim: usize,
        pos0: usize,
        period: usize,
        inv_freq: &GpuBuffer,
        style: RopeStyle,
    ) -> Result<(), OpError> {
        let width = heads * head_dim;
        let half = inv_freq.len;
        if width == 0
            || width > stride
            || !x.len.is_multiple_of(stride)
            || 2 * half > head_dim
            || half == 0
        {
            return Err(OpError::Shape(format!(
                "rope: {} values, rows of {stride}, {heads} heads of {head_dim}, {half} \
                 frequencies",
                x.len
            )));
        }
        let rows = x.len / stride;
        arg("last position", pos0 + rows)?;
        let (cc, cd) = grid_1d(rows * heads * half)?;
        k::rope::launch::<R>(
            &self.client,
            cc,
            cd,
            array(x),
            array(inv_freq),
            arg("rows", rows)?,
            arg("row stride", stride)?,
            arg("heads", heads)?,
            arg("head size", head_dim)?,
            arg("frequencies", half)?,
            arg("position", pos0)?,
            arg("positions", period)?,
            u32::from(style == RopeStyle::Interleaved),
        );
        Ok(())
    }

    /// Rows `ids` of the Q8_0 table `t` (`t.n` rows of `t.k`) into `out`, as f32.
    pub(crate) fn gather(
        &self,
        t: &GpuMatrix,
        ids: &[u32],
        out: &GpuBuffer,
    ) -> Result<(), OpError> {
        OpError::check("embedding output", out.len, ids.len() * t.k)?;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= t.n) {
            return Err(OpError::TokenId { id, vocab: t.n });
        }
        arg("table values", t.n * t.k)?;
        let ids_buf = self.upload_u32(ids);
        let (cc, cd) = grid_1d(ids.len() * t.k)?;
        k::gather_q8::launch::<R>(
            &self.client,
            cc,
            cd,
            array(&t.q),
            array(&t.d),
            array(&ids_buf),
            array(out),
            arg("ids", ids.len())?,
            arg("dim", t.k)?,
        );
        Ok(())
    }

    /// The index of the largest value of each row of `width` values of `x`.
    pub(crate) fn argmax(&self, x: &GpuBuffer, width: usize) -> Result<Vec<u32>, OpError> {
        if width == 0 || !x.len.is_multiple_of(width) {
            return Err(OpError::Shape(format!(
                "argmax: {} values are not rows of {width}",
                x.len
            )));
        }
        let rows = x.len / width;
        arg("argmax values", x.len)?;
        if rows > MAX_CUBES as usize {
            return Err(OpError::Shape(format!(
                "argmax of {rows} rows in one launch"
            )));
        }
        let out = self.empty(rows);
        k::argmax::launch::<R>(
            &self.client,
            CubeCount::Static(rows.max(1) as u32, 1, 1),
            CubeDim::new_1d(k::ARGMAX_UNITS),
            array(x),
            array(&out),
            arg("row width", width)?,
        );
        // The kernel wrote u32 indices: their bits, read back through the f32 download.
        Ok(self.download(&out)?.into_iter().map(f32::to_bits).collect())
    }

    /// `len` values of `src` from `src_at` into `dst` at `dst_at` (checked by the caller).
    pub(crate) fn copy(
        &self,
        src: &GpuBuffer,
        src_at: usize,
        dst: &GpuBuffer,
        dst_at: usize,
        len: usize,
    ) -> Result<(), OpError> {
        if len == 0 {
            return Ok(());
        }
        arg("copy end", (src_at + len).max(dst_at + len))?;
        let (cc, cd) = grid_1d(len)?;
        k::copy::launch::<R>(
            &self.client,
            cc,
            cd,
            array(src),
            array(dst),
            arg("copy source", src_at)?,
            arg("copy destination", dst_at)?,
            arg("copy length", len)?,
        );
        Ok(())
    }

    /// `a *= b`.
    pub(crate) fn mul(&self, a: &GpuBuffer, b: &GpuBuffer) -> Result<(), OpError> {
        self.pairwise("mul operand", a, b, |c, cc, cd, x, y, n| {
            k::mul::launch::<R>(c, cc, cd, x, y, n);
        })
    }

    /// `a += b`.
    pub(crate) fn add(&self, a: &GpuBuffer, b: &GpuBuffer) -> Result<(), OpError> {
        self.pairwise("add operand", a, b, |c, cc, cd, x, y, n| {
            k::add::launch::<R>(c, cc, cd, x, y, n);
        })
    }

    /// An elementwise kernel of two operands of one length (`what` names the second in an
    /// error), one unit per value of the first.
    fn pairwise(
        &self,
        what: &str,
        a: &GpuBuffer,
        b: &GpuBuffer,
        launch: impl FnOnce(&ComputeClient<R>, CubeCount, CubeDim, ArrayArg<R>, ArrayArg<R>, u32),
    ) -> Result<(), OpError> {
        OpError::check(what, b.len, a.len)?;
        let (cc, cd) = grid_1d(a.len)?;
        launch(
            &self.client,
            cc,
            cd,
            array(a),
            array(b),
            arg("length", a.len)?,
        );
        Ok(())
    }
}

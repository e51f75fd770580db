//! The GPU backend under the contract ([`Backend`]): tensors are GPU buffers, weights repacked
//! and uploaded once (Q8_0 int8 words for an encoder's int8 products; the stored blocks for a
//! decoder's f32 products), the KV cache in GPU memory as f16.

use crate::backend::{Act, Backend, EncoderAttention, KvShape, Op, PreparedMatrix, WeightSource};
use crate::ops::{ActQuant, OpError, RopeStyle};
use crate::{quant, DType};

use super::{GpuAttention, GpuBackend, GpuBlocks, GpuBuffer, GpuKvCache, GpuMatrix};

/// A weight matrix on the GPU with its bias, in the layout its products need.
pub struct GpuLinear {
    w: Weights,
    bias: Option<GpuBuffer>,
}

enum Weights {
    /// Q8_0 words for int8 activations (with or without outlier columns).
    Int8(GpuMatrix, ActQuant),
    /// The stored values for f32 activations.
    F32(GpuBlocks),
    /// A matrix larger than one device buffer (Gemma 3's tied head of 262,144 rows is 160 MiB
    /// of int8 values; lavapipe binds 128 MiB): blocks of rows, each its own matrix from row
    /// `.0` on, whose products are copied into their columns of the output.
    Rows(Vec<(usize, GpuLinear)>, usize, usize),
}

impl PreparedMatrix for GpuLinear {
    fn n(&self) -> usize {
        match &self.w {
            Weights::Int8(w, _) => w.n,
            Weights::F32(w) => w.n,
            Weights::Rows(_, n, _) => *n,
        }
    }

    fn k(&self) -> usize {
        match &self.w {
            Weights::Int8(w, _) => w.k,
            Weights::F32(w) => w.k,
            Weights::Rows(_, _, k) => *k,
        }
    }

    fn owned_bytes(&self) -> usize {
        // Device memory: the repacked values and scales, and the bias.
        let w = match &self.w {
            Weights::Int8(w, _) => w.n * w.k + w.n * w.k / quant::QK * 4,
            Weights::F32(w) => w.bytes(),
            Weights::Rows(parts, _, _) => parts.iter().map(|(_, p)| p.owned_bytes()).sum(),
        };
        w + self.bias.as_ref().map_or(0, |b| b.len() * 4)
    }
}

impl GpuBackend {
    /// `w` in blocks of rows that each fit one device buffer, or `None` when it fits whole.
    fn split_rows(&self, w: &WeightSource<'_>) -> Result<Option<GpuLinear>, OpError> {
        // Bytes per value on the device, at most: f32 where the blocks are decoded at upload,
        // a byte for Q8_0 words and the block kinds the kernels read as stored.
        let per_value = if w.act == ActQuant::F32 && !w.dtype.format().gpu_blocks {
            4
        } else {
            1
        };
        let row_bytes = (w.k as u64 * per_value).max(1);
        let max_rows = (self.max_buffer_bytes() / row_bytes) as usize;
        if w.n <= max_rows {
            return Ok(None);
        }
        if max_rows == 0 {
            return Err(OpError::OutOfMemory(format!(
                "a row of {} values is larger than the device's largest buffer",
                w.k
            )));
        }
        let stored = w
            .dtype
            .bytes_for(w.k as u64)
            .ok_or_else(|| OpError::Shape(format!("rows of {} {} values", w.k, w.dtype)))?
            as usize;
        let mut parts = Vec::with_capacity(w.n.div_ceil(max_rows));
        for r0 in (0..w.n).step_by(max_rows) {
            let n = max_rows.min(w.n - r0);
            let data = w.data.get(r0 * stored..(r0 + n) * stored).ok_or_else(|| {
                OpError::Shape(format!(
                    "{} bytes of weights for {} rows",
                    w.data.len(),
                    w.n
                ))
            })?;
            let bias = match w.bias {
                Some(b) => Some(b.get(r0..r0 + n).ok_or_else(|| {
                    OpError::Shape(format!("a bias of {} values for {} rows", b.len(), w.n))
                })?),
                None => None,
            };
            let part = WeightSource {
                data,
                storage: None,
                n,
                bias,
                ..*w
            };
            parts.push((r0, self.prepare(part)?));
        }
        Ok(Some(GpuLinear {
            w: Weights::Rows(parts, w.n, w.k),
            bias: None,
        }))
    }

    fn unsupported(&self, what: impl Into<String>) -> OpError {
        OpError::Unsupported {
            what: what.into(),
            backend: self.to_string(),
        }
    }
}

impl Backend for GpuBackend {
    type Tensor = GpuBuffer;
    type Buffer = Box<GpuBuffer>;
    type Matrix = GpuLinear;
    type Vector = GpuBuffer;
    type KvCache = GpuKvCache;

    fn describe(&self) -> String {
        self.to_string()
    }

    /// Every op of the contract; f32 products of every weight type the GPU repacks, int8
    /// products of the quantized ones (float weights for int8 products are refused: a Q8_0
    /// conversion of the model runs there).
    fn supports(&self, op: Op) -> bool {
        match op {
            Op::Linear(ActQuant::F32, dtype) => dtype.format().linear_gpu,
            Op::Linear(_, dtype) => dtype.format().linear_gpu && dtype.is_quantized(),
            _ => true,
        }
    }

    fn prepare(&self, w: WeightSource<'_>) -> Result<GpuLinear, OpError> {
        if let Some(split) = self.split_rows(&w)? {
            return Ok(split);
        }
        let bias = match w.bias {
            Some(b) => {
                OpError::check("bias", b.len(), w.n)?;
                Some(self.upload(b))
            }
            None => None,
        };
        if w.act == ActQuant::F32 {
            return Ok(GpuLinear {
                w: Weights::F32(self.upload_blocks(w.dtype, w.data, w.n, w.k)?),
                bias,
            });
        }
        let q8 = match w.dtype {
            DType::Q8_0 => std::borrow::Cow::Borrowed(w.data),
            dt if dt.is_quantized() => std::borrow::Cow::Owned(
                quant::requantize_q8_0(dt, w.data).map_err(|e| OpError::Shape(e.to_string()))?,
            ),
            other => {
                return Err(self.unsupported(format!(
                    "{other} weights (the GPU runs quantized ones; a Q8_0 conversion of the \
                     model runs there)"
                )))
            }
        };
        Ok(GpuLinear {
            w: Weights::Int8(self.upload_q8_0(&q8, w.n, w.k)?, w.act),
            bias,
        })
    }

    fn vector(&self, v: &[f32]) -> GpuBuffer {
        self.upload(v)
    }

    fn upload(&self, x: Vec<f32>) -> Box<GpuBuffer> {
        self.transfers.note();
        Box::new(GpuBackend::upload(self, &x))
    }

    fn download(&self, x: Box<GpuBuffer>) -> Result<Vec<f32>, OpError> {
        self.transfers.note();
        GpuBackend::download(self, &x)
    }

    fn transfers(&self) -> u64 {
        self.transfers.get()
    }

    fn copy(
        &self,
        src: &GpuBuffer,
        src_at: usize,
        dst: &mut GpuBuffer,
        dst_at: usize,
        len: usize,
    ) -> Result<(), OpError> {
        GpuBackend::copy(self, src, src_at, dst, dst_at, len)
    }

    fn buffer(&self, len: usize) -> Box<GpuBuffer> {
        Box::new(self.empty(len))
    }

    fn resize(&self, b: &mut Box<GpuBuffer>, len: usize) {
        if b.len() != len {
            **b = self.empty(len);
        }
    }

    fn len(&self, x: &GpuBuffer) -> usize {
        x.len()
    }

    fn linear(
        &self,
        x: &GpuBuffer,
        rows: usize,
        w: &GpuLinear,
        out: &mut GpuBuffer,
    ) -> Result<(), OpError> {
        match &w.w {
            Weights::Int8(m, act) => {
                GpuBackend::linear(self, x, rows, m, w.bias.as_ref(), *act, out)
            }
            Weights::F32(m) => self.linear_f32(x, rows, m, w.bias.as_ref(), out),
            Weights::Rows(parts, n, _) => {
                OpError::check("linear output", out.len, rows * n)?;
                for (r0, part) in parts {
                    let np = part.n();
                    let mut tmp = self.buffer(rows * np);
                    Backend::linear(self, x, rows, part, &mut tmp)?;
                    for r in 0..rows {
                        self.copy(&tmp, r * np, out, r * n + r0, np)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn layer_norm(
        &self,
        x: &mut GpuBuffer,
        residual: Option<&GpuBuffer>,
        dim: usize,
        gamma: &GpuBuffer,
        beta: &GpuBuffer,
        eps: f32,
    ) -> Result<(), OpError> {
        GpuBackend::layer_norm(self, x, residual, dim, gamma, beta, eps)
    }

    fn activate(&self, x: &mut GpuBuffer, act: Act) -> Result<(), OpError> {
        match act {
            Act::Gelu => self.gelu(x),
            Act::QuickGelu => self.quick_gelu(x),
            // A classifier's few values: through the host.
            Act::Tanh | Act::Relu => {
                let mut v = GpuBackend::download(self, x)?;
                match act {
                    Act::Tanh => v.iter_mut().for_each(|a| *a = a.tanh()),
                    _ => v.iter_mut().for_each(|a| *a = a.max(0.0)),
                }
                *x = GpuBackend::upload(self, &v);
                Ok(())
            }
        }
    }

    fn attention(
        &self,
        a: &EncoderAttention<'_, GpuBuffer>,
        out: &mut GpuBuffer,
    ) -> Result<(), OpError> {
        if !(std::ptr::eq(a.q, a.k) && std::ptr::eq(a.k, a.v)) {
            return Err(self.unsupported("attention over separate q, k and v buffers"));
        }
        let mask: Vec<u32> = a.mask.iter().map(|&m| u32::from(m)).collect();
        let mask = self.upload_u32(&mask);
        let [q_off, k_off, v_off] = a.offsets;
        let att = GpuAttention {
            qkv: a.q,
            q_off,
            k_off,
            v_off,
            stride: a.stride,
            mask: &mask,
            batch: a.batch,
            seq: a.seq,
            heads: a.heads,
            head_dim: a.head_dim,
            causal: a.causal,
            window: a.window,
        };
        GpuBackend::attention(self, &att, out)
    }

    fn rms_norm(
        &self,
        x: &GpuBuffer,
        out: &mut GpuBuffer,
        dim: usize,
        gamma: &GpuBuffer,
        eps: f32,
    ) -> Result<(), OpError> {
        OpError::check("rms norm weight", gamma.len(), dim)?;
        GpuBackend::rms_norm(self, x, out, gamma, eps)
    }

    fn silu_mul(&self, gate: &mut GpuBuffer, up: &GpuBuffer) -> Result<(), OpError> {
        GpuBackend::silu_mul(self, gate, up)
    }

    fn gelu_tanh_mul(&self, gate: &mut GpuBuffer, up: &GpuBuffer) -> Result<(), OpError> {
        GpuBackend::gelu_tanh_mul(self, gate, up)
    }

    fn add(&self, a: &mut GpuBuffer, b: &GpuBuffer) -> Result<(), OpError> {
        GpuBackend::add(self, a, b)
    }

    fn mul(&self, a: &mut GpuBuffer, b: &GpuBuffer) -> Result<(), OpError> {
        GpuBackend::mul(self, a, b)
    }

    fn argmax(&self, x: &GpuBuffer, width: usize) -> Result<Vec<u32>, OpError> {
        self.transfers.note();
        GpuBackend::argmax(self, x, width)
    }

    fn rope(
        &self,
        x: &mut GpuBuffer,
        heads: usize,
        head_dim: usize,
        pos0: usize,
        inv_freq: &GpuBuffer,
        style: RopeStyle,
    ) -> Result<(), OpError> {
        GpuBackend::rope(self, x, heads, head_dim, pos0, inv_freq, style)
    }

    fn rope_texts(
        &self,
        x: &mut GpuBuffer,
        stride: usize,
        heads: usize,
        head_dim: usize,
        seq: usize,
        inv_freq: &GpuBuffer,
        style: RopeStyle,
    ) -> Result<(), OpError> {
        GpuBackend::rope_texts(self, x, stride, heads, head_dim, seq, inv_freq, style)
    }

    fn kv_cache(&self, shape: KvShape) -> Result<GpuKvCache, OpError> {
        GpuBackend::kv_cache(self, shape)
    }

    fn kv_append(
        &self,
        cache: &mut GpuKvCache,
        layer: usize,
        pos0: usize,
        k: &GpuBuffer,
        v: &GpuBuffer,
    ) -> Result<(), OpError> {
        GpuBackend::kv_append(self, cache, layer, pos0, k, v)
    }

    fn causal_attention(
        &self,
        q: &GpuBuffer,
        cache: &GpuKvCache,
        layer: usize,
        pos0: usize,
        heads: usize,
        out: &mut GpuBuffer,
    ) -> Result<(), OpError> {
        GpuBackend::causal_attention(self, q, cache, layer, pos0, heads, out)
    }
}

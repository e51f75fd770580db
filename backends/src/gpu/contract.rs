//! The GPU backend under the contract ([`Backend`]): tensors are GPU buffers, weights Q8_0
//! repacked and uploaded once. Decoder ops that need a KV cache on the GPU (and f32-activation
//! products over stored blocks) are not here yet: [`Backend::supports`] says so, and the ops
//! answer [`OpError::Unsupported`].

use crate::backend::{Act, Backend, EncoderAttention, KvShape, Op, PreparedMatrix, WeightSource};
use crate::ops::{ActQuant, OpError, RopeStyle};
use crate::{quant, DType};

use super::{GpuAttention, GpuBackend, GpuBuffer, GpuMatrix};

/// A weight matrix on the GPU with its bias and how its input is quantized.
pub struct GpuLinear {
    w: GpuMatrix,
    bias: Option<GpuBuffer>,
    act: ActQuant,
}

impl PreparedMatrix for GpuLinear {
    fn n(&self) -> usize {
        self.w.n
    }

    fn k(&self) -> usize {
        self.w.k
    }

    fn owned_bytes(&self) -> usize {
        // Device memory: int8 values and an f32 scale per 32, and the bias.
        self.w.n * self.w.k
            + self.w.n * self.w.k / quant::QK * 4
            + self.bias.as_ref().map_or(0, |b| b.len() * 4)
    }
}

/// No KV cache lives on the GPU yet ([`Op::CausalAttention`] is unsupported).
pub enum GpuKvCache {}

impl GpuBackend {
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

    fn supports(&self, op: Op) -> bool {
        !matches!(op, Op::LinearF32 | Op::Add | Op::CausalAttention)
    }

    fn prepare(&self, w: WeightSource<'_>) -> Result<GpuLinear, OpError> {
        if w.act == ActQuant::F32 {
            return Err(self.unsupported("f32 activations against stored blocks"));
        }
        let q8 = match w.dtype {
            DType::Q8_0 => std::borrow::Cow::Borrowed(w.data),
            DType::Q4_0 | DType::Q4_1 => {
                let mut f = vec![0f32; w.n * w.k];
                quant::dequantize(w.dtype, w.data, &mut f)
                    .map_err(|e| OpError::Shape(e.to_string()))?;
                std::borrow::Cow::Owned(
                    quant::quantize_q8_0_vec(&f).map_err(|e| OpError::Shape(e.to_string()))?,
                )
            }
            other => {
                return Err(self.unsupported(format!(
                    "{other} weights (the GPU runs quantized ones; a Q8_0 conversion of the \
                     model runs there)"
                )))
            }
        };
        let bias = match w.bias {
            Some(b) => {
                OpError::check("bias", b.len(), w.n)?;
                Some(self.upload(b))
            }
            None => None,
        };
        Ok(GpuLinear {
            w: self.upload_q8_0(&q8, w.n, w.k)?,
            bias,
            act: w.act,
        })
    }

    fn vector(&self, v: &[f32]) -> GpuBuffer {
        self.upload(v)
    }

    fn upload(&self, x: Vec<f32>) -> Box<GpuBuffer> {
        Box::new(GpuBackend::upload(self, &x))
    }

    fn download(&self, x: Box<GpuBuffer>) -> Result<Vec<f32>, OpError> {
        GpuBackend::download(self, &x)
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
        GpuBackend::linear(self, x, rows, &w.w, w.bias.as_ref(), w.act, out)
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

    fn add(&self, _a: &mut GpuBuffer, _b: &GpuBuffer) -> Result<(), OpError> {
        Err(self.unsupported("add"))
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

    fn kv_cache(&self, _shape: KvShape) -> Result<GpuKvCache, OpError> {
        Err(self.unsupported("a KV cache (decoders)"))
    }

    fn kv_append(
        &self,
        cache: &mut GpuKvCache,
        _layer: usize,
        _pos0: usize,
        _k: &GpuBuffer,
        _v: &GpuBuffer,
    ) -> Result<(), OpError> {
        match *cache {}
    }

    fn causal_attention(
        &self,
        _q: &GpuBuffer,
        cache: &GpuKvCache,
        _layer: usize,
        _pos0: usize,
        _heads: usize,
        _out: &mut GpuBuffer,
    ) -> Result<(), OpError> {
        match *cache {}
    }
}

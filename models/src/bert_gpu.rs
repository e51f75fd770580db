//! BERT's encoder blocks on a GPU. Every block's weights are uploaded once, when the model is
//! loaded for a GPU device; a run of blocks uploads its input activation once, keeps every
//! intermediate on the GPU, and reads back only the last block's output. Token embeddings,
//! pooling and the classification head stay on the host (a gather and a few vectors).

use std::ops::Range;

use edgecut_backends::gpu::{GpuAttention, GpuBackend, GpuBuffer, GpuMatrix};
use edgecut_backends::ops::ActQuant;
use edgecut_runtime::gguf::GgufFile;

use crate::bert::{Activation, BertConfig, Block, Norm, Qkv};
use crate::error::{ModelError, Result};
use crate::weights::Matrix;

/// A linear layer on the GPU.
struct Linear {
    w: GpuMatrix,
    bias: Option<GpuBuffer>,
    act: ActQuant,
}

/// A layer norm's parameters on the GPU.
struct GpuNorm {
    gamma: GpuBuffer,
    beta: GpuBuffer,
}

/// One encoder block on the GPU; q, k and v always stacked into one matrix.
struct GpuBlock {
    qkv: Linear,
    o: Linear,
    attn_norm: GpuNorm,
    up: Linear,
    down: Linear,
    out_norm: GpuNorm,
}

/// Every encoder block of a model, uploaded.
pub(crate) struct GpuEncoder {
    blocks: Vec<GpuBlock>,
}

/// Q8_0 bytes of `m`, or the error that the GPU backend needs them.
fn q8<'a>(m: &'a Matrix, f: &'a GgufFile, what: &str) -> Result<&'a [u8]> {
    m.q8_0(f).ok_or_else(|| {
        ModelError::Unsupported(format!(
            "the GPU backend runs Q8_0 weights, and {what} is stored otherwise: a Q8_0 \
             conversion of the model runs there, any runs on the CPU"
        ))
    })
}

fn linear(gpu: &GpuBackend, f: &GgufFile, parts: &[&Matrix], what: &str) -> Result<Linear> {
    let k = parts[0].k;
    let n: usize = parts.iter().map(|m| m.n).sum();
    let mut bytes = Vec::new();
    let mut bias = Vec::new();
    for m in parts {
        bytes.extend_from_slice(q8(m, f, what)?);
        if let Some(b) = m.bias() {
            bias.extend_from_slice(b);
        }
    }
    let bias = match bias.len() {
        0 => None,
        l if l == n => Some(gpu.upload(&bias)),
        _ => {
            return Err(ModelError::Input(format!(
                "{what}: some parts have a bias and some do not"
            )))
        }
    };
    Ok(Linear {
        w: gpu.upload_q8_0(&bytes, n, k).map_err(ModelError::from)?,
        bias,
        act: parts[0].act,
    })
}

fn norm(gpu: &GpuBackend, n: &Norm) -> GpuNorm {
    GpuNorm {
        gamma: gpu.upload(&n.gamma),
        beta: gpu.upload(&n.beta),
    }
}

impl GpuEncoder {
    /// Uploads `blocks` (from the file `f`) to `gpu`.
    pub(crate) fn upload(gpu: &GpuBackend, f: &GgufFile, blocks: &[Block]) -> Result<Self> {
        let blocks = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let what = |n: &str| format!("blk.{i}.{n}");
                let qkv: Vec<&Matrix> = match &b.qkv {
                    Qkv::Stacked(m) => vec![m],
                    Qkv::Separate(p) => p.iter().collect(),
                };
                Ok(GpuBlock {
                    qkv: linear(gpu, f, &qkv, &what("attn_qkv"))?,
                    o: linear(gpu, f, &[&b.o], &what("attn_output"))?,
                    attn_norm: norm(gpu, &b.attn_norm),
                    up: linear(gpu, f, &[&b.up], &what("ffn_up"))?,
                    down: linear(gpu, f, &[&b.down], &what("ffn_down"))?,
                    out_norm: norm(gpu, &b.out_norm),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GpuEncoder { blocks })
    }

    /// Runs blocks `range` (within the model: `Bert::blocks` checks) on `a`, in place.
    pub(crate) fn run(
        &self,
        gpu: &GpuBackend,
        cfg: &BertConfig,
        range: Range<usize>,
        a: &mut Activation,
    ) -> Result<()> {
        let (h, rows) = (cfg.hidden, a.batch * a.seq);
        let x = gpu.upload(&a.hidden);
        let mask: Vec<u32> = a.mask.iter().map(|&m| u32::from(m)).collect();
        let mask = gpu.upload_u32(&mask);
        let qkv = gpu.empty(rows * 3 * h);
        let ctx = gpu.empty(rows * h);
        let o = gpu.empty(rows * h);
        let up = gpu.empty(rows * cfg.ffn);
        let lin = |l: &Linear, x: &GpuBuffer, out: &GpuBuffer| {
            gpu.linear(x, rows, &l.w, l.bias.as_ref(), l.act, out)
                .map_err(ModelError::from)
        };
        for b in &self.blocks[range] {
            lin(&b.qkv, &x, &qkv)?;
            let att = GpuAttention {
                qkv: &qkv,
                q_off: 0,
                k_off: h,
                v_off: 2 * h,
                stride: 3 * h,
                mask: &mask,
                batch: a.batch,
                seq: a.seq,
                heads: cfg.heads,
                head_dim: h / cfg.heads,
            };
            gpu.attention(&att, &ctx).map_err(ModelError::from)?;
            lin(&b.o, &ctx, &o)?;
            let n = &b.attn_norm;
            gpu.layer_norm(&x, Some(&o), h, &n.gamma, &n.beta, cfg.eps)
                .map_err(ModelError::from)?;
            lin(&b.up, &x, &up)?;
            gpu.gelu(&up).map_err(ModelError::from)?;
            lin(&b.down, &up, &o)?;
            let n = &b.out_norm;
            gpu.layer_norm(&x, Some(&o), h, &n.gamma, &n.beta, cfg.eps)
                .map_err(ModelError::from)?;
        }
        a.hidden = gpu.download(&x).map_err(ModelError::from)?;
        Ok(())
    }
}

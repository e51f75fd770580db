//! `edgecut convert`: Hugging Face checkpoints and llama.cpp GGUF files to edgecut's GGUF layout.
//!
//! Matmul weights and embedding tables (every tensor with two or more dimensions whose rows are
//! whole Q8_0 blocks) take the chosen type (Q8_0 by default); norms, biases and other vectors stay
//! F32. Names and keys are llama.cpp's; what llama.cpp lacks goes under `edgecut.*`. Data is
//! converted one tensor at a time and written to a temporary file renamed into place at the end,
//! so a failed conversion leaves nothing behind.

mod bert;
mod clip;
mod decoder;
mod from_gguf;
pub mod hf;
mod modern_bert;
mod pooling;
mod tokenizer_meta;

use std::borrow::Cow;
use std::path::Path;

use edgecut_backends::{quant, DType};
use edgecut_format::gguf::{GgufWriter, TensorSpec, Value};

use crate::error::{ModelError, Result};

/// Type for the weights that get quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
// llama.cpp's name for the mix.
#[allow(non_camel_case_types)]
pub enum WeightType {
    /// 8-bit blocks (default): about a quarter of f32's size.
    #[default]
    Q8_0,
    /// IEEE half precision.
    F16,
    /// Full precision.
    F32,
    /// llama.cpp's Q4_K_M mix: Q4_K matrices; Q6_K for the output head (the embedding table when
    /// it is tied) and for `attn_v` and `ffn_down` in the first and last eighth of the blocks
    /// and every third between; Q5_0 (for Q4_K) and Q8_0 (for Q6_K) where a row is not whole
    /// super-blocks of 256.
    Q4_K_M,
}

impl WeightType {
    /// The tensor type.
    pub fn dtype(self) -> DType {
        match self {
            WeightType::Q8_0 => DType::Q8_0,
            WeightType::F16 => DType::F16,
            WeightType::F32 => DType::F32,
            WeightType::Q4_K_M => DType::Q4_K,
        }
    }

    /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_*`).
    pub fn file_type(self) -> u32 {
        match self {
            WeightType::Q8_0 => 7,
            WeightType::F16 => 1,
            WeightType::F32 => 0,
            WeightType::Q4_K_M => 15,
        }
    }
}

/// A name that is no [`WeightType`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown weight type {0:?} (q8_0, q4_k_m, f16 or f32)")]
pub struct UnknownWeightType(pub String);

impl std::str::FromStr for WeightType {
    type Err = UnknownWeightType;
    fn from_str(s: &str) -> Result<Self, UnknownWeightType> {
        match s.to_ascii_lowercase().as_str() {
            "q8_0" | "q8" => Ok(WeightType::Q8_0),
            "f16" => Ok(WeightType::F16),
            "f32" => Ok(WeightType::F32),
            "q4_k_m" => Ok(WeightType::Q4_K_M),
            _ => Err(UnknownWeightType(s.to_string())),
        }
    }
}

/// Conversion options.
#[derive(Clone, Debug, Default)]
pub struct ConvertOptions {
    /// Type of matmul weights and embedding tables.
    pub weight_type: WeightType,
}

/// Progress of a conversion, reported once per tensor written.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    /// Tensors written so far, this one included.
    pub done: usize,
    /// Tensors in all.
    pub total: usize,
    /// The tensor just written.
    pub name: &'a str,
}

/// What a conversion wrote.
#[derive(Clone, Debug)]
pub struct ConvertReport {
    /// Architecture written (`general.architecture`).
    pub architecture: String,
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of the output file.
    pub bytes: u64,
}

/// Converts `input` (a checkpoint directory or a GGUF file) to edgecut's GGUF at `output`.
pub fn convert(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ConvertReport> {
    if input.is_dir() {
        let ckpt = hf::Checkpoint::open(input)?;
        let model_type = ckpt.cfg_str("model_type").unwrap_or("").to_string();
        match model_type.as_str() {
            "bert" | "distilbert" | "xlm-roberta" => bert::convert(&ckpt, output, opts, progress),
            "clip" => clip::convert(&ckpt, output, opts, progress),
            "modernbert" => modern_bert::convert(&ckpt, output, opts, progress),
            t if decoder::converts(t) => decoder::convert(&ckpt, output, opts, progress),
            other => Err(ModelError::Unsupported(format!(
                "{}: model_type {other:?}; edgecut converts bert, distilbert, xlm-roberta, \
                 modernbert, clip, llama, qwen2 and qwen3 checkpoints (and llama.cpp GGUF files)",
                input.join("config.json").display()
            ))),
        }
    } else {
        from_gguf::convert(input, output, opts, progress)
    }
}

/// The number of blocks in a model whose tensors are `names` (`blk.N.*`): one more than the
/// largest N.
pub fn block_count<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    names
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix("blk.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the blocks, and every third block
/// between.
fn more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The type tensor `name` of `dims` (innermost first) gets in a model of `blocks` blocks
/// (`tied`: no `output.weight`, the embedding table is the head): `weights` for matrices whose
/// rows are whole blocks, F32 otherwise; for [`WeightType::Q4_K_M`], llama.cpp's mix and its
/// fallbacks for rows that are not whole super-blocks.
pub fn target_type(
    name: &str,
    dims: &[u64],
    weights: WeightType,
    blocks: usize,
    tied: bool,
) -> DType {
    let want = match weights {
        WeightType::Q4_K_M => {
            let layer = name
                .strip_prefix("blk.")
                .and_then(|n| n.split('.').next()?.parse::<usize>().ok());
            let head = name == "output.weight" || (tied && name == "token_embd.weight");
            let more = matches!(layer, Some(i) if i < blocks && more_bits(i, blocks))
                && (name.ends_with(".attn_v.weight") || name.ends_with(".ffn_down.weight"));
            if head || more {
                DType::Q6_K
            } else {
                DType::Q4_K
            }
        }
        other => other.dtype(),
    };
    if dims.len() < 2 {
        return DType::F32;
    }
    let fits = |t: DType| dims[0].is_multiple_of(t.block_len() as u64);
    let fallback = match want {
        DType::Q4_K => DType::Q5_0,
        DType::Q6_K => DType::Q8_0,
        other => other,
    };
    [want, fallback]
        .into_iter()
        .find(|&t| fits(t))
        .unwrap_or(DType::F32)
}

/// Encodes f32 values as `dtype`.
pub fn encode(values: &[f32], dtype: DType) -> Result<Vec<u8>> {
    use quant::quantize_k::{quantize_q4_k, quantize_q5_0, quantize_q6_k};
    let err = |e: quant::QuantError| ModelError::Unsupported(format!("{dtype} encoding: {e}"));
    match dtype {
        DType::F32 => Ok(quant::f32_to_bytes(values)),
        DType::F16 => Ok(quant::f32_to_f16_bytes(values)),
        DType::Q8_0 => quant::quantize_q8_0_vec(values).map_err(err),
        DType::Q4_K => quantize_q4_k(values).map_err(err),
        DType::Q6_K => quantize_q6_k(values).map_err(err),
        DType::Q5_0 => quantize_q5_0(values).map_err(err),
        other => Err(ModelError::Unsupported(format!("writing {other} tensors"))),
    }
}

/// Writes `w` to `output`, fetching each tensor's data with `data` and reporting progress.
pub(crate) fn write<'d>(
    w: &GgufWriter,
    output: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
    mut data: impl FnMut(usize, &TensorSpec) -> Result<Cow<'d, [u8]>>,
) -> Result<ConvertReport> {
    let total = w.tensors().len();
    let bytes = w.write_file(output, |i, spec| {
        let d = data(i, spec).map_err(|e| -> edgecut_format::gguf::DataError { Box::new(e) })?;
        progress(Progress {
            done: i + 1,
            total,
            name: &spec.name,
        });
        Ok(d)
    })?;
    let architecture = w
        .metadata()
        .iter()
        .find(|(k, _)| k == "general.architecture")
        .and_then(|(_, v)| v.as_str())
        .unwrap_or("")
        .to_string();
    Ok(ConvertReport {
        architecture,
        tensors: total,
        bytes,
    })
}

/// A writer for a file of architecture `arch`, named after the checkpoint's folder.
pub(crate) fn writer_for(c: &hf::Checkpoint, arch: &str) -> GgufWriter {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::Str(arch.into()));
    let name = c
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    w.set("general.name", Value::Str(name));
    w
}

/// Metadata every edgecut-written file carries.
pub(crate) fn common_metadata(w: &mut GgufWriter, opts: &ConvertOptions, checksum: String) {
    w.set(
        "general.file_type",
        Value::U32(opts.weight_type.file_type()),
    );
    w.set("general.quantization_version", Value::U32(2));
    w.set("edgecut.source.sha256", Value::Str(checksum));
    w.set(
        "edgecut.converter",
        Value::Str(format!("edgecut {}", env!("CARGO_PKG_VERSION"))),
    );
}

//! llama.cpp-made GGUF files to edgecut's layout: Q4_0/Q4_1/F16 matrices re-quantized to Q8_0
//! (or widened to the chosen type), everything else copied as it is.

use std::borrow::Cow;
use std::path::Path;

use edgecut_format::gguf::{GgufFile, GgufWriter, TensorSpec, Value};

use super::{common_metadata, encode, target_type, ConvertOptions, ConvertReport, Progress};
use crate::error::Result;

pub(super) fn convert(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ConvertReport> {
    let src = GgufFile::open(input)?;
    if let Some(t) = src.unreadable().first() {
        return Err(crate::error::ModelError::Unsupported(format!(
            "{}: tensor {:?} is {} (and {} more of types edgecut cannot decode); converting \
             would drop them",
            input.display(),
            t.name,
            t.type_name,
            src.unreadable().len() - 1
        )));
    }
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        w.set(k.clone(), v.clone());
    }
    common_metadata(&mut w, opts, src.identity().to_string());
    if let Ok(name) = src.get_str("general.name") {
        w.set("general.name", Value::Str(name.to_string()));
    }
    let blocks = super::block_count(src.tensors().iter().map(|t| t.name.as_str()));
    let tied = src.tensor("output.weight").is_none();
    for t in src.tensors() {
        let dtype = match target_type(&t.name, &t.dims, opts.weight_type, blocks, tied) {
            // Vectors keep a float type; a 1-D F16 tensor is widened to F32.
            edgecut_backends::DType::F32 if !t.dtype.is_quantized() => edgecut_backends::DType::F32,
            d => d,
        };
        w.add_tensor(TensorSpec {
            name: t.name.clone(),
            dtype,
            dims: t.dims.clone(),
        })?;
    }
    super::write(&w, output, progress, |i, spec| {
        let view = src.view(&src.tensors()[i]);
        if view.info.dtype == spec.dtype {
            Ok(Cow::Borrowed(view.data))
        } else {
            encode(&view.to_f32(), spec.dtype).map(Cow::Owned)
        }
    })
}

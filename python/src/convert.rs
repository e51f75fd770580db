//! `edgecut.convert`: a Hugging Face checkpoint folder or a llama.cpp GGUF to edgecut's GGUF,
//! as `edgecut convert` does.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::{invalid, panicked, to_py};

/// Converts `source` (a checkpoint folder: BERT, DistilBERT, XLM-RoBERTa, Llama, Qwen2/3; or a
/// llama.cpp GGUF) to `output` with weights of `type` (`"q8_0"`, `"q4_k_m"`, `"f16"`, `"f32"`).
/// `progress(done, total, tensor)` is called after each tensor (an exception it raises is
/// raised once the conversion ends). The file is written to a temporary name and renamed into
/// place: a failed conversion leaves nothing behind. Returns `{"architecture", "tensors",
/// "bytes"}`.
#[pyfunction]
#[pyo3(signature = (source, output, *, r#type="q8_0", progress=None))]
pub(crate) fn convert<'py>(
    py: Python<'py>,
    source: PathBuf,
    output: PathBuf,
    r#type: &str,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let weight_type: edgecut::WeightType =
        r#type.parse().map_err(|e| invalid(py, format!("{e}")))?;
    if !source.exists() {
        let msg = format!("{}: no such file or directory", source.display());
        return Err(pyo3::exceptions::PyFileNotFoundError::new_err((2, msg)));
    }
    let opts = edgecut::ConvertOptions { weight_type };
    let progress = progress.map(Bound::unbind);
    let mut failed: Option<PyErr> = None;
    let out = py.detach(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            edgecut::convert(&source, &output, &opts, &mut |p| {
                let Some(cb) = &progress else { return };
                if failed.is_some() {
                    return;
                }
                Python::attach(|py| {
                    if let Err(e) = cb.bind(py).call1((p.done, p.total, p.name)) {
                        failed = Some(e);
                    }
                });
            })
        }))
    });
    let report = match out {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(to_py(py, e.into())),
        Err(_) => return Err(panicked(py)),
    };
    if let Some(e) = failed {
        return Err(e);
    }
    let d = PyDict::new(py);
    d.set_item("architecture", report.architecture)?;
    d.set_item("tensors", report.tensors)?;
    d.set_item("bytes", report.bytes)?;
    Ok(d)
}

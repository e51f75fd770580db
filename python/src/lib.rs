//! edgecut's Python package, the native half (`edgecut._native`): [`Embedder`](embed::Embedder),
//! [`Reranker`](embed::Reranker), [`LLM`](llm::Llm) and `inspect`, over the `edgecut` facade.
//!
//! Conventions, for every entry point:
//! - Model work runs with the GIL released (other Python threads go on); a long generation
//!   takes the GIL back every [`SIGNAL_CHECK`] to let Ctrl-C (`KeyboardInterrupt`) through.
//! - Facade errors become the exceptions of `edgecut/_errors.py`, one per error kind; a panic
//!   inside edgecut is caught and raised as `EdgecutError`, never unwinding into Python.
//! - Handles are shared between threads as the facade's are: embedding and reranking run
//!   concurrently on one handle; an `LLM` runs one generation at a time (its KV cache), others
//!   wait for it with the GIL released.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyModule, PyType};

mod convert;
mod embed;
mod generate;
mod llm;
mod stream;

/// How often a generation on the calling thread takes the GIL back to look for a signal.
pub(crate) const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// An exception class of `edgecut._errors` (the module imported once).
fn error_type<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = ERRORS.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("edgecut._errors")?.unbind())
    })?;
    Ok(module.bind(py).getattr(name)?.cast_into::<PyType>()?)
}

/// A Python exception of class `name` (in `edgecut._errors`) built from `args`.
fn raise(py: Python<'_>, name: &'static str, msg: impl Into<String>) -> PyErr {
    let built = error_type(py, name).and_then(|t| t.call1((msg.into(),)));
    match built {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

/// The facade's error as the Python exception of its kind.
pub(crate) fn to_py(py: Python<'_>, e: edgecut::Error) -> PyErr {
    use edgecut::Error as E;
    let msg = e.to_string();
    match e {
        E::File(edgecut_format_error) => {
            let missing = std::error::Error::source(&edgecut_format_error)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound);
            if missing {
                // FileNotFoundError's (errno, strerror) form, so `e.errno` is ENOENT.
                let built =
                    error_type(py, "ModelNotFoundError").and_then(|t| t.call1((2, msg.clone())));
                return built.map_or_else(|e| e, PyErr::from_value);
            }
            raise(py, "ModelFileError", msg)
        }
        E::Tokenizer(_) => raise(py, "TokenizerError", msg),
        E::Device(_) => raise(py, "DeviceError", msg),
        E::UnsupportedArchitecture { .. } => raise(py, "UnsupportedArchitectureError", msg),
        E::ContextFull {
            tokens,
            used,
            capacity,
        } => {
            let built = error_type(py, "ContextFullError")
                .and_then(|t| t.call1((msg.clone(), tokens, used, capacity)));
            built.map_or_else(|e| e, PyErr::from_value)
        }
        E::Input(_) | E::Image { .. } => raise(py, "InvalidInputError", msg),
        _ => raise(py, "ModelError", msg),
    }
}

/// An invalid argument, as `InvalidInputError` (also a `ValueError`).
pub(crate) fn invalid(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    raise(py, "InvalidInputError", msg.into())
}

/// Runs `f` with the GIL released, a panic inside becoming `EdgecutError`.
pub(crate) fn detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<T, edgecut::Error> + Send,
) -> PyResult<T> {
    match py.detach(|| catch_unwind(AssertUnwindSafe(f))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py(py, e)),
        Err(_) => Err(panicked(py)),
    }
}

/// The exception for a panic caught inside edgecut.
pub(crate) fn panicked(py: Python<'_>) -> PyErr {
    raise(
        py,
        "EdgecutError",
        "internal error (a panic inside edgecut; please report it)",
    )
}

/// `device=` as the facade's kind.
pub(crate) fn device(py: Python<'_>, name: &str) -> PyResult<edgecut::DeviceKind> {
    name.parse().map_err(|e: edgecut::DeviceError| {
        raise(py, "DeviceError", format!("device={name:?}: {e}"))
    })
}

/// `threads=`: `None` is `EDGECUT_THREADS`, else every core the process may use.
pub(crate) fn threads(py: Python<'_>, threads: Option<usize>) -> PyResult<usize> {
    match threads {
        Some(0) => Err(invalid(
            py,
            "threads must be at least 1 (or None: every core)",
        )),
        Some(n) => Ok(n),
        // The facade's default: EDGECUT_THREADS when set, else every core the process may use.
        None => Ok(0),
    }
}

/// What a model file holds, as `edgecut inspect --json` prints it: header, metadata, tensors,
/// bytes per weight type and a decoder's KV cache sizes.
#[pyfunction]
fn inspect(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Py<PyAny>> {
    let text = detached(py, || {
        let f = edgecut::GgufFile::open(&path)?;
        let mut out = edgecut::describe_file(&f);
        out["file"] = serde_json::Value::from(path.display().to_string());
        Ok(out.to_string())
    })?;
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

/// The CPU kernel set models run with (`EDGECUT_KERNELS` if it names one this CPU has).
#[pyfunction]
fn cpu_kernels(py: Python<'_>) -> PyResult<&'static str> {
    edgecut::cpu_kernels().map_err(|e| {
        invalid(
            py,
            format!(
                "EDGECUT_KERNELS={} is not a kernel set this CPU has ({})",
                e.wanted, e.available
            ),
        )
    })
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<embed::Embedder>()?;
    m.add_class::<embed::Reranker>()?;
    m.add_class::<llm::Llm>()?;
    m.add_class::<generate::Generation>()?;
    m.add_class::<stream::TextStream>()?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(convert::convert, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_kernels, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

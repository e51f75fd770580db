//! Encoders from Python: `Embedder` (sentence vectors as a NumPy array) and `Reranker`
//! (cross-encoder scores), each optionally split with `edgecut serve`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use edgecut::{Session, SessionOptions};
use edgecut_split::{ClientConfig, SplitClient, SplitOutcome};
use edgecut_wire::Encoding;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyDict, PyList};

use crate::{detached, invalid, to_py};

/// Texts in: one string, or a sequence of them.
#[derive(FromPyObject)]
pub(crate) enum Texts {
    One(String),
    Many(Vec<String>),
}

/// How an encoder handle splits with a server (`server=`): the client, and the reason the last
/// call ran on the device alone.
struct Split {
    client: Mutex<SplitClient<Session>>,
    fallback: Mutex<Option<String>>,
}

impl Split {
    /// Runs `f` with the client, the GIL released; keeps why it fell back, if it did, for
    /// `last_fallback` and returns the vectors with that reason.
    fn run(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut SplitClient<Session>) -> edgecut::Result<SplitOutcome> + Send,
    ) -> PyResult<(Vec<Vec<f32>>, Option<String>)> {
        let out = detached(py, || {
            f(&mut self.client.lock().unwrap_or_else(|e| e.into_inner()))
        })?;
        *self.fallback.lock().unwrap_or_else(|e| e.into_inner()) = out.fell_back.clone();
        Ok((out.vectors, out.fell_back))
    }
}

/// `encoding=` of the hidden states sent to the server.
pub(crate) fn encoding(py: Python<'_>, name: &str) -> PyResult<Encoding> {
    match name {
        "int8" => Ok(Encoding::Int8),
        "f16" => Ok(Encoding::F16),
        "f32" => Ok(Encoding::F32),
        other => Err(invalid(
            py,
            format!("encoding={other:?} is not \"int8\", \"f16\" or \"f32\""),
        )),
    }
}

/// The split client's settings from the constructor's arguments.
#[allow(clippy::too_many_arguments)]
pub(crate) fn client_config(
    py: Python<'_>,
    server: String,
    cut: usize,
    token: Option<String>,
    enc: &str,
    timeout: f64,
    tls_ca: Option<PathBuf>,
) -> PyResult<ClientConfig> {
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(invalid(py, format!("timeout={timeout}: seconds above 0")));
    }
    let tls = match tls_ca {
        None => None,
        Some(ca) => Some(
            edgecut_split::TlsClient::for_server(&ca, &server, None)
                .map_err(|e| invalid(py, format!("tls_ca={}: {e}", ca.display())))?,
        ),
    };
    Ok(ClientConfig {
        server,
        token: token.map(String::into_bytes).unwrap_or_default(),
        cut,
        encoding: encoding(py, enc)?,
        timeout: Duration::from_secs_f64(timeout),
        tls,
        auto: None,
    })
}

/// Opens an encoder with the constructor's arguments.
#[allow(clippy::too_many_arguments)]
fn open_session(
    py: Python<'_>,
    path: PathBuf,
    device: &str,
    threads: Option<usize>,
    max_seq_len: Option<usize>,
    batch_size: usize,
) -> PyResult<Session> {
    if batch_size == 0 {
        return Err(invalid(py, "batch_size must be at least 1"));
    }
    let opts = SessionOptions::default()
        .with_device(crate::device(py, device)?)
        .with_threads(crate::threads(py, threads)?)
        .with_max_seq_len(max_seq_len)
        .with_batch_size(batch_size);
    detached(py, move || Session::open(&path, &opts))
}

/// The split client of `session`, when `server` is given.
#[allow(clippy::too_many_arguments)]
fn open_split(
    py: Python<'_>,
    session: &Session,
    server: Option<String>,
    cut: Option<usize>,
    token: Option<String>,
    enc: &str,
    timeout: f64,
    tls_ca: Option<PathBuf>,
) -> PyResult<Option<Split>> {
    let Some(server) = server else {
        if cut.is_some() {
            return Err(invalid(py, "cut= needs server= (the split's other half)"));
        }
        return Ok(None);
    };
    let stages = session.stage_count();
    let cut = cut.ok_or_else(|| invalid(py, format!("server= needs cut= (0..={stages})")))?;
    if cut > stages {
        return Err(invalid(
            py,
            format!("cut={cut} is not in 0..={stages} (the model's stages)"),
        ));
    }
    let cfg = client_config(py, server, cut, token, enc, timeout, tls_ca)?;
    Ok(Some(Split {
        client: Mutex::new(SplitClient::new(session.clone(), cfg)),
        fallback: Mutex::new(None),
    }))
}

/// Warns (`edgecut.FallbackWarning`) that a split call ran on the device alone, and why.
pub(crate) fn warn_fallback(py: Python<'_>, reason: &str) -> PyResult<()> {
    let category = py.import("edgecut._errors")?.getattr("FallbackWarning")?;
    let msg =
        std::ffi::CString::new(format!("ran on the device alone: {reason}")).unwrap_or_default();
    PyErr::warn(py, &category, &msg, 1)
}

/// A sentence embedder (MiniLM, BGE, E5, GTE, XLM-RoBERTa encoders; LLM embedders pooled at
/// the last token; CLIP, which embeds pictures too).
#[pyclass(frozen, module = "edgecut", name = "Embedder")]
pub struct Embedder {
    session: Session,
    batch_size: usize,
    split: Option<Split>,
}

#[pymethods]
impl Embedder {
    #[new]
    #[pyo3(signature = (path, *, device="auto", threads=None, max_seq_len=None, batch_size=32,
        server=None, cut=None, token=None, encoding="int8", timeout=10.0, tls_ca=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        device: &str,
        threads: Option<usize>,
        max_seq_len: Option<usize>,
        batch_size: usize,
        server: Option<String>,
        cut: Option<usize>,
        token: Option<String>,
        encoding: &str,
        timeout: f64,
        tls_ca: Option<PathBuf>,
    ) -> PyResult<Embedder> {
        let session = open_session(py, path, device, threads, max_seq_len, batch_size)?;
        let split = open_split(py, &session, server, cut, token, encoding, timeout, tls_ca)?;
        Ok(Embedder {
            session,
            batch_size,
            split,
        })
    }

    /// Embeds `texts` (one string: a vector; a list: a matrix, one row per text, in order).
    #[pyo3(signature = (texts, *, batch_size=None, dimensions=None, prefix=None))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        texts: Texts,
        batch_size: Option<usize>,
        dimensions: Option<usize>,
        prefix: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (list, one) = match texts {
            Texts::One(t) => (vec![t], true),
            Texts::Many(v) => (v, false),
        };
        let list: Vec<String> = match prefix {
            Some(p) => list.into_iter().map(|t| format!("{p}{t}")).collect(),
            None => list,
        };
        let batch = batch_size.unwrap_or(self.batch_size);
        let session = &self.session;
        let (mut vectors, fell_back) = match &self.split {
            None => {
                let out = detached(py, || {
                    let refs: Vec<&str> = list.iter().map(String::as_str).collect();
                    session.embed_in_batches(&refs, batch)
                })?;
                (out.vectors, None)
            }
            Some(split) => split.run(py, |c| {
                let refs: Vec<&str> = list.iter().map(String::as_str).collect();
                c.embed(&refs)
            })?,
        };
        if let Some(reason) = fell_back {
            warn_fallback(py, &reason)?;
        }
        if let Some(d) = dimensions {
            session.shorten(&mut vectors, d).map_err(|e| to_py(py, e))?;
        }
        let dim = vectors
            .first()
            .map_or(dimensions.unwrap_or(session.embedding_dim()), Vec::len);
        let array = to_numpy(py, &vectors, dim)?;
        if one {
            array.call_method1("reshape", (dim,))
        } else {
            Ok(array)
        }
    }

    /// Vector length.
    #[getter]
    fn dim(&self) -> usize {
        self.session.embedding_dim()
    }

    /// Tokens per text before truncation.
    #[getter]
    fn max_seq_len(&self) -> usize {
        self.session.max_seq_len()
    }

    /// The device in use, in words.
    #[getter]
    fn device(&self) -> String {
        self.session.device()
    }

    /// Why the last split call ran on the device alone (`None`: it ran split, or no split).
    #[getter]
    fn last_fallback(&self) -> Option<String> {
        let s = self.split.as_ref()?;
        s.fallback.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Seconds of each of `iters` `embed` calls made from Rust, as the facade's users make
    /// them (the Python overhead benchmark's other half: benches/compare/python_peers.py).
    fn _facade_seconds(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        batch_size: usize,
        iters: usize,
    ) -> PyResult<Vec<f64>> {
        let session = &self.session;
        detached(py, || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            (0..iters)
                .map(|_| {
                    let t = std::time::Instant::now();
                    session
                        .embed_in_batches(&refs, batch_size)
                        .map(|_| t.elapsed().as_secs_f64())
                })
                .collect()
        })
    }

    /// Embeddings of pictures with a CLIP model, `(n, dim)` float32, in the space `embed` puts
    /// texts in: each item the bytes of a PNG or JPEG file, or a path to one. Split with the
    /// server at the configured cut when the handle has one.
    #[pyo3(signature = (images, *, batch_size=None))]
    fn embed_images<'py>(
        &self,
        py: Python<'py>,
        images: Vec<ImageArg>,
        batch_size: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if !self.session.embeds_images() {
            return Err(to_py(
                py,
                edgecut::Error::Input(
                    "this model embeds texts only; pictures need a CLIP model".into(),
                ),
            ));
        }
        let bytes = images
            .into_iter()
            .map(ImageArg::bytes)
            .collect::<PyResult<Vec<_>>>()?;
        let batch = batch_size.unwrap_or(self.batch_size);
        let session = self.session.clone();
        let (vectors, fell_back) = match &self.split {
            None => {
                let v = detached(py, || {
                    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
                    session.embed_images_in_batches(&refs, batch)
                })?;
                (v, None)
            }
            Some(split) => split.run(py, |c| {
                let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
                c.embed_images(&refs)
            })?,
        };
        if let Some(reason) = fell_back {
            warn_fallback(py, &reason)?;
        }
        to_numpy(py, &vectors, session.embedding_dim())
    }

    /// CLIP's zero-shot classification of one picture (bytes or a path): for each label, as
    /// given, a dict of `label`, `probability` (softmax over the labels) and `similarity`
    /// (cosine).
    fn zero_shot<'py>(
        &self,
        py: Python<'py>,
        image: ImageArg,
        labels: Vec<String>,
    ) -> PyResult<Bound<'py, PyList>> {
        let bytes = image.bytes()?;
        let session = self.session.clone();
        let scores = detached(py, || {
            let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
            session.zero_shot(&bytes, &refs)
        })?;
        let rows = PyList::empty(py);
        for s in scores {
            let d = PyDict::new(py);
            d.set_item("label", s.label)?;
            d.set_item("probability", s.probability)?;
            d.set_item("similarity", s.similarity)?;
            rows.append(d)?;
        }
        Ok(rows)
    }

    /// The token ids of `text` as the model sees it (special tokens included).
    fn tokenize(&self, py: Python<'_>, text: &str) -> PyResult<Vec<u32>> {
        self.session.tokenize(text).map_err(|e| to_py(py, e))
    }

    fn __repr__(&self) -> String {
        format!(
            "Embedder({} dims, {} tokens, {})",
            self.session.embedding_dim(),
            self.session.max_seq_len(),
            self.session.device()
        )
    }
}

/// Rows of `dim` floats as a `(rows, dim)` float32 NumPy array (one copy, into memory the
/// array owns).
/// A picture as Python gives it: a file's bytes, or a path to read.
#[derive(FromPyObject)]
enum ImageArg {
    Bytes(Vec<u8>),
    Path(PathBuf),
}

impl ImageArg {
    fn bytes(self) -> PyResult<Vec<u8>> {
        match self {
            ImageArg::Bytes(b) => Ok(b),
            ImageArg::Path(p) => std::fs::read(&p).map_err(|e| {
                pyo3::exceptions::PyFileNotFoundError::new_err(format!("{}: {e}", p.display()))
            }),
        }
    }
}

fn to_numpy<'py>(py: Python<'py>, rows: &[Vec<f32>], dim: usize) -> PyResult<Bound<'py, PyAny>> {
    let bytes = rows.len() * dim * 4;
    let buf = PyByteArray::new_with(py, bytes, |out| {
        for (row, chunk) in rows.iter().zip(out.chunks_exact_mut(dim * 4)) {
            for (v, b) in row.iter().zip(chunk.chunks_exact_mut(4)) {
                b.copy_from_slice(&v.to_ne_bytes());
            }
        }
        Ok(())
    })?;
    let np = py.import("numpy")?;
    np.call_method1("frombuffer", (buf, "float32"))?
        .call_method1("reshape", ((rows.len(), dim),))
}

/// A cross-encoder reranker (ms-marco-MiniLM, bge-reranker, jina-reranker).
#[pyclass(frozen, module = "edgecut", name = "Reranker")]
pub struct Reranker {
    session: Session,
}

#[pymethods]
impl Reranker {
    #[new]
    #[pyo3(signature = (path, *, device="auto", threads=None, max_seq_len=None, batch_size=32))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        device: &str,
        threads: Option<usize>,
        max_seq_len: Option<usize>,
        batch_size: usize,
    ) -> PyResult<Reranker> {
        let session = open_session(py, path, device, threads, max_seq_len, batch_size)?;
        match session.n_classes() {
            Some(1) => Ok(Reranker {
                session,
            }),
            Some(n) => Err(invalid(
                py,
                format!("this model classifies into {n} classes; a reranker has one output"),
            )),
            None => Err(invalid(
                py,
                "this model has no classification head: it embeds (edgecut.Embedder), it does not rerank",
            )),
        }
    }

    /// The documents' relevance to `query`, best first: dicts of `index` (in `documents`),
    /// `score` (0..1, the logistic of the logit, as sentence-transformers' CrossEncoder and
    /// text-embeddings-inference report) and `logit`; the first `top_n` only when given.
    #[pyo3(signature = (query, documents, *, top_n=None))]
    fn rerank<'py>(
        &self,
        py: Python<'py>,
        query: String,
        documents: Vec<String>,
        top_n: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let session = &self.session;
        let out = detached(py, || {
            let refs: Vec<&str> = documents.iter().map(String::as_str).collect();
            session.rerank(&query, &refs)
        })?;
        let mut order: Vec<usize> = (0..out.scores.len()).collect();
        order.sort_by(|&a, &b| out.scores[b].total_cmp(&out.scores[a]));
        order.truncate(top_n.unwrap_or(order.len()));
        let list = PyList::empty(py);
        for i in order {
            let d = PyDict::new(py);
            d.set_item("index", i)?;
            d.set_item("score", edgecut::sigmoid(out.scores[i]))?;
            d.set_item("logit", out.scores[i])?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// The device in use, in words.
    #[getter]
    fn device(&self) -> String {
        self.session.device()
    }

    fn __repr__(&self) -> String {
        format!(
            "Reranker({} tokens, {})",
            self.session.max_seq_len(),
            self.session.device()
        )
    }
}

//! Weights read from a GGUF file and handed to the backend, which prepares them in its own
//! layout (`Backend::prepare`): the model says what a matrix is (its tensor, shape, bias and how
//! its input is multiplied), never how a device stores it.

use std::sync::Arc;

use edgecut_backends::encoder::{EncoderBlock, LayerNorm, Qkv};
use edgecut_backends::ops::ActQuant;
use edgecut_backends::{Backend, DType, Op, SharedStorage, WeightSource};
use edgecut_format::gguf::{GgufFile, TensorView};

use crate::error::{ModelError, Result};

/// Whether a matrix's bias must be in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bias {
    /// `{prefix}.bias` must be present.
    Required,
    /// Taken when present.
    IfPresent,
}

fn expect_dims(v: &TensorView<'_>, dims: &[u64]) -> Result<()> {
    if v.info.dims != dims {
        return Err(ModelError::Shape {
            name: v.info.name.clone(),
            found: v.info.shape().iter().map(|&d| d as usize).collect(),
            expected: dims.iter().rev().map(|&d| d as usize).collect(),
        });
    }
    Ok(())
}

/// A vector tensor decoded to f32, checked to have `len` values.
pub fn vector(f: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>> {
    let v = f.require_tensor(name)?;
    expect_dims(&v, &[len as u64])?;
    Ok(v.to_f32())
}

/// Reads matrices from a file and has backend `B` prepare them.
pub struct Weights<'a, B: Backend> {
    file: &'a GgufFile,
    storage: SharedStorage,
    backend: &'a B,
}

/// A matrix's tensor and bias, checked against its shape.
struct Source<'f> {
    dtype: DType,
    data: &'f [u8],
    bias: Option<Vec<f32>>,
}

impl<'a, B: Backend> Weights<'a, B> {
    /// Weights of `file` for `backend`; prepared matrices may keep reading the file in place.
    pub fn new(file: &'a Arc<GgufFile>, backend: &'a B) -> Self {
        Weights {
            file,
            storage: file.clone(),
            backend,
        }
    }

    /// Asks the backend whether it runs every op of `ops` (what a model of `what` needs besides
    /// its matrices); the first it lacks is [`edgecut_backends::ops::OpError::Unsupported`].
    pub fn check_ops(&self, ops: &[Op], what: &str) -> Result<()> {
        match ops.iter().find(|&&op| !self.backend.supports(op)) {
            Some(op) => Err(edgecut_backends::ops::OpError::Unsupported {
                what: format!("{what} ({op:?})"),
                backend: self.backend.describe(),
            }
            .into()),
            None => Ok(()),
        }
    }

    /// Asks the backend, before any weight is read, whether it multiplies the matrices
    /// `{prefix}.weight` of `prefixes` as stored with `act` activations: the first it refuses
    /// is [`ModelError::UnsupportedWeights`], naming the tensor, its type and the backend.
    pub fn check_supported(&self, prefixes: &[String], act: ActQuant) -> Result<()> {
        for p in prefixes {
            let name = format!("{p}.weight");
            let dtype = self.file.require_tensor(&name)?.info.dtype;
            if !self.backend.supports(Op::Linear(act, dtype)) {
                return Err(ModelError::UnsupportedWeights {
                    tensor: name,
                    dtype: dtype.to_string(),
                    act: format!("{act:?}"),
                    backend: self.backend.describe(),
                });
            }
        }
        Ok(())
    }

    fn source(&self, prefix: &str, n: usize, k: usize, bias: Bias) -> Result<Source<'a>> {
        let w = self.file.require_tensor(&format!("{prefix}.weight"))?;
        expect_dims(&w, &[k as u64, n as u64])?;
        let bname = format!("{prefix}.bias");
        let bias = match (bias, self.file.tensor(&bname)) {
            (_, Some(_)) => Some(vector(self.file, &bname, n)?),
            (Bias::Required, None) => return Err(ModelError::MissingTensor(bname)),
            (Bias::IfPresent, None) => None,
        };
        Ok(Source {
            dtype: w.info.dtype,
            data: w.data,
            bias,
        })
    }

    /// `{prefix}.weight` (`[n, k]`) with its bias, its input multiplied as `act`.
    pub fn matrix(
        &self,
        prefix: &str,
        n: usize,
        k: usize,
        bias: Bias,
        act: ActQuant,
    ) -> Result<B::Matrix> {
        let s = self.source(prefix, n, k, bias)?;
        Ok(self.backend.prepare(WeightSource {
            dtype: s.dtype,
            data: s.data,
            storage: Some(&self.storage),
            n,
            k,
            bias: s.bias.as_deref(),
            act,
        })?)
    }

    /// Matrices of `n` rows each that read the same input, stacked into one (their rows one
    /// after another: one product, the input quantized once) when they are stored alike, else
    /// separate. BERT's q, k and v.
    pub fn stacked(
        &self,
        prefixes: [&str; 3],
        n: usize,
        k: usize,
        bias: Bias,
        act: ActQuant,
    ) -> Result<Qkv<B::Matrix>> {
        let parts = prefixes
            .iter()
            .map(|p| self.source(p, n, k, bias))
            .collect::<Result<Vec<_>>>()?;
        let alike = parts
            .iter()
            .all(|p| p.dtype == parts[0].dtype && p.bias.is_some() == parts[0].bias.is_some());
        if !alike {
            let [q, kk, v] = prefixes;
            return Ok(Qkv::Separate(Box::new([
                self.matrix(q, n, k, bias, act)?,
                self.matrix(kk, n, k, bias, act)?,
                self.matrix(v, n, k, bias, act)?,
            ])));
        }
        // Rows are whole blocks, so the stored bytes concatenate.
        let data: Vec<u8> = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        let bias: Option<Vec<f32>> = parts[0].bias.is_some().then(|| {
            parts
                .iter()
                .flat_map(|p| p.bias.iter().flatten())
                .copied()
                .collect()
        });
        Ok(Qkv::Stacked(self.backend.prepare(WeightSource {
            dtype: parts[0].dtype,
            data: &data,
            storage: None,
            n: 3 * n,
            k,
            bias: bias.as_deref(),
            act,
        })?))
    }

    /// A layer norm's `{name}.weight` and `{name}.bias`, `len` values each.
    pub fn layer_norm(&self, name: &str, len: usize) -> Result<LayerNorm<B>> {
        Ok(LayerNorm {
            gamma: self.vector(&format!("{name}.weight"), len)?,
            beta: self.vector(&format!("{name}.bias"), len)?,
        })
    }

    /// [`Weights::layer_norm`] of a model whose norms may have no shift (ModernBERT's
    /// `norm_bias = false`): a missing `{name}.bias` is zeros.
    pub fn layer_norm_shift_optional(&self, name: &str, len: usize) -> Result<LayerNorm<B>> {
        let bias = format!("{name}.bias");
        Ok(LayerNorm {
            gamma: self.vector(&format!("{name}.weight"), len)?,
            beta: match self.file.tensor(&bias) {
                Some(_) => self.vector(&bias, len)?,
                None => self.backend.vector(&vec![0.0; len]),
            },
        })
    }

    /// The `layers` blocks of an encoder named `{prefix}{i}.` (BERT: `blk.`; CLIP's towers:
    /// `v.blk.`, `t.blk.`): q/k/v stacked where stored alike, the attention output, the
    /// feed-forward, and the two norms called `norms` (BERT: after attention and after the
    /// feed-forward; CLIP: before each). Every matrix's type is asked of the backend before any
    /// is read.
    pub fn encoder_blocks(
        &self,
        prefix: &str,
        layers: usize,
        hidden: usize,
        ffn: usize,
        norms: [&str; 2],
    ) -> Result<Vec<EncoderBlock<B>>> {
        let h = hidden;
        // Layer-norm outputs carry outlier channels that make int8 per 32 values coarse
        // (MiniLM's worst cosine to PyTorch 0.9981); q, k, v and ffn_up read them (after the
        // norm, pre or post), so their outlier columns run in f32 (worst cosine 0.9993). The
        // attention output and ffn_down inputs gain little from it.
        let (plain, outliers) = (ActQuant::Int8, ActQuant::Int8Outliers);
        let matrices = |names: &[&str]| -> Vec<String> {
            (0..layers)
                .flat_map(|i| names.iter().map(move |n| format!("{prefix}{i}.{n}")))
                .collect()
        };
        self.check_supported(
            &matrices(&["attn_q", "attn_k", "attn_v", "ffn_up"]),
            outliers,
        )?;
        self.check_supported(&matrices(&["attn_output", "ffn_down"]), plain)?;
        (0..layers)
            .map(|i| {
                let p = |n: &str| format!("{prefix}{i}.{n}");
                let (q, k, v) = (p("attn_q"), p("attn_k"), p("attn_v"));
                Ok(EncoderBlock {
                    qkv: self.stacked([&q, &k, &v], h, h, Bias::Required, outliers)?,
                    o: self.matrix(&p("attn_output"), h, h, Bias::Required, plain)?,
                    attn_norm: self.layer_norm(&p(norms[0]), h)?,
                    up: self.matrix(&p("ffn_up"), ffn, h, Bias::Required, outliers)?,
                    down: self.matrix(&p("ffn_down"), h, ffn, Bias::Required, plain)?,
                    out_norm: self.layer_norm(&p(norms[1]), h)?,
                })
            })
            .collect()
    }

    /// A vector prepared for the backend.
    pub fn vector(&self, name: &str, len: usize) -> Result<B::Vector> {
        Ok(self.backend.vector(&vector(self.file, name, len)?))
    }
}

/// An embedding table `[vocab, dim]` in the file, any readable type; rows are gathered on the
/// host.
#[derive(Debug)]
pub struct Table {
    index: usize,
    /// Element type.
    pub dtype: DType,
    /// Rows.
    pub vocab: usize,
    /// Row length.
    pub dim: usize,
}

impl Table {
    /// Loads `name`, checking its row length is `dim`; returns the row count from the file.
    pub fn load(f: &GgufFile, name: &str, dim: usize) -> Result<Table> {
        let index = f
            .tensors()
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let t = &f.tensors()[index];
        if t.dims.len() != 2 || t.dims[0] != dim as u64 {
            return Err(ModelError::Shape {
                name: name.into(),
                found: t.shape().iter().map(|&d| d as usize).collect(),
                expected: vec![t.dims.get(1).copied().unwrap_or(0) as usize, dim],
            });
        }
        Ok(Table {
            index,
            dtype: t.dtype,
            vocab: t.dims[1] as usize,
            dim,
        })
    }

    /// The raw table bytes.
    pub fn data<'a>(&self, f: &'a GgufFile) -> &'a [u8] {
        f.view(&f.tensors()[self.index]).data
    }

    /// Gathers rows `ids` into `out` (`ids.len() * dim` values).
    pub fn gather(&self, f: &GgufFile, ids: &[u32], out: &mut [f32]) -> Result<()> {
        edgecut_backends::ops::embedding_rows(
            self.data(f),
            self.dtype,
            self.vocab,
            self.dim,
            ids,
            out,
        )?;
        Ok(())
    }
}

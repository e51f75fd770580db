//! Weights as the kernels want them, loaded from a GGUF file: Q8_0 matrices are borrowed from
//! the map (zero copy), Q4_0/Q4_1 matrices are re-quantized to Q8_0 once at load, F16/F32
//! matrices and all vectors are decoded to f32.

use edgecut_backends::cpu::PackedQ8_0;
use edgecut_backends::ops::{ActQuant, Linear, WeightData};
use edgecut_backends::{quant, DType, Device};
use edgecut_runtime::gguf::{GgufFile, TensorView};

use crate::error::{ModelError, Result};

/// Storage of one matrix.
#[derive(Debug)]
enum Store {
    /// Q8_0 data in the file: the index of the tensor.
    Mapped(usize),
    /// Q8_0 data re-quantized at load.
    Q8(Vec<u8>),
    /// Repacked for the device's GEMM, with the Q8_0 data it came from (mapped or owned).
    Packed(PackedQ8_0, Box<Store>),
    /// f32 values.
    F32(Vec<f32>),
    /// Blocks of a quantized type used as stored, with f32 activations: the index of the tensor.
    Blocks(DType, usize),
}

/// A matrix `[n, k]` (n rows of k) and its optional bias.
#[derive(Debug)]
pub struct Matrix {
    store: Store,
    bias: Option<Vec<f32>>,
    /// Output features (rows).
    pub n: usize,
    /// Input features (columns).
    pub k: usize,
    /// How the input is quantized (set by the model for inputs with outliers).
    pub act: ActQuant,
}

/// The Q8_0 bytes of a mapped or re-quantized matrix.
fn q8_bytes<'a>(s: &'a Store, f: &'a GgufFile) -> &'a [u8] {
    match s {
        Store::Mapped(i) => f.view(&f.tensors()[*i]).data,
        Store::Q8(v) => v,
        Store::Packed(_, q8) => q8_bytes(q8, f),
        Store::Blocks(_, i) => f.view(&f.tensors()[*i]).data,
        Store::F32(_) => &[],
    }
}

fn index_of(f: &GgufFile, name: &str) -> Result<usize> {
    f.tensors()
        .iter()
        .position(|t| t.name == name)
        .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
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

/// Q8_0 weights repacked for `dev`'s CPU GEMM, where it has one. A GPU device uploads its own
/// copy, so none is made beside it.
fn pack_for(dev: &Device, q8: &[u8], n: usize, k: usize) -> Option<PackedQ8_0> {
    if dev.is_gpu() {
        return None;
    }
    dev.backend().pack(q8, n, k)
}

impl Matrix {
    /// Loads `{prefix}.weight` (`[n, k]`) and `{prefix}.bias` if present (or required), with
    /// Q8_0 weights repacked for `dev` where its backend has a GEMM layout.
    pub fn load(
        f: &GgufFile,
        dev: &Device,
        prefix: &str,
        n: usize,
        k: usize,
        bias: bool,
    ) -> Result<Matrix> {
        Self::load_as(f, dev, prefix, n, k, bias, ActQuant::Int8)
    }

    /// [`Matrix::load`] for inputs quantized as `act`. With [`ActQuant::F32`], Q8_0, Q4_0 and
    /// Q4_1 weights stay in the map as they are (no copy, no re-quantization).
    pub fn load_as(
        f: &GgufFile,
        dev: &Device,
        prefix: &str,
        n: usize,
        k: usize,
        bias: bool,
        act: ActQuant,
    ) -> Result<Matrix> {
        let wname = format!("{prefix}.weight");
        let idx = index_of(f, &wname)?;
        let v = f.view(&f.tensors()[idx]);
        expect_dims(&v, &[k as u64, n as u64])?;
        let store = match v.info.dtype {
            dt @ (DType::Q8_0 | DType::Q4_0 | DType::Q4_1) if act == ActQuant::F32 => {
                Store::Blocks(dt, idx)
            }
            DType::Q8_0 => Store::Mapped(idx),
            DType::Q4_0 | DType::Q4_1 => Store::Q8(
                quant::quantize_q8_0_vec(&v.to_f32())
                    .map_err(|e| ModelError::Input(e.to_string()))?,
            ),
            DType::F16 | DType::F32 => Store::F32(v.to_f32()),
        };
        let store = match &store {
            Store::Mapped(_) | Store::Q8(_) => match pack_for(dev, q8_bytes(&store, f), n, k) {
                Some(p) => Store::Packed(p, Box::new(store)),
                None => store,
            },
            _ => store,
        };
        let bname = format!("{prefix}.bias");
        let bias = match (bias, f.tensor(&bname)) {
            (_, Some(_)) => Some(vector(f, &bname, n)?),
            (true, None) => return Err(ModelError::MissingTensor(bname)),
            (false, None) => None,
        };
        Ok(Matrix {
            store,
            bias,
            n,
            k,
            act,
        })
    }

    /// Stacks matrices with the same input size into one (their rows one after another), so one
    /// matmul computes them all and its input is quantized once: BERT's q, k and v read the
    /// same activations. Q8_0 parts are copied into one owned Q8_0 matrix and repacked for
    /// `dev`; f32 parts are concatenated. Returns the parts unchanged when they cannot be
    /// stacked (mixed storage, input sizes or biases).
    pub fn stack(parts: Vec<Matrix>, f: &GgufFile, dev: &Device) -> Result<Matrix, Vec<Matrix>> {
        let k = parts.first().map_or(0, |p| p.k);
        let same = parts.iter().all(|p| {
            p.k == k && p.act == parts[0].act && p.bias.is_some() == parts[0].bias.is_some()
        });
        let q8 = parts
            .iter()
            .all(|p| matches!(p.store, Store::Mapped(_) | Store::Q8(_) | Store::Packed(..)));
        let f32s = parts.iter().all(|p| matches!(p.store, Store::F32(_)));
        if parts.is_empty() || !same || !(q8 || f32s) {
            return Err(parts);
        }
        let n = parts.iter().map(|p| p.n).sum();
        let store = if q8 {
            let bytes: Vec<u8> = parts
                .iter()
                .flat_map(|p| q8_bytes(&p.store, f).iter().copied())
                .collect();
            match pack_for(dev, &bytes, n, k) {
                Some(packed) => Store::Packed(packed, Box::new(Store::Q8(bytes))),
                None => Store::Q8(bytes),
            }
        } else {
            Store::F32(
                parts
                    .iter()
                    .flat_map(|p| match &p.store {
                        Store::F32(v) => v.iter().copied(),
                        _ => unreachable!("checked above"),
                    })
                    .collect(),
            )
        };
        let bias = parts[0].bias.is_some().then(|| {
            parts
                .iter()
                .flat_map(|p| p.bias.iter().flatten().copied())
                .collect()
        });
        Ok(Matrix {
            store,
            bias,
            n,
            k,
            act: parts[0].act,
        })
    }

    /// The op description, borrowing from `f` (the file the matrix was loaded from).
    pub fn linear<'a>(&'a self, f: &'a GgufFile) -> Linear<'a> {
        let w = match &self.store {
            Store::Mapped(_) | Store::Q8(_) => WeightData::Q8_0(q8_bytes(&self.store, f)),
            Store::Packed(p, q8) => WeightData::Packed(p, q8_bytes(q8, f)),
            Store::F32(v) => WeightData::F32(v),
            Store::Blocks(dt, _) => WeightData::Blocks(*dt, q8_bytes(&self.store, f)),
        };
        Linear {
            w,
            bias: self.bias.as_deref(),
            n: self.n,
            k: self.k,
            act: self.act,
        }
    }

    /// The Q8_0 blocks of the weights (mapped, re-quantized or behind a repacked copy), or
    /// `None` for f32 weights and blocks kept in another type.
    pub fn q8_0<'a>(&'a self, f: &'a GgufFile) -> Option<&'a [u8]> {
        match &self.store {
            Store::Mapped(_) | Store::Q8(_) | Store::Packed(..) => Some(q8_bytes(&self.store, f)),
            Store::Blocks(DType::Q8_0, _) => Some(q8_bytes(&self.store, f)),
            Store::Blocks(..) | Store::F32(_) => None,
        }
    }

    /// The bias, if the matrix has one.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// Bytes of memory the matrix takes outside the file map.
    pub fn owned_bytes(&self) -> usize {
        fn owned(s: &Store) -> usize {
            match s {
                Store::Mapped(_) | Store::Blocks(..) => 0,
                Store::Q8(v) => v.len(),
                Store::Packed(p, q8) => p.bytes() + owned(q8),
                Store::F32(v) => v.len() * 4,
            }
        }
        let w = owned(&self.store);
        w + self.bias.as_ref().map_or(0, |b| b.len() * 4)
    }
}

/// An embedding table `[vocab, dim]` in the file, any readable type.
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
        let index = index_of(f, name)?;
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
        )
        .map_err(ModelError::from)
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use edgecut_backends::quant;
    use edgecut_runtime::gguf::{GgufFile, GgufWriter, TensorSpec};

    use super::*;

    /// A file with `a` and `b` (Q8_0, 2 x 64) with biases, and `c` (F32, 2 x 64).
    fn file() -> GgufFile {
        let mut w = GgufWriter::new();
        let vals = |seed: f32| -> Vec<f32> { (0..128).map(|i| (i as f32 * seed).sin()).collect() };
        let mut data: Vec<Vec<u8>> = Vec::new();
        for (name, dtype, seed) in [
            ("a", DType::Q8_0, 0.37),
            ("b", DType::Q8_0, 0.91),
            ("c", DType::F32, 0.53),
        ] {
            w.add_tensor(TensorSpec {
                name: format!("{name}.weight"),
                dtype,
                dims: vec![64, 2],
            })
            .unwrap();
            data.push(match dtype {
                DType::Q8_0 => quant::quantize_q8_0_vec(&vals(seed)).unwrap(),
                _ => quant::f32_to_bytes(&vals(seed)),
            });
            w.add_tensor(TensorSpec {
                name: format!("{name}.bias"),
                dtype: DType::F32,
                dims: vec![2],
            })
            .unwrap();
            data.push(quant::f32_to_bytes(&[seed, -seed]));
        }
        let mut out = Vec::new();
        w.write_to(&mut out, |i, _| Ok(Cow::Borrowed(&data[i][..])))
            .unwrap();
        GgufFile::from_bytes(out).unwrap()
    }

    fn run(m: &Matrix, f: &GgufFile, dev: &Device, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; m.n];
        dev.backend().linear(x, 1, &m.linear(f), &mut out).unwrap();
        out
    }

    #[test]
    fn stacked_matrices_compute_what_the_parts_compute() {
        let f = file();
        let dev = Device::cpu();
        let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.21).cos()).collect();
        let load = |n: &str| Matrix::load(&f, &dev, n, 2, 64, true).unwrap();
        let (a, b) = (run(&load("a"), &f, &dev, &x), run(&load("b"), &f, &dev, &x));
        let stacked = Matrix::stack(vec![load("a"), load("b")], &f, &dev).expect("same storage");
        assert_eq!(stacked.n, 4);
        let both = run(&stacked, &f, &dev, &x);
        for (g, w) in both.iter().zip(a.iter().chain(&b)) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
        // Q8_0 and f32 parts cannot share one matrix: they come back unchanged.
        let parts = Matrix::stack(vec![load("a"), load("c")], &f, &dev).unwrap_err();
        assert_eq!(parts.len(), 2);
        assert_eq!(run(&parts[0], &f, &dev, &x), a);
    }
}

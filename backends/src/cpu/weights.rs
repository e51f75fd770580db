//! Weights prepared for the CPU ([`CpuMatrix`]): Q8_0 matrices are read in place from the model
//! file's storage (zero copy) and, where the kernel table has the VNNI GEMM, repacked for it;
//! the other block types are re-quantized to Q8_0 once; F16/BF16/F32 matrices are decoded to
//! f32. With f32 activations ([`ActQuant::F32`]) quantized blocks are used as stored, in place.

use super::{Linear, WeightData};
use crate::backend::{PreparedMatrix, SharedStorage, WeightSource};
use crate::ops::{ActQuant, OpError};
use crate::{quant, DType};

use super::{CpuBackend, PackedQ8_0};

/// Bytes of a matrix: a range of the model's storage, or a copy.
enum Bytes {
    Borrowed {
        storage: SharedStorage,
        start: usize,
        len: usize,
    },
    Owned(Vec<u8>),
}

impl Bytes {
    /// `data`, borrowed from `storage` when it lies inside it, else copied.
    fn of(data: &[u8], storage: Option<&SharedStorage>) -> Bytes {
        if let Some(s) = storage {
            let all = s.bytes();
            let (base, at) = (all.as_ptr() as usize, data.as_ptr() as usize);
            if at >= base && at + data.len() <= base + all.len() {
                return Bytes::Borrowed {
                    storage: s.clone(),
                    start: at - base,
                    len: data.len(),
                };
            }
        }
        Bytes::Owned(data.to_vec())
    }

    fn get(&self) -> &[u8] {
        match self {
            Bytes::Borrowed {
                storage,
                start,
                len,
            } => &storage.bytes()[*start..*start + *len],
            Bytes::Owned(v) => v,
        }
    }

    fn owned(&self) -> usize {
        match self {
            Bytes::Borrowed { .. } => 0,
            Bytes::Owned(v) => v.len(),
        }
    }
}

enum Store {
    /// Q8_0 blocks multiplied with int8 activations.
    Q8(Bytes),
    /// Q8_0 repacked for the VNNI GEMM, with the blocks it came from (read for outlier columns).
    Packed(PackedQ8_0, Bytes),
    /// f32 values.
    F32(Vec<f32>),
    /// Quantized blocks as stored, multiplied with f32 activations.
    Blocks(DType, Bytes),
}

/// A weight matrix `[n, k]` and its bias, prepared for the CPU.
pub struct CpuMatrix {
    store: Store,
    bias: Option<Vec<f32>>,
    n: usize,
    k: usize,
    act: ActQuant,
}

impl std::fmt::Debug for CpuMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuMatrix({}x{}, {:?})", self.n, self.k, self.act)
    }
}

impl CpuMatrix {
    /// The op description of this matrix for [`CpuBackend::linear`].
    pub fn linear(&self) -> Linear<'_> {
        let w = match &self.store {
            Store::Q8(b) => WeightData::Q8_0(b.get()),
            Store::Packed(p, b) => WeightData::Packed(p, b.get()),
            Store::F32(v) => WeightData::F32(v),
            Store::Blocks(dt, b) => WeightData::Blocks(*dt, b.get()),
        };
        Linear {
            w,
            bias: self.bias.as_deref(),
            n: self.n,
            k: self.k,
            act: self.act,
        }
    }
}

impl PreparedMatrix for CpuMatrix {
    fn n(&self) -> usize {
        self.n
    }

    fn k(&self) -> usize {
        self.k
    }

    fn owned_bytes(&self) -> usize {
        let w = match &self.store {
            Store::Q8(b) | Store::Blocks(_, b) => b.owned(),
            Store::Packed(p, b) => p.bytes() + b.owned(),
            Store::F32(v) => v.len() * 4,
        };
        w + self.bias.as_ref().map_or(0, |b| b.len() * 4)
    }
}

impl CpuBackend {
    /// Prepares `w` for this backend (see the module doc).
    pub(crate) fn prepare_matrix(&self, w: WeightSource<'_>) -> Result<CpuMatrix, OpError> {
        let (n, k) = (w.n, w.k);
        let values = n
            .checked_mul(k)
            .ok_or_else(|| OpError::Shape(format!("a {n}x{k} matrix overflows")))?;
        let want = w
            .dtype
            .bytes_for(values as u64)
            .ok_or_else(|| OpError::Shape(format!("{n}x{k} values do not fit {}", w.dtype)))?;
        OpError::check("weight bytes", w.data.len(), want as usize)?;
        if let Some(b) = w.bias {
            OpError::check("bias", b.len(), n)?;
        }
        let store = match w.dtype {
            dt if dt.is_quantized() && w.act == ActQuant::F32 => {
                Store::Blocks(dt, Bytes::of(w.data, w.storage))
            }
            DType::Q8_0 => Store::Q8(Bytes::of(w.data, w.storage)),
            dt if dt.is_quantized() => Store::Q8(Bytes::Owned(
                quant::requantize_q8_0(dt, w.data).map_err(|e| OpError::Shape(e.to_string()))?,
            )),
            _ => {
                let mut f = vec![0f32; values];
                quant::dequantize(w.dtype, w.data, &mut f)
                    .map_err(|e| OpError::Shape(e.to_string()))?;
                Store::F32(f)
            }
        };
        let store = match store {
            Store::Q8(b) => match self.pack(b.get(), n, k) {
                Some(p) => Store::Packed(p, b),
                None => Store::Q8(b),
            },
            other => other,
        };
        Ok(CpuMatrix {
            store,
            bias: w.bias.map(<[f32]>::to_vec),
            n,
            k,
            act: w.act,
        })
    }
}

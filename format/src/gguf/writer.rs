//! The GGUF writer: metadata and the tensor table first, then tensor data streamed one tensor at
//! a time, so converting a model never holds more than one tensor in memory.

use std::borrow::Cow;
use std::io::{BufWriter, Write};
use std::path::Path;

use edgecut_backends::DType;

use super::error::{DataError, GgufError, Result};
use super::value::{encode_str, Value};
use super::{DEFAULT_ALIGNMENT, MAX_DIMS, MAX_NAME_LEN};

/// A tensor to be written: name, type and dimensions (innermost first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// Element type of the data that will be written.
    pub dtype: DType,
    /// Dimensions, innermost (row length) first.
    pub dims: Vec<u64>,
}

impl TensorSpec {
    /// Bytes of data this tensor takes.
    pub fn size(&self) -> u64 {
        self.dtype
            .bytes_for(self.dims.iter().product())
            .unwrap_or(0)
    }
}

/// Builds a GGUF v3 file.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorSpec>,
}

impl GgufWriter {
    /// An empty file description.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a metadata key, replacing an earlier value of the same key.
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = value,
            None => self.metadata.push((key, value)),
        }
    }

    /// The metadata set so far.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The tensors added so far.
    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// Adds a tensor to the table; its data is supplied when the file is written.
    pub fn add_tensor(&mut self, spec: TensorSpec) -> Result<()> {
        let err = |r: String| GgufError::Write(format!("tensor {:?}: {r}", spec.name));
        if spec.name.len() > MAX_NAME_LEN {
            return Err(err(format!("name longer than {MAX_NAME_LEN} bytes")));
        }
        if spec.dims.is_empty() || spec.dims.len() > MAX_DIMS || spec.dims.contains(&0) {
            return Err(err(format!("bad shape {:?}", spec.dims)));
        }
        let n = spec.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        if !spec.dims[0].is_multiple_of(spec.dtype.block_len() as u64)
            || n.and_then(|n| spec.dtype.bytes_for(n)).is_none()
        {
            return Err(err(format!(
                "shape {:?} does not fit type {}",
                spec.dims, spec.dtype
            )));
        }
        if self.tensors.iter().any(|t| t.name == spec.name) {
            return Err(err("added twice".into()));
        }
        self.tensors.push(spec);
        Ok(())
    }

    fn alignment(&self) -> u64 {
        match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, Value::U32(a))) if a.is_power_of_two() => *a as u64,
            _ => DEFAULT_ALIGNMENT,
        }
    }

    /// Encodes the header (everything before the data section, padding included) and returns it
    /// with each tensor's offset in the data section.
    pub fn header_bytes(&self) -> (Vec<u8>, Vec<u64>) {
        let align = self.alignment();
        let mut out = Vec::new();
        out.extend_from_slice(super::MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            encode_str(k, &mut out);
            out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            v.encode(&mut out);
        }
        let mut offsets = Vec::with_capacity(self.tensors.len());
        let mut offset = 0u64;
        for t in &self.tensors {
            encode_str(&t.name, &mut out);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.dtype.ggml_id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.size()).next_multiple_of(align);
        }
        out.resize((out.len() as u64).next_multiple_of(align) as usize, 0);
        (out, offsets)
    }

    /// Writes the file to `w`, asking `data(i, spec)` for each tensor's bytes in table order.
    /// Returns the number of bytes written.
    pub fn write_to<'d, W: Write>(
        &self,
        w: &mut W,
        mut data: impl FnMut(usize, &TensorSpec) -> std::result::Result<Cow<'d, [u8]>, DataError>,
    ) -> Result<u64> {
        let align = self.alignment();
        let (header, _) = self.header_bytes();
        let io = |e: std::io::Error| GgufError::Write(e.to_string());
        w.write_all(&header).map_err(io)?;
        let mut written = header.len() as u64;
        let zeros = vec![0u8; align as usize];
        for (i, t) in self.tensors.iter().enumerate() {
            let bytes = data(i, t).map_err(|source| GgufError::Data {
                tensor: t.name.clone(),
                source,
            })?;
            if bytes.len() as u64 != t.size() {
                return Err(GgufError::Write(format!(
                    "tensor {:?}: got {} bytes of data, its shape and type need {}",
                    t.name,
                    bytes.len(),
                    t.size()
                )));
            }
            w.write_all(&bytes).map_err(io)?;
            let pad = (bytes.len() as u64).next_multiple_of(align) - bytes.len() as u64;
            w.write_all(&zeros[..pad as usize]).map_err(io)?;
            written += bytes.len() as u64 + pad;
        }
        w.flush().map_err(io)?;
        Ok(written)
    }

    /// Writes the file to `path` atomically: into a temporary file beside it, synced, then renamed
    /// over `path`. On any error the temporary file is removed and `path` is left as it was.
    pub fn write_file<'d>(
        &self,
        path: &Path,
        data: impl FnMut(usize, &TensorSpec) -> std::result::Result<Cow<'d, [u8]>, DataError>,
    ) -> Result<u64> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.partial", std::process::id()));
        let result = (|| {
            let f = std::fs::File::create(&tmp).map_err(|e| GgufError::io(&tmp, e))?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            let n = self.write_to(&mut w, data)?;
            let f = w
                .into_inner()
                .map_err(|e| GgufError::io(&tmp, e.into_error()))?;
            f.sync_all().map_err(|e| GgufError::io(&tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| GgufError::io(path, e))?;
            Ok(n)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

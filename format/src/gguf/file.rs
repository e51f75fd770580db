//! A GGUF file opened for reading: the bytes (usually a read-only memory map), the parsed header,
//! and zero-copy views of tensor data.

use std::path::{Path, PathBuf};

use edgecut_backends::{quant, DType};
use memmap2::Mmap;

use super::error::{GgufError, Result};
use super::parse::{parse, Header};
use super::value::{Array, Value};
use super::{ModelId, TensorInfo, UnreadableTensor};

enum Bytes {
    Map(Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An open GGUF file. Tensor views borrow from it: no tensor data is copied or read until used.
pub struct GgufFile {
    bytes: Bytes,
    header: Header,
    path: Option<PathBuf>,
}

/// A tensor's table entry and its data, borrowed from the file.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// The table entry.
    pub info: &'a TensorInfo,
    /// The raw data, exactly `info.size` bytes.
    pub data: &'a [u8],
}

impl TensorView<'_> {
    /// Decodes the tensor to f32 values (row-major, innermost dimension fastest).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.info.n_elements() as usize];
        // The parser checked that the data is exactly the size of the shape in this type.
        quant::dequantize(self.info.dtype, self.data, &mut out).expect("validated tensor size");
        out
    }
}

/// The file's bytes, which prepared weights may keep reading in place (zero copy).
impl edgecut_backends::Storage for GgufFile {
    fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }
}

impl GgufFile {
    /// Opens and maps `path` read-only and parses its header. Tensor data is not read.
    ///
    /// # Memory map contract
    /// The file is mapped, not copied. If another process truncates or rewrites the file while it
    /// is open, reads of tensor data may see the new bytes or fault (SIGBUS). edgecut never writes
    /// to a file it has open, and its converter writes to a temporary file and renames it into
    /// place, which leaves existing maps intact.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| GgufError::io(path, e))?;
        let len = file.metadata().map_err(|e| GgufError::io(path, e))?.len();
        if len < 4 {
            return Err(GgufError::BadMagic {
                found: std::fs::read(path).unwrap_or_default(),
            });
        }
        // SAFETY: the map is read-only and private to this process; the contract for concurrent
        // modification by other processes is documented above. All accesses go through slices
        // bounds-checked by the parser.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io(path, e))?;
        let header = parse(&map)?;
        Ok(GgufFile {
            bytes: Bytes::Map(map),
            header,
            path: Some(path.to_path_buf()),
        })
    }

    /// Parses a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        let header = parse(&bytes)?;
        Ok(GgufFile {
            bytes: Bytes::Owned(bytes),
            header,
            path: None,
        })
    }

    /// The path the file was opened from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Total size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.bytes.as_slice().len() as u64
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.header.metadata
    }

    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.header
            .metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The value of a key that must be present.
    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    /// A string key that must be present.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| wrong(key, "string", v))
    }

    /// An integer key that must be present.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| wrong(key, "unsigned integer", v))
    }

    /// A numeric key that must be present.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| wrong(key, "number", v))
    }

    /// An array key that must be present.
    pub fn get_array(&self, key: &str) -> Result<&Array> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| wrong(key, "array", v))
    }

    /// The architecture (`general.architecture`).
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// The tensor table.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// A view of the tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.header
            .tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| self.view(t))
    }

    /// The tensors of types edgecut cannot decode (not in [`GgufFile::tensors`]).
    pub fn unreadable(&self) -> &[UnreadableTensor] {
        &self.header.unreadable
    }

    /// A view of a tensor that must be present: an error names the tensor when it is missing,
    /// and its type when edgecut cannot decode it.
    pub fn require_tensor(&self, name: &str) -> Result<TensorView<'_>> {
        if let Some(t) = self.tensor(name) {
            return Ok(t);
        }
        Err(match self.unreadable().iter().find(|t| t.name == name) {
            Some(t) => GgufError::UnsupportedTensorType {
                name: t.name.clone(),
                type_id: t.type_id,
                type_name: t.type_name,
            },
            None => GgufError::MissingTensor(name.to_string()),
        })
    }

    /// The view of one entry of [`GgufFile::tensors`].
    pub fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        TensorView {
            info,
            data: self.data(info.offset, info.size),
        }
    }

    /// The stored bytes of a tensor edgecut cannot decode.
    pub fn unreadable_data(&self, t: &UnreadableTensor) -> &[u8] {
        self.data(t.offset, t.size)
    }

    fn data(&self, offset: u64, size: u64) -> &[u8] {
        let start = (self.header.data_offset + offset) as usize;
        // The parser checked offset + size against the data section, which lies in the file.
        &self.bytes.as_slice()[start..start + size as usize]
    }

    /// Total tensor bytes by type, in [`DType`] order of first appearance.
    pub fn bytes_by_type(&self) -> Vec<(DType, u64, usize)> {
        let mut out: Vec<(DType, u64, usize)> = Vec::new();
        for t in self.tensors() {
            match out.iter_mut().find(|(d, _, _)| *d == t.dtype) {
                Some(e) => {
                    e.1 += t.size;
                    e.2 += 1;
                }
                None => out.push((t.dtype, t.size, 1)),
            }
        }
        out
    }

    /// The model identity: a hash over metadata, tensor table and tensor data. Reads all tensor
    /// data once (about 20 ms for 25 MB).
    pub fn identity(&self) -> ModelId {
        ModelId::of(self)
    }
}

fn wrong(key: &str, expected: &'static str, v: &Value) -> GgufError {
    GgufError::WrongType {
        key: key.to_string(),
        expected,
        found: v.value_type().name(),
    }
}

//! The GGUF header parser: a pure function from bytes to [`Header`].
//!
//! Nothing read from the file is trusted: every count is compared with the bytes left before any
//! allocation sized by it, every string is checked against the end of the file and for UTF-8, and
//! every tensor's shape, type, offset and size is validated against the data section.

use edgecut_backends::DType;

use super::error::{GgufError, Result};
use super::value::{Array, Value, ValueType};
use super::{TensorInfo, UnreadableTensor, DEFAULT_ALIGNMENT, MAX_DIMS, MAX_NAME_LEN};

/// The magic bytes at the start of every GGUF file.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// Deepest array nesting accepted.
const MAX_ARRAY_DEPTH: usize = 4;
/// Capacity reserved up front for a vector sized by a count from the file; beyond it, vectors grow
/// as elements are actually read, so a lying count cannot make a large allocation.
const PREALLOC_LIMIT: usize = 4096;

/// The parsed header of a GGUF file: metadata, tensor table and data section position.
#[derive(Clone, Debug)]
pub struct Header {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor table in file order (the tensors edgecut can decode).
    pub tensors: Vec<TensorInfo>,
    /// Tensors of types edgecut cannot decode, in file order.
    pub unreadable: Vec<UnreadableTensor>,
    /// Alignment of tensor data (from `general.alignment`, default 32).
    pub alignment: u64,
    /// Byte offset of the data section in the file.
    pub data_offset: u64,
    /// Byte length of the data section (to the end of the file).
    pub data_len: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.left() as u64 {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                need: n,
                have: self.left() as u64,
            });
        }
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        Ok(s.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let start = self.pos as u64;
        let len = self.u64(&|| format!("length of {}", what()))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
            what: what(),
            offset: start,
        })
    }

    /// Checks that `count` elements of at least `min_size` bytes each can fit in what is left.
    fn check_count(&self, count: u64, min_size: u64, what: &dyn Fn() -> String) -> Result<()> {
        if count
            .checked_mul(min_size)
            .is_none_or(|need| need > self.left() as u64)
        {
            return Err(GgufError::BadCount {
                what: what(),
                count,
                have: self.left() as u64,
            });
        }
        Ok(())
    }
}

fn cap(count: u64) -> usize {
    count.min(PREALLOC_LIMIT as u64) as usize
}

/// Parses the header of a GGUF file held in `buf` and validates its tensor table against it.
pub fn parse(buf: &[u8]) -> Result<Header> {
    let mut c = Cursor { buf, pos: 0 };
    if buf.len() < 4 || &buf[..4] != MAGIC {
        return Err(GgufError::BadMagic {
            found: buf[..buf.len().min(4)].to_vec(),
        });
    }
    c.pos = 4;
    let version = c.u32(&|| "version".into())?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = c.u64(&|| "tensor count".into())?;
    let n_kv = c.u64(&|| "metadata count".into())?;
    // A key-value takes at least 8 (key length) + 4 (type) + 1 (value) bytes; a tensor info at
    // least 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset).
    c.check_count(n_kv, 13, &|| "metadata".into())?;
    c.check_count(n_tensors, 32, &|| "tensor".into())?;

    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(cap(n_kv));
    for i in 0..n_kv {
        let key = c.string(&|| format!("key of metadata entry {i}"))?;
        let type_id = c.u32(&|| format!("type of metadata key {key:?}"))?;
        let vt = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.clone(),
            type_id,
        })?;
        let value = read_value(&mut c, vt, &key, 0)?;
        if metadata.iter().any(|(k, _)| *k == key) {
            return Err(GgufError::DuplicateKey(key));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) if *a != 0 && a.is_power_of_two() => *a as u64,
        Some((_, v)) => {
            return Err(GgufError::BadAlignment(format!(
                "{} {v}",
                v.value_type().name()
            )))
        }
    };

    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(cap(n_tensors));
    let mut unreadable = Vec::new();
    let mut names = std::collections::HashSet::with_capacity(cap(n_tensors));
    for i in 0..n_tensors {
        let t = read_tensor_info(&mut c, i)?;
        let name = match &t {
            Entry::Readable(t) => &t.name,
            Entry::Unreadable(t) => &t.name,
        };
        if !names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor(name.clone()));
        }
        match t {
            Entry::Readable(t) => tensors.push(t),
            Entry::Unreadable(t) => unreadable.push(t),
        }
    }

    let header_end = c.pos as u64;
    let data_offset = header_end.next_multiple_of(alignment);
    let file_len = buf.len() as u64;
    let data_len = file_len.saturating_sub(data_offset);
    let spans: Vec<Span<'_>> = tensors
        .iter()
        .map(|t| Span {
            name: &t.name,
            offset: t.offset,
            size: t.size,
        })
        .chain(unreadable.iter().map(|t| Span {
            name: &t.name,
            offset: t.offset,
            size: t.size,
        }))
        .collect();
    validate_layout(&spans, alignment, data_len)?;
    Ok(Header {
        version,
        metadata,
        tensors,
        unreadable,
        alignment,
        data_offset,
        data_len,
    })
}

fn read_value(c: &mut Cursor<'_>, vt: ValueType, key: &str, depth: usize) -> Result<Value> {
    let what = || format!("value of metadata key {key:?}");
    Ok(match vt {
        ValueType::U8 => Value::U8(c.array::<1>(&what)?[0]),
        ValueType::I8 => Value::I8(c.array::<1>(&what)?[0] as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array(&what)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array(&what)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(c.array(&what)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array(&what)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array(&what)?)),
        ValueType::Bool => Value::Bool(read_bool(c, key)?),
        ValueType::Str => Value::Str(c.string(&what)?),
        ValueType::U64 => Value::U64(u64::from_le_bytes(c.array(&what)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array(&what)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array(&what)?)),
        ValueType::Array => Value::Array(read_array(c, key, depth)?),
    })
}

fn read_bool(c: &mut Cursor<'_>, key: &str) -> Result<bool> {
    let offset = c.pos as u64;
    match c.array::<1>(&|| format!("value of metadata key {key:?}"))?[0] {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(GgufError::BadValue {
            key: key.to_string(),
            reason: format!("bool at byte {offset} is {b}, not 0 or 1"),
        }),
    }
}

fn read_scalars<T, const N: usize>(
    c: &mut Cursor<'_>,
    n: u64,
    what: &dyn Fn() -> String,
    f: fn([u8; N]) -> T,
) -> Result<Vec<T>> {
    let bytes = c.take(n * N as u64, what)?;
    Ok(bytes
        .chunks_exact(N)
        .map(|b| f(b.try_into().expect("N bytes")))
        .collect())
}

fn read_array(c: &mut Cursor<'_>, key: &str, depth: usize) -> Result<Array> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(GgufError::TooDeep {
            key: key.to_string(),
            max: MAX_ARRAY_DEPTH,
        });
    }
    let what = || format!("array of metadata key {key:?}");
    let type_id = c.u32(&what)?;
    let et = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.to_string(),
        type_id,
    })?;
    let n = c.u64(&what)?;
    // Strings take at least 8 bytes (their length), nested arrays at least 12.
    let min = match et {
        ValueType::Str => 8,
        ValueType::Array => 12,
        t => t.scalar_size().expect("scalar") as u64,
    };
    c.check_count(n, min, &what)?;
    Ok(match et {
        ValueType::U8 => Array::U8(c.take(n, &what)?.to_vec()),
        ValueType::I8 => Array::I8(c.take(n, &what)?.iter().map(|&b| b as i8).collect()),
        ValueType::U16 => Array::U16(read_scalars(c, n, &what, u16::from_le_bytes)?),
        ValueType::I16 => Array::I16(read_scalars(c, n, &what, i16::from_le_bytes)?),
        ValueType::U32 => Array::U32(read_scalars(c, n, &what, u32::from_le_bytes)?),
        ValueType::I32 => Array::I32(read_scalars(c, n, &what, i32::from_le_bytes)?),
        ValueType::F32 => Array::F32(read_scalars(c, n, &what, f32::from_le_bytes)?),
        ValueType::U64 => Array::U64(read_scalars(c, n, &what, u64::from_le_bytes)?),
        ValueType::I64 => Array::I64(read_scalars(c, n, &what, i64::from_le_bytes)?),
        ValueType::F64 => Array::F64(read_scalars(c, n, &what, f64::from_le_bytes)?),
        ValueType::Bool => {
            let mut v = Vec::with_capacity(cap(n));
            for _ in 0..n {
                v.push(read_bool(c, key)?);
            }
            Array::Bool(v)
        }
        ValueType::Str => {
            let mut v = Vec::with_capacity(cap(n));
            for i in 0..n {
                v.push(c.string(&|| format!("element {i} of metadata key {key:?}"))?);
            }
            Array::Str(v)
        }
        ValueType::Array => {
            let mut v = Vec::with_capacity(cap(n));
            for _ in 0..n {
                v.push(read_array(c, key, depth + 1)?);
            }
            Array::Array(v)
        }
    })
}

/// A tensor table entry, of a type edgecut decodes or not.
enum Entry {
    Readable(TensorInfo),
    Unreadable(UnreadableTensor),
}

/// Where a tensor's data lies, for the layout checks.
struct Span<'a> {
    name: &'a str,
    offset: u64,
    size: u64,
}

fn read_tensor_info(c: &mut Cursor<'_>, index: u64) -> Result<Entry> {
    let name = c.string(&|| format!("name of tensor {index}"))?;
    let bad = |reason: String| GgufError::BadTensor {
        name: name.clone(),
        reason,
    };
    if name.len() > MAX_NAME_LEN {
        return Err(bad(format!(
            "name is {} bytes, more than {MAX_NAME_LEN}",
            name.len()
        )));
    }
    let n_dims = c.u32(&|| format!("dimension count of tensor {name:?}"))?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(bad(format!(
            "{n_dims} dimensions (1 to {MAX_DIMS} allowed)"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(c.u64(&|| format!("dimensions of tensor {name:?}"))?);
    }
    let type_id = c.u32(&|| format!("type of tensor {name:?}"))?;
    let offset = c.u64(&|| format!("offset of tensor {name:?}"))?;

    if dims.contains(&0) {
        return Err(bad(format!("zero-sized dimension in shape {dims:?}")));
    }
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| bad(format!("shape {dims:?} overflows the element count")))?;
    let unsupported = || GgufError::UnsupportedTensorType {
        name: name.clone(),
        type_id,
        type_name: DType::ggml_name(type_id),
    };
    let (block_len, block_bytes) = DType::ggml_block_size(type_id).ok_or_else(unsupported)?;
    let type_name = DType::ggml_name(type_id);
    if dims[0] % block_len as u64 != 0 {
        return Err(bad(format!(
            "row length {} is not a multiple of the {type_name} block length {block_len}",
            dims[0],
        )));
    }
    let size = (n_elements / block_len as u64)
        .checked_mul(block_bytes as u64)
        .ok_or_else(|| bad(format!("byte size of shape {dims:?} overflows")))?;
    Ok(match DType::from_ggml_id(type_id) {
        Some(dtype) => Entry::Readable(TensorInfo {
            name,
            dtype,
            dims,
            offset,
            size,
        }),
        None => Entry::Unreadable(UnreadableTensor {
            name,
            type_id,
            type_name,
            dims,
            offset,
            size,
        }),
    })
}

fn validate_layout(tensors: &[Span<'_>], alignment: u64, data_len: u64) -> Result<()> {
    for t in tensors {
        if t.offset % alignment != 0 {
            return Err(GgufError::Misaligned {
                name: t.name.to_string(),
                offset: t.offset,
                alignment,
            });
        }
        if t.offset
            .checked_add(t.size)
            .is_none_or(|end| end > data_len)
        {
            return Err(GgufError::TensorOutOfBounds {
                name: t.name.to_string(),
                offset: t.offset,
                size: t.size,
                data_len,
            });
        }
    }
    let mut order: Vec<&Span<'_>> = tensors.iter().collect();
    order.sort_by_key(|t| t.offset);
    for w in order.windows(2) {
        if w[1].offset < w[0].offset + w[0].size {
            return Err(GgufError::Overlap {
                first: w[0].name.to_string(),
                second: w[1].name.to_string(),
            });
        }
    }
    Ok(())
}

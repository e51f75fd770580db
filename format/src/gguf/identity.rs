//! The model identity: a stable hash that two processes compare before they split a model.

use std::fmt;

use sha2::{Digest, Sha256};

use super::value::encode_str;
use super::GgufFile;

/// SHA-256 over a canonical encoding of a GGUF file's metadata (keys, types, values, in file
/// order), its tensor table (names, types, dimensions; not offsets) and each tensor's data. The
/// same model written with another alignment or layout of the data section has the same identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelId(pub [u8; 32]);

impl ModelId {
    /// Hashes `file`.
    pub fn of(file: &GgufFile) -> ModelId {
        let mut h = Sha256::new();
        let mut buf = Vec::new();
        h.update(b"edgecut-model-id-v1\0");
        for (k, v) in file.metadata() {
            buf.clear();
            encode_str(k, &mut buf);
            buf.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            v.encode(&mut buf);
            h.update(&buf);
        }
        for t in file.tensors() {
            buf.clear();
            encode_str(&t.name, &mut buf);
            buf.extend_from_slice(&t.dtype.ggml_id().to_le_bytes());
            buf.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                buf.extend_from_slice(&d.to_le_bytes());
            }
            h.update(&buf);
            h.update(file.view(t).data);
        }
        // Tensors edgecut cannot decode are part of the model all the same.
        for t in file.unreadable() {
            buf.clear();
            encode_str(&t.name, &mut buf);
            buf.extend_from_slice(&t.type_id.to_le_bytes());
            buf.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                buf.extend_from_slice(&d.to_le_bytes());
            }
            h.update(&buf);
            h.update(file.unreadable_data(t));
        }
        ModelId(h.finalize().into())
    }

    /// The first 8 bytes as 16 hex digits, for display.
    pub fn short(&self) -> String {
        self.to_string()[..16].to_string()
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelId({self})")
    }
}

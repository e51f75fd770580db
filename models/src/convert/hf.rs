//! Reading a Hugging Face checkpoint directory: `config.json`, `model.safetensors`,
//! `tokenizer.json`, and sentence-transformers' `modules.json`, `1_Pooling/config.json` and
//! `sentence_bert_config.json`.

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::error::{ModelError, Result};

/// An open checkpoint directory.
pub struct Checkpoint {
    /// The directory.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: Json,
    /// `tokenizer.json`, as text, when present.
    pub tokenizer_json: Option<String>,
    map: Mmap,
    weights_path: PathBuf,
}

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::Json {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

impl Checkpoint {
    /// Opens `dir`, which must hold `config.json` and `model.safetensors`.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let config = read_json(&dir.join("config.json"))?;
        let weights_path = dir.join("model.safetensors");
        let file =
            std::fs::File::open(&weights_path).map_err(|e| ModelError::io(&weights_path, e))?;
        // SAFETY: read-only private map of a checkpoint file that this process does not modify;
        // safetensors validates the header and every tensor's range before giving out slices.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(&weights_path, e))?;
        SafeTensors::deserialize(&map).map_err(|e| ModelError::Safetensors {
            path: weights_path.clone(),
            reason: e.to_string(),
        })?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer_json = match std::fs::read_to_string(&tok_path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(ModelError::io(&tok_path, e)),
        };
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            config,
            tokenizer_json,
            map,
            weights_path,
        })
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.map).expect("validated in open")
    }

    /// Names of all tensors in the checkpoint.
    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.tensors().names().into_iter().cloned().collect();
        n.sort();
        n
    }

    /// A tensor's shape (outermost first), without reading its data.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let st = self.tensors();
        let t = st
            .tensor(name)
            .map_err(|_| ModelError::MissingTensor(name.to_string()))?;
        Ok(t.shape().to_vec())
    }

    /// A tensor decoded to f32, with its shape (outermost first).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let st = self.tensors();
        let t = st
            .tensor(name)
            .map_err(|_| ModelError::MissingTensor(name.to_string()))?;
        let d = t.data();
        let v: Vec<f32> = match t.dtype() {
            Dtype::F32 => d
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => d
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => d
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::Unsupported(format!(
                    "tensor {name:?} in {} has type {other:?}; edgecut converts F32, F16 and BF16",
                    self.weights_path.display()
                )))
            }
        };
        Ok((v, t.shape().to_vec()))
    }

    /// `tokenizer.json`, required: edgecut files carry their tokenizer.
    pub fn require_tokenizer_json(&self) -> Result<&str> {
        self.tokenizer_json.as_deref().ok_or_else(|| {
            ModelError::Unsupported(format!(
                "{} has no tokenizer.json; edgecut files carry their tokenizer",
                self.dir.display()
            ))
        })
    }

    /// Whether the checkpoint has a tensor called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.tensors().tensor(name).is_ok()
    }

    /// SHA-256 of `config.json` and `model.safetensors`, hex: the source checksum stored in the
    /// converted file.
    pub fn checksum(&self) -> Result<String> {
        let mut h = Sha256::new();
        let cfg = self.dir.join("config.json");
        h.update(std::fs::read(&cfg).map_err(|e| ModelError::io(&cfg, e))?);
        h.update(&self.map[..]);
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// An integer from `config.json`.
    pub fn cfg_usize(&self, key: &str) -> Result<usize> {
        self.config
            .get(key)
            .and_then(Json::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| self.cfg_err(key, "a non-negative integer"))
    }

    /// A number from `config.json`, or `default` when absent.
    pub fn cfg_f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.config.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.cfg_err(key, "a number")),
        }
    }

    /// A string from `config.json`, if present.
    pub fn cfg_str(&self, key: &str) -> Option<&str> {
        self.config.get(key).and_then(Json::as_str)
    }

    fn cfg_err(&self, key: &str, what: &str) -> ModelError {
        ModelError::Json {
            path: self.dir.join("config.json"),
            reason: format!("key {key:?} should be {what}"),
        }
    }

    /// A JSON file of the checkpoint, relative to its directory, if present.
    pub fn optional_json(&self, rel: &str) -> Result<Option<Json>> {
        let p = self.dir.join(rel);
        if p.exists() {
            read_json(&p).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Whether sentence-transformers' `modules.json` ends the model with `Normalize`.
    pub fn normalizes(&self) -> Result<bool> {
        Ok(self
            .optional_json("modules.json")?
            .and_then(|m| m.as_array().cloned())
            .is_some_and(|mods| {
                mods.iter().any(|m| {
                    m.get("type")
                        .and_then(Json::as_str)
                        .is_some_and(|t| t.ends_with("Normalize"))
                })
            }))
    }
}

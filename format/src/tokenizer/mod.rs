//! The tokenizer a model file carries, built with the `tokenizers` crate: from the whole Hugging
//! Face `tokenizer.json` under `tokenizer.huggingface.json` when present, else rebuilt from
//! llama.cpp's `tokenizer.ggml.*` arrays (WordPiece for `bert`, byte-level BPE for `gpt2`).
//! [`TextStream`] turns generated ids into text piece by piece.

mod describe;
mod fast_wordpiece;
mod ggml;
mod stream;

use std::collections::{HashMap, HashSet};

use tokenizers::{DecoderWrapper, PostProcessor, TruncationDirection};

pub use describe::describe;
pub use stream::TextStream;

use crate::gguf::{GgufFile, Value};

/// Why a tokenizer could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The file carries no tokenizer edgecut can build.
    #[error("model file has no usable tokenizer: {0}")]
    Missing(String),
    /// The tokenizer description is invalid.
    #[error("invalid tokenizer: {0}")]
    Invalid(String),
    /// Encoding or decoding failed.
    #[error("tokenizer: {0}")]
    Encode(String),
}

/// One text, tokenized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Token count before truncation (equal to `ids.len()` when nothing was cut).
    pub full_len: usize,
}

impl Encoded {
    /// Whether the text was cut to fit.
    pub fn truncated(&self) -> bool {
        self.full_len > self.ids.len()
    }
}

/// A tokenizer, safe to share between threads.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: &'static str,
    /// GPT-2's byte-to-character table inverted, for byte-level vocabularies.
    byte_of: Option<HashMap<char, u8>>,
    /// Ids of special (control) tokens.
    special: HashSet<u32>,
    /// Vocabulary size with added tokens, counted once: `tokenizers` counts it by building
    /// the whole vocabulary as a map (milliseconds for 30k tokens) on every call.
    vocab_size: usize,
    /// BERT WordPiece on ASCII text without `tokenizers`' per-character bookkeeping.
    fast: Option<fast_wordpiece::FastWordPiece>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tokenizer({}, {} tokens)",
            self.source,
            self.vocab_size()
        )
    }
}

impl Tokenizer {
    /// The tokenizer of a model file.
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        if let Some(Value::Str(json)) = f.get("tokenizer.huggingface.json") {
            return Self::from_json(json, "tokenizer.huggingface.json");
        }
        match f.get("tokenizer.ggml.model").and_then(Value::as_str) {
            Some("bert") => Self::from_json(
                &ggml::wordpiece_json(f)?.to_string(),
                "tokenizer.ggml (bert)",
            ),
            Some("gpt2") => Self::from_json(
                &ggml::bpe_json(f)?.to_string(),
                "tokenizer.ggml (byte-level BPE)",
            ),
            Some(other) => Err(TokenizerError::Missing(format!(
                "tokenizer.ggml.model {other:?} cannot be rebuilt yet (edgecut rebuilds bert and \
                 gpt2); convert the model from its Hugging Face directory to embed its \
                 tokenizer.json"
            ))),
            None => Err(TokenizerError::Missing(
                "neither tokenizer.huggingface.json nor tokenizer.ggml.model is present".into(),
            )),
        }
    }

    /// A tokenizer from a Hugging Face `tokenizer.json` document (`source` names it in errors).
    pub fn from_json(json: &str, source: &'static str) -> Result<Tokenizer, TokenizerError> {
        let mut inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e| TokenizerError::Invalid(format!("{source}: {e}")))?;
        // The runtime decides padding and truncation per call.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| TokenizerError::Invalid(format!("{source}: {e}")))?;
        let byte_of =
            matches!(inner.get_decoder(), Some(DecoderWrapper::ByteLevel(_))).then(|| {
                gpt2_byte_chars()
                    .into_iter()
                    .enumerate()
                    .map(|(b, c)| (c, b as u8))
                    .collect()
            });
        let special = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        let vocab_size = inner.get_vocab_size(true);
        let fast = fast_wordpiece::FastWordPiece::new(&inner);
        Ok(Tokenizer {
            inner,
            source,
            byte_of,
            special,
            vocab_size,
            fast,
        })
    }

    /// Where the tokenizer came from.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Tokenizes `text` (with the model's special tokens when `special`), cut to at most
    /// `max_len` tokens (special tokens included) when given. A BERT WordPiece tokenizer takes
    /// a fast path for plain ASCII text (the same ids as [`Self::encode_reference`]).
    pub fn encode(
        &self,
        text: &str,
        special: bool,
        max_len: Option<usize>,
    ) -> Result<Encoded, TokenizerError> {
        self.encode_with(text, special, max_len, true)
    }

    /// Whether [`Self::encode`] takes the fast path for `text`.
    pub fn takes_fast_path(&self, text: &str) -> bool {
        self.fast.as_ref().is_some_and(|f| f.accepts(text))
    }

    /// [`Self::encode`] through the `tokenizers` crate only (no fast path), for comparison.
    pub fn encode_reference(
        &self,
        text: &str,
        special: bool,
        max_len: Option<usize>,
    ) -> Result<Encoded, TokenizerError> {
        self.encode_with(text, special, max_len, false)
    }

    fn encode_with(
        &self,
        text: &str,
        special: bool,
        max_len: Option<usize>,
        fast: bool,
    ) -> Result<Encoded, TokenizerError> {
        let err = |e: tokenizers::Error| TokenizerError::Encode(e.to_string());
        // Encode once without special tokens, cut the text's own tokens so that the special
        // tokens still fit, then let the post-processor add them.
        let quick = self
            .fast
            .as_ref()
            .filter(|_| fast)
            .and_then(|f| f.encode(&self.inner, text));
        let mut enc = match quick {
            Some(ids) => tokenizers::Encoding::from_tokens(
                ids.into_iter()
                    .map(|id| tokenizers::Token::new(id, String::new(), (0, 0)))
                    .collect(),
                0,
            ),
            None => self.inner.encode(text, false).map_err(err)?,
        };
        let added = match (special, self.inner.get_post_processor()) {
            (true, Some(p)) => p.added_tokens(false),
            _ => 0,
        };
        let full_len = enc.len() + added;
        if let Some(max) = max_len.filter(|&m| m < full_len) {
            enc.truncate(max.saturating_sub(added), 0, TruncationDirection::Right);
        }
        let enc = self.inner.post_process(enc, None, special).map_err(err)?;
        Ok(Encoded {
            ids: enc.get_ids().to_vec(),
            full_len,
        })
    }

    /// Decodes ids to text.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// The id of a token, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
    /// Whether `id` is a special (control) token, such as `<|im_end|>`.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }

    /// The text bytes of one token of a byte-level vocabulary (`None` for other vocabularies,
    /// or an id outside the vocabulary). Special tokens give their literal text.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let table = self.byte_of.as_ref()?;
        let tok = self.inner.id_to_token(id)?;
        if self.is_special(id) {
            return Some(tok.into_bytes());
        }
        // A character outside GPT-2's table (an added non-special token) stands for itself.
        let mut out = Vec::with_capacity(tok.len());
        for c in tok.chars() {
            match table.get(&c) {
                Some(&b) => out.push(b),
                None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        Some(out)
    }
}

/// GPT-2's `bytes_to_unicode`: byte `b` is shown as character `table[b]` in byte-level
/// vocabularies (printable Latin-1 bytes as themselves, the rest moved to U+0100 and up).
fn gpt2_byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            b as char
        } else {
            let c = char::from_u32(next).expect("U+0100..U+0143 are chars");
            next += 1;
            c
        };
    }
    table
}

//! The tokenizer a model file carries, one of two implementations behind [`Tokenizer`]:
//!
//! 1. The `tokenizers` crate (`hf.rs`), from the whole Hugging Face `tokenizer.json` under
//!    `tokenizer.huggingface.json` when present, else rebuilt from llama.cpp's
//!    `tokenizer.ggml.*` arrays (WordPiece for `bert`, byte-level BPE for `gpt2`).
//! 2. llama.cpp's SentencePiece tokenizer (`spm.rs`) for `tokenizer.ggml.model = "llama"`
//!    (Llama 2, Mistral, Gemma), or a SentencePiece `tokenizer.model` file, giving llama.cpp's
//!    ids exactly.
//!
//! [`TextStream`] turns generated ids into text piece by piece.

mod describe;
mod fast_wordpiece;
mod ggml;
mod hf;
mod piece_index;
mod spm;
mod spm_proto;
mod stream;

pub use describe::describe;
pub use spm_proto::{read_sentencepiece_model, SentencePieceVocab};
pub use stream::TextStream;

use crate::gguf::{Array, GgufFile, Value};

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

/// Two texts joined as one input (a cross-encoder's query and document).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedPair {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Token type (segment) of each id: 0 for the first text, 1 for the second where the
    /// model's template says so.
    pub type_ids: Vec<u32>,
    /// Token count before truncation.
    pub full_len: usize,
}

impl EncodedPair {
    /// Whether the second text was cut to fit.
    pub fn truncated(&self) -> bool {
        self.full_len > self.ids.len()
    }
}

/// A tokenizer, safe to share between threads.
pub struct Tokenizer {
    imp: Imp,
    source: &'static str,
}

/// The implementation behind a [`Tokenizer`], picked when it is built.
enum Imp {
    Hf(Box<hf::HfTokenizer>),
    Spm(Box<spm::Spm>),
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
            Some("llama") => Self::spm_from_gguf(f),
            Some("t5") => Self::from_json(
                &ggml::unigram_json(f)?.to_string(),
                "tokenizer.ggml (SentencePiece Unigram)",
            ),
            Some(other) => Err(TokenizerError::Missing(format!(
                "tokenizer.ggml.model {other:?} cannot be rebuilt yet (edgecut rebuilds bert, \
                 gpt2, llama and t5); convert the model from its Hugging Face directory to embed its \
                 tokenizer.json"
            ))),
            None => Err(TokenizerError::Missing(
                "neither tokenizer.huggingface.json nor tokenizer.ggml.model is present".into(),
            )),
        }
    }

    /// llama.cpp's SentencePiece tokenizer from the `tokenizer.ggml.*` keys, with llama.cpp's
    /// defaults for the keys a file may leave out (BOS 1, EOS 2, unknown 0, a BOS added, a
    /// space prefix added, no EOS added).
    fn spm_from_gguf(f: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let pieces = match f.get("tokenizer.ggml.tokens") {
            Some(Value::Array(Array::Str(v))) => v,
            _ => {
                return Err(TokenizerError::Missing(
                    "tokenizer.ggml.tokens is missing or not an array of strings".into(),
                ))
            }
        };
        let int_scores: Vec<f32>;
        let scores = match f.get("tokenizer.ggml.scores") {
            Some(Value::Array(Array::F32(s))) => Some(&s[..]),
            Some(Value::Array(Array::I32(s))) => {
                int_scores = s.iter().map(|&x| x as f32).collect();
                Some(&int_scores[..])
            }
            None => None,
            Some(_) => {
                return Err(TokenizerError::Invalid(
                    "tokenizer.ggml.scores is not an array of f32 or i32".into(),
                ))
            }
        };
        let types = match f.get("tokenizer.ggml.token_type") {
            Some(Value::Array(Array::I32(t))) => Some(&t[..]),
            None => None,
            Some(_) => {
                return Err(TokenizerError::Invalid(
                    "tokenizer.ggml.token_type is not an array of i32".into(),
                ))
            }
        };
        let flag =
            |key: &str, default: bool| f.get(key).and_then(Value::as_bool).unwrap_or(default);
        let id = |key: &str, default: u32| match f.get(key) {
            Some(v) => v.as_u64().and_then(|i| u32::try_from(i).ok()),
            None => Some(default),
        };
        let settings = spm::Settings {
            add_bos: flag("tokenizer.ggml.add_bos_token", true),
            add_eos: flag("tokenizer.ggml.add_eos_token", false),
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix", true),
            bos: id("tokenizer.ggml.bos_token_id", 1),
            eos: id("tokenizer.ggml.eos_token_id", 2),
            unk: id("tokenizer.ggml.unknown_token_id", 0),
        };
        let spm = spm::Spm::new(pieces, scores, types, settings)?;
        Ok(Tokenizer {
            imp: Imp::Spm(Box::new(spm)),
            source: "tokenizer.ggml (llama SentencePiece)",
        })
    }

    /// llama.cpp's SentencePiece tokenizer from a SentencePiece `tokenizer.model` file (a BPE
    /// model, as Llama 2's, Mistral's and Gemma's are), with the BOS, EOS and unknown ids its
    /// trainer spec names. `add_bos` puts BOS in front when special tokens are wanted;
    /// `add_space_prefix` puts a space before the text (the model's `add_dummy_prefix`, see
    /// [`read_sentencepiece_model`]; Gemma's is off).
    pub fn from_sentencepiece_model(
        bytes: &[u8],
        add_bos: bool,
        add_space_prefix: bool,
    ) -> Result<Tokenizer, TokenizerError> {
        let v = read_sentencepiece_model(bytes)?;
        if v.model_type != spm_proto::MODEL_TYPE_BPE {
            return Err(TokenizerError::Invalid(format!(
                "tokenizer.model has SentencePiece model type {} (1 unigram, 3 word, 4 char); \
                 edgecut reads BPE (2) models",
                v.model_type
            )));
        }
        let settings = spm::Settings {
            add_bos,
            add_eos: false,
            add_space_prefix,
            bos: v.bos_id,
            eos: v.eos_id,
            unk: v.unk_id,
        };
        let spm = spm::Spm::new(&v.pieces, Some(&v.scores), Some(&v.types), settings)?;
        Ok(Tokenizer {
            imp: Imp::Spm(Box::new(spm)),
            source: "tokenizer.model (SentencePiece)",
        })
    }

    /// A tokenizer from a Hugging Face `tokenizer.json` document (`source` names it in errors).
    pub fn from_json(json: &str, source: &'static str) -> Result<Tokenizer, TokenizerError> {
        Ok(Tokenizer {
            imp: Imp::Hf(Box::new(hf::HfTokenizer::from_json(json, source)?)),
            source,
        })
    }

    /// Where the tokenizer came from.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        match &self.imp {
            Imp::Hf(t) => t.vocab_size(),
            Imp::Spm(t) => t.vocab_size(),
        }
    }

    /// Tokenizes `text` (with the model's special tokens when `special`), cut to at most
    /// `max_len` tokens (special tokens included) when given. Special-token texts inside `text`
    /// (such as `<start_of_turn>`) are always read as those tokens. A BERT WordPiece tokenizer
    /// takes a fast path for plain ASCII text (the same ids as [`Self::encode_reference`]).
    pub fn encode(
        &self,
        text: &str,
        special: bool,
        max_len: Option<usize>,
    ) -> Result<Encoded, TokenizerError> {
        match &self.imp {
            Imp::Hf(t) => t.encode_with(text, special, max_len, true),
            Imp::Spm(t) => Self::encode_spm(t, text, special, max_len),
        }
    }

    /// Tokenizes a pair of texts as the model's template joins them (a cross-encoder's query
    /// and document), with token types; a cut to `max_len` shortens only the second text, and
    /// a first text that leaves it no room is an error. SentencePiece (decoder) tokenizers have
    /// no pair template.
    pub fn encode_pair(
        &self,
        first: &str,
        second: &str,
        max_len: Option<usize>,
    ) -> Result<EncodedPair, TokenizerError> {
        match &self.imp {
            Imp::Hf(t) => t.encode_pair(first, second, max_len),
            Imp::Spm(_) => Err(TokenizerError::Encode(
                "this tokenizer has no template for text pairs".into(),
            )),
        }
    }

    /// Whether [`Self::encode`] takes the fast path for `text`.
    pub fn takes_fast_path(&self, text: &str) -> bool {
        match &self.imp {
            Imp::Hf(t) => t.takes_fast_path(text),
            Imp::Spm(_) => false,
        }
    }

    /// [`Self::encode`] through the `tokenizers` crate only (no fast path), for comparison.
    /// A SentencePiece tokenizer has one path: this is [`Self::encode`].
    pub fn encode_reference(
        &self,
        text: &str,
        special: bool,
        max_len: Option<usize>,
    ) -> Result<Encoded, TokenizerError> {
        match &self.imp {
            Imp::Hf(t) => t.encode_with(text, special, max_len, false),
            Imp::Spm(t) => Self::encode_spm(t, text, special, max_len),
        }
    }

    /// BOS (and EOS) around the text's ids when `special` and the model adds them; a cut keeps
    /// them and shortens the text's ids, as the `tokenizers` path does.
    fn encode_spm(
        t: &spm::Spm,
        text: &str,
        special: bool,
        max_len: Option<usize>,
    ) -> Result<Encoded, TokenizerError> {
        let mut body = t.encode(text)?;
        let s = t.settings();
        let bos = s.bos.filter(|_| special && s.add_bos);
        let eos = s.eos.filter(|_| special && s.add_eos);
        let added = bos.is_some() as usize + eos.is_some() as usize;
        let full_len = body.len() + added;
        if let Some(max) = max_len.filter(|&m| m < full_len) {
            body.truncate(max.saturating_sub(added));
        }
        let ids = bos.into_iter().chain(body).chain(eos).collect();
        Ok(Encoded { ids, full_len })
    }

    /// Decodes ids to text, leaving special tokens out when `skip_special`. For a
    /// SentencePiece tokenizer this is llama.cpp's `llama_detokenize`, and an id outside the
    /// vocabulary is an error.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        match &self.imp {
            Imp::Hf(t) => t.decode(ids, skip_special),
            Imp::Spm(t) => t.decode(ids, skip_special),
        }
    }

    /// The id of a token, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.imp {
            Imp::Hf(t) => t.token_to_id(token),
            Imp::Spm(t) => t.token_to_id(token),
        }
    }

    /// Whether `id` is a special token, such as `<|im_end|>`: an added special token of a
    /// `tokenizer.json`, a control or unknown piece of a SentencePiece vocabulary.
    pub fn is_special(&self, id: u32) -> bool {
        match &self.imp {
            Imp::Hf(t) => t.is_special(id),
            Imp::Spm(t) => t.is_special(id),
        }
    }

    /// The text bytes of one token of a byte-level or SentencePiece vocabulary (`None` for
    /// other vocabularies, or an id outside the vocabulary). Special tokens give their literal
    /// text; a SentencePiece byte piece gives its one byte, and U+2581 reads as a space.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        match &self.imp {
            Imp::Hf(t) => t.token_bytes(id),
            Imp::Spm(t) => t.piece_bytes(id, true).map(|b| b.into_owned()),
        }
    }

    /// Whether [`Self::token_bytes`] gives every token's bytes, so that text can be streamed
    /// token by token.
    fn streams_bytes(&self) -> bool {
        match &self.imp {
            Imp::Hf(t) => t.is_byte_level(),
            Imp::Spm(_) => true,
        }
    }
}

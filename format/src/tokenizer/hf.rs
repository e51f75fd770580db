//! Tokenizers built with the `tokenizers` crate from a Hugging Face `tokenizer.json` (the one a
//! file embeds, or one rebuilt from `tokenizer.ggml.*` arrays by `ggml.rs`).

use std::collections::{HashMap, HashSet};

use tokenizers::{DecoderWrapper, PostProcessor, TruncationDirection};

use super::{fast_wordpiece, Encoded, EncodedPair, TokenizerError};

/// A `tokenizers` tokenizer with what edgecut keeps beside it.
pub(super) struct HfTokenizer {
    inner: tokenizers::Tokenizer,
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

impl HfTokenizer {
    /// A tokenizer from a Hugging Face `tokenizer.json` document (`source` names it in errors).
    pub(super) fn from_json(json: &str, source: &str) -> Result<HfTokenizer, TokenizerError> {
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
        Ok(HfTokenizer {
            inner,
            byte_of,
            special,
            vocab_size,
            fast,
        })
    }

    pub(super) fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub(super) fn is_byte_level(&self) -> bool {
        self.byte_of.is_some()
    }

    pub(super) fn takes_fast_path(&self, text: &str) -> bool {
        self.fast.as_ref().is_some_and(|f| f.accepts(text))
    }

    pub(super) fn encode_with(
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

    /// A pair of texts as the model's post-processor joins them (`[CLS] a [SEP] b [SEP]`,
    /// `<s> a </s></s> b </s>`), with its token types; a cut to `max_len` shortens only `b`.
    pub(super) fn encode_pair(
        &self,
        a: &str,
        b: &str,
        max_len: Option<usize>,
    ) -> Result<EncodedPair, TokenizerError> {
        let err = |e: tokenizers::Error| TokenizerError::Encode(e.to_string());
        let first = self.inner.encode(a, false).map_err(err)?;
        let mut second = self.inner.encode(b, false).map_err(err)?;
        let added = self
            .inner
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(true));
        let full_len = first.len() + second.len() + added;
        if let Some(max) = max_len.filter(|&m| m < full_len) {
            let room = max.saturating_sub(first.len() + added);
            if room == 0 {
                return Err(TokenizerError::Encode(format!(
                    "the query is {} tokens; with {added} special tokens it leaves no room for \
                     a document in {max}",
                    first.len()
                )));
            }
            second.truncate(room, 0, TruncationDirection::Right);
        }
        let enc = self
            .inner
            .post_process(first, Some(second), true)
            .map_err(err)?;
        Ok(EncodedPair {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
            full_len,
        })
    }

    pub(super) fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    pub(super) fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub(super) fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }

    pub(super) fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
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
pub(super) fn gpt2_byte_chars() -> [char; 256] {
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

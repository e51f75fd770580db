//! A fast path for BERT WordPiece tokenizers on plain ASCII text.
//!
//! The `tokenizers` crate keeps an alignment for every character through normalisation and
//! pre-tokenisation, which costs about 1.6 us a word (200 us for a 128-token text, 3% of
//! MiniLM's whole forward pass on two threads). For a tokenizer that is exactly BERT's
//! (`BertNormalizer`, `BertPreTokenizer`, `WordPiece`) and a text of printable ASCII (plus tab,
//! newline and carriage return) that contains no added token's text, the same steps reduce to:
//! lowercase (when the normaliser does), split on whitespace, isolate ASCII punctuation, then
//! WordPiece's greedy longest-match-first with its continuation prefix and word-length limit.
//! Everything else (non-ASCII text, a text holding `[CLS]` and the like, other tokenizers)
//! goes through `tokenizers`. The two are compared on generated texts in
//! `tests/it/tokenizer_fast.rs`.

use std::collections::HashMap;

use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;

/// BERT's WordPiece tokenizer, for ASCII text.
pub(super) struct FastWordPiece {
    vocab: HashMap<String, u32>,
    unk: u32,
    prefix: String,
    max_chars: usize,
    lowercase: bool,
    /// Added tokens' texts, lowercased: a text holding one is left to `tokenizers`.
    added: Vec<String>,
}

impl FastWordPiece {
    /// The fast path for `t`, when `t` is BERT's WordPiece tokenizer.
    pub(super) fn new(t: &tokenizers::Tokenizer) -> Option<FastWordPiece> {
        let lowercase = match t.get_normalizer()? {
            NormalizerWrapper::BertNormalizer(n) => n.lowercase,
            _ => return None,
        };
        if !matches!(
            t.get_pre_tokenizer()?,
            PreTokenizerWrapper::BertPreTokenizer(_)
        ) {
            return None;
        }
        let ModelWrapper::WordPiece(wp) = t.get_model() else {
            return None;
        };
        let vocab = t.get_vocab(false);
        let unk = *vocab.get(&wp.unk_token)?;
        let added = t
            .get_added_tokens_decoder()
            .values()
            .map(|a| a.content.to_ascii_lowercase())
            .collect();
        Some(FastWordPiece {
            vocab,
            unk,
            prefix: wp.continuing_subword_prefix.clone(),
            max_chars: wp.max_input_chars_per_word,
            lowercase,
            added,
        })
    }

    /// The token ids of `text` (no special tokens), or `None` when the text needs the full
    /// tokenizer.
    pub(super) fn encode(&self, text: &str) -> Option<Vec<u32>> {
        let bytes = text.as_bytes();
        let plain = |c: u8| (0x20..=0x7e).contains(&c) || matches!(c, b'\t' | b'\n' | b'\r');
        if !bytes.iter().all(|&c| plain(c)) {
            return None;
        }
        if !self.added.is_empty() {
            let lower = text.to_ascii_lowercase();
            if self
                .added
                .iter()
                .any(|a| !a.is_empty() && lower.contains(a.as_str()))
            {
                return None;
            }
        }
        let mut ids = Vec::with_capacity(bytes.len() / 4 + 2);
        let (mut word, mut piece) = (String::new(), String::new());
        for &c in bytes {
            if c.is_ascii_whitespace() {
                self.word(&mut word, &mut piece, &mut ids);
            } else if c.is_ascii_punctuation() {
                self.word(&mut word, &mut piece, &mut ids);
                word.push(c as char);
                self.word(&mut word, &mut piece, &mut ids);
            } else if self.lowercase {
                word.push(c.to_ascii_lowercase() as char);
            } else {
                word.push(c as char);
            }
        }
        self.word(&mut word, &mut piece, &mut ids);
        Some(ids)
    }

    /// WordPiece of one ASCII word onto `ids` (the word is cleared; `piece` is scratch).
    fn word(&self, word: &mut String, piece: &mut String, ids: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        let first = ids.len();
        // ASCII: characters are bytes.
        if word.len() > self.max_chars {
            ids.push(self.unk);
            word.clear();
            return;
        }
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while start < end {
                piece.clear();
                if start > 0 {
                    piece.push_str(&self.prefix);
                }
                piece.push_str(&word[start..end]);
                if let Some(&id) = self.vocab.get(piece.as_str()) {
                    found = Some(id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(first);
                    ids.push(self.unk);
                    break;
                }
            }
        }
        word.clear();
    }
}

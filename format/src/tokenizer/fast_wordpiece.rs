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

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::Model;

/// BERT's WordPiece tokenizer, for ASCII text. The vocabulary stays the tokenizer's own (looked
/// up through its model), so building this copies nothing.
pub(super) struct FastWordPiece {
    unk: u32,
    lowercase: bool,
    /// Added tokens' texts, lowercased: a text holding one is left to `tokenizers`.
    added: Vec<String>,
    /// First bytes of `added`: a text with none of them cannot hold one (no search, no copy).
    added_first: [bool; 256],
}

/// The WordPiece model of `t`, if that is its model.
fn wordpiece(t: &tokenizers::Tokenizer) -> Option<&WordPiece> {
    match t.get_model() {
        ModelWrapper::WordPiece(wp) => Some(wp),
        _ => None,
    }
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
        let wp = wordpiece(t)?;
        let unk = wp.token_to_id(&wp.unk_token)?;
        let added: Vec<String> = t
            .get_added_tokens_decoder()
            .values()
            .map(|a| a.content.to_ascii_lowercase())
            .filter(|a| !a.is_empty())
            .collect();
        let mut added_first = [false; 256];
        for a in &added {
            added_first[a.as_bytes()[0] as usize] = true;
        }
        Some(FastWordPiece {
            unk,
            lowercase,
            added,
            added_first,
        })
    }

    /// Whether `text` can take the fast path: printable ASCII (tabs and line breaks too), and
    /// no added token's text in it.
    pub(super) fn accepts(&self, text: &str) -> bool {
        let bytes = text.as_bytes();
        let plain = |c: u8| (0x20..=0x7e).contains(&c) || matches!(c, b'\t' | b'\n' | b'\r');
        if !bytes.iter().all(|&c| plain(c)) {
            return false;
        }
        let may_hold_added = bytes
            .iter()
            .any(|&c| self.added_first[c.to_ascii_lowercase() as usize]);
        if may_hold_added {
            let lower = text.to_ascii_lowercase();
            return !self.added.iter().any(|a| lower.contains(a.as_str()));
        }
        true
    }

    /// The token ids of `text` (no special tokens) with `t`'s vocabulary, or `None` when the
    /// text needs the full tokenizer. `t` is the tokenizer this was made from.
    pub(super) fn encode(&self, t: &tokenizers::Tokenizer, text: &str) -> Option<Vec<u32>> {
        let wp = wordpiece(t)?;
        if !self.accepts(text) {
            return None;
        }
        let bytes = text.as_bytes();
        let mut ids = Vec::with_capacity(bytes.len() / 4 + 2);
        let (mut word, mut piece) = (String::new(), String::new());
        for &c in bytes {
            if c.is_ascii_whitespace() {
                self.word(wp, &mut word, &mut piece, &mut ids);
            } else if c.is_ascii_punctuation() {
                self.word(wp, &mut word, &mut piece, &mut ids);
                word.push(c as char);
                self.word(wp, &mut word, &mut piece, &mut ids);
            } else if self.lowercase {
                word.push(c.to_ascii_lowercase() as char);
            } else {
                word.push(c as char);
            }
        }
        self.word(wp, &mut word, &mut piece, &mut ids);
        Some(ids)
    }

    /// WordPiece of one ASCII word onto `ids` (the word is cleared; `piece` is scratch).
    fn word(&self, wp: &WordPiece, word: &mut String, piece: &mut String, ids: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        let first = ids.len();
        // ASCII: characters are bytes.
        if word.len() > wp.max_input_chars_per_word {
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
                    piece.push_str(&wp.continuing_subword_prefix);
                }
                piece.push_str(&word[start..end]);
                if let Some(id) = wp.token_to_id(piece) {
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

//! Generated ids to text, piece by piece, valid UTF-8 at every piece.

use super::{Tokenizer, TokenizerError};

/// Turns generated token ids into text as they arrive. Every piece it returns is valid UTF-8:
/// a character whose bytes are split across tokens (common for emoji and CJK in byte-level
/// vocabularies, and for SentencePiece's byte pieces) is held back until its last byte arrives.
/// Special tokens are left out.
#[derive(Debug)]
pub struct TextStream<'t> {
    tok: &'t Tokenizer,
    /// Byte-level and SentencePiece vocabularies: bytes received but not yet returned (an
    /// unfinished character).
    pending: Vec<u8>,
    /// Other vocabularies: every id so far, and the length of the text already returned.
    ids: Vec<u32>,
    sent: usize,
}

impl<'t> TextStream<'t> {
    /// A stream decoding with `tok`.
    pub fn new(tok: &'t Tokenizer) -> TextStream<'t> {
        TextStream {
            tok,
            pending: Vec::new(),
            ids: Vec::new(),
            sent: 0,
        }
    }

    /// Adds one token; returns the text it completes (often the token's own text, empty when it
    /// ends inside a character or is special).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        if self.tok.is_special(id) {
            return Ok(String::new());
        }
        if self.tok.streams_bytes() {
            let bytes = self.tok.token_bytes(id).ok_or_else(|| {
                TokenizerError::Encode(format!("token id {id} is not in the vocabulary"))
            })?;
            self.pending.extend_from_slice(&bytes);
            return Ok(self.take_complete());
        }
        // Other decoders (WordPiece, Metaspace) may join pieces differently: decode the
        // whole sequence and return what is new, holding back a trailing replacement character
        // (an incomplete byte-fallback sequence).
        self.ids.push(id);
        let text = self.tok.decode(&self.ids, true)?;
        if text.ends_with('\u{FFFD}')
            || text.len() <= self.sent
            || !text.is_char_boundary(self.sent)
        {
            return Ok(String::new());
        }
        let new = text[self.sent..].to_string();
        self.sent = text.len();
        Ok(new)
    }

    /// The text still held back (an unfinished character at the end of generation, shown as
    /// U+FFFD).
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }

    /// The longest prefix of `pending` that is complete UTF-8, with bytes that can never
    /// become valid replaced by U+FFFD.
    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        let mut rest = &self.pending[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (ok, tail) = rest.split_at(e.valid_up_to());
                    // `ok` is valid UTF-8: it ends at `valid_up_to`.
                    out.push_str(std::str::from_utf8(ok).unwrap_or_default());
                    match e.error_len() {
                        // Unfinished character at the end: keep it for the next token.
                        None => {
                            rest = tail;
                            break;
                        }
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &tail[n..];
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level tokenizer whose tokens are single bytes `!`..`~` plus the byte tokens for
    /// 0x80..0xFF, so a multi-byte character takes several tokens.
    fn bytes_tokenizer() -> Tokenizer {
        let table = super::super::hf::gpt2_byte_chars();
        let vocab: serde_json::Map<String, serde_json::Value> = table
            .iter()
            .enumerate()
            .map(|(b, c)| (c.to_string(), serde_json::json!(b)))
            .collect();
        let mut vocab = vocab;
        vocab.insert("<eos>".into(), serde_json::json!(256));
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [{"id": 256, "content": "<eos>", "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": false, "vocab": vocab, "merges": []}
        });
        Tokenizer::from_json(&json.to_string(), "test").unwrap()
    }

    #[test]
    fn pieces_are_valid_utf8_and_join_to_the_text() {
        let tok = bytes_tokenizer();
        let text = "a€😀b 中文 Straße";
        let mut s = TextStream::new(&tok);
        let mut pieces = Vec::new();
        for &b in text.as_bytes() {
            pieces.push(s.push(b as u32).unwrap());
        }
        pieces.push(s.push(256).unwrap());
        pieces.push(s.finish());
        assert_eq!(pieces.concat(), text);
        // '€' is 3 bytes: the first two tokens give nothing, the third gives the character.
        assert_eq!(&pieces[1..4], ["", "", "€"]);
        assert_eq!(
            pieces[pieces.len() - 2],
            "",
            "the special token is left out"
        );
    }

    #[test]
    fn bytes_that_cannot_become_valid_are_replaced_not_held() {
        let tok = bytes_tokenizer();
        let mut s = TextStream::new(&tok);
        // A lone continuation byte, then a truncated 4-byte lead at the very end.
        assert_eq!(s.push(0x80).unwrap(), "\u{FFFD}");
        assert_eq!(s.push(b'x' as u32).unwrap(), "x");
        assert_eq!(s.push(0xF0).unwrap(), "");
        assert_eq!(s.finish(), "\u{FFFD}");
        assert!(
            s.push(100_000).is_err(),
            "an id outside the vocabulary is an error"
        );
    }
}

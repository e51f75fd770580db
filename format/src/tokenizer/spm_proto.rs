//! A SentencePiece `tokenizer.model` file read without a protobuf library: the file is one
//! `ModelProto` message, and only a handful of its fields matter here.
//!
//! ```text
//! ModelProto     { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2;
//!                  NormalizerSpec normalizer_spec = 3; ... }
//! SentencePiece  { string piece = 1; float score = 2; Type type = 3 [default = NORMAL]; }
//!                  Type: NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6
//! TrainerSpec    { ModelType model_type = 3 [default = UNIGRAM]; int32 unk_id = 40 [default = 0];
//!                  int32 bos_id = 41 [default = 1]; int32 eos_id = 42 [default = 2];
//!                  int32 pad_id = 43 [default = -1]; ... }   ModelType: UNIGRAM 1, BPE 2, ...
//! NormalizerSpec { bool add_dummy_prefix = 3 [default = true]; ... }
//! ```
//!
//! The wire format: each field is a varint key `number << 3 | wire type` followed by a varint
//! (type 0), 8 bytes (1), a varint length and that many bytes (2) or 4 bytes (5). Every other
//! field is skipped by its wire type; every length is checked against the bytes left.

use super::TokenizerError;

/// The vocabulary of a SentencePiece model, in the form llama.cpp's `tokenizer.ggml.*` arrays
/// take (`tokens`, `scores`, `token_type`), with the special ids and the space-prefix setting
/// a converter writes beside them.
#[derive(Clone, Debug, PartialEq)]
pub struct SentencePieceVocab {
    /// The pieces, by id.
    pub pieces: Vec<String>,
    /// Their scores (for BPE models, higher merges first).
    pub scores: Vec<f32>,
    /// Their types, with SentencePiece's and llama.cpp's shared numbering: 1 normal,
    /// 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub types: Vec<i32>,
    /// The model type: 1 unigram, 2 BPE, 3 word, 4 char.
    pub model_type: i32,
    /// The unknown piece's id (`None` when the trainer spec disables it with -1).
    pub unk_id: Option<u32>,
    /// The beginning-of-sequence id.
    pub bos_id: Option<u32>,
    /// The end-of-sequence id.
    pub eos_id: Option<u32>,
    /// The padding id.
    pub pad_id: Option<u32>,
    /// Whether the normaliser puts a space before the text (`add_dummy_prefix`).
    pub add_dummy_prefix: bool,
}

/// SentencePiece's BPE model type.
pub(super) const MODEL_TYPE_BPE: i32 = 2;

fn bad(what: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Invalid(format!("tokenizer.model: {what}"))
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// One field's value, by wire type.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
    Fixed64,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, TokenizerError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| bad("truncated varint"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenizerError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| bad(format!("field of {n} bytes runs past the end")))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field's number and value, or `None` at the end of the message.
    fn field(&mut self) -> Result<Option<(u64, Field<'a>)>, TokenizerError> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed64
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| bad("huge length"))?;
                Field::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Field::Fixed32([b[0], b[1], b[2], b[3]])
            }
            t => return Err(bad(format!("unsupported wire type {t}"))),
        };
        Ok(Some((key >> 3, value)))
    }
}

/// An `int32` id field: -1 (and any other negative value) means "none".
fn id(v: u64) -> Option<u32> {
    u32::try_from(v as i64).ok()
}

/// Reads the vocabulary and settings of a SentencePiece `tokenizer.model` file.
pub fn read_sentencepiece_model(bytes: &[u8]) -> Result<SentencePieceVocab, TokenizerError> {
    let mut v = SentencePieceVocab {
        pieces: Vec::new(),
        scores: Vec::new(),
        types: Vec::new(),
        model_type: 1,
        unk_id: Some(0),
        bos_id: Some(1),
        eos_id: Some(2),
        pad_id: None,
        add_dummy_prefix: true,
    };
    let mut r = Reader::new(bytes);
    while let Some((number, value)) = r.field()? {
        match (number, value) {
            (1, Field::Bytes(b)) => {
                let (piece, score, ty) = read_piece(b, v.pieces.len())?;
                v.pieces.push(piece);
                v.scores.push(score);
                v.types.push(ty);
            }
            (2, Field::Bytes(b)) => read_trainer_spec(b, &mut v)?,
            (3, Field::Bytes(b)) => {
                let mut r = Reader::new(b);
                while let Some((number, value)) = r.field()? {
                    if let (3, Field::Varint(x)) = (number, value) {
                        v.add_dummy_prefix = x != 0;
                    }
                }
            }
            (1..=3, _) => return Err(bad(format!("field {number} has the wrong wire type"))),
            _ => {}
        }
    }
    if v.pieces.is_empty() {
        return Err(bad("no pieces"));
    }
    Ok(v)
}

fn read_piece(b: &[u8], index: usize) -> Result<(String, f32, i32), TokenizerError> {
    let (mut piece, mut score, mut ty) = (None, 0.0f32, 1i32);
    let mut r = Reader::new(b);
    while let Some((number, value)) = r.field()? {
        match (number, value) {
            (1, Field::Bytes(s)) => {
                let s = std::str::from_utf8(s)
                    .map_err(|_| bad(format!("piece {index} is not UTF-8")))?;
                piece = Some(s.to_string());
            }
            (2, Field::Fixed32(f)) => score = f32::from_le_bytes(f),
            (3, Field::Varint(t)) => ty = i32::try_from(t).unwrap_or(0),
            (1..=3, _) => return Err(bad(format!("piece {index}: field {number} is malformed"))),
            _ => {}
        }
    }
    let piece = piece.ok_or_else(|| bad(format!("piece {index} has no text")))?;
    Ok((piece, score, ty))
}

fn read_trainer_spec(b: &[u8], v: &mut SentencePieceVocab) -> Result<(), TokenizerError> {
    let mut r = Reader::new(b);
    while let Some((number, value)) = r.field()? {
        if let Field::Varint(x) = value {
            match number {
                3 => v.model_type = i32::try_from(x).unwrap_or(0),
                40 => v.unk_id = id(x),
                41 => v.bos_id = id(x),
                42 => v.eos_id = id(x),
                43 => v.pad_id = id(x),
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn bytes_field(number: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    fn piece(text: &str, score: f32, ty: Option<u64>) -> Vec<u8> {
        let mut p = Vec::new();
        bytes_field(1, text.as_bytes(), &mut p);
        p.push(2 << 3 | 5);
        p.extend_from_slice(&score.to_le_bytes());
        if let Some(t) = ty {
            varint(3 << 3, &mut p);
            varint(t, &mut p);
        }
        p
    }

    #[test]
    fn reads_pieces_defaults_and_special_ids() {
        let mut m = Vec::new();
        bytes_field(1, &piece("<unk>", 0.0, Some(2)), &mut m);
        bytes_field(1, &piece("\u{2581}a", -1.5, None), &mut m);
        bytes_field(1, &piece("<0x41>", 0.0, Some(6)), &mut m);
        let mut trainer = Vec::new();
        varint(3 << 3, &mut trainer);
        varint(2, &mut trainer); // BPE
        bytes_field(1, b"corpus.txt", &mut trainer); // a skipped string field
        varint(40 << 3, &mut trainer);
        varint(0, &mut trainer);
        varint(43 << 3, &mut trainer);
        varint(-1i64 as u64, &mut trainer); // pad_id -1: ten bytes on the wire
        bytes_field(2, &trainer, &mut m);
        let mut norm = Vec::new();
        varint(3 << 3, &mut norm);
        varint(0, &mut norm);
        bytes_field(3, &norm, &mut m);
        // An unknown fixed64 field is skipped.
        varint(9 << 3 | 1, &mut m);
        m.extend_from_slice(&[0; 8]);

        let v = read_sentencepiece_model(&m).unwrap();
        assert_eq!(v.pieces, ["<unk>", "\u{2581}a", "<0x41>"]);
        assert_eq!(v.scores, [0.0, -1.5, 0.0]);
        assert_eq!(v.types, [2, 1, 6], "an unset type is NORMAL");
        assert_eq!(v.model_type, MODEL_TYPE_BPE);
        assert_eq!(
            (v.unk_id, v.bos_id, v.eos_id, v.pad_id),
            (Some(0), Some(1), Some(2), None)
        );
        assert!(!v.add_dummy_prefix);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut good = Vec::new();
        bytes_field(1, &piece("a", 0.0, None), &mut good);
        for cut in 0..good.len() {
            let r = read_sentencepiece_model(&good[..cut]);
            assert!(r.is_err(), "cut at {cut} should fail");
        }
        assert!(read_sentencepiece_model(&[0xff; 11]).is_err());
        assert!(read_sentencepiece_model(&[1 << 3 | 3]).is_err(), "groups");
        assert!(
            read_sentencepiece_model(&[1 << 3, 1]).is_err(),
            "pieces as a varint"
        );
        let mut huge = Vec::new();
        varint(1 << 3 | 2, &mut huge);
        varint(u64::MAX >> 1, &mut huge);
        assert!(read_sentencepiece_model(&huge).is_err());
    }
}

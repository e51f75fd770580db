//! llama.cpp's SentencePiece tokenizer, the one behind `tokenizer.ggml.model = "llama"` (Llama 1
//! and 2, Mistral, Gemma 1 to 3), reimplemented to give the same ids: `llm_tokenizer_spm` and
//! `tokenizer_st_partition` in llama.cpp's `src/llama-vocab.cpp`.
//!
//! 1. The text is cut around special tokens (control, user-defined and unknown pieces), longest
//!    first, each one's occurrences taken leftmost first in what is still plain text.
//! 2. Each plain fragment gets a space in front when `add_space_prefix` is set and it starts the
//!    text or follows a special token; spaces become U+2581.
//! 3. The fragment starts as one symbol per character; the neighbouring pair whose
//!    concatenation is a piece with the best score is merged (ties: leftmost), again until no
//!    pair forms a piece. A priority queue of candidate pairs makes this O(n log n).
//! 4. A symbol that is not a piece (a character the vocabulary lacks) becomes its UTF-8 bytes'
//!    `<0xXX>` pieces, or the unknown piece when there is no byte piece.
//!
//! Decoding follows `llama_detokenize`: U+2581 reads as a space, byte pieces are joined back
//! into UTF-8, control and unknown pieces are dropped unless special tokens are wanted.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use super::piece_index::PieceIndex;
use super::TokenizerError;

/// The space marker SentencePiece puts in place of spaces.
const SPACE: char = '\u{2581}';
/// No neighbour.
const NONE: usize = usize::MAX;

/// What a piece is, from llama.cpp's `token_type` numbering (SentencePiece's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
    Undefined,
}

impl Kind {
    pub(super) fn from_type(t: i32) -> Kind {
        match t {
            1 => Kind::Normal,
            2 => Kind::Unknown,
            3 => Kind::Control,
            4 => Kind::UserDefined,
            5 => Kind::Unused,
            6 => Kind::Byte,
            _ => Kind::Undefined,
        }
    }

    /// Whether the text is cut around this piece before merging.
    fn splits_text(self) -> bool {
        matches!(self, Kind::Control | Kind::UserDefined | Kind::Unknown)
    }
}

/// The settings that go with a vocabulary.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Settings {
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
}

/// A SentencePiece vocabulary, ready to encode: the piece-to-id map is built once.
pub(super) struct Spm {
    vocab: PieceIndex,
    scores: Vec<f32>,
    kinds: Vec<Kind>,
    /// The piece for each byte (`<0xXX>`, else the one-byte piece), for characters without one.
    byte_ids: [Option<u32>; 256],
    specials: Specials,
    settings: Settings,
}

/// A piece of text after cutting out special tokens.
#[derive(Debug, PartialEq)]
enum Fragment {
    Text(usize, usize),
    Token(u32),
}

impl Spm {
    /// A vocabulary from llama.cpp's arrays. `scores` and `types` may be longer than `pieces`
    /// (llama.cpp ignores the rest); a missing array is all zeros / all normal.
    pub(super) fn new(
        pieces: &[String],
        scores: Option<&[f32]>,
        types: Option<&[i32]>,
        mut settings: Settings,
    ) -> Result<Spm, TokenizerError> {
        let n = pieces.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(TokenizerError::Invalid(format!(
                "SentencePiece vocabulary of {n} pieces"
            )));
        }
        let short = |what: &str, len: usize| {
            TokenizerError::Invalid(format!("{len} {what} for {n} SentencePiece pieces"))
        };
        let scores = match scores {
            Some(s) if s.len() < n => return Err(short("scores", s.len())),
            Some(s) => s[..n].to_vec(),
            None => vec![0.0; n],
        };
        let kinds: Vec<Kind> = match types {
            Some(t) if t.len() < n => return Err(short("token types", t.len())),
            Some(t) => t[..n].iter().map(|&t| Kind::from_type(t)).collect(),
            None => vec![Kind::Normal; n],
        };
        // llama.cpp renames empty pieces so that they cannot match anything.
        let names: Vec<Cow<'_, str>> = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| match p.is_empty() {
                true => Cow::Owned(format!("[EMPTY_{i}]")),
                false => Cow::Borrowed(p.as_str()),
            })
            .collect();
        let vocab = PieceIndex::new(names.iter().map(|p| p.as_ref())).map_err(|id| {
            TokenizerError::Invalid(format!(
                "SentencePiece piece {:?} appears twice",
                names[id as usize]
            ))
        })?;
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = vocab.id(&format!("<0x{b:02X}>")).or_else(|| {
                let c = char::from(b as u8);
                (b < 0x80).then(|| vocab.id(c.encode_utf8(&mut [0; 4])))?
            });
        }
        let valid = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        settings.bos = valid(settings.bos);
        settings.eos = valid(settings.eos);
        settings.unk = valid(settings.unk);
        if settings.add_bos && settings.bos.is_none() {
            return Err(TokenizerError::Invalid(
                "add_bos_token is set but there is no valid BOS id".into(),
            ));
        }
        if settings.add_eos && settings.eos.is_none() {
            return Err(TokenizerError::Invalid(
                "add_eos_token is set but there is no valid EOS id".into(),
            ));
        }
        let specials = Specials::new(&vocab, &kinds);
        Ok(Spm {
            vocab,
            scores,
            kinds,
            byte_ids,
            specials,
            settings,
        })
    }

    pub(super) fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(super) fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    pub(super) fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.vocab.id(piece)
    }

    /// Control and unknown pieces: the ones decoding leaves out unless asked for them.
    pub(super) fn is_special(&self, id: u32) -> bool {
        matches!(
            self.kinds.get(id as usize),
            Some(Kind::Control | Kind::Unknown)
        )
    }

    /// The ids of `text` without BOS or EOS, special tokens in the text parsed.
    pub(super) fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        // A text fragment gets the space prefix when it starts the text or follows a special
        // token, as llama.cpp does (`is_prev_special`).
        let mut after_special = true;
        for f in self.partition(text) {
            match f {
                Fragment::Token(id) => {
                    out.push(id);
                    after_special = true;
                }
                Fragment::Text(a, b) => {
                    let prefix = self.settings.add_space_prefix && after_special;
                    self.encode_fragment(&text[a..b], prefix, &mut out)?;
                    after_special = false;
                }
            }
        }
        Ok(out)
    }

    /// `text` cut around the special tokens it holds. llama.cpp takes the special pieces
    /// longest first and splits every remaining text fragment at each one's occurrences, leftmost
    /// first. Finding every occurrence once with a trie and replaying them in that order gives
    /// the same cuts without scanning the text once per special piece (Gemma has 6,414).
    fn partition(&self, text: &str) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut found = self.specials.occurrences(text.as_bytes());
        if found.is_empty() {
            return vec![Fragment::Text(0, text.len())];
        }
        found.sort_unstable();
        // start -> (end, special id): the fragments so far, in text order.
        let mut frags: BTreeMap<usize, (usize, Option<u32>)> = BTreeMap::new();
        frags.insert(0, (text.len(), None));
        for (rank, pos) in found {
            let id = self.specials.order[rank as usize];
            let len = self.vocab.piece(id).len();
            let Some((&start, &(end, None))) = frags.range(..=pos).next_back() else {
                continue;
            };
            if pos + len > end {
                continue;
            }
            frags.insert(pos, (pos + len, Some(id)));
            if start < pos {
                frags.insert(start, (pos, None));
            }
            if pos + len < end {
                frags.insert(pos + len, (end, None));
            }
        }
        frags
            .into_iter()
            .map(|(start, (end, id))| match id {
                Some(id) => Fragment::Token(id),
                None => Fragment::Text(start, end),
            })
            .collect()
    }

    /// llama.cpp's `llm_tokenizer_spm_session::tokenize` on one plain fragment.
    fn encode_fragment(
        &self,
        fragment: &str,
        space_prefix: bool,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let mut text = String::with_capacity(fragment.len() + 3 * space_prefix as usize);
        if space_prefix {
            text.push(SPACE);
        }
        text.extend(fragment.chars().map(|c| if c == ' ' { SPACE } else { c }));

        let mut syms: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            syms.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1).unwrap_or(NONE),
                next: i + 1,
            });
        }
        let Some(last) = syms.last_mut() else {
            return Ok(());
        };
        last.next = NONE;

        let mut queue = BinaryHeap::with_capacity(syms.len());
        let bigram = |syms: &[Symbol], queue: &mut BinaryHeap<Bigram>, left, right| {
            if left == NONE || right == NONE {
                return;
            }
            let (l, r): (&Symbol, &Symbol) = (&syms[left], &syms[right]);
            let size = l.len + r.len;
            if let Some(id) = self.vocab.id(&text[l.start..l.start + size]) {
                queue.push(Bigram {
                    score: self.scores[id as usize],
                    left,
                    right,
                    size,
                });
            }
        };
        for i in 1..syms.len() {
            bigram(&syms, &mut queue, i - 1, i);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (&syms[b.left], &syms[b.right]);
            // A pair one of whose symbols has since grown or been merged away is stale.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            let (right_len, right_next) = (r.len, r.next);
            syms[b.left].len += right_len;
            syms[b.left].next = right_next;
            syms[b.right].len = 0;
            if right_next != NONE {
                syms[right_next].prev = b.left;
            }
            bigram(&syms, &mut queue, syms[b.left].prev, b.left);
            bigram(&syms, &mut queue, b.left, right_next);
        }

        // Symbol 0 is never merged into a left neighbour, so it heads the chain.
        let mut i = 0;
        while i != NONE {
            let s = &syms[i];
            let piece = &text[s.start..s.start + s.len];
            match self.vocab.id(piece) {
                Some(id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        let id =
                            self.byte_ids[b as usize]
                                .or(self.settings.unk)
                                .ok_or_else(|| {
                                    TokenizerError::Encode(format!(
                                        "{piece:?} is not in the vocabulary, which has neither \
                                     byte pieces nor an unknown piece"
                                    ))
                                })?;
                        out.push(id);
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }

    /// What piece `id` contributes to decoded text (`None` outside the vocabulary): control and
    /// unknown pieces only when `special`, user-defined pieces as they are, normal pieces with
    /// U+2581 as a space, byte pieces as their byte, unused pieces nothing.
    pub(super) fn piece_bytes(&self, id: u32, special: bool) -> Option<Cow<'_, [u8]>> {
        let piece = self.vocab.get(id)?;
        Some(match self.kinds[id as usize] {
            Kind::Control | Kind::Unknown if !special => Cow::Borrowed(&[][..]),
            Kind::Control | Kind::Unknown | Kind::UserDefined => Cow::Borrowed(piece.as_bytes()),
            Kind::Normal if piece.contains(SPACE) => {
                Cow::Owned(piece.replace(SPACE, " ").into_bytes())
            }
            Kind::Normal => Cow::Borrowed(piece.as_bytes()),
            Kind::Byte => piece
                .strip_prefix("<0x")
                .and_then(|h| h.strip_suffix('>'))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .map_or(Cow::Borrowed(&[][..]), |b| Cow::Owned(vec![b])),
            Kind::Unused | Kind::Undefined => Cow::Borrowed(&[][..]),
        })
    }

    /// `llama_detokenize(remove_special = skip_special, unparse_special = !skip_special)`.
    pub(super) fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        let s = &self.settings;
        let mut ids = ids;
        // The space prefix is taken off the first piece, unless a leading BOS is dropped first
        // (llama.cpp's rule).
        let mut strip_space = s.add_space_prefix;
        if skip_special && s.add_bos && ids.first().copied() == s.bos && s.bos.is_some() {
            strip_space = false;
            ids = &ids[1..];
        }
        if skip_special && s.add_eos && ids.last().copied() == s.eos && s.eos.is_some() {
            ids = &ids[..ids.len() - 1];
        }
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let piece = self.piece_bytes(id, !skip_special).ok_or_else(|| {
                TokenizerError::Encode(format!("token id {id} is not in the vocabulary"))
            })?;
            let piece: &[u8] = &piece;
            let piece = match piece.strip_prefix(b" ") {
                Some(rest) if strip_space => rest,
                _ => piece,
            };
            strip_space = false;
            out.extend_from_slice(piece);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// One symbol of a fragment being merged: a span of the text, linked to its neighbours.
/// A symbol merged into its left neighbour has length 0.
struct Symbol {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

/// A candidate merge of two neighbouring symbols whose concatenation (`size` bytes) is a piece.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Ord for Bigram {
    /// The best score first, then the leftmost (llama.cpp's `llm_bigram_spm::comparator`).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

/// The special pieces (control, user-defined, unknown), in llama.cpp's matching order, and a
/// byte trie over them to find every occurrence in one pass over the text.
struct Specials {
    /// Special ids, longest text first. llama.cpp's `std::sort` leaves equal lengths in an
    /// unspecified order; this takes the lower id first (it matters only for two equally long
    /// special pieces that overlap in a text).
    order: Vec<u32>,
    nodes: Vec<TrieNode>,
}

#[derive(Default)]
struct TrieNode {
    /// (byte, node), sorted by byte.
    children: Vec<(u8, u32)>,
    /// The rank in `order` of the special piece ending here.
    rank: Option<u32>,
}

impl Specials {
    fn new(vocab: &PieceIndex, kinds: &[Kind]) -> Specials {
        let mut order: Vec<u32> = (0..vocab.len() as u32)
            .filter(|&i| kinds[i as usize].splits_text())
            .collect();
        order.sort_by(|&a, &b| {
            let (la, lb) = (vocab.piece(a).len(), vocab.piece(b).len());
            lb.cmp(&la).then(a.cmp(&b))
        });
        let mut nodes = vec![TrieNode::default()];
        for (rank, &id) in order.iter().enumerate() {
            let mut node = 0usize;
            for &b in vocab.piece(id).as_bytes() {
                node = match nodes[node].children.binary_search_by_key(&b, |c| c.0) {
                    Ok(k) => nodes[node].children[k].1 as usize,
                    Err(k) => {
                        let new = nodes.len();
                        nodes[node].children.insert(k, (b, new as u32));
                        nodes.push(TrieNode::default());
                        new
                    }
                };
            }
            nodes[node].rank = Some(rank as u32);
        }
        Specials { order, nodes }
    }

    /// Every (rank, byte offset) at which a special piece occurs in `text`, overlaps included.
    fn occurrences(&self, text: &[u8]) -> Vec<(u32, usize)> {
        let mut found = Vec::new();
        let root = &self.nodes[0];
        if root.children.is_empty() {
            return found;
        }
        for start in 0..text.len() {
            let mut node = root;
            for &b in &text[start..] {
                match node.children.binary_search_by_key(&b, |c| c.0) {
                    Ok(k) => node = &self.nodes[node.children[k].1 as usize],
                    Err(_) => break,
                }
                if let Some(rank) = node.rank {
                    found.push((rank, start));
                }
            }
        }
        found
    }
}

#[cfg(test)]
#[path = "spm_tests.rs"]
mod tests;

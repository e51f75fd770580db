//! A vocabulary's pieces in one buffer, with an open-addressing hash table from piece text to
//! id. Gemma's 262,144 pieces as separate `String`s in a `HashMap` cost half a million small
//! allocations and SipHash on every lookup (about 100 ms to build); this builds in a few
//! milliseconds and looks a piece up with one short hash and, usually, one comparison.

/// Pieces by id, and the id of each piece.
pub(super) struct PieceIndex {
    /// All pieces, back to back.
    text: String,
    /// Piece `i` is `text[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<usize>,
    /// `(id + 1, tag)` of the piece hashed to each slot (id 0: empty); a power of two long, at
    /// most half full, probed linearly. The tag (32 other bits of the hash) rules out almost
    /// every other piece without reading its text, a cache miss each.
    slots: Vec<(u32, u32)>,
    /// log2 of `slots.len()`.
    bits: u32,
}

/// A multiply-rotate hash over 8-byte words (the `FxHash` step), its high bits picked for the
/// slot: good enough spread for short strings, and much faster than SipHash. Vocabularies come
/// from model files, not from users, so there is no flooding to defend against.
fn hash(s: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let step = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let mut h = step(0, s.len() as u64);
    let mut words = s.chunks_exact(8);
    for w in &mut words {
        h = step(
            h,
            u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]),
        );
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = step(h, u64::from_le_bytes(b));
    }
    h
}

impl PieceIndex {
    /// The index of `pieces`; `Err(id)` names the first piece that repeats an earlier one.
    pub(super) fn new<'a>(
        pieces: impl ExactSizeIterator<Item = &'a str> + Clone,
    ) -> Result<PieceIndex, u32> {
        let n = pieces.len();
        let bytes: usize = pieces.clone().map(str::len).sum();
        let mut text = String::with_capacity(bytes);
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        for p in pieces {
            text.push_str(p);
            offsets.push(text.len());
        }
        let bits = (2 * n).max(2).next_power_of_two().trailing_zeros();
        let mut index = PieceIndex {
            text,
            offsets,
            slots: vec![(0, 0); 1 << bits],
            bits,
        };
        for id in 0..n as u32 {
            let piece = index.piece(id);
            let (mut slot, tag) = index.slot(piece);
            loop {
                match index.slots[slot] {
                    (0, _) => break,
                    (other, t) if t == tag && index.piece(other - 1) == piece => return Err(id),
                    _ => slot = (slot + 1) & (index.slots.len() - 1),
                }
            }
            index.slots[slot] = (id + 1, tag);
        }
        Ok(index)
    }

    /// The first slot to probe for `piece`, and its tag.
    fn slot(&self, piece: &str) -> (usize, u32) {
        let h = hash(piece.as_bytes()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((h >> (64 - self.bits)) as usize, h as u32)
    }

    /// The number of pieces.
    pub(super) fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Piece `id`; the caller keeps `id` below [`Self::len`].
    pub(super) fn piece(&self, id: u32) -> &str {
        let i = id as usize;
        &self.text[self.offsets[i]..self.offsets[i + 1]]
    }

    /// Piece `id`, or `None` outside the vocabulary.
    pub(super) fn get(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.len()).then(|| self.piece(id))
    }

    /// The id of `piece`.
    pub(super) fn id(&self, piece: &str) -> Option<u32> {
        let (mut slot, tag) = self.slot(piece);
        loop {
            match self.slots[slot] {
                (0, _) => return None,
                (s, t) if t == tag && self.piece(s - 1) == piece => return Some(s - 1),
                _ => slot = (slot + 1) & (self.slots.len() - 1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_piece_and_nothing_else() {
        let pieces: Vec<String> = (0..5000).map(|i| format!("p{i}\u{2581}")).collect();
        let index = PieceIndex::new(pieces.iter().map(String::as_str)).unwrap();
        assert_eq!(index.len(), 5000);
        for (i, p) in pieces.iter().enumerate() {
            assert_eq!(index.id(p), Some(i as u32));
            assert_eq!(index.piece(i as u32), p);
        }
        assert_eq!(index.id("p5000\u{2581}"), None);
        assert_eq!(index.id(""), None);
        assert_eq!(index.get(5000), None);
        assert_eq!(
            PieceIndex::new(["a", "bb", "a"].into_iter()).err(),
            Some(2),
            "a repeated piece"
        );
    }
}

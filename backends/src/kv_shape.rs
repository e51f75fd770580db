//! The shape of a KV cache, and where its positions live: one slot per position for a cache
//! that every later position reads (full attention), or a ring for sliding-window attention
//! (Gemma 3's local layers, Mistral): a query at position `p` sees only `p + 1 - window..=p`,
//! so the cache holds `ring` slots however long the context grows, position `p` at slot
//! `p % ring`.
//!
//! Every backend reads a query's positions as one run of consecutive slots, so its attention
//! kernel is the full-attention one with a start offset: the first `window - 1` slots of a
//! ring are mirrored after its end (a position at slot `s < window - 1` is written at `s` and
//! at `ring + s`), which makes a run that wraps around the ring contiguous. Writes are a
//! row's keys (tiny next to the reads of every later query), so writing a few twice costs
//! nothing measurable.

use crate::ops::OpError;

/// How a KV cache stores keys and values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KvType {
    /// Half precision: half the bytes every decoded token reads (llama.cpp's default too).
    #[default]
    F16,
    /// Single precision: the values as computed, for runs that must match an f32 reference to
    /// its last digits (twice the memory and the reads). The CPU backend keeps it.
    F32,
}

impl KvType {
    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }
}

/// The shape of a KV cache: layers, key/value heads, values per head, positions, window, and
/// the type its values are stored as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvShape {
    /// Layers the cache holds.
    pub layers: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
    /// Positions held: the context for full attention; with a window, the ring's length
    /// (at least the window, plus the rows appended at once).
    pub capacity: usize,
    /// Sliding-window attention: a query at position `p` sees positions `p + 1 - window..=p`
    /// (all of `0..=p` while `p < window`). `None`: every earlier position.
    pub window: Option<usize>,
    /// How keys and values are stored.
    pub dtype: KvType,
}

impl KvShape {
    /// A cache of full attention (every query sees every earlier position).
    pub fn full(layers: usize, kv_heads: usize, head_dim: usize, capacity: usize) -> KvShape {
        KvShape {
            layers,
            kv_heads,
            head_dim,
            capacity,
            window: None,
            dtype: KvType::F16,
        }
    }

    /// Slots after the ring that mirror its first ones (see the module's notes): `window - 1`
    /// when the ring can wrap under a query's window, else none.
    pub fn mirror(&self) -> usize {
        match self.window {
            Some(w) if w >= 1 && w <= self.capacity => w - 1,
            _ => 0,
        }
    }

    /// Slots stored per layer and KV head: the capacity and its mirror.
    pub fn slots(&self) -> usize {
        self.capacity + self.mirror()
    }

    /// Bytes of keys and values.
    pub fn bytes(&self) -> usize {
        2 * self.layers * self.slots() * self.kv_heads * self.head_dim * self.dtype.bytes()
    }

    /// The run of slots a query at position `pos` reads: `(first slot, positions)`. The
    /// positions are `pos + 1 - len..=pos`, in order, at slots `first..first + len`.
    pub fn span(&self, pos: usize) -> (usize, usize) {
        let len = match self.window {
            Some(w) => (pos + 1).min(w.max(1)),
            None => pos + 1,
        };
        ((pos + 1 - len) % self.capacity.max(1), len)
    }

    /// The most positions any query of rows `pos0..pos0 + rows` reads: sizes the scores.
    pub fn longest_span(&self, pos0: usize, rows: usize) -> usize {
        if rows == 0 {
            return 0;
        }
        self.span(pos0 + rows - 1).1
    }

    /// Where rows at positions `pos0..pos0 + rows` are written: `(first row, slot, rows)` runs
    /// of consecutive rows at consecutive slots (at most four: the ring's wrap and the
    /// mirror's copies).
    pub fn writes(&self, pos0: usize, rows: usize) -> Vec<(usize, usize, usize)> {
        let cap = self.capacity.max(1);
        let mut out = Vec::with_capacity(4);
        let mut r = 0;
        while r < rows {
            let slot = (pos0 + r) % cap;
            let n = (rows - r).min(cap - slot);
            out.push((r, slot, n));
            let mirror = self.mirror();
            if slot < mirror {
                out.push((r, cap + slot, n.min(mirror - slot)));
            }
            r += n;
        }
        out
    }

    /// Checks that queries at positions `pos0..pos0 + rows` can be answered from the cache
    /// after their rows are written: every position any of them reads is still held (without
    /// a window, `pos0 + rows <= capacity`; with one, the first query's window and all the rows
    /// fit the ring).
    pub fn check_positions(&self, pos0: usize, rows: usize) -> Result<(), OpError> {
        let first_seen = match self.window {
            Some(w) => (pos0 + 1).saturating_sub(w.max(1)),
            None => 0,
        };
        if pos0 + rows - first_seen > self.capacity {
            let what = match self.window {
                Some(w) => format!("a window of {w} and {rows} rows at once"),
                None => format!("positions up to {}", pos0 + rows),
            };
            return Err(OpError::Shape(format!(
                "kv cache: {what} do not fit a cache of {}",
                self.capacity
            )));
        }
        Ok(())
    }

    /// Checks a [`Backend::kv_append`](crate::Backend::kv_append) of `k` and `v` (`k_len` and
    /// `v_len` values) at positions `pos0..` of `layer` against the cache's shape; returns the
    /// rows appended.
    pub fn check_append(
        &self,
        layer: usize,
        pos0: usize,
        k_len: usize,
        v_len: usize,
    ) -> Result<usize, OpError> {
        let kvw = self.kv_heads * self.head_dim;
        if kvw == 0 {
            return Err(OpError::Shape(
                "kv append to a cache of rows of no values".into(),
            ));
        }
        let rows = k_len / kvw;
        OpError::check("kv append keys", k_len, rows * kvw)?;
        OpError::check("kv append values", v_len, k_len)?;
        if layer >= self.layers {
            return Err(OpError::Shape(format!(
                "kv append: layer {layer} of {}",
                self.layers
            )));
        }
        self.check_positions(pos0, rows)?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(window: usize, capacity: usize) -> KvShape {
        KvShape {
            layers: 1,
            kv_heads: 1,
            head_dim: 2,
            capacity,
            window: Some(window),
            dtype: KvType::F16,
        }
    }

    /// Simulates writes and checks every query reads exactly its window's positions, in order,
    /// from the slots the writes filled.
    #[test]
    fn every_query_reads_its_window_from_consecutive_slots() {
        for (w, cap, chunk) in [(4, 7, 4), (4, 4, 1), (8, 264, 256), (3, 10, 8), (5, 5, 1)] {
            let s = ring(w, cap);
            let mut slots = vec![usize::MAX; s.slots()];
            let mut pos = 0;
            while pos < 3 * cap + 5 {
                let rows = chunk.min(3 * cap + 5 - pos);
                s.check_positions(pos, rows).unwrap();
                for (r, slot, n) in s.writes(pos, rows) {
                    for i in 0..n {
                        slots[slot + i] = pos + r + i;
                    }
                }
                for p in pos..pos + rows {
                    let (first, len) = s.span(p);
                    let want: Vec<usize> = (p + 1 - len..=p).collect();
                    assert_eq!(len, (p + 1).min(w), "w {w} cap {cap} p {p}");
                    assert_eq!(slots[first..first + len], want[..], "w {w} cap {cap} p {p}");
                }
                pos += rows;
            }
        }
    }

    #[test]
    fn rows_that_would_overwrite_a_window_still_read_are_refused() {
        let s = ring(8, 264);
        assert!(s.check_positions(1000, 257).is_ok());
        assert!(s.check_positions(1000, 258).is_err());
        // While the window is not yet full, the positions from 0 count.
        assert!(s.check_positions(0, 264).is_ok());
        assert!(s.check_positions(0, 265).is_err());
        let full = KvShape::full(1, 1, 2, 10);
        assert!(full.check_positions(4, 6).is_ok());
        assert!(full.check_positions(4, 7).is_err());
        assert_eq!(full.span(9), (0, 10));
        assert_eq!(full.slots(), 10);
    }
}

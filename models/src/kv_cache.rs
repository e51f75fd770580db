//! The key/value cache of a decoder: allocated once for the whole context, reused across the turns
//! of a conversation.

use half::f16;

use crate::error::{ModelError, Result};

/// Keys and values of every layer for up to `capacity` positions, as f16 (2 bytes a value:
/// decoding reads the whole cache for every token). Keys are laid out
/// `[layer][kv_head][head_dim][position]` (attention scores run along positions), values
/// `[layer][kv_head][position][head_dim]`.
///
/// The first [`KvCache::len`] positions are valid. [`KvCache::truncate`] forgets a suffix (a chat
/// whose history diverges from what is cached keeps the common prefix and recomputes the rest).
#[derive(Debug)]
pub struct KvCache {
    pub(crate) k: Vec<Vec<f16>>,
    pub(crate) v: Vec<Vec<f16>>,
    capacity: usize,
    len: usize,
    kv_width: usize,
    /// Activation buffers of the forward pass, kept between calls so decoding allocates nothing.
    pub(crate) scratch: Vec<Vec<f32>>,
}

impl KvCache {
    /// A cache for `layers` layers of `kv_heads * head_dim` keys per position. Fails (without
    /// allocating) when the size overflows or the allocation fails.
    pub fn new(
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        capacity: usize,
    ) -> Result<KvCache> {
        let per_layer = kv_heads
            .checked_mul(head_dim)
            .and_then(|w| w.checked_mul(capacity))
            .ok_or_else(|| {
                ModelError::Input(format!(
                    "a KV cache of {capacity} positions does not fit in memory"
                ))
            })?;
        let alloc = || -> Result<Vec<f16>> {
            let mut v = Vec::new();
            v.try_reserve_exact(per_layer).map_err(|_| {
                ModelError::Input(format!(
                    "cannot allocate a KV cache of {} bytes per layer ({capacity} positions); \
                     ask for a shorter context",
                    per_layer * 2 * 2
                ))
            })?;
            v.resize(per_layer, f16::ZERO);
            Ok(v)
        };
        let k = (0..layers).map(|_| alloc()).collect::<Result<_>>()?;
        let v = (0..layers).map(|_| alloc()).collect::<Result<_>>()?;
        Ok(KvCache {
            k,
            v,
            capacity,
            len: 0,
            kv_width: kv_heads * head_dim,
            scratch: Vec::new(),
        })
    }

    /// Positions the cache can hold (the context length).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position from `len` on (no-op when `len` is not shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Bytes of memory the cache holds (keys and values of every layer).
    pub fn bytes(&self) -> usize {
        Self::bytes_for(self.k.len(), self.kv_width, self.capacity)
    }

    /// Bytes a cache of `layers` layers, `kv_width` key values per position and `capacity`
    /// positions holds, without allocating it.
    pub fn bytes_for(layers: usize, kv_width: usize, capacity: usize) -> usize {
        2 * layers * capacity * kv_width * std::mem::size_of::<f16>()
    }

    /// Marks `n` more positions filled (after a forward pass wrote them).
    pub(crate) fn advance(&mut self, n: usize) {
        debug_assert!(self.len + n <= self.capacity);
        self.len += n;
    }
}

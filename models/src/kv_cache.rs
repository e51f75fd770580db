//! The key/value cache of a decoder: allocated once for the whole context, reused across the
//! turns of a conversation. Its storage is the backend's (in the layout the backend's attention
//! reads); this type tracks which layers it covers and how many positions are filled.

use std::any::Any;
use std::ops::Range;

/// Keys and values of a range of layers (all of them, or one part of a model run in parts) for
/// up to `capacity` positions, as f16 (2 bytes a value: decoding reads the whole cache for
/// every token).
///
/// The first [`KvCache::len`] positions are valid. [`KvCache::truncate`] forgets a suffix (a chat
/// whose history diverges from what is cached keeps the common prefix and recomputes the rest).
///
/// Layers with a sliding window (Gemma 3's local layers) keep a ring of the last positions
/// only, so their memory does not grow with the context; a truncation that reaches back past
/// what the ring still holds forgets everything instead ([`KvCache::truncate`] says how much
/// it kept).
pub struct KvCache {
    /// The model that made it (its load's serial number).
    owner: u64,
    layers: Range<usize>,
    capacity: usize,
    len: usize,
    /// Bytes held on the backend.
    bytes: usize,
    /// The sliding layers' (window, ring slots), when the cache has any.
    ring: Option<(usize, usize)>,
    /// One past the furthest position written since the cache was last empty: what a ring may
    /// have overwritten.
    high: usize,
    /// The backend's cache and the forward pass's buffers.
    state: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KvCache(layers {:?}, {} of {} positions)",
            self.layers, self.len, self.capacity
        )
    }
}

impl KvCache {
    pub(crate) fn new(
        owner: u64,
        layers: Range<usize>,
        capacity: usize,
        bytes: usize,
        ring: Option<(usize, usize)>,
        state: Box<dyn Any + Send + Sync>,
    ) -> KvCache {
        KvCache {
            owner,
            layers,
            capacity,
            len: 0,
            bytes,
            ring,
            high: 0,
            state,
        }
    }

    /// The layers the cache holds.
    pub fn layers(&self) -> Range<usize> {
        self.layers.clone()
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

    /// Forgets every position from `len` on (nothing when `len` is not shorter) and returns the
    /// positions kept: `len`, or 0 when a sliding layer's ring no longer holds the window that
    /// the next position reads (it was overwritten by positions since forgotten).
    pub fn truncate(&mut self, len: usize) -> usize {
        let len = self.len.min(len);
        if let Some((window, ring)) = self.ring {
            let needed_from = (len + 1).saturating_sub(window);
            if self.high > needed_from + ring {
                self.clear();
                return 0;
            }
        }
        self.len = len;
        len
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.len = 0;
        self.high = 0;
    }

    /// Bytes of memory the cache holds (keys and values of its layers).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn owner(&self) -> u64 {
        self.owner
    }

    pub(crate) fn state_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        &mut *self.state
    }

    pub(crate) fn state(&self) -> &(dyn Any + Send + Sync) {
        &*self.state
    }

    /// Takes `src`'s filled positions (after its backend half was copied here).
    pub(crate) fn copy_marks(&mut self, src: &KvCache) {
        self.len = src.len;
        self.high = src.high;
    }

    /// Marks `n` more positions filled (after a forward pass wrote them).
    pub(crate) fn advance(&mut self, n: usize) {
        debug_assert!(self.len + n <= self.capacity);
        self.len += n;
        self.high = self.high.max(self.len);
    }
}

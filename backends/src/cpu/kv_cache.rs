//! The CPU's KV cache: per layer, keys transposed (`[kv_head][dim][slot]`, so scores run along
//! positions) and values by slot (`[kv_head][slot][dim]`), stored as f16 (the default: half the
//! bytes each decoded token reads) or f32 ([`KvType::F32`]: the values as computed). The
//! attention kernels are written over [`KvElem`]; the SIMD ones read f16 only, so an f32 cache
//! runs the portable loop.

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::CausalAttention;
use crate::backend::{KvShape, KvType};
use crate::ops::OpError;

/// A type a KV cache stores its values as.
pub trait KvElem: Copy + Send + Sync + 'static {
    /// Zero.
    const ZERO: Self;
    /// The cache type it is.
    const TYPE: KvType;
    /// The value as f32.
    fn to_f32(self) -> f32;
    /// `dst = src`, converted.
    fn store(dst: &mut [Self], src: &[f32]);
    /// The values as f16, where they are (the SIMD kernels read only f16 caches).
    fn as_f16(s: &[Self]) -> Option<&[f16]>;
}

impl KvElem for f16 {
    const ZERO: Self = f16::ZERO;
    const TYPE: KvType = KvType::F16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn store(dst: &mut [Self], src: &[f32]) {
        // `half` converts a slice with F16C; one value at a time it checks the CPU on every
        // call (3% of a decode step of eight conversations).
        dst.convert_from_f32_slice(src);
    }
    fn as_f16(s: &[Self]) -> Option<&[f16]> {
        Some(s)
    }
}

impl KvElem for f32 {
    const ZERO: Self = 0.0;
    const TYPE: KvType = KvType::F32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    fn store(dst: &mut [Self], src: &[f32]) {
        dst.copy_from_slice(src);
    }
    fn as_f16(_: &[Self]) -> Option<&[f16]> {
        None
    }
}

/// Every layer's key and value planes.
struct Planes<T> {
    k: Vec<Vec<T>>,
    v: Vec<Vec<T>>,
}

impl<T: KvElem> Planes<T> {
    fn new(shape: &KvShape) -> Result<Self, OpError> {
        let per_layer = shape
            .kv_heads
            .checked_mul(shape.head_dim)
            .and_then(|w| w.checked_mul(shape.slots()))
            .ok_or_else(|| {
                OpError::OutOfMemory(format!(
                    "a KV cache of {} positions does not fit in memory",
                    shape.capacity
                ))
            })?;
        let alloc = || -> Result<Vec<T>, OpError> {
            let mut v = Vec::new();
            v.try_reserve_exact(per_layer).map_err(|_| {
                OpError::OutOfMemory(format!(
                    "cannot allocate a KV cache of {} bytes per layer ({} positions)",
                    per_layer * 2 * shape.dtype.bytes(),
                    shape.capacity
                ))
            })?;
            v.resize(per_layer, T::ZERO);
            Ok(v)
        };
        Ok(Planes {
            k: (0..shape.layers)
                .map(|_| alloc())
                .collect::<Result<_, _>>()?,
            v: (0..shape.layers)
                .map(|_| alloc())
                .collect::<Result<_, _>>()?,
        })
    }

    fn copy_from(&mut self, src: &Self) {
        for (d, s) in self
            .k
            .iter_mut()
            .zip(&src.k)
            .chain(self.v.iter_mut().zip(&src.v))
        {
            d.copy_from_slice(s);
        }
    }

    /// Rows `[rows, kv_heads * head_dim]` of keys and values at positions `pos0..` of `layer`
    /// (checked by the caller).
    fn append(
        &mut self,
        shape: &KvShape,
        layer: usize,
        pos0: usize,
        rows: usize,
        k: &[f32],
        v: &[f32],
    ) {
        let (kv_heads, hd, slots) = (shape.kv_heads, shape.head_dim, shape.slots());
        let kvw = kv_heads * hd;
        let (kc, vc) = (&mut self.k[layer], &mut self.v[layer]);
        for (r0, slot0, n) in shape.writes(pos0, rows) {
            // Keys are stored transposed (`[kv_head * head_dim][slots]`, rows `slots` apart):
            // the run's keys converted first, then written one stored row at a time, so a
            // prompt's keys fill whole cache lines instead of touching `kv_heads * head_dim`
            // lines a key (1.4% of a SmolLM2 prompt).
            let mut kh = vec![T::ZERO; n * kvw];
            T::store(&mut kh, &k[r0 * kvw..(r0 + n) * kvw]);
            for gd in 0..kvw {
                let dst = &mut kc[gd * slots + slot0..gd * slots + slot0 + n];
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = kh[i * kvw + gd];
                }
            }
            for i in 0..n {
                let (row, slot) = ((r0 + i) * kvw, slot0 + i);
                for g in 0..kv_heads {
                    let at = (g * slots + slot) * hd;
                    T::store(&mut vc[at..at + hd], &v[row + g * hd..row + (g + 1) * hd]);
                }
            }
        }
    }
}

enum Store {
    F16(Planes<f16>),
    F32(Planes<f32>),
}

/// A KV cache on the CPU (see the module's notes).
pub struct CpuKvCache {
    store: Store,
    shape: KvShape,
}

impl std::fmt::Debug for CpuKvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuKvCache({:?})", self.shape)
    }
}

/// Attention over several caches, all of one stored type.
pub(super) enum Many<'a> {
    F16(Vec<CausalAttention<'a, f16>>),
    F32(Vec<CausalAttention<'a, f32>>),
}

impl CpuKvCache {
    /// An empty cache of `shape` (fails without allocating when it does not fit in memory).
    pub(super) fn new(shape: KvShape) -> Result<CpuKvCache, OpError> {
        let store = match shape.dtype {
            KvType::F16 => Store::F16(Planes::new(&shape)?),
            KvType::F32 => Store::F32(Planes::new(&shape)?),
        };
        Ok(CpuKvCache { store, shape })
    }

    /// Copies `src`, a cache of the same shape.
    pub(super) fn copy_from(&mut self, src: &CpuKvCache) -> Result<(), OpError> {
        match (&mut self.store, &src.store) {
            (Store::F16(d), Store::F16(s)) if self.shape == src.shape => d.copy_from(s),
            (Store::F32(d), Store::F32(s)) if self.shape == src.shape => d.copy_from(s),
            _ => {
                return Err(OpError::Shape(format!(
                    "copying a KV cache of {:?} into one of {:?}",
                    src.shape, self.shape
                )))
            }
        }
        Ok(())
    }

    /// Stores keys and values of rows at positions `pos0..` of `layer`.
    pub(super) fn append(
        &mut self,
        layer: usize,
        pos0: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<(), OpError> {
        let rows = self.shape.check_append(layer, pos0, k.len(), v.len())?;
        let shape = self.shape;
        match &mut self.store {
            Store::F16(p) => p.append(&shape, layer, pos0, rows, k, v),
            Store::F32(p) => p.append(&shape, layer, pos0, rows, k, v),
        }
        Ok(())
    }

    /// The attention inputs of query rows `q[i]` at positions `pos0[i]..` against `layer` of
    /// `caches[i]`, gathered by the caches' stored type (one type for all of them).
    pub(super) fn many<'a>(
        caches: &[&'a CpuKvCache],
        q: &[&'a [f32]],
        layer: usize,
        pos0: &[usize],
        heads: usize,
    ) -> Result<Many<'a>, OpError> {
        for c in caches {
            if layer >= c.shape.layers {
                return Err(OpError::Shape(format!(
                    "attention: layer {layer} of a cache of {}",
                    c.shape.layers
                )));
            }
        }
        Ok(match caches.first().map(|c| c.shape.dtype) {
            Some(KvType::F32) => Many::F32(gather(caches, q, layer, pos0, heads)?),
            _ => Many::F16(gather(caches, q, layer, pos0, heads)?),
        })
    }
}

/// A stored type's planes in a [`Store`], where the store holds that type.
trait Stored: KvElem {
    fn planes(store: &Store) -> Option<&Planes<Self>>;
}

impl Stored for f16 {
    fn planes(store: &Store) -> Option<&Planes<Self>> {
        match store {
            Store::F16(p) => Some(p),
            Store::F32(_) => None,
        }
    }
}

impl Stored for f32 {
    fn planes(store: &Store) -> Option<&Planes<Self>> {
        match store {
            Store::F32(p) => Some(p),
            Store::F16(_) => None,
        }
    }
}

/// [`CpuKvCache::many`] for caches that store `T` (another type among them is refused).
fn gather<'a, T: Stored>(
    caches: &[&'a CpuKvCache],
    q: &[&'a [f32]],
    layer: usize,
    pos0: &[usize],
    heads: usize,
) -> Result<Vec<CausalAttention<'a, T>>, OpError> {
    caches
        .iter()
        .zip(q)
        .zip(pos0)
        .map(|((c, &q), &pos0)| {
            let p = T::planes(&c.store).ok_or_else(|| {
                OpError::Shape("attention over KV caches of different types at once".into())
            })?;
            let s = c.shape;
            Ok(CausalAttention {
                q,
                k: &p.k[layer],
                v: &p.v[layer],
                pos0,
                capacity: s.capacity,
                window: s.window,
                heads,
                kv_heads: s.kv_heads,
                head_dim: s.head_dim,
            })
        })
        .collect()
}

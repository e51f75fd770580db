//! Sliding-window attention over a ring cache ([`KvShape::window`]): rows appended in chunks of
//! several sizes far past the ring's length, every query checked against f64 attention over
//! the last `window` positions of everything appended (kept here in full).

use edgecut_backends::ops::OpError;
use edgecut_backends::{Backend, KvShape, KvType};

use super::common::Rng;
use super::{close, down, up};

/// With `dtype` F32 the cache keeps the values as computed (a backend that keeps only f16
/// refuses it by name).
pub fn sliding_window_ring<B: Backend>(b: &B, rng: &mut Rng, dtype: KvType) {
    let (heads, kv_heads, hd) = (4, 2, 16);
    let kvw = kv_heads * hd;
    for (window, ring, chunks) in [
        (
            5usize,
            9usize,
            &[3usize, 5, 1, 1, 4, 2, 5, 1, 1, 1, 5, 3][..],
        ),
        (4, 4, &[1; 13][..]),
        (8, 20, &[13, 1, 1, 1, 7, 13, 2, 1][..]),
    ] {
        let shape = KvShape {
            layers: 2,
            kv_heads,
            head_dim: hd,
            capacity: ring,
            window: Some(window),
            dtype,
        };
        let mut cache = match b.kv_cache(shape) {
            Ok(c) => c,
            Err(OpError::Unsupported { what, .. }) if dtype == KvType::F32 => {
                assert!(what.contains("F32"), "{what}");
                return;
            }
            Err(e) => panic!("{dtype:?} cache: {e}"),
        };
        let (mut ks, mut vs) = (Vec::new(), Vec::new());
        let mut pos0 = 0;
        for &rows in chunks {
            let (k, v) = (rng.vec(rows * kvw, 1.0), rng.vec(rows * kvw, 1.0));
            let q = rng.vec(rows * heads * hd, 1.5);
            ks.extend_from_slice(&k);
            vs.extend_from_slice(&v);
            // Layer 1 gets the rows, layer 0 zeros: layers must not share slots.
            b.kv_append(&mut cache, 1, pos0, &up(b, &k), &up(b, &v))
                .unwrap();
            let zeros = vec![0f32; k.len()];
            b.kv_append(&mut cache, 0, pos0, &up(b, &zeros), &up(b, &zeros))
                .unwrap();
            let mut out = b.buffer(q.len());
            b.causal_attention(&up(b, &q), &cache, 1, pos0, heads, &mut out)
                .unwrap();
            let seen = |r: usize| (pos0 + r + 1).saturating_sub(window)..pos0 + r + 1;
            let want = super::attention_f64(&q, &ks, &vs, heads, kv_heads, hd, dtype, seen);
            let what = format!(
                "{dtype:?} window {window} ring {ring}: rows {pos0}..{}",
                pos0 + rows
            );
            // f16 products may round q (the SIMD kernels); f32 keeps every value.
            let tol = if dtype == KvType::F32 { 5e-6 } else { 1e-3 };
            close(&what, &down(b, out), &want, |_| tol);
            pos0 += rows;
        }
        // More rows at once than the ring holds beside the window are refused, nothing written.
        let too_many = ring - window + 2;
        let k = rng.vec(too_many * kvw, 1.0);
        assert!(b
            .kv_append(&mut cache, 1, pos0, &up(b, &k), &up(b, &k))
            .is_err());
    }
}

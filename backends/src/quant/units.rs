//! The stored blocks of Q5_0, Q5_1, Q4_K, Q5_K and Q6_K read as units of 32 values `w = d q + m`
//! (Q6_K: a `d` per 16 values), each value a byte: what the GPU's block products upload (its
//! word layouts, `gpu/matmul_blocks.rs`, hold them with aligned f32 scales). Every scale is
//! the product the reference decoder forms (`quant::k_quants`, `quant::small_blocks`), so a
//! unit's values are the reference's, bit for bit, up to the order of a multiply-add.

use super::k_quants::{scale_min_k4, QK_K};
use super::small_blocks::q5_values;
use super::QK;
use crate::DType;

/// The types [`each_unit`] reads.
// Read by the aarch64 kernels (and tests); the GPU's repack matches on the types itself.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) const UNIT_TYPES: [DType; 5] = [
    DType::Q5_0,
    DType::Q5_1,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
];

/// Whether `dtype`'s units carry an offset `m` (Q5_0's and Q6_K's is 0: their stored offset
/// is part of the signed value).
// Read by the aarch64 kernels; x86's units carry it as `Layout::OFFSETS`.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) fn has_offsets(dtype: DType) -> bool {
    matches!(dtype, DType::Q5_1 | DType::Q4_K | DType::Q5_K)
}

/// One unit of 32 values.
pub(crate) struct Unit {
    /// The values, as stored bytes: unsigned where `signed` is false.
    pub q: [u8; QK],
    /// Scales: `d[0]` for the whole unit, or `d[0]` and `d[1]` for its two halves (Q6_K).
    pub d: [f32; 2],
    /// The offset added to every value (`-dmin m` for the K-quants), 0 if none.
    pub m: f32,
}

/// The units of `data` (whole blocks of `dtype`, one of the five types above) in order, each
/// passed to `f`; `None` for another type.
pub(crate) fn each_unit(dtype: DType, data: &[u8], mut f: impl FnMut(Unit)) -> Option<()> {
    let f16 = |b: &[u8], at: usize| half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
    let blocks = data.chunks_exact(dtype.block_bytes());
    match dtype {
        DType::Q5_0 => blocks.for_each(|b| {
            // Stored with an offset of 16: the signed value as a byte.
            let q = q5_values(&b[2..6], &b[6..]).map(|v| (v as i8 - 16) as u8);
            f(Unit {
                q,
                d: [f16(b, 0); 2],
                m: 0.0,
            })
        }),
        DType::Q5_1 => blocks.for_each(|b| {
            f(Unit {
                q: q5_values(&b[4..8], &b[8..]),
                d: [f16(b, 0); 2],
                m: f16(b, 2),
            })
        }),
        DType::Q4_K | DType::Q5_K => {
            blocks.for_each(|b| {
                let (d, dmin, scales) = (f16(b, 0), f16(b, 2), &b[4..16]);
                for i in 0..QK_K / QK {
                    let (sc, mn) = scale_min_k4(i, scales);
                    let q: [u8; QK] = std::array::from_fn(|l| {
                        if dtype == DType::Q4_K {
                            (b[16 + 32 * (i / 2) + l] >> (4 * (i % 2))) & 0x0f
                        } else {
                            let low = (b[48 + 32 * (i / 2) + l] >> (4 * (i % 2))) & 0x0f;
                            low | (((b[16 + l] >> i) & 1) << 4)
                        }
                    });
                    // The reference's `d sc q - dmin m`, as `q (d sc) + (-(dmin m))`.
                    let dl = d * sc as f32;
                    f(Unit {
                        q,
                        d: [dl; 2],
                        m: -(dmin * mn as f32),
                    })
                }
            })
        }
        DType::Q6_K => blocks.for_each(|b| {
            let (ql, qh, scales, d) = (&b[..128], &b[128..192], &b[192..208], f16(b, 208));
            for u in 0..QK_K / QK {
                let (h, s) = (u / 4, u % 4);
                let q: [u8; QK] = std::array::from_fn(|l| {
                    let low = (ql[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 0x0f;
                    let high = (qh[32 * h + l] >> (2 * s)) & 3;
                    ((low | (high << 4)) as i8 - 32) as u8
                });
                let dl = |i: usize| d * scales[2 * u + i] as i8 as f32;
                f(Unit {
                    q,
                    d: [dl(0), dl(1)],
                    m: 0.0,
                })
            }
        }),
        _ => return None,
    }
    Some(())
}

/// Random whole blocks of `dtype` (one of the five types above) for tests, seeded: random
/// values and finite scales, block `i`'s f16 scale fields set to `scales[i % 2]`.
#[cfg(test)]
pub(crate) fn random_blocks(dtype: DType, blocks: usize, seed: u64, scales: [f32; 2]) -> Vec<u8> {
    let mut state = seed;
    let mut data: Vec<u8> = (0..blocks * dtype.block_bytes())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    for (i, b) in data.chunks_exact_mut(dtype.block_bytes()).enumerate() {
        let at: &[usize] = match dtype {
            DType::Q6_K => &[208],
            DType::Q5_0 => &[0],
            _ => &[0, 2],
        };
        for &a in at {
            b[a..a + 2].copy_from_slice(&half::f16::from_f32(scales[i % 2]).to_le_bytes());
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each unit's `q d + m` is the reference decoder's value exactly, for random bytes of every
    /// type.
    #[test]
    fn units_decode_as_the_reference() {
        for dtype in UNIT_TYPES {
            let blocks = 3;
            let bl = dtype.block_len();
            // Finite, moderate scales: each f16 scale field set to a small value.
            let data = random_blocks(dtype, blocks, 0x2545_f491_4f6c_dd1d, [0.01; 2]);
            let mut want = vec![0f32; blocks * bl];
            crate::quant::dequantize(dtype, &data, &mut want).unwrap();
            let mut got = Vec::new();
            each_unit(dtype, &data, |u| {
                for (l, &q) in u.q.iter().enumerate() {
                    let v = if dtype == DType::Q5_0 || dtype == DType::Q6_K {
                        q as i8 as f32
                    } else {
                        q as f32
                    };
                    got.push(v * u.d[l / 16] + u.m);
                }
            })
            .unwrap();
            assert_eq!(got.len(), want.len(), "{dtype}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // Equal as numbers (a zero's sign may differ: `0 d + 0` against `d 0`).
                assert!(g == w, "{dtype} value {i}: {g} vs {w}");
            }
        }
    }
}

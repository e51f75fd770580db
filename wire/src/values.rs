//! The one activation codec: how an activation's values become bytes on the wire and back.
//! Every split path (the device client, `edgecut serve`, an MCU device side) encodes with
//! [`encode_values`] and decodes with [`decode_values`]; [`Encoding::bytes`] is what the
//! planner charges a link for.

use alloc::vec::Vec;

use half::f16;

use crate::frame::Encoding;

/// Values per int8 block, each block with one f32 scale (`max |x| / 127`).
pub const INT8_BLOCK: usize = 32;

/// Token ids as [`Encoding::U32`].
pub fn encode_ids(ids: &[u32]) -> Vec<u8> {
    ids.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `n` token ids encoded by [`encode_ids`]; `None` when `data` is not their size.
pub fn decode_ids(data: &[u8], n: usize) -> Option<Vec<u32>> {
    if Encoding::U32.bytes(n as u64)? != data.len() as u64 {
        return None;
    }
    Some(
        data.chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// Encodes `values` as `enc`: f32 or f16 little-endian, or int8 values followed by one f32
/// scale (`max |x| / 127`) per block of [`INT8_BLOCK`]; as [`Encoding::U32`], each value
/// rounded toward zero and saturated to an integer (ids go through [`encode_ids`]).
pub fn encode_values(values: &[f32], enc: Encoding) -> Vec<u8> {
    match enc {
        Encoding::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Encoding::U32 => values
            .iter()
            .flat_map(|v| (*v as u32).to_le_bytes())
            .collect(),
        Encoding::F16 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        Encoding::Int8 => {
            let blocks = values.len().div_ceil(INT8_BLOCK);
            let mut q = Vec::with_capacity(values.len() + blocks * 4);
            let mut scales = Vec::with_capacity(blocks);
            for block in values.chunks(INT8_BLOCK) {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                let s = amax / 127.0;
                let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
                q.extend(
                    block
                        .iter()
                        .map(|v| round_i8((v * inv).clamp(-127.0, 127.0)) as u8),
                );
                scales.push(s);
            }
            q.extend(scales.iter().flat_map(|s| s.to_le_bytes()));
            q
        }
    }
}

/// `x` (within +-127) rounded half away from zero, as `f32::round` does (which `core` lacks):
/// exact, since the fraction of an f32 below 2^23 is exact.
fn round_i8(x: f32) -> i8 {
    let t = x as i32;
    let frac = x - t as f32;
    let r = if frac >= 0.5 {
        t + 1
    } else if frac <= -0.5 {
        t - 1
    } else {
        t
    };
    r as i8
}

/// Decodes `n` values encoded by [`encode_values`] as `enc`; `None` when `data` is not their
/// size (checked before anything is allocated).
pub fn decode_values(data: &[u8], enc: Encoding, n: usize) -> Option<Vec<f32>> {
    if enc.bytes(n as u64)? != data.len() as u64 {
        return None;
    }
    let le = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    Some(match enc {
        Encoding::F32 => data.chunks_exact(4).map(le).collect(),
        Encoding::U32 => data
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
            .collect(),
        Encoding::F16 => data
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Encoding::Int8 => {
            let (q, s) = data.split_at(n);
            let scales: Vec<f32> = s.chunks_exact(4).map(le).collect();
            q.iter()
                .enumerate()
                .map(|(i, &v)| v as i8 as f32 * scales[i / INT8_BLOCK])
                .collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn every_encoding_round_trips_within_its_precision() {
        let x: Vec<f32> = (0..77)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        for enc in [Encoding::F32, Encoding::F16, Encoding::Int8] {
            let bytes = encode_values(&x, enc);
            assert_eq!(Some(bytes.len() as u64), enc.bytes(x.len() as u64));
            let y = decode_values(&bytes, enc, x.len()).unwrap();
            for (blk, (xs, ys)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
                let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                let tol = match enc {
                    Encoding::F32 => 0.0,
                    Encoding::F16 => amax / 1024.0,
                    // Half a step of max|x| / 127.
                    Encoding::Int8 => amax / 254.0 * 1.0001,
                    Encoding::U32 => unreachable!("not in this loop"),
                };
                for (a, b) in xs.iter().zip(ys) {
                    assert!((a - b).abs() <= tol, "{enc:?} block {blk}: {a} vs {b}");
                }
            }
            // One byte short or long is refused.
            assert!(decode_values(&bytes[1..], enc, x.len()).is_none());
            let mut long = bytes.clone();
            long.push(0);
            assert!(decode_values(&long, enc, x.len()).is_none());
        }
        assert_eq!(decode_values(&[], Encoding::Int8, 0), Some(vec![]));
    }

    #[test]
    fn rounding_is_f32_round() {
        extern crate std;
        let mut x = -127.0f32;
        while x <= 127.0 {
            assert_eq!(round_i8(x), x.round() as i8, "{x}");
            x = f32::from_bits(if x < 0.0 {
                x.to_bits() - 997
            } else {
                x.to_bits() + 997
            });
            if x > -1e-6 && x < 0.0 {
                x = 0.0;
            }
        }
        for x in [0.5f32, -0.5, 0.49999997, -0.49999997, 1.5, 2.5, -2.5, 126.5] {
            assert_eq!(round_i8(x), x.round() as i8, "{x}");
        }
        assert_eq!(round_i8(f32::NAN), 0);
    }

    #[test]
    fn names_parse_back() {
        for enc in [Encoding::F32, Encoding::F16, Encoding::Int8, Encoding::U32] {
            assert_eq!(enc.name().parse::<Encoding>(), Ok(enc));
        }
        let ids = [0u32, 7, 30_521, u32::MAX];
        assert_eq!(decode_ids(&encode_ids(&ids), 4), Some(ids.to_vec()));
        assert_eq!(decode_ids(&encode_ids(&ids), 3), None);
        assert!("i8".parse::<Encoding>().is_err());
    }
}

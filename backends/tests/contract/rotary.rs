//! The ops a rotary encoder (ModernBERT) adds to the contract, against f64: rotary embeddings
//! of a padded batch ([`Backend::rope_texts`]: q and k of a stacked q/k/v row, positions
//! counted per text), windowed bidirectional attention, and the elementwise product.

use edgecut_backends::backend::EncoderAttention;
use edgecut_backends::ops::RopeStyle;
use edgecut_backends::Backend;

use super::common::Rng;
use super::{close, down, up};

pub fn rotary_encoder_ops<B: Backend>(b: &B, rng: &mut Rng) {
    let (batch, seq, heads, hd) = (3, 7, 2, 8);
    let h = heads * hd;
    let stride = 3 * h;
    let inv: Vec<f32> = (0..hd / 2)
        .map(|i| 1.0 / 160_000f32.powf(2.0 * i as f32 / hd as f32))
        .collect();
    let x = rng.vec(batch * seq * stride, 1.0);
    let mut xb = up(b, &x);
    b.rope_texts(
        &mut xb,
        stride,
        2 * heads,
        hd,
        seq,
        &b.vector(&inv),
        RopeStyle::Halves,
    )
    .unwrap();
    let half = hd / 2;
    let want: Vec<f64> = (0..x.len())
        .map(|i| {
            let (row, c) = (i / stride, i % stride);
            if c >= 2 * h {
                return x[i] as f64; // v is left alone
            }
            let (base, d) = (i - c % hd, c % hd);
            let p = d % half;
            let a = (row % seq) as f64 * inv[p] as f64;
            let (x0, x1) = (x[base + p] as f64, x[base + p + half] as f64);
            if d < half {
                x0 * a.cos() - x1 * a.sin()
            } else {
                x0 * a.sin() + x1 * a.cos()
            }
        })
        .collect();
    let roped = down(b, xb);
    close("rope of texts", &roped, &want, |_| 1e-5);
    let mut short = up(b, &x[..x.len() - stride]);
    assert!(
        b.rope_texts(
            &mut short,
            stride,
            2 * heads,
            hd,
            seq,
            &b.vector(&inv),
            RopeStyle::Halves
        )
        .is_err(),
        "rows that are not whole texts are refused"
    );

    // Windowed attention over the roped rows, texts of 7, 4 and 1 tokens.
    let lens = [7usize, 4, 1];
    let mask: Vec<u8> = (0..batch * seq)
        .map(|i| u8::from(i % seq < lens[i / seq]))
        .collect();
    let window = 2;
    let qkv = up(b, &roped);
    let a = EncoderAttention {
        q: &*qkv,
        k: &*qkv,
        v: &*qkv,
        offsets: [0, h, 2 * h],
        stride,
        mask: &mask,
        batch,
        seq,
        heads,
        head_dim: hd,
        causal: false,
        window: Some(window),
    };
    let mut out = b.buffer(batch * seq * h);
    b.attention(&a, &mut out).unwrap();
    let at =
        |r: usize, off: usize, hh: usize, d: usize| roped[r * stride + off + hh * hd + d] as f64;
    let mut want = vec![0f64; batch * seq * h];
    for t in 0..batch {
        for hh in 0..heads {
            for i in 0..seq {
                let seen: Vec<usize> = (0..lens[t])
                    .filter(|&j| j + window >= i && j <= i + window)
                    .collect();
                let s: Vec<f64> = seen
                    .iter()
                    .map(|&j| {
                        (0..hd)
                            .map(|d| at(t * seq + i, 0, hh, d) * at(t * seq + j, h, hh, d))
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    want[(t * seq + i) * h + hh * hd + d] = seen
                        .iter()
                        .zip(&e)
                        .map(|(&j, e)| e / z * at(t * seq + j, 2 * h, hh, d))
                        .sum();
                }
            }
        }
    }
    close("windowed attention", &down(b, out), &want, |_| 1e-5);

    let (p, q) = (rng.vec(50, 2.0), rng.vec(50, 2.0));
    let mut pb = up(b, &p);
    b.mul(&mut pb, &up(b, &q)).unwrap();
    let want: Vec<f64> = p.iter().zip(&q).map(|(a, c)| (a * c) as f64).collect();
    close("mul", &down(b, pb), &want, |_| 0.0);
    assert!(b.mul(&mut up(b, &p), &up(b, &q[1..])).is_err());
}

//! Bicubic resizing of 8-bit RGB as Pillow computes it (`Image.resize(size, BICUBIC)`, its
//! `Resample.c`), value for value: CLIP was trained on pictures resized so, and its processor
//! resizes with PIL.
//!
//! The filter is the cubic with `a = -0.5`, widened by the scale when shrinking (so it
//! averages, not samples); each output pixel's weights are normalised in f64, then rounded to
//! fixed point with 22 fractional bits. Rows are resized first, into 8-bit values, then
//! columns of that.

use super::Rgb8;

/// Fractional bits of the fixed-point weights (Pillow's `PRECISION_BITS`, 32 - 8 - 2).
const BITS: u32 = 22;

fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Each output position's first input position, its number of inputs, and their fixed-point
/// weights (`ksize` per output, zero past the count).
struct Coeffs {
    first: Vec<usize>,
    count: Vec<usize>,
    ksize: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` for `input` positions onto `output`, then
/// `normalize_coeffs_8bpc`.
fn coeffs(input: usize, output: usize) -> Coeffs {
    let scale = input as f64 / output as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut first = Vec::with_capacity(output);
    let mut count = Vec::with_capacity(output);
    let mut weights = vec![0i32; output * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..output {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates toward zero, as `as` does.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(input as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, w) in k[..n].iter_mut().enumerate() {
            *w = cubic(((x + xmin) as f64 - center + 0.5) * ss);
            ww += *w;
        }
        for (w, out) in k[..n].iter().zip(&mut weights[xx * ksize..]) {
            let w = if ww != 0.0 { w / ww } else { *w };
            let f = w * f64::from(1u32 << BITS);
            *out = if w < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        first.push(xmin);
        count.push(n);
    }
    Coeffs {
        first,
        count,
        ksize,
        weights,
    }
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> BITS) as u8
    }
}

/// `img` resized to `width x height` with Pillow's bicubic filter.
pub fn resize_bicubic(img: &Rgb8, width: usize, height: usize) -> Rgb8 {
    let mut cur = img.clone();
    if width != img.width {
        let c = coeffs(img.width, width);
        let mut out = vec![0u8; width * img.height * 3];
        for (src, dst) in img
            .data
            .chunks_exact(img.width * 3)
            .zip(out.chunks_exact_mut(width * 3))
        {
            for xx in 0..width {
                let k = &c.weights[xx * c.ksize..][..c.count[xx]];
                let mut s = [1i64 << (BITS - 1); 3];
                for (x, &w) in k.iter().enumerate() {
                    let p = &src[(c.first[xx] + x) * 3..][..3];
                    for ch in 0..3 {
                        s[ch] += i64::from(p[ch]) * i64::from(w);
                    }
                }
                for ch in 0..3 {
                    dst[xx * 3 + ch] = clip8(s[ch]);
                }
            }
        }
        cur = Rgb8 {
            width,
            height: img.height,
            data: out,
        };
    }
    if height != cur.height {
        let c = coeffs(cur.height, height);
        let row = cur.width * 3;
        let mut out = vec![0u8; row * height];
        for (yy, dst) in out.chunks_exact_mut(row).enumerate() {
            let k = &c.weights[yy * c.ksize..][..c.count[yy]];
            for (i, d) in dst.iter_mut().enumerate() {
                let mut s = 1i64 << (BITS - 1);
                for (y, &w) in k.iter().enumerate() {
                    s += i64::from(cur.data[(c.first[yy] + y) * row + i]) * i64::from(w);
                }
                *d = clip8(s);
            }
        }
        cur = Rgb8 {
            width: cur.width,
            height,
            data: out,
        };
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point_and_a_flat_image_stays_flat() {
        for (i, o) in [(97, 224), (640, 224), (224, 224), (7, 300), (3000, 224)] {
            let c = coeffs(i, o);
            for xx in 0..o {
                let s: i64 = c.weights[xx * c.ksize..][..c.count[xx]]
                    .iter()
                    .map(|&w| i64::from(w))
                    .sum();
                // Each weight rounds by at most half a unit.
                assert!(
                    (s - (1 << BITS)).abs() <= c.ksize as i64,
                    "{i}->{o} at {xx}: {s}"
                );
            }
        }
        let flat = Rgb8 {
            width: 31,
            height: 17,
            data: vec![77; 31 * 17 * 3],
        };
        let r = resize_bicubic(&flat, 224, 123);
        assert!(r.data.iter().all(|&v| v == 77));
        assert_eq!((r.width, r.height, r.data.len()), (224, 123, 224 * 123 * 3));
    }
}

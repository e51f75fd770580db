//! `CLIPImageProcessor`'s steps on an 8-bit RGB picture: resize so the shortest side has
//! `shortest_edge` pixels (bicubic, as PIL), crop the center, rescale to 0..1 and normalise per
//! channel, into a `3 x height x width` tensor.

use super::resample::resize_bicubic;
use super::{ImageError, Rgb8};

/// Pixels the resized picture may have before its crop: a picture far longer than wide (a
/// 16384x1 strip resized to a shortest side of 224 would be 3.7 M pixels long) is refused, not
/// resized into gigabytes. 8 M (24 MB) allows an aspect ratio of 167 at 224.
pub const MAX_RESIZED_PIXELS: usize = 8 << 20;

/// The processor's constants (a model file's `clip.image.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct Processing {
    /// Pixels of the shortest side after resizing.
    pub shortest_edge: usize,
    /// `(height, width)` of the center crop.
    pub crop: (usize, usize),
    /// Per-channel mean, subtracted after rescaling.
    pub mean: [f32; 3],
    /// Per-channel standard deviation, divided by.
    pub std: [f32; 3],
    /// Factor from 8-bit values to 0..1.
    pub rescale: f64,
}

/// The size transformers' `get_resize_output_image_size` gives `(width, height)` for a shortest
/// side of `edge`: the other side scaled and truncated, as Python's `int(edge * long / short)`.
fn resized(width: usize, height: usize, edge: usize) -> (usize, usize) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (edge.saturating_mul(long) as f64 / short.max(1) as f64) as usize;
    if width <= height {
        (edge, new_long)
    } else {
        (new_long, edge)
    }
}

/// The picture resized (shortest side to `p.shortest_edge`) and center-cropped to `p.crop`.
pub fn resize_and_crop(img: &Rgb8, p: &Processing) -> Result<Rgb8, ImageError> {
    if img.width == 0 || img.height == 0 || img.data.len() != img.width * img.height * 3 {
        return Err(ImageError::NoPixels {
            width: img.width as u32,
            height: img.height as u32,
        });
    }
    let (w, h) = resized(img.width, img.height, p.shortest_edge);
    if w.saturating_mul(h) > MAX_RESIZED_PIXELS {
        return Err(ImageError::TooElongated {
            width: img.width,
            height: img.height,
            resized: (w, h),
        });
    }
    let r = resize_bicubic(img, w, h);
    let (ch, cw) = p.crop;
    // transformers pads a picture smaller than the crop; the resize makes none here
    // (shortest_edge >= the crop, checked when the model loads).
    let (top, left) = (h.saturating_sub(ch) / 2, w.saturating_sub(cw) / 2);
    let mut data = vec![0u8; ch * cw * 3];
    for (y, out) in data.chunks_exact_mut(cw * 3).enumerate().take(h.min(ch)) {
        let src = &r.data[((top + y) * w + left) * 3..];
        let n = cw.min(w) * 3;
        out[..n].copy_from_slice(&src[..n]);
    }
    Ok(Rgb8 {
        width: cw,
        height: ch,
        data,
    })
}

/// The normalised `3 x height x width` tensor of a cropped picture: `(v * rescale - mean) / std`
/// per channel, the product in f64 then f32, as transformers' `rescale` and `normalize` do.
pub fn pixel_tensor(img: &Rgb8, p: &Processing) -> Vec<f32> {
    let plane = img.width * img.height;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            let v = (f64::from(px[c]) * p.rescale) as f32;
            out[c * plane + i] = (v - p.mean[c]) / p.std[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shortest_side_becomes_the_edge_and_the_other_is_truncated() {
        assert_eq!(resized(97, 61, 224), (356, 224));
        assert_eq!(resized(61, 97, 224), (224, 356));
        assert_eq!(resized(224, 224, 224), (224, 224));
        assert_eq!(resized(7, 300, 224), (224, 9600));
        assert_eq!(resized(640, 48, 224), (2986, 224));
    }
}

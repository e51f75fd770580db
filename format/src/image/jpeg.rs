//! JPEG through libjpeg (mozjpeg's build of libjpeg-turbo; feature `libjpeg`): the decoder PIL
//! uses, so pictures reach the resize value for value as `CLIPImageProcessor` sees them (pure
//! Rust zune-jpeg differs from it by a few levels on some pixels: another IDCT and chroma
//! upsampling). libjpeg reports errors by unwinding, caught here and turned into
//! [`ImageError::Decode`]. CMYK (always stored inverted, as Adobe writes it) is converted as
//! Pillow converts it.

use std::panic::{catch_unwind, AssertUnwindSafe};

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage};
use mozjpeg::{Decompress, Format, Marker};

use super::{check_size, ImageError, ImageLimits, Rgb8};

fn decode_err(reason: impl Into<String>) -> ImageError {
    ImageError::Decode {
        format: "JPEG",
        reason: reason.into(),
    }
}

/// Decodes a complete JPEG (the caller checked its end-of-image marker) within `limits`.
pub(super) fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<Rgb8, ImageError> {
    match catch_unwind(AssertUnwindSafe(|| decode_inner(bytes, limits))) {
        Ok(r) => r,
        Err(payload) => {
            let why = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg stopped".into());
            Err(decode_err(why))
        }
    }
}

fn decode_inner(bytes: &[u8], limits: &ImageLimits) -> Result<Rgb8, ImageError> {
    let io = |e: std::io::Error| decode_err(e.to_string());
    let d = Decompress::builder()
        .with_markers(&[Marker::APP(1)])
        .from_mem(bytes)
        .map_err(io)?;
    let (w, h) = d.size();
    check_size(
        u32::try_from(w).unwrap_or(u32::MAX),
        u32::try_from(h).unwrap_or(u32::MAX),
        limits,
    )?;
    // EXIF is APP1's payload after "Exif\0\0".
    let orientation = d
        .markers()
        .filter_map(|m| m.data.strip_prefix(b"Exif\0\0"))
        .find_map(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    let data: Vec<u8> = match d.image().map_err(io)? {
        Format::RGB(mut s) => {
            let px: Vec<[u8; 3]> = s.read_scanlines().map_err(io)?;
            s.finish().map_err(io)?;
            px.into_iter().flatten().collect()
        }
        Format::Gray(mut s) => {
            let px: Vec<u8> = s.read_scanlines().map_err(io)?;
            s.finish().map_err(io)?;
            px.into_iter().flat_map(|v| [v; 3]).collect()
        }
        Format::CMYK(mut s) => {
            let px: Vec<[u8; 4]> = s.read_scanlines().map_err(io)?;
            s.finish().map_err(io)?;
            px.into_iter().flat_map(cmyk_to_rgb).collect()
        }
    };
    if data.len() != w * h * 3 {
        return Err(decode_err(format!(
            "{} samples decoded for {w}x{h} pixels",
            data.len()
        )));
    }
    let mut img = DynamicImage::ImageRgb8(
        RgbImage::from_raw(w as u32, h as u32, data).ok_or_else(|| decode_err("pixel count"))?,
    );
    img.apply_orientation(orientation);
    let (width, height) = (img.width() as usize, img.height() as usize);
    Ok(Rgb8 {
        width,
        height,
        data: img.into_rgb8().into_raw(),
    })
}

/// One stored (inverted) CMYK pixel as RGB: Pillow reads CMYK JPEGs inverted ("CMYK;I") and
/// converts with `cmyk2rgb`: `nk - nk * c / 255` per channel, `nk = 255 - k`, divisions by 255
/// rounded by shifts.
fn cmyk_to_rgb(stored: [u8; 4]) -> [u8; 3] {
    let [c, m, y, k] = stored.map(|v| 255 - u32::from(v));
    let nk = 255 - k;
    let muldiv255 = |a: u32| {
        let t = a * nk + 128;
        ((t >> 8) + t) >> 8
    };
    [c, m, y].map(|v| nk.saturating_sub(muldiv255(v)).min(255) as u8)
}

//! Pictures as a model's input: PNG and JPEG decoded under limits checked before any pixel is
//! (a decompression bomb is an error naming the limit, not an allocation), turned upright by
//! their EXIF orientation and into 8-bit RGB as `CLIPImageProcessor` sees them (transparency
//! composited onto white), then resized and cropped as PIL computes it ([`resample`]) and
//! normalised ([`preprocess`]).

#[cfg(feature = "libjpeg")]
mod jpeg;
mod preprocess;
pub mod resample;

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

pub use preprocess::{pixel_tensor, resize_and_crop, Processing, MAX_RESIZED_PIXELS};

/// What a decoder may be given and may make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLimits {
    /// Bytes of the encoded file.
    pub max_bytes: usize,
    /// Pixels per side.
    pub max_side: u32,
    /// Pixels in all (width times height).
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    /// 32 MiB files, 16,384 pixels a side, 40 megapixels: every camera photo, and at most
    /// ~320 MB of decoded samples (40 M pixels of 16-bit RGBA) before it is cut down.
    fn default() -> Self {
        ImageLimits {
            max_bytes: 32 << 20,
            max_side: 16_384,
            max_pixels: 40_000_000,
        }
    }
}

/// Why a picture cannot be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// No bytes at all.
    #[error("the image is empty (0 bytes)")]
    Empty,
    /// The file is over [`ImageLimits::max_bytes`].
    #[error("the image file is {bytes} bytes, over the limit of {limit}")]
    FileTooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Neither PNG nor JPEG by its first bytes.
    #[error("not a PNG or JPEG image (the first bytes are {0})")]
    UnknownFormat(String),
    /// Its header declares more pixels than the limits allow (refused before decoding).
    #[error("the image is {width}x{height} pixels, over the limit of {limit}")]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The limit, in words.
        limit: String,
    },
    /// A side of zero pixels.
    #[error("the image is {width}x{height} pixels: it has no pixels")]
    NoPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// Resizing its shortest side to the model's would make too many pixels (see
    /// [`MAX_RESIZED_PIXELS`]).
    #[error(
        "the image is {width}x{height} pixels: too elongated (resized for the model it would be \
         {}x{} pixels)", resized.0, resized.1
    )]
    TooElongated {
        /// Its width.
        width: usize,
        /// Its height.
        height: usize,
        /// The size resizing would give.
        resized: (usize, usize),
    },
    /// The decoder's own complaint: truncated or corrupt data, an unsupported variant.
    #[error("cannot decode the {format} image: {reason}")]
    Decode {
        /// PNG or JPEG.
        format: &'static str,
        /// What the decoder said.
        reason: String,
    },
}

/// An 8-bit RGB picture, rows top to bottom, `[height][width][r, g, b]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb8 {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width * height * 3` samples.
    pub data: Vec<u8>,
}

/// Decodes a PNG or JPEG file's bytes into upright 8-bit RGB, within `limits`.
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<Rgb8, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::FileTooLarge {
            bytes: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let format = match image::guess_format(bytes) {
        Ok(ImageFormat::Png) => "PNG",
        Ok(ImageFormat::Jpeg) if !jpeg_complete(bytes) => {
            return Err(ImageError::Decode {
                format: "JPEG",
                reason: "the file is truncated (no end-of-image marker after its last scan)".into(),
            })
        }
        #[cfg(feature = "libjpeg")]
        Ok(ImageFormat::Jpeg) => return jpeg::decode(bytes, limits),
        #[cfg(not(feature = "libjpeg"))]
        Ok(ImageFormat::Jpeg) => "JPEG",
        _ => {
            let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            return Err(ImageError::UnknownFormat(head.join(" ")));
        }
    };
    let err = |e: image::ImageError| ImageError::Decode {
        format,
        reason: e.to_string(),
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Decode {
            format,
            reason: e.to_string(),
        })?;
    // The decoders' own bound as a second line: what they may allocate (the output at 16-bit
    // RGBA plus as much again for their buffers). The sides are checked below from the
    // header, so that the error names them.
    let mut l = image::Limits::default();
    l.max_alloc = Some(limits.max_pixels.saturating_mul(16));
    reader.limits(l);
    // A PNG's size is in its first chunk: checked before the decoder reads further.
    if let Some((w, h)) = png_size(bytes) {
        check_size(w, h, limits)?;
    }
    let mut decoder = reader.into_decoder().map_err(err)?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, limits)?;
    let orientation = decoder.orientation().map_err(err)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(err)?;
    img.apply_orientation(orientation);
    Ok(to_rgb8(img))
}

/// Whether a JPEG has its end-of-image marker (`FF D9`) after its last start-of-scan
/// (`FF DA`): the decoder fills a truncated scan with grey rather than fail, and a picture cut
/// short in transfer should be refused, not embedded. (Inside a scan an `FF` byte is always
/// followed by `00` or a restart marker, so these pairs are real markers; an EXIF thumbnail's
/// own markers come before the main scan.)
fn jpeg_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(at) => bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

/// The width and height in a PNG's header chunk (IHDR, right after the signature).
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let be = |at: usize| Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    Some((be(16)?, be(20)?))
}

fn check_size(width: u32, height: u32, limits: &ImageLimits) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::NoPixels { width, height });
    }
    if width > limits.max_side || height > limits.max_side {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            limit: format!("{} pixels a side", limits.max_side),
        });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            limit: format!("{} pixels", limits.max_pixels),
        });
    }
    Ok(())
}

/// 8-bit RGB as `CLIPImageProcessor`'s `convert_rgb` makes it with PIL: grey repeated, an alpha
/// channel composited onto white with PIL's integer `alpha_composite`, 16-bit samples cut to
/// their high byte (as PIL reads 16-bit RGB; for 16-bit grey PIL's conversion clips every value
/// above 255 to white, which edgecut does not copy).
fn to_rgb8(img: DynamicImage) -> Rgb8 {
    let (width, height) = (img.width() as usize, img.height() as usize);
    // Samples as 8 bits (16-bit ones by their high byte: `image`'s own conversion rounds) and
    // channels per pixel.
    let (samples, channels): (Vec<u8>, usize) = match img {
        DynamicImage::ImageLuma8(b) => (b.into_raw(), 1),
        DynamicImage::ImageLumaA8(b) => (b.into_raw(), 2),
        DynamicImage::ImageRgb8(b) => (b.into_raw(), 3),
        DynamicImage::ImageRgba8(b) => (b.into_raw(), 4),
        DynamicImage::ImageLuma16(b) => (high_bytes(b.as_raw()), 1),
        DynamicImage::ImageLumaA16(b) => (high_bytes(b.as_raw()), 2),
        DynamicImage::ImageRgb16(b) => (high_bytes(b.as_raw()), 3),
        DynamicImage::ImageRgba16(b) => (high_bytes(b.as_raw()), 4),
        other => (other.into_rgba8().into_raw(), 4),
    };
    let data = match channels {
        3 => samples,
        1 => samples.iter().flat_map(|&v| [v; 3]).collect(),
        2 => samples
            .chunks_exact(2)
            .flat_map(|p| [over_white(u32::from(p[0]), u32::from(p[1])); 3])
            .collect(),
        _ => samples
            .chunks_exact(4)
            .flat_map(|p| {
                let a = u32::from(p[3]);
                [p[0], p[1], p[2]].map(|c| over_white(u32::from(c), a))
            })
            .collect(),
    };
    Rgb8 {
        width,
        height,
        data,
    }
}

fn high_bytes(v: &[u16]) -> Vec<u8> {
    v.iter().map(|s| (s >> 8) as u8).collect()
}

/// One channel of a pixel with alpha `a` composited onto opaque white, as Pillow's
/// `ImagingAlphaComposite` computes it (7 extra bits, divisions by 255 rounded by shifts).
fn over_white(c: u32, a: u32) -> u8 {
    const BITS: u32 = 7;
    if a == 0 {
        return 255;
    }
    let shift_div255 = |v: u32| ((v >> 8) + v) >> 8;
    // Destination white and opaque: blend = 255 (255 - a), out alpha = 255 * 255.
    let out_a255 = a * 255 + 255 * (255 - a);
    let coef1 = a * 255 * 255 * (1 << BITS) / out_a255;
    let coef2 = 255 * (1 << BITS) - coef1;
    let t = c * coef1 + 255 * coef2;
    (shift_div255(t + (0x80 << BITS)) >> BITS) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compositing_over_white_keeps_opaque_pixels_and_whitens_clear_ones() {
        for c in [0, 1, 127, 254, 255] {
            assert_eq!(over_white(c, 255), c as u8, "opaque {c}");
            assert_eq!(over_white(c, 0), 255, "clear {c}");
        }
        // Half transparent black: about half grey, as PIL gives (128).
        assert_eq!(over_white(0, 128), 127);
    }
}

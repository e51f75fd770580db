//! Hostile pictures against a CLIP session: each a clear error naming what is wrong, refused
//! before any large allocation where its header gives it away, and the session still embeds a
//! good picture after them.

use std::io::Cursor;

use edgecut::{Error, ImageError, Session, SessionOptions, WeightType};
use edgecut_tests::{converted, repo_root};
use image::{ImageBuffer, Luma, Rgb};

fn session() -> Session {
    let path = converted(
        &repo_root().join("tests/fixtures/clip-tiny"),
        "clip-tiny",
        WeightType::F32,
    );
    Session::open(&path, &SessionOptions::default()).unwrap()
}

fn png_of<P: image::PixelWithColorType<Subpixel = u8>>(img: &ImageBuffer<P, Vec<u8>>) -> Vec<u8>
where
    [P::Subpixel]: image::EncodableLayout,
{
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// CRC-32 (PNG's), bit by bit: enough for a header.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A PNG that is only a signature and a header declaring `w x h` 8-bit RGB pixels.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(13u32.to_be_bytes());
    out.extend(&ihdr);
    out.extend(crc32(&ihdr).to_be_bytes());
    out
}

/// What a case's error must be.
type Expect = fn(&ImageError) -> bool;

fn image_error(r: edgecut::Result<Vec<Vec<f32>>>) -> (usize, ImageError) {
    match r {
        Err(Error::Image { index, source }) => (index, source),
        other => panic!("expected an image error, got {other:?}"),
    }
}

#[test]
fn hostile_pictures_get_clear_errors_and_the_session_keeps_working() {
    let s = session();
    let good = png_of(&ImageBuffer::from_fn(40, 30, |x, y| {
        Rgb([(x * 6) as u8, (y * 8) as u8, 90])
    }));
    let mut jpeg = Vec::new();
    ImageBuffer::from_fn(64, 48, |x, y| Rgb([(x * 4) as u8, (y * 5) as u8, 60]))
        .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    // 8000 x 8000 grey zeros: 64 megapixels in ~0.3 MB (200:1 at `image`'s fast setting),
    // past the default 40 megapixels: refused from its header, never decoded.
    let bomb = png_of(&ImageBuffer::<Luma<u8>, _>::new(8000, 8000));
    assert!(bomb.len() < 400_000, "bomb is {} bytes", bomb.len());
    let strip = png_of(&ImageBuffer::<Luma<u8>, _>::new(16_000, 1));
    // A photograph cut short in transfer: the decoder alone would fill the rest with grey.
    let photo =
        std::fs::read(repo_root().join("tests/fixtures/clip-images/03-chelsea.jpg")).unwrap();
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("zero bytes", Vec::new(), |e| matches!(e, ImageError::Empty)),
        ("wrong magic", b"GIF89a\x01\x00\x01\x00".to_vec(), |e| {
            matches!(e, ImageError::UnknownFormat(_))
        }),
        ("truncated PNG", good[..good.len() / 2].to_vec(), |e| {
            matches!(e, ImageError::Decode { format: "PNG", .. })
        }),
        ("truncated JPEG", jpeg[..jpeg.len() / 3].to_vec(), |e| {
            matches!(e, ImageError::Decode { format: "JPEG", .. })
        }),
        (
            "photo JPEG cut at 90%",
            photo[..photo.len() * 9 / 10].to_vec(),
            |e| matches!(e, ImageError::Decode { format: "JPEG", reason } if reason.contains("truncated")),
        ),
        ("30000x30000 header", png_header(30_000, 30_000), |e| {
            matches!(e, ImageError::TooManyPixels { width: 30_000, .. })
        }),
        ("0x10 header", png_header(0, 10), |e| {
            matches!(e, ImageError::NoPixels { .. } | ImageError::Decode { .. })
        }),
        ("compression bomb", bomb, |e| {
            matches!(
                e,
                ImageError::TooManyPixels {
                    width: 8000,
                    height: 8000,
                    ..
                }
            )
        }),
        ("16000x1 strip", strip, |e| {
            matches!(e, ImageError::TooElongated { .. })
        }),
    ];
    for (what, bytes, expect) in &cases {
        // The bad picture second: the error names it, not the good one before it.
        let (index, e) = image_error(s.embed_images(&[&good, bytes]));
        eprintln!("{what}: {e}");
        assert_eq!(index, 1, "{what}");
        assert!(expect(&e), "{what}: {e:?}");
        assert!(!e.to_string().is_empty());
    }
    // Lower limits are the caller's to set.
    let tight = Session::open(
        converted(
            &repo_root().join("tests/fixtures/clip-tiny"),
            "clip-tiny",
            WeightType::F32,
        ),
        &SessionOptions::default().with_image_limits(edgecut::ImageLimits {
            max_bytes: 100,
            ..Default::default()
        }),
    )
    .unwrap();
    let (_, e) = image_error(tight.embed_images(&[&good]));
    assert!(
        matches!(e, ImageError::FileTooLarge { limit: 100, .. }),
        "{e}"
    );
    // Still working, and the same vector as before the failures.
    let a = s.embed_images(&[&good]).unwrap();
    let b = s.embed_images(&[&jpeg, &good]).unwrap();
    assert_eq!(a[0], b[1]);
    assert!((a[0].iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-5);
    // A text model refuses pictures by name.
    let text_only = Session::open(
        edgecut_tests::minilm(WeightType::Q8_0),
        &SessionOptions::default(),
    )
    .unwrap();
    assert!(!text_only.embeds_images());
    let e = text_only.embed_images(&[&good]).unwrap_err();
    assert!(e.to_string().contains("CLIP"), "{e}");
}

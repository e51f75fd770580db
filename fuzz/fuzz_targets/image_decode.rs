//! Fuzzes picture decoding and CLIP's preprocessing: any bytes must decode or give an error
//! (no panic, no allocation past the limits), and a decoded picture must resize and crop to the
//! asked size. Small limits keep each input fast.
#![no_main]

use edgecut_format::image::{decode, pixel_tensor, resize_and_crop, ImageLimits, Processing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = ImageLimits {
        max_bytes: 1 << 20,
        max_side: 512,
        max_pixels: 1 << 16,
    };
    let Ok(img) = decode(data, &limits) else {
        return;
    };
    assert_eq!(img.data.len(), img.width * img.height * 3);
    let p = Processing {
        shortest_edge: 24,
        crop: (24, 24),
        mean: [0.5; 3],
        std: [0.25; 3],
        rescale: 1.0 / 255.0,
    };
    if let Ok(crop) = resize_and_crop(&img, &p) {
        assert_eq!((crop.width, crop.height), (24, 24));
        assert!(pixel_tensor(&crop, &p).iter().all(|v| v.is_finite()));
    }
});

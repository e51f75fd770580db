//! CLIP against its references (`tests/reference/make_clip_fixtures.py`): image preprocessing
//! against `CLIPImageProcessor` (PIL) on 21 pictures of odd sizes and modes (JPEG through
//! libjpeg, as PIL decodes it: feature `libjpeg`), and tiny seeded random CLIP checkpoints
//! (quick_gelu and gelu) against PyTorch, image and text embeddings.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgecut::{cosine, WeightType};
use edgecut_backends::{Device, DeviceKind};
use edgecut_format::image::{decode, pixel_tensor, resize_and_crop, ImageLimits, Processing};
use edgecut_format::{GgufFile, Tokenizer};
use edgecut_models::Clip;
use edgecut_tests::{converted, f32s, fixture, ids, repo_root};
use serde_json::Value;

fn images_dir() -> PathBuf {
    repo_root().join("tests/fixtures/clip-images")
}

const MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const STD: [f32; 3] = [0.268_629_5, 0.261_302_6, 0.275_777_1];

fn processing(size: usize) -> Processing {
    Processing {
        shortest_edge: size,
        crop: (size, size),
        mean: MEAN,
        std: STD,
        rescale: 1.0 / 255.0,
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// transformers' `rescale` then `normalize` of an 8-bit crop, written out here (f64 product,
/// f32 difference and quotient), `3 x h x w`.
fn reference_tensor(crop: &[u8], plane: usize) -> Vec<f32> {
    let mut out = vec![0f32; 3 * plane];
    for i in 0..plane {
        for c in 0..3 {
            let v = (crop[i * 3 + c] as f64 * (1.0 / 255.0)) as f32;
            out[c * plane + i] = (v - MEAN[c]) / STD[c];
        }
    }
    out
}

#[test]
fn preprocessing_equals_clip_image_processor_on_21_pictures() {
    let index = serde_json::from_slice::<Value>(&read(&images_dir().join("expected/index.json")))
        .expect("index.json");
    let rows = index["images"].as_array().unwrap();
    assert!(rows.len() >= 20);
    let p = processing(224);
    let (mut report, mut failed) = (Vec::new(), Vec::new());
    for r in rows {
        let file = r["file"].as_str().unwrap();
        let img = decode(&read(&images_dir().join(file)), &ImageLimits::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let stored = (
            r["width"].as_u64().unwrap() as usize,
            r["height"].as_u64().unwrap() as usize,
        );
        // EXIF orientation 6 turns the picture a quarter: its sides swap.
        let upright = if file.contains("exif6") {
            (stored.1, stored.0)
        } else {
            stored
        };
        assert_eq!((img.width, img.height), upright, "{file}: size");
        let crop = resize_and_crop(&img, &p).unwrap();
        let expected = decode(
            &read(
                &images_dir()
                    .join("expected")
                    .join(r["expected"].as_str().unwrap()),
            ),
            &ImageLimits::default(),
        )
        .unwrap();
        assert_eq!((crop.width, crop.height), (224, 224), "{file}");
        let ours = pixel_tensor(&crop, &p);
        let want = reference_tensor(&expected.data, 224 * 224);
        let worst = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let differing = crop
            .data
            .iter()
            .zip(&expected.data)
            .filter(|(a, b)| a != b)
            .count();
        report.push(format!(
            "{file} ({}): max |diff| {worst:.2e}, {differing} of {} samples differ",
            r["pil_mode"].as_str().unwrap_or("?"),
            crop.data.len()
        ));
        if worst > 1e-5 {
            failed.push(file.to_string());
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failed.is_empty(), "off by more than the bound: {failed:?}");
}

fn tiny(name: &str, wt: WeightType) -> PathBuf {
    converted(&repo_root().join("tests/fixtures").join(name), name, wt)
}

fn load(path: &Path) -> (Clip, Tokenizer) {
    let file = Arc::new(GgufFile::open(path).unwrap_or_else(|e| panic!("{e}")));
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let clip = Clip::load(file, &Device::open(DeviceKind::Cpu, 2).unwrap()).unwrap();
    (clip, tok)
}

/// The worst cosine between rows of `got` (`dim` wide) and the fixture's embeddings.
fn worst_cosine(got: &[f32], dim: usize, cases: &[Value]) -> f32 {
    assert_eq!(got.len(), cases.len() * dim);
    got.chunks_exact(dim)
        .zip(cases)
        .map(|(g, c)| cosine(g, &f32s(&c["embedding"])))
        .fold(1.0, f32::min)
}

#[test]
fn clip_embeddings_match_pytorch_in_f32_and_q8_0() {
    for name in ["clip-tiny", "clip-tiny-gelu"] {
        let fx = fixture("clip-tiny.json")["models"][name].clone();
        let texts = fx["texts"].as_array().unwrap();
        let images = fx["images"].as_array().unwrap();
        for (wt, bound) in [(WeightType::F32, 0.99999f32), (WeightType::Q8_0, 0.999)] {
            let (clip, tok) = load(&tiny(name, wt));
            let dim = clip.cfg.projection;
            // Texts: the tokenizer's ids, then the text tower.
            let mut all = Vec::new();
            for c in texts {
                let t = c["text"].as_str().unwrap();
                let e = tok.encode(t, true, Some(clip.cfg.context)).unwrap();
                assert_eq!(e.ids, ids(&c["ids"]), "{name}: ids of {t:?}");
                all.push(e.ids);
            }
            let text_worst = worst_cosine(&clip.embed_texts(&all).unwrap(), dim, texts);
            // Images: the processor's pixel tensors as recorded, all in one batch.
            let pixels: Vec<f32> = images.iter().flat_map(|c| f32s(&c["pixels"])).collect();
            let image_worst = worst_cosine(
                &clip.embed_images(&pixels, images.len()).unwrap(),
                dim,
                images,
            );
            // One at a time gives the same vectors (no batch leaks into another).
            let one = clip
                .embed_images(&pixels[..clip.cfg.pixels_per_image()], 1)
                .unwrap();
            assert!(cosine(&one, &f32s(&images[0]["embedding"])) >= bound);
            eprintln!(
                "{name} {wt:?}: worst cosine texts {text_worst}, images {image_worst} \
                 ({} texts, {} images)",
                texts.len(),
                images.len()
            );
            assert!(text_worst >= bound, "{name} {wt:?}: texts {text_worst}");
            assert!(image_worst >= bound, "{name} {wt:?}: images {image_worst}");
        }
    }
}

#[test]
fn preprocessed_files_embed_as_pytorch_and_zero_shot_matches() {
    let fx = fixture("clip-tiny.json")["models"]["clip-tiny"].clone();
    let (clip, tok) = load(&tiny("clip-tiny", WeightType::F32));
    let p = {
        let c = &clip.cfg.processing;
        Processing {
            shortest_edge: c.shortest_edge,
            crop: c.crop,
            mean: c.mean,
            std: c.std,
            rescale: c.rescale,
        }
    };
    for c in fx["images"].as_array().unwrap() {
        let file = c["file"].as_str().unwrap();
        let img = decode(&read(&images_dir().join(file)), &ImageLimits::default()).unwrap();
        let px = pixel_tensor(&resize_and_crop(&img, &p).unwrap(), &p);
        let want = f32s(&c["pixels"]);
        let worst = px
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-5, "{file}: 32x32 pixels off by {worst}");
        let v = clip.embed_images(&px, 1).unwrap();
        let cs = cosine(&v, &f32s(&c["embedding"]));
        eprintln!("{file}: pixels within {worst:.1e}, cosine {cs}");
        assert!(cs >= 0.9999, "{file}: cosine {cs}");
    }
    // Zero-shot: softmax of exp(logit_scale) times the cosines, as CLIPModel's logits_per_image.
    let z = &fx["zero_shot"];
    let labels: Vec<Vec<u32>> = z["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| tok.encode(t.as_str().unwrap(), true, Some(77)).unwrap().ids)
        .collect();
    let t = clip.embed_texts(&labels).unwrap();
    let first = &fx["images"][0];
    let i = clip.embed_images(&f32s(&first["pixels"]), 1).unwrap();
    let logits: Vec<f32> = t
        .chunks_exact(clip.cfg.projection)
        .map(|t| clip.similarity_scale() * cosine(&i, t))
        .collect();
    let probs = edgecut_models::probabilities(&logits, logits.len());
    for (p, w) in probs.iter().zip(f32s(&z["probabilities"])) {
        assert!((p - w).abs() < 1e-4, "zero-shot {probs:?} vs {w}");
    }
}

//! CLIP's image tower split at every cut, through the wire codec's bytes: f32 on the wire gives
//! the local vectors exactly, f16 and int8 within cosine 0.999; requests that do not fit the
//! model are refused.

use edgecut::{cosine, Session, SessionOptions, WeightType};
use edgecut_tests::{converted, over_the_wire, repo_root};
use edgecut_wire::{Encoding, Frame};

#[test]
fn every_cut_of_the_image_tower_gives_the_local_vectors() {
    let m = converted(
        &repo_root().join("tests/fixtures/clip-tiny"),
        "clip-tiny",
        WeightType::Q8_0,
    );
    let s = Session::open(&m, &SessionOptions::default().with_batch_size(16)).unwrap();
    let files = ["02-coffee.png", "03-chelsea.jpg", "05-camera-grey.png"];
    let bytes: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(repo_root().join("tests/fixtures/clip-images").join(f)).unwrap())
        .collect();
    let images: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let local = s.embed_images(&images).unwrap();
    let n = s.stage_count();
    assert_eq!(n, 5, "embeddings, 3 blocks, head");
    let dim = s.embedding_dim();
    let mut worst = 1f32;
    for cut in 0..n {
        for enc in [Encoding::F32, Encoding::F16, Encoding::Int8] {
            let req = s.run_device_part_images(&images, cut, enc, 7).unwrap();
            let Frame::Infer(req) = over_the_wire(Frame::Infer(req)) else {
                unreachable!()
            };
            let res = s.run_server_part(&req).unwrap();
            assert_eq!(
                (res.request_id, res.rows as usize, res.cols as usize),
                (7, 3, dim)
            );
            for (i, v) in res.values.chunks_exact(dim).enumerate() {
                if enc == Encoding::F32 {
                    assert_eq!(v, &local[i][..], "cut {cut} picture {i}");
                } else {
                    let c = cosine(v, &local[i]);
                    assert!(c >= 0.999, "cut {cut} {enc:?} picture {i}: {c}");
                    worst = worst.min(c);
                }
            }
        }
    }
    println!("CLIP split, f16 or int8 on the wire: worst cosine to the local run {worst:.6}");
    // Refusals: a cut past the tower, a text request to a CLIP server, a wrong row width.
    assert!(s
        .run_device_part_images(&images, n, Encoding::F32, 1)
        .is_err());
    let mut bad = s
        .run_device_part_images(&images, 2, Encoding::F32, 1)
        .unwrap();
    bad.activation.width += 1;
    let e = s.run_server_part(&bad).unwrap_err().to_string();
    assert!(e.contains("rows of"), "{e}");
    let mut bad = s
        .run_device_part_images(&images, 2, Encoding::F32, 1)
        .unwrap();
    bad.activation.data.truncate(10);
    assert!(s.run_server_part(&bad).is_err());
    let e = s
        .run_device_part(&["a photo of a cat"], 1, Encoding::F32, 1)
        .unwrap_err();
    assert!(e.to_string().contains("CLIP"), "{e}");
    // No profile of the image tower yet: said, not a BERT error.
    let e = s.time_stages(16).unwrap_err().to_string();
    assert!(e.contains("CLIP's image tower is not profiled"), "{e}");
}

//! Stages on the real decoder (issue 10): SmolLM2 run as two layer ranges with two KV-cache
//! halves gives the one-range logits bit for bit, prompt and decode steps alike.

use std::sync::Arc;

use edgecut_backends::{Device, DeviceKind};
use edgecut_format::GgufFile;
use edgecut_models::{Decoder, Logits};
use edgecut_tests::smollm_gguf;

#[test]
fn smollm2_as_two_stage_ranges_with_two_cache_halves_equals_one_range() {
    let file = Arc::new(GgufFile::open(smollm_gguf()).unwrap());
    let dev = Device::open(DeviceKind::Cpu, 0).unwrap();
    let m = Decoder::load(file, &dev).unwrap();
    let (layers, h) = (m.config.layers, m.config.hidden);
    assert_eq!(layers, 30);
    let stages = m.stages();
    assert_eq!(stages.len(), layers + 2);
    // A cut after the embeddings and 12 blocks: the device holds layers 0..12.
    let cut = 13;
    let (lo, hi) = (stages.device_blocks(cut), stages.server_blocks(cut));
    assert_eq!((lo.clone(), hi.clone()), (0..12, 12..30));
    let mut whole = m.new_cache(64).unwrap();
    let mut dev_half = m.new_cache_for(lo, 64).unwrap();
    let mut srv_half = m.new_cache_for(hi, 64).unwrap();
    let prompt: Vec<u32> = vec![1, 504, 3458, 282, 4649, 314, 253, 1789, 30];
    let want = m.forward(&mut whole, &prompt, Logits::Last).unwrap();
    let x = m.blocks(&mut dev_half, m.embed(&prompt).unwrap()).unwrap();
    let x = m.blocks(&mut srv_half, x).unwrap();
    assert_eq!(m.head(&x[x.len() - h..]).unwrap(), want, "prompt");
    let mut next = edgecut_models::sampling::argmax(&want);
    for step in 0..4 {
        let want = m.forward(&mut whole, &[next], Logits::Last).unwrap();
        let x = m.blocks(&mut dev_half, m.embed(&[next]).unwrap()).unwrap();
        let x = m.blocks(&mut srv_half, x).unwrap();
        assert_eq!(m.head(&x).unwrap(), want, "decode step {step}");
        next = edgecut_models::sampling::argmax(&want);
    }
}

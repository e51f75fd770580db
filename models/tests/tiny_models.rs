//! Model-level tests on tiny random models the tests write themselves (no checkpoint needed):
//! the CPU's fused encoder blocks equal the contract's op-by-op default bit for bit at 1, 2 and
//! 3 threads; a model run as two stage ranges equals the one-range run (BERT blocks; Llama
//! with two KV-cache halves); prefill and token-by-token decoding agree.

mod common;

use edgecut_backends::{Device, DeviceKind};
use edgecut_models::bert::Encoder;
use edgecut_models::{Decoder, Logits};

use common::{tiny_bert, tiny_llama, Rng, BERT, LLAMA};

fn cpu(threads: usize) -> Device {
    Device::open(DeviceKind::Cpu, threads).unwrap()
}

/// Two texts of 40 and 33 tokens: 80 padded rows, past the 64 from which row tasks run.
fn texts() -> Vec<Vec<u32>> {
    let mut r = Rng(5);
    let mut id = || ((r.f32() + 1.0) * 49.0) as u32 % 100;
    vec![
        (0..40).map(|_| id()).collect(),
        (0..33).map(|_| id()).collect(),
    ]
}

#[test]
fn fused_encoder_blocks_equal_the_op_by_op_default_at_1_2_and_3_threads() {
    let file = tiny_bert(1);
    // One thread runs the contract's default, op by op; several threads run the CPU's row
    // tasks (80 rows).
    let one = Encoder::load(file.clone(), &cpu(1)).unwrap();
    let want = one.encode(&texts()).unwrap();
    assert!(want.hidden.iter().all(|v| v.is_finite()));
    for threads in [2, 3] {
        let m = Encoder::load(file.clone(), &cpu(threads)).unwrap();
        let got = m.encode(&texts()).unwrap();
        assert_eq!(got.hidden, want.hidden, "{threads} threads");
    }
    // And the tests can tell models apart: another seed gives other values.
    let other = Encoder::load(tiny_bert(2), &cpu(1)).unwrap();
    assert_ne!(other.encode(&texts()).unwrap().hidden, want.hidden);
}

#[test]
fn bert_as_two_stage_ranges_equals_one_range() {
    let (_, _, layers, _) = BERT;
    let m = Encoder::load(tiny_bert(3), &cpu(2)).unwrap();
    let whole = m.encode(&texts()).unwrap();
    for cut in 0..=layers {
        let mut a = m.embeddings(&texts()).unwrap();
        m.blocks(0..cut, &mut a).unwrap();
        m.blocks(cut..layers, &mut a).unwrap();
        assert_eq!(a.hidden, whole.hidden, "cut after block {cut}");
    }
    // The head works on either, and a range past the model is refused.
    assert_eq!(m.classify(&whole).unwrap().len(), 2 * 3);
    let mut a = m.embeddings(&texts()).unwrap();
    assert!(m.blocks(0..layers + 1, &mut a).is_err());
}

fn ids(n: usize, seed: u64) -> Vec<u32> {
    let mut r = Rng(seed);
    (0..n)
        .map(|_| ((r.f32() + 1.0) * 60.0) as u32 % 120)
        .collect()
}

#[test]
fn llama_as_two_stage_ranges_with_two_cache_halves_equals_one_range() {
    let (h, _, _, layers, _) = LLAMA;
    let m = Decoder::load(tiny_llama(4), &cpu(2)).unwrap();
    let prompt = ids(12, 9);
    let mut whole = m.new_cache(32).unwrap();
    let mut lo = m.new_cache_for(0..2, 32).unwrap();
    let mut hi = m.new_cache_for(2..layers, 32).unwrap();
    assert_eq!(lo.bytes() + hi.bytes(), whole.bytes());
    let want = m.forward(&mut whole, &prompt, Logits::All).unwrap();
    let x = m.blocks(&mut lo, m.embed(&prompt).unwrap()).unwrap();
    let x = m.blocks(&mut hi, x).unwrap();
    assert_eq!(m.head(&x).unwrap(), want, "prefill");
    // Then token by token, each half keeping its own cache.
    for (step, &id) in ids(4, 11).iter().enumerate() {
        let want = m.forward(&mut whole, &[id], Logits::Last).unwrap();
        let x = m.blocks(&mut lo, m.embed(&[id]).unwrap()).unwrap();
        let x = m.blocks(&mut hi, x).unwrap();
        assert_eq!(m.head(&x[x.len() - h..]).unwrap(), want, "step {step}");
    }
    assert_eq!((lo.len(), hi.len(), whole.len()), (16, 16, 16));
    // A half cannot run the whole model, and caches do not cross models (not even a model
    // loaded from the same file).
    assert!(m.forward(&mut lo, &[1], Logits::Last).is_err());
    let other = Decoder::load(tiny_llama(4), &cpu(2)).unwrap();
    let mut foreign = other.new_cache_for(0..2, 32).unwrap();
    let err = m.blocks(&mut foreign, m.embed(&[1]).unwrap()).unwrap_err();
    assert!(err.to_string().contains("another model"), "{err}");
    assert!(foreign.is_empty());
}

#[test]
fn llama_prefill_agrees_with_token_by_token_decoding() {
    let m = Decoder::load(tiny_llama(6), &cpu(1)).unwrap();
    let prompt = ids(10, 13);
    let mut a = m.new_cache(16).unwrap();
    let all = m.forward(&mut a, &prompt, Logits::All).unwrap();
    let mut b = m.new_cache(16).unwrap();
    let vocab = m.config.vocab;
    for (i, &id) in prompt.iter().enumerate() {
        let one = m.forward(&mut b, &[id], Logits::Last).unwrap();
        let row = &all[i * vocab..(i + 1) * vocab];
        // Different row counts take different f32 product kernels (few rows: int16
        // activations): the same math, not the same roundings.
        let scale = row.iter().fold(0f32, |s, v| s.max(v.abs()));
        for (x, y) in one.iter().zip(row) {
            assert!(
                (x - y).abs() <= 2e-2 * scale.max(1.0),
                "position {i}: {x} vs {y}"
            );
        }
    }
    // The context is enforced with a typed error.
    let err = m.forward(&mut b, &ids(7, 1), Logits::Last).unwrap_err();
    assert!(
        matches!(
            err,
            edgecut_models::ModelError::ContextFull {
                tokens: 7,
                used: 10,
                capacity: 16
            }
        ),
        "{err}"
    );
}

/// Greedy decoding's step chooses on the backend what the largest of `forward`'s logits is,
/// and fails as `forward` does, leaving the cache as it was.
#[test]
fn llama_greedy_step_equals_the_argmax_of_the_logits() {
    let m = Decoder::load(tiny_llama(7), &cpu(2)).unwrap();
    let (mut a, mut b) = (m.new_cache(16).unwrap(), m.new_cache(16).unwrap());
    let prompt = ids(9, 2);
    m.forward(&mut a, &prompt, Logits::Last).unwrap();
    m.forward(&mut b, &prompt, Logits::Last).unwrap();
    let mut t = 5;
    for _ in 0..6 {
        let logits = m.forward(&mut a, &[t], Logits::Last).unwrap();
        let want = edgecut_models::sampling::argmax(&logits);
        let got = m.forward_greedy(&mut b, t).unwrap();
        assert_eq!(got, want);
        t = got;
    }
    assert_eq!(b.len(), 15);
    let vocab = m.config.vocab as u32;
    assert!(
        m.forward_greedy(&mut b, vocab).is_err(),
        "an id past the vocabulary"
    );
    m.forward_greedy(&mut b, 1).unwrap();
    assert!(matches!(
        m.forward_greedy(&mut b, 1),
        Err(edgecut_models::ModelError::ContextFull { .. })
    ));
    assert_eq!(b.len(), 16);
    let mut half = m.new_cache_for(0..2, 16).unwrap();
    assert!(
        m.forward_greedy(&mut half, 1).is_err(),
        "a cache of some layers"
    );
}

/// The tiny Llama on the GPU (wgpu: lavapipe without a GPU) against the scalar CPU backend
/// (f32 products): prefill logits, then decode steps, within 1e-4 of the largest logit; greedy
/// choices equal. Two conversations in one step (`forward_many`) as well.
#[cfg(feature = "wgpu")]
#[test]
fn llama_on_wgpu_matches_the_scalar_cpu() {
    use edgecut_backends::cpu::{kernels, CpuBackend};
    let scalar = Device::Cpu(CpuBackend::with_kernels(kernels::SCALAR, 1));
    let gpu = Device::open(DeviceKind::Wgpu, 1).unwrap_or_else(|e| panic!("{e}"));
    let (c, g) = (
        Decoder::load(tiny_llama(8), &scalar).unwrap(),
        Decoder::load(tiny_llama(8), &gpu).unwrap(),
    );
    let vocab = c.config.vocab;
    let close = |what: &str, got: &[f32], want: &[f32]| {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(1f32, |s, v| s.max(v.abs()));
        for (i, (x, y)) in got.iter().zip(want).enumerate() {
            assert!((x - y).abs() <= 1e-4 * scale, "{what} [{i}]: {x} vs {y}");
        }
        let argmax = |v: &[f32]| {
            v.chunks(vocab)
                .map(|r| (0..r.len()).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(argmax(got), argmax(want), "{what}: greedy choices");
    };
    let (mut cc, mut gc) = (c.new_cache(48).unwrap(), g.new_cache(48).unwrap());
    let prompt = ids(21, 3);
    close(
        "prefill",
        &g.forward(&mut gc, &prompt, Logits::All).unwrap(),
        &c.forward(&mut cc, &prompt, Logits::All).unwrap(),
    );
    for (step, &id) in ids(6, 4).iter().enumerate() {
        close(
            &format!("step {step}"),
            &g.forward(&mut gc, &[id], Logits::Last).unwrap(),
            &c.forward(&mut cc, &[id], Logits::Last).unwrap(),
        );
    }
    // Greedy steps chosen on the GPU, as on the CPU.
    let (mut ga, mut ca) = (g.new_cache(48).unwrap(), c.new_cache(48).unwrap());
    g.forward(&mut ga, &prompt, Logits::Last).unwrap();
    c.forward(&mut ca, &prompt, Logits::Last).unwrap();
    let mut t = 3;
    for _ in 0..5 {
        let next = g.forward_greedy(&mut ga, t).unwrap();
        assert_eq!(
            next,
            c.forward_greedy(&mut ca, t).unwrap(),
            "greedy step on the GPU"
        );
        t = next;
    }
    assert_eq!(gc.len(), cc.len());
    // Two conversations in one step (a new one's prompt and the first's next token).
    let (mut c2, mut g2) = (c.new_cache(48).unwrap(), g.new_cache(48).unwrap());
    let two = |m: &Decoder, a: &mut edgecut_models::KvCache, b: &mut edgecut_models::KvCache| {
        let xs = vec![m.embed(&[7]).unwrap(), m.embed(&ids(5, 6)).unwrap()];
        let ys = m.blocks_many(&mut [a, b], xs).unwrap();
        ys.iter()
            .flat_map(|y| m.head(y).unwrap())
            .collect::<Vec<f32>>()
    };
    close(
        "two conversations",
        &two(&g, &mut gc, &mut g2),
        &two(&c, &mut cc, &mut c2),
    );
}

/// Host-device transfers of one decode step of 8 conversations through every block
/// (`blocks_many`): the embeddings go up once and the hidden states come down once; nothing
/// crosses inside a block. (At 5efa12a the batched block downloaded q, k and v each layer and
/// uploaded them again per conversation: 36 transfers a layer, 146 for this model's 4 blocks.)
fn transfers_per_decode_step_of_8(dev: &Device) -> u64 {
    let (_, _, _, layers, _) = LLAMA;
    let m = Decoder::load(tiny_llama(9), dev).unwrap();
    let mut caches: Vec<_> = (0..8).map(|_| m.new_cache(32).unwrap()).collect();
    for (i, c) in caches.iter_mut().enumerate() {
        m.forward(c, &ids(3 + i, i as u64), Logits::Last).unwrap();
    }
    let xs: Vec<Vec<f32>> = (0..8).map(|i| m.embed(&[i as u32 + 1]).unwrap()).collect();
    let before = dev.transfers();
    let mut refs: Vec<&mut edgecut_models::KvCache> = caches.iter_mut().collect();
    let out = m.blocks_many(&mut refs, xs).unwrap();
    let n = dev.transfers() - before;
    assert_eq!(out.len(), 8);
    assert!(caches.iter().all(|c| c.len() > 3));
    println!("{dev}: {n} transfers for a decode step of 8 conversations through {layers} blocks");
    n
}

#[test]
fn a_decode_step_of_8_conversations_transfers_only_its_input_and_output() {
    assert_eq!(transfers_per_decode_step_of_8(&cpu(2)), 2);
}

#[cfg(feature = "wgpu")]
#[test]
fn on_wgpu_a_decode_step_of_8_conversations_transfers_only_its_input_and_output() {
    let gpu = Device::open(DeviceKind::Wgpu, 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(transfers_per_decode_step_of_8(&gpu), 2);
}

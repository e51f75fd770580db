//! Issue 10: an embedder and an LLM opened on one shared device use one thread pool; opened
//! apart, each brings its own. Its own test binary with one test, so no other test's threads
//! are counted.

use edgecut::{DeviceKind, Llm, LlmOptions, Session, SessionOptions, SharedDevice, WeightType};
use edgecut_tests::{minilm, smollm_gguf};

/// Threads of this process now.
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn an_embedder_and_an_llm_on_one_shared_device_use_one_pool() {
    let (enc_path, dec_path) = (minilm(WeightType::Q8_0), smollm_gguf());
    let t0 = threads();
    let shared = SharedDevice::open(DeviceKind::Cpu, 3).unwrap();
    // Three threads a pool: the caller and two workers.
    assert_eq!(threads(), t0 + 2);
    let enc = SessionOptions::default().with_shared_device(shared.clone());
    let dec = LlmOptions::default().with_shared_device(shared.clone());
    let embedder = Session::open(&enc_path, &enc).unwrap();
    let llm = Llm::open(&dec_path, &dec).unwrap();
    assert_eq!(threads(), t0 + 2, "no pool beyond the shared one");
    // Both run, on the shared pool.
    assert_eq!(embedder.embed(&["a text"]).unwrap().vectors.len(), 1);
    let g = llm
        .generate(
            "Hello",
            &edgecut::GenerateOptions::default().with_max_tokens(3),
            &mut |_| true,
        )
        .unwrap();
    assert!(!g.tokens.is_empty());
    assert!(
        embedder.device().contains("3 threads"),
        "{}",
        embedder.device()
    );
    assert_eq!(threads(), t0 + 2);
    // Opened apart, each model brings a pool of its own.
    let apart = Session::open(
        &enc_path,
        &SessionOptions::default()
            .with_device(DeviceKind::Cpu)
            .with_threads(3),
    )
    .unwrap();
    let llm2 = Llm::open(&dec_path, &LlmOptions::default().with_threads(3)).unwrap();
    assert_eq!(threads(), t0 + 6);
    drop((apart, llm2));
    assert_eq!(threads(), t0 + 2, "their pools end with them");
}

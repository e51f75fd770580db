//! `mobile/examples/embed.c`, built with the system C compiler against the static library and
//! run on MiniLM: it prints the similarity the Rust API gives (to 1e-4).

use std::path::PathBuf;
use std::process::Command;

use edgecut::{cosine, Session, WeightType};
use edgecut_tests::{minilm, scratch};

/// This crate's static library: `cargo test` writes it beside the test executable
/// (`target/<profile>/deps`), `cargo build` one level up.
fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    [deps, deps.parent().unwrap()]
        .iter()
        .map(|d| d.join("libedgecut_mobile.a"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no libedgecut_mobile.a near {}", exe.display()))
}

#[test]
fn c_example_prints_the_same_similarity_as_the_rust_api() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let lib = static_lib();
    let exe = scratch().join(format!("embed-example-{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&cc)
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(format!("{dir}/include"))
        .arg(format!("{dir}/examples/embed.c"))
        .arg(&lib)
        .args(["-lm", "-lpthread", "-ldl", "-o"])
        .arg(&exe)
        .status()
        .expect("run the C compiler");
    assert!(st.success(), "{cc} failed to build examples/embed.c");
    let m = minilm(WeightType::Q8_0);
    let (a, b) = ("A man is eating food.", "A man is riding a horse.");
    let out = Command::new(&exe).arg(&m).args([a, b]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().nth(1).expect("a similarity line");
    let printed: f32 = line.split('\t').next().unwrap().parse().unwrap();
    let s = Session::open(&m, &Default::default()).unwrap();
    let e = s.embed(&[a, b]).unwrap();
    let want = cosine(&e.vectors[0], &e.vectors[1]);
    assert!(
        (printed - want).abs() <= 1e-4,
        "C printed {printed}, Rust gives {want}"
    );
    // Misuse from C's side: a missing file is a status and a message, not a crash.
    let out = Command::new(&exe)
        .arg("/nonexistent.gguf")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonexistent"));
    std::fs::remove_file(&exe).ok();
}

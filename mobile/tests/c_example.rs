//! The C examples, built with the system C compiler against the static library and run on
//! MiniLM: `embed.c` prints the similarity the Rust API gives (to 1e-4); `split.c` embeds
//! through a real `edgecut serve` on loopback and falls back to the device when it is gone.

use std::path::{Path, PathBuf};
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

/// Builds `examples/{name}.c` against the static library.
fn build_example(name: &str) -> PathBuf {
    let dir = env!("CARGO_MANIFEST_DIR");
    let exe = scratch().join(format!("{name}-example-{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&cc)
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(format!("{dir}/include"))
        .arg(format!("{dir}/examples/{name}.c"))
        .arg(static_lib())
        .args(["-lm", "-lpthread", "-ldl", "-o"])
        .arg(&exe)
        .status()
        .expect("run the C compiler");
    assert!(st.success(), "{cc} failed to build examples/{name}.c");
    exe
}

#[test]
fn c_example_prints_the_same_similarity_as_the_rust_api() {
    let exe = build_example("embed");
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

fn serve(model: &Path) -> (std::process::Child, String) {
    edgecut_tests::serve_model(model)
}

/// Issue 10: split embedding from C, through a real server on loopback, and the fallback.
#[test]
fn c_split_example_embeds_through_a_server_and_falls_back_without_it() {
    let exe = build_example("split");
    let m = minilm(WeightType::Q8_0);
    let text = "A man is eating food.";
    let run = |addr: &str, cut: &str, enc: &str| {
        let out = Command::new(&exe)
            .arg(&m)
            .args([addr, cut, enc, text])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = String::from_utf8(out.stdout).unwrap();
        let diff: f64 = s
            .lines()
            .find_map(|l| l.strip_prefix("max |split - local| = "))
            .expect("a difference line")
            .parse()
            .unwrap();
        (s, diff)
    };
    let (mut server, addr) = serve(&m);
    // f32 on the wire: exactly the local result; int8: close to it.
    let (out, diff) = run(&addr, "3", "f32");
    assert!(out.starts_with("split\n"), "{out}");
    assert_eq!(diff, 0.0, "{out}");
    let (out, diff) = run(&addr, "0", "int8");
    assert!(out.starts_with("split\n"), "{out}");
    assert_eq!(diff, 0.0, "cut 0 sends token ids: {out}");
    let (out, diff) = run(&addr, "4", "int8");
    assert!(out.starts_with("split\n"), "{out}");
    assert!(diff > 0.0 && diff < 0.02, "{out}");
    // The server goes away: the device embeds alone, and says why.
    let _ = server.kill();
    let _ = server.wait();
    let (out, diff) = run(&addr, "3", "int8");
    assert!(out.starts_with("fell back: "), "{out}");
    assert!(out.contains(&addr) || out.contains("refused"), "{out}");
    assert_eq!(diff, 0.0, "{out}");
    std::fs::remove_file(&exe).ok();
}

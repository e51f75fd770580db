//! `edgecut serve --device wgpu` as a real process (lavapipe on a machine without a GPU): the
//! server's blocks on the GPU answer encoder splits and decoder splits with what the CPU server
//! answers. Run with the `wgpu` feature (`scripts/test.sh` does).
#![cfg(feature = "wgpu")]

use std::process::{Child, Command};

use edgecut::{cosine, Session, WeightType};
use edgecut_server::{ClientConfig, SplitClient};
use edgecut_tests::{minilm, scratch, smollm_gguf};

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The token every server here is started with.
fn token_file() -> std::path::PathBuf {
    let tok = scratch().join(format!("token-gpu-{}", std::process::id()));
    std::fs::write(&tok, "s3cret\n").unwrap();
    tok
}

fn start(model: &std::path::Path, device: &str) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgecut"));
    cmd.args(["serve", "-m"])
        .arg(model)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--device",
            device,
            "--token-file",
        ])
        .arg(token_file());
    let (child, addr) = edgecut_tests::spawn_serve(cmd);
    Server { child, addr }
}

/// Encoder splits at three cuts, f32 on the wire: the wgpu server's vectors against the CPU
/// backend's (attention in f32, as the GPU computes it), within the GPU's MiniLM bound.
#[test]
fn a_wgpu_server_answers_encoder_splits_as_the_cpu_backend() {
    let m = minilm(WeightType::Q8_0);
    let gpu = start(&m, "wgpu");
    let opts = edgecut::SessionOptions::default().with_attention(edgecut::AttentionPrecision::F32);
    let s = Session::open(&m, &opts).unwrap();
    let texts = ["A man is eating food.", "A man is riding a horse.", "hi"];
    let local = s.embed(&texts).unwrap().vectors;
    let mut worst = 1f32;
    for cut in [1, s.stage_count() / 2, s.stage_count() - 1] {
        let cfg = ClientConfig {
            server: gpu.addr.clone(),
            token: b"s3cret".to_vec(),
            cut,
            encoding: edgecut_wire::Encoding::F32,
            timeout: std::time::Duration::from_secs(60),
            tls: None,
            auto: None,
        };
        let out = SplitClient::new(&s, cfg).embed(&texts).unwrap();
        assert_eq!(out.fell_back, None, "cut {cut} split");
        for (g, l) in out.vectors.iter().zip(&local) {
            let cos = cosine(g, l);
            // The GPU's bound against the CPU backend for MiniLM (gpu_minilm.rs).
            assert!(cos >= 0.9998, "cut {cut}: cosine {cos}");
            worst = worst.min(cos);
        }
    }
    println!("wgpu server against the CPU backend, encoder splits: worst cosine {worst:.6}");
}

/// `edgecut generate --server` with greedy tokens: the device runs the first blocks on the CPU,
/// the server the rest on wgpu; f32 hidden states on the wire.
#[test]
fn a_wgpu_server_answers_decoder_splits_as_the_cpu_server() {
    let m = smollm_gguf();
    let (gpu, cpu) = (start(&m, "wgpu"), start(&m, "cpu"));
    let tok = token_file();
    let generate = |addr: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_edgecut"))
            .args([
                "generate",
                "-m",
                m.to_str().unwrap(),
                "-n",
                "12",
                "--temp",
                "0",
            ])
            .args([
                "--device",
                "cpu",
                "--server",
                addr,
                "--cut",
                "10",
                "--encoding",
                "f32",
            ])
            .arg("--token-file")
            .arg(&tok)
            .arg("The capital of France is")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        assert!(!err.contains("finished on the device"), "fell back: {err}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let (g, c) = (generate(&gpu.addr), generate(&cpu.addr));
    println!("wgpu server: {g:?}\nCPU server:  {c:?}");
    assert!(!g.trim().is_empty());
    assert_eq!(
        g, c,
        "greedy text through a wgpu server and through a CPU server"
    );
}

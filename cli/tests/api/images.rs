//! Pictures over HTTP and on the command line with a tiny CLIP model: `/v1/embeddings` taking
//! `{"image": data URL}` items beside texts (vectors as the facade computes them, in input
//! order), hostile pictures refused as 400s naming their input while the server keeps serving,
//! a text-only model refusing pictures; `edgecut embed --image` and `edgecut similarity
//! --image` against the facade.

use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use edgecut::{Session, SessionOptions, WeightType};
use edgecut_tests::{cli_exe, converted, http, minilm, repo_root, spawn_http_api};
use serde_json::{json, Value};

use super::Server;

fn clip() -> PathBuf {
    converted(
        &repo_root().join("tests/fixtures/clip-tiny"),
        "clip-tiny",
        WeightType::F32,
    )
}

fn picture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/clip-images").join(name)
}

fn data_url(path: &PathBuf, media: &str) -> String {
    let b = std::fs::read(path).unwrap();
    format!(
        "data:{media};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(b)
    )
}

fn vectors(reply: &Value) -> Vec<Vec<f32>> {
    reply["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

/// The name a model file is served under.
fn stem(p: &std::path::Path) -> String {
    p.file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".gguf")
        .to_string()
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
}

#[test]
fn pictures_and_texts_embed_over_http_as_the_facade_does_and_hostile_ones_are_400s() {
    let mut cmd = Command::new(cli_exe());
    cmd.args(["serve", "--http", "127.0.0.1:0", "--device", "cpu", "-m"])
        .arg(clip())
        .arg("-m")
        .arg(minilm(WeightType::Q8_0));
    let (child, url, log) = spawn_http_api(cmd);
    let s = Server { child, url, log };
    let (png, jpg) = (picture("02-coffee.png"), picture("03-chelsea.jpg"));
    let facade = Session::open(clip(), &SessionOptions::default()).unwrap();
    let want_images = facade
        .embed_images(&[&std::fs::read(&png).unwrap(), &std::fs::read(&jpg).unwrap()])
        .unwrap();
    let want_text = facade.embed(&["a cup of coffee"]).unwrap().vectors;
    let model = stem(&clip());
    let body = json!({
        "model": model,
        "input": [
            {"image": data_url(&png, "image/png")},
            "a cup of coffee",
            {"image": data_url(&jpg, "image/jpeg")},
        ],
    });
    let r = http(
        &format!("{}/v1/embeddings", s.url),
        None,
        Some(&body.to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let got = vectors(&r.json());
    assert_eq!(got.len(), 3);
    assert!(close(&got[0], &want_images[0]), "picture 0");
    assert!(close(&got[1], &want_text[0]), "the text between");
    assert!(close(&got[2], &want_images[1]), "picture 1");
    // Hostile inputs: each a 400 naming the input, and the server still answers after.
    let truncated = {
        let b = std::fs::read(&png).unwrap();
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&b[..b.len() / 2])
        )
    };
    for (item, says) in [
        (
            json!({"image": truncated}),
            "input 1: cannot decode the PNG image",
        ),
        (
            json!({"image": "data:image/png;base64,"}),
            "input 1: the image is empty",
        ),
        (
            json!({"image": "https://example.com/a.png"}),
            "input 1: an image must be a data: URL",
        ),
        (
            json!({"image": "data:image/png;base64,@@@"}),
            "input 1: the data: URL's base64",
        ),
        (
            json!({"image": data_url(&png, "image/png"), "text": "x"}),
            "input 1: an object needs one",
        ),
        (
            json!({"image": format!("data:image/gif;base64,{}", base64::engine::general_purpose::STANDARD.encode(b"GIF89a\x01\x00\x01\x00"))}),
            "input 1: not a PNG or JPEG",
        ),
    ] {
        let body = json!({"model": model, "input": ["fine", item]});
        let r = http(
            &format!("{}/v1/embeddings", s.url),
            None,
            Some(&body.to_string()),
        );
        assert_eq!(r.status, 400, "{says}: {}", r.body);
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(says), "{msg} should say {says}");
        assert_eq!(http(&format!("{}/health", s.url), None, None).status, 200);
    }
    // A text model refuses pictures; the CLIP model still embeds after all that.
    let body = json!({"model": stem(&minilm(WeightType::Q8_0)), "input": [{"image": data_url(&png, "image/png")}]});
    let r = http(
        &format!("{}/v1/embeddings", s.url),
        None,
        Some(&body.to_string()),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("images need a CLIP model"), "{}", r.body);
    let body = json!({"model": model, "input": [{"text": "a cup of coffee"}]});
    let r = http(
        &format!("{}/v1/embeddings", s.url),
        None,
        Some(&body.to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(close(&vectors(&r.json())[0], &want_text[0]));
}

#[test]
fn embed_and_similarity_take_pictures_on_the_command_line() {
    let (png, jpg) = (picture("02-coffee.png"), picture("03-chelsea.jpg"));
    let out = Command::new(cli_exe())
        .args(["embed", "--device", "cpu", "-m"])
        .arg(clip())
        .arg("--image")
        .arg(&png)
        .arg("--image")
        .arg(&jpg)
        .arg("a cup of coffee")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<Vec<f32>> = serde_json::from_slice(&out.stdout).unwrap();
    let facade = Session::open(clip(), &SessionOptions::default()).unwrap();
    let want = facade
        .embed_images(&[&std::fs::read(&png).unwrap(), &std::fs::read(&jpg).unwrap()])
        .unwrap();
    assert_eq!(got.len(), 3);
    assert!(close(&got[0], &want[0]) && close(&got[1], &want[1]));
    assert!(close(
        &got[2],
        &facade.embed(&["a cup of coffee"]).unwrap().vectors[0]
    ));
    // Zero-shot: probability, cosine and label per line, as the facade scores them.
    let labels = ["a photo of a cat", "a photo of a dog", "a cup of coffee"];
    let out = Command::new(cli_exe())
        .args(["similarity", "--device", "cpu", "-m"])
        .arg(clip())
        .arg("--image")
        .arg(&jpg)
        .args(labels)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = facade
        .zero_shot(&std::fs::read(&jpg).unwrap(), &labels)
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 3, "{text}");
    let total: f32 = rows.iter().map(|r| r[0].parse::<f32>().unwrap()).sum();
    assert!((total - 1.0).abs() < 2e-3, "{text}");
    for (r, w) in rows.iter().zip(&want) {
        assert_eq!(r[2], w.label);
        assert!(
            (r[0].parse::<f32>().unwrap() - w.probability).abs() < 1e-4,
            "{text}"
        );
        assert!(
            (r[1].parse::<f32>().unwrap() - w.similarity).abs() < 1e-4,
            "{text}"
        );
    }
    // A picture that is not one: the file named, exit status 1.
    let out = Command::new(cli_exe())
        .args(["embed", "--device", "cpu", "-m"])
        .arg(clip())
        .arg("--image")
        .arg(repo_root().join("README.md"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("README.md: not a PNG or JPEG image"), "{err}");
}

#[test]
fn pictures_split_with_a_real_server_and_fall_back_when_it_dies() {
    let model = clip();
    let (mut server, addr) = edgecut_tests::serve_model(&model);
    let (png, jpg) = (picture("02-coffee.png"), picture("03-chelsea.jpg"));
    let bytes = [std::fs::read(&png).unwrap(), std::fs::read(&jpg).unwrap()];
    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let session = Session::open(&model, &SessionOptions::default()).unwrap();
    let local = session.embed_images(&refs).unwrap();
    let cfg = edgecut_server::ClientConfig {
        server: addr.clone(),
        token: Vec::new(),
        cut: 2,
        encoding: edgecut_wire::Encoding::F32,
        timeout: std::time::Duration::from_secs(10),
        tls: None,
        auto: None,
    };
    let mut client = edgecut_server::SplitClient::new(&session, cfg);
    let out = client.embed_images(&refs).unwrap();
    assert_eq!(out.fell_back, None);
    assert_eq!((out.cut, out.vectors.len()), (2, 2));
    assert!(out.sent_bytes > 0);
    assert_eq!(out.vectors, local, "f32 on the wire: the local vectors");
    // The CLI, split at cut 1 with int8 on the wire.
    let cli = Command::new(cli_exe())
        .args(["embed", "--device", "cpu", "-m"])
        .arg(&model)
        .args([
            "--server",
            &addr,
            "--cut",
            "1",
            "--encoding",
            "int8",
            "--image",
        ])
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(String::from_utf8_lossy(&cli.stderr).contains("split: cut 1"));
    let got: Vec<Vec<f32>> = serde_json::from_slice(&cli.stdout).unwrap();
    assert!(edgecut::cosine(&got[0], &local[0]) >= 0.999);
    // The server gone: the same vectors from the device, and the reason.
    server.kill().unwrap();
    server.wait().unwrap();
    let out = client.embed_images(&refs).unwrap();
    assert!(out.fell_back.is_some());
    assert_eq!(out.vectors, local);
    // A bad picture is the caller's error, not a fallback.
    let e = client.embed_images(&[&b"nope"[..]]).unwrap_err();
    assert!(matches!(e, edgecut::Error::Image { index: 0, .. }), "{e}");
}

//! Helpers for edgecut's integration tests: where the real models and the reference Python are,
//! and converted model files shared by the tests of one run.
//!
//! The real checkpoints come from `scripts/fetch-models.sh` (run by `.ci/run` and by the README's
//! test command). A test that needs them fails with a message saying how to fetch them rather
//! than passing silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use edgecut_models::convert::{convert, ConvertOptions, WeightType};

/// The model cache: `$EDGECUT_MODELS`, or `~/.cache/edgecut/models`.
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("EDGECUT_MODELS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/edgecut/models")
}

fn need(p: PathBuf) -> PathBuf {
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models.sh (or set EDGECUT_MODELS)",
        p.display()
    );
    p
}

/// The hub's Gemma 3 270M in Q4_K_M (llama.cpp's mix: Q4_K, Q6_K, Q5_0, Q8_0 and F32 tensors).
pub fn gemma3_q4_k_m() -> PathBuf {
    need(models_dir().join("gemma-3-270m-q4_k_m.gguf"))
}

/// The all-MiniLM-L6-v2 checkpoint directory.
pub fn minilm_dir() -> PathBuf {
    need(models_dir().join("all-MiniLM-L6-v2"))
}

/// The llama.cpp-made SmolLM2-135M-Instruct Q4_1 file.
pub fn smollm_gguf() -> PathBuf {
    need(models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf"))
}

/// The Python with the reference packages (`gguf`, numpy): `$EDGECUT_PYTHON`, or the venv that
/// `.ci/run` makes at `~/.cache/edgecut/venv`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGECUT_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    let p = Path::new(&home).join(".cache/edgecut/venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run .ci/run (or set EDGECUT_PYTHON)",
        p.display()
    );
    p
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The committed test certificates (`tests/fixtures/tls`): the server's certificate and key,
/// and the CA that signed it.
pub struct TlsFixture {
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The CA a client trusts (PEM).
    pub ca: PathBuf,
}

impl TlsFixture {
    /// The fixture's files.
    pub fn load() -> Self {
        let dir = repo_root().join("tests/fixtures/tls");
        TlsFixture {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            ca: dir.join("ca.pem"),
        }
    }

    /// `--tls-cert CERT --tls-key KEY`, for `edgecut serve`.
    pub fn serve_args(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.cert.to_str().expect("a UTF-8 path"),
            "--tls-key",
            self.key.to_str().expect("a UTF-8 path"),
        ]
    }
}

/// A scratch directory for this test run, under the target directory. Files in it carry the
/// process id after their first `-`; the first call in a process removes the files of processes
/// that have ended, so converted models do not pile up run after run.
pub fn scratch() -> PathBuf {
    static CLEANED: OnceLock<()> = OnceLock::new();
    let d = repo_root().join("target").join("test-scratch");
    std::fs::create_dir_all(&d).expect("create scratch dir");
    CLEANED.get_or_init(|| {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name
                .split(['-', '.'])
                .find_map(|part| part.parse::<u32>().ok());
            if let Some(pid) = pid {
                if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_file(entry.path())
                        .or_else(|_| std::fs::remove_dir_all(entry.path()));
                }
            }
        }
    });
    d
}

/// Converts `input` once per test run and returns the output path.
pub fn converted(input: &Path, tag: &str, weight_type: WeightType) -> PathBuf {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    let _g = LOCK
        .get_or_init(|| Mutex::new(()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let out = scratch().join(format!(
        "{tag}-{}-{:?}.gguf",
        std::process::id(),
        weight_type
    ));
    if !out.exists() {
        convert(input, &out, &ConvertOptions { weight_type }, &mut |_| {})
            .unwrap_or_else(|e| panic!("converting {}: {e}", input.display()));
    }
    out
}

/// The tiny seeded checkpoint of decoder `arch` (`qwen2`, `qwen3`, `llama3`: see
/// `tests/reference/make_decoder_fixtures.py`; `gemma3`: `make_gemma_fixtures.py`) converted
/// by edgecut with `weight_type`.
pub fn tiny_decoder(arch: &str, weight_type: WeightType) -> PathBuf {
    let dir = repo_root().join(format!("tests/fixtures/{arch}-tiny"));
    converted(&dir, &format!("{arch}-tiny"), weight_type)
}

/// qwen3-tiny with sentence-transformers' files for last-token pooling and normalisation
/// (Qwen3-Embedding's shape), assembled once per run in the scratch directory.
pub fn qwen3_embedder_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join(format!("qwen3-embed-tiny-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        let src = repo_root().join("tests/fixtures/qwen3-tiny");
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        let pooling = serde_json::json!({"word_embedding_dimension": 64,
            "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": false,
            "pooling_mode_lasttoken": true});
        std::fs::write(dir.join("1_Pooling/config.json"), pooling.to_string()).unwrap();
        let modules = serde_json::json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]);
        std::fs::write(dir.join("modules.json"), modules.to_string()).unwrap();
        dir
    })
    .clone()
}

/// qwen3-tiny with a chat template in Hermes' tool format (`tests/fixtures/hermes-tools.jinja`:
/// tools listed, calls in `<tool_call>` tags) and room for its tool prompts (2048 positions;
/// rope has no learned positions), assembled once per run and converted to F32.
pub fn qwen3_hermes_tools() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = scratch().join(format!("qwen3-hermes-tiny-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = repo_root().join("tests/fixtures/qwen3-tiny");
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        std::fs::copy(
            repo_root().join("tests/fixtures/hermes-tools.jinja"),
            dir.join("chat_template.jinja"),
        )
        .unwrap();
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        config["max_position_embeddings"] = 2048.into();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        dir
    });
    converted(dir, "qwen3-hermes", WeightType::F32)
}

/// MiniLM converted with `weight_type`.
pub fn minilm(weight_type: WeightType) -> PathBuf {
    converted(&minilm_dir(), "minilm", weight_type)
}

/// Runs a reference script with [`python`] and returns its stdout, failing loudly on error.
pub fn run_python(script: &str, args: &[&Path]) -> String {
    let out = Command::new(python())
        .arg(repo_root().join(script))
        .args(args)
        .output()
        .expect("start python");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A committed fixture file under `tests/fixtures`, parsed.
pub fn fixture(name: &str) -> serde_json::Value {
    let p = repo_root().join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A JSON array of numbers as f32.
pub fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// A JSON array of token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// The `edgecut` CLI built beside the running test binary (`cargo test --workspace` builds it),
/// for tests of crates that do not depend on the CLI.
pub fn cli_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a target directory");
    let cli = dir.join("edgecut");
    assert!(
        cli.exists(),
        "no {}: build the CLI first (cargo build --release -p edgecut-cli)",
        cli.display()
    );
    cli
}

/// The `n` greedy tokens `llm` generates after `prompt` (end of sequence ignored), from a fresh
/// context.
pub fn greedy(llm: &edgecut::Llm, prompt: &[u32], n: usize) -> Vec<u32> {
    let opts = edgecut::GenerateOptions::default()
        .with_max_tokens(n)
        .with_ignore_eos(true);
    llm.new_context()
        .unwrap()
        .generate(prompt, &opts, &mut |_| true)
        .unwrap()
        .tokens
}

/// `edgecut serve -m model` on the CPU, on a free loopback port: the process and its address.
pub fn serve_model(model: &Path) -> (std::process::Child, String) {
    let mut cmd = Command::new(cli_exe());
    cmd.args(["serve", "-m"])
        .arg(model)
        .args(["--listen", "127.0.0.1:0", "--device", "cpu"]);
    spawn_serve(cmd)
}

/// A metric's value from a Prometheus endpoint at `addr` (`None`: no such metric).
pub fn metric(addr: &str, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).ok()?;
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Starts `edgecut serve` as `cmd` describes it (listening on a free port, `127.0.0.1:0`) and
/// returns the process and the address it printed once listening. Its standard error is
/// drained in the background so the server never blocks on it.
pub fn spawn_serve(cmd: Command) -> (std::process::Child, String) {
    let (child, addr, _) = spawn_serve_logged(cmd);
    (child, addr)
}

/// [`spawn_serve`], also returning what the server has written to standard error so far
/// (the rest is appended as it comes).
pub fn spawn_serve_logged(
    cmd: Command,
) -> (std::process::Child, String, std::sync::Arc<Mutex<String>>) {
    spawn_logged(cmd, |whole| {
        let line = whole
            .lines()
            .find(|l| l.starts_with("serve:") && l.contains(" at "))?;
        Some(line.rsplit(" at ").next()?.trim().to_string())
    })
}

/// The metrics address (`--metrics`) a server wrote to its log on start.
pub fn metrics_address(log: &Mutex<String>) -> String {
    log.lock()
        .unwrap_or_else(|e| e.into_inner())
        .lines()
        .find_map(|l| l.strip_prefix("serve: metrics on http://"))
        .expect("the server printed its metrics address")
        .trim()
        .to_string()
}

/// `edgecut serve --http 127.0.0.1:0` as `cmd` describes it (the rest of its arguments
/// given): the process, the API's base URL once its models are loaded, and its log.
pub fn spawn_http_api(
    cmd: Command,
) -> (std::process::Child, String, std::sync::Arc<Mutex<String>>) {
    spawn_logged(cmd, |whole| {
        whole
            .lines()
            .find(|l| l.starts_with("serve: HTTP API ready"))?;
        let line = whole
            .lines()
            .find(|l| l.starts_with("serve: HTTP API on "))?;
        let url = line.strip_prefix("serve: HTTP API on ")?;
        Some(url.split(' ').next()?.to_string())
    })
}

/// Starts `cmd`, reads its standard error until `find` (given the whole lines so far) returns
/// the address, and drains the rest in the background.
fn spawn_logged(
    mut cmd: Command,
    find: impl Fn(&str) -> Option<String>,
) -> (std::process::Child, String, std::sync::Arc<Mutex<String>>) {
    use std::io::Read;
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start edgecut serve");
    let mut err = child.stderr.take().expect("piped stderr");
    let (mut buf, deadline) = (
        Vec::new(),
        std::time::Instant::now() + std::time::Duration::from_secs(60),
    );
    let addr = loop {
        let mut b = [0u8; 256];
        let n = err.read(&mut b).unwrap();
        assert!(
            n > 0 && std::time::Instant::now() < deadline,
            "serve did not start: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&b[..n]);
        let text = String::from_utf8_lossy(&buf);
        // Only whole lines: a read may end in the middle of one.
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        if let Some(addr) = find(whole) {
            break addr;
        }
    };
    let log = std::sync::Arc::new(Mutex::new(String::from_utf8_lossy(&buf).into_owned()));
    let l = log.clone();
    std::thread::spawn(move || {
        let mut b = [0u8; 1024];
        while let Ok(n) = err.read(&mut b) {
            if n == 0 {
                break;
            }
            l.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(&String::from_utf8_lossy(&b[..n]));
        }
    });
    (child, addr, log)
}

/// An HTTP answer: status, `Retry-After` if any, body.
#[derive(Debug)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The `Retry-After` header.
    pub retry_after: Option<String>,
    /// The body as text.
    pub body: String,
}

impl HttpReply {
    /// The body as JSON (panics, showing it, when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// An HTTP request with ureq: `body` JSON text (POST) or none (GET), `key` as a Bearer token.
pub fn http(url: &str, key: Option<&str>, body: Option<&str>) -> HttpReply {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(120)))
        .build()
        .into();
    let auth = key.map(|k| format!("Bearer {k}"));
    let r = match body {
        Some(b) => {
            let mut req = agent.post(url).header("content-type", "application/json");
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.send(b)
        }
        None => {
            let mut req = agent.get(url);
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.call()
        }
    };
    let mut r = r.unwrap_or_else(|e| panic!("{url}: {e}"));
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    HttpReply {
        status: r.status().as_u16(),
        retry_after,
        body: r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap_or_default(),
    }
}

/// A split request as the server would receive it: encoded to bytes and decoded again.
pub fn over_the_wire(f: edgecut_wire::Frame) -> edgecut_wire::Frame {
    use edgecut_wire::{decode_payload, encode_frame, parse_header, Limits};
    let bytes = encode_frame(&f).unwrap();
    let lim = Limits::default();
    let (ty, len) = parse_header(bytes[..16].try_into().unwrap(), &lim).unwrap();
    assert_eq!(len, bytes.len() - 16);
    decode_payload(ty, &bytes[16..], &lim).unwrap()
}

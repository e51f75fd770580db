//! `edgecut serve --http` as a real process on loopback, with real clients: the official
//! `openai` Python package (embeddings and chat against the CLI's own), ureq for the limits
//! (every refusal with its status and a clear message), a burst past the places (429 with
//! Retry-After, nothing hangs), a streaming client that leaves (its slot freed), and a
//! graceful shutdown that finishes the request in flight.

mod abuse;
mod errors;
mod images;
mod lifecycle;
mod openai;
mod qwen3;
mod retrieval;
mod security;
mod structured;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use edgecut_tests::{cli_exe, minilm, smollm_gguf, spawn_http_api};

/// The embedding model (MiniLM converted to Q8_0) and the chat model (SmolLM2 Q4_1).
pub fn models() -> (PathBuf, PathBuf) {
    (minilm(edgecut::WeightType::Q8_0), smollm_gguf())
}

/// The names the API serves them under.
pub fn names() -> (String, String) {
    let (e, g) = models();
    let name = |p: &PathBuf| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".gguf")
            .to_string()
    };
    (name(&e), name(&g))
}

/// A server process that is killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// The API's base URL.
    pub url: String,
    /// What it wrote to standard error.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `edgecut serve --http` on a free port with both models and `extra` flags.
pub fn serve(extra: &[&str]) -> Server {
    let (e, g) = models();
    let mut cmd = Command::new(cli_exe());
    cmd.args(["serve", "--http", "127.0.0.1:0", "--device", "cpu", "-m"])
        .arg(e)
        .arg("-m")
        .arg(g)
        .args(extra);
    let (child, url, log) = spawn_http_api(cmd);
    Server { child, url, log }
}

/// A server of one model file, and the model's name.
pub fn serve_one(path: &Path) -> (Server, String) {
    let mut cmd = Command::new(cli_exe());
    cmd.args(["serve", "--http", "127.0.0.1:0", "--device", "cpu", "-m"])
        .arg(path);
    let (child, url, log) = spawn_http_api(cmd);
    let name = path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".gguf")
        .to_string();
    (Server { child, url, log }, name)
}

//! Options shared by every command that runs a model, and reading texts.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::Context;
use edgecut::{AttentionPrecision, DeviceKind, Session, SessionOptions};

/// Where a model runs: the device and the threads of its ops.
#[derive(clap::Args, Clone, Copy)]
pub struct RunArgs {
    /// Device: cpu, wgpu (Vulkan/Metal/DX12, software adapters such as lavapipe included),
    /// cuda, or auto (CUDA, then a discrete GPU through wgpu, then the CPU). GPU devices need a
    /// build with `--features gpu` (or wgpu / cuda).
    #[arg(long, default_value = "auto")]
    pub device: DeviceKind,
    /// Threads (default: the cores this process may use; EDGECUT_THREADS also sets it).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

impl RunArgs {
    /// Opens `path` as whatever model it is (the file's architecture says) on this device.
    pub fn open_model(&self, path: &std::path::Path) -> edgecut::Result<edgecut::Model> {
        let enc = SessionOptions::default()
            .with_device(self.device)
            .with_threads(self.threads);
        let dec = edgecut::LlmOptions::default()
            .with_device(self.device)
            .with_threads(self.threads);
        edgecut::Model::open(path, &enc, &dec)
    }
}

/// How an encoder runs: where, in which batches, how long its inputs may be.
#[derive(clap::Args, Clone)]
pub struct EncoderArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Texts run together in one batch (1 runs each text alone).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Tokens per text before truncation (default: the model's).
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// Attention products in f32 on the CPU (by default they are bf16 where the CPU has
    /// AVX-512 BF16, at unchanged fidelity to PyTorch).
    #[arg(long)]
    pub f32_attention: bool,
}

impl EncoderArgs {
    /// The session options these arguments ask for.
    pub fn options(&self) -> SessionOptions {
        SessionOptions::default()
            .with_device(self.run.device)
            .with_threads(self.run.threads)
            .with_batch_size(self.batch_size)
            .with_max_seq_len(self.max_seq_len)
            .with_attention(if self.f32_attention {
                AttentionPrecision::F32
            } else {
                AttentionPrecision::Fast
            })
    }

    /// Opens `path` as a session, saying on standard error which device runs it when it was
    /// not named as the CPU.
    pub fn open(&self, path: &std::path::Path) -> anyhow::Result<Session> {
        let s = Session::open(path, &self.options())
            .with_context(|| format!("opening {}", path.display()))?;
        if self.run.device != DeviceKind::Cpu {
            eprintln!("device: {}", s.device());
        }
        Ok(s)
    }
}

/// Which model to run, where, and how.
#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// The model file (GGUF).
    #[arg(short, long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub enc: EncoderArgs,
}

impl ModelArgs {
    /// Opens the session ([`EncoderArgs::open`]).
    pub fn open(&self) -> anyhow::Result<Session> {
        self.enc.open(&self.model)
    }
}

/// The texts of the command line, or else one per line of standard input.
pub fn texts(args: &[String]) -> anyhow::Result<Vec<String>> {
    if !args.is_empty() {
        return Ok(args.to_vec());
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        anyhow::bail!("no texts given: pass them as arguments or one per line on standard input");
    }
    let lines = stdin
        .lock()
        .lines()
        .collect::<Result<Vec<_>, _>>()
        .context("reading standard input")?;
    if lines.is_empty() {
        anyhow::bail!("no texts given: standard input was empty");
    }
    Ok(lines)
}

/// Warns on stderr about truncated texts.
pub fn warn_truncated(t: &[edgecut::Truncated]) {
    for t in t {
        eprintln!(
            "warning: text {} has {} tokens; truncated to {} (see --max-seq-len)",
            t.index + 1,
            t.tokens,
            t.kept
        );
    }
}

//! `edgecut convert`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use edgecut::{convert, ConvertOptions, WeightType};
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `edgecut convert`.
#[derive(clap::Args)]
pub struct Args {
    /// A Hugging Face checkpoint directory (config.json, model.safetensors, tokenizer.json) or a
    /// GGUF file made by llama.cpp.
    input: PathBuf,
    /// The GGUF file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Type of matmul weights and embedding tables: q8_0, f16, f32, or q4_k_m (llama.cpp's mix:
    /// Q4_K, Q6_K for the head and some attn_v/ffn_down, Q5_0/Q8_0 where rows are not whole
    /// super-blocks of 256).
    #[arg(long = "type", default_value = "q8_0")]
    weight_type: WeightType,
}

/// Runs the conversion, with a progress bar when stderr is a terminal.
pub fn run(a: Args) -> anyhow::Result<()> {
    if !a.input.exists() {
        anyhow::bail!("{}: no such file or directory", a.input.display());
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b
    });
    let opts = ConvertOptions {
        weight_type: a.weight_type,
    };
    let started = std::time::Instant::now();
    let report = convert(&a.input, &a.output, &opts, &mut |p| {
        if let Some(b) = &bar {
            b.set_length(p.total as u64);
            b.set_position(p.done as u64);
            b.set_message(p.name.to_string());
        }
    })
    .with_context(|| format!("converting {}", a.input.display()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    eprintln!(
        "wrote {} ({}, {} tensors, {:.1} MB) in {:.2?}",
        a.output.display(),
        report.architecture,
        report.tensors,
        report.bytes as f64 / 1e6,
        started.elapsed()
    );
    Ok(())
}

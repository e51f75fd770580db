//! `edgecut profile`: measures each stage of an encoder on this machine at several sequence
//! lengths and writes a profile for `edgecut plan`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use edgecut::GgufFile;
use edgecut_backends::Device;
use edgecut_models::bert::Bert;
use edgecut_partition::{Graph, Profile, Sample, Tensor};
use edgecut_runtime::Tokenizer;

/// Arguments of `edgecut profile`.
#[derive(clap::Args)]
pub struct Args {
    /// The model file (a BERT-family encoder).
    #[arg(short, long)]
    model: PathBuf,
    #[command(flatten)]
    run: super::session::RunArgs,
    /// Sequence lengths to measure.
    #[arg(long, value_delimiter = ',', default_value = "16,64,128,512")]
    seq: Vec<usize>,
    /// Timed runs per length (after 3 untimed ones).
    #[arg(long, default_value_t = 30)]
    iters: usize,
    /// Where to write the profile (JSON).
    #[arg(short, long)]
    output: PathBuf,
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The encoder's stage chain: embeddings, blocks, head, with weight bytes from the file.
fn graph(f: &GgufFile, model: &Bert) -> Graph {
    let bytes = |pred: &dyn Fn(&str) -> bool| -> u64 {
        f.tensors()
            .iter()
            .filter(|t| pred(&t.name))
            .map(|t| t.size)
            .sum()
    };
    let h = model.cfg.hidden as u64;
    let tokens = Tensor {
        per_token: h,
        fixed: 0,
        side_bytes_per_token: 1,
    };
    let mut stages = vec![(
        "embeddings".to_string(),
        bytes(&|n| !n.starts_with("blk.") && !n.starts_with("cls")),
        tokens.clone(),
    )];
    for i in 0..model.cfg.layers {
        let prefix = format!("blk.{i}.");
        stages.push((
            format!("block {i}"),
            bytes(&|n| n.starts_with(&prefix)),
            tokens.clone(),
        ));
    }
    let out = model.n_classes().map_or(h, |c| c as u64);
    stages.push((
        "head".to_string(),
        bytes(&|n| n.starts_with("cls")),
        Tensor {
            per_token: 0,
            fixed: out,
            side_bytes_per_token: 0,
        },
    ));
    // Raw input: a u32 token id and a mask byte per token.
    Graph::chain(stages, 5)
}

fn stats(mut v: Vec<f64>) -> Sample {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Sample {
        median_ms: q(0.5),
        p10_ms: q(0.1),
        p90_ms: q(0.9),
    }
}

/// Runs `edgecut profile`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let file = Arc::new(
        GgufFile::open(&a.model).with_context(|| format!("opening {}", a.model.display()))?,
    );
    let dev = Device::open(a.run.device, a.run.threads).map_err(anyhow::Error::msg)?;
    let model = Bert::load(file.clone(), &dev)?;
    let tok = Tokenizer::from_gguf(&file)?;
    let mut seqs = a.seq.clone();
    seqs.sort_unstable();
    seqs.dedup();
    if let Some(&bad) = seqs.iter().find(|&&s| s < 2 || s > model.cfg.context) {
        anyhow::bail!(
            "--seq {bad} is outside 2..={} (the model's context)",
            model.cfg.context
        );
    }
    let n = model.cfg.layers + 2;
    let mut times: Vec<Vec<Sample>> = vec![Vec::new(); n];
    for &seq in &seqs {
        let ids = tok.encode(&"hello ".repeat(seq), true, Some(seq))?.ids;
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); n];
        for it in 0..a.iters.max(1) + 3 {
            let mut t = Instant::now();
            let mut lap = |i: usize, t: &mut Instant| {
                if it >= 3 {
                    samples[i].push(t.elapsed().as_secs_f64() * 1e3);
                }
                *t = Instant::now();
            };
            let mut act = model.embeddings(std::slice::from_ref(&ids))?;
            lap(0, &mut t);
            for b in 0..model.cfg.layers {
                model.block(b, &mut act)?;
                lap(b + 1, &mut t);
            }
            if model.n_classes().is_some() {
                model.classify(&act)?;
            } else {
                model.pool(&act)?;
            }
            lap(n - 1, &mut t);
        }
        for (row, s) in times.iter_mut().zip(samples) {
            row.push(stats(s));
        }
        let total: f64 = times
            .iter()
            .map(|r| r.last().map_or(0.0, |s| s.median_ms))
            .sum();
        eprintln!("profile: {seq} tokens: {total:.2} ms over {n} stages");
    }
    let profile = Profile {
        machine: format!("{dev} on {}", cpu_name()),
        model: a
            .model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        model_id: file.identity().to_string(),
        graph: graph(&file, &model),
        seqs,
        times,
    };
    profile.validate()?;
    std::fs::write(&a.output, serde_json::to_string_pretty(&profile)? + "\n")
        .with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!("wrote {}", a.output.display());
    Ok(())
}

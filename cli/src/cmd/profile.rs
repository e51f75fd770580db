//! `edgecut profile`: measures each stage of a model (encoder or decoder: the model lists its
//! stages) on this machine at several sequence lengths and writes a profile for `edgecut plan`.

use std::path::PathBuf;

use anyhow::Context;
use edgecut_partition::{Graph, Profile, Sample, Tensor};

/// Arguments of `edgecut profile`.
#[derive(clap::Args)]
pub struct Args {
    /// The model file (an encoder or a decoder).
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

/// The model's own stage chain, as the planner reads it.
fn graph(g: &edgecut::StageGraph) -> Graph {
    let stages = g
        .stages
        .iter()
        .map(|s| {
            let o = s.output;
            let out = Tensor {
                per_token: o.per_token,
                fixed: o.fixed,
                side_bytes_per_token: o.side_bytes_per_token,
            };
            (s.id.to_string(), s.weight_bytes, out)
        })
        .collect();
    let mut graph = Graph::chain(stages, g.input_bytes_per_token);
    for (p, s) in graph.stages.iter_mut().zip(&g.stages) {
        p.kv_bytes_per_token = s.kv_bytes_per_token;
        p.kv_positions = s.kv_positions;
    }
    graph
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
    let model = a
        .run
        .open_model(&a.model)
        .with_context(|| format!("opening {}", a.model.display()))?;
    let mut seqs = a.seq.clone();
    seqs.sort_unstable();
    seqs.dedup();
    let max = model.max_tokens();
    // A decoder's one-token time is its decode step (what `plan --decode` reads); an encoder
    // needs two tokens ([CLS] and [SEP]).
    let min = if matches!(model, edgecut::Model::Decoder(_)) {
        1
    } else {
        2
    };
    if let Some(&bad) = seqs.iter().find(|&&s| s < min || s > max) {
        anyhow::bail!("--seq {bad} is outside {min}..={max} (the model's limit)");
    }
    let stages = model.stages();
    let n = stages.len();
    let mut times: Vec<Vec<Sample>> = vec![Vec::new(); n];
    for &seq in &seqs {
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); n];
        for it in 0..a.iters.max(1) + 3 {
            let t = model.time_stages(seq)?;
            if it >= 3 {
                for (s, d) in samples.iter_mut().zip(t) {
                    s.push(d.as_secs_f64() * 1e3);
                }
            }
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
        machine: format!("{} on {}", model.device(), cpu_name()),
        model: a
            .model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        model_id: model.model_id().to_string(),
        graph: graph(&stages),
        seqs,
        times,
    };
    profile.validate()?;
    std::fs::write(&a.output, serde_json::to_string_pretty(&profile)? + "\n")
        .with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!("wrote {}", a.output.display());
    Ok(())
}

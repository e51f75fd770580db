//! Opening a model: time to open (map + parse header + make every tensor view, no tensor data
//! read) and resident memory as tensors are read.
//!
//! `EDGECUT_MODEL` names the file (default: the MiniLM Q8_0 file `scripts/demo.sh` writes to
//! `~/.cache/edgecut/models/all-MiniLM-L6-v2.q8_0.gguf`).
//! Run: `cargo bench -p edgecut-format --bench open`.

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, Criterion};
use edgecut_format::GgufFile;

fn model() -> PathBuf {
    std::env::var_os("EDGECUT_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/edgecut/models/all-MiniLM-L6-v2.q8_0.gguf")
        })
}

/// Resident set size of this process in KiB (Linux), or 0 elsewhere.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Opens the file and makes a view of every tensor, reading no tensor data.
fn open_all_views(path: &PathBuf) -> usize {
    let f = GgufFile::open(path).expect("open model");
    f.tensors().iter().map(|t| f.view(t).data.len()).sum()
}

fn rss_report(path: &PathBuf) {
    let before = rss_kib();
    let f = GgufFile::open(path).expect("open model");
    let views: Vec<_> = f.tensors().iter().map(|t| f.view(t)).collect();
    let opened = rss_kib();
    let sum_one: u64 = views[0].data.iter().map(|&b| b as u64).sum();
    let one = rss_kib();
    let sum_all: u64 = views
        .iter()
        .flat_map(|v| v.data.iter())
        .map(|&b| b as u64)
        .sum();
    let all = rss_kib();
    black_box((sum_one, sum_all));
    let mb = |k: u64| k as f64 / 1024.0;
    println!(
        "rss {}: file {:.1} MB; +{:.1} MB after open (all {} views made), +{:.1} MB after reading {} \
         ({:.1} MB), +{:.1} MB after reading every tensor",
        path.display(),
        f.file_len() as f64 / 1e6,
        mb(opened - before),
        views.len(),
        mb(one - before),
        views[0].info.name,
        views[0].data.len() as f64 / 1e6,
        mb(all - before),
    );
}

fn bench_open(c: &mut Criterion) {
    let path = model();
    c.bench_function("open_model_all_views", |b| {
        b.iter(|| black_box(open_all_views(&path)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = bench_open
}

fn main() {
    let path = model();
    assert!(
        path.exists(),
        "{} is missing: run scripts/demo.sh or set EDGECUT_MODEL",
        path.display()
    );
    rss_report(&path);
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}

//! `edgecut inspect`.

use std::path::PathBuf;

use edgecut_format::gguf::GgufFile;
use serde_json::json;

/// Arguments of `edgecut inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file.
    model: PathBuf,
    /// Print JSON for machines instead of tables.
    #[arg(long)]
    json: bool,
    /// Print every metadata key, not only the hyper-parameters.
    #[arg(long)]
    all: bool,
}

/// Prints the report.
pub fn run(a: Args) -> anyhow::Result<()> {
    let f = GgufFile::open(&a.model)?;
    let h = f.header();
    let arch = f.architecture().unwrap_or("unknown").to_string();
    let id = f.identity();
    let prefix = format!("{arch}.");
    if a.json {
        let mut out = edgecut::describe_file(&f);
        out["file"] = json!(a.model);
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "file          {} ({:.1} MB)",
        a.model.display(),
        f.file_len() as f64 / 1e6
    );
    println!(
        "format        GGUF v{}, alignment {}, data at byte {}",
        h.version, h.alignment, h.data_offset
    );
    println!("architecture  {arch}");
    if let Ok(n) = f.get_str("general.name") {
        println!("name          {n}");
    }
    println!("identity      {id}");
    println!("tokenizer     {}", edgecut_format::tokenizer::describe(&f));
    if let Ok(t) = f.get_str("tokenizer.chat_template") {
        println!("chat template yes ({} bytes)", t.len());
    }
    println!("\nhyper-parameters");
    for (k, v) in f.metadata() {
        if k.starts_with(&prefix) {
            println!("  {:<42} {v}", &k[prefix.len()..]);
        }
    }
    kv_lines(&f);
    println!(
        "\nmetadata ({} keys{})",
        f.metadata().len(),
        if a.all { "" } else { "; --all shows every key" }
    );
    for (k, v) in f.metadata() {
        if a.all || !(k.starts_with(&prefix) || k.starts_with("tokenizer.")) {
            println!("  {:<42} {:<7} {v}", k, v.value_type().name());
        }
    }
    let count = f.tensors().len() + f.unreadable().len();
    println!("\ntensors ({count})");
    println!(
        "  {:<36} {:<7} {:>18} {:>12}",
        "name", "type", "shape", "bytes"
    );
    for t in f.tensors() {
        let shape = format!("{:?}", t.shape());
        println!(
            "  {:<36} {:<7} {:>18} {:>12}",
            t.name,
            t.dtype.to_string(),
            shape,
            t.size
        );
    }
    for t in f.unreadable() {
        let shape: Vec<u64> = t.dims.iter().rev().copied().collect();
        println!(
            "  {:<36} {:<7} {:>18} {:>12}  (edgecut cannot decode {})",
            t.name,
            t.type_name,
            format!("{shape:?}"),
            t.size,
            t.type_name
        );
    }
    println!("\nbytes by type (which backends multiply matrices of the type)");
    let unreadable = edgecut::unreadable_by_type(&f);
    let total: u64 = f.tensors().iter().map(|t| t.size).sum::<u64>()
        + unreadable.iter().map(|(_, b, _)| b).sum::<u64>();
    let pct = |b: u64| 100.0 * b as f64 / total.max(1) as f64;
    for (d, b, n) in f.bytes_by_type() {
        let fmt = d.format();
        let runs = match (
            fmt.linear_cpu,
            fmt.linear_gpu,
            fmt.gpu_blocks || !d.is_quantized(),
        ) {
            (true, true, true) => "cpu, gpu",
            (true, true, false) => "cpu, gpu (decoded to f32 at upload)",
            (true, false, _) => "cpu",
            (false, true, _) => "gpu",
            (false, false, _) => "none",
        };
        println!(
            "  {:<7} {:>4} tensors {:>12} bytes ({:>5.1}%)  {runs}",
            d.to_string(),
            n,
            b,
            pct(b)
        );
    }
    for (name, b, n) in &unreadable {
        println!(
            "  {:<7} {:>4} tensors {:>12} bytes ({:>5.1}%)  cannot run: edgecut cannot decode {name}",
            name,
            n,
            b,
            pct(*b)
        );
    }
    println!("  total   {count:>4} tensors {total:>12} bytes");
    if !unreadable.is_empty() {
        let names: Vec<&str> = unreadable.iter().map(|(n, _, _)| *n).collect();
        println!(
            "\nthis file holds tensors of types edgecut cannot run ({}): a model that needs them \
             fails to load, naming the tensor",
            names.join(", ")
        );
    }
    Ok(())
}

fn kv_lines(f: &GgufFile) {
    let Ok(c) = edgecut::DecoderConfig::from_gguf(f) else {
        return;
    };
    let sliding = (0..c.layers).filter(|&l| c.sliding(l)).count();
    let windows = match c.window {
        Some(w) if sliding > 0 => format!(", {sliding} of them sliding over {w} positions"),
        _ => String::new(),
    };
    println!("\nkv cache      f16, {} layers{windows}", c.layers);
    for n in edgecut::kv_contexts(&c) {
        let (with, without) = (c.kv_bytes(n), c.kv_bytes_without_windows(n));
        let saved = if with < without {
            format!(
                " (every position in every layer: {:.1} MB)",
                without as f64 / 1e6
            )
        } else {
            String::new()
        };
        println!("  context {n:>7}: {:>9.1} MB{saved}", with as f64 / 1e6);
    }
}

//! `edgecut inspect`.

use std::path::PathBuf;

use edgecut_format::gguf::{GgufFile, Value};
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

fn value_json(v: &Value) -> serde_json::Value {
    const LONG: usize = 4096;
    match v {
        Value::Str(s) if s.len() > LONG => json!({"type": "string", "len": s.len()}),
        Value::Str(s) => json!(s),
        Value::Bool(b) => json!(b),
        Value::F32(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Array(a) => json!({"type": "array", "elem": a.elem_type().name(), "len": a.len()}),
        other => json!(other
            .as_u64()
            .map(serde_json::Value::from)
            .unwrap_or_else(|| json!(other.to_string()))),
    }
}

/// Prints the report.
pub fn run(a: Args) -> anyhow::Result<()> {
    let f = GgufFile::open(&a.model)?;
    let h = f.header();
    let arch = f.architecture().unwrap_or("unknown").to_string();
    let id = f.identity();
    let prefix = format!("{arch}.");
    if a.json {
        let meta: serde_json::Map<String, serde_json::Value> = f
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect();
        let tensors: Vec<_> = f
            .tensors()
            .iter()
            .map(|t| json!({"name": t.name, "type": t.dtype.to_string(), "shape": t.shape(), "bytes": t.size, "offset": t.offset}))
            .collect();
        let by_type: serde_json::Map<String, serde_json::Value> = f
            .bytes_by_type()
            .iter()
            .map(|(d, b, n)| (d.to_string(), json!({"bytes": b, "tensors": n})))
            .collect();
        let out = json!({
            "file": a.model, "file_bytes": f.file_len(), "version": h.version, "alignment": h.alignment,
            "data_offset": h.data_offset, "architecture": arch, "identity": id.to_string(),
            "tokenizer": edgecut_format::tokenizer::describe(&f), "chat_template": f.get("tokenizer.chat_template").is_some(),
            "metadata": meta, "tensors": tensors, "bytes_by_type": by_type,
        });
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
    println!("\ntensors ({})", f.tensors().len());
    println!(
        "  {:<36} {:<5} {:>18} {:>12}",
        "name", "type", "shape", "bytes"
    );
    for t in f.tensors() {
        let shape = format!("{:?}", t.shape());
        println!(
            "  {:<36} {:<5} {:>18} {:>12}",
            t.name,
            t.dtype.to_string(),
            shape,
            t.size
        );
    }
    println!("\nbytes by type");
    let total: u64 = f.tensors().iter().map(|t| t.size).sum();
    for (d, b, n) in f.bytes_by_type() {
        println!(
            "  {:<5} {:>4} tensors {:>12} bytes ({:.1}%)",
            d.to_string(),
            n,
            b,
            100.0 * b as f64 / total.max(1) as f64
        );
    }
    println!("  total {:>4} tensors {total:>12} bytes", f.tensors().len());
    Ok(())
}

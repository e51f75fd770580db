//! `edgecut embed`, `edgecut similarity` and `edgecut classify`.

use std::io::Write;

use clap::ValueEnum;
use edgecut::cosine;

use super::session::{texts, warn_truncated, ModelArgs};

/// Output format.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// A JSON list, in input order.
    Json,
    /// One line per text, values separated by tabs.
    Tsv,
}

/// Arguments of `edgecut embed`.
#[derive(clap::Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Output format: json (a list of vectors) or tsv (one vector per line).
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Texts to embed (default: one per line of standard input).
    texts: Vec<String>,
}

/// Prints one embedding per text.
pub fn embed(a: EmbedArgs) -> anyhow::Result<()> {
    let texts = texts(&a.texts)?;
    let session = a.model.open()?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let out = session.embed(&refs)?;
    warn_truncated(&out.truncated);
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    match a.format {
        Format::Json => writeln!(w, "{}", serde_json::to_string(&out.vectors)?)?,
        Format::Tsv => {
            for v in &out.vectors {
                let line: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                writeln!(w, "{}", line.join("\t"))?;
            }
        }
    }
    Ok(())
}

/// Arguments of `edgecut similarity`.
#[derive(clap::Args)]
pub struct SimilarityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The first text, compared with each of the others.
    text: String,
    /// The texts to compare with it.
    #[arg(required = true)]
    others: Vec<String>,
}

/// Prints the cosine similarity of the first text to each other one.
pub fn similarity(a: SimilarityArgs) -> anyhow::Result<()> {
    let session = a.model.open()?;
    let mut all: Vec<&str> = vec![&a.text];
    all.extend(a.others.iter().map(String::as_str));
    let out = session.embed(&all)?;
    warn_truncated(&out.truncated);
    for (v, t) in out.vectors[1..].iter().zip(&a.others) {
        println!("{:.4}\t{t}", cosine(&out.vectors[0], v));
    }
    Ok(())
}

/// Arguments of `edgecut classify`.
#[derive(clap::Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print JSON (label, class, probabilities, logits per text).
    #[arg(long)]
    json: bool,
    /// Texts to classify (default: one per line of standard input).
    texts: Vec<String>,
}

/// Prints the most probable label of each text.
pub fn classify(a: ClassifyArgs) -> anyhow::Result<()> {
    let texts = texts(&a.texts)?;
    let session = a.model.open()?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let out = session.classify(&refs)?;
    for (i, c) in out.iter().enumerate() {
        if c.truncated {
            eprintln!(
                "warning: text {} was truncated to {} tokens",
                i + 1,
                session.max_seq_len()
            );
        }
    }
    if a.json {
        let rows: Vec<_> = out
            .iter()
            .map(|c| serde_json::json!({"label": c.label, "class": c.class, "probs": c.probs, "logits": c.logits}))
            .collect();
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        for (c, t) in out.iter().zip(&texts) {
            println!("{}\t{:.4}\t{t}", c.label, c.probs[c.class]);
        }
    }
    Ok(())
}

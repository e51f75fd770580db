//! `edgecut rerank`: documents ordered by a cross-encoder's relevance to a query.

use std::io::Write;

use super::session::{texts, ModelArgs};

/// Arguments of `edgecut rerank`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Print JSON: per document (best first) its index, score and raw logit.
    #[arg(long)]
    json: bool,
    /// Show only the best N documents.
    #[arg(long)]
    top_n: Option<usize>,
    /// The query (kept whole; documents are cut to fit --max-seq-len).
    query: String,
    /// Documents to score (default: one per line of standard input).
    documents: Vec<String>,
}

/// Prints the documents best first, with their relevance (0..1, the logit's sigmoid).
pub fn run(a: Args) -> anyhow::Result<()> {
    let docs = texts(&a.documents)?;
    let session = a.model.open()?;
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let out = session.rerank(&a.query, &refs)?;
    for t in &out.truncated {
        eprintln!(
            "warning: document {} with the query has {} tokens; the document was cut to fit {} \
             (see --max-seq-len)",
            t.index + 1,
            t.tokens,
            t.kept
        );
    }
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.sort_by(|&x, &y| out.scores[y].total_cmp(&out.scores[x]));
    order.truncate(a.top_n.unwrap_or(usize::MAX));
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    if a.json {
        let rows: Vec<_> = order
            .iter()
            .map(|&i| {
                serde_json::json!({"index": i, "score": edgecut::sigmoid(out.scores[i]),
                                   "logit": out.scores[i]})
            })
            .collect();
        writeln!(w, "{}", serde_json::to_string(&rows)?)?;
    } else {
        for &i in &order {
            writeln!(
                w,
                "{:.4}\t{i}\t{}",
                edgecut::sigmoid(out.scores[i]),
                docs[i]
            )?;
        }
    }
    Ok(())
}

//! `edgecut bench`: latency per sentence at fixed token counts, tokenization included (decoders:
//! see [`super::bench_llm`]).

use std::time::Instant;

use super::session::ModelArgs;

/// Arguments of `edgecut bench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Token counts per sentence ([CLS] and [SEP] included).
    #[arg(long, value_delimiter = ',', default_value = "16,128")]
    seq: Vec<usize>,
    /// Sentences per call (each call embeds this many texts in one batch).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    batch: Vec<usize>,
    /// Timed calls per configuration (after 3 untimed warm-up calls; decoders: 5 runs after 1).
    #[arg(long)]
    iters: Option<usize>,
    /// Decoders: prompt lengths in tokens.
    #[arg(long, value_delimiter = ',', default_value = "16,128")]
    prompt_tokens: Vec<usize>,
    /// Decoders: tokens generated per run.
    #[arg(long, default_value_t = 64)]
    gen_tokens: usize,
    /// Cross-encoders: time reranking instead (each call scores `batch` documents against a
    /// short query; `seq` is the tokens of each query/document pair).
    #[arg(long)]
    rerank: bool,
}

/// The query of `--rerank`.
const QUERY: &str = "what runs on the edge";

/// A text of `tokens` tokens (special tokens included; with `pair`, the query's too), or the
/// longest under it where no count of "hello" gives exactly that many.
fn text_of(session: &edgecut::Session, tokens: usize, pair: bool) -> anyhow::Result<String> {
    let count = |t: &str| -> anyhow::Result<usize> {
        Ok(if pair {
            session.count_pair_tokens(QUERY, t)?
        } else {
            session.count_tokens(t)?
        })
    };
    let mut words = tokens.saturating_sub(2);
    // Down while over, then up while under: stops at most one step past the turn.
    while words > 0 && count(&vec!["hello"; words].join(" "))? > tokens {
        words -= 1;
    }
    while count(&vec!["hello"; words + 1].join(" "))? <= tokens {
        words += 1;
    }
    Ok(vec!["hello"; words].join(" "))
}

/// Peak resident memory of this process (VmHWM), in MB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Prints a table of ms per sentence and sentences per second.
pub fn run(a: Args) -> anyhow::Result<()> {
    // Opened once: the architecture picks the benchmark (the model registry decides).
    println!("model   {}", a.model.model.display());
    let dec = edgecut::LlmOptions::default()
        .with_device(a.model.enc.run.device)
        .with_threads(a.model.enc.run.threads)
        .with_context(None);
    let session = match edgecut::Model::open(&a.model.model, &a.model.enc.options(), &dec)? {
        edgecut::Model::Decoder(llm) => {
            return super::bench_llm::run(
                &llm,
                &a.prompt_tokens,
                a.gen_tokens,
                a.iters.unwrap_or(5),
            );
        }
        edgecut::Model::Encoder(s) => s,
        other => anyhow::bail!("no benchmark for this model kind ({})", other.device()),
    };
    let iters = a.iters.unwrap_or(50);
    println!("device  {}", session.device());
    if let Some(size) = session.image_size() {
        return images(&session, size, &a.batch, iters);
    }
    println!(
        "{:>5} {:>6} {:>12} {:>12} {:>12} {:>10}",
        "seq", "batch", "ms/sentence", "p90 ms/sent", "sentences/s", "tokens"
    );
    for &seq in &a.seq {
        if seq < 2 || seq > session.max_seq_len().max(2) {
            anyhow::bail!(
                "--seq {seq} is outside 2..={} (raise --max-seq-len)",
                session.max_seq_len()
            );
        }
        let text = text_of(&session, seq, a.rerank)?;
        let tokens = if a.rerank {
            session.count_pair_tokens(QUERY, &text)?
        } else {
            session.tokenize(&text)?.len()
        };
        for &batch in &a.batch {
            let texts: Vec<&str> = vec![text.as_str(); batch.max(1)];
            let call = || -> edgecut::Result<()> {
                match a.rerank {
                    true => session.rerank(QUERY, &texts).map(drop),
                    false => session.embed(&texts).map(drop),
                }
            };
            for _ in 0..3 {
                call()?;
            }
            let mut times: Vec<f64> = (0..iters.max(1))
                .map(|_| {
                    let t = Instant::now();
                    call().map(|_| t.elapsed().as_secs_f64() * 1e3 / texts.len() as f64)
                })
                .collect::<Result<_, _>>()?;
            times.sort_by(f64::total_cmp);
            let med = times[times.len() / 2];
            let p90 = times[(times.len() * 9 / 10).min(times.len() - 1)];
            println!(
                "{seq:>5} {batch:>6} {med:>12.3} {p90:>12.3} {:>12.1} {tokens:>10}",
                1e3 / med
            );
        }
    }
    println!("peak RSS {:.1} MB", peak_rss_mb());
    Ok(())
}

/// CLIP: images per second from preprocessed pixel tensors (decoding and resizing are the
/// caller's and vary with the picture), `batch` pictures per call.
fn images(
    session: &edgecut::Session,
    size: usize,
    batches: &[usize],
    iters: usize,
) -> anyhow::Result<()> {
    println!(
        "{:>6} {:>12} {:>12} {:>10}",
        "batch", "ms/image", "p90 ms/img", "images/s"
    );
    let per = 3 * size * size;
    for &batch in batches {
        let batch = batch.max(1);
        // Values spread as normalised pixels are (about -1.8..2.1), the same every run.
        let pixels: Vec<f32> = (0..batch * per)
            .map(|i| ((i * 7919) % 4001) as f32 / 1000.0 - 1.9)
            .collect();
        let call = || session.embed_pixel_tensors(&pixels, batch).map(drop);
        for _ in 0..3 {
            call()?;
        }
        let mut times: Vec<f64> = (0..iters.max(1))
            .map(|_| {
                let t = Instant::now();
                call().map(|_| t.elapsed().as_secs_f64() * 1e3 / batch as f64)
            })
            .collect::<Result<_, _>>()?;
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        let p90 = times[(times.len() * 9 / 10).min(times.len() - 1)];
        println!("{batch:>6} {med:>12.3} {p90:>12.3} {:>10.2}", 1e3 / med);
    }
    println!("peak RSS {:.1} MB", peak_rss_mb());
    Ok(())
}

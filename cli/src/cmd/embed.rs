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
    /// Keep the first N values of each vector (Matryoshka models), normalised again when the
    /// model normalises.
    #[arg(long)]
    dimensions: Option<usize>,
    /// Text put before each input, such as `query: ` or `passage: ` (E5) or an instruction
    /// (the model card says which).
    #[arg(long, default_value = "")]
    prefix: String,
    /// Split with `edgecut serve` at this address (host:port).
    #[arg(long)]
    server: Option<String>,
    /// With --server: stages run on the device (K; 0 sends the token ids), or `auto`: chosen
    /// per request from --device-profile and --server-profile and the link as measured.
    #[arg(long, default_value = "1")]
    cut: String,
    /// With --cut auto: this device's stage times (`edgecut profile -o`).
    #[arg(long)]
    device_profile: Option<std::path::PathBuf>,
    /// With --cut auto: the server's stage times (`edgecut profile -o` on the server).
    #[arg(long)]
    server_profile: Option<std::path::PathBuf>,
    /// With --server: a file holding the access token.
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// With --server: activation encoding on the wire (f32, f16 or int8).
    #[arg(long, default_value = "int8")]
    encoding: edgecut_wire::Encoding,
    /// With --server: speak TLS, trusting the certificates in this PEM file.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// With --tls-ca: the name the server's certificate must carry (default: the host of
    /// --server).
    #[arg(long, requires = "tls_ca")]
    tls_name: Option<String>,
    /// A picture (PNG or JPEG) to embed with a CLIP model; repeat for several. Their vectors
    /// come first, then those of any texts given as arguments.
    #[arg(long = "image", value_name = "FILE")]
    images: Vec<std::path::PathBuf>,
    /// Texts to embed (default: one per line of standard input).
    texts: Vec<String>,
}

/// Reads each picture file.
fn read_images(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    use anyhow::Context;
    paths
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect()
}

/// Embeds pictures, naming the file of one that cannot be read.
fn embed_images(
    session: &edgecut::Session,
    paths: &[std::path::PathBuf],
) -> anyhow::Result<Vec<Vec<f32>>> {
    let bytes = read_images(paths)?;
    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    session.embed_images(&refs).map_err(|e| match e {
        edgecut::Error::Image { index, source } => {
            anyhow::anyhow!("{}: {source}", paths[index].display())
        }
        other => other.into(),
    })
}

/// Prints one embedding per picture and text.
pub fn embed(a: EmbedArgs) -> anyhow::Result<()> {
    let texts: Vec<String> = if a.images.is_empty() || !a.texts.is_empty() {
        texts(&a.texts)?
    } else {
        Vec::new()
    }
    .into_iter()
    .map(|t| format!("{}{t}", a.prefix))
    .collect();
    let session = a.model.open()?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut vectors = match (&a.server, a.images.is_empty()) {
        (_, true) => Vec::new(),
        (None, false) => embed_images(&session, &a.images)?,
        (Some(server), false) => split_embed_images(&session, &a, server)?,
    };
    if !refs.is_empty() {
        vectors.extend(match &a.server {
            None => {
                let out = session.embed(&refs)?;
                warn_truncated(&out.truncated);
                out.vectors
            }
            Some(server) => split_embed(&session, &a, server, &refs)?,
        });
    }
    if let Some(d) = a.dimensions {
        session.shorten(&mut vectors, d)?;
    }
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    match a.format {
        Format::Json => writeln!(w, "{}", serde_json::to_string(&vectors)?)?,
        Format::Tsv => {
            for v in &vectors {
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
    /// A picture (PNG or JPEG) to score the texts against as labels, with a CLIP model:
    /// prints each label's probability (CLIP's zero-shot classification) and cosine.
    #[arg(long, value_name = "FILE")]
    image: Option<std::path::PathBuf>,
    /// The first text, compared with each of the others (with --image: the labels).
    #[arg(required = true)]
    texts: Vec<String>,
}

/// Prints the cosine similarity of the first text to each other one, or each label's
/// probability and cosine for a picture.
pub fn similarity(a: SimilarityArgs) -> anyhow::Result<()> {
    let session = a.model.open()?;
    if let Some(path) = &a.image {
        let bytes = read_images(std::slice::from_ref(path))?.remove(0);
        let labels: Vec<&str> = a.texts.iter().map(String::as_str).collect();
        let scores = session.zero_shot(&bytes, &labels).map_err(|e| match e {
            edgecut::Error::Image { source, .. } => {
                anyhow::anyhow!("{}: {source}", path.display())
            }
            other => other.into(),
        })?;
        for s in scores {
            println!("{:.4}\t{:.4}\t{}", s.probability, s.similarity, s.label);
        }
        return Ok(());
    }
    let Some((first, others)) = a.texts.split_first().filter(|(_, o)| !o.is_empty()) else {
        anyhow::bail!("similarity needs a text and at least one other to compare it with");
    };
    let mut all: Vec<&str> = vec![first];
    all.extend(others.iter().map(String::as_str));
    let out = session.embed(&all)?;
    warn_truncated(&out.truncated);
    for (v, t) in out.vectors[1..].iter().zip(others) {
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

/// Embeds pictures through `edgecut serve` (the image tower split at --cut), falling back to
/// the device (and saying so on stderr).
fn split_embed_images(
    session: &edgecut::Session,
    a: &EmbedArgs,
    server: &str,
) -> anyhow::Result<Vec<Vec<f32>>> {
    if a.cut == "auto" {
        anyhow::bail!("--cut auto plans texts; give pictures a stage count");
    }
    let bytes = read_images(&a.images)?;
    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let mut client = edgecut_server::SplitClient::new(session, client_config(a, server, None)?);
    let mut vectors = Vec::with_capacity(refs.len());
    for (i, chunk) in refs.chunks(a.model.enc.batch_size.max(1)).enumerate() {
        let out = client.embed_images(chunk).map_err(|e| match e {
            edgecut::Error::Image { index, source } => anyhow::anyhow!(
                "{}: {source}",
                a.images[i * a.model.enc.batch_size.max(1) + index].display()
            ),
            other => other.into(),
        })?;
        match &out.fell_back {
            Some(why) => eprintln!("split: fell back to the device: {why}"),
            None => eprintln!(
                "split: cut {}, {} bytes sent, round trip {:.1} ms",
                out.cut,
                out.sent_bytes,
                out.round_trip.map_or(0.0, |d| d.as_secs_f64() * 1e3)
            ),
        }
        vectors.extend(out.vectors);
    }
    Ok(vectors)
}

/// The split client's configuration from the command line (`auto`: the planner, for texts).
fn client_config(
    a: &EmbedArgs,
    server: &str,
    auto: Option<edgecut_server::AutoCut>,
) -> anyhow::Result<edgecut_server::ClientConfig> {
    let token = match &a.token_file {
        Some(p) => edgecut_server::read_token_file(p)?,
        None => Vec::new(),
    };
    let cut = match auto {
        Some(_) => 0,
        None => a
            .cut
            .parse()
            .map_err(|_| anyhow::anyhow!("--cut {:?}: expected a stage count or auto", a.cut))?,
    };
    Ok(edgecut_server::ClientConfig {
        server: server.to_string(),
        token,
        cut,
        encoding: a.encoding,
        timeout: std::time::Duration::from_secs(30),
        tls: super::split_tls(server, a.tls_ca.as_deref(), a.tls_name.as_deref())?,
        auto,
    })
}

/// Embeds through `edgecut serve`, falling back to the device (and saying so on stderr).
fn split_embed(
    session: &edgecut::Session,
    a: &EmbedArgs,
    server: &str,
    texts: &[&str],
) -> anyhow::Result<Vec<Vec<f32>>> {
    use anyhow::Context;
    let auto = if a.cut == "auto" {
        let load = |p: &Option<std::path::PathBuf>, flag: &str| -> anyhow::Result<_> {
            let p = p
                .as_ref()
                .with_context(|| format!("--cut auto needs {flag}"))?;
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            edgecut_partition::Profile::from_json(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        };
        let (d, s) = (
            load(&a.device_profile, "--device-profile")?,
            load(&a.server_profile, "--server-profile")?,
        );
        let auto = edgecut_server::AutoCut::new(d, s, session.stage_count())
            .map_err(anyhow::Error::msg)?;
        Some(auto)
    } else {
        None
    };
    let mut client = edgecut_server::SplitClient::new(session, client_config(a, server, auto)?);
    // One request per batch, so --cut auto re-plans between them.
    let mut vectors = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(a.model.enc.batch_size.max(1)) {
        let t = std::time::Instant::now();
        let out = client.embed(chunk)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let predicted = out
            .predicted_ms
            .map_or(String::new(), |p| format!(", predicted {p:.1} ms"));
        match &out.fell_back {
            Some(why) => eprintln!("split: fell back to the device: {why}"),
            None if out.cut >= session.stage_count() => {
                eprintln!(
                    "split: cut {} (all on the device), {ms:.1} ms{predicted}",
                    out.cut
                )
            }
            None => eprintln!(
                "split: cut {}, {} bytes sent, round trip {:.1} ms, {ms:.1} ms{predicted}",
                out.cut,
                out.sent_bytes,
                out.round_trip.map_or(0.0, |d| d.as_secs_f64() * 1e3)
            ),
        }
        if let Some(e) = client.link_estimate() {
            let f = |v: Option<f64>, show: &dyn Fn(f64) -> String| {
                v.map_or("not measured yet".to_string(), show)
            };
            eprintln!(
                "split: measured: round trip {}, link {}, server overhead {}, device {}",
                f(e.rtt_s, &|v| format!("{:.1} ms", v * 1e3)),
                f(e.bps, &|v| format!("{:.2} Mbit/s", v / 1e6)),
                f(e.server_extra_ms, &|v| format!("{v:.1} ms")),
                f(e.device_scale, &|v| format!("{v:.2}x its profile")),
            );
        }
        vectors.extend(out.vectors);
    }
    Ok(vectors)
}

//! `edgecut plan`: where to cut a model between a device and a server, from their profiles and
//! the link.

use std::path::PathBuf;

use anyhow::Context;
use edgecut_partition::{
    Breakdown, Constraints, DecodePlanner, DecodeScenario, Encoding, Link, Objective, Plan,
    Planner, PowerModel, Profile, Scenario,
};

/// Arguments of `edgecut plan`.
#[derive(clap::Args)]
pub struct Args {
    /// The device's profile (`edgecut profile` on the device).
    #[arg(long)]
    device: PathBuf,
    /// The server's profile (`edgecut profile` on the server); without it only the device runs.
    #[arg(long)]
    server: Option<PathBuf>,
    /// The link: BANDWIDTH[/DOWNLOAD],RTT[,PER_MESSAGE], e.g. 10mbit,40ms (repeatable).
    #[arg(long, required = true)]
    link: Vec<String>,
    /// Tokens per text.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Texts per request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// What to minimise: latency, energy (device) or server (server time per request).
    #[arg(long, default_value = "latency")]
    objective: Objective,
    /// Device power model for energy: phone-wifi or phone-lte.
    #[arg(long, default_value = "phone-wifi")]
    power: String,
    /// Activation encoding on the wire: f32, f16 or int8.
    #[arg(long, default_value = "int8")]
    encoding: Encoding,
    /// Bytes of weights the device may hold (e.g. 20MB).
    #[arg(long)]
    memory_budget: Option<String>,
    /// Allow sending the raw input (token ids) to the server.
    #[arg(long)]
    allow_raw_upload: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Draw predicted cost against bandwidth for every cut to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Plan split decoding (a decoder's profiles): the cut for the time to the first token
    /// plus the reply's tokens, under --memory-budget (weights and KV cache).
    #[arg(long)]
    decode: bool,
    /// With --decode: prompt tokens of the turn.
    #[arg(long, default_value_t = 64)]
    prompt: usize,
    /// With --decode: tokens of the reply.
    #[arg(long, default_value_t = 128)]
    reply: usize,
    /// With --decode: positions of the conversation's KV cache.
    #[arg(long, default_value_t = 2048)]
    context: usize,
    /// With --decode: plan a later turn of a conversation (its session is open: no
    /// connection, HELLO or OPEN before the prompt goes up).
    #[arg(long)]
    later_turn: bool,
}

/// A size such as `100MB`, `2GB` or `512KB`, in bytes.
pub(super) fn bytes(s: &str) -> anyhow::Result<u64> {
    let t = s.trim().to_ascii_uppercase();
    for (u, f) in [("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1.0)] {
        if let Some(n) = t.strip_suffix(u) {
            let v: f64 = n
                .trim()
                .parse()
                .with_context(|| format!("memory budget {s:?}"))?;
            anyhow::ensure!(
                v >= 0.0 && v.is_finite(),
                "memory budget {s:?} must be >= 0"
            );
            return Ok((v * f) as u64);
        }
    }
    anyhow::bail!("memory budget {s:?}: expected a size such as 20MB")
}

fn load(path: &PathBuf) -> anyhow::Result<Profile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Profile::from_json(&text).with_context(|| format!("{}", path.display()))
}

fn human(b: u64) -> String {
    match b {
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.1} KB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

fn line(g: &edgecut_partition::Graph, b: &Breakdown) -> String {
    format!(
        "{}: {:.1} ms = device {:.1} + upload {:.1} + round trip {:.1} + server {:.1} + download {:.1}; \
         device energy {:.1} mJ; up {}, down {}; device weights {}",
        b.cut.describe(g),
        b.latency_ms,
        b.device_ms,
        b.upload_ms,
        b.network_fixed_ms,
        b.server_ms,
        b.download_ms,
        b.energy_j * 1e3,
        human(b.up_bytes),
        human(b.down_bytes),
        human(b.device_weight_bytes)
    )
}

fn print(p: &Planner<'_>, sc: &Scenario, plan: &Plan) {
    let g = p.graph();
    let l = &sc.link;
    println!(
        "link {:.3} Mbit/s up, {:.3} down, round trip {:.1} ms; {} tokens x {}; objective {}",
        l.up_bps / 1e6,
        l.down_bps / 1e6,
        l.rtt_s * 1e3,
        sc.seq,
        sc.batch,
        format!("{:?}", plan.objective).to_lowercase()
    );
    println!("  best           {}", line(g, &plan.best));
    match &plan.all_device {
        Some(b) => println!("  all on device  {}", line(g, b)),
        None => println!("  all on device  does not fit the memory budget"),
    }
    match &plan.all_server {
        Some(b) => println!("  all on server  {}", line(g, b)),
        None => println!("  all on server  no server"),
    }
    if plan.thresholds.is_empty() {
        println!("  the best cut is the same at every bandwidth");
    }
    for t in &plan.thresholds {
        println!(
            "  at {:.3} Mbit/s up the best cut changes from {} to {}",
            t.up_bps / 1e6,
            t.below.describe(g),
            t.above.describe(g)
        );
    }
}

/// `edgecut plan --decode`: every cut's predicted turn, and the best.
fn run_decode(a: &Args, dev: &Profile) -> anyhow::Result<()> {
    let srv = load(a.server.as_ref().context("--decode needs --server")?)?;
    let planner = DecodePlanner::new(dev, &srv)?;
    anyhow::ensure!(
        a.prompt >= 1 && a.context > a.prompt,
        "--prompt must be at least 1 and below --context"
    );
    let budget = a.memory_budget.as_deref().map(bytes).transpose()?;
    let mut out = Vec::new();
    for l in &a.link {
        let sc = DecodeScenario {
            prompt: a.prompt,
            reply: a.reply,
            context: a.context,
            link: Link::parse(l)?,
            encoding: a.encoding,
            new_session: !a.later_turn,
        };
        let plan = planner.plan(&sc, budget)?;
        if !a.json {
            println!(
                "link {:.3} Mbit/s up, round trip {:.1} ms; prompt {} tokens, reply {}, {:?} on the wire",
                sc.link.up_bps / 1e6,
                sc.link.rtt_s * 1e3,
                sc.prompt,
                sc.reply,
                sc.encoding
            );
            println!("     K   first token ms   step ms (device + link + server)   tokens/s   turn ms   device memory");
            for b in &plan.all {
                println!(
                    "  {} {:>3}   {:>14.1}   {:>7.2} ({:.2} + {:.2} + {:.2})   {:>8.1}   {:>7.0}   {}",
                    if b.k == plan.best.k { "*" } else { " " },
                    b.k,
                    b.first_token_ms,
                    b.step_ms,
                    b.device_step_ms,
                    b.link_step_ms,
                    b.server_step_ms,
                    b.tokens_per_s,
                    b.turn_ms,
                    human(b.device_weight_bytes + b.device_kv_bytes)
                );
            }
            let b = &plan.best;
            println!(
                "  best: K = {} of {} blocks on the device ({}): first token {:.1} ms, {:.1} tokens/s, {} up and {} down per token",
                b.k,
                planner.blocks(),
                if b.k == planner.blocks() { "all here" } else { "the rest and the head on the server" },
                b.first_token_ms,
                b.tokens_per_s,
                human(b.up_bytes_per_token),
                human(b.down_bytes_per_token)
            );
        }
        out.push(serde_json::json!({"scenario": sc, "plan": plan}));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// Runs `edgecut plan`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let dev = load(&a.device)?;
    if a.decode {
        return run_decode(&a, &dev);
    }
    let srv = a.server.as_ref().map(load).transpose()?;
    let planner = Planner::new(&dev, srv.as_ref())?;
    let power = PowerModel::preset(&a.power)?;
    anyhow::ensure!(
        a.seq >= 1 && a.batch >= 1,
        "--seq and --batch must be at least 1"
    );
    let cons = Constraints {
        memory_budget: a.memory_budget.as_deref().map(bytes).transpose()?,
        allow_raw_upload: a.allow_raw_upload,
        server_available: srv.is_some(),
    };
    let mut plans = Vec::new();
    let mut scenarios = Vec::new();
    for l in &a.link {
        let sc = Scenario {
            seq: a.seq,
            batch: a.batch,
            encoding: a.encoding,
            link: Link::parse(l)?,
            power,
        };
        plans.push(planner.plan(&sc, a.objective, &cons)?);
        scenarios.push(sc);
    }
    if a.json {
        let out: Vec<serde_json::Value> = plans
            .iter()
            .zip(&scenarios)
            .map(|(p, sc)| serde_json::json!({"link": sc.link, "seq": sc.seq, "batch": sc.batch, "plan": p}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("model {} ({} stages)", dev.model, dev.graph.stages.len());
        println!("device: {}", dev.machine);
        println!(
            "server: {}",
            srv.as_ref().map_or("none", |s| s.machine.as_str())
        );
        for (p, sc) in plans.iter().zip(&scenarios) {
            print(&planner, sc, p);
        }
    }
    if let Some(path) = &a.plot {
        let marks: Vec<f64> = scenarios.iter().map(|s| s.link.up_bps).collect();
        let svg = edgecut_partition::svg::plot(&planner, &scenarios[0], a.objective, &cons, &marks);
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

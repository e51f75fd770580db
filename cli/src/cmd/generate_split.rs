//! `edgecut generate|chat --server`: a decoder split with `edgecut serve`, at a fixed cut or
//! (`--cut auto`) at the cut the planner picks for each turn from the two profiles and what
//! the turns so far measured.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use edgecut::split::{SplitDecoder, SplitGeneration};
use edgecut::{GenerateOptions, Llm, SamplingParams};
use edgecut_server::{DecodeAuto, DecodeTurn, DecoderLink, LinkStats};

/// Splitting a decoder with `edgecut serve` running the same model.
#[derive(clap::Args, Clone)]
pub struct DecodeSplitArgs {
    /// Split with `edgecut serve` at this address (host:port): blocks after --cut run there,
    /// token by token; when it is lost the device finishes alone, losing nothing.
    #[arg(long)]
    server: Option<String>,
    /// With --server: blocks run on the device (1 to the model's blocks; all of them: nothing
    /// runs there), or `auto`: the planner's cut for each turn, from --device-profile,
    /// --server-profile and the link as measured (re-planned between turns).
    #[arg(long, default_value = "1")]
    cut: String,
    /// With --cut auto: this device's stage times (`edgecut profile -m MODEL -o FILE`).
    #[arg(long)]
    device_profile: Option<PathBuf>,
    /// With --cut auto: the server's stage times (`edgecut profile` on the server).
    #[arg(long)]
    server_profile: Option<PathBuf>,
    /// With --cut auto: the most this device may hold for its blocks' weights and KV cache
    /// (e.g. 100MB); cuts that need more are not chosen.
    #[arg(long)]
    memory_budget: Option<String>,
    /// With --server: a file holding the access token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// With --server: hidden states on the wire as f32 (exact), f16 or int8.
    #[arg(long, default_value = "f16")]
    encoding: edgecut_wire::Encoding,
    /// With --server: speak TLS, trusting the certificates in this PEM file.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// With --tls-ca: the name the server's certificate must carry (default: the host).
    #[arg(long, requires = "tls_ca")]
    tls_name: Option<String>,
}

fn profile(p: Option<&Path>, flag: &str) -> anyhow::Result<edgecut_partition::Profile> {
    let p = p.with_context(|| format!("--cut auto needs {flag}"))?;
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    edgecut_partition::Profile::from_json(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
}

/// A conversation split with a server: the device's half, the link, and with `--cut auto`
/// the planner.
pub(super) struct SplitConversation {
    decoder: SplitDecoder,
    link: DecoderLink,
    auto: Option<DecodeAuto>,
    encoding: edgecut_wire::Encoding,
    turns: usize,
}

impl SplitConversation {
    /// The split conversation `a` asks for (`None` without `--server`).
    pub(super) fn open(
        llm: &Llm,
        a: &DecodeSplitArgs,
        sampling: &SamplingParams,
    ) -> anyhow::Result<Option<SplitConversation>> {
        let Some(server) = &a.server else {
            return Ok(None);
        };
        let n = llm.blocks();
        anyhow::ensure!(
            a.cut == "auto" || a.memory_budget.is_none(),
            "--memory-budget goes with --cut auto"
        );
        let (cut, auto) = if a.cut == "auto" {
            let (d, s) = (
                profile(a.device_profile.as_deref(), "--device-profile")?,
                profile(a.server_profile.as_deref(), "--server-profile")?,
            );
            let mut auto = DecodeAuto::new(d, s, n).map_err(anyhow::Error::msg)?;
            auto.memory_budget = a
                .memory_budget
                .as_deref()
                .map(super::plan::bytes)
                .transpose()?;
            (1, Some(auto))
        } else {
            let k: usize = a.cut.parse().map_err(|_| {
                anyhow::anyhow!(
                    "--cut {:?}: expected a block count (1 to {n}) or auto",
                    a.cut
                )
            })?;
            (k, None)
        };
        let token = match &a.token_file {
            Some(p) => edgecut_server::read_token_file(p)?,
            None => Vec::new(),
        };
        let tls = super::split_tls(server, a.tls_ca.as_deref(), a.tls_name.as_deref())?;
        let cfg = edgecut_server::ClientConfig {
            server: server.clone(),
            token,
            cut,
            encoding: a.encoding,
            timeout: std::time::Duration::from_secs(30),
            tls,
            auto: None,
        };
        Ok(Some(SplitConversation {
            decoder: SplitDecoder::new(llm, cut)?,
            link: DecoderLink::new(llm, cfg, sampling.clone()),
            auto,
            encoding: a.encoding,
            turns: 0,
        }))
    }

    /// With `--cut auto`, moves the cut for a turn over the conversation `ids` when the
    /// planner says so (a new cut starts the device's half afresh: the conversation runs
    /// again at it).
    fn plan(
        &mut self,
        llm: &Llm,
        ids: &[u32],
        opts: &GenerateOptions,
        quiet: bool,
    ) -> anyhow::Result<Option<DecodeTurn>> {
        if self.auto.is_none() {
            return Ok(None);
        }
        let n = llm.blocks();
        let held = if self.turns == 0 {
            0
        } else {
            let t = self.decoder.tokens();
            t.iter().zip(ids).take_while(|(a, b)| a == b).count()
        };
        let turn = DecodeTurn {
            conversation: ids.len(),
            held,
            reply: opts.max_tokens,
            context: llm.context_len(),
            encoding: self.encoding,
        };
        let current = (self.turns > 0).then(|| self.decoder.cut());
        // Before the first turn, while everything runs here, and after a turn that lost the
        // server, a HELLO says whether the server is there and what the round trip is.
        let probe = match current {
            Some(c) if c < n && !self.decoder.is_local() => None,
            _ => Some(self.link.probe()),
        };
        let auto = self.auto.as_mut().expect("checked above");
        let k = match probe {
            None => auto.choose(current, &turn),
            Some(Ok(rtt)) => {
                auto.observe_round_trip(rtt);
                auto.choose(current, &turn)
            }
            Some(Err(e)) => {
                if !quiet && current.is_none() {
                    eprintln!("[split: the server is not reachable ({e}); all on the device]");
                }
                n
            }
        };
        if (k != self.decoder.cut() || current.is_none()) && !quiet {
            let why = if k == n {
                "all on the device".to_string()
            } else {
                format!("blocks {k}..{n} and the head on the server")
            };
            let l = auto.link();
            eprintln!(
                "[split: cut {k} of {n}: {why} (link {:.1} Mbit/s, round trip {:.1} ms)]",
                l.up_bps / 1e6,
                l.rtt_s * 1e3
            );
        }
        if k != self.decoder.cut() {
            self.decoder = SplitDecoder::new(llm, k)?;
            self.link.set_cut(k);
            // The new cut runs the whole conversation.
            return Ok(Some(DecodeTurn { held: 0, ..turn }));
        }
        Ok(Some(turn))
    }

    /// Runs one turn over the whole conversation's tokens `ids` (what the caches hold of it
    /// is reused), streaming its text to `emit`.
    pub(super) fn turn(
        &mut self,
        llm: &Llm,
        ids: &[u32],
        opts: &GenerateOptions,
        quiet: bool,
        emit: &mut dyn FnMut(&str) -> bool,
    ) -> anyhow::Result<SplitGeneration> {
        let planned = self.plan(llm, ids, opts, quiet)?;
        let before = self.link.stats;
        let g = self.decoder.generate(ids, opts, &mut self.link, emit)?;
        self.turns += 1;
        let stats = self.link.stats.since(&before);
        if let (Some(auto), Some(t), None) = (&mut self.auto, planned, &g.fell_back) {
            let gen = &g.generation;
            let k = self.decoder.cut();
            // The end-of-sequence token was drawn by one more step (by the prompt's run when
            // it came first).
            let eos = gen.finish == edgecut::Finish::EndOfSequence && !gen.tokens.is_empty();
            let steps = gen.tokens.len().saturating_sub(1) + eos as usize;
            auto.observe(k, &t, &stats, gen.prefill, gen.decode, steps);
        }
        report(&g, &stats, self.decoder.cut() == llm.blocks());
        Ok(g)
    }
}

/// Says on standard error what a split turn carried (`s`: its stats alone), or that it fell
/// back to the device, or ran all here.
fn report(g: &SplitGeneration, s: &LinkStats, all_here: bool) {
    match &g.fell_back {
        Some((at, why)) => eprintln!(
            "[split: the server was lost after {at} tokens ({why}); finished on the device]"
        ),
        None if all_here => eprintln!("[split: this turn ran all on the device]"),
        None => {
            eprintln!(
                "[split: {} steps, {} positions, {:.0} bytes up per position]",
                s.steps,
                s.positions,
                s.bytes_up as f64 / s.positions.max(1) as f64
            );
        }
    }
}

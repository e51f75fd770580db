//! `edgecut generate` and `edgecut chat`: text generation with a Llama-family model, streamed
//! to standard output as it is produced.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use edgecut::{Chat, Finish, GenerateOptions, Generation, Llm, LlmOptions, SamplingParams};

/// Which decoder to run, where.
#[derive(clap::Args, Clone)]
pub struct LlmArgs {
    /// The model file (GGUF, architecture llama).
    #[arg(short, long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub run: super::session::RunArgs,
    /// Context length in tokens, the size of the KV cache (default: the model's, at most 2048).
    #[arg(long)]
    pub context: Option<usize>,
}

impl LlmArgs {
    /// Opens the model.
    pub fn open(&self) -> anyhow::Result<Llm> {
        let opts = LlmOptions::default()
            .with_device(self.run.device)
            .with_threads(self.run.threads)
            .with_context(self.context);
        // A GPU asked for by name is an error from the library (decoders run on the CPU so far).
        Llm::open(&self.model, &opts).with_context(|| format!("opening {}", self.model.display()))
    }
}

/// Splitting a decoder with `edgecut serve` running the same model.
#[derive(clap::Args, Clone)]
pub struct DecodeSplitArgs {
    /// Split with `edgecut serve` at this address (host:port): blocks after --cut run there,
    /// token by token; when it is lost the device finishes alone, losing nothing.
    #[arg(long)]
    server: Option<String>,
    /// With --server: blocks run on the device (1 to the model's blocks - 1).
    #[arg(long, default_value_t = 1)]
    cut: usize,
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

impl DecodeSplitArgs {
    /// The link to the server, when one is asked for.
    fn link(
        &self,
        llm: &Llm,
        sampling: &SamplingParams,
    ) -> anyhow::Result<Option<edgecut_server::DecoderLink>> {
        let Some(server) = &self.server else {
            return Ok(None);
        };
        let token = match &self.token_file {
            Some(p) => edgecut_server::read_token_file(p)?,
            None => Vec::new(),
        };
        let tls = super::split_tls(server, self.tls_ca.as_deref(), self.tls_name.as_deref())?;
        let cfg = edgecut_server::ClientConfig {
            server: server.clone(),
            token,
            cut: self.cut,
            encoding: self.encoding,
            timeout: std::time::Duration::from_secs(30),
            tls,
            auto: None,
        };
        Ok(Some(edgecut_server::DecoderLink::new(
            llm,
            cfg,
            sampling.clone(),
        )))
    }
}

/// One conversation, on this device or split with a server (one per process: its size is no
/// concern).
#[allow(clippy::large_enum_variant)]
enum Conversation {
    Local(Chat),
    Split {
        decoder: edgecut::split::SplitDecoder,
        link: edgecut_server::DecoderLink,
        messages: Vec<edgecut::Message>,
    },
}

impl Conversation {
    fn new(
        llm: &Llm,
        system: Option<&str>,
        link: Option<edgecut_server::DecoderLink>,
        cut: usize,
    ) -> anyhow::Result<Conversation> {
        Ok(match link {
            None => Conversation::Local(Chat::new(llm, system)?),
            Some(link) => Conversation::Split {
                decoder: edgecut::split::SplitDecoder::new(llm, cut)?,
                link,
                messages: system
                    .map(|s| edgecut::Message::new("system", s))
                    .into_iter()
                    .collect(),
            },
        })
    }

    /// Sends a user message; the reply joins the history (nothing joins on an error).
    fn send(
        &mut self,
        llm: &Llm,
        user: &str,
        opts: &GenerateOptions,
    ) -> anyhow::Result<Generation> {
        match self {
            Conversation::Local(chat) => Ok(chat.send(user, opts, &mut emit)?),
            Conversation::Split {
                decoder,
                link,
                messages,
            } => {
                messages.push(edgecut::Message::new("user", user));
                let run = llm
                    .render_chat(messages)
                    .and_then(|text| llm.tokenize(&text))
                    .and_then(|ids| decoder.generate(&ids, opts, link, &mut emit));
                match run {
                    Ok(g) => {
                        report_split(&g, link);
                        messages.push(edgecut::Message::new(
                            "assistant",
                            g.generation.text.clone(),
                        ));
                        Ok(g.generation)
                    }
                    Err(e) => {
                        messages.pop();
                        Err(e.into())
                    }
                }
            }
        }
    }
}

/// Says on standard error when a split generation fell back to the device.
fn report_split(g: &edgecut::split::SplitGeneration, link: &edgecut_server::DecoderLink) {
    match &g.fell_back {
        Some((at, why)) => eprintln!(
            "[split: the server was lost after {at} tokens ({why}); finished on the device]"
        ),
        None => {
            let s = link.stats;
            eprintln!(
                "[split: {} steps, {} positions, {:.0} bytes up per position]",
                s.steps,
                s.positions,
                s.bytes_up as f64 / s.positions.max(1) as f64
            );
        }
    }
}

/// How tokens are chosen and when generation stops.
#[derive(clap::Args, Clone)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(short = 'n', long, default_value_t = 256)]
    max_tokens: usize,
    /// Temperature; 0 (the default) is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    temp: f32,
    /// Sample only from the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample only from the most likely tokens holding this much probability (1: all).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Penalty on tokens of the last 64 (1: off; 1.1 is a common choice).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Random seed (default: a new one each run; printed with the statistics).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop before this text (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Print no statistics on standard error.
    #[arg(short, long)]
    quiet: bool,
}

impl SamplingArgs {
    fn options(&self) -> anyhow::Result<GenerateOptions> {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        let sampling = SamplingParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repeat_penalty,
            seed,
            ..SamplingParams::default()
        };
        sampling.validate()?;
        Ok(GenerateOptions::default()
            .with_max_tokens(self.max_tokens)
            .with_sampling(sampling)
            .with_stop(self.stop.clone())
            .with_ignore_eos(false))
    }
}

/// Arguments of `edgecut generate`.
#[derive(clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    llm: LlmArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    split: DecodeSplitArgs,
    /// Wrap the prompt in the model's chat template as one user message.
    #[arg(long)]
    chat: bool,
    /// The prompt (default: all of standard input).
    prompt: Option<String>,
}

/// Writes a piece to stdout at once; `false` (stop generating) when stdout is closed.
fn emit(piece: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(piece.as_bytes())
        .and_then(|_| out.flush())
        .is_ok()
}

fn stats(g: &Generation, seed: u64, sampled: bool) {
    let rate = |n: usize, d: std::time::Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let finish = match g.finish {
        Finish::EndOfSequence => "end of sequence",
        Finish::StopString => "stop string",
        Finish::MaxTokens => "max tokens",
        Finish::ContextFull => "context full",
        Finish::Cancelled => "cancelled",
        _ => "another reason",
    };
    let prefilled = g.prompt_tokens - g.cached_tokens;
    eprintln!(
        "[prompt {} tokens ({} cached), prefill {:.1} tokens/s; generated {} tokens, decode \
         {:.1} tokens/s; stopped: {finish}{}]",
        g.prompt_tokens,
        g.cached_tokens,
        rate(prefilled, g.prefill),
        g.tokens.len(),
        rate(g.tokens.len().saturating_sub(1), g.decode),
        if sampled {
            format!("; seed {seed}")
        } else {
            String::new()
        }
    );
}

/// Runs `edgecut generate`.
pub fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    let prompt = match a.prompt {
        Some(p) => p,
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                anyhow::bail!("no prompt given: pass it as an argument or on standard input");
            }
            let mut s = String::new();
            stdin
                .lock()
                .read_to_string(&mut s)
                .context("reading standard input")?;
            s
        }
    };
    let opts = a.sampling.options()?;
    let llm = a.llm.open()?;
    let text = if a.chat {
        llm.render_chat(&[edgecut::Message::new("user", prompt)])?
    } else {
        prompt
    };
    let ids = llm.tokenize(&text)?;
    let g = match a.split.link(&llm, &opts.sampling)? {
        None => llm.new_context()?.generate(&ids, &opts, &mut emit)?,
        Some(mut link) => {
            let mut d = edgecut::split::SplitDecoder::new(&llm, a.split.cut)?;
            let g = d.generate(&ids, &opts, &mut link, &mut emit)?;
            emit("\n");
            report_split(&g, &link);
            if !a.sampling.quiet {
                stats(
                    &g.generation,
                    opts.sampling.seed,
                    opts.sampling.temperature > 0.0,
                );
            }
            return Ok(());
        }
    };
    emit("\n");
    if !a.sampling.quiet {
        stats(&g, opts.sampling.seed, opts.sampling.temperature > 0.0);
    }
    Ok(())
}

/// Arguments of `edgecut chat`.
#[derive(clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    llm: LlmArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    split: DecodeSplitArgs,
    /// System message (default: the chat template's).
    #[arg(long)]
    system: Option<String>,
}

/// Runs `edgecut chat`: one user message per line of standard input; `/reset` starts over,
/// `/exit` (or end of input) ends.
pub fn chat(a: ChatArgs) -> anyhow::Result<()> {
    let opts = a.sampling.options()?;
    let llm = a.llm.open()?;
    let interactive = std::io::stdin().is_terminal();
    let new_chat = || -> anyhow::Result<Conversation> {
        let link = a.split.link(&llm, &opts.sampling)?;
        Conversation::new(&llm, a.system.as_deref(), link, a.split.cut)
    };
    let mut chat = new_chat()?;
    if interactive {
        eprintln!(
            "edgecut chat: {} ({} context tokens, KV cache {:.1} MB). /reset starts over, \
             /exit or Ctrl-D ends.",
            a.llm.model.display(),
            llm.context_len(),
            llm.kv_cache_bytes() as f64 / 1e6
        );
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading standard input")?;
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                chat = new_chat()?;
                eprintln!("[history cleared]");
                continue;
            }
            _ => {}
        }
        let g = match chat.send(&llm, line, &opts) {
            Ok(g) => g,
            Err(e) => {
                // The message is not added to the history; the chat goes on.
                eprintln!("error: {e:#}");
                continue;
            }
        };
        emit("\n");
        if !a.sampling.quiet {
            stats(&g, opts.sampling.seed, opts.sampling.temperature > 0.0);
        }
        if g.finish == Finish::ContextFull {
            eprintln!("[the context is full: /reset to start a new conversation]");
        }
    }
    Ok(())
}

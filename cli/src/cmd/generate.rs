//! `edgecut generate` and `edgecut chat`: text generation with a decoder, streamed
//! to standard output as it is produced.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use edgecut::{Chat, Finish, GenerateOptions, Generation, Llm, LlmOptions, SamplingParams};

use super::generate_split::{DecodeSplitArgs, SplitConversation};

/// Which decoder to run, where.
#[derive(clap::Args, Clone)]
pub struct LlmArgs {
    /// The model file (GGUF, a decoder architecture: llama, qwen2, qwen3).
    #[arg(short, long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub run: super::session::RunArgs,
    /// Context length in tokens, the size of the KV cache (default: the model's, at most 2048).
    #[arg(long)]
    pub context: Option<usize>,
    /// How the KV cache stores keys and values: f16 (half the memory) or f32 (the values as
    /// computed; CPU only).
    #[arg(long, value_enum, default_value = "f16")]
    pub kv_type: KvTypeArg,
}

/// `--kv-type`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum KvTypeArg {
    /// Half precision.
    F16,
    /// Single precision.
    F32,
}

impl From<KvTypeArg> for edgecut::KvType {
    fn from(k: KvTypeArg) -> Self {
        match k {
            KvTypeArg::F16 => edgecut::KvType::F16,
            KvTypeArg::F32 => edgecut::KvType::F32,
        }
    }
}

impl LlmArgs {
    /// Opens the model.
    pub fn open(&self) -> anyhow::Result<Llm> {
        let opts = LlmOptions::default()
            .with_device(self.run.device)
            .with_threads(self.run.threads)
            .with_context(self.context)
            .with_kv_type(self.kv_type.into());
        // A GPU asked for by name and missing is an error from the library.
        Llm::open(&self.model, &opts).with_context(|| format!("opening {}", self.model.display()))
    }
}

/// One conversation, on this device or split with a server (one per process: its size is no
/// concern).
#[allow(clippy::large_enum_variant)]
enum Conversation {
    Local(Chat),
    Split {
        split: SplitConversation,
        messages: Vec<edgecut::Message>,
    },
}

impl Conversation {
    fn new(
        llm: &Llm,
        system: Option<&str>,
        split: Option<SplitConversation>,
    ) -> anyhow::Result<Conversation> {
        Ok(match split {
            None => Conversation::Local(Chat::new(llm, system)?),
            Some(split) => Conversation::Split {
                split,
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
        quiet: bool,
    ) -> anyhow::Result<Generation> {
        match self {
            Conversation::Local(chat) => Ok(chat.send(user, opts, &mut emit)?),
            Conversation::Split { split, messages } => {
                messages.push(edgecut::Message::new("user", user));
                let run = llm
                    .render_chat(messages)
                    .and_then(|text| llm.tokenize(&text))
                    .map_err(anyhow::Error::from)
                    .and_then(|ids| split.turn(llm, &ids, opts, quiet, &mut emit));
                match run {
                    Ok(g) => {
                        messages.push(edgecut::Message::new(
                            "assistant",
                            g.generation.text.clone(),
                        ));
                        Ok(g.generation)
                    }
                    Err(e) => {
                        messages.pop();
                        Err(e)
                    }
                }
            }
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
    /// The prompt is token ids, comma-separated, not text (for tools that compare runtimes
    /// token by token).
    #[arg(long, conflicts_with = "chat")]
    prompt_ids: bool,
    /// Print the generated token ids, comma-separated, instead of their text.
    #[arg(long)]
    print_ids: bool,
    #[command(flatten)]
    constraint: ConstraintArgs,
    /// The prompt (default: all of standard input).
    prompt: Option<String>,
}

/// What the output must match (at most one).
#[derive(clap::Args)]
#[group(multiple = false)]
pub struct ConstraintArgs {
    /// The output is JSON valid against the JSON Schema in this file.
    #[arg(long, value_name = "FILE")]
    json_schema: Option<std::path::PathBuf>,
    /// The output is a JSON object (any).
    #[arg(long)]
    json: bool,
    /// The output matches this regular expression as a whole.
    #[arg(long, value_name = "REGEX")]
    regex: Option<String>,
    /// The output follows the grammar in this file (llguidance's Lark-like syntax:
    /// `start: ...`, `%json {...}` for an embedded schema).
    #[arg(long, value_name = "FILE")]
    grammar: Option<std::path::PathBuf>,
}

impl ConstraintArgs {
    /// The constraint asked for, read from its file.
    fn constraint(&self) -> anyhow::Result<Option<edgecut::Constraint>> {
        use edgecut::Constraint;
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        Ok(if let Some(p) = &self.json_schema {
            let schema = serde_json::from_str(&read(p)?)
                .with_context(|| format!("{} is not JSON", p.display()))?;
            Some(Constraint::JsonSchema(schema))
        } else if self.json {
            Some(Constraint::JsonObject)
        } else if let Some(r) = &self.regex {
            Some(Constraint::Regex(r.clone()))
        } else if let Some(p) = &self.grammar {
            Some(Constraint::Grammar(read(p)?))
        } else {
            None
        })
    }
}

/// Token ids written as `1,2,3` (spaces allowed).
fn parse_ids(s: &str) -> anyhow::Result<Vec<u32>> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .with_context(|| format!("--prompt-ids: {t:?} is not a token id"))
        })
        .collect()
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
    let constraint = a.constraint.constraint()?;
    let mut opts = a.sampling.options()?;
    let llm = a.llm.open()?;
    if let Some(c) = &constraint {
        let guide = llm.guide(c)?;
        if !a.sampling.quiet {
            eprintln!(
                "[constraint compiled in {:.1} ms]",
                guide.compile_time().as_secs_f64() * 1e3
            );
        }
        opts = opts.with_guide(Some(guide));
    }
    let ids = if a.prompt_ids {
        parse_ids(&prompt)?
    } else if a.chat {
        llm.tokenize(&llm.render_chat(&[edgecut::Message::new("user", prompt)])?)?
    } else {
        llm.tokenize(&prompt)?
    };
    let print_ids = a.print_ids;
    let mut out = |piece: &str| print_ids || emit(piece);
    let g = match SplitConversation::open(&llm, &a.split, &opts.sampling)? {
        None => llm.new_context()?.generate(&ids, &opts, &mut out)?,
        Some(mut split) => {
            let g = split.turn(&llm, &ids, &opts, a.sampling.quiet, &mut out)?;
            if print_ids {
                emit(&ids_text(&g.generation.tokens));
            }
            emit("\n");
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
    if print_ids {
        emit(&ids_text(&g.tokens));
    }
    emit("\n");
    if !a.sampling.quiet {
        stats(&g, opts.sampling.seed, opts.sampling.temperature > 0.0);
    }
    Ok(())
}

fn ids_text(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
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
        let split = SplitConversation::open(&llm, &a.split, &opts.sampling)?;
        Conversation::new(&llm, a.system.as_deref(), split)
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
        let g = match chat.send(&llm, line, &opts, a.sampling.quiet) {
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

//! `edgecut`: convert, inspect and run edgecut models from the command line.

mod cmd;

use clap::{Parser, Subcommand};

/// edgecut: a compact INT8 inference runtime for the edge.
#[derive(Parser)]
#[command(name = "edgecut", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a Hugging Face checkpoint directory or a llama.cpp GGUF file to edgecut's GGUF.
    Convert(cmd::convert::Args),
    /// Show a model file: architecture, hyper-parameters, tokenizer, tensors, identity.
    Inspect(cmd::inspect::Args),
    /// Sentence embeddings of texts (arguments, or one per line of standard input).
    Embed(cmd::embed::EmbedArgs),
    /// Cosine similarity of one text to others.
    Similarity(cmd::embed::SimilarityArgs),
    /// Classify texts with a sequence-classification model.
    Classify(cmd::embed::ClassifyArgs),
    /// Order documents by relevance to a query with a cross-encoder (a reranker).
    Rerank(cmd::rerank::Args),
    /// Generate text with a decoder (Llama, Qwen2, Qwen3), streamed as it is produced.
    Generate(cmd::generate::GenerateArgs),
    /// Chat with a decoder (one message per line; the history stays in the KV cache).
    Chat(cmd::generate::ChatArgs),
    /// Speed at fixed token counts: encoders ms/sentence, decoders prefill and decode tokens/s.
    Bench(cmd::bench::Args),
    /// Measure each stage of an encoder at several sequence lengths (a profile for `plan`).
    Profile(cmd::profile::Args),
    /// Choose where to cut a model between device and server from profiles and the link.
    Plan(cmd::plan::Args),
    /// Run the stages after the cut for split clients (`edgecut embed --server`).
    Serve(cmd::serve::Args),
}

fn main() {
    restore_sigpipe();
    let cli = Cli::parse();
    if let Err(e) = edgecut::cpu_kernels() {
        eprintln!("edgecut: {e}; using the best set");
    }
    let result = match cli.command {
        Command::Convert(a) => cmd::convert::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Embed(a) => cmd::embed::embed(a),
        Command::Similarity(a) => cmd::embed::similarity(a),
        Command::Classify(a) => cmd::embed::classify(a),
        Command::Rerank(a) => cmd::rerank::run(a),
        Command::Generate(a) => cmd::generate::generate(a),
        Command::Chat(a) => cmd::generate::chat(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Profile(a) => cmd::profile::run(a),
        Command::Plan(a) => cmd::plan::run(a),
        Command::Serve(a) => cmd::serve::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {}", chain(&e));
        std::process::exit(1);
    }
}

/// An error and its causes joined by `: `, leaving out a cause whose text the message already
/// holds (many of edgecut's errors name their source in their own text, so `{:#}` said the OS
/// error twice).
fn chain(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if msg.contains(&c) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&c);
    }
    msg
}

/// Rust ignores SIGPIPE, which makes `edgecut inspect m.gguf | head` panic on a closed pipe;
/// restore the default so the process ends quietly like other Unix tools.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default is async-signal-safe and done before
    // any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

//! `edgecut bench` on a decoder: prefill and decode speed at fixed token counts.

use std::time::Duration;

use edgecut::{GenerateOptions, Llm};

use super::bench::peak_rss_mb;

/// Prompt token ids of exactly `n` tokens (a repeated word, which is one token in common
/// vocabularies; trimmed or padded to `n`).
fn prompt_of(llm: &Llm, n: usize) -> anyhow::Result<Vec<u32>> {
    let mut ids = llm.tokenize(&" the quick brown fox".repeat(n / 4 + 1))?;
    if ids.is_empty() {
        anyhow::bail!("the tokenizer gives no tokens for the benchmark prompt");
    }
    while ids.len() < n {
        ids.push(ids[ids.len() % 4]);
    }
    ids.truncate(n);
    Ok(ids)
}

/// Prints prefill and decode tokens per second (medians over `iters` runs).
pub fn run(llm: &Llm, prompts: &[usize], gen: usize, iters: usize) -> anyhow::Result<()> {
    println!(
        "device  {}; context {} tokens, KV cache {:.1} MB; weights outside the map {:.1} MB",
        llm.device(),
        llm.context_len(),
        llm.kv_cache_bytes() as f64 / 1e6,
        llm.owned_bytes() as f64 / 1e6
    );
    println!(
        "{:>7} {:>7} {:>12} {:>14} {:>12} {:>14}",
        "prompt", "gen", "prefill ms", "prefill tok/s", "ms/token", "decode tok/s"
    );
    let opts = GenerateOptions::default()
        .with_max_tokens(gen.max(2))
        .with_ignore_eos(true);
    for &p in prompts {
        if p + opts.max_tokens > llm.context_len() {
            anyhow::bail!(
                "--prompt-tokens {p} + --gen-tokens {} exceed the context of {} (--context)",
                opts.max_tokens,
                llm.context_len()
            );
        }
        let ids = prompt_of(llm, p)?;
        let mut ctx = llm.new_context()?;
        // One untimed run warms the caches and the thread pool.
        ctx.clear();
        ctx.generate(&ids, &opts, &mut |_| true)?;
        let mut runs: Vec<(Duration, Duration, usize)> = Vec::new();
        for _ in 0..iters.max(1) {
            ctx.clear();
            let g = ctx.generate(&ids, &opts, &mut |_| true)?;
            runs.push((g.prefill, g.decode, g.tokens.len()));
        }
        let med = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let prefill = med(runs.iter().map(|r| r.0.as_secs_f64()).collect());
        let per_token = med(runs
            .iter()
            .map(|r| r.1.as_secs_f64() / (r.2.saturating_sub(1)).max(1) as f64)
            .collect());
        println!(
            "{p:>7} {:>7} {:>12.1} {:>14.1} {:>12.2} {:>14.1}",
            opts.max_tokens,
            prefill * 1e3,
            p as f64 / prefill,
            per_token * 1e3,
            1.0 / per_token
        );
    }
    println!("peak RSS {:.1} MB", peak_rss_mb());
    Ok(())
}

//! How a generation runs and what it gives back: [`GenerateOptions`] (limits, sampling, stop
//! strings, a guide, log-probabilities, cache reuse), and [`Generation`] with its [`Finish`] and
//! [`TokenLogprob`]s.

use std::time::Duration;

use crate::guide::Guide;
use edgecut_models::SamplingParams;

/// How to generate: `GenerateOptions::default()` and `with_*` setters (fields may be added in
/// later versions).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Sampling settings (default: greedy).
    pub sampling: SamplingParams,
    /// Generation stops before any of these strings; they are not part of the output.
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens (for benchmarks; not under a guide, whose
    /// end is the constraint's).
    pub ignore_eos: bool,
    /// A compiled constraint the text must match ([`Llm::guide`]); `None`: free text.
    pub guide: Option<Guide>,
    /// Record each generated token's log-probability and those of this many most likely
    /// alternatives ([`Generation::logprobs`]); `None`: none recorded.
    pub logprobs: Option<usize>,
    /// Reuse the prefix of the prompt a context already holds (the default). Off, the whole
    /// prompt runs as in a fresh context, so a seeded generation draws the same tokens
    /// whatever the context held before: a cached prefix's keys and values were computed in
    /// other groups of positions (and stored at f16 before the rest attended to them), which
    /// moves logits in their last bits, enough to change a sampled token at a near-tie.
    pub reuse_cache: bool,
}

impl GenerateOptions {
    /// Most tokens to generate.
    pub fn with_max_tokens(mut self, max_tokens: usize) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Sampling settings.
    pub fn with_sampling(mut self, sampling: SamplingParams) -> Self {
        self.sampling = sampling;
        self
    }

    /// Stop strings.
    pub fn with_stop(mut self, stop: Vec<String>) -> Self {
        self.stop = stop;
        self
    }

    /// Keep going past end-of-sequence tokens.
    pub fn with_ignore_eos(mut self, ignore_eos: bool) -> Self {
        self.ignore_eos = ignore_eos;
        self
    }

    /// The constraint the text must match (compiled by [`Llm::guide`]).
    pub fn with_guide(mut self, guide: Option<Guide>) -> Self {
        self.guide = guide;
        self
    }

    /// Record log-probabilities, with `top` alternatives per token (`None`: off).
    pub fn with_logprobs(mut self, top: Option<usize>) -> Self {
        self.logprobs = top;
        self
    }

    /// Reuse a cached prefix of the prompt (default `true`; see
    /// [`GenerateOptions::reuse_cache`]).
    pub fn with_cache_reuse(mut self, reuse: bool) -> Self {
        self.reuse_cache = reuse;
        self
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            ignore_eos: false,
            guide: None,
            logprobs: None,
            reuse_cache: true,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finish {
    /// The model produced an end-of-sequence or end-of-turn token.
    EndOfSequence,
    /// A stop string appeared.
    StopString,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context is full (edgecut does not slide the window: start a new context).
    ContextFull,
    /// The callback asked to stop.
    Cancelled,
}

/// One generation's result and statistics.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Generation {
    /// The generated text (stop string excluded).
    pub text: String,
    /// The generated token ids (the end-of-sequence token excluded).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub finish: Finish,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values were already in the cache (not recomputed).
    pub cached_tokens: usize,
    /// Time to run the rest of the prompt and produce the first token.
    pub prefill: Duration,
    /// Time spent producing the remaining tokens.
    pub decode: Duration,
    /// Each generated token's log-probability, when asked for
    /// ([`GenerateOptions::with_logprobs`]; empty otherwise).
    pub logprobs: Vec<TokenLogprob>,
}

/// A generated token's log-probability and its most likely alternatives, from the distribution
/// it was drawn from before temperature and truncation: the model's logits after the
/// repetition penalty and a guide's mask (so a constrained token's probability is among the
/// tokens the constraint allowed).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TokenLogprob {
    /// The token.
    pub id: u32,
    /// Its natural log-probability.
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, most likely first.
    pub top: Vec<(u32, f32)>,
}

impl TokenLogprob {
    /// The log-probability of `id` under `logits`, and the `top` most likely.
    pub(crate) fn of(logits: &[f32], id: u32, top: usize) -> TokenLogprob {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>();
        let norm = max as f64 + sum.ln();
        let lp = |l: f32| (l as f64 - norm) as f32;
        let mut cand: Vec<(u32, f32)> = Vec::new();
        if top > 0 {
            cand = logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, l))
                .collect();
            edgecut_models::sampling::keep_largest(&mut cand, top);
            cand.retain(|c| c.1 > f32::NEG_INFINITY);
            cand.iter_mut().for_each(|c| c.1 = lp(c.1));
        }
        TokenLogprob {
            id,
            logprob: lp(logits[id as usize]),
            top: cand,
        }
    }
}

//! A generation's settings from Python (the options dict `edgecut.LLM` builds) and its result
//! (`Generation`).

use edgecut::{Constraint, Finish, GenerateOptions, SamplingParams};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::invalid;

/// The most alternatives `logprobs=` records per token (as the HTTP API's `top_logprobs`).
const MAX_TOP_LOGPROBS: usize = 20;

/// Settings as the Python layer passes them: every key optional, unknown keys refused.
pub(crate) struct Settings {
    pub(crate) opts: GenerateOptions,
    /// What the text must match, compiled against the model before the run.
    pub(crate) constraint: Option<Constraint>,
}

/// Reads `options` (`max_tokens`, `temperature`, `top_k`, `top_p`, `repetition_penalty`,
/// `seed`, `stop`, `ignore_eos`, `cache_reuse`, `logprobs`, and at most one of `json_schema`,
/// `json_object`, `regex`, `grammar`).
pub(crate) fn settings(py: Python<'_>, options: Option<&Bound<'_, PyDict>>) -> PyResult<Settings> {
    let mut sampling = SamplingParams::default();
    let mut opts = GenerateOptions::default();
    let mut constraints = Vec::new();
    if let Some(options) = options {
        for (k, v) in options.iter() {
            let key: String = k.extract()?;
            if v.is_none() {
                continue;
            }
            match key.as_str() {
                "max_tokens" => opts.max_tokens = v.extract()?,
                "temperature" => sampling.temperature = v.extract()?,
                "top_k" => sampling.top_k = v.extract()?,
                "top_p" => sampling.top_p = v.extract()?,
                "repetition_penalty" => sampling.repetition_penalty = v.extract()?,
                "seed" => sampling.seed = v.extract()?,
                "stop" => {
                    opts.stop = match v.extract::<String>() {
                        Ok(one) => vec![one],
                        Err(_) => v.extract()?,
                    }
                }
                "ignore_eos" => opts.ignore_eos = v.extract()?,
                "cache_reuse" => opts.reuse_cache = v.extract()?,
                "logprobs" => {
                    let top: usize = v.extract()?;
                    if top > MAX_TOP_LOGPROBS {
                        return Err(invalid(
                            py,
                            format!("logprobs={top}: at most {MAX_TOP_LOGPROBS} alternatives"),
                        ));
                    }
                    opts.logprobs = Some(top);
                }
                "json_schema" => {
                    // A schema as a dict (or anything JSON-serialisable), or as JSON text.
                    let text: String = match v.extract::<String>() {
                        Ok(t) => t,
                        Err(_) => py.import("json")?.call_method1("dumps", (&v,))?.extract()?,
                    };
                    let schema = serde_json::from_str(&text)
                        .map_err(|e| invalid(py, format!("json_schema is not JSON: {e}")))?;
                    constraints.push(("json_schema", Constraint::JsonSchema(schema)));
                }
                "json_object" => {
                    if v.extract::<bool>()? {
                        constraints.push(("json_object", Constraint::JsonObject));
                    }
                }
                "regex" => constraints.push(("regex", Constraint::Regex(v.extract()?))),
                "grammar" => constraints.push(("grammar", Constraint::Grammar(v.extract()?))),
                other => return Err(invalid(py, format!("unknown generation option {other:?}"))),
            }
        }
    }
    sampling
        .validate()
        .map_err(|e| invalid(py, e.to_string()))?;
    if constraints.len() > 1 {
        let names: Vec<&str> = constraints.iter().map(|(n, _)| *n).collect();
        return Err(invalid(
            py,
            format!("at most one of json_schema, json_object, regex, grammar (got {names:?})"),
        ));
    }
    Ok(Settings {
        opts: opts.with_sampling(sampling),
        constraint: constraints.pop().map(|(_, c)| c),
    })
}

/// What a generation produced, and how it went.
#[pyclass(frozen, module = "edgecut", name = "Generation")]
pub struct Generation {
    /// The generated text (a stop string excluded).
    #[pyo3(get)]
    text: String,
    /// The generated token ids.
    #[pyo3(get)]
    tokens: Vec<u32>,
    /// Why it ended: `"stop"` (end of sequence, a stop string, or a complete constraint),
    /// `"length"` (`max_tokens`), `"context_full"` or `"cancelled"`.
    #[pyo3(get)]
    finish_reason: &'static str,
    /// Tokens in the prompt.
    #[pyo3(get)]
    prompt_tokens: usize,
    /// Prompt tokens found in the KV cache (not computed again).
    #[pyo3(get)]
    cached_tokens: usize,
    /// Seconds to the first token (the prompt's uncached part and one token).
    #[pyo3(get)]
    prefill_seconds: f64,
    /// Seconds for the tokens after the first.
    #[pyo3(get)]
    decode_seconds: f64,
    /// Why a split generation finished on the device alone (`None`: it did not).
    #[pyo3(get)]
    fell_back: Option<String>,
    /// With `logprobs=N`: per generated token, `(id, logprob, [(id, logprob)] * N most likely)`
    /// (natural logs, from the distribution before temperature; empty otherwise).
    #[pyo3(get)]
    logprobs: Vec<Logprob>,
}

/// A token's log-probability and its most likely alternatives.
type Logprob = (u32, f32, Vec<(u32, f32)>);

impl Generation {
    pub(crate) fn new(g: edgecut::Generation, fell_back: Option<String>) -> Generation {
        Generation {
            finish_reason: match g.finish {
                Finish::EndOfSequence | Finish::StopString => "stop",
                Finish::MaxTokens => "length",
                Finish::ContextFull => "context_full",
                Finish::Cancelled => "cancelled",
                _ => "stop",
            },
            prefill_seconds: g.prefill.as_secs_f64(),
            decode_seconds: g.decode.as_secs_f64(),
            prompt_tokens: g.prompt_tokens,
            cached_tokens: g.cached_tokens,
            logprobs: g
                .logprobs
                .into_iter()
                .map(|l| (l.id, l.logprob, l.top))
                .collect(),
            text: g.text,
            tokens: g.tokens,
            fell_back,
        }
    }
}

#[pymethods]
impl Generation {
    /// Generated tokens.
    #[getter]
    fn completion_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Tokens per second after the first (0 with fewer than two tokens).
    #[getter]
    fn decode_tokens_per_second(&self) -> f64 {
        let n = self.tokens.len().saturating_sub(1);
        if n == 0 || self.decode_seconds <= 0.0 {
            0.0
        } else {
            n as f64 / self.decode_seconds
        }
    }

    fn __str__(&self) -> String {
        self.text.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "Generation({:?}, finish_reason={:?}, {} prompt + {} generated tokens)",
            self.text,
            self.finish_reason,
            self.prompt_tokens,
            self.tokens.len()
        )
    }
}

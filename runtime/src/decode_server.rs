//! The server's half of a split decoder ([`ServerDecoder`]): blocks `cut..n` and the head over
//! its own KV cache, answering each sampled step with the next token (drawn with the device's
//! seed) or, when the device samples itself (a repetition penalty), with the largest logits
//! ([`top_logits_for`] says how many). Several sessions' steps run as one batch
//! ([`ServerDecoder::step_many`]).

use edgecut_models::sampling::keep_largest;
use edgecut_models::{KvCache, Sampler, SamplingParams};

use crate::{Error, Llm, Result};

/// How many of the server's logits a device needs to sample exactly as a local run does with
/// `sampling`: `Ok(None)` without a repetition penalty (the server samples with the device's
/// seed), `Ok(Some(n))` with one. A penalty above 1 only lowers the logits of the (at most
/// `penalty_window`) tokens it touches, so the top-`k` after it lie among the `k + window`
/// largest before it; greedy choice is top-1. Sampling the whole vocabulary (`top_k` 0 with a
/// temperature), or a penalty below 1 (which can lift any token), needs every logit:
/// `Err(why)`, and the device runs alone.
pub fn top_logits_for(sampling: &SamplingParams) -> Result<Option<usize>, TopLogitsError> {
    let p = sampling;
    if p.repetition_penalty == 1.0 {
        return Ok(None);
    }
    if p.repetition_penalty < 1.0 {
        return Err(TopLogitsError::PenaltyBelowOne(p.repetition_penalty));
    }
    let k = if p.draws_greedily() { 1 } else { p.top_k };
    let n = k.saturating_add(p.penalty_window);
    if k == 0 {
        return Err(TopLogitsError::WholeVocabulary {
            top_k: MAX_TOP as usize - p.penalty_window.min(MAX_TOP as usize),
        });
    }
    if n > MAX_TOP as usize {
        return Err(TopLogitsError::TooMany {
            k,
            top_k: MAX_TOP as usize - p.penalty_window.min(MAX_TOP as usize),
        });
    }
    Ok(Some(n))
}

/// Why a sampling cannot be split (the device then runs alone).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TopLogitsError {
    /// A penalty below 1 raises repeated tokens, from anywhere in the vocabulary.
    #[error(
        "a repetition penalty of {0} (below 1) can lift any token: a split needs every logit \
         for it, so the device runs alone"
    )]
    PenaltyBelowOne(f32),
    /// Temperature sampling over the whole vocabulary.
    #[error(
        "sampling from the whole vocabulary with a repetition penalty needs more than the \
         {MAX_TOP} logits a server sends: with --top-k {top_k} or less it splits; now the \
         device runs alone"
    )]
    WholeVocabulary {
        /// The largest top-k that splits.
        top_k: usize,
    },
    /// Top-k sampling with `k` plus the penalty window over the wire's limit.
    #[error(
        "sampling from the top {k} with a repetition penalty needs more than the {MAX_TOP} \
         logits a server sends: with --top-k {top_k} or less it splits; now the device runs \
         alone"
    )]
    TooMany {
        /// The top-k asked for.
        k: usize,
        /// The largest top-k that splits.
        top_k: usize,
    },
}

/// The largest magnitude a step's hidden states may have. Real models' states between blocks
/// stay within a few thousand (the "massive activations" of large models reach ~1e4); values
/// near f32's limit would overflow the next norm's sum of squares.
pub const MAX_HIDDEN: f32 = 1e6;

/// The most logits a server sends per step (the wire's limit).
pub const MAX_TOP: u16 = edgecut_wire::MAX_TOP_LOGITS;

/// The `n` largest of `logits`, largest first, ties by lower index (the sampler's order).
fn top_n(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut all: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    keep_largest(&mut all, n);
    all
}

/// The server's half of a split decoder session: blocks `cut..n` and the head, with their own
/// KV cache.
pub struct ServerDecoder {
    llm: Llm,
    cut: usize,
    cache: KvCache,
    sampler: Sampler,
    /// The groups of rows run so far (a rewind drops those past it).
    held: usize,
    /// Logits to answer instead of a token (0: sample here).
    top: usize,
    /// The last sampled step's largest logits, in top-logits mode.
    top_out: Option<Vec<(u32, f32)>>,
}

impl std::fmt::Debug for ServerDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerDecoder(cut {}, {:?})", self.cut, self.cache)
    }
}

impl ServerDecoder {
    /// A session of `context` positions for a device that runs blocks `0..cut`, sampling with
    /// `sampling` (a repetition penalty needs the prompt's tokens, which the server never sees:
    /// refused).
    pub fn open(llm: &Llm, cut: usize, context: usize, sampling: SamplingParams) -> Result<Self> {
        let layers = llm.inner.model.config.layers;
        if cut == 0 || cut >= layers {
            return Err(Error::Input(format!(
                "cut {cut}: a split decoder runs 1 to {} blocks on the device",
                layers - 1
            )));
        }
        sampling
            .validate()
            .map_err(|e| Error::Input(e.to_string()))?;
        if sampling.repetition_penalty != 1.0 {
            return Err(Error::Input(
                "a repetition penalty needs the prompt's tokens, which a split server never \
                 sees: sample on the device (top logits) or drop the penalty"
                    .into(),
            ));
        }
        let cache = llm.inner.model.new_cache_for(cut..layers, context)?;
        Ok(ServerDecoder {
            llm: llm.clone(),
            cut,
            cache,
            sampler: Sampler::new(sampling),
            held: 0,
            top: 0,
            top_out: None,
        })
    }

    /// Bytes of the session's KV cache.
    pub fn kv_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Positions held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Positions the session may fill.
    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// Checks a step's rows against the session before anything runs (what [`Self::step`]
    /// checks first): rows of the hidden size, a position at most those held, room in the
    /// context, and values that hidden states can hold. Gives the rows.
    pub fn check_step(&self, position: usize, hidden: &[f32]) -> Result<usize> {
        self.check(position, hidden)
    }

    fn check(&self, position: usize, hidden: &[f32]) -> Result<usize> {
        let h = self.llm.inner.model.config.hidden;
        if hidden.is_empty() || !hidden.len().is_multiple_of(h) {
            return Err(Error::Input(format!(
                "{} values are not rows of {h}",
                hidden.len()
            )));
        }
        if position > self.held {
            return Err(Error::Input(format!(
                "position {position} after {} held: positions must follow each other",
                self.held
            )));
        }
        let rows = hidden.len() / h;
        if position + rows > self.cache.capacity() {
            return Err(Error::ContextFull {
                tokens: rows,
                used: position,
                capacity: self.cache.capacity(),
            });
        }
        if hidden.iter().any(|v| !v.is_finite()) {
            return Err(Error::Input(
                "the hidden states hold a NaN or an infinity".into(),
            ));
        }
        if let Some(v) = hidden.iter().find(|v| v.abs() > MAX_HIDDEN) {
            return Err(Error::Input(format!(
                "a hidden state of {v:e}: states at a cut stay within +-{MAX_HIDDEN:e} (larger \
                 ones overflow the blocks after it)"
            )));
        }
        Ok(rows)
    }

    /// Samples from the logits of a step's last row.
    /// The next token; in top-logits mode `None`, the largest logits kept for
    /// [`ServerDecoder::take_top`].
    fn pick(&mut self, mut logits: Vec<f32>) -> Result<Option<u32>> {
        if logits.iter().any(|v| !v.is_finite()) {
            return Err(Error::Input(
                "the logits are not finite: the hidden states overflowed".into(),
            ));
        }
        if self.top > 0 {
            self.top_out = Some(top_n(&logits, self.top));
            return Ok(None);
        }
        Ok(Some(self.sampler.sample(&mut logits, &[])))
    }

    /// Answers each sampled step with the `n` largest logits instead of a token (`n` >= 1,
    /// at most [`MAX_TOP`]): the device samples (a repetition penalty). A sampled step then
    /// returns `Ok(None)` and leaves them for [`ServerDecoder::take_top`].
    pub fn with_top_logits(mut self, n: usize) -> Self {
        self.top = n.min(MAX_TOP as usize);
        self
    }

    /// The largest logits of the last sampled step, in top-logits mode (taken: a second call
    /// gives `None`).
    pub fn take_top(&mut self) -> Option<Vec<(u32, f32)>> {
        self.top_out.take()
    }

    /// Runs the rows `hidden` at `position` (at most [`ServerDecoder::held`]: less rewinds)
    /// through blocks `cut..n`; with `sample`, the head on the last row and the next token.
    /// Checks every value before any is run.
    pub fn step(&mut self, position: usize, hidden: Vec<f32>, sample: bool) -> Result<Option<u32>> {
        let rows = self.check(position, &hidden)?;
        let model = &self.llm.inner.model;
        let h = model.config.hidden;
        let kept = self.cache.truncate(position);
        self.held = kept;
        if kept < position {
            return Err(rewind_error(position));
        }
        let out = model.blocks(&mut self.cache, hidden)?;
        self.held += rows;
        if !sample {
            return Ok(None);
        }
        let logits = model.head(&out[(rows - 1) * h..])?;
        self.pick(logits)
    }

    /// The steps of several sessions of one model at once (each as [`ServerDecoder::step`]
    /// would run it): sessions of one cut run their matrix products on all their rows
    /// together, and the heads of all sampled rows run together. Each step is checked on its
    /// own; one refused does not hold the others back.
    pub fn step_many(mut steps: Vec<DecodeStep<'_>>) -> Vec<Result<Option<u32>>> {
        let n = steps.len();
        let mut results: Vec<Option<Result<Option<u32>>>> = (0..n).map(|_| None).collect();
        let mut passed = vec![false; n];
        for (i, st) in steps.iter().enumerate() {
            match st.dec.check(st.position, &st.hidden) {
                Ok(_) => passed[i] = true,
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let mut cuts: Vec<usize> = (0..n)
            .filter(|&i| passed[i])
            .map(|i| steps[i].dec.cut)
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut outs: Vec<Option<Vec<f32>>> = (0..n).map(|_| None).collect();
        for cut in cuts {
            let mut idx: Vec<usize> = (0..n)
                .filter(|&i| passed[i] && steps[i].dec.cut == cut)
                .collect();
            idx.retain(|&i| {
                let st = &mut steps[i];
                st.dec.held = st.dec.cache.truncate(st.position);
                if st.dec.held < st.position {
                    results[i] = Some(Err(rewind_error(st.position)));
                }
                st.dec.held == st.position
            });
            let Some(&first) = idx.first() else {
                continue;
            };
            let llm = steps[first].dec.llm.clone();
            let mut xs = Vec::with_capacity(idx.len());
            for &i in &idx {
                xs.push(std::mem::take(&mut steps[i].hidden));
            }
            let mut caches: Vec<&mut KvCache> = steps
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| idx.contains(i))
                .map(|(_, st)| &mut st.dec.cache)
                .collect();
            let run = llm.inner.model.blocks_many(&mut caches, xs);
            drop(caches);
            match run {
                Ok(o) => {
                    let h = llm.inner.model.config.hidden;
                    for (&i, out) in idx.iter().zip(o) {
                        steps[i].dec.held += out.len() / h;
                        outs[i] = Some(out);
                    }
                }
                Err(e) => {
                    for &i in &idx {
                        results[i] = Some(Err(Error::Input(e.to_string())));
                    }
                }
            }
        }
        let sampled: Vec<usize> = (0..n)
            .filter(|&i| outs[i].is_some() && steps[i].sample)
            .collect();
        for i in 0..n {
            if outs[i].is_some() && !steps[i].sample {
                results[i] = Some(Ok(None));
            }
        }
        if let Some(&first) = sampled.first() {
            let llm = steps[first].dec.llm.clone();
            let (h, vocab) = (llm.inner.model.config.hidden, llm.inner.model.config.vocab);
            let mut last = Vec::with_capacity(sampled.len() * h);
            for &i in &sampled {
                let o = outs[i].as_ref().expect("ran");
                last.extend_from_slice(&o[o.len() - h..]);
            }
            match llm.inner.model.head(&last) {
                Ok(logits) => {
                    for (j, &i) in sampled.iter().enumerate() {
                        let l = logits[j * vocab..(j + 1) * vocab].to_vec();
                        results[i] = Some(steps[i].dec.pick(l));
                    }
                }
                Err(e) => {
                    for &i in &sampled {
                        results[i] = Some(Err(Error::Input(e.to_string())));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Input("the step did not run".into()))))
            .collect()
    }
}

/// One session's step for [`ServerDecoder::step_many`].
pub struct DecodeStep<'a> {
    /// The session.
    pub dec: &'a mut ServerDecoder,
    /// Position of the first row.
    pub position: usize,
    /// `rows x hidden` values at the cut.
    pub hidden: Vec<f32>,
    /// Whether to answer the next token.
    pub sample: bool,
}

/// A step at a position the cache cannot rewind to: its sliding-window layers' rings were
/// overwritten by the positions since forgotten.
fn rewind_error(position: usize) -> Error {
    Error::Input(format!(
        "cannot rewind to position {position}: the sliding-window layers no longer hold the \
         positions before it (send the conversation again)"
    ))
}

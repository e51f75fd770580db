//! Split decoding: the device runs a decoder's embeddings and blocks `0..cut` token by token and
//! keeps the hidden states at the cut of every position; a server runs blocks `cut..n` and the
//! head over its own KV cache of those layers ([`ServerDecoder`]) and answers the next token.
//! When the server is lost, refuses or fails, the device ([`SplitDecoder`]) rebuilds those
//! layers' cache from the stored hidden states, in the groups the server ran them, and goes on
//! alone from the same position: the reply is the one an uninterrupted local run gives (bit for
//! bit with f32 on the wire; with f16 or int8 the tokens after the fallback are those of a local
//! run over the prompt and the tokens received). The transport is a [`DecodeLink`]
//! (`edgecut-split`'s client over TCP, or anything else).

use std::time::Instant;

use edgecut_models::{KvCache, Sampler, SamplingParams};

use crate::generation::decode_loop;
use crate::llm::{prefill_chunks, start_turn, GenerateOptions, Generation};
use crate::{Error, Llm, Result};

/// Why a link could not run a step (the server lost, refusing or failing): the link's own
/// error, kept as it is.
pub type LinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where blocks `cut..n` and the head run while the split holds.
pub trait DecodeLink {
    /// Runs the server's layers on `hidden` (`rows x hidden` values at the cut, for positions
    /// `position..position + rows`; `position` is at most what the server holds: less rewinds
    /// it). `sample`: answer the token after the last row. `Err(reason)`: the server is lost,
    /// refused or failed; the device goes on alone.
    fn step(
        &mut self,
        position: usize,
        hidden: &[f32],
        sample: bool,
    ) -> std::result::Result<Option<u32>, LinkError>;

    /// Positions the server holds for this conversation, when the link knows (a link with no
    /// session holds 0: the next turn then re-sends the conversation). `None`: unknown.
    fn held(&self) -> Option<usize> {
        None
    }

    /// As [`DecodeLink::step`] with `sample`, but the answer is the server's `n` largest logits
    /// after the last row, `(token, logit)`, largest first (ties: the lower token first): the
    /// device samples itself, as it must with a repetition penalty (the server never sees the
    /// tokens). `n` is the link's to ask for when it opens its session
    /// ([`top_logits_for`]). A link that cannot answer so fails the step, and the device goes
    /// on alone.
    fn step_top(
        &mut self,
        position: usize,
        hidden: &[f32],
    ) -> std::result::Result<Vec<(u32, f32)>, LinkError> {
        let _ = (position, hidden);
        Err("this link cannot send logits for the device to sample".into())
    }
}

/// How many of the server's logits a device needs to sample exactly as a local run does with
/// `sampling`: `Ok(None)` without a repetition penalty (the server samples with the device's
/// seed), `Ok(Some(n))` with one. A penalty above 1 only lowers the logits of the (at most
/// `penalty_window`) tokens it touches, so the top-`k` after it lie among the `k + window`
/// largest before it; greedy choice is top-1. Sampling the whole vocabulary (`top_k` 0 with a
/// temperature), or a penalty below 1 (which can lift any token), needs every logit:
/// `Err(why)`, and the device runs alone.
pub fn top_logits_for(sampling: &SamplingParams) -> std::result::Result<Option<usize>, String> {
    let p = sampling;
    if p.repetition_penalty == 1.0 {
        return Ok(None);
    }
    if p.repetition_penalty < 1.0 {
        return Err(format!(
            "a repetition penalty of {} (below 1) can lift any token: a split needs every \
             logit for it, so the device runs alone",
            p.repetition_penalty
        ));
    }
    let k = if p.temperature == 0.0 { 1 } else { p.top_k };
    let n = k.saturating_add(p.penalty_window);
    if k == 0 || n > MAX_TOP as usize {
        return Err(format!(
            "sampling from {} with a repetition penalty needs more than the {MAX_TOP} logits a \
             server sends: with --top-k {} or less it splits; now the device runs alone",
            if k == 0 {
                "the whole vocabulary".to_string()
            } else {
                format!("the top {k}")
            },
            (MAX_TOP as usize).saturating_sub(p.penalty_window)
        ));
    }
    Ok(Some(n))
}

/// The most logits a server sends per step (the wire's limit).
pub const MAX_TOP: u16 = 1024;

/// The `n` largest of `logits`, largest first, ties by lower index (the sampler's order).
fn top_n(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let by = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let mut all: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    let n = n.min(all.len());
    if n == 0 {
        return Vec::new();
    }
    if n < all.len() {
        all.select_nth_unstable_by(n - 1, by);
        all.truncate(n);
    }
    all.sort_unstable_by(by);
    all
}

/// How a split generation went.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SplitGeneration {
    /// The generation, as a local one reports it.
    pub generation: Generation,
    /// `Some((tokens, reason))`: the server was lost after `tokens` generated tokens of this
    /// turn and the device finished alone.
    pub fell_back: Option<(usize, String)>,
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

    /// Checks a step's rows against the session before anything runs.
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
        self.cache.truncate(position);
        self.held = position;
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
            let idx: Vec<usize> = (0..n)
                .filter(|&i| passed[i] && steps[i].dec.cut == cut)
                .collect();
            let llm = steps[idx[0]].dec.llm.clone();
            let mut xs = Vec::with_capacity(idx.len());
            for &i in &idx {
                let st = &mut steps[i];
                st.dec.cache.truncate(st.position);
                st.dec.held = st.position;
                xs.push(std::mem::take(&mut st.hidden));
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

/// The device's half of a split decoder: embeddings and blocks `0..cut`, the hidden states at
/// the cut of every position, and (after a fallback) blocks `cut..n` of its own.
pub struct SplitDecoder {
    llm: Llm,
    cut: usize,
    lower: KvCache,
    /// Blocks `cut..n` on the device, rebuilt when the server was lost.
    upper: Option<KvCache>,
    /// `[positions, hidden]` values at the cut.
    stored: Vec<f32>,
    /// Rows of each run, in order: how the server ran them, and how a fallback replays them.
    groups: Vec<usize>,
    tokens: Vec<u32>,
    /// Positions the server holds (`None`: no session there; the next turn re-sends them all).
    server: Option<usize>,
}

impl std::fmt::Debug for SplitDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SplitDecoder(cut {}, {} positions, {})",
            self.cut,
            self.tokens.len(),
            if self.upper.is_some() {
                "local"
            } else {
                "split"
            }
        )
    }
}

impl SplitDecoder {
    /// A conversation that runs blocks `0..cut` here, the rest on a server while one answers;
    /// at `cut` = the model's blocks, all here (no server: what a planner chooses when the
    /// link costs more than it saves).
    pub fn new(llm: &Llm, cut: usize) -> Result<SplitDecoder> {
        let layers = llm.inner.model.config.layers;
        if cut == 0 || cut > layers {
            return Err(Error::Input(format!(
                "cut {cut}: a split decoder runs 1 to {layers} blocks on the device"
            )));
        }
        Ok(SplitDecoder {
            llm: llm.clone(),
            cut,
            lower: llm.inner.model.new_cache_for(0..cut, llm.context_len())?,
            upper: None,
            stored: Vec::new(),
            groups: Vec::new(),
            tokens: Vec::new(),
            server: None,
        })
    }

    /// Blocks on the device.
    pub fn cut(&self) -> usize {
        self.cut
    }

    /// The tokens of the conversation so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Whether the device runs every layer (the cut is the model's last block, or the server
    /// was lost and not yet back).
    pub fn is_local(&self) -> bool {
        self.upper.is_some() || self.all_here()
    }

    /// Whether the cut keeps every block here.
    fn all_here(&self) -> bool {
        self.cut == self.llm.inner.model.config.layers
    }

    /// Forgets positions from `len` on, everywhere.
    fn truncate(&mut self, len: usize) {
        let h = self.llm.inner.model.config.hidden;
        self.lower.truncate(len);
        if let Some(u) = &mut self.upper {
            u.truncate(len);
        }
        self.stored.truncate(len * h);
        self.tokens.truncate(len);
        let mut at = 0;
        self.groups.retain_mut(|g| {
            let keep = (len - at.min(len)).min(*g);
            at += *g;
            *g = keep;
            keep > 0
        });
        self.server = self.server.map(|s| s.min(len));
    }

    /// Rebuilds blocks `cut..n` here from the stored hidden states, group by group as the
    /// server ran them; the output of the last row.
    fn rebuild(&mut self) -> Result<Vec<f32>> {
        let model = &self.llm.inner.model;
        let h = model.config.hidden;
        let mut upper =
            model.new_cache_for(self.cut..model.config.layers, self.lower.capacity())?;
        let mut at = 0;
        let mut last = Vec::new();
        for &g in &self.groups {
            let rows = self.stored[at * h..(at + g) * h].to_vec();
            let out = model.blocks(&mut upper, rows)?;
            last = out[(g - 1) * h..].to_vec();
            at += g;
        }
        self.upper = Some(upper);
        self.server = None;
        Ok(last)
    }

    /// Runs `ids` through blocks `0..cut` here and the rest there (or here after a fallback);
    /// with `sample`, the next token.
    fn run(
        &mut self,
        ids: &[u32],
        sample: bool,
        sampler: &mut Sampler,
        link: &mut dyn DecodeLink,
        fell: &mut Option<String>,
    ) -> Result<Option<u32>> {
        let llm = self.llm.clone();
        let model = &llm.inner.model;
        let h = model.config.hidden;
        let position = self.tokens.len();
        let x = model.blocks(&mut self.lower, model.embed(ids)?)?;
        if self.all_here() {
            self.tokens.extend_from_slice(ids);
            if !sample {
                return Ok(None);
            }
            let mut logits = model.head(&x[(ids.len() - 1) * h..])?;
            return Ok(Some(sampler.sample(&mut logits, &self.tokens)));
        }
        self.stored.extend_from_slice(&x);
        self.groups.push(ids.len());
        self.tokens.extend_from_slice(ids);
        // A repetition penalty needs the conversation's tokens, which only the device has: it
        // samples itself from the server's largest logits.
        let own_draw = sample && sampler.params().repetition_penalty != 1.0;
        if self.upper.is_none() && own_draw {
            match link.step_top(position, &x) {
                Ok(top) => {
                    self.server = Some(position + ids.len());
                    let vocab = model.config.vocab;
                    if top.is_empty() || top.iter().any(|&(t, l)| t as usize >= vocab || l.is_nan())
                    {
                        *fell = Some("the server's logits are not of this model".to_string());
                    } else {
                        // Every other token below the smallest sent: out of reach of the
                        // sampler, as the argument of `top_logits_for` shows.
                        let mut logits = vec![f32::NEG_INFINITY; vocab];
                        for &(t, l) in &top {
                            logits[t as usize] = l;
                        }
                        return Ok(Some(sampler.sample(&mut logits, &self.tokens)));
                    }
                }
                Err(reason) => *fell = Some(reason.to_string()),
            }
            let last = self.rebuild()?;
            let mut logits = model.head(&last)?;
            return Ok(Some(sampler.sample(&mut logits, &self.tokens)));
        }
        if self.upper.is_none() {
            match link.step(position, &x, sample) {
                Ok(t) => {
                    self.server = Some(position + ids.len());
                    if let Some(t) = t {
                        // The server drew the token with the same seed: keep this sampler's
                        // generator in step, so that a fallback continues its sequence.
                        sampler.skip();
                        return Ok(Some(t));
                    }
                    return Ok(None);
                }
                Err(reason) => {
                    *fell = Some(reason.to_string());
                    let last = self.rebuild()?;
                    if !sample {
                        return Ok(None);
                    }
                    let mut logits = model.head(&last)?;
                    return Ok(Some(sampler.sample(&mut logits, &self.tokens)));
                }
            }
        }
        let upper = self.upper.as_mut().expect("local");
        let out = model.blocks(upper, x)?;
        if !sample {
            return Ok(None);
        }
        let mut logits = model.head(&out[(ids.len() - 1) * h..])?;
        Ok(Some(sampler.sample(&mut logits, &self.tokens)))
    }

    /// Re-sends the stored positions `from..to` to the server, group by group; false when it
    /// does not take them.
    fn resend(&mut self, to: usize, link: &mut dyn DecodeLink) -> bool {
        let h = self.llm.inner.model.config.hidden;
        let mut at = 0;
        for &g in &self.groups {
            if at + g > to {
                break;
            }
            if link
                .step(at, &self.stored[at * h..(at + g) * h], false)
                .is_err()
            {
                return false;
            }
            at += g;
        }
        at == to
    }

    /// Generates after `prompt` as [`crate::Context::generate`] does, the layers after the cut
    /// on the server behind `link` while it answers. A turn after a fallback tries the server
    /// again (re-sending the stored hidden states first).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        link: &mut dyn DecodeLink,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<SplitGeneration> {
        let capacity = self.lower.capacity();
        let common = start_turn(prompt, &self.tokens, capacity, opts)?;
        let start = Instant::now();
        self.truncate(common);
        let mut fell = None;
        if let Some(h) = link.held() {
            self.server = Some(self.server.map_or(h, |s| s.min(h)));
        }
        // Back to the server when it holds less than the common prefix (a new session, or the
        // first turn after a fallback); stay here if it does not take them.
        if !self.all_here() && self.server.is_none_or(|s| s < common) {
            if self.resend(common, link) {
                self.upper = None;
                self.server = Some(common);
            } else if self.upper.is_none() && common > 0 {
                fell = Some("the server did not take the conversation so far".to_string());
                self.rebuild()?;
            }
        }
        let mut sampler = Sampler::new(opts.sampling.clone());
        let chunks = prefill_chunks(&prompt[common..]);
        let n = chunks.len();
        let mut first = None;
        for (i, chunk) in chunks.into_iter().enumerate() {
            first = self.run(chunk, i + 1 == n, &mut sampler, link, &mut fell)?;
        }
        let mut at_fallback = fell.as_ref().map(|_| 0);
        let llm = self.llm.clone();
        let (tokens, finish, text, prefill) = decode_loop(
            &llm.inner.tokenizer,
            &llm.inner.model.config.stop_ids,
            opts,
            prompt.len(),
            capacity,
            start,
            on_text,
            &mut |prev| match prev {
                None => Ok(first.take().expect("the prompt's run samples")),
                Some(t) => {
                    let was = fell.is_some();
                    let next = self.run(&[t], true, &mut sampler, link, &mut fell)?;
                    if !was && fell.is_some() {
                        at_fallback = Some(self.tokens.len() - prompt.len());
                    }
                    Ok(next.expect("a sampled run"))
                }
            },
        )?;
        Ok(SplitGeneration {
            generation: Generation {
                text,
                tokens,
                finish,
                prompt_tokens: prompt.len(),
                cached_tokens: common,
                prefill,
                decode: start.elapsed().saturating_sub(prefill),
            },
            fell_back: fell.map(|r| (at_fallback.unwrap_or(0), r)),
        })
    }
}

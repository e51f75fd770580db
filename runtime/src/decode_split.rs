//! Split decoding: the device runs a decoder's embeddings and blocks `0..cut` token by token and
//! keeps the hidden states at the cut of every position; a server runs blocks `cut..n` and the
//! head over its own KV cache of those layers ([`ServerDecoder`](crate::split::ServerDecoder)) and answers the next token.
//! When the server is lost, refuses or fails, the device ([`SplitDecoder`]) rebuilds those
//! layers' cache from the stored hidden states, in the groups the server ran them, and goes on
//! alone from the same position: the reply is the one an uninterrupted local run gives (bit for
//! bit with f32 on the wire; with f16 or int8 the tokens after the fallback are those of a local
//! run over the prompt and the tokens received). The transport is a [`DecodeLink`]
//! (`edgecut-split`'s client over TCP, or anything else). The server's half is in
//! `decode_server.rs`.

use std::time::Instant;

use edgecut_models::KvCache;

use crate::draw::Draw;
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
    /// ([`top_logits_for`](crate::split::top_logits_for)). A link that cannot answer so fails the step, and the device goes
    /// on alone.
    fn step_top(
        &mut self,
        position: usize,
        hidden: &[f32],
    ) -> std::result::Result<Vec<(u32, f32)>, LinkError> {
        let _ = (position, hidden);
        Err("this link cannot send logits for the device to sample".into())
    }

    /// Whether the coming turns draw under a guide's mask ([`GenerateOptions::guide`]): such a
    /// link asks for the server's [`MAX_TOP`](crate::split::MAX_TOP) largest logits
    /// ([`DecodeLink::step_top`]) and the device draws among those its constraint allows (when
    /// none of them is, it goes on alone with every logit). Called before each turn.
    fn set_guided(&mut self, guided: bool) {
        let _ = guided;
    }
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

    /// Forgets positions from `len` on, everywhere; returns the positions kept (fewer when a
    /// sliding-window cache's ring no longer holds what `len` needs: see `KvCache::truncate`).
    fn truncate(&mut self, len: usize) -> usize {
        let h = self.llm.inner.model.config.hidden;
        let mut len = len;
        loop {
            let kept = self.lower.truncate(len);
            let kept = match &mut self.upper {
                Some(u) => u.truncate(kept),
                None => kept,
            };
            if kept == len {
                break;
            }
            len = kept;
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
        len
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
    /// with `sample`, the next token and whether a guide's constraint is complete after it.
    fn run(
        &mut self,
        ids: &[u32],
        sample: bool,
        draw: &mut Draw,
        link: &mut dyn DecodeLink,
        fell: &mut Option<String>,
    ) -> Result<Option<(u32, bool)>> {
        let llm = self.llm.clone();
        let model = &llm.inner.model;
        let h = model.config.hidden;
        let position = self.tokens.len();
        let x = model.blocks(&mut self.lower, model.embed(ids)?)?;
        self.tokens.extend_from_slice(ids);
        if self.all_here() {
            return self.draw(&x[(ids.len() - 1) * h..], sample, draw);
        }
        self.stored.extend_from_slice(&x);
        self.groups.push(ids.len());
        if self.upper.is_none() {
            match self.ask(link, position, &x, sample, draw) {
                Ok(t) => {
                    self.server = Some(position + ids.len());
                    return Ok(t);
                }
                // The server is lost: rebuild its layers here and go on alone.
                Err(reason) => {
                    *fell = Some(reason.to_string());
                    let last = self.rebuild()?;
                    return self.draw(&last, sample, draw);
                }
            }
        }
        let upper = self.upper.as_mut().expect("local");
        let out = model.blocks(upper, x)?;
        self.draw(&out[(ids.len() - 1) * h..], sample, draw)
    }

    /// The server's answer to the rows `x` at `position`: the token it drew, or (with a
    /// repetition penalty, which needs the conversation's tokens only the device has, or a
    /// guide, whose matcher is here) the token drawn here from its largest logits.
    /// `Err(reason)`: the server is lost, or (guided) sent no token the constraint allows.
    fn ask(
        &self,
        link: &mut dyn DecodeLink,
        position: usize,
        x: &[f32],
        sample: bool,
        draw: &mut Draw,
    ) -> std::result::Result<Option<(u32, bool)>, LinkError> {
        if sample && draw.draws_here() {
            let top = link.step_top(position, x)?;
            let vocab = self.llm.inner.model.config.vocab;
            if top.is_empty() || top.iter().any(|&(t, l)| t as usize >= vocab || l.is_nan()) {
                return Err("the server's logits are not of this model".into());
            }
            // Every other token below the smallest sent: out of reach of the sampler, as the
            // argument of `top_logits_for` shows.
            let mut logits = vec![f32::NEG_INFINITY; vocab];
            for &(t, l) in &top {
                logits[t as usize] = l;
            }
            if let Some(t) = draw.forced() {
                // A token the constraint forces needs no logits: drawn from a distribution of
                // one, as a local run draws it (its generator advanced the same).
                logits.fill(f32::NEG_INFINITY);
                logits[t as usize] = 0.0;
            } else if !draw.allows_any(&logits) {
                return Err(format!(
                    "none of the server's {} largest logits is a token the constraint allows",
                    top.len()
                )
                .into());
            }
            // Greedy is exact when an allowed token is among those sent (any other is below
            // them); sampling draws among the allowed ones sent.
            return Ok(Some(draw.pick(&mut logits, &self.tokens)?));
        }
        let t = link.step(position, x, sample)?;
        if t.is_some() {
            // The server drew the token with the same seed: keep this sampler's generator in
            // step, so that a fallback continues its sequence.
            draw.skip();
        }
        Ok(t.map(|t| (t, false)))
    }

    /// With `sample`, the token after the final hidden state `last` (one row), drawn here.
    fn draw(&self, last: &[f32], sample: bool, draw: &mut Draw) -> Result<Option<(u32, bool)>> {
        if !sample {
            return Ok(None);
        }
        let mut logits = self.llm.inner.model.head(last)?;
        draw.pick(&mut logits, &self.tokens).map(Some)
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
        if opts.logprobs.is_some() {
            return Err(Error::Input(
                "log-probabilities do not run split yet: generate on one machine".into(),
            ));
        }
        link.set_guided(opts.guide.is_some());
        let capacity = self.lower.capacity();
        let common = start_turn(prompt, &self.tokens, capacity, opts)?;
        let start = Instant::now();
        let common = self.truncate(common);
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
        let mut draw = Draw::new(opts, &self.llm.inner.model.config.stop_ids);
        let chunks = prefill_chunks(&prompt[common..]);
        let n = chunks.len();
        let mut first = None;
        for (i, chunk) in chunks.into_iter().enumerate() {
            first = self.run(chunk, i + 1 == n, &mut draw, link, &mut fell)?;
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
                    let next = self.run(&[t], true, &mut draw, link, &mut fell)?;
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
                logprobs: Vec::new(),
            },
            fell_back: fell.map(|r| (at_fallback.unwrap_or(0), r)),
        })
    }
}

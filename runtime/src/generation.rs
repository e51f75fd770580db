//! Token-by-token generation shared by every way edgecut decodes: [`Emitter`] turns sampled
//! tokens into released text and a [`Finish`] (stop tokens, stop strings held back, the token
//! and context limits); [`decode_loop`] drives it for one conversation (local and split); and
//! [`Turn`] with [`Llm::step_turns`] drives many at once, one token each per step, with their
//! decode steps in one forward (continuous batching, as a server runs its slots).

use std::time::{Duration, Instant};

use edgecut_format::{TextStream, Tokenizer};
use edgecut_models::KvCache;

use crate::draw::{beside, Draw};
use crate::llm::{start_turn, Context, Finish, GenerateOptions, Generation, TokenLogprob};
use crate::stop::{Step, StopFilter};
use crate::{Error, Llm, Result};

/// Sampled tokens in, text out: holds back what may be the start of a stop string and ends the
/// generation at a stop token, a stop string, `max_tokens` or a full context.
pub(crate) struct Emitter<'t> {
    stream: TextStream<'t>,
    stops: StopFilter,
    stop_ids: &'t [u32],
    generated: Vec<u32>,
    max_tokens: usize,
    ignore_eos: bool,
    /// Positions held before the first generated token (the prompt).
    in_cache: usize,
    capacity: usize,
}

impl<'t> Emitter<'t> {
    pub(crate) fn new(
        tokenizer: &'t Tokenizer,
        stop_ids: &'t [u32],
        opts: &GenerateOptions,
        in_cache: usize,
        capacity: usize,
    ) -> Emitter<'t> {
        Emitter {
            stream: TextStream::new(tokenizer),
            stops: StopFilter::new(&opts.stop),
            stop_ids,
            generated: Vec::new(),
            max_tokens: opts.max_tokens,
            // A guide's end is the constraint's: the stop token it allows ends the text.
            ignore_eos: opts.ignore_eos && opts.guide.is_none(),
            in_cache,
            capacity,
        }
    }

    /// Whether the generation is over before another token is drawn (`max_tokens` of 0).
    pub(crate) fn done_before_draw(&self) -> Option<Finish> {
        (self.generated.len() == self.max_tokens).then_some(Finish::MaxTokens)
    }

    /// Takes the token just drawn; releases text to `on_text` (which returns `false` to stop)
    /// and says whether the generation is over.
    pub(crate) fn push(
        &mut self,
        t: u32,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Option<Finish>> {
        if !self.ignore_eos && self.stop_ids.contains(&t) {
            return Ok(Some(Finish::EndOfSequence));
        }
        self.generated.push(t);
        let piece = self.stream.push(t)?;
        match self.stops.push(&piece) {
            Step::Stop(rest) => {
                on_text(&rest);
                return Ok(Some(Finish::StopString));
            }
            Step::Release(out) => {
                if !out.is_empty() && !on_text(&out) {
                    return Ok(Some(Finish::Cancelled));
                }
            }
        }
        if self.generated.len() == self.max_tokens {
            return Ok(Some(Finish::MaxTokens));
        }
        // The token just generated needs a free position to run.
        if self.in_cache + self.generated.len() - 1 == self.capacity {
            return Ok(Some(Finish::ContextFull));
        }
        Ok(None)
    }

    /// Ends the generation: text still held back (an unfinished character, a possible stop
    /// string that was not one) goes to `on_text` unless the generation was stopped.
    pub(crate) fn end(&mut self, finish: Finish, on_text: &mut dyn FnMut(&str) -> bool) {
        if matches!(finish, Finish::StopString | Finish::Cancelled) {
            return;
        }
        let tail = self.stream.finish();
        let mut rest = match self.stops.push(&tail) {
            Step::Stop(s) => s,
            Step::Release(s) => s,
        };
        rest.push_str(&self.stops.finish());
        if !rest.is_empty() {
            on_text(&rest);
        }
    }

    /// The tokens generated so far (a stop token excluded).
    pub(crate) fn generated(&self) -> &[u32] {
        &self.generated
    }

    /// The text released so far and held back (a stop string excluded).
    pub(crate) fn text(&self) -> &str {
        self.stops.text()
    }
}

/// Why a generation ends after a token, given the emitter's word and whether a guide's
/// constraint is complete: a complete constraint ends it as the end of the sequence, even on
/// the token that reached the limit (the reply is whole, not cut).
fn finish_after(pushed: Option<Finish>, complete: bool) -> Option<Finish> {
    match pushed {
        None | Some(Finish::MaxTokens | Finish::ContextFull) if complete => {
            Some(Finish::EndOfSequence)
        }
        f => f,
    }
}

/// The generation loop shared by local and split decoding. `next(prev)` returns the next token,
/// and whether a guide's constraint is complete after it (nothing may follow): from the
/// prompt's logits when `prev` is `None`, else after running `prev` (the token just
/// generated). `in_cache` positions (the prompt) are held before the first call, of
/// `capacity`. Text goes to `on_text` with stop strings held back. Returns the tokens, why it
/// ended, the text and the time to the first token.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode_loop(
    tokenizer: &Tokenizer,
    stop_ids: &[u32],
    opts: &GenerateOptions,
    in_cache: usize,
    capacity: usize,
    start: Instant,
    on_text: &mut dyn FnMut(&str) -> bool,
    next: &mut dyn FnMut(Option<u32>) -> Result<(u32, bool)>,
) -> Result<(Vec<u32>, Finish, String, Duration)> {
    let mut e = Emitter::new(tokenizer, stop_ids, opts, in_cache, capacity);
    let mut prefill = None;
    let finish = loop {
        if let Some(f) = e.done_before_draw() {
            break f;
        }
        let (t, complete) = next(e.generated().last().copied())?;
        prefill.get_or_insert_with(|| start.elapsed());
        if let Some(f) = finish_after(e.push(t, on_text)?, complete) {
            break f;
        }
    };
    e.end(finish, on_text);
    let prefill = prefill.unwrap_or_else(|| start.elapsed());
    Ok((
        e.generated().to_vec(),
        finish,
        e.text().to_string(),
        prefill,
    ))
}

/// Where a [`Turn`] is.
enum TurnState {
    /// The prompt (after the cached prefix) has not run yet.
    Prompt,
    /// This token was drawn and released; it runs at the next step.
    Drawn(u32),
    /// Over.
    Done(Finish),
}

/// One generation advanced a token at a time by [`Llm::step_turns`] beside others: a context
/// (whose cached prefix of the prompt is reused), a sampler, and the text released so far.
/// The tokens it draws are those [`Context::generate`] draws for the same prompt and options.
pub struct Turn<'a> {
    ctx: Context,
    prompt: Vec<u32>,
    cached: usize,
    draw: Draw,
    emit: Emitter<'a>,
    state: TurnState,
    start: Instant,
    first_token: Option<Duration>,
}

impl std::fmt::Debug for Turn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Turn({} prompt tokens, {} generated, {:?})",
            self.prompt.len(),
            self.emit.generated().len(),
            self.finished()
        )
    }
}

impl<'a> Turn<'a> {
    /// A generation after `prompt` in `ctx`, a context of `llm` (the longest prefix of `prompt`
    /// it holds is kept, the rest dropped); nothing runs until [`Llm::step_turns`].
    pub fn new(
        llm: &'a Llm,
        mut ctx: Context,
        prompt: Vec<u32>,
        opts: &GenerateOptions,
    ) -> Result<Turn<'a>> {
        if !std::sync::Arc::ptr_eq(&llm.inner, &ctx.llm.inner) {
            return Err(Error::Input(
                "the context belongs to another model (contexts run only with their own)".into(),
            ));
        }
        let common = start_turn(&prompt, &ctx.tokens, ctx.cache.capacity(), opts)?;
        // A sliding-window cache may keep less than asked (its ring was overwritten).
        let common = ctx.cache.truncate(common);
        ctx.tokens.truncate(common);
        let inner = &llm.inner;
        let emit = Emitter::new(
            &inner.tokenizer,
            &inner.model.config.stop_ids,
            opts,
            prompt.len(),
            ctx.cache.capacity(),
        );
        let state = match emit.done_before_draw() {
            Some(f) => TurnState::Done(f),
            None => TurnState::Prompt,
        };
        Ok(Turn {
            ctx,
            prompt,
            cached: common,
            draw: Draw::new(opts, &inner.model.config.stop_ids),
            emit,
            state,
            start: Instant::now(),
            first_token: None,
        })
    }

    /// Another reply to this turn's prompt in `ctx` (a context of the same model), with its
    /// own options (a seed of its own): once this turn has run its prompt, that computation is
    /// shared: its keys and values are copied into `ctx` and the new turn runs only the
    /// prompt's last token (whose logits choose its first token). Before then, or where the
    /// backend cannot copy a cache, the new turn runs the prompt itself.
    pub fn branch(
        &self,
        llm: &'a Llm,
        mut ctx: Context,
        opts: &GenerateOptions,
    ) -> Result<Turn<'a>> {
        let n = self.prompt.len();
        let ran = !matches!(self.state, TurnState::Prompt)
            && self.ctx.tokens.get(..n) == Some(&self.prompt[..]);
        if ran && ctx.copy_from(&self.ctx).is_ok() {
            // The copy is the prompt as this turn ran it: reused whatever the options say.
            let shared = opts.clone().with_cache_reuse(true);
            return Turn::new(llm, ctx, self.prompt.clone(), &shared);
        }
        Turn::new(llm, ctx, self.prompt.clone(), opts)
    }

    /// Why it ended; `None` while it goes on.
    pub fn finished(&self) -> Option<Finish> {
        match self.state {
            TurnState::Done(f) => Some(f),
            _ => None,
        }
    }

    /// Stops it ([`Finish::Cancelled`]); its context keeps what ran.
    pub fn cancel(&mut self) {
        if self.finished().is_none() {
            self.state = TurnState::Done(Finish::Cancelled);
        }
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.emit.generated().len()
    }

    /// Tokens in the prompt, and how many of them the context already held.
    pub fn prompt_tokens(&self) -> (usize, usize) {
        (self.prompt.len(), self.cached)
    }

    /// The log-probabilities of the tokens drawn so far (empty unless asked for), the last
    /// one's included while it may still be the end-of-sequence token.
    pub fn logprobs(&self) -> &[TokenLogprob] {
        self.draw.logprobs()
    }

    /// Time from the turn's creation to its first token, once drawn.
    pub fn first_token(&self) -> Option<Duration> {
        self.first_token
    }

    /// The generation so far (whole once [`Turn::finished`]).
    pub fn generation(&self) -> Generation {
        let prefill = self.first_token.unwrap_or_default();
        Generation {
            logprobs: self.draw.logprobs_of(self.emit.generated().len()),
            text: self.emit.text().to_string(),
            tokens: self.emit.generated().to_vec(),
            finish: self.finished().unwrap_or(Finish::Cancelled),
            prompt_tokens: self.prompt.len(),
            cached_tokens: self.cached,
            prefill,
            decode: self.start.elapsed().saturating_sub(prefill),
        }
    }

    /// The context back, holding the prompt and what was generated and run (for the next
    /// turn that shares its prefix).
    pub fn into_context(self) -> Context {
        self.ctx
    }

    /// Takes logits of the turn's last position: draws, releases text, and moves on.
    fn take(&mut self, logits: &mut [f32]) -> Result<String> {
        let (t, complete) = self.draw.pick(logits, &self.ctx.tokens)?;
        self.first_token.get_or_insert_with(|| self.start.elapsed());
        let mut text = String::new();
        let mut out = |s: &str| {
            text.push_str(s);
            true
        };
        let finish = finish_after(self.emit.push(t, &mut out)?, complete);
        match finish {
            Some(f) => {
                self.emit.end(f, &mut out);
                self.state = TurnState::Done(f);
            }
            None => self.state = TurnState::Drawn(t),
        }
        Ok(text)
    }
}

impl Llm {
    /// Advances every turn not yet finished by one step and returns the text each released
    /// (empty for a finished turn, or one still running its prompt). All turns run in one
    /// forward: a turn whose prompt has not run gives its next chunk of up to
    /// [`edgecut_models::PREFILL_CHUNK`] positions (the chunks a lone run groups it in), the
    /// others their last token; the matrix products of all rows share one pass over the weights,
    /// attention runs per turn, and the head runs on the rows that draw a token. A failed step
    /// ends its turns as cancelled with the error.
    pub fn step_turns(&self, turns: &mut [&mut Turn<'_>]) -> Vec<Result<String>> {
        let model = &self.inner.model;
        let (h, vocab) = (model.config.hidden, model.config.vocab);
        let mut out: Vec<Result<String>> = (0..turns.len()).map(|_| Ok(String::new())).collect();
        // Each running turn's rows, and whether its last row draws a token.
        let mut batch: Vec<(usize, Vec<u32>, bool)> = Vec::new();
        for (i, turn) in turns.iter().enumerate() {
            match turn.state {
                TurnState::Prompt => {
                    let done = turn.ctx.tokens.len();
                    let end = (done + edgecut_models::PREFILL_CHUNK).min(turn.prompt.len());
                    let rows = turn.prompt[done..end].to_vec();
                    batch.push((i, rows, end == turn.prompt.len()));
                }
                TurnState::Drawn(t) => batch.push((i, vec![t], true)),
                TurnState::Done(_) => {}
            }
        }
        if batch.is_empty() {
            return out;
        }
        let run = (|| -> Result<Vec<f32>> {
            let ids: Vec<u32> = batch
                .iter()
                .flat_map(|(_, r, _)| r.iter().copied())
                .collect();
            let x = model.embed(&ids)?;
            let mut xs = Vec::with_capacity(batch.len());
            let mut at = 0;
            for (_, rows, _) in &batch {
                xs.push(x[at * h..(at + rows.len()) * h].to_vec());
                at += rows.len();
            }
            // The running turns' caches, in batch order (the batch lists turns in order), and
            // their draws, whose next masks are computed beside the forward pass.
            let mut caches: Vec<&mut KvCache> = Vec::with_capacity(batch.len());
            let mut draws: Vec<&mut Draw> = Vec::with_capacity(batch.len());
            for t in turns.iter_mut() {
                if !matches!(t.state, TurnState::Done(_)) {
                    caches.push(&mut t.ctx.cache);
                    draws.push(&mut t.draw);
                }
            }
            let ys = beside(draws, || model.blocks_many(&mut caches, xs))?;
            // The last row of each turn that draws.
            let last: Vec<f32> = ys
                .iter()
                .zip(&batch)
                .filter(|(_, (_, _, draws))| *draws)
                .flat_map(|(y, _)| y[y.len() - h..].iter().copied())
                .collect();
            if last.is_empty() {
                return Ok(Vec::new());
            }
            Ok(model.head(&last)?)
        })();
        match run {
            Ok(mut logits) => {
                let mut rows_of = logits.chunks_exact_mut(vocab.max(1));
                for (i, rows, draws) in batch {
                    let turn = &mut turns[i];
                    turn.ctx.tokens.extend_from_slice(&rows);
                    if draws {
                        let l = rows_of.next().expect("a row of logits per drawing turn");
                        out[i] = turn.take(l);
                    }
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (i, _, _) in &batch {
                    out[*i] = Err(Error::Input(format!("the step failed: {msg}")));
                }
            }
        }
        for (turn, r) in turns.iter_mut().zip(&out) {
            if r.is_err() {
                turn.cancel();
            }
        }
        out
    }
}

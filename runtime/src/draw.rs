//! How a generation draws each token, the same locally, in continuous batching and split: its
//! sampler, a guide's matcher (the mask before the draw, the token taken after it, the next mask
//! computed beside the forward pass) and the log-probabilities it records.

use edgecut_models::Sampler;

use crate::generate_options::{GenerateOptions, TokenLogprob};
use crate::guide::{Guide, Guided};
use crate::Result;

/// One generation's drawing state.
pub(crate) struct Draw {
    sampler: Sampler,
    guided: Option<Guided>,
    /// With `Some(top)`, each drawn token's log-probability and `top` alternatives.
    logprobs: Option<(usize, Vec<TokenLogprob>)>,
    /// The model's stop tokens (a guide does not take them: they end the text).
    stop_ids: Vec<u32>,
}

impl Draw {
    pub(crate) fn new(opts: &GenerateOptions, stop_ids: &[u32]) -> Draw {
        Draw {
            sampler: Sampler::new(opts.sampling.clone()),
            guided: opts.guide.as_ref().map(Guide::start),
            logprobs: opts.logprobs.map(|top| (top, Vec::new())),
            stop_ids: stop_ids.to_vec(),
        }
    }

    /// Whether every draw is the largest logit and nothing else is asked of it (no mask, no
    /// log-probabilities): a backend may then pick where the logits are.
    pub(crate) fn is_plain_greedy(&self) -> bool {
        self.sampler.params().is_greedy() && self.guided.is_none() && self.logprobs.is_none()
    }

    /// Whether this generation must draw from logits on the device: a repetition penalty (which
    /// needs the conversation's tokens) or a guide (whose matcher is here).
    pub(crate) fn draws_here(&self) -> bool {
        self.sampler.params().repetition_penalty != 1.0 || self.guided.is_some()
    }

    /// Runs `f` (a forward pass) while the next mask is computed on a thread beside it.
    pub(crate) fn beside<T>(&mut self, f: impl FnOnce() -> T) -> T {
        beside(std::iter::once(self), f)
    }

    /// Draws from `logits` after `history` (the mask applied, then the sampler; the
    /// log-probability recorded; the token taken by the guide). Returns the token and whether
    /// the guide's constraint is complete after it (nothing may follow).
    pub(crate) fn pick(&mut self, logits: &mut [f32], history: &[u32]) -> Result<(u32, bool)> {
        if let Some(g) = self.guided.as_mut() {
            g.apply(logits)?;
        }
        let t = self.sampler.sample(logits, history);
        if let Some((top, v)) = self.logprobs.as_mut() {
            v.push(TokenLogprob::of(logits, t, *top));
        }
        match self.guided.as_mut() {
            Some(g) => {
                g.consume(t, &self.stop_ids)?;
                Ok((t, g.done()))
            }
            None => Ok((t, false)),
        }
    }

    /// The one token a guide allows next, when it allows only one.
    pub(crate) fn forced(&mut self) -> Option<u32> {
        self.guided.as_mut()?.forced()
    }

    /// Whether a draw from `logits` (some at -inf: not sent) can meet the guide.
    pub(crate) fn allows_any(&mut self, logits: &[f32]) -> bool {
        self.guided.as_mut().is_none_or(|g| g.allows_any(logits))
    }

    /// Advances the sampler as a draw does, for a token drawn elsewhere with the same settings.
    pub(crate) fn skip(&mut self) {
        self.sampler.skip();
    }

    /// The log-probabilities recorded so far.
    pub(crate) fn logprobs(&self) -> &[TokenLogprob] {
        self.logprobs.as_ref().map_or(&[], |(_, v)| v.as_slice())
    }

    /// The log-probabilities of the first `generated` tokens (an end-of-sequence token drawn
    /// last is not part of the generation).
    pub(crate) fn logprobs_of(&self, generated: usize) -> Vec<TokenLogprob> {
        let l = self.logprobs();
        l[..generated.min(l.len())].to_vec()
    }
}

/// Runs `f` (a forward pass) while the next masks of the guided ones of `draws` are computed on
/// a thread beside it.
pub(crate) fn beside<'d, T>(
    draws: impl IntoIterator<Item = &'d mut Draw>,
    f: impl FnOnce() -> T,
) -> T {
    let mut guides: Vec<&mut Guided> = draws
        .into_iter()
        .filter_map(|d| d.guided.as_mut())
        .collect();
    if guides.is_empty() {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(|| guides.iter_mut().for_each(|g| g.prepare()));
        f()
    })
}

//! Stages in the facade: every model lists its stages ([`StageGraph`]: embeddings, each block,
//! the head, with weight bytes and output sizes) and times them one by one on an input of a
//! given length, which is what `edgecut profile` records for the planner. The same for encoders
//! and decoders: no caller needs to know which it has.

use std::time::{Duration, Instant};

pub use edgecut_models::stages::{Stage, StageGraph, StageId, StageOutput};

use crate::{Error, Llm, Result, Session};

/// A text of at least `seq` tokens: the tokenizer truncates it to exactly `seq`, special
/// tokens included (as `edgecut bench` and `edgecut profile` build their inputs).
fn long_text(seq: usize) -> String {
    "hello ".repeat(seq)
}

impl Session {
    /// The model's stages.
    pub fn stages(&self) -> StageGraph {
        self.inner.model.stages()
    }

    /// Stages of the model: embeddings, each block, head.
    pub fn stage_count(&self) -> usize {
        self.stages().len()
    }

    /// Runs every stage once on one text of `seq` tokens and returns each stage's time, in
    /// stage order.
    pub fn time_stages(&self, seq: usize) -> Result<Vec<Duration>> {
        if self.embeds_images() {
            return Err(Error::Input(
                "stage timing covers text encoders and decoders; CLIP's image tower is not \
                 profiled yet (split pictures at a fixed --cut)"
                    .into(),
            ));
        }
        if seq < 2 || seq > self.max_seq_len() {
            return Err(Error::Input(format!(
                "{seq} tokens is outside 2..={} (the model's limit)",
                self.max_seq_len()
            )));
        }
        let ids = self
            .inner
            .tokenizer
            .encode(&long_text(seq), true, Some(seq))?
            .ids;
        let mut times = Vec::with_capacity(self.stage_count());
        let mut t = Instant::now();
        let mut lap = |t: &mut Instant| {
            times.push(t.elapsed());
            *t = Instant::now();
        };
        let bert = self.bert()?;
        let mut a = bert.embeddings(std::slice::from_ref(&ids))?;
        lap(&mut t);
        for b in 0..bert.cfg.layers {
            bert.block(b, &mut a)?;
            lap(&mut t);
        }
        if bert.n_classes().is_some() {
            bert.classify(&a)?;
        } else {
            bert.pool(&a)?;
        }
        lap(&mut t);
        Ok(times)
    }
}

impl Llm {
    /// The model's stages.
    pub fn stages(&self) -> StageGraph {
        self.inner.model.stages()
    }

    /// Runs every stage once on a prompt of `seq` tokens (a prefill) and returns each stage's
    /// time, in stage order; the head computes the last position's logits.
    pub fn time_stages(&self, seq: usize) -> Result<Vec<Duration>> {
        let m = &self.inner.model;
        if seq < 1 || seq > self.context_len() {
            return Err(Error::Input(format!(
                "{seq} tokens is outside 1..={} (the context)",
                self.context_len()
            )));
        }
        let ids = self
            .inner
            .tokenizer
            .encode(&long_text(seq), true, Some(seq))?
            .ids;
        // One cache per block, made before the clock starts.
        let mut caches = (0..m.config.layers)
            .map(|l| m.new_cache_for(l..l + 1, seq))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut times = Vec::with_capacity(caches.len() + 2);
        let t = Instant::now();
        let mut x = m.embed(&ids)?;
        times.push(t.elapsed());
        for c in &mut caches {
            let t = Instant::now();
            x = m.blocks(c, x)?;
            times.push(t.elapsed());
        }
        let t = Instant::now();
        m.head(&x[x.len() - m.config.hidden..])?;
        times.push(t.elapsed());
        Ok(times)
    }
}

//! Choosing the next token from logits: greedy, or temperature sampling narrowed by top-k and
//! top-p, with a repetition penalty, from a seeded generator (same seed, same text).

/// Sampling settings. The default is greedy decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 (or anything below [`GREEDY_BELOW`]) picks the most likely
    /// token (greedy).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    /// Divide positive logits (multiply negative ones) of tokens already in the context by this
    /// (1: off), as in Keskar et al. (2019) and llama.cpp.
    pub repetition_penalty: f32,
    /// How many of the latest context tokens the penalty looks at.
    pub penalty_window: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            penalty_window: 64,
            seed: 0,
        }
    }
}

/// Temperatures below this draw greedily. At 1e-5 two logits 1e-3 apart already differ in
/// probability by e^100, so a draw is greedy in all but exact near-ties; below it, dividing the
/// logits by the temperature would leave f32's range.
pub const GREEDY_BELOW: f32 = 1e-5;

impl SamplingParams {
    /// Whether the temperature picks the largest logit: 0, below [`GREEDY_BELOW`], or top-k 1.
    pub fn draws_greedily(&self) -> bool {
        self.temperature < GREEDY_BELOW || self.top_k == 1
    }

    /// Whether every choice is the largest logit and nothing else changes the logits (no
    /// repetition penalty): what [`Sampler::sample`] then gives is the logits' argmax, which a
    /// backend can pick where the logits are (`Decoder::forward_greedy`).
    pub fn is_greedy(&self) -> bool {
        self.draws_greedily() && self.repetition_penalty == 1.0
    }

    /// Checks the values are in range, naming the one that is not.
    pub fn validate(&self) -> Result<(), crate::ModelError> {
        let bad = |m: String| Err(crate::ModelError::Input(m));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!("temperature {} must be >= 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top-p {} must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition penalty {} must be > 0",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

/// SplitMix64 (Steele et al., 2014): small, fast, and good enough to draw tokens.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Draws tokens with fixed settings; keeps its generator state between draws.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// Candidate buffer, reused between draws.
    cand: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler with `params` (assumed valid, see [`SamplingParams::validate`]).
    pub fn new(params: SamplingParams) -> Sampler {
        Sampler {
            rng: Rng(params.seed),
            params,
            cand: Vec::new(),
        }
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Advances the generator as one [`Sampler::sample`] with these settings does (nothing when
    /// greedy): for a token drawn elsewhere with the same settings and seed (a split server),
    /// so that this sampler goes on with the same sequence.
    pub fn skip(&mut self) {
        if !self.params.draws_greedily() {
            self.rng.next_f32();
        }
    }

    /// Picks the next token from `logits` (changed in place by the repetition penalty), given the
    /// tokens of the context so far (`history`).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let from = history.len().saturating_sub(p.penalty_window);
            let mut seen: Vec<u32> = history[from..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.draws_greedily() {
            return argmax(logits);
        }
        // The largest logit first subtracted: every scaled logit is <= 0, so no temperature
        // can push one past f32's range and every probability below stays finite.
        let top = logits[argmax(logits) as usize];
        let cand = &mut self.cand;
        cand.clear();
        cand.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, (l - top) / p.temperature)),
        );
        let k = if p.top_k == 0 { cand.len() } else { p.top_k };
        keep_largest(cand, k);
        let max = cand[0].1;
        let mut total = 0.0f64;
        for c in cand.iter_mut() {
            c.1 = (c.1 - max).exp();
            total += c.1 as f64;
        }
        // Top-p: the shortest prefix whose mass reaches top_p.
        let mut keep = cand.len();
        if p.top_p < 1.0 {
            let mut acc = 0.0f64;
            for (i, c) in cand.iter().enumerate() {
                acc += c.1 as f64 / total;
                if acc >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        let mass: f64 = cand[..keep].iter().map(|c| c.1 as f64).sum();
        let mut r = self.rng.next_f32() as f64 * mass;
        for c in &cand[..keep] {
            r -= c.1 as f64;
            if r < 0.0 {
                return c.0;
            }
        }
        cand[keep - 1].0
    }
}

/// Keeps the `k` largest `(token, logit)` pairs of `cand`, largest first; ties by lower token,
/// so the order (and a draw from it) is deterministic. The sampler's top-k, and what a split
/// server sends a device that samples itself.
pub fn keep_largest(cand: &mut Vec<(u32, f32)>, k: usize) {
    let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let k = k.min(cand.len());
    if k == 0 {
        cand.clear();
        return;
    }
    if k < cand.len() {
        cand.select_nth_unstable_by(k - 1, by_logit);
        cand.truncate(k);
    }
    cand.sort_unstable_by(by_logit);
}

/// Index of the largest value (the first one on ties).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(params: SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(params);
        (0..n)
            .map(|_| s.sample(&mut logits.to_vec(), &[]))
            .collect()
    }

    #[test]
    fn greedy_picks_the_largest_logit() {
        let l = [0.1, 3.0, -1.0, 3.0, 2.9];
        assert_eq!(draws(SamplingParams::default(), &l, 3), [1, 1, 1]);
    }

    #[test]
    fn top_k_and_top_p_limit_the_candidates() {
        let l = [0.0, 5.0, 4.9, 4.8, -3.0, 1.0];
        let hot = |top_k, top_p| SamplingParams {
            temperature: 5.0,
            top_k,
            top_p,
            seed: 3,
            ..SamplingParams::default()
        };
        let k2 = draws(hot(2, 1.0), &l, 400);
        assert!(k2.iter().all(|&t| t == 1 || t == 2), "top-k 2: {k2:?}");
        assert!(
            k2.contains(&1) && k2.contains(&2),
            "both candidates are drawn"
        );
        // The three near-equal logits hold nearly half the mass at temperature 5 over 6 tokens;
        // top-p 0.3 keeps the first two of them.
        let p = draws(hot(0, 0.3), &l, 400);
        assert!(p.iter().all(|&t| t == 1 || t == 2), "top-p 0.3: {p:?}");
        let all = draws(hot(0, 1.0), &l, 2000);
        assert!(
            all.contains(&4) && all.contains(&0),
            "no limit: every token can be drawn"
        );
    }

    #[test]
    fn sampling_follows_the_distribution_and_the_seed() {
        // p = softmax([ln 1, ln 3]) = [0.25, 0.75].
        let l = [0.0, 3f32.ln()];
        let params = SamplingParams {
            temperature: 1.0,
            seed: 11,
            ..SamplingParams::default()
        };
        let d = draws(params.clone(), &l, 4000);
        let ones = d.iter().filter(|&&t| t == 1).count() as f64 / d.len() as f64;
        assert!((ones - 0.75).abs() < 0.03, "share of token 1: {ones}");
        assert_eq!(d, draws(params.clone(), &l, 4000), "same seed, same draws");
        let other = SamplingParams { seed: 12, ..params };
        assert_ne!(d, draws(other, &l, 4000), "another seed, other draws");
    }

    #[test]
    fn tiny_temperatures_draw_greedily_and_stay_finite() {
        // Large logits: l / T alone overflows f32 at these temperatures.
        let l: Vec<f32> = (0..50)
            .map(|i| 30.0 + ((i * 37) % 50) as f32 * 0.7)
            .collect();
        let greedy = argmax(&l);
        for t in [1e-45f32, 1e-38, 1e-30, 1e-6, 1e-5, 2e-5] {
            let p = SamplingParams {
                temperature: t,
                seed: 5,
                ..SamplingParams::default()
            };
            assert!(p.validate().is_ok());
            let d = draws(p, &l, 50);
            assert!(d.iter().all(|&x| x == greedy), "temperature {t}: {d:?}");
        }
        // Above the threshold the draw is still finite where l / T would overflow: the gap of
        // 0.7 at T = 1e-4 leaves only the top token.
        let mut s = Sampler::new(SamplingParams {
            temperature: 1e-4,
            seed: 1,
            ..SamplingParams::default()
        });
        assert_eq!(s.sample(&mut l.clone(), &[]), greedy);
        assert!(s.cand.iter().all(|c| c.1.is_finite()));
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::default()
        });
        // Token 0 leads, but it was already said: 4 / 2 = 2 < 3.
        assert_eq!(s.sample(&mut [4.0, 3.0, -1.0], &[0]), 1);
        // A negative logit gets more negative.
        let mut l = [-1.0, -2.0];
        s.sample(&mut l, &[0]);
        assert_eq!(l[0], -2.0);
        assert!(SamplingParams {
            top_p: 0.0,
            ..SamplingParams::default()
        }
        .validate()
        .is_err());
        assert!(SamplingParams {
            temperature: -1.0,
            ..SamplingParams::default()
        }
        .validate()
        .is_err());
    }
}

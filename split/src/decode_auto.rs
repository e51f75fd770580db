//! `--cut auto` for decoders: the cut of each turn of a split conversation, from the two
//! profiles and what the turns so far measured, re-planned between turns.
//!
//! What is measured, and from what:
//! - the round trip: the HELLO exchange, the smallest seen;
//! - the bandwidth: the prompt's STEP (tens of kilobytes) against a one-token STEP (one hidden
//!   state), both less the server's own time: the difference in bytes over the difference in
//!   time;
//! - the server's step against its profile and the link's cost beyond bandwidth and round trip
//!   ([`DecodePlanner::calibrate`]), from the one-token STEPs;
//! - the device's own step against its profile: a split turn's step less its round trip, or a
//!   turn all here ([`DecodePlanner::calibrate_device`]).
//!
//! Moving the cut opens a new session, and the device re-sends the whole conversation at the
//! new cut, so a move is charged that prefill and made only when it still promises a turn
//! shorter by more than `margin`.

use std::time::Duration;

use edgecut_partition::{
    DecodeCalibration, DecodePlanner, DecodeScenario, Encoding, Link, Profile,
};

use crate::{LinkStats, SplitError};

/// Bandwidth assumed before a turn has measured one.
const FIRST_GUESS_BPS: f64 = 10e6;
/// Round trip assumed before a HELLO has measured one.
const FIRST_GUESS_RTT_S: f64 = 0.02;
/// Bandwidth taken when a transfer left no measurable time (loopback).
const FAST_BPS: f64 = 10e9;

/// One turn to plan: its prompt and reply.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodeTurn {
    /// Tokens of the conversation once this turn's prompt is in (history included).
    pub conversation: usize,
    /// Of those, how many the current cut's caches already hold (0: none).
    pub held: usize,
    /// Most tokens of the reply.
    pub reply: usize,
    /// Positions of the conversation's KV cache.
    pub context: usize,
    /// Hidden states on the wire.
    pub encoding: Encoding,
}

/// The profiles and the measurements so far: which cut each turn should run at.
#[derive(Clone, Debug)]
pub struct DecodeAuto {
    device: Profile,
    server: Profile,
    /// Relative gain another cut must promise (its prefill of the whole conversation
    /// included) before the cut moves (0.15: 15%).
    pub margin: f64,
    /// Bytes the device may hold for its blocks' weights and KV cache (`None`: no limit); cuts
    /// that need more are not chosen.
    pub memory_budget: Option<u64>,
    cal: DecodeCalibration,
    rtt_s: Option<f64>,
    bps: Option<f64>,
}

impl DecodeAuto {
    /// Both profiles, checked to be of one decoder of `blocks` blocks.
    pub fn new(device: Profile, server: Profile, blocks: usize) -> Result<DecodeAuto, SplitError> {
        let n = DecodePlanner::new(&device, &server)
            .map_err(|e| SplitError::Profile(e.to_string()))?
            .blocks();
        if n != blocks {
            return Err(SplitError::Profile(format!(
                "the profiles have {n} blocks, the model {blocks}: profile this model"
            )));
        }
        Ok(DecodeAuto {
            device,
            server,
            margin: 0.15,
            memory_budget: None,
            cal: DecodeCalibration::NONE,
            rtt_s: None,
            bps: None,
        })
    }

    fn planner(&self) -> DecodePlanner<'_> {
        DecodePlanner::new(&self.device, &self.server).expect("checked in DecodeAuto::new")
    }

    /// The link as estimated now.
    pub fn link(&self) -> Link {
        let bps = self.bps.unwrap_or(FIRST_GUESS_BPS);
        Link {
            up_bps: bps,
            down_bps: bps,
            rtt_s: self.rtt_s.unwrap_or(FIRST_GUESS_RTT_S),
            per_message_s: 0.0,
        }
    }

    /// The calibration so far.
    pub fn calibration(&self) -> DecodeCalibration {
        self.cal
    }

    fn scenario(&self, prompt: usize, t: &DecodeTurn, new_session: bool) -> DecodeScenario {
        DecodeScenario {
            prompt: prompt.max(1),
            reply: t.reply,
            context: t.context,
            link: self.link(),
            encoding: t.encoding,
            new_session,
        }
    }

    /// The cut for the next turn, given the current one (`None`: the conversation has none
    /// yet; `held` is then 0). Staying runs only the new tokens on the open session; moving
    /// runs the whole conversation on a new one.
    pub fn choose(&self, current: Option<usize>, t: &DecodeTurn) -> usize {
        let p = self.planner();
        let fresh = self.scenario(t.conversation, t, true);
        let fits = |b: &edgecut_partition::DecodeBreakdown| {
            self.memory_budget
                .is_none_or(|m| b.device_weight_bytes + b.device_kv_bytes <= m)
        };
        // Where no cut fits, the smallest (K = 1) holds the least.
        let best = (1..=p.blocks())
            .map(|k| p.evaluate_with(k, &fresh, &self.cal))
            .filter(|b| fits(b) || b.k == 1)
            .min_by(|a, b| {
                (!fits(a), a.turn_ms)
                    .partial_cmp(&(!fits(b), b.turn_ms))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .expect("a decoder has blocks");
        let Some(c) = current else {
            return best.k;
        };
        let open = self.scenario(t.conversation - t.held.min(t.conversation), t, false);
        let here = p.evaluate_with(c, &open, &self.cal);
        // A cut over the budget (it was lowered) is left whatever it costs.
        if !fits(&here) && fits(&best) {
            return best.k;
        }
        let stay = here.turn_ms;
        if best.k != c && best.turn_ms < stay * (1.0 - self.margin) {
            best.k
        } else {
            c
        }
    }

    /// A HELLO's round trip (the link's round trip and little else): the smallest is kept.
    pub fn observe_round_trip(&mut self, rtt: Duration) {
        let r = rtt.as_secs_f64();
        self.rtt_s = Some(self.rtt_s.map_or(r, |o| o.min(r)));
    }

    /// What a turn at cut `k` measured: `stats` the link's counters over the turn alone
    /// ([`LinkStats::since`]), `decode` its time after the first token and `steps` the forward
    /// passes in that time (the tokens after the first, and the draw of the end-of-sequence
    /// token that ended it, if one did). A turn all here (`k` = the model's blocks) calibrates the device from its
    /// `first_token` and steps.
    pub fn observe(
        &mut self,
        k: usize,
        t: &DecodeTurn,
        stats: &LinkStats,
        first_token: Duration,
        decode: Duration,
        steps: usize,
    ) {
        if k < self.device.graph.stages.len() - 2 {
            if let Some(h) = stats.hello_round_trip {
                self.observe_round_trip(h);
            }
        }
        // The fields apart, so that the estimates can change while the planner reads the profiles.
        let p = DecodePlanner::new(&self.device, &self.server).expect("checked in DecodeAuto::new");
        if k >= p.blocks() {
            if steps > 0 {
                let step = decode.as_secs_f64() * 1e3 / steps as f64;
                let prompt = t.conversation - t.held.min(t.conversation);
                let sc = self.scenario(prompt, t, false);
                let first = first_token.as_secs_f64() * 1e3;
                self.cal = p.calibrate_device(&sc, first, step, &self.cal);
            }
            return;
        }
        let (d, q) = (&stats.decode, &stats.prompt);
        if d.steps == 0 {
            return;
        }
        let per = |x: Duration, n: usize| x.as_secs_f64() / n as f64;
        let (d_rtt, d_srv) = (per(d.round_trips, d.steps), per(d.server, d.steps));
        // The bandwidth: a prompt's STEP against a one-token STEP, the server's time out.
        if q.steps > 0 {
            let (q_rtt, q_srv) = (per(q.round_trips, q.steps), per(q.server, q.steps));
            let extra_bytes =
                q.bytes_up as f64 / q.steps as f64 - d.bytes_up as f64 / d.steps as f64;
            let extra_s = (q_rtt - q_srv) - (d_rtt - d_srv);
            // Only a prompt big enough to take measurable time on a fast link says anything.
            if extra_bytes > 8e3 {
                let bps = if extra_s > 1e-4 {
                    extra_bytes * 8.0 / extra_s
                } else {
                    FAST_BPS
                };
                self.bps = Some(bps.clamp(1e4, FAST_BPS));
            }
        }
        let sc = self.scenario(1, t, false);
        self.cal = p.calibrate(k, &sc, d_srv * 1e3, d_rtt * 1e3, &self.cal);
        // The device: each decode step less its round trip, against its profile at this cut.
        // (`steps`, not the STEPs counted: a prompt of one new token is a one-row STEP too,
        // sent before the first token.)
        if steps > 0 {
            let device = decode.as_secs_f64() * 1e3 / steps as f64 - d_rtt * 1e3;
            let profiled = p.evaluate(k, &sc).device_step_ms;
            if device > 0.0 && profiled > 0.0 {
                self.cal.device_scale = (device / profiled).max(0.1);
            }
        }
    }
}

#[cfg(test)]
mod tests;

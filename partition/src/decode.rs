//! Planning a split decoder: where to cut a decoder (K blocks on the device, the rest
//! and the head on the server) for the time to the first token plus the time of the reply's
//! tokens, under the device's memory budget (weights and KV cache of its blocks).
//!
//! The model of one turn of `prompt` tokens and a reply of `reply` tokens, split at K:
//! - first token = (for a new session: the connection, HELLO and OPEN, three round trips) +
//!   device prefill (embeddings, blocks `0..K` at `prompt` tokens) + upload of
//!   `prompt` hidden states + round trip + server prefill (blocks `K..N` at `prompt` tokens)
//!   + the head on one row + the NEXT frame back;
//! - each further token = device step (stages `0..=K` at one token) + upload of one hidden
//!   state + round trip + per-message cost + server step (blocks `K..N` and the head at one
//!   token) + the NEXT frame back.
//!
//! Stage times come from the profiles (`edgecut profile --seq 1,...`: the one-token time is the
//! step). Attention's growth with the context is not modelled: it is small next to the matrix
//! products at the contexts of an edge assistant (the SmolLM2 measurements in
//! `docs/benchmarks.md` say how small).

use serde::Serialize;

use crate::graph::{encoded_bytes, Encoding};
use crate::link::Link;
use crate::profile::Profile;
use crate::PlanError;

/// Bytes of a STEP frame besides its values (header and fixed fields).
const STEP_OVERHEAD: u64 = 16 + 20;
/// Bytes of a NEXT frame with a token.
const NEXT_BYTES: u64 = 16 + 22;
/// Rows per STEP of a prompt (the local prefill chunk).
const PREFILL_CHUNK: u64 = 256;

/// One turn to plan for.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct DecodeScenario {
    /// Prompt tokens run this turn.
    pub prompt: usize,
    /// Tokens of the reply.
    pub reply: usize,
    /// Positions of the conversation's KV cache (what its memory is sized for).
    pub context: usize,
    /// The link.
    pub link: Link,
    /// Hidden states on the wire.
    pub encoding: Encoding,
    /// Whether the turn opens the session: the device connects (TCP's handshake), says HELLO
    /// and OPENs before its prompt goes up, three round trips more (a TLS handshake adds one,
    /// not counted). Later turns of a conversation reuse the session.
    pub new_session: bool,
}

/// The predicted cost of one cut.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecodeBreakdown {
    /// Blocks on the device (the model's block count: everything on the device).
    pub k: usize,
    /// Time to the first token, ms.
    pub first_token_ms: f64,
    /// Time of each further token, ms.
    pub step_ms: f64,
    /// Of which on the device, ms.
    pub device_step_ms: f64,
    /// Of which on the server, ms.
    pub server_step_ms: f64,
    /// Of which on the link (bytes, round trip, per message), ms.
    pub link_step_ms: f64,
    /// Decode tokens per second (1 / step).
    pub tokens_per_s: f64,
    /// The turn: first token + (reply - 1) steps, ms.
    pub turn_ms: f64,
    /// Bytes up per generated token.
    pub up_bytes_per_token: u64,
    /// Bytes down per generated token.
    pub down_bytes_per_token: u64,
    /// Weights the device holds.
    pub device_weight_bytes: u64,
    /// KV cache the device holds for the context.
    pub device_kv_bytes: u64,
    /// KV cache the server holds for the context (per conversation).
    pub server_kv_bytes: u64,
}

/// The plan: the best cut and every cut's prediction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecodePlan {
    /// The cut with the shortest turn that fits the budget.
    pub best: DecodeBreakdown,
    /// Every cut that fits (K = 1..N; N: all on the device), by K.
    pub all: Vec<DecodeBreakdown>,
}

/// What measured turns say beside the profiles: the server's step against its profile, the
/// link's cost beyond bandwidth and round trip (framing, timers, wake-ups), and the device's
/// own step and prefill against its profile. The server's and the link's from one split turn
/// ([`DecodePlanner::calibrate`]), the device's from one turn run all here
/// ([`DecodePlanner::calibrate_device`]; a split turn's device time can set `device_scale` as
/// well, as `edgecut_split::DecodeAuto` does); applied to every K by
/// [`DecodePlanner::evaluate_with`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct DecodeCalibration {
    /// Measured server step / the profile's.
    pub server_scale: f64,
    /// Measured round trip - measured server step - the link's predicted cost, ms per message
    /// (negative, down to the round trip and per-message cost, where those were taken too
    /// long).
    pub link_extra_ms: f64,
    /// Measured device step / the profile's (the device's stages at one token).
    pub device_scale: f64,
    /// Measured device prefill / the profile's (the device's stages at the prompt's length).
    pub device_prefill_scale: f64,
}

impl DecodeCalibration {
    /// The profiles as they are.
    pub const NONE: DecodeCalibration = DecodeCalibration {
        server_scale: 1.0,
        link_extra_ms: 0.0,
        device_scale: 1.0,
        device_prefill_scale: 1.0,
    };
}

/// Plans split decoding between a device and a server profiled on the same decoder.
pub struct DecodePlanner<'p> {
    device: &'p Profile,
    server: &'p Profile,
    blocks: usize,
}

impl<'p> DecodePlanner<'p> {
    /// Checks that both profiles are of one decoder (`embeddings`, blocks, `head`).
    pub fn new(device: &'p Profile, server: &'p Profile) -> Result<DecodePlanner<'p>, PlanError> {
        device.validate()?;
        server.validate()?;
        if device.model_id != server.model_id {
            return Err(PlanError::Profile(format!(
                "the device profile is of model {} and the server's of {}",
                device.model_id, server.model_id
            )));
        }
        let st = &device.graph.stages;
        let is_decoder = st.len() >= 3
            && st[0].name == "embeddings"
            && st[st.len() - 1].name == "head"
            && st[1..st.len() - 1].iter().any(|s| s.kv_bytes_per_token > 0);
        if !is_decoder {
            return Err(PlanError::Profile(
                "not a decoder's profile (profile a llama model with this version of edgecut)"
                    .into(),
            ));
        }
        Ok(DecodePlanner {
            device,
            server,
            blocks: st.len() - 2,
        })
    }

    /// Blocks of the model.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Predicted cost of a turn at `k` blocks on the device (`1..=blocks`), from the profiles.
    pub fn evaluate(&self, k: usize, sc: &DecodeScenario) -> DecodeBreakdown {
        self.evaluate_with(k, sc, &DecodeCalibration::NONE)
    }

    /// What a split turn at `k` measured (per one-token step: the server's own time, from
    /// NEXT, and the round trip) says against the profiles' prediction for it: the server's
    /// scale and the link's extra cost, on top of `cal` (whose device side is kept).
    pub fn calibrate(
        &self,
        k: usize,
        sc: &DecodeScenario,
        server_ms: f64,
        round_trip_ms: f64,
        cal: &DecodeCalibration,
    ) -> DecodeCalibration {
        let b = self.evaluate(k, sc);
        if k >= self.blocks || b.server_step_ms <= 0.0 || server_ms.is_nan() || server_ms <= 0.0 {
            return *cal;
        }
        DecodeCalibration {
            server_scale: (server_ms / b.server_step_ms).max(0.1),
            // Negative where the link's round trip was taken too long (a HELLO held by a proxy),
            // down to cancelling the round trip and per-message cost (bytes still cost).
            link_extra_ms: (round_trip_ms - server_ms - b.link_step_ms)
                .max(-(sc.link.rtt_s + sc.link.per_message_s) * 1e3),
            ..*cal
        }
    }

    /// What a turn run all on the device measured (its first token and its step) says against
    /// the device's profile: the device's scales, on top of `cal` (whose server and link sides
    /// are kept).
    pub fn calibrate_device(
        &self,
        sc: &DecodeScenario,
        first_token_ms: f64,
        step_ms: f64,
        cal: &DecodeCalibration,
    ) -> DecodeCalibration {
        let b = self.evaluate(self.blocks, sc);
        if first_token_ms.is_nan()
            || step_ms.is_nan()
            || first_token_ms <= 0.0
            || step_ms <= 0.0
            || b.step_ms <= 0.0
        {
            return *cal;
        }
        DecodeCalibration {
            device_scale: (step_ms / b.step_ms).max(0.1),
            device_prefill_scale: (first_token_ms / b.first_token_ms).max(0.1),
            ..*cal
        }
    }

    /// [`DecodePlanner::evaluate`] with a calibration applied to the device's stages, the
    /// server's stages and every message on the link.
    pub fn evaluate_with(
        &self,
        k: usize,
        sc: &DecodeScenario,
        cal: &DecodeCalibration,
    ) -> DecodeBreakdown {
        let n = self.blocks;
        let k = k.clamp(1, n);
        let head = n + 1;
        let (d, s) = (self.device, self.server);
        let p = sc.prompt.max(1) as f64;
        let sum = |prof: &Profile, stages: std::ops::Range<usize>, seq: f64| -> f64 {
            stages.map(|i| prof.stage_ms(i, seq)).sum()
        };
        let g = &d.graph;
        let hidden = g.stages[1].output.per_token;
        let l = &sc.link;
        let ms = |bytes: u64, bps: f64| bytes as f64 * 8.0 / bps * 1e3;
        let (first, step, dev_step, srv_step, link_step, up, down);
        let (ds, dp) = (cal.device_scale, cal.device_prefill_scale);
        if k == n {
            // Everything here, the head included.
            dev_step = (sum(d, 0..head, 1.0) + d.stage_ms(head, 1.0)) * ds;
            first = (sum(d, 0..head, p) + d.stage_ms(head, 1.0)) * dp;
            (srv_step, link_step, up, down) = (0.0, 0.0, 0, 0);
            step = dev_step;
        } else {
            dev_step = sum(d, 0..k + 1, 1.0) * ds;
            srv_step = (sum(s, k + 1..head, 1.0) + s.stage_ms(head, 1.0)) * cal.server_scale;
            up = encoded_bytes(sc.encoding, hidden) + STEP_OVERHEAD;
            down = NEXT_BYTES;
            let fixed = (l.rtt_s + l.per_message_s) * 1e3 + cal.link_extra_ms;
            link_step = ms(up, l.up_bps) + fixed + ms(down, l.down_bps);
            step = dev_step + srv_step + link_step;
            let chunks = (sc.prompt.max(1) as u64).div_ceil(PREFILL_CHUNK);
            let prompt_up = encoded_bytes(sc.encoding, hidden * sc.prompt.max(1) as u64)
                + chunks * STEP_OVERHEAD;
            // Connection, HELLO and OPEN: round trips and two small messages.
            let setup = if sc.new_session {
                3.0 * l.rtt_s * 1e3 + 2.0 * (l.per_message_s * 1e3 + cal.link_extra_ms)
            } else {
                0.0
            };
            first = setup
                + sum(d, 0..k + 1, p) * dp
                + ms(prompt_up, l.up_bps)
                + chunks as f64 * fixed
                + (sum(s, k + 1..head, p) + s.stage_ms(head, 1.0)) * cal.server_scale
                + ms(chunks * down, l.down_bps);
        }
        let kv = |range: std::ops::Range<usize>| -> u64 {
            g.stages[range]
                .iter()
                .map(|s| {
                    let held = s
                        .kv_positions
                        .map_or(sc.context as u64, |p| p.min(sc.context as u64));
                    s.kv_bytes_per_token * held
                })
                .sum::<u64>()
        };
        let device_weight_bytes: u64 = g.stages[..=k]
            .iter()
            .chain(if k == n { &g.stages[head..] } else { &[][..] })
            .map(|s| s.weight_bytes)
            .sum();
        DecodeBreakdown {
            k,
            first_token_ms: first,
            step_ms: step,
            device_step_ms: dev_step,
            server_step_ms: srv_step,
            link_step_ms: link_step,
            tokens_per_s: 1e3 / step.max(1e-9),
            turn_ms: first + sc.reply.saturating_sub(1) as f64 * step,
            up_bytes_per_token: up,
            down_bytes_per_token: down,
            device_weight_bytes,
            device_kv_bytes: kv(1..k + 1),
            server_kv_bytes: kv(k + 1..head),
        }
    }

    /// The cut with the shortest turn among `min_k..=blocks` whose weights and KV cache fit
    /// `memory_budget` bytes on the device (K >= 1: raw token ids never leave the device).
    pub fn plan(
        &self,
        sc: &DecodeScenario,
        memory_budget: Option<u64>,
    ) -> Result<DecodePlan, PlanError> {
        self.plan_with(sc, memory_budget, &DecodeCalibration::NONE)
    }

    /// [`DecodePlanner::plan`] with a calibration from measured turns (re-planning between
    /// turns as the link and the server are measured).
    pub fn plan_with(
        &self,
        sc: &DecodeScenario,
        memory_budget: Option<u64>,
        cal: &DecodeCalibration,
    ) -> Result<DecodePlan, PlanError> {
        let all: Vec<DecodeBreakdown> = (1..=self.blocks)
            .map(|k| self.evaluate_with(k, sc, cal))
            .filter(|b| {
                memory_budget.is_none_or(|m| b.device_weight_bytes + b.device_kv_bytes <= m)
            })
            .collect();
        let best = all
            .iter()
            .min_by(|a, b| a.turn_ms.total_cmp(&b.turn_ms))
            .cloned()
            .ok_or_else(|| {
                PlanError::Infeasible(
                    "no cut fits the device's memory budget (one block and its KV cache do not)"
                        .into(),
                )
            })?;
        Ok(DecodePlan { best, all })
    }
}

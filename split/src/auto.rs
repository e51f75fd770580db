//! `--cut auto`: the device picks its cut per request from the two profiles (its own stage
//! times and the server's) and the link it measures from its own transfers, and re-plans as
//! those measurements move.
//!
//! What is measured, and from what:
//! - the round trip: the HELLO exchange (a few dozen bytes each way, no compute), the smallest
//!   seen;
//! - the bandwidth: each split request's bytes over the part of its round trip that is neither
//!   the server's own time (RESULT carries it) nor the bare round trip;
//! - the server's overhead over its profile (queueing, batching wait, decoding): the server's
//!   reported time less the profile's prediction for the stages it ran;
//! - the device's own speed against its profile (a profile from another build or a device
//!   that is busier or throttled): its measured stage time over the predicted one.
//!
//! Estimates are smoothed (each new one weighs half), and the cut changes only when another one
//! predicts a latency lower by more than `margin`, so noise does not make it flap. While the
//! device runs everything, one request in `probe_every` is split anyway at the best remote cut,
//! so a link that got better is noticed.

use edgecut_partition::{Breakdown, Encoding, Link, Planner, PowerModel, Profile, Scenario};

use crate::SplitError;

/// Profiles and policy for choosing the cut.
#[derive(Clone, Debug)]
pub struct AutoCut {
    /// The device's stage times (`edgecut profile` on the device).
    pub device: Profile,
    /// The server's stage times (`edgecut profile` on the server).
    pub server: Profile,
    /// Relative gain another cut must predict before the cut changes (0.15: 15%).
    pub margin: f64,
    /// While running everything on the device, split one request in this many to re-measure.
    pub probe_every: usize,
    /// Whether the device's measured stage times correct its profile (off only to simulate
    /// a device other than the one running, as a test does).
    pub calibrate_device: bool,
}

impl AutoCut {
    /// Both profiles, checked to be of one model (the planner checks that) with `stages`
    /// stages (`session.stage_count()`).
    pub fn new(device: Profile, server: Profile, stages: usize) -> Result<AutoCut, SplitError> {
        Planner::new(&device, Some(&server)).map_err(|e| SplitError::Profile(e.to_string()))?;
        let n = device.graph.stages.len();
        if n != stages {
            return Err(SplitError::Profile(format!(
                "the profiles have {n} stages, the model {stages}: profile this model"
            )));
        }
        Ok(AutoCut {
            device,
            server,
            margin: 0.15,
            probe_every: 8,
            calibrate_device: true,
        })
    }
}

/// What the device has measured so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkEstimate {
    /// Smallest HELLO round trip, seconds.
    pub rtt_s: Option<f64>,
    /// Bandwidth, bits per second (both directions taken alike).
    pub bps: Option<f64>,
    /// The server's time beyond its profile's prediction, ms.
    pub server_extra_ms: Option<f64>,
    /// The device's measured compute time over its profile's prediction (1: as profiled).
    pub device_scale: Option<f64>,
}

/// Bandwidth assumed before the first split request is measured.
const FIRST_GUESS_BPS: f64 = 10e6;
/// Bandwidth taken when a transfer left no measurable time (loopback).
const FAST_BPS: f64 = 10e9;

fn smooth(old: Option<f64>, new: f64) -> Option<f64> {
    Some(old.map_or(new, |o| 0.5 * o + 0.5 * new))
}

/// The running choice of cut.
#[derive(Debug)]
pub(crate) struct AutoState {
    pub(crate) cfg: AutoCut,
    /// The encoding the client sends activations in: what the link is charged for.
    encoding: Encoding,
    pub(crate) est: LinkEstimate,
    current: Option<usize>,
    local_runs: usize,
}

impl AutoState {
    pub(crate) fn new(cfg: AutoCut, encoding: Encoding) -> AutoState {
        AutoState {
            cfg,
            encoding,
            est: LinkEstimate::default(),
            current: None,
            local_runs: 0,
        }
    }

    fn stages(&self) -> usize {
        self.cfg.device.graph.stages.len()
    }

    /// The link as estimated now.
    pub(crate) fn link(&self) -> Link {
        let bps = self.est.bps.unwrap_or(FIRST_GUESS_BPS);
        Link {
            up_bps: bps,
            down_bps: bps,
            rtt_s: self.est.rtt_s.unwrap_or(0.02),
            per_message_s: 0.0,
        }
    }

    fn scenario(&self, seq: usize, batch: usize) -> Scenario {
        Scenario {
            seq,
            batch,
            encoding: self.encoding,
            link: self.link(),
            power: PowerModel::PHONE_WIFI,
        }
    }

    /// The profiles' prediction (nothing measured applied) for the first `k` stages on the
    /// device.
    fn profiled(&self, k: usize, sc: &Scenario) -> Breakdown {
        let planner = Planner::new(&self.cfg.device, Some(&self.cfg.server))
            .expect("checked in AutoCut::new");
        let n = self.stages();
        let cut: Vec<bool> = (0..n).map(|i| i < k).collect();
        planner.evaluate(&cut, sc)
    }

    /// The predicted latency of every cut `K = 0..=stages` for `batch` texts of `seq` tokens.
    pub(crate) fn predict_all(&self, seq: usize, batch: usize) -> Vec<Breakdown> {
        let sc = self.scenario(seq, batch);
        let n = self.stages();
        (0..=n)
            .map(|k| {
                let mut b = self.profiled(k, &sc);
                let scale = self.est.device_scale.unwrap_or(1.0);
                b.latency_ms += b.device_ms * (scale - 1.0);
                b.device_ms *= scale;
                if k < n {
                    let extra = self.est.server_extra_ms.unwrap_or(0.0).max(0.0);
                    b.server_ms += extra;
                    b.latency_ms += extra;
                }
                b
            })
            .collect()
    }

    /// The cut for the next request, and its predicted latency.
    pub(crate) fn choose(&mut self, seq: usize, batch: usize) -> (usize, f64) {
        let all = self.predict_all(seq, batch);
        let n = self.stages();
        // Raw upload (K = 0) is a candidate: the wire carries token ids.
        let best = (0..=n)
            .min_by(|&a, &b| all[a].latency_ms.total_cmp(&all[b].latency_ms))
            .unwrap_or(n);
        let k = match self.current {
            Some(cur)
                if all[cur].latency_ms - all[best].latency_ms
                    <= self.cfg.margin * all[cur].latency_ms =>
            {
                cur
            }
            _ => best,
        };
        self.current = Some(k);
        if k == n {
            self.local_runs += 1;
            if self.local_runs.is_multiple_of(self.cfg.probe_every.max(1)) {
                // A probe: the best remote cut, to measure the link again.
                let probe = (0..n)
                    .min_by(|&a, &b| all[a].latency_ms.total_cmp(&all[b].latency_ms))
                    .unwrap_or(0);
                return (probe, all[probe].latency_ms);
            }
        }
        (k, all[k].latency_ms)
    }

    /// Takes the time the device spent on its stages (`k` of them, `k = stages`: the whole
    /// run), against its profile. Runs the profile puts under 2 ms are too short to tell.
    pub(crate) fn observe_device(&mut self, k: usize, seq: usize, batch: usize, secs: f64) {
        if !self.cfg.calibrate_device {
            return;
        }
        let k = k.min(self.stages());
        let predicted = self.profiled(k, &self.scenario(seq, batch)).device_ms;
        if predicted >= 2.0 && secs > 0.0 {
            let log = smooth(
                self.est.device_scale.map(f64::ln),
                (secs * 1e3 / predicted).ln(),
            );
            self.est.device_scale = log.map(f64::exp);
        }
    }

    /// Takes the HELLO round trip.
    pub(crate) fn observe_hello(&mut self, rtt_s: f64) {
        self.est.rtt_s = Some(self.est.rtt_s.map_or(rtt_s, |r| r.min(rtt_s)));
    }

    /// Takes a split request's measurements: its cut, shape, bytes each way, round trip and
    /// the server's reported time.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn observe_split(
        &mut self,
        k: usize,
        seq: usize,
        batch: usize,
        up_bytes: usize,
        down_bytes: usize,
        rtt_s: f64,
        server_s: f64,
    ) {
        let n = self.stages();
        if k >= n {
            return;
        }
        let predicted_server = self.profiled(k, &self.scenario(seq, batch)).server_ms;
        self.est.server_extra_ms =
            smooth(self.est.server_extra_ms, server_s * 1e3 - predicted_server);
        let bare = self.est.rtt_s.unwrap_or(0.0);
        let transfer = rtt_s - server_s - bare;
        let bits = (up_bytes + down_bytes) as f64 * 8.0;
        // Under a millisecond of transfer time cannot be told from noise: the sample then says
        // only that the link moves these bits within a millisecond.
        let bps = (bits / transfer.max(1e-3)).min(FAST_BPS);
        // Smoothed in log space: a link that changed by orders of magnitude is believed within
        // two or three requests either way.
        let log = smooth(self.est.bps.map(f64::ln), bps.ln());
        self.est.bps = log.map(f64::exp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(encoding: Encoding) -> AutoState {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/plan/minilm-device-1thread.json");
        let prof = Profile::from_json(&std::fs::read_to_string(p).unwrap()).unwrap();
        let n = prof.graph.stages.len();
        AutoState::new(AutoCut::new(prof.clone(), prof, n).unwrap(), encoding)
    }

    fn state() -> AutoState {
        state_with(Encoding::Int8)
    }

    /// Regression (issue 10): `--cut auto` planned every request as int8 whatever the client
    /// sent, so f32 uploads were charged about a quarter of their bytes.
    #[test]
    fn auto_cut_charges_the_link_for_the_encoding_the_client_sends() {
        let (seq, batch) = (128, 2);
        let f32s = state_with(Encoding::F32).predict_all(seq, batch);
        let int8 = state_with(Encoding::Int8).predict_all(seq, batch);
        let hidden = 384u64; // MiniLM-L6, whose profile this is
        let values = hidden * seq as u64;
        for k in 1..f32s.len() - 1 {
            // A cut inside the model uploads one hidden vector per token, as the wire encodes it.
            let side = seq as u64; // the mask, a byte a token
            assert_eq!(
                f32s[k].up_bytes,
                batch as u64 * (4 * values + side),
                "K={k}"
            );
            assert_eq!(
                int8[k].up_bytes,
                batch as u64 * (values + 4 * values.div_ceil(32) + side),
                "K={k}"
            );
            assert!(f32s[k].upload_ms > 3.0 * int8[k].upload_ms, "K={k}");
        }
    }

    #[test]
    fn measurements_move_the_estimates_and_the_predictions() {
        let mut a = state();
        let n = a.stages();
        let before = a.predict_all(128, 1);
        // The round trip is the smallest HELLO seen.
        a.observe_hello(0.030);
        a.observe_hello(0.020);
        a.observe_hello(0.025);
        assert_eq!(a.est.rtt_s, Some(0.020));
        // A request at K=1 whose round trip leaves 80 ms of transfer for 100 kbit: 1.25 Mbit/s;
        // the server took 5 ms more than its profile says.
        let server_pred = before[1].server_ms;
        let server_s = (server_pred + 5.0) / 1e3;
        a.observe_split(1, 128, 1, 10_000, 2_500, 0.020 + 0.080 + server_s, server_s);
        let bps = a.est.bps.unwrap();
        assert!((bps - 1.25e6).abs() < 1.0, "{bps}");
        assert!((a.est.server_extra_ms.unwrap() - 5.0).abs() < 1e-6);
        // The device ran everything in half its profile's time.
        a.observe_device(n, 128, 1, before[n].device_ms / 2.0 / 1e3);
        assert!((a.est.device_scale.unwrap() - 0.5).abs() < 1e-9);
        let after = a.predict_all(128, 1);
        assert!((after[n].latency_ms - before[n].latency_ms / 2.0).abs() < 1e-6);
        assert!(
            after[1].latency_ms > before[1].latency_ms,
            "a slower link than guessed"
        );
        // A second, far faster sample is believed halfway in log space.
        a.observe_split(1, 128, 1, 10_000, 2_500, 0.020 + 0.001 + server_s, server_s);
        let b2 = a.est.bps.unwrap();
        assert!((b2 - (1.25e6f64 * 100e6).sqrt()).abs() / b2 < 1e-9, "{b2}");
    }

    #[test]
    fn the_cut_changes_only_for_a_clear_gain_and_probes_while_local() {
        let mut a = state();
        let n = a.stages();
        // Same profiles on both sides: running everything on the device is best.
        let (k, _) = a.choose(128, 1);
        assert_eq!(k, n);
        let probes = (0..16).filter(|_| a.choose(128, 1).0 < n).count();
        assert_eq!(probes, 2, "one probe in every 8 local runs");
    }
}

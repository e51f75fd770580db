//! The planner: the predicted cost of every valid cut, the best one under the constraints, and
//! the bandwidths at which the best one changes.
//!
//! Exactness: every cut closed under predecessors is enumerated ([`Graph::cuts`]), so the
//! choice is the true optimum of the cost model for chains and DAGs alike, with any constraint
//! set (a memory budget makes minimum s-t cuts inexact; enumeration is not). A chain of `n`
//! stages has `n + 1` cuts; a DAG of width `w` at most `(n / w + 1)^w`.

use serde::Serialize;

use crate::graph::{Encoding, Graph};
use crate::link::{Link, PowerModel};
use crate::profile::Profile;
use crate::PlanError;

/// What the planner minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// End-to-end latency of one request.
    Latency,
    /// Device energy of one request (see [`PowerModel`]).
    Energy,
    /// Server compute time per request (ties broken by latency).
    Server,
}

impl std::str::FromStr for Objective {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<Self, PlanError> {
        match s {
            "latency" => Ok(Objective::Latency),
            "energy" => Ok(Objective::Energy),
            "server" => Ok(Objective::Server),
            _ => Err(PlanError::Objective(s.to_string())),
        }
    }
}

/// What a cut must respect.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Constraints {
    /// Bytes of weights the device can hold (`None`: no limit).
    pub memory_budget: Option<u64>,
    /// Whether the raw input may leave the device (the stages reading it may run on the server).
    pub allow_raw_upload: bool,
    /// Whether a server is there at all.
    pub server_available: bool,
}

impl Default for Constraints {
    fn default() -> Self {
        Constraints {
            memory_budget: None,
            allow_raw_upload: false,
            server_available: true,
        }
    }
}

/// The request and the conditions it runs under.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scenario {
    /// Tokens per text.
    pub seq: usize,
    /// Texts per request (stage times scale linearly from the batch-1 profile).
    pub batch: usize,
    /// Wire encoding of activations.
    pub encoding: Encoding,
    /// The link.
    pub link: Link,
    /// The device's power model.
    pub power: PowerModel,
}

/// A cut: which stages run on the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cut {
    /// One flag per stage.
    pub on_device: Vec<bool>,
}

impl Cut {
    /// For a chain: the number of leading stages on the device (`None` if the flags are not a
    /// prefix).
    pub fn k(&self) -> Option<usize> {
        let k = self.on_device.iter().take_while(|&&d| d).count();
        self.on_device[k..].iter().all(|&d| !d).then_some(k)
    }

    /// A short description: `K=3 (device: embeddings..block 1)`.
    pub fn describe(&self, g: &Graph) -> String {
        let names: Vec<&str> = g
            .stages
            .iter()
            .zip(&self.on_device)
            .filter(|(_, &d)| d)
            .map(|(s, _)| s.name.as_str())
            .collect();
        let which = match names.len() {
            0 => "nothing on the device: raw upload".to_string(),
            n if n == g.stages.len() => "everything on the device".to_string(),
            1 => format!("device: {}", names[0]),
            _ => format!("device: {}..{}", names[0], names[names.len() - 1]),
        };
        match self.k() {
            Some(k) => format!("K={k} ({which})"),
            None => which,
        }
    }
}

/// The predicted cost of one cut.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Breakdown {
    /// The cut.
    pub cut: Cut,
    /// Device compute, ms.
    pub device_ms: f64,
    /// Upload, ms (bytes over bandwidth).
    pub upload_ms: f64,
    /// Round trip and per-message costs, ms (0 when nothing leaves the device).
    pub network_fixed_ms: f64,
    /// Server compute, ms.
    pub server_ms: f64,
    /// Download of the result, ms.
    pub download_ms: f64,
    /// End to end, ms.
    pub latency_ms: f64,
    /// Device energy, joules.
    pub energy_j: f64,
    /// Bytes uploaded.
    pub up_bytes: u64,
    /// Bytes downloaded.
    pub down_bytes: u64,
    /// Weight bytes the device holds.
    pub device_weight_bytes: u64,
}

impl Breakdown {
    /// The value `obj` minimises.
    pub fn value(&self, obj: Objective) -> f64 {
        match obj {
            Objective::Latency => self.latency_ms,
            Objective::Energy => self.energy_j,
            Objective::Server => self.server_ms,
        }
    }
}

/// A bandwidth at which the best cut changes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Threshold {
    /// Upload bandwidth, bits per second (download scaled with it).
    pub up_bps: f64,
    /// The best cut just below this bandwidth.
    pub below: Cut,
    /// The best cut just above it.
    pub above: Cut,
}

/// The planner's answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// The objective.
    pub objective: Objective,
    /// The chosen cut and its cost.
    pub best: Breakdown,
    /// Everything on the device (when it fits the memory budget).
    pub all_device: Option<Breakdown>,
    /// Everything on the server (raw upload; when a server is available).
    pub all_server: Option<Breakdown>,
    /// Bandwidths at which the best cut changes, ascending.
    pub thresholds: Vec<Threshold>,
}

/// Plans cuts of one model from a device profile and an optional server profile.
#[derive(Debug)]
pub struct Planner<'p> {
    device: &'p Profile,
    server: Option<&'p Profile>,
}

impl<'p> Planner<'p> {
    /// A planner; the server profile must be of the same model and stages.
    pub fn new(device: &'p Profile, server: Option<&'p Profile>) -> Result<Planner<'p>, PlanError> {
        device.validate()?;
        if let Some(s) = server {
            s.validate()?;
            let names = |p: &Profile| {
                p.graph
                    .stages
                    .iter()
                    .map(|s| s.name.clone())
                    .collect::<Vec<_>>()
            };
            if s.graph != device.graph || s.model_id != device.model_id {
                return Err(PlanError::Profile(format!(
                    "the server profile ({}, stages {:?}) is not of the device's model ({}, stages {:?})",
                    s.model,
                    names(s),
                    device.model,
                    names(device)
                )));
            }
        }
        Ok(Planner { device, server })
    }

    /// The stage graph.
    pub fn graph(&self) -> &Graph {
        &self.device.graph
    }

    /// Whether `cut` satisfies `c`.
    pub fn feasible(&self, cut: &[bool], c: &Constraints) -> bool {
        let g = self.graph();
        let all = cut.iter().all(|&d| d);
        if !g.is_cut(cut) || (!all && (!c.server_available || self.server.is_none())) {
            return false;
        }
        let raw_ok = c.allow_raw_upload
            || g.stages
                .iter()
                .zip(cut)
                .all(|(s, &d)| d || !s.inputs.is_empty());
        let weights: u64 = g
            .stages
            .iter()
            .zip(cut)
            .filter(|(_, &d)| d)
            .map(|(s, _)| s.weight_bytes)
            .sum();
        raw_ok && c.memory_budget.is_none_or(|b| weights <= b)
    }

    /// The predicted cost of `cut` in `sc`.
    pub fn evaluate(&self, cut: &[bool], sc: &Scenario) -> Breakdown {
        let g = self.graph();
        let (seq, batch) = (sc.seq as f64, sc.batch as f64);
        let (s64, b64) = (sc.seq as u64, sc.batch as u64);
        let mut device_ms = 0.0;
        let mut server_ms = 0.0;
        let mut up_bytes = 0u64;
        let mut raw = false;
        for (i, s) in g.stages.iter().enumerate() {
            if cut[i] {
                device_ms += self.device.stage_ms(i, seq) * batch;
                // Sent once if any reader runs on the server.
                let read_remotely = g
                    .stages
                    .iter()
                    .enumerate()
                    .any(|(j, t)| !cut[j] && t.inputs.contains(&i));
                if read_remotely {
                    up_bytes += s.output.bytes(sc.encoding, s64, b64);
                }
            } else {
                let srv = self.server.unwrap_or(self.device);
                server_ms += srv.stage_ms(i, seq) * batch;
                raw |= s.inputs.is_empty();
            }
        }
        if raw {
            up_bytes += g.input_bytes_per_token * s64 * b64;
        }
        let remote = cut.iter().any(|&d| !d);
        let down_bytes = if cut[g.result] {
            0
        } else {
            g.stages[g.result].output.bytes(Encoding::F32, s64, b64)
        };
        let l = &sc.link;
        let upload_ms = up_bytes as f64 * 8.0 / l.up_bps * 1e3;
        let download_ms = down_bytes as f64 * 8.0 / l.down_bps * 1e3;
        let network_fixed_ms = if remote {
            (l.rtt_s + 2.0 * l.per_message_s) * 1e3
        } else {
            0.0
        };
        let p = &sc.power;
        let wait_ms = network_fixed_ms + server_ms + download_ms;
        let energy_j = p.compute_w * device_ms / 1e3
            + p.radio_j_per_byte * (up_bytes + down_bytes) as f64
            + p.idle_w * wait_ms / 1e3;
        Breakdown {
            cut: Cut {
                on_device: cut.to_vec(),
            },
            device_ms,
            upload_ms,
            network_fixed_ms,
            server_ms,
            download_ms,
            latency_ms: device_ms + upload_ms + network_fixed_ms + server_ms + download_ms,
            energy_j,
            up_bytes,
            down_bytes,
            device_weight_bytes: g
                .stages
                .iter()
                .zip(cut)
                .filter(|(_, &d)| d)
                .map(|(s, _)| s.weight_bytes)
                .sum(),
        }
    }

    /// Ordering of two costs: the objective, then latency, then more stages on the device.
    fn better(a: &Breakdown, b: &Breakdown, obj: Objective) -> bool {
        let key = |x: &Breakdown| {
            (
                x.value(obj),
                x.latency_ms,
                -(x.cut.on_device.iter().filter(|&&d| d).count() as f64),
            )
        };
        let (ka, kb) = (key(a), key(b));
        ka.partial_cmp(&kb) == Some(std::cmp::Ordering::Less)
    }

    /// The best feasible cut in `sc`.
    pub fn best(
        &self,
        sc: &Scenario,
        obj: Objective,
        c: &Constraints,
    ) -> Result<Breakdown, PlanError> {
        let mut best: Option<Breakdown> = None;
        for cut in self.graph().cuts() {
            if !self.feasible(&cut, c) {
                continue;
            }
            let b = self.evaluate(&cut, sc);
            if best.as_ref().is_none_or(|x| Self::better(&b, x, obj)) {
                best = Some(b);
            }
        }
        best.ok_or_else(|| {
            PlanError::Infeasible(format!(
                "memory budget {:?} bytes, raw upload {}, server {}",
                c.memory_budget,
                if c.allow_raw_upload {
                    "allowed"
                } else {
                    "refused"
                },
                if c.server_available && self.server.is_some() {
                    "available"
                } else {
                    "unavailable"
                }
            ))
        })
    }

    /// The full plan: the best cut, the two extremes, and the bandwidth thresholds.
    pub fn plan(&self, sc: &Scenario, obj: Objective, c: &Constraints) -> Result<Plan, PlanError> {
        let n = self.graph().stages.len();
        let all_dev = vec![true; n];
        let all_srv = vec![false; n];
        let raw = Constraints {
            allow_raw_upload: true,
            ..*c
        };
        Ok(Plan {
            objective: obj,
            best: self.best(sc, obj, c)?,
            all_device: self
                .feasible(&all_dev, c)
                .then(|| self.evaluate(&all_dev, sc)),
            all_server: self
                .feasible(&all_srv, &raw)
                .then(|| self.evaluate(&all_srv, sc)),
            thresholds: self.thresholds(sc, obj, c),
        })
    }

    /// The upload bandwidths (download scaled with them) at which the best cut changes: the
    /// breakpoints of the lower envelope of the cuts' costs, each linear in 1 / bandwidth.
    pub fn thresholds(&self, sc: &Scenario, obj: Objective, c: &Constraints) -> Vec<Threshold> {
        if obj == Objective::Server {
            return Vec::new();
        }
        // cost(x) = a + b x with x = 1 / up_bps: evaluate at two bandwidths to get a and b.
        let at = |cut: &[bool], x: f64| {
            self.evaluate(
                cut,
                &Scenario {
                    link: sc.link.with_up_bps(1.0 / x),
                    ..*sc
                },
            )
            .value(obj)
        };
        let (x1, x2) = (1e-9, 2e-9);
        let lines: Vec<Line> = self
            .graph()
            .cuts()
            .into_iter()
            .filter(|cut| self.feasible(cut, c))
            .map(|cut| {
                let (y1, y2) = (at(&cut, x1), at(&cut, x2));
                let slope = (y2 - y1) / (x2 - x1);
                Line {
                    intercept: y1 - slope * x1,
                    slope,
                    cut,
                }
            })
            .collect();
        if lines.is_empty() {
            return Vec::new();
        }
        // Walk the envelope from x = 0 (infinite bandwidth) upwards.
        let first = lines
            .iter()
            .enumerate()
            .min_by(|(_, p), (_, q)| {
                (p.intercept, p.slope)
                    .partial_cmp(&(q.intercept, q.slope))
                    .unwrap()
            })
            .map(|(i, _)| i)
            .unwrap_or(0);
        let (mut cur, mut x0) = (first, 0.0);
        let mut out = Vec::new();
        loop {
            let (a, b) = (lines[cur].intercept, lines[cur].slope);
            // The first line the envelope meets to the right of x0: a smaller slope, crossing
            // the current line at the smallest x.
            let next = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.slope < b - 1e-12 * b.abs().max(1.0))
                .map(|(i, l)| (i, (l.intercept - a) / (b - l.slope)))
                .filter(|&(_, x)| x >= x0)
                .min_by(|p, q| {
                    (p.1, lines[p.0].slope)
                        .partial_cmp(&(q.1, lines[q.0].slope))
                        .unwrap()
                });
            let Some((i, x)) = next else { break };
            if x > 0.0 {
                out.push(Threshold {
                    up_bps: 1.0 / x,
                    below: Cut {
                        on_device: lines[i].cut.clone(),
                    },
                    above: Cut {
                        on_device: lines[cur].cut.clone(),
                    },
                });
            }
            cur = i;
            x0 = x;
        }
        out.reverse();
        out
    }
}

/// A cut's cost as a line in `x = 1 / upload bandwidth`: `intercept + slope * x`.
struct Line {
    cut: Vec<bool>,
    intercept: f64,
    slope: f64,
}

//! Measured stage times on one machine, per sequence length, with interpolation between the
//! measured lengths.

use serde::{Deserialize, Serialize};

use crate::graph::Graph;
use crate::PlanError;

/// One stage at one sequence length: the median and spread of its run time, batch 1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Median, ms.
    pub median_ms: f64,
    /// 10th percentile, ms.
    pub p10_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
}

/// Stage times of one model on one machine (`edgecut profile` writes it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The machine and backend, in words (`cpu (avx512vnni kernels, 2 threads)`).
    pub machine: String,
    /// The model file's name.
    pub model: String,
    /// The model's identity hash (profiles of different models do not mix).
    pub model_id: String,
    /// The model's stage graph.
    pub graph: Graph,
    /// The measured sequence lengths, ascending.
    pub seqs: Vec<usize>,
    /// `times[stage][i]`: the stage at `seqs[i]`.
    pub times: Vec<Vec<Sample>>,
}

impl Profile {
    /// Checks the profile against its own graph.
    pub fn validate(&self) -> Result<(), PlanError> {
        self.graph.validate()?;
        let bad = |m: String| Err(PlanError::Profile(format!("{}: {m}", self.machine)));
        if self.seqs.is_empty() || self.seqs.windows(2).any(|w| w[0] >= w[1]) || self.seqs[0] == 0 {
            return bad(format!(
                "sequence lengths {:?} must be ascending and positive",
                self.seqs
            ));
        }
        if self.times.len() != self.graph.stages.len() {
            return bad(format!(
                "{} stage rows for {} stages",
                self.times.len(),
                self.graph.stages.len()
            ));
        }
        for (s, row) in self.graph.stages.iter().zip(&self.times) {
            if row.len() != self.seqs.len() {
                return bad(format!(
                    "stage {:?} has {} samples for {} lengths",
                    s.name,
                    row.len(),
                    self.seqs.len()
                ));
            }
            if let Some(x) = row
                .iter()
                .find(|x| !(x.median_ms.is_finite() && x.median_ms >= 0.0))
            {
                return bad(format!("stage {:?} has time {}", s.name, x.median_ms));
            }
        }
        Ok(())
    }

    /// Reads a profile from JSON and validates it.
    pub fn from_json(text: &str) -> Result<Profile, PlanError> {
        let p: Profile =
            serde_json::from_str(text).map_err(|e| PlanError::Profile(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Median ms of `stage` at `seq` tokens (batch 1): linear between measured lengths, and
    /// along the nearest segment beyond them (proportional to `seq` with one length), never
    /// negative.
    pub fn stage_ms(&self, stage: usize, seq: f64) -> f64 {
        let row = &self.times[stage];
        let xs: Vec<f64> = self.seqs.iter().map(|&s| s as f64).collect();
        if xs.len() == 1 {
            return row[0].median_ms * seq / xs[0];
        }
        let i = xs
            .iter()
            .position(|&x| x >= seq)
            .unwrap_or(xs.len() - 1)
            .clamp(1, xs.len() - 1);
        let (x0, x1, y0, y1) = (xs[i - 1], xs[i], row[i - 1].median_ms, row[i].median_ms);
        (y0 + (y1 - y0) * (seq - x0) / (x1 - x0)).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Tensor;

    fn profile(times: &[f64]) -> Profile {
        let t = Tensor {
            per_token: 1,
            fixed: 0,
            side_bytes_per_token: 0,
        };
        Profile {
            machine: "test".into(),
            model: "m".into(),
            model_id: "id".into(),
            graph: Graph::chain(vec![("a".into(), 1, t)], 4),
            seqs: vec![16, 64, 128],
            times: vec![times
                .iter()
                .map(|&m| Sample {
                    median_ms: m,
                    p10_ms: m,
                    p90_ms: m,
                })
                .collect()],
        }
    }

    #[test]
    fn interpolates_and_extrapolates() {
        let p = profile(&[1.0, 3.0, 7.0]);
        p.validate().unwrap();
        assert_eq!(p.stage_ms(0, 16.0), 1.0);
        assert_eq!(p.stage_ms(0, 40.0), 2.0);
        assert_eq!(p.stage_ms(0, 96.0), 5.0);
        assert_eq!(p.stage_ms(0, 256.0), 15.0);
        assert!(
            (p.stage_ms(0, 0.0) - 1.0 / 3.0).abs() < 1e-12,
            "the first segment extended"
        );
        assert_eq!(
            profile(&[3.0, 1.0, 0.5]).stage_ms(0, 300.0),
            0.0,
            "never negative"
        );
        let back = Profile::from_json(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        let mut bad = profile(&[1.0, f64::NAN, 2.0]);
        assert!(bad.validate().is_err());
        bad = profile(&[1.0, 2.0, 3.0]);
        bad.seqs = vec![64, 16, 128];
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ascending"));
    }
}

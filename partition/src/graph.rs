//! The stage graph of a model: stages with their weight bytes and output sizes, and the bytes
//! an activation takes on the wire under each encoding.

use serde::{Deserialize, Serialize};

use crate::PlanError;

/// How activations are encoded on the wire: the wire's own type, so a plan charges the link for
/// the bytes a request really sends.
pub use edgecut_wire::Encoding;

/// Wire bytes of `values` values under `enc` (saturating: a size past `u64` is no plan's).
pub fn encoded_bytes(enc: Encoding, values: u64) -> u64 {
    enc.bytes(values).unwrap_or(u64::MAX)
}

/// The size of a stage's output: `per_token * seq + fixed` values per text, plus
/// `side_bytes_per_token` bytes per token sent as they are (an attention mask).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    /// Values per token.
    pub per_token: u64,
    /// Values per text, whatever its length (a pooled vector).
    pub fixed: u64,
    /// Unencoded bytes per token.
    #[serde(default)]
    pub side_bytes_per_token: u64,
}

impl Tensor {
    /// Wire bytes for `batch` texts of `seq` tokens.
    pub fn bytes(&self, enc: Encoding, seq: u64, batch: u64) -> u64 {
        let values = self
            .per_token
            .saturating_mul(seq)
            .saturating_add(self.fixed);
        let side = self.side_bytes_per_token.saturating_mul(seq);
        batch.saturating_mul(encoded_bytes(enc, values).saturating_add(side))
    }
}

/// One stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// Name (`embeddings`, `block 3`, `head`).
    pub name: String,
    /// Bytes of its weights (what a device running it must hold).
    pub weight_bytes: u64,
    /// Bytes of KV cache it holds per position (a decoder's blocks; 0 otherwise).
    #[serde(default)]
    pub kv_bytes_per_token: u64,
    /// Positions of KV cache it holds at most, whatever the context (a sliding-window layer's
    /// ring); absent: every position of the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_positions: Option<u64>,
    /// The stages whose outputs it reads; empty: it reads the model's input.
    pub inputs: Vec<usize>,
    /// Its output.
    pub output: Tensor,
}

/// A model as a DAG of stages, in topological order (every input index is smaller than the
/// stage's own), with the model's raw input size and the stage whose output is the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// The stages.
    pub stages: Vec<Stage>,
    /// Bytes of the raw input per token (token ids and mask) for a raw upload.
    pub input_bytes_per_token: u64,
    /// The stage whose output is the model's result.
    pub result: usize,
}

impl Graph {
    /// A chain: each stage reads the previous one, the first reads the input, the last is the
    /// result.
    pub fn chain(stages: Vec<(String, u64, Tensor)>, input_bytes_per_token: u64) -> Graph {
        let n = stages.len();
        Graph {
            stages: stages
                .into_iter()
                .enumerate()
                .map(|(i, (name, weight_bytes, output))| Stage {
                    kv_bytes_per_token: 0,
                    kv_positions: None,
                    name,
                    weight_bytes,
                    inputs: if i == 0 { vec![] } else { vec![i - 1] },
                    output,
                })
                .collect(),
            input_bytes_per_token,
            result: n.saturating_sub(1),
        }
    }

    /// Checks the graph: topological order, indices in range, a result stage.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.stages.is_empty() {
            return Err(PlanError::Graph("no stages".into()));
        }
        if self.result >= self.stages.len() {
            return Err(PlanError::Graph(format!(
                "result stage {} of {}",
                self.result,
                self.stages.len()
            )));
        }
        for (i, s) in self.stages.iter().enumerate() {
            if let Some(&bad) = s.inputs.iter().find(|&&p| p >= i) {
                return Err(PlanError::Graph(format!(
                    "stage {i} ({:?}) reads stage {bad}, which is not before it",
                    s.name
                )));
            }
        }
        Ok(())
    }

    /// Whether the graph is a chain (stage i reads exactly stage i - 1).
    pub fn is_chain(&self) -> bool {
        self.stages.iter().enumerate().all(|(i, s)| {
            if i == 0 {
                s.inputs.is_empty()
            } else {
                s.inputs == [i - 1]
            }
        })
    }

    /// Whether `on_device` (one flag per stage) is a valid cut: closed under predecessors.
    pub fn is_cut(&self, on_device: &[bool]) -> bool {
        on_device.len() == self.stages.len()
            && self
                .stages
                .iter()
                .enumerate()
                .all(|(i, s)| !on_device[i] || s.inputs.iter().all(|&p| on_device[p]))
    }

    /// Every valid cut, by a depth-first walk in topological order that puts a stage on the
    /// device only when all its inputs are there: exact, and as many leaves as there are cuts
    /// (`n + 1` for a chain).
    pub fn cuts(&self) -> Vec<Vec<bool>> {
        let mut out = Vec::new();
        let mut cur = Vec::with_capacity(self.stages.len());
        self.walk(&mut cur, &mut out);
        out
    }

    fn walk(&self, cur: &mut Vec<bool>, out: &mut Vec<Vec<bool>>) {
        let i = cur.len();
        if i == self.stages.len() {
            out.push(cur.clone());
            return;
        }
        cur.push(false);
        self.walk(cur, out);
        cur.pop();
        if self.stages[i].inputs.iter().all(|&p| cur[p]) {
            cur.push(true);
            self.walk(cur, out);
            cur.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(per_token: u64) -> Tensor {
        Tensor {
            per_token,
            fixed: 0,
            side_bytes_per_token: 0,
        }
    }

    #[test]
    fn a_chain_has_n_plus_one_cuts_and_a_diamond_five() {
        let g = Graph::chain((0..4).map(|i| (format!("s{i}"), 1, t(1))).collect(), 4);
        assert!(g.is_chain());
        assert_eq!(g.cuts().len(), 5);
        // a -> b, a -> c, (b, c) -> d: {}, {a}, {a,b}, {a,c}, {a,b,c}, {a,b,c,d}.
        let mut d = g.clone();
        d.stages[2].inputs = vec![0];
        d.stages[3].inputs = vec![1, 2];
        assert!(!d.is_chain());
        d.validate().unwrap();
        assert_eq!(d.cuts().len(), 6);
        assert!(d.cuts().iter().all(|c| d.is_cut(c)));
        d.stages[1].inputs = vec![2];
        assert!(d.validate().is_err());
    }

    #[test]
    fn encodings_size_activations() {
        assert_eq!(encoded_bytes(Encoding::F32, 64), 256);
        assert_eq!(encoded_bytes(Encoding::F16, 64), 128);
        assert_eq!(encoded_bytes(Encoding::Int8, 64), 64 + 8);
        let x = Tensor {
            per_token: 384,
            fixed: 0,
            side_bytes_per_token: 1,
        };
        assert_eq!(x.bytes(Encoding::F32, 128, 2), 2 * (4 * 384 * 128 + 128));
    }
}

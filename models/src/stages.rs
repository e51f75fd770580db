//! Stages, the units a model is cut into between a device and a server: `embeddings`, one
//! `block i` per layer, `head`. Each model lists its own ([`crate::bert::Encoder::stages`],
//! [`crate::decoder::Decoder::stages`]) with the weight bytes each holds and the size of what it
//! hands to the next; the planner, `edgecut profile`, the server and the split client read them
//! here instead of doing index arithmetic of their own.

use std::fmt;
use std::ops::Range;

use edgecut_format::gguf::GgufFile;

/// Which stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StageId {
    /// Token ids to vectors.
    Embeddings,
    /// One block (layer).
    Block(usize),
    /// The last stage: pooling or a classifier (encoders), the vocabulary projection
    /// (decoders).
    Head,
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageId::Embeddings => f.write_str("embeddings"),
            StageId::Block(i) => write!(f, "block {i}"),
            StageId::Head => f.write_str("head"),
        }
    }
}

/// The size of a stage's output: `per_token * seq + fixed` values per text, plus
/// `side_bytes_per_token` bytes per token sent as they are (an attention mask).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageOutput {
    /// Values per token.
    pub per_token: u64,
    /// Values per text, whatever its length.
    pub fixed: u64,
    /// Unencoded bytes per token.
    pub side_bytes_per_token: u64,
}

/// One stage: what it is, the weight bytes it holds, what it outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// Which stage.
    pub id: StageId,
    /// Bytes of weights (as stored in the file) the stage reads.
    pub weight_bytes: u64,
    /// Bytes of KV cache the stage holds per position (a decoder's blocks; 0 otherwise).
    pub kv_bytes_per_token: u64,
    /// Positions of KV cache the stage holds at most, whatever the context (a sliding-window
    /// layer's ring); `None`: every position of the context.
    pub kv_positions: Option<u64>,
    /// Its output.
    pub output: StageOutput,
}

/// A model's stages, in order (a chain), and the bytes per token of its raw input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageGraph {
    /// `embeddings`, `block 0..layers`, `head`.
    pub stages: Vec<Stage>,
    /// Bytes per token of the raw input (what a cut before every stage sends).
    pub input_bytes_per_token: u64,
}

impl StageGraph {
    /// The chain of a model with `layers` blocks: weight bytes from `f`'s tensors (`blk.{i}.`
    /// for block `i`; for the head, the tensors `head` names or whose names start with a prefix
    /// in it; every other tensor counts for the embeddings), each block's output `hidden`
    /// values per token plus `side` bytes, the head's `head_out`.
    pub fn chain(
        f: &GgufFile,
        layers: usize,
        head: &[&str],
        hidden: u64,
        side: u64,
        head_out: StageOutput,
        input_bytes_per_token: u64,
    ) -> StageGraph {
        Self::chain_of(
            f,
            "blk.",
            layers,
            head,
            hidden,
            side,
            head_out,
            input_bytes_per_token,
        )
    }

    /// [`StageGraph::chain`] with blocks named `{blocks}{i}.` (CLIP's image tower: `v.blk.`).
    #[allow(clippy::too_many_arguments)]
    pub fn chain_of(
        f: &GgufFile,
        blocks: &str,
        layers: usize,
        head: &[&str],
        hidden: u64,
        side: u64,
        head_out: StageOutput,
        input_bytes_per_token: u64,
    ) -> StageGraph {
        let mut weights = vec![0u64; layers + 2];
        for t in f.tensors() {
            let block = t
                .name
                .strip_prefix(blocks)
                .and_then(|r| r.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|&i| i < layers);
            let at = match block {
                Some(i) => i + 1,
                None if head.iter().any(|h| t.name.starts_with(h)) => layers + 1,
                None => 0,
            };
            weights[at] += t.size;
        }
        let tokens = StageOutput {
            per_token: hidden,
            fixed: 0,
            side_bytes_per_token: side,
        };
        let ids = (0..layers + 2).map(|s| match s {
            0 => StageId::Embeddings,
            s if s <= layers => StageId::Block(s - 1),
            _ => StageId::Head,
        });
        StageGraph {
            stages: ids
                .zip(weights)
                .map(|(id, weight_bytes)| Stage {
                    id,
                    weight_bytes,
                    kv_bytes_per_token: 0,
                    kv_positions: None,
                    output: if id == StageId::Head {
                        head_out
                    } else {
                        tokens
                    },
                })
                .collect(),
            input_bytes_per_token,
        }
    }

    /// Stages in all.
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// Whether there are none (never, for a model).
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Blocks (layers) of the model.
    pub fn layers(&self) -> usize {
        self.stages
            .iter()
            .filter(|s| matches!(s.id, StageId::Block(_)))
            .count()
    }

    /// The blocks a device runs at cut `cut` (the number of stages it runs: `0` sends the
    /// raw input, [`Self::len`] runs everything).
    pub fn device_blocks(&self, cut: usize) -> Range<usize> {
        let l = self.layers();
        0..cut.saturating_sub(1).min(l)
    }

    /// The blocks the server runs at cut `cut`.
    pub fn server_blocks(&self, cut: usize) -> Range<usize> {
        let l = self.layers();
        cut.saturating_sub(1).min(l)..l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_split_the_blocks_between_device_and_server() {
        let g = StageGraph {
            stages: (0..5)
                .map(|s| Stage {
                    id: match s {
                        0 => StageId::Embeddings,
                        4 => StageId::Head,
                        i => StageId::Block(i - 1),
                    },
                    weight_bytes: 0,
                    kv_bytes_per_token: 0,
                    kv_positions: None,
                    output: StageOutput {
                        per_token: 1,
                        fixed: 0,
                        side_bytes_per_token: 0,
                    },
                })
                .collect(),
            input_bytes_per_token: 4,
        };
        assert_eq!(g.layers(), 3);
        // cut: (device blocks, server blocks)
        for (cut, dev, srv) in [
            (0, 0..0, 0..3),
            (1, 0..0, 0..3),
            (2, 0..1, 1..3),
            (4, 0..3, 3..3),
            (5, 0..3, 3..3),
        ] {
            assert_eq!(g.device_blocks(cut), dev, "cut {cut}");
            assert_eq!(g.server_blocks(cut), srv, "cut {cut}");
        }
        assert_eq!(StageId::Block(2).to_string(), "block 2");
    }
}

//! edgecut's partition planner: where to cut a model between a device and a server.
//!
//! Pure logic, no I/O: a model is a DAG of stages ([`Graph`]) with weight bytes and activation
//! sizes; [`Profile`]s hold measured stage times per sequence length on one machine; a [`Link`]
//! models the network; the [`planner`] picks the cut that minimises latency, device energy or
//! server time under memory, privacy and availability constraints, and tells the bandwidths at
//! which its choice changes; [`Replanner`] follows a changing link with hysteresis.
//!
//! A cut is the set of stages that run on the device. It must be closed under predecessors (a
//! stage runs on the device only if everything it reads was computed there). For a chain of `n`
//! stages the cut is a number `K`: the first `K` stages run on the device (`K = n`: all on the
//! device; `K = 0`: the raw input goes to the server).
//!
//! After Neurosurgeon (Kang et al., ASPLOS'17: per-layer costs, a scan over cut points), DADS
//! (Hu et al., INFOCOM'19: DAG partitioning) and Edgent (Li et al., 2018: re-planning as the
//! bandwidth changes).

pub mod decode;
mod graph;
pub mod link;
pub mod planner;
pub mod profile;
pub mod replan;
pub mod svg;

pub use decode::{DecodeBreakdown, DecodeCalibration, DecodePlan, DecodePlanner, DecodeScenario};
pub use graph::{Encoding, Graph, Stage, Tensor};
pub use link::{Link, PowerModel};
pub use planner::{Breakdown, Constraints, Cut, Objective, Plan, Planner, Scenario};
pub use profile::{Profile, Sample};
pub use replan::Replanner;

/// What can be wrong with planner inputs; each names the stage, field or value at fault.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    /// A graph that is not a DAG, or refers to stages that do not exist.
    #[error("invalid stage graph: {0}")]
    Graph(String),
    /// A profile that does not fit the graph or has no measurements.
    #[error("invalid profile: {0}")]
    Profile(String),
    /// A link or power model value out of range, or unparsable.
    #[error("invalid link: {0}")]
    Link(String),
    /// A name that is no objective.
    #[error("objective {0:?}: expected latency, energy or server")]
    Objective(String),
    /// No cut satisfies the constraints.
    #[error("no cut satisfies the constraints: {0}")]
    Infeasible(String),
}

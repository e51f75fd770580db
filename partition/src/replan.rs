//! Following a changing link: re-plan on every new bandwidth estimate, but switch cuts only when
//! the new best is clearly better, so noise around a threshold does not make the cut flap.

use crate::link::Link;
use crate::planner::{Breakdown, Constraints, Objective, Planner, Scenario};
use crate::PlanError;

/// Keeps the current cut until another one predicts a cost lower by more than `margin`
/// (relative), or the current one becomes infeasible.
#[derive(Debug)]
pub struct Replanner<'p> {
    planner: Planner<'p>,
    scenario: Scenario,
    objective: Objective,
    constraints: Constraints,
    margin: f64,
    current: Option<Vec<bool>>,
    switches: usize,
}

impl<'p> Replanner<'p> {
    /// A re-planner with a relative hysteresis `margin` (0.15: switch only for a 15% gain).
    pub fn new(
        planner: Planner<'p>,
        scenario: Scenario,
        objective: Objective,
        constraints: Constraints,
        margin: f64,
    ) -> Replanner<'p> {
        Replanner {
            planner,
            scenario,
            objective,
            constraints,
            margin,
            current: None,
            switches: 0,
        }
    }

    /// Takes a new link estimate; returns the cut to use now and its predicted cost.
    pub fn update(&mut self, link: Link) -> Result<Breakdown, PlanError> {
        self.scenario.link = link;
        let best = self
            .planner
            .best(&self.scenario, self.objective, &self.constraints)?;
        let keep = self.current.as_ref().and_then(|cur| {
            if !self.planner.feasible(cur, &self.constraints) {
                return None;
            }
            let now = self.planner.evaluate(cur, &self.scenario);
            let gain = now.value(self.objective) - best.value(self.objective);
            (gain <= self.margin * now.value(self.objective)).then_some(now)
        });
        Ok(match keep {
            Some(now) => now,
            None => {
                if self.current.is_some() {
                    self.switches += 1;
                }
                self.current = Some(best.cut.on_device.clone());
                best
            }
        })
    }

    /// How many times the cut has changed.
    pub fn switches(&self) -> usize {
        self.switches
    }
}

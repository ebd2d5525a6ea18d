//! The linear program that decides which failure domains hold each PG's slots.
//!
//! PGs that currently occupy the same set of domains are interchangeable, so they are
//! grouped into classes and the LP has one variable per (class, domain):
//! `x[c][d]` = how many PGs of class `c` get a slot in domain `d`.
//!
//! ```text
//! maximise   sum of x[c][d] over d in current(c)        (slots that stay where they are)
//!            - 0.75 * sum_d (under[d] + over[d])          (minus distance from the share)
//! subject to sum_d x[c][d] = k * |c|                      (every PG gets k slots)
//!            sum_c x[c][d] + under[d] >= lo[d]            (lo/hi: floor/ceiling of the
//!            sum_c x[c][d] - over[d]  <= hi[d]             domain's share)
//!            0 <= x[c][d] <= |c|                          (one slot per PG and domain)
//!            0 <= under[d], over[d] <= slack[d]           (hard limit: ~3% of the share)
//! ```
//!
//! The penalty 0.75 is between 1/2 and 1 on purpose: a move that takes a slot from a domain
//! above its share to one below it gains 1.5 and is made (balance is restored, e.g. a new
//! OSD fills up), while a move that only fixes one side gains 0.75 < 1 and is not (a
//! removal moves only the slots the removed OSD held, even if a domain ends one slot short).
//!
//! Every `x` appears in exactly one class row and one domain row (the domain row twice, as
//! the two bounds), and the slacks are unit columns: the constraint matrix is totally
//! unimodular, so the simplex method's vertex solutions are whole numbers without branch
//! and bound. (The solution is still checked; a fractional one is an error, not rounded.)
//!
//! To keep the problem small, a class first only gets variables for the domains it holds
//! plus the domains below their upper bound (where slots can move to). If that restricted
//! problem is infeasible, the full one is solved.

use good_lp::{
    constraint, microlp, variable, Expression, ProblemVariables, ResolutionError, Solution,
    SolverModel, Variable,
};
use std::collections::{BTreeMap, BTreeSet};

/// Cost of one slot outside a domain's floor/ceiling, in kept slots (see above).
const IMBALANCE_PENALTY: f64 = 0.75;

/// PGs that currently hold slots in the same set of domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgClass {
    pub domains: BTreeSet<usize>,
    pub pgs: Vec<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LpError {
    #[error("no placement satisfies the failure domain and weight constraints")]
    Infeasible,
    #[error("the LP solver failed: {0}")]
    Solver(String),
    #[error("the LP solution is not whole ({0}); refusing to round it")]
    NotIntegral(f64),
}

/// The solution: for each class, domain -> number of its PGs with a slot there.
#[derive(Debug)]
pub struct DomainCounts {
    pub per_class: Vec<BTreeMap<usize, u32>>,
    /// Size of the LP that produced it, for logs and the benchmark.
    pub variables: usize,
}

/// Solves the domain-level LP; `k` slots per PG, domain bounds `lo`/`hi`.
pub fn solve(
    classes: &[PgClass],
    lo: &[u32],
    hi: &[u32],
    slack: &[u32],
    k: u32,
) -> Result<DomainCounts, LpError> {
    let mut load = vec![0u32; lo.len()];
    for class in classes {
        for &d in &class.domains {
            load[d] += class.pgs.len() as u32;
        }
    }
    let open: Vec<usize> = (0..lo.len()).filter(|&d| load[d] < hi[d]).collect();
    match solve_with(classes, lo, hi, slack, k, Some(&open)) {
        Err(LpError::Infeasible) => solve_with(classes, lo, hi, slack, k, None),
        other => other,
    }
}

fn solve_with(
    classes: &[PgClass],
    lo: &[u32],
    hi: &[u32],
    slack: &[u32],
    k: u32,
    open_domains: Option<&[usize]>,
) -> Result<DomainCounts, LpError> {
    let domain_count = lo.len();
    let mut problem = ProblemVariables::new();
    let mut cells: Vec<(usize, usize, Variable)> = Vec::new();
    for (c, class) in classes.iter().enumerate() {
        let size = class.pgs.len() as f64;
        let mut add = |d: usize| cells.push((c, d, problem.add(variable().min(0).max(size))));
        match open_domains {
            Some(open) => {
                let wanted: BTreeSet<usize> =
                    class.domains.iter().chain(open.iter()).copied().collect();
                wanted.into_iter().for_each(&mut add);
            }
            None => (0..domain_count).for_each(&mut add),
        }
    }
    let under: Vec<Variable> = slack
        .iter()
        .map(|&s| problem.add(variable().min(0).max(f64::from(s))))
        .collect();
    let over: Vec<Variable> = slack
        .iter()
        .map(|&s| problem.add(variable().min(0).max(f64::from(s))))
        .collect();
    let kept: Expression = cells
        .iter()
        .filter(|(c, d, _)| classes[*c].domains.contains(d))
        .map(|(_, _, v)| *v)
        .sum();
    let off_share: Expression = under.iter().chain(&over).copied().sum();
    let objective = kept - IMBALANCE_PENALTY * off_share;
    let mut class_rows: Vec<Expression> = vec![Expression::default(); classes.len()];
    let mut domain_rows: Vec<Expression> = vec![Expression::default(); domain_count];
    for &(c, d, v) in &cells {
        class_rows[c] += v;
        domain_rows[d] += v;
    }
    let mut model = problem.maximise(objective).using(microlp);
    for (class, row) in classes.iter().zip(class_rows) {
        let slots = f64::from(k) * class.pgs.len() as f64;
        model = model.with(constraint!(row == slots));
    }
    for (d, row) in domain_rows.into_iter().enumerate() {
        model = model.with(constraint!(row.clone() + under[d] >= f64::from(lo[d])));
        model = model.with(constraint!(row - over[d] <= f64::from(hi[d])));
    }
    let solution = match model.solve() {
        Ok(solution) => solution,
        Err(ResolutionError::Infeasible) => return Err(LpError::Infeasible),
        Err(other) => return Err(LpError::Solver(other.to_string())),
    };
    let mut per_class = vec![BTreeMap::new(); classes.len()];
    for &(c, d, v) in &cells {
        let value = solution.value(v);
        let whole = value.round();
        if (value - whole).abs() > 1e-6 {
            return Err(LpError::NotIntegral(value));
        }
        if whole >= 1.0 {
            per_class[c].insert(d, whole as u32);
        }
    }
    Ok(DomainCounts {
        per_class,
        variables: cells.len() + 2 * slack.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_placement_fills_domains_to_their_share() {
        let classes = [PgClass {
            domains: BTreeSet::new(),
            pgs: (1..=8).collect(),
        }];
        let counts = solve(&classes, &[4, 4, 8, 8], &[4, 4, 8, 8], &[0; 4], 3).unwrap();
        assert_eq!(
            counts.per_class[0],
            BTreeMap::from([(0, 4), (1, 4), (2, 8), (3, 8)])
        );
    }

    #[test]
    fn keeps_current_slots_when_they_fit() {
        let classes = [
            PgClass {
                domains: BTreeSet::from([0, 1]),
                pgs: vec![1, 2],
            },
            PgClass {
                domains: BTreeSet::from([1, 2]),
                pgs: vec![3, 4],
            },
        ];
        // A new domain 3 must take 2 slots: exactly 2 slots move.
        let counts = solve(&classes, &[1, 2, 1, 2], &[2, 3, 2, 2], &[0; 4], 2).unwrap();
        let kept: u32 = counts
            .per_class
            .iter()
            .zip(&classes)
            .map(|(x, class)| {
                class
                    .domains
                    .iter()
                    .map(|d| x.get(d).copied().unwrap_or(0))
                    .sum::<u32>()
            })
            .sum();
        assert_eq!(kept, 6);
        let domain3: u32 = counts
            .per_class
            .iter()
            .map(|x| x.get(&3).copied().unwrap_or(0))
            .sum();
        assert_eq!(domain3, 2);
    }

    #[test]
    fn impossible_bounds_are_infeasible() {
        let classes = [PgClass {
            domains: BTreeSet::new(),
            pgs: vec![1, 2],
        }];
        assert_eq!(
            solve(&classes, &[3, 0], &[3, 2], &[0; 2], 2).unwrap_err(),
            LpError::Infeasible
        );
    }
}

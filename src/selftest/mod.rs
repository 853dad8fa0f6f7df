//! `densitrace selftest`: whether this machine's device computes what densitrace promises, from
//! the one binary, before a sweep trusts it.
//!
//! One list of checks (`CHECKS`) serves the command and `tests/kernels.rs`, so what a user runs on
//! a new GPU node is exactly what CI runs on llvmpipe. Each check compares values against a
//! tolerance and reports, per metric, the comparison that came closest to failing (its error and
//! the tolerance there) and how many were made. A check that cannot mean anything on the chosen
//! device is reported as skipped, with the reason, never as passed:
//! - the reduction checks (`Family::Kernels`) hold what the device's evaluations reduce with
//!   (`Reduction::for_device`) to the f64 reference: on wgpu the WGSL kernels and
//!   `kernels::across`, on the CPU backend `kernels::fast`; the closed-form, invariance and
//!   science-table checks run on that same reduction. The dispatch-size check is about wgpu's
//!   grid limit and is skipped on the CPU backend; were the default reduction the reference
//!   itself, comparing it with itself would be skipped too.
//!
//! The model checks run a forward pass and one AdamW step on the device, and the end-to-end check
//! runs a short run and compares what each evaluation read back with the size derived from its
//! plan (`expected_readback_bytes`): on wgpu only the summaries may cross.
//!
//! The list, the context the checks run against, running them and the pass/fail table are here;
//! the checks are in `reduction.rs` (`Family::Kernels`, on the inputs of `inputs.rs`), `model.rs`
//! and `end_to_end.rs`, and how a check's comparisons are judged and collected in `tally.rs`.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::config::DeviceChoice;
use crate::device::{self, RunDevice};
use crate::measure::reduce::Reduction;

mod end_to_end;
mod inputs;
mod model;
mod reduction;
mod tally;

pub use end_to_end::expected_readback_bytes;
pub use inputs::{adversarial_rows, normal};
pub(crate) use reduction::row_tolerance;
pub use tally::{Limit, MetricRow, Perturbation};
use tally::{Tally, number};

/// What a check exercises; `tests/kernels.rs` runs every `Kernels` check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// The density reduction evaluations use: the WGSL kernels on wgpu, `kernels::fast` on the
    /// CPU backend.
    Kernels,
    /// The GPT's forward pass and one training step.
    Model,
    /// A short run through `run::run`, as `densitrace run` does it.
    EndToEnd,
}

/// One check of the list.
pub struct Check {
    pub name: &'static str,
    pub family: Family,
    /// What it compares with what, for the table's legend and the JSON.
    pub what: &'static str,
    run: fn(&Context) -> Result<Ran>,
}

/// Every check, in the order the table shows them.
pub const CHECKS: &[Check] = &[
    Check {
        name: "row metrics",
        family: Family::Kernels,
        what: "the device's reduction (row_moments.wgsl and row_order.wgsl on wgpu, \
               kernels::fast on the CPU backend) against the f64 reference: every per-vector \
               metric of 14 kinds of row (normal, scaled, shifted, sparse, Cauchy, one-hot, \
               constant, all zero, ties, huge, tiny, NaN, +Inf, -Inf) at widths 1 to 8192",
        run: reduction::row_metrics,
    },
    Check {
        name: "aggregate",
        family: Family::Kernels,
        what: "the device's aggregate over vectors (aggregate.wgsl on wgpu, kernels::fast's \
               table aggregated on the CPU backend) against the f64 reference: each column's \
               mean, std and n over 777 vectors, three holding a NaN (left out) and two all zero",
        run: reduction::aggregate,
    },
    Check {
        name: "quantiles",
        family: Family::Kernels,
        what: "the device's quantiles (column_quantiles.wgsl on wgpu, sorting in workgroup \
               memory for 777 vectors and in global memory for 5000; kernels::fast's selection \
               on the CPU backend) against the f64 reference (numpy's interpolation)",
        run: reduction::quantiles,
    },
    Check {
        name: "across-vector metrics",
        family: Family::Kernels,
        what: "the device's across-vector metrics (kernels::across on wgpu, kernels::fast on the \
               CPU backend: active_fraction, dead_fraction, rankme) against the f64 reference, \
               on ReLU-like low-rank vectors with dead neurons and a NaN",
        run: reduction::across_vectors,
    },
    Check {
        name: "dispatch past 65,535 workgroups",
        family: Family::Kernels,
        what: "530,000 rows of width 5, more workgroups than one dispatch dimension holds: rows \
               on both sides of each boundary against the f64 reference",
        run: reduction::large_dispatch,
    },
    Check {
        name: "science table",
        family: Family::Kernels,
        what: "the device's reduction on 2000 i.i.d. N(0,1) vectors against the reference table \
               of docs/science.md (absolute 0.005)",
        run: reduction::science_table,
    },
    Check {
        name: "scale and permutation",
        family: Family::Kernels,
        what: "the device's reduction is unchanged by scaling a heavy-tailed row by 37.5 (l1 and \
               l2 scale with it; absolute thresholds are exempt) and by permuting it",
        run: reduction::invariance,
    },
    Check {
        name: "extremes",
        family: Family::Kernels,
        what: "the device's reduction on one-hot and constant rows against closed forms (hoyer 1 \
               and 0, eff_rank 1/d, gini (d-1)/d and 0, top-k energy 1, max/median 1)",
        run: reduction::extremes,
    },
    Check {
        name: "forward pass",
        family: Family::Model,
        what: "a 1-block GPT's logits on the device against the CPU backend, same weights and \
               tokens",
        run: model::forward_pass,
    },
    Check {
        name: "train step",
        family: Family::Model,
        what: "one AdamW step with global-norm clipping on the device: the initial loss near \
               ln(vocab), a finite non-zero gradient norm, the parameters move and the loss on \
               the same batch falls",
        run: model::train_step,
    },
    Check {
        name: "end-to-end run",
        family: Family::EndToEnd,
        what: "a 2-step run evaluated at steps 0, 1 and 2 (4 probe sets, 3 sites, 2 positions): \
               each evaluation's read-back bytes against the size its plan implies (summaries on \
               wgpu, the activations on the CPU backend)",
        run: end_to_end::end_to_end,
    },
];

/// The check called `name`.
pub fn check(name: &str) -> &'static Check {
    CHECKS
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no selftest check is called {name:?}"))
}

/// What the checks run against.
pub struct Context {
    pub device: RunDevice,
    /// Fewer and smaller inputs where a check allows it (`--quick`).
    pub quick: bool,
    /// `None` except in the tests that prove a wrong value is caught.
    pub perturbation: Option<Perturbation>,
}

impl Context {
    pub fn new(device: RunDevice, quick: bool) -> Context {
        Context {
            device,
            quick,
            perturbation: None,
        }
    }

    fn tally(&self) -> Tally {
        Tally::new(self.perturbation.clone())
    }
}

/// How a check ended.
enum Ran {
    Compared(Tally),
    Skipped(String),
}

/// How a check ended, as the table and the JSON show it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// It ran; it passed if every row did.
    Ran {
        metrics: Vec<MetricRow>,
    },
    Skipped {
        reason: String,
    },
    /// It could not finish (e.g. the run failed); a failure.
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub family: Family,
    pub what: String,
    pub seconds: f64,
    pub outcome: Outcome,
}

impl CheckResult {
    /// `check: metric` for every failed row, or `check` when it could not finish.
    pub fn failures(&self) -> Vec<String> {
        match &self.outcome {
            Outcome::Ran { metrics } => metrics
                .iter()
                .filter(|m| !m.passed())
                .map(|m| format!("{}: {}", self.check, m.metric))
                .collect(),
            Outcome::Skipped { .. } => Vec::new(),
            Outcome::Error { message } => vec![format!("{}: {message}", self.check)],
        }
    }

    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    pub fn skipped(&self) -> bool {
        matches!(self.outcome, Outcome::Skipped { .. })
    }
}

/// Runs one check; a check that errs is a failure that names the error.
pub fn run_check(check: &Check, context: &Context) -> CheckResult {
    let started = Instant::now();
    let outcome = match (check.run)(context) {
        Ok(Ran::Compared(tally)) => Outcome::Ran {
            metrics: tally.into_rows(),
        },
        Ok(Ran::Skipped(reason)) => Outcome::Skipped { reason },
        Err(e) => Outcome::Error {
            message: format!("{e:#}"),
        },
    };
    CheckResult {
        check: check.name.to_string(),
        family: check.family,
        what: check.what.to_string(),
        seconds: started.elapsed().as_secs_f64(),
        outcome,
    }
}

/// What `densitrace selftest` asks for.
#[derive(Debug, Clone, Copy)]
pub struct SelftestOptions {
    pub device: DeviceChoice,
    pub quick: bool,
}

#[derive(Debug, Serialize)]
pub struct SelftestReport {
    /// `wgpu` or `cpu`.
    pub backend: String,
    /// The adapter, or the CPU backend.
    pub device: String,
    pub quick: bool,
    pub checks: Vec<CheckResult>,
    pub seconds: f64,
}

/// Opens the device (a missing adapter is bad input, with what to install) and runs every check
/// on it, reporting progress on stderr.
pub fn selftest(options: SelftestOptions) -> Result<SelftestReport> {
    let run_device = device::select(options.device)?;
    let device = match &run_device.adapter {
        Some(a) => format!(
            "{} ({}, {}, driver {} {})",
            a.name, a.backend, a.device_type, a.driver, a.driver_info
        ),
        None => format!(
            "Burn CPU backend (flex), metrics by {}",
            match Reduction::for_device(&run_device) {
                Reduction::CpuFast => "kernels::fast",
                _ => "the f64 reference",
            }
        ),
    };
    eprintln!("selftest on {device}");
    let backend = run_device.backend.to_string();
    let context = Context::new(run_device, options.quick);
    let started = Instant::now();
    let checks = CHECKS
        .iter()
        .map(|c| {
            let result = run_check(c, &context);
            eprintln!(
                "  {}: {} ({:.1} s)",
                c.name,
                verdict(&result),
                result.seconds
            );
            result
        })
        .collect();
    Ok(SelftestReport {
        backend,
        device,
        quick: options.quick,
        checks,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn verdict(result: &CheckResult) -> &'static str {
    if result.skipped() {
        "skipped"
    } else if result.passed() {
        "pass"
    } else {
        "FAIL"
    }
}

impl SelftestReport {
    /// `check: metric` of every failure.
    pub fn failures(&self) -> Vec<String> {
        self.checks.iter().flat_map(CheckResult::failures).collect()
    }

    /// The pass/fail table: one line per metric of each check that ran, one per skipped check.
    pub fn table(&self) -> String {
        let mode = if self.quick { "quick" } else { "full" };
        let mut out = format!(
            "selftest on {} ({}, {mode}, {:.1} s)\n\n",
            self.device, self.backend, self.seconds
        );
        out.push_str(&table(&self.checks));
        let failures = self.failures();
        let skipped = self.checks.iter().filter(|c| c.skipped()).count();
        let _ = writeln!(
            out,
            "\n{} checks: {} passed, {} failed, {skipped} skipped",
            self.checks.len(),
            self.checks
                .iter()
                .filter(|c| c.passed() && !c.skipped())
                .count(),
            self.checks.iter().filter(|c| !c.passed()).count(),
        );
        for f in failures {
            let _ = writeln!(out, "FAILED {f}");
        }
        out
    }
}

/// The table of `results` (what `SelftestReport::table` prints, without its header).
pub fn table(results: &[CheckResult]) -> String {
    let mut out = format!(
        "{:<32} {:<30} {:>11} {:>13} {:>9}  {:<6} {}\n",
        "check", "metric", "largest err", "tolerance", "compared", "result", "at"
    );
    for r in results {
        match &r.outcome {
            Outcome::Ran { metrics } => {
                for m in metrics {
                    let result = if m.passed() {
                        "pass".to_string()
                    } else {
                        format!("FAIL {}/{}", m.failed, m.compared)
                    };
                    let _ = writeln!(
                        out,
                        "{:<32} {:<30} {:>11} {:>13} {:>9}  {:<6} {}",
                        r.check,
                        m.metric,
                        number(m.value),
                        m.limit.text(),
                        m.compared,
                        result,
                        m.at
                    );
                }
            }
            Outcome::Skipped { reason } => {
                let _ = writeln!(out, "{:<32} skipped: {reason}", r.check);
            }
            Outcome::Error { message } => {
                let _ = writeln!(out, "{:<32} FAIL (error): {message}", r.check);
            }
        }
    }
    out
}

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

use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context as _, Result};
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::config::{Config, DeviceChoice, ModelConfig, ProbePlan, TrainConfig};
use crate::data::probes::ProbeSet;
use crate::device::{self, RunDevice};
use crate::kernels::{self, across, fast, reference};
use crate::measure::answers::answer_metrics;
use crate::measure::reduce::Reduction;
use crate::metrics::{Columns, MetricSpec, Position, SiteKind};
use crate::model::Gpt;
use crate::report::iid::{SCIENCE_TABLE, SCIENCE_TABLE_METRICS};
use crate::run::{self, Destination};
use crate::rundir::{self, FinishedRun};
use crate::train::{clip_global_norm, optimizer};

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
        run: row_metrics,
    },
    Check {
        name: "aggregate",
        family: Family::Kernels,
        what: "the device's aggregate over vectors (aggregate.wgsl on wgpu, kernels::fast's \
               table aggregated on the CPU backend) against the f64 reference: each column's \
               mean, std and n over 777 vectors, three holding a NaN (left out) and two all zero",
        run: aggregate,
    },
    Check {
        name: "quantiles",
        family: Family::Kernels,
        what: "the device's quantiles (column_quantiles.wgsl on wgpu, sorting in workgroup \
               memory for 777 vectors and in global memory for 5000; kernels::fast's selection \
               on the CPU backend) against the f64 reference (numpy's interpolation)",
        run: quantiles,
    },
    Check {
        name: "across-vector metrics",
        family: Family::Kernels,
        what: "the device's across-vector metrics (kernels::across on wgpu, kernels::fast on the \
               CPU backend: active_fraction, dead_fraction, rankme) against the f64 reference, \
               on ReLU-like low-rank vectors with dead neurons and a NaN",
        run: across_vectors,
    },
    Check {
        name: "dispatch past 65,535 workgroups",
        family: Family::Kernels,
        what: "530,000 rows of width 5, more workgroups than one dispatch dimension holds: rows \
               on both sides of each boundary against the f64 reference",
        run: large_dispatch,
    },
    Check {
        name: "science table",
        family: Family::Kernels,
        what: "the device's reduction on 2000 i.i.d. N(0,1) vectors against the reference table \
               of docs/science.md (absolute 0.005)",
        run: science_table,
    },
    Check {
        name: "scale and permutation",
        family: Family::Kernels,
        what: "the device's reduction is unchanged by scaling a heavy-tailed row by 37.5 (l1 and \
               l2 scale with it; absolute thresholds are exempt) and by permuting it",
        run: invariance,
    },
    Check {
        name: "extremes",
        family: Family::Kernels,
        what: "the device's reduction on one-hot and constant rows against closed forms (hoyer 1 \
               and 0, eff_rank 1/d, gini (d-1)/d and 0, top-k energy 1, max/median 1)",
        run: extremes,
    },
    Check {
        name: "forward pass",
        family: Family::Model,
        what: "a 1-block GPT's logits on the device against the CPU backend, same weights and \
               tokens",
        run: forward_pass,
    },
    Check {
        name: "train step",
        family: Family::Model,
        what: "one AdamW step with global-norm clipping on the device: the initial loss near \
               ln(vocab), a finite non-zero gradient norm, the parameters move and the loss on \
               the same batch falls",
        run: train_step,
    },
    Check {
        name: "end-to-end run",
        family: Family::EndToEnd,
        what: "a 2-step run evaluated at steps 0, 1 and 2 (4 probe sets, 3 sites, 2 positions): \
               each evaluation's read-back bytes against the size its plan implies (summaries on \
               wgpu, the activations on the CPU backend)",
        run: end_to_end,
    },
];

/// The check called `name`.
pub fn check(name: &str) -> &'static Check {
    CHECKS
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no selftest check is called {name:?}"))
}

/// A deliberate error in what a check expects: `want + shift * max(|want|, 1)` for every value
/// of `metric`. Only the test that proves a wrong value fails, naming its metric, uses it.
#[derive(Debug, Clone)]
pub struct Perturbation {
    pub metric: String,
    pub shift: f64,
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

    /// What this device's evaluations reduce activations with, or why comparing it with the
    /// f64 reference would mean nothing.
    fn reducer(&self) -> Result<Reducer<'_>, String> {
        match Reduction::for_device(&self.device) {
            Reduction::Kernels => Ok(Reducer::Kernels(&self.device.device)),
            Reduction::CpuFast => Ok(Reducer::CpuFast),
            Reduction::Reference => Err("this device's evaluations reduce with the f64 \
                 reference itself, which a comparison would match with itself"
                .into()),
        }
    }

    /// The WGSL kernels' device, or why a check of them means nothing here.
    fn kernel_device(&self) -> Result<&Device, String> {
        match self.reducer()? {
            Reducer::Kernels(device) => Ok(device),
            Reducer::CpuFast => Err("the CPU backend runs no WGSL kernels (it reduces with \
                 kernels::fast, which the other reduction checks hold to the reference)"
                .into()),
        }
    }

    fn tally(&self) -> Tally {
        Tally {
            rows: Vec::new(),
            perturbation: self.perturbation.clone(),
        }
    }
}

/// How a check ended.
enum Ran {
    Compared(Tally),
    Skipped(String),
}

/// The bound a row's value must keep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    AtMost(f64),
    Below(f64),
    Above(f64),
}

impl Limit {
    /// Whether `value` keeps the bound; NaN never does.
    pub fn holds(self, value: f64) -> bool {
        match self {
            Limit::AtMost(l) => value <= l,
            Limit::Below(l) => value < l,
            Limit::Above(l) => value > l,
        }
    }

    fn text(self) -> String {
        match self {
            Limit::AtMost(l) => format!("<= {}", number(l)),
            Limit::Below(l) => format!("< {}", number(l)),
            Limit::Above(l) => format!("> {}", number(l)),
        }
    }
}

/// One metric of one check: the comparison that came closest to failing, and how many were made.
#[derive(Debug, Clone, Serialize)]
pub struct MetricRow {
    pub metric: String,
    /// The largest error relative to its tolerance: the error there (for a bound, the value).
    pub value: f64,
    /// The tolerance at that comparison (for a bound, the bound).
    pub limit: Limit,
    pub compared: usize,
    pub failed: usize,
    /// Where `value` was found (width, kind of row, column...).
    pub at: String,
    #[serde(skip)]
    worst_ratio: f64,
}

impl MetricRow {
    pub fn passed(&self) -> bool {
        self.failed == 0
    }
}

/// Collects a check's comparisons, one row per metric in first-seen order.
struct Tally {
    rows: Vec<MetricRow>,
    perturbation: Option<Perturbation>,
}

impl Tally {
    fn row(&mut self, metric: &str) -> &mut MetricRow {
        let at = match self.rows.iter().position(|r| r.metric == metric) {
            Some(at) => at,
            None => {
                self.rows.push(MetricRow {
                    metric: metric.to_string(),
                    value: 0.0,
                    limit: Limit::AtMost(0.0),
                    compared: 0,
                    failed: 0,
                    at: String::new(),
                    worst_ratio: -1.0,
                });
                self.rows.len() - 1
            }
        };
        &mut self.rows[at]
    }

    /// `got` against `want` within `tolerance`; NaN matches only NaN (an undefined value must
    /// stay undefined).
    fn compare(
        &mut self,
        metric: &str,
        got: f64,
        want: f64,
        tolerance: f64,
        at: impl FnOnce() -> String,
    ) {
        let want = match &self.perturbation {
            Some(p) if p.metric == metric => want + p.shift * want.abs().max(1.0),
            _ => want,
        };
        // A tolerance relative to an undefined value is itself NaN: matched NaNs pass first.
        let (error, passed) = match (got.is_nan(), want.is_nan()) {
            (true, true) => (0.0, true),
            (false, false) => ((got - want).abs(), (got - want).abs() <= tolerance),
            _ => (f64::INFINITY, false),
        };
        let ratio = if error == 0.0 {
            0.0
        } else if tolerance > 0.0 {
            error / tolerance
        } else {
            f64::INFINITY
        };
        let row = self.row(metric);
        row.compared += 1;
        if !passed {
            row.failed += 1;
        }
        if ratio > row.worst_ratio {
            row.worst_ratio = ratio;
            row.value = error;
            row.limit = Limit::AtMost(tolerance);
            row.at = format!("{} (got {}, want {})", at(), number(got), number(want));
        }
    }

    /// One value that must keep `limit`.
    fn bound(&mut self, metric: &str, value: f64, limit: Limit, at: String) {
        let row = self.row(metric);
        row.compared += 1;
        if !limit.holds(value) {
            row.failed += 1;
        }
        row.value = value;
        row.limit = limit;
        row.at = at;
    }
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
            metrics: tally.rows,
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

/// A number short enough for the table: integers as such, the rest in 4 significant digits.
fn number(x: f64) -> String {
    if x.is_finite() && x == x.trunc() && x.abs() < 1e9 {
        format!("{x}")
    } else if x.is_finite() && (1e-3..1e4).contains(&x.abs()) {
        format!("{x:.4}")
    } else {
        format!("{x:.3e}")
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs.

/// A standard normal draw (Box-Muller).
pub fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn normals(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| normal(rng)).collect()
}

/// The widths every kernel check covers: 1 and 2, each side of a power of two, the workgroup
/// cache's 2048 and past it, and the widest models' 8192.
const WIDTHS: [usize; 9] = [1, 2, 127, 128, 1000, 2048, 2049, 4096, 8192];

/// Columns whose thresholds land exactly on entries of the "ties in magnitude" rows (1.0, and
/// 0.5 * max|h| = 1.0), so `<=` against `<` is tested.
fn test_columns() -> Columns {
    Columns {
        near_zero: vec![1e-3, 0.5, 1.0],
        near_zero_rel: vec![0.01, 0.5],
        order: true,
        topk: vec![0.01, 0.05, 0.1, 0.5, 1.0],
    }
}

/// Rows of every kind the kernels must handle, for one width.
pub fn adversarial_rows(width: usize, seed: u64) -> Vec<(&'static str, Vec<f32>)> {
    let mut r = rng(seed);
    let mut rows = vec![
        ("normal", normals(&mut r, width)),
        (
            "normal x 1e-3",
            normals(&mut r, width).iter().map(|x| x * 1e-3).collect(),
        ),
        (
            "normal + 3",
            normals(&mut r, width).iter().map(|x| x + 3.0).collect(),
        ),
    ];
    let sparse = normals(&mut r, width)
        .into_iter()
        .map(|x| if r.random_bool(0.7) { 0.0 } else { x })
        .collect();
    rows.push(("sparse with exact zeros", sparse));
    let cauchy = (0..width)
        .map(|_| normal(&mut r) / normal(&mut r).abs().max(1e-3))
        .collect();
    rows.push(("heavy-tailed (Cauchy)", cauchy));
    let mut one_hot = vec![0.0; width];
    one_hot[r.random_range(0..width)] = -2.5;
    rows.push(("one-hot", one_hot));
    rows.push(("constant", vec![0.3; width]));
    rows.push(("all zero", vec![0.0; width]));
    let ties = (0..width)
        .map(|_| [-2.0, -1.0, 1.0, 2.0][r.random_range(0..4)])
        .collect();
    rows.push(("ties in magnitude", ties));
    // Where h^2 and h^4 overflow and underflow f32 unless the kernels scale by max|h|.
    rows.push((
        "huge (normal x 1e30)",
        normals(&mut r, width).iter().map(|x| x * 1e30).collect(),
    ));
    rows.push((
        "tiny (normal x 1e-30)",
        normals(&mut r, width).iter().map(|x| x * 1e-30).collect(),
    ));
    for (name, bad) in [
        ("with NaN", f32::NAN),
        ("with +Inf", f32::INFINITY),
        ("with -Inf", f32::NEG_INFINITY),
    ] {
        let mut row = normals(&mut r, width);
        row[r.random_range(0..width)] = bad;
        rows.push((name, row));
    }
    rows
}

// ---------------------------------------------------------------------------------------------
// Tolerances, shared by every comparison with the reference.

/// Counting metrics (l0_mean_std and the near-zero fractions): an f32 threshold can land on the
/// other side of one entry than the f64 one.
fn is_count(cols: &Columns, column: usize) -> bool {
    column == Columns::L0_MEAN_STD || (Columns::FIXED..cols.moments_count()).contains(&column)
}

/// A per-vector value's tolerance: 1e-4 relative (plus 1e-6 absolute, for values that are 0);
/// kurtosis relative to m4/m2^2 = kurtosis + 3, since the excess subtracts 3; counts within one
/// element (1/d).
pub(crate) fn row_tolerance(cols: &Columns, column: usize, width: usize, want: f64) -> f64 {
    if is_count(cols, column) {
        1.0 / width as f64 + 1e-6
    } else if column == Columns::KURTOSIS {
        1e-4 * (want.abs() + 3.0)
    } else {
        1e-4 * want.abs() + 1e-6
    }
}

// ---------------------------------------------------------------------------------------------
// Reductions on the device, and back.

fn upload(data: &[f32], rows: usize, width: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(data.to_vec(), [rows, width]), device)
}

fn download<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_to_vec::<f32>()
        .expect("an f32 tensor reads back as f32")
}

/// A reduction of activations into metrics that the checks hold to the f64 reference.
enum Reducer<'a> {
    /// The WGSL kernels on this wgpu device.
    Kernels(&'a Device),
    /// `kernels::fast`, the CPU backend's host reduction.
    CpuFast,
}

impl Reducer<'_> {
    /// The per-vector table of `[rows, width]` `data`, row-major.
    fn row_table(&self, data: &[f32], width: usize, cols: &Columns) -> Vec<f64> {
        match self {
            Reducer::Kernels(device) => {
                let rows = data.len() / width;
                let table = kernels::row_metrics(upload(data, rows, width, device), cols);
                download(table).into_iter().map(f64::from).collect()
            }
            Reducer::CpuFast => fast::matrix_metrics(data, width, cols).concat(),
        }
    }

    /// Each column's (mean, std, n) over the finite vectors of `data`.
    fn summaries(&self, data: &[f32], width: usize, cols: &Columns) -> Vec<[f64; 3]> {
        match self {
            Reducer::Kernels(device) => {
                let rows = data.len() / width;
                let summary = download(kernels::summarize(upload(data, rows, width, device), cols));
                summary
                    .chunks(3)
                    .map(|s| [s[0].into(), s[1].into(), s[2].into()])
                    .collect()
            }
            Reducer::CpuFast => {
                let per_row = fast::matrix_metrics(data, width, cols);
                (0..cols.count())
                    .map(|c| {
                        let s = fast::aggregate(&per_row, c);
                        [s.mean, s.std, s.n as f64]
                    })
                    .collect()
            }
        }
    }
}

/// The per-vector table as the chosen device's evaluations compute it (the reference itself
/// where that is what they use), for the checks against closed forms and invariances.
fn device_row_metrics(context: &Context, data: &[f32], width: usize, cols: &Columns) -> Vec<f64> {
    match context.reducer() {
        Ok(reducer) => reducer.row_table(data, width, cols),
        Err(_) => reference::matrix_metrics(data, width, cols).concat(),
    }
}

/// Each column's mean over the finite vectors, as the chosen device's evaluations compute it.
fn device_means(context: &Context, data: &[f32], width: usize, cols: &Columns) -> Vec<f64> {
    match context.reducer() {
        Ok(reducer) => reducer
            .summaries(data, width, cols)
            .iter()
            .map(|s| s[0])
            .collect(),
        Err(_) => {
            let per_row = reference::matrix_metrics(data, width, cols);
            (0..cols.count())
                .map(|c| reference::aggregate(&per_row, c).mean)
                .collect()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The kernel checks.

fn row_metrics(context: &Context) -> Result<Ran> {
    let reducer = match context.reducer() {
        Ok(r) => r,
        Err(reason) => return Ok(Ran::Skipped(reason)),
    };
    let cols = test_columns();
    let names = cols.names();
    let mut tally = context.tally();
    for (i, &width) in WIDTHS.iter().enumerate() {
        let rows = adversarial_rows(width, i as u64);
        let data: Vec<f32> = rows.iter().flat_map(|(_, r)| r.iter().copied()).collect();
        let got = reducer.row_table(&data, width, &cols);
        for (r, (kind, row)) in rows.iter().enumerate() {
            let want = reference::row_metrics(row, &cols);
            for (c, &w) in want.iter().enumerate() {
                let g = got[r * cols.count() + c];
                let tolerance = row_tolerance(&cols, c, width, w);
                tally.compare(&names[c], g, w, tolerance, || {
                    format!("width {width}, {kind}")
                });
            }
        }
    }
    Ok(Ran::Compared(tally))
}

fn aggregate(context: &Context) -> Result<Ran> {
    let reducer = match context.reducer() {
        Ok(r) => r,
        Err(reason) => return Ok(Ran::Skipped(reason)),
    };
    let cols = test_columns();
    let names = cols.names();
    let (rows, width) = (777, 96);
    let mut r = rng(42);
    let mut data: Vec<f32> = normals(&mut r, rows * width)
        .iter()
        .map(|x| x * 2.0)
        .collect();
    for row in [3usize, 100, 500] {
        data[row * width + 7] = f32::NAN;
    }
    for row in [10usize, 11] {
        data[row * width..(row + 1) * width].fill(0.0);
    }
    let summary = reducer.summaries(&data, width, &cols);
    let per_row = reference::matrix_metrics(&data, width, &cols);
    let mut tally = context.tally();
    for (c, name) in names.iter().enumerate() {
        let want = reference::aggregate(&per_row, c);
        let [mean, std, n] = summary[c];
        let at = || format!("column {name}");
        tally.compare("mean", mean, want.mean, 1e-4 * want.mean.abs() + 1e-6, at);
        // A std is a difference of sums: f32 loses a decimal more than a mean does.
        tally.compare("std", std, want.std, 1e-3 * want.std.abs() + 1e-6, at);
        tally.compare("n (finite vectors)", n, want.n as f64, 0.0, at);
    }
    Ok(Ran::Compared(tally))
}

fn quantiles(context: &Context) -> Result<Ran> {
    let reducer = match context.reducer() {
        Ok(r) => r,
        Err(reason) => return Ok(Ran::Skipped(reason)),
    };
    let cols = test_columns();
    let names = cols.names();
    let qs = [0.0, 0.05, 0.25, 0.5, 0.95, 1.0];
    let qs32: Vec<f32> = qs.iter().map(|&q| q as f32).collect();
    let mut tally = context.tally();
    // The kernels sort 777 vectors in workgroup memory (padded to 1024), 5000 in global memory.
    for (rows, width) in [(777usize, 40usize), (5000, 24)] {
        let mut r = rng(rows as u64);
        let mut data = normals(&mut r, rows * width);
        data[5 * width] = f32::INFINITY;
        data[9 * width..10 * width].fill(0.0);
        let got: Vec<f64> = match reducer {
            Reducer::Kernels(device) => {
                let table = kernels::row_metrics(upload(&data, rows, width, device), &cols);
                let got = download(kernels::column_quantiles(table, &qs32));
                got.into_iter().map(f64::from).collect()
            }
            Reducer::CpuFast => {
                let per_row = fast::matrix_metrics(&data, width, &cols);
                (0..cols.count())
                    .flat_map(|c| fast::quantiles(&per_row, c, &qs))
                    .collect()
            }
        };
        let per_row = reference::matrix_metrics(&data, width, &cols);
        let metric = format!("quantiles ({rows} vectors)");
        for (c, name) in names.iter().enumerate() {
            let want = reference::quantiles(&per_row, c, &qs);
            for (k, &w) in want.iter().enumerate() {
                let g = got[c * qs.len() + k];
                let tolerance = if is_count(&cols, c) {
                    1.0 / width as f64
                } else {
                    1e-4 * w.abs() + 1e-5
                };
                tally.compare(&metric, g, w, tolerance, || {
                    format!("{rows} vectors, {name}, q {}", qs[k])
                });
            }
        }
    }
    Ok(Ran::Compared(tally))
}

fn across_vectors(context: &Context) -> Result<Ran> {
    let reducer = match context.reducer() {
        Ok(r) => r,
        Err(reason) => return Ok(Ran::Skipped(reason)),
    };
    let cols = test_columns();
    let (rows, width) = (300, 48);
    let mut r = rng(11);
    // ReLU-like vectors with a rank-3 part; neurons 0..5 never fire; one vector holds a NaN.
    let basis = normals(&mut r, 3 * width);
    let mut data = Vec::with_capacity(rows * width);
    for _ in 0..rows {
        let c = normals(&mut r, 3);
        for i in 0..width {
            let v = (0..3).map(|k| c[k] * basis[k * width + i]).sum::<f32>() + 0.1 * normal(&mut r);
            data.push(if i < 5 { 0.0 } else { v.max(0.0) });
        }
    }
    data[17 * width + 9] = f32::NAN;
    let per_row = reference::matrix_metrics(&data, width, &cols);
    let want = |metric: &str| {
        let metric: MetricSpec = metric.parse().expect("a metric name");
        reference::across_vectors(&data, width, &per_row, &metric)
    };
    // [active_fraction mean, its std, dead_fraction] and rankme, as the reducer computes them.
    let (stats, rank) = match reducer {
        Reducer::Kernels(device) => {
            let x = upload(&data, rows, width, device);
            let valid = across::valid_rows(kernels::row_metrics(x.clone(), &cols));
            let stats = download(across::active_stats(x.clone(), valid.clone(), 0.2));
            let cov: Vec<f64> = download(across::covariance(x, valid))
                .into_iter()
                .map(f64::from)
                .collect();
            let stats = [stats[0].into(), stats[1].into(), stats[2].into()];
            (stats, crate::metrics::effective_rank(&cov, width))
        }
        Reducer::CpuFast => {
            let fast_rows = fast::matrix_metrics(&data, width, &cols);
            let of = |metric: &str| {
                let metric: MetricSpec = metric.parse().expect("a metric name");
                fast::across_vectors(&data, width, &fast_rows, &metric)
            };
            let (active, dead) = (of("active_fraction@0.2"), of("dead_fraction@0.2"));
            ([active.mean, active.std, dead.mean], of("rankme").mean)
        }
    };
    let (active, dead) = (want("active_fraction@0.2"), want("dead_fraction@0.2"));
    let mut tally = context.tally();
    let at = || format!("{rows} vectors of width {width}");
    tally.compare("active_fraction mean", stats[0], active.mean, 1e-5, at);
    tally.compare("active_fraction std", stats[1], active.std, 1e-4, at);
    tally.compare("dead_fraction", stats[2], dead.mean, 1e-6, at);
    let want_rank = want("rankme").mean;
    tally.compare("rankme", rank, want_rank, 1e-3 * want_rank, at);
    Ok(Ran::Compared(tally))
}

fn large_dispatch(context: &Context) -> Result<Ran> {
    let device = match context.kernel_device() {
        Ok(d) => d,
        Err(reason) => return Ok(Ran::Skipped(reason)),
    };
    if context.quick {
        return Ok(Ran::Skipped(
            "--quick: 2.65 million values; the full selftest and tests/kernels.rs run it".into(),
        ));
    }
    let cols = test_columns();
    let names = cols.names();
    // The moments kernel packs 8 rows of width 5 into a workgroup and the order kernel loops over
    // rows, so crossing 65,535 workgroups takes more than 8 x 65,535 rows.
    let (rows, width) = (530_000, 5);
    let data = normals(&mut rng(7), rows * width);
    let got = download(kernels::row_metrics(
        upload(&data, rows, width, device),
        &cols,
    ));
    let mut tally = context.tally();
    let boundaries = [0, 65_535, 65_536, 524_279, 524_280, 524_287, 524_288];
    for row in boundaries.into_iter().chain([rows - 1]) {
        let want = reference::row_metrics(&data[row * width..(row + 1) * width], &cols);
        for (c, &w) in want.iter().enumerate() {
            let g = f64::from(got[row * cols.count() + c]);
            let tolerance = row_tolerance(&cols, c, width, w);
            tally.compare("every column", g, w, tolerance, || {
                format!("row {row}, {}", names[c])
            });
        }
    }
    Ok(Ran::Compared(tally))
}

fn science_table(context: &Context) -> Result<Ran> {
    let metrics: Vec<MetricSpec> = SCIENCE_TABLE_METRICS
        .iter()
        .map(|s| s.parse().expect("the table's metrics parse"))
        .collect();
    let cols = Columns::for_metrics(&metrics);
    let vectors = if context.quick { 1000 } else { 2000 };
    let mut tally = context.tally();
    for (d, expected) in SCIENCE_TABLE {
        let data = normals(&mut rng(d as u64), vectors * d);
        let means = device_means(context, &data, d, &cols);
        for (metric, &want) in metrics.iter().zip(&expected) {
            let got = means[cols.column(metric)];
            tally.compare(&metric.to_string(), got, want, 0.005, || {
                format!("d {d}, {vectors} vectors")
            });
        }
    }
    Ok(Ran::Compared(tally))
}

fn invariance(context: &Context) -> Result<Ran> {
    let cols = test_columns();
    let names = cols.names();
    let width = 300;
    let factor = 37.5;
    let mut r = rng(9);
    let row: Vec<f32> = (0..width)
        .map(|_| normal(&mut r) / normal(&mut r).abs().max(0.1))
        .collect();
    let scaled: Vec<f32> = row.iter().map(|x| x * factor as f32).collect();
    let mut permuted = row.clone();
    permuted.shuffle(&mut r);
    let got = device_row_metrics(context, &[row, scaled, permuted].concat(), width, &cols);
    let m = cols.count();
    let absolute_threshold = Columns::FIXED..Columns::FIXED + cols.near_zero.len();
    let mut tally = context.tally();
    for (c, name) in names.iter().enumerate() {
        let base = got[c];
        // l1 and l2 scale with the row; near_zero@eps's threshold does not, so entries cross it.
        let want_scaled = match c {
            Columns::L1 | Columns::L2 => Some(base * factor),
            _ if absolute_threshold.contains(&c) => None,
            _ => Some(base),
        };
        if let Some(want) = want_scaled {
            let tolerance = row_tolerance(&cols, c, width, want);
            tally.compare(name, got[m + c], want, tolerance, || "scaled x 37.5".into());
        }
        let tolerance = row_tolerance(&cols, c, width, base);
        tally.compare(name, got[2 * m + c], base, tolerance, || "permuted".into());
    }
    Ok(Ran::Compared(tally))
}

fn extremes(context: &Context) -> Result<Ran> {
    let cols = test_columns();
    let order = cols.moments_count();
    let mut tally = context.tally();
    for width in [2usize, 127, 1000, 4096, 8192] {
        let mut one_hot = vec![0.0f32; width];
        one_hot[width / 3] = 4.0;
        let constant = vec![-1.5f32; width];
        let got = device_row_metrics(context, &[one_hot, constant].concat(), width, &cols);
        let (hot, flat) = got.split_at(cols.count());
        let d = width as f64;
        let mut close = |metric: &str, got: f64, want: f64, row: &str| {
            let tolerance = 1e-5 * want.abs().max(1.0);
            tally.compare(metric, got, want, tolerance, || {
                format!("width {width}, {row}")
            });
        };
        close("hoyer", hot[Columns::HOYER], 1.0, "one-hot");
        close("eff_rank", hot[Columns::EFF_RANK], 1.0 / d, "one-hot");
        close("gini", hot[order + Columns::GINI], (d - 1.0) / d, "one-hot");
        for (t, f) in cols.topk.iter().enumerate() {
            let got = hot[order + Columns::ORDER_FIXED + t];
            close("topk_energy", got, 1.0, &format!("one-hot, f {f}"));
        }
        close("hoyer", flat[Columns::HOYER], 0.0, "constant");
        close("gini", flat[order + Columns::GINI], 0.0, "constant");
        let ratio = flat[order + Columns::MAX_OVER_MEDIAN];
        close("max_over_median", ratio, 1.0, "constant");
    }
    Ok(Ran::Compared(tally))
}

// ---------------------------------------------------------------------------------------------
// The model checks.

/// A small GPT for the model checks: one block has every layer kind. Its sizes are the
/// end-to-end run's (`TINY_RUN`), so on a fresh machine the kernels compiled and tuned here serve
/// that run too (on llvmpipe, compiling and tuning is most of these checks' time).
fn small_model() -> (ModelConfig, usize) {
    let model = ModelConfig {
        layers: 1,
        d_model: 16,
        heads: 2,
        d_ff: 32,
        seq_len: 4,
        ..ModelConfig::default()
    };
    (model, 29)
}

/// `[batch, len]` token ids below `vocab`, from `seed`.
fn tokens(batch: usize, len: usize, vocab: usize, seed: u64, device: &Device) -> Tensor<2, Int> {
    let mut r = rng(seed);
    let ids: Vec<i64> = (0..batch * len)
        .map(|_| r.random_range(0..vocab as i64))
        .collect();
    Tensor::from_data(TensorData::new(ids, [batch, len]), device)
}

fn forward_pass(context: &Context) -> Result<Ran> {
    if !context.device.measures_on_device() {
        return Ok(Ran::Skipped(
            "the chosen device is the CPU backend, the reference this check compares with".into(),
        ));
    }
    let (config, vocab) = small_model();
    let cpu = Device::flex();
    cpu.seed(5);
    let model = config.init(vocab, &cpu);
    // The end-to-end run's probe batches: 16 samples of the rule graph's 3-token prompts.
    let (batch, len) = (16, 3);
    let want = download(model.forward(tokens(batch, len, vocab, 6, &cpu)));
    let device = &context.device.device;
    let on_device = model.to_device(device);
    let got = download(on_device.forward(tokens(batch, len, vocab, 6, device)));
    // Two blocks of f32 matrix products summed in another order: agreement to about 1e-5 of the
    // logits' scale is expected; 1e-4 leaves room for fused kernels, not for a wrong result.
    let scale = want.iter().fold(0.0f64, |m, &w| m.max(f64::from(w).abs()));
    let tolerance = 1e-4 * scale.max(1.0);
    let mut tally = context.tally();
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        tally.compare("logits", g.into(), w.into(), tolerance, || {
            format!("{batch} x {len} x {vocab} logits, entry {i}")
        });
    }
    Ok(Ran::Compared(tally))
}

/// Every float parameter's values, in visiting order.
#[derive(Default)]
struct ParameterValues(Vec<f32>);

impl ModuleVisitor for ParameterValues {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.extend(download(param.val()));
    }
}

fn parameter_values(model: &Gpt) -> Vec<f32> {
    let mut values = ParameterValues::default();
    model.visit(&mut values);
    values.0
}

fn train_step(context: &Context) -> Result<Ran> {
    let (config, vocab) = small_model();
    let device = context.device.device.clone().autodiff();
    device.seed(5);
    let model = config.init(vocab, &device);
    // The end-to-end run's training batches: 8 sequences of 3 tokens.
    let (batch, len) = (8, 3);
    let inputs = tokens(batch, len, vocab, 6, &device);
    let targets = tokens(batch, len, vocab, 7, &device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let loss_of = |model: &Gpt| {
        let logits = model.forward(inputs.clone());
        loss_fn.forward(
            logits.reshape([batch * len, vocab]),
            targets.clone().reshape([batch * len]),
        )
    };
    let loss = loss_of(&model);
    let before = f64::from(loss.clone().into_scalar::<f32>());
    let mut grads = GradientsParams::from_grads(loss.backward(), &model);
    let norm = clip_global_norm(&model, &mut grads, 1.0)
        .map_or(f64::NAN, |n| f64::from(n.into_scalar::<f32>()));
    let params_before = parameter_values(&model);
    let train = TrainConfig::default();
    let model = optimizer(&train).step(train.lr, model, grads);
    let moved = parameter_values(&model)
        .iter()
        .zip(&params_before)
        .fold(0.0f64, |m, (a, b)| m.max(f64::from((a - b).abs())));
    let after = f64::from(loss_of(&model).into_scalar::<f32>());

    let mut tally = context.tally();
    let ln_vocab = (vocab as f64).ln();
    // At initialisation the logits have a standard deviation of about 0.6, so the loss sits
    // about 0.2 above ln(vocab); a wrong forward pass lands far from it (or at NaN).
    tally.bound(
        "initial loss - ln(vocab)",
        (before - ln_vocab).abs(),
        Limit::AtMost(1.0),
        format!("loss {}, ln({vocab}) {}", number(before), number(ln_vocab)),
    );
    tally.bound(
        "gradient norm",
        norm,
        Limit::Above(0.0),
        "global L2 norm before clipping at 1".into(),
    );
    tally.bound(
        "largest parameter change",
        moved,
        Limit::Above(0.0),
        format!("AdamW at lr {}", train.lr),
    );
    tally.bound(
        "loss after - before",
        after - before,
        Limit::Below(0.0),
        format!("same batch: {} -> {}", number(before), number(after)),
    );
    Ok(Ran::Compared(tally))
}

// ---------------------------------------------------------------------------------------------
// The end-to-end check.

/// The end-to-end run: the tiny rule-graph config of tests/end_to_end.rs, on the chosen device.
const TINY_RUN: &str = "
name: selftest
seed: 3
data:
  source: {kind: rulegraph, entities: 20, relations: 3, rules: 4, min_hops: 2, max_hops: 3}
model: {layers: 1, d_model: 16, heads: 2, d_ff: 32, seq_len: 4}
train: {steps: 2, batch_size: 8, warmup_steps: 1, log_every: 1}
checkpoint: {every: 0, log_spaced: false}
probes:
  every: 1
  log_spaced: false
  samples: 16
  sites: [resid_post, mlp.post, final.norm]
  positions: [last, all]
  metrics: [l1, hoyer, near_zero@0.01, nonfinite, active_fraction@0.1, rankme]
  sets:
    - {name: id, family: none}
    - {name: hops, family: hops}
    - {name: corrupt, family: token_corruption, levels: [0.5]}
";

/// The bytes one evaluation of `config` on `sets` reads back, derived from its plan and the
/// model's widths rather than from `measure::reduce`'s `ReadbackPlan`, so the end-to-end check
/// (and tests/end_to_end.rs, against its hand count) can hold the evaluation to it:
/// - with the kernels, per probe set, site and position: the quantiles (columns x quantiles),
///   the per-vector table where `per_sample` covers it (vectors x columns), the summary
///   (columns x 3), and per across-vector read the active-fraction statistics (3 per distinct
///   eps) or the covariance (width^2, for rankme); never the activations;
/// - with the reference, the activations themselves (vectors x width);
/// - either way, per probe set, the mean and std of each answer metric and, when samples are
///   written, each sample's two losses. All f32.
pub fn expected_readback_bytes(config: &Config, sets: &[ProbeSet], reduction: Reduction) -> u64 {
    let plan: ProbePlan = config.probe_plan();
    let columns = Columns::for_metrics(&plan.metrics).count();
    let mut across_reads: Vec<Option<f64>> = Vec::new();
    for metric in plan.metrics.iter().filter(|m| !m.is_per_vector()) {
        let read = match *metric {
            MetricSpec::ActiveFraction(eps) | MetricSpec::DeadFraction(eps) => Some(eps),
            _ => None,
        };
        if !across_reads.contains(&read) {
            across_reads.push(read);
        }
    }
    let model = &config.model;
    let width = |kind: SiteKind| match kind {
        SiteKind::MlpPost => model.d_ff,
        _ => model.d_model,
    };
    // Each per-block site once per block, final.norm once.
    let sites: Vec<SiteKind> = plan
        .sites
        .iter()
        .flat_map(|&kind| {
            let copies = if kind == SiteKind::FinalNorm {
                1
            } else {
                model.layers
            };
            std::iter::repeat_n(kind, copies)
        })
        .collect();
    let mut floats = 0;
    for set in sets {
        let samples = set.samples();
        for &site in &sites {
            let d = width(site);
            for &position in &plan.positions {
                let vectors = match position {
                    Position::Last => samples,
                    Position::All => samples * set.len,
                };
                floats += match reduction {
                    Reduction::Reference | Reduction::CpuFast => vectors * d,
                    Reduction::Kernels => {
                        let per_sample = if plan.per_sample.covers(site, position) {
                            vectors * columns
                        } else {
                            0
                        };
                        let across: usize = across_reads
                            .iter()
                            .map(|read| if read.is_some() { 3 } else { d * d })
                            .sum();
                        plan.quantiles.len() * columns + per_sample + 3 * columns + across
                    }
                };
            }
        }
        floats += 2 * answer_metrics(set).len();
        if plan.writes_samples() {
            floats += 2 * samples;
        }
    }
    4 * floats as u64
}

fn end_to_end(context: &Context) -> Result<Ran> {
    let device = serde_json::to_value(context.device_choice())?;
    let device = format!("device={}", device.as_str().unwrap_or("cpu"));
    let config = Config::from_yaml(TINY_RUN, "selftest's end-to-end config", &[device])?;
    let dir = std::env::temp_dir().join(format!("densitrace-selftest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stop = AtomicBool::new(false);
    let outcome = run::run(
        &config,
        &Destination::Exactly(dir.clone()),
        vec!["densitrace selftest".into()],
        &stop,
    );
    let read = outcome.and_then(|_| {
        let manifest = rundir::RunDir::at(dir.clone()).read_manifest()?;
        let finished = FinishedRun::open(&dir)?;
        Ok((manifest, finished))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let (manifest, finished) = read.context("the end-to-end run")?;
    let reduction = Reduction::for_config(&context.device, finished.config.probes.reduction);
    let want = expected_readback_bytes(&finished.config, &finished.probe_sets, reduction);
    let activations =
        expected_readback_bytes(&finished.config, &finished.probe_sets, Reduction::Reference);
    let mut tally = context.tally();
    let steps: Vec<usize> = manifest.evaluations.iter().map(|e| e.step).collect();
    tally.compare("evaluations", steps.len() as f64, 3.0, 0.0, || {
        format!("at steps {steps:?}")
    });
    let reduced_by = manifest
        .evaluations
        .iter()
        .filter(|e| e.reduction == reduction.name())
        .count();
    tally.compare(
        &format!("evaluations reduced by {}", reduction.name()),
        reduced_by as f64,
        steps.len() as f64,
        0.0,
        || "the manifest's record of each".into(),
    );
    let what = if reduction.on_host() {
        "activations"
    } else {
        "summaries"
    };
    for e in &manifest.evaluations {
        tally.compare(
            &format!("read-back bytes = {what}"),
            e.readback_bytes as f64,
            want as f64,
            0.0,
            || format!("step {}, activations {activations} B", e.step),
        );
    }
    Ok(Ran::Compared(tally))
}

impl Context {
    /// The config value that selects this context's device.
    fn device_choice(&self) -> DeviceChoice {
        if self.device.measures_on_device() {
            DeviceChoice::Wgpu
        } else {
            DeviceChoice::Cpu
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> Context {
        Context::new(
            device::select(DeviceChoice::Cpu).expect("the CPU backend is always there"),
            true,
        )
    }

    fn metrics(result: &CheckResult) -> &[MetricRow] {
        match &result.outcome {
            Outcome::Ran { metrics } => metrics,
            other => panic!("{} did not run: {other:?}", result.check),
        }
    }

    /// A wrong reference value fails its check, and the failure names exactly that metric; the
    /// other metrics of the check still pass.
    #[test]
    fn a_perturbed_reference_fails_the_fast_reduction_naming_its_metric() {
        let mut context = cpu();
        context.perturbation = Some(Perturbation {
            metric: "hoyer".into(),
            shift: 1e-3,
        });
        let result = run_check(check("row metrics"), &context);
        assert_eq!(result.failures(), vec!["row metrics: hoyer".to_string()]);
        let printed = table(std::slice::from_ref(&result));
        let hoyer = printed.lines().find(|l| l.contains(" hoyer ")).unwrap();
        assert!(hoyer.contains("FAIL"), "{printed}");
    }

    /// The same for a closed form: the expected one-hot and constant gini shifted.
    #[test]
    fn a_perturbed_closed_form_fails_naming_its_metric() {
        let mut context = cpu();
        context.perturbation = Some(Perturbation {
            metric: "gini".into(),
            shift: 1e-3,
        });
        let result = run_check(check("extremes"), &context);
        assert_eq!(result.failures(), vec!["extremes: gini".to_string()]);
        let printed = table(std::slice::from_ref(&result));
        let gini = printed
            .lines()
            .find(|l| l.contains(" gini "))
            .expect("a gini row");
        assert!(gini.contains("FAIL 10/10"), "{printed}");
        assert!(
            !printed
                .lines()
                .any(|l| l.contains("hoyer") && l.contains("FAIL"))
        );
    }

    /// On the CPU backend the reduction checks hold `kernels::fast` to the reference; the one
    /// about wgpu's dispatch grid says why it is skipped instead of passing.
    #[test]
    fn the_cpu_backend_checks_its_fast_reduction_and_skips_only_the_dispatch() {
        for c in CHECKS.iter().filter(|c| c.family == Family::Kernels) {
            let result = run_check(c, &cpu());
            let skipped = c.name == "dispatch past 65,535 workgroups";
            assert_eq!(result.skipped(), skipped, "{}", c.name);
            assert!(result.passed(), "{}", table(std::slice::from_ref(&result)));
            if !skipped {
                assert!(
                    metrics(&result).iter().all(|m| m.compared > 0),
                    "{}",
                    c.name
                );
            }
            if let Outcome::Skipped { reason } = &result.outcome {
                let line = table(std::slice::from_ref(&result));
                assert!(line.contains(&format!("skipped: {reason}")), "{line}");
                assert!(!line.contains("pass"), "{line}");
            }
        }
    }

    #[test]
    fn limits_fail_on_nan() {
        for limit in [Limit::AtMost(1.0), Limit::Below(0.0), Limit::Above(0.0)] {
            assert!(!limit.holds(f64::NAN), "{limit:?}");
        }
        let mut tally = cpu().tally();
        tally.compare("x", f64::NAN, 1.0, 1.0, String::new);
        tally.compare("x", 1.0, f64::NAN, 1.0, String::new);
        tally.compare("x", f64::NAN, f64::NAN, 0.0, String::new);
        // A tolerance relative to an undefined reference value is NaN too.
        tally.compare("x", f64::NAN, f64::NAN, f64::NAN, String::new);
        assert_eq!((tally.rows[0].compared, tally.rows[0].failed), (4, 2));
    }
}

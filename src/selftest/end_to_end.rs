//! The end-to-end check (`Family::EndToEnd`): a short run through `run::run` on the chosen
//! device, each evaluation's read-back bytes held to the size its plan implies.

use std::sync::atomic::AtomicBool;

use anyhow::{Context as _, Result};

use super::{Context, Ran};
use crate::config::{Config, DeviceChoice, ProbePlan};
use crate::data::probes::ProbeSet;
use crate::measure::answers::answer_metrics;
use crate::measure::reduce::Reduction;
use crate::metrics::{Columns, MetricSpec, Position, SiteKind};
use crate::run::{self, Destination};
use crate::rundir::{self, FinishedRun};

/// The data and model of every tiny run, written once: a 20-entity rule graph and a 1-layer
/// 16-wide GPT (seconds a run on the CPU backend). Selftest's end-to-end run (`TINY_RUN`) and
/// each CLI test's config (`tiny_config!` in tests/common) are built on it. It expands to a
/// string literal, so `concat!` can build on it.
#[macro_export]
macro_rules! tiny_data_and_model {
    () => {
        "data:
  source: {kind: rulegraph, entities: 20, relations: 3, rules: 4, min_hops: 2, max_hops: 3}
model: {layers: 1, d_model: 16, heads: 2, d_ff: 32, seq_len: 4}
"
    };
}

/// What the tiny runs measure, written once: the lines under `probes:` after its schedule (every
/// site kind, both positions, per-vector and across-vector metrics, three families). Selftest's
/// end-to-end run and tests/end_to_end.rs measure the same, on their own schedules.
#[macro_export]
macro_rules! tiny_probe_plan {
    () => {
        "  samples: 16
  sites: [resid_post, mlp.post, final.norm]
  positions: [last, all]
  metrics: [l1, hoyer, near_zero@0.01, nonfinite, active_fraction@0.1, rankme]
  sets:
    - {name: id, family: none}
    - {name: hops, family: hops}
    - {name: corrupt, family: token_corruption, levels: [0.5]}
"
    };
}

/// The end-to-end run: the tiny rule-graph config of tests/end_to_end.rs, on the chosen device.
pub(super) const TINY_RUN: &str = concat!(
    crate::tiny_data_and_model!(),
    "name: selftest
seed: 3
train: {steps: 2, batch_size: 8, warmup_steps: 1, log_every: 1}
checkpoint: {every: 0, log_spaced: false}
probes:
  every: 1
  log_spaced: false
",
    crate::tiny_probe_plan!()
);

/// The bytes one evaluation of `config` on `sets` reads back, derived from its plan and the
/// model's widths rather than from `measure::reduce`'s `ReadbackPlan`, so the end-to-end check (and
/// tests/end_to_end.rs, against its hand count) can hold the evaluation to it:
/// - with the kernels, per probe set, site and position: the quantiles (columns x quantiles),
///   the per-vector table where `per_sample` covers it (vectors x columns), the summary
///   (columns x 3), and per across-vector read the active-fraction statistics (3 per distinct
///   eps) or the covariance (width^2, for rankme); never the activations;
/// - on the host (the fast reduction or the reference), the activations themselves (vectors x
///   width);
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

pub(super) fn end_to_end(context: &Context) -> Result<Ran> {
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

//! The training rows of `densitrace bench`: the shipped configs run shortened, their throughput
//! and the instrumentation's cost read from the run's own tables, and (CPU backend) the
//! evaluation split of the trained model by host reduction.
//!
//! Training is measured by running the shipped config itself (`run::run`, shortened) in a
//! temporary directory, and read from the run's own tables, so it is the code path users run.

use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::{Config, DeviceChoice, ReductionChoice};
use crate::device::RunDevice;
use crate::measure::Probing;
use crate::run::{self, Destination};

/// The shipped configs whose models are timed (embedded, so the binary benches anywhere).
pub(super) const QUICKSTART: &str = include_str!("../../experiments/quickstart.yaml");
pub(super) const GPU_MEDIUM: &str = include_str!("../../experiments/gpu-medium.yaml");

/// Training throughput and the instrumentation's cost for one model.
#[derive(Debug, Serialize)]
pub struct TrainingRow {
    /// The config it comes from (`quickstart`, `gpu-medium`).
    pub model: String,
    pub parameters: usize,
    pub tokens_per_step: usize,
    /// Steps timed (after the warm-up steps).
    pub steps_timed: usize,
    pub warmup_steps: usize,
    /// Median over the timed steps.
    pub ms_per_step: f64,
    pub tokens_per_s: f64,
    /// The config's probe sets through the model once (the last of the run's two evaluations,
    /// so compilation and tuning are excluded).
    pub evaluation_s: f64,
    /// Of `evaluation_s`: the forward passes, the metrics (with the read-back), the writes.
    pub forward_s: f64,
    pub metrics_s: f64,
    pub write_s: f64,
    /// Evaluations in the config's full schedule (step 0, `probes.every`, log-spaced steps, the
    /// last step) and its training steps.
    pub schedule_evaluations: usize,
    pub schedule_steps: usize,
    /// Evaluation time over training time for the full schedule.
    pub instrumentation_share: f64,
}

/// One evaluation of a trained model with one reduction: medians over interleaved rounds.
#[derive(Debug, Serialize)]
pub struct EvaluationRow {
    /// The config it comes from (`quickstart`, `gpu-medium`).
    pub model: String,
    /// `Reduction::name`: `cpu_fast` or `reference`.
    pub reduction: String,
    /// Evaluations timed with this reduction, alternating with the other.
    pub rounds: usize,
    /// The probe sets' forward passes, median seconds.
    pub forward_s: f64,
    /// The read-back and the reduction, median seconds.
    pub metrics_s: f64,
}

/// `yaml` on `choice` for `steps` steps, every step logged, evaluated at step 0 and the last
/// step only, without checkpoints.
fn shortened(yaml: &str, model: &str, choice: DeviceChoice, steps: usize) -> Result<Config> {
    let device = serde_json::to_value(choice)?;
    let overrides: Vec<String> = vec![
        format!(
            "device={}",
            device.as_str().expect("a device choice is a name")
        ),
        format!("train.steps={steps}"),
        format!("probes.every={steps}"),
        "probes.log_spaced=false".into(),
        "train.log_every=1".into(),
        "checkpoint.every=0".into(),
        "checkpoint.log_spaced=false".into(),
    ];
    Ok(Config::from_yaml(yaml, model, &overrides)?)
}

/// Runs `yaml` shortened to `steps` (probes at step 0 and `steps`, no checkpoints) on `choice`,
/// and reads its throughput and evaluation time back from the run's tables. With
/// `split_rounds > 0`, then evaluates the trained model that many times with each host
/// reduction (`evaluation_split`).
pub(super) fn training_row(
    model: &str,
    yaml: &str,
    choice: DeviceChoice,
    steps: usize,
    warmup_steps: usize,
    split: Option<(&RunDevice, usize)>,
) -> Result<(TrainingRow, Vec<EvaluationRow>)> {
    let full = Config::from_yaml(yaml, model, &[])?;
    let config = shortened(yaml, model, choice, steps)?;
    let dir = std::env::temp_dir().join(format!("densitrace-bench-{}-{model}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stop = AtomicBool::new(false);
    let outcome = run::run(
        &config,
        &Destination::Exactly(dir.clone()),
        vec!["densitrace bench".into()],
        &stop,
    );
    let measured = outcome.and_then(|_| {
        let manifest = crate::rundir::RunDir::at(dir.clone()).read_manifest()?;
        let train = crate::report::load::read_train(&dir)?;
        let evaluations = match split {
            Some((device, rounds)) => evaluation_split(&dir, model, device, rounds)?,
            None => Vec::new(),
        };
        Ok((manifest, train, evaluations))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let (manifest, train, evaluations) =
        measured.with_context(|| format!("timing the {model} model"))?;

    // tokens_per_s of each step after the warm-up (the train table logs every step here).
    let rates: Vec<f64> = train
        .iter()
        .filter(|r| r.step as usize > warmup_steps)
        .map(|r| r.tokens_per_s)
        .collect();
    let tokens_per_step = config.train.batch_size * config.context();
    let mut step_ms: Vec<f64> = rates
        .iter()
        .map(|r| tokens_per_step as f64 / r * 1e3)
        .collect();
    step_ms.sort_by(f64::total_cmp);
    let ms_per_step = step_ms[step_ms.len() / 2];
    let last = manifest
        .evaluations
        .last()
        .context("the run recorded no evaluation")?;
    let schedule_steps = full.train.steps;
    // The full config's own schedule: step 0, every `probes.every` (and the log-spaced steps),
    // and the last step.
    let schedule_evaluations = (0..=schedule_steps)
        .filter(|&s| crate::train::is_eval_step(&full, s))
        .count();
    let evaluation_s = last.seconds;
    let instrumentation_share =
        schedule_evaluations as f64 * evaluation_s / (schedule_steps as f64 * ms_per_step / 1e3);
    let row = TrainingRow {
        model: model.into(),
        parameters: manifest.parameters,
        tokens_per_step,
        steps_timed: step_ms.len(),
        warmup_steps,
        ms_per_step,
        tokens_per_s: tokens_per_step as f64 / ms_per_step * 1e3,
        evaluation_s,
        forward_s: last.forward_seconds,
        metrics_s: last.reduce_seconds,
        write_s: last.write_seconds,
        schedule_evaluations,
        schedule_steps,
        instrumentation_share,
    };
    Ok((row, evaluations))
}

/// The finished run in `dir` evaluated `rounds` times with each host reduction, alternating
/// (fast, reference, fast, ...) so that both see the same load on a shared machine; each
/// reduction's median forward and metrics seconds. The run's own two evaluations came first, so
/// nothing here pays for first-use costs.
fn evaluation_split(
    dir: &std::path::Path,
    model: &str,
    device: &RunDevice,
    rounds: usize,
) -> Result<Vec<EvaluationRow>> {
    let finished = crate::rundir::FinishedRun::open(dir)?;
    let config = &finished.config;
    let gpt = finished.model(&device.device)?;
    let prior = finished.reload_dataset(config)?.prior();
    // Each host reduction as `probes.reduction` chooses it on the CPU backend: `fast` is
    // `kernels::fast`, `reference` the f64 reference.
    let probings: Vec<Probing> = [ReductionChoice::Fast, ReductionChoice::Reference]
        .into_iter()
        .map(|reduction| {
            let mut config = config.clone();
            config.probes.reduction = reduction;
            Probing::new(&config, device, &finished.probe_sets, prior.as_ref())
        })
        .collect();
    let mut seconds: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); probings.len()];
    for _ in 0..rounds {
        for (probing, (forward, metrics)) in probings.iter().zip(&mut seconds) {
            let timing = probing.evaluate(&gpt).timing;
            forward.push(timing.forward);
            metrics.push(timing.reduce);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(probings
        .iter()
        .zip(seconds)
        .map(|(probing, (forward, metrics))| EvaluationRow {
            model: model.into(),
            reduction: probing.reduction().name().into(),
            rounds,
            forward_s: median(forward),
            metrics_s: median(metrics),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both timed models' shortened configs validate on every device choice (the full bench
    /// times gpu-medium, which CI's `--quick` does not reach).
    #[test]
    fn the_timed_configs_shorten_to_valid_runs() {
        for (model, yaml) in [("quickstart", QUICKSTART), ("gpu-medium", GPU_MEDIUM)] {
            for choice in [DeviceChoice::Auto, DeviceChoice::Wgpu, DeviceChoice::Cpu] {
                let config = shortened(yaml, model, choice, 30).unwrap();
                assert_eq!(config.train.steps, 30);
                assert_eq!(config.checkpoint.every, 0);
            }
        }
    }
}

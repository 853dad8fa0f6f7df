//! One run, end to end: check everything the user gave us, then create (or reopen, for
//! `--resume`) the run directory, train with evaluations and checkpoints, write the final weights
//! and print the summary table.
//!
//! All bad input (config, device, data, a directory that is not a run, an edited config, a run
//! already in use) is found before anything in a run directory is written or deleted. What the
//! directory holds and where is `rundir`'s business.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Result;
use burn::module::Module;
use burn::optim::ModuleOptimizer;

use crate::config::Config;
use crate::data::Dataset;
use crate::data::probes::{self, ProbeSet};
use crate::data::rulegraph::Prior;
use crate::device::{self, RunDevice};
use crate::error::InputError;
use crate::measure::Probing;
use crate::metrics::MetricSpec;
use crate::model::Gpt;
use crate::progress::Progress;
use crate::rundir::checkpoint::{self, CheckpointState};
use crate::rundir::tables::{DensityRow, TrainRow};
use crate::rundir::{
    self, DeviceRecord, EvaluationRecord, Manifest, ProbeRecord, ResumeRecord, RunDir, RunStatus,
    Unfinished, config_hash,
};
use crate::train::{self, CheckpointReason, Outcome, Start, TrainHooks, tokens_seen};

/// How a run ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Completed,
    /// Stopped by SIGINT/SIGTERM after this step, with a checkpoint there (exit 130).
    Interrupted(usize),
    /// The loss was non-finite at this step (exit 3).
    Diverged(usize),
}

/// What a finished run leaves for its caller.
pub struct RunOutcome {
    pub dir: PathBuf,
    pub finish: Finish,
    /// Every density row of the first and the last evaluation this process made.
    pub first: Vec<DensityRow>,
    pub last: Vec<DensityRow>,
    /// The steps of those evaluations.
    pub steps: (usize, usize),
    /// The metric the summary table shows: the paper's (top-5% energy) if it was measured, else
    /// Hoyer, else the first configured.
    pub summary_metric: String,
}

/// Everything a run needs that comes from its config, checked before the directory is touched.
struct Prepared {
    device: RunDevice,
    data: Dataset,
    probe_sets: Vec<ProbeSet>,
    /// The rule graph's frequency prior (`prior_acc`).
    prior: Option<Prior>,
}

impl Prepared {
    /// The run's evaluation: its probe sets and plan, reduced where its device measures.
    fn probing<'a>(&'a self, config: &Config) -> Probing<'a> {
        Probing::new(config, &self.device, &self.probe_sets, self.prior.as_ref())
    }
}

/// A new run's data and probe sets, or (with `saved`) an existing run's: its saved tokenizer
/// and probe sets, checked against its manifest, never rebuilt.
fn prepare(config: &Config, saved: Option<(&RunDir, &Manifest)>) -> Result<Prepared> {
    let device = device::select(config.device)?;
    tracing::info!("{}", device.reason);
    let (data, probe_sets) = match saved {
        None => {
            let data = Dataset::prepare(config, None)?;
            let sets = probes::build(config, &config.probes.sets, &data)?;
            (data, sets)
        }
        Some((dir, manifest)) => (
            dir.reload_dataset(config, &manifest.data_fingerprint)?,
            dir.load_probes(&manifest.probes_hash)?,
        ),
    };
    tracing::info!("{}; {} probe sets", data.describe(), probe_sets.len());
    Ok(Prepared {
        prior: data.prior(),
        device,
        data,
        probe_sets,
    })
}

/// Where a new run's directory is created.
pub enum Destination {
    /// `OUT/<name>/<run_id>/`, the default.
    Under(PathBuf),
    /// Exactly this directory, which must not exist yet (a sweep's cell).
    Exactly(PathBuf),
}

/// A new run of `config` at `destination`.
pub fn run(
    config: &Config,
    destination: &Destination,
    command_line: Vec<String>,
    stop: &AtomicBool,
) -> Result<RunOutcome> {
    let mut config = config.clone();
    config.absolutize_paths(&std::env::current_dir()?);
    let config = &config;
    let prepared = prepare(config, None)?;
    let dir = match destination {
        Destination::Under(out) => RunDir::create(out, &config.name, config.seed),
        Destination::Exactly(path) => RunDir::create_exactly(path),
    }
    .map_err(|e| {
        let (Destination::Under(path) | Destination::Exactly(path)) = destination;
        InputError::Other(format!(
            "cannot create a run directory at {}: {e}",
            path.display()
        ))
    })?;
    let _lock = dir.lock()?;
    tracing::info!("run directory {}", dir.root().display());
    let yaml = config.to_yaml();
    dir.write_atomic(rundir::CONFIG, yaml.as_bytes())?;
    dir.write_atomic(
        rundir::TOKENIZER,
        prepared.data.tokenizer.to_json().as_bytes(),
    )?;
    let probes_hash = dir.save_probes(rundir::PROBES, &prepared.probe_sets)?;
    let manifest = Manifest {
        densitrace_version: env!("CARGO_PKG_VERSION").into(),
        git_revision: rundir::git_revision(),
        command_line,
        run_id: dir.run_id().to_string(),
        seed: config.seed,
        config_hash: config_hash(&yaml),
        device: DeviceRecord::of(&prepared.device),
        data: prepared.data.describe(),
        data_fingerprint: prepared.data.fingerprint(),
        tokenizer: prepared.data.tokenizer.kind().into(),
        vocab_size: prepared.data.vocab_size,
        probes_hash,
        probe_sets: ProbeRecord::of(&prepared.probe_sets),
        parameters: 0,
        start_time: chrono::Utc::now().to_rfc3339(),
        end_time: None,
        status: RunStatus::Running,
        diverged_at: None,
        resumes: Vec::new(),
        evaluations: Vec::new(),
    };
    let start = train::fresh_start(config, prepared.data.vocab_size, &prepared.device.device);
    drive(config, &prepared, dir, manifest, start, stop)
}

/// Continues the run in `run_dir` from its newest complete checkpoint that did not diverge.
/// Results written after that checkpoint are deleted first, so no step appears twice.
pub fn resume(run_dir: &Path, command_line: Vec<String>, stop: &AtomicBool) -> Result<RunOutcome> {
    let Unfinished {
        dir,
        lock: _lock,
        config,
        mut manifest,
    } = Unfinished::open(run_dir)?;
    let prepared = prepare(&config, Some((&dir, &manifest)))?;
    if prepared.device.backend != manifest.device.backend {
        tracing::warn!(
            "the run started on {} and resumes on {}: results after the checkpoint will not match \
             an uninterrupted run exactly",
            manifest.device.backend,
            prepared.device.backend
        );
    }

    let healthy = checkpoint::list(run_dir)?
        .into_iter()
        .rev()
        .find(|s| s.diverged_at.is_none());
    let keep_until = healthy.as_ref().map(|s| s.step);
    dir.truncate_after(keep_until)?;
    manifest
        .evaluations
        .retain(|e| keep_until.is_some_and(|c| e.step <= c));
    manifest.status = RunStatus::Running;
    manifest.diverged_at = None;
    manifest.end_time = None;
    manifest.resumes.push(ResumeRecord {
        from_step: keep_until.unwrap_or(0),
        time: chrono::Utc::now().to_rfc3339(),
        command_line,
        device: DeviceRecord::of(&prepared.device),
    });
    let start = match healthy {
        Some(state) => {
            tracing::info!(
                "resuming {} from the checkpoint at step {}",
                run_dir.display(),
                state.step
            );
            let fresh =
                train::fresh_start(&config, prepared.data.vocab_size, &prepared.device.device);
            let (model, optimizer) =
                checkpoint::load(run_dir, state.step, fresh.model, fresh.optimizer)?;
            Start {
                step: state.step,
                model,
                optimizer,
                wall_time: state.wall_time,
            }
        }
        None => {
            tracing::info!(
                "{} has no checkpoint: starting it again from step 0",
                run_dir.display()
            );
            train::fresh_start(&config, prepared.data.vocab_size, &prepared.device.device)
        }
    };
    drive(&config, &prepared, dir, manifest, start, stop)
}

/// The hooks the training loop calls: evaluation and checkpoint writing.
struct RunHooks<'a> {
    config: &'a Config,
    prepared: &'a Prepared,
    dir: &'a RunDir,
    manifest: Manifest,
    started: Instant,
    wall_offset: f64,
    first: Option<(usize, Vec<DensityRow>)>,
    last: (usize, Vec<DensityRow>),
}

impl RunHooks<'_> {
    fn wall_time(&self) -> f64 {
        self.wall_offset + self.started.elapsed().as_secs_f64()
    }

    fn write_manifest(&self) -> Result<()> {
        self.dir.write_manifest(&self.manifest)
    }

    fn write_train(&self, step: usize, rows: &[TrainRow]) -> Result<()> {
        if !rows.is_empty() {
            self.dir.write_train(step as i64, rows)?;
        }
        Ok(())
    }
}

impl TrainHooks for RunHooks<'_> {
    fn evaluate(&mut self, step: usize, model: &Gpt, train_rows: &[TrainRow]) -> Result<()> {
        let t0 = Instant::now();
        self.manifest.parameters = model.num_params();
        let p = self.prepared;
        let probing = p.probing(self.config);
        let eval = probing.evaluate_into(
            model,
            self.dir,
            step,
            tokens_seen(self.config, step),
            || self.wall_time(),
        )?;
        self.write_train(step, train_rows)?;
        let seconds = t0.elapsed().as_secs_f64();
        let timing = eval.timing;
        tracing::info!(
            "step {step}: evaluated {} probe sets in {seconds:.2}s (forward {:.2}s, metrics {:.2}s, \
             writes {:.2}s), {} rows, {} bytes read back",
            p.probe_sets.len(),
            timing.forward,
            timing.reduce,
            timing.write,
            eval.rows.len(),
            eval.readback_bytes
        );
        self.manifest.evaluations.retain(|e| e.step != step);
        self.manifest.evaluations.push(EvaluationRecord {
            step,
            rows: eval.rows.len(),
            readback_bytes: eval.readback_bytes,
            seconds,
            forward_seconds: timing.forward,
            reduce_seconds: timing.reduce,
            write_seconds: timing.write,
            reduction: probing.reduction().name().into(),
        });
        self.write_manifest()?;
        if self.first.is_none() {
            self.first = Some((step, eval.rows.clone()));
        }
        self.last = (step, eval.rows);
        Ok(())
    }

    fn checkpoint(
        &mut self,
        step: usize,
        model: &Gpt,
        optimizer: &ModuleOptimizer,
        train_rows: &[TrainRow],
        reason: CheckpointReason,
    ) -> Result<()> {
        // Train rows first: a checkpoint promises that every row up to its step is on disk.
        self.write_train(step, train_rows)?;
        let diverged_at = match reason {
            CheckpointReason::Diverged(at) => Some(at),
            _ => None,
        };
        let state = CheckpointState {
            step,
            wall_time: self.wall_time(),
            diverged_at,
        };
        let path = checkpoint::write(self.dir.root(), model, optimizer, &state)?;
        checkpoint::prune(self.dir.root(), &self.config.checkpoint)?;
        tracing::info!("step {step}: checkpoint {} ({reason:?})", path.display());
        Ok(())
    }
}

fn drive(
    config: &Config,
    prepared: &Prepared,
    dir: RunDir,
    manifest: Manifest,
    start: Start,
    stop: &AtomicBool,
) -> Result<RunOutcome> {
    let mut hooks = RunHooks {
        config,
        prepared,
        dir: &dir,
        manifest,
        started: Instant::now(),
        wall_offset: start.wall_time,
        first: None,
        last: (0, Vec::new()),
    };
    hooks.write_manifest()?;
    let progress = Progress::new(config.train.steps);
    let outcome = train::train(
        config,
        &prepared.data,
        &prepared.device,
        start,
        &progress,
        stop,
        &mut hooks,
    )?;
    drop(progress);

    let finish = match outcome {
        Outcome::Completed(model) => {
            dir.save_final_weights(model)?;
            hooks.manifest.status = RunStatus::Completed;
            Finish::Completed
        }
        Outcome::Interrupted(step) => {
            hooks.manifest.status = RunStatus::Interrupted;
            tracing::warn!(
                "stopped after step {step}; continue with --resume {}",
                dir.root().display()
            );
            Finish::Interrupted(step)
        }
        Outcome::Diverged(step) => {
            hooks.manifest.status = RunStatus::Diverged;
            hooks.manifest.diverged_at = Some(step);
            Finish::Diverged(step)
        }
    };
    hooks.manifest.end_time = Some(chrono::Utc::now().to_rfc3339());
    hooks.write_manifest()?;
    let first = hooks.first.take();
    let summary_metric = MetricSpec::headline(&config.probes.metrics).to_string();
    Ok(RunOutcome {
        dir: dir.root().to_path_buf(),
        finish,
        summary_metric,
        steps: (first.as_ref().map_or(0, |f| f.0), hooks.last.0),
        first: first.map(|f| f.1).unwrap_or_default(),
        last: std::mem::take(&mut hooks.last.1),
    })
}

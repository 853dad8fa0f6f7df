//! One run, end to end: check everything the user gave us, then create (or reopen, for
//! `--resume`) the run directory, train with evaluations and checkpoints, write the final weights
//! and print the summary table.
//!
//! All bad input (config, device, data, a directory that is not a run, an edited config, a run
//! already in use) is found before anything in a run directory is written or deleted.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointState};
use crate::config::{Config, ProbePlan};
use crate::data::Dataset;
use crate::data::probes::{self, ProbeSet};
use crate::data::tokenizer::Tokenizer;
use crate::device::{self, AdapterSummary, RunDevice};
use crate::error::InputError;
use crate::evaluate::evaluate;
use crate::model::Gpt;
use crate::progress::Progress;
use crate::seed::derive_seed;
use crate::sink::{DensityRow, RunDir, TrainRow};
use crate::train::{self, CheckpointReason, Outcome, Start, TrainHooks, tokens_seen};

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    densitrace_version: String,
    git_revision: Option<String>,
    command_line: Vec<String>,
    run_id: String,
    seed: u64,
    /// A hash of config.yaml's text: `--resume` refuses a run whose config was edited.
    config_hash: String,
    device: DeviceRecord,
    /// What the data source gave: documents or facts, tokens, the tokenizer.
    data: String,
    /// `Dataset::fingerprint`: `--resume` and `probe` refuse a corpus that changed.
    data_fingerprint: String,
    tokenizer: String,
    vocab_size: usize,
    /// The content hash of probes.json: every later command checks it.
    probes_hash: String,
    probe_sets: Vec<ProbeRecord>,
    parameters: usize,
    start_time: String,
    end_time: Option<String>,
    /// running, completed, interrupted or diverged.
    status: String,
    diverged_at: Option<usize>,
    resumes: Vec<ResumeRecord>,
    evaluations: Vec<EvaluationRecord>,
}

/// One probe set as the manifest lists it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProbeRecord {
    pub name: String,
    pub family: String,
    pub level: f64,
    pub samples: usize,
    pub tokens: usize,
    /// Bigram distance and novelty against the unshifted set (see `data::probes`).
    pub distance: f64,
    pub novelty: f64,
}

impl ProbeRecord {
    pub fn of(sets: &[ProbeSet]) -> Vec<ProbeRecord> {
        sets.iter()
            .map(|s| ProbeRecord {
                name: s.name.clone(),
                family: s.family.name().into(),
                level: s.level,
                samples: s.samples(),
                tokens: s.len,
                distance: s.distance,
                novelty: s.novelty,
            })
            .collect()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct DeviceRecord {
    backend: String,
    reason: String,
    adapter: Option<AdapterSummary>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ResumeRecord {
    from_step: usize,
    time: String,
    command_line: Vec<String>,
    device: DeviceRecord,
}

#[derive(Debug, Serialize, Deserialize)]
struct EvaluationRecord {
    step: usize,
    rows: usize,
    /// Bytes read back from the device for this evaluation.
    readback_bytes: u64,
    seconds: f64,
}

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

/// Held for the whole run: a second process on the same directory is refused. An OS file lock,
/// so a killed process (even by SIGKILL) releases it.
struct RunLock(#[allow(dead_code)] fs::File);

fn lock(dir: &Path) -> Result<RunLock, InputError> {
    let path = dir.join(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| InputError::File {
            file: path.display().to_string(),
            message: format!("cannot open the run's lock file: {e}"),
        })?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock(file)),
        Err(fs::TryLockError::WouldBlock) => Err(InputError::Other(format!(
            "{} is in use by another densitrace process",
            dir.display()
        ))),
        Err(fs::TryLockError::Error(e)) => Err(InputError::File {
            file: path.display().to_string(),
            message: format!("cannot lock: {e}"),
        }),
    }
}

fn config_hash(yaml: &str) -> String {
    format!("{:016x}", derive_seed(0, yaml))
}

/// Everything a run needs that comes from its config, checked before the directory is touched.
struct Prepared {
    device: RunDevice,
    data: Dataset,
    probe_sets: Vec<ProbeSet>,
    plan: ProbePlan,
}

/// A new run's data and probe sets, or (with `saved`) an existing run's: its saved tokenizer
/// and probe sets, checked against its manifest, never rebuilt.
fn prepare(config: &Config, saved: Option<(&Path, &Manifest)>) -> Result<Prepared> {
    let device = device::select(config.device)?;
    tracing::info!("{}", device.reason);
    let (data, probe_sets) = match saved {
        None => {
            let data = Dataset::prepare(config, None)?;
            let sets = probes::build(config, &config.probes.sets, &data)?;
            (data, sets)
        }
        Some((dir, manifest)) => (
            reload_dataset(config, dir, &manifest.data_fingerprint)?,
            load_probes(&dir.join("probes.json"), &manifest.probes_hash)?,
        ),
    };
    tracing::info!("{}; {} probe sets", data.describe(), probe_sets.len());
    Ok(Prepared {
        plan: config.probe_plan(),
        device,
        data,
        probe_sets,
    })
}

/// An existing run's data with its saved tokenizer, checked against the fingerprint it started
/// with (`recorded`, from its manifest).
fn reload_dataset(config: &Config, run_dir: &Path, recorded: &str) -> Result<Dataset, InputError> {
    let tokenizer = Tokenizer::load(&run_dir.join("tokenizer.json"))?;
    let data = Dataset::prepare(config, Some(tokenizer))?;
    let actual = data.fingerprint();
    if recorded != actual {
        return Err(InputError::Other(format!(
            "data.source: the data differs from what the run started with (fingerprint {actual}, \
             the manifest records {recorded}); restore the corpus or start a new run"
        )));
    }
    Ok(data)
}

/// A run's manifest.json.
fn read_manifest(run_dir: &Path) -> Result<Manifest, InputError> {
    let path = run_dir.join("manifest.json");
    let bad = |message: String| InputError::File {
        file: path.display().to_string(),
        message,
    };
    let text = fs::read(&path).map_err(|e| bad(format!("cannot read: {e}")))?;
    serde_json::from_slice(&text).map_err(|e| bad(format!("not a run manifest: {e}")))
}

/// What later commands (`dump`, `probe`) need of a finished run: its config, its stored probe
/// sets, the model's vocabulary size and the final weights' path.
pub struct FinishedRun {
    pub config: Config,
    pub run_id: String,
    pub probe_sets: Vec<ProbeSet>,
    pub vocab_size: usize,
    data_fingerprint: String,
    pub weights: PathBuf,
}

impl FinishedRun {
    pub fn open(run_dir: &Path) -> Result<FinishedRun> {
        let config_path = run_dir.join("config.yaml");
        if !config_path.is_file() {
            return Err(InputError::File {
                file: run_dir.display().to_string(),
                message: "not a run directory (no config.yaml)".into(),
            }
            .into());
        }
        let weights = run_dir.join("checkpoints/final/model.bpk");
        if !run_dir.join("checkpoints/final/DONE").is_file() {
            return Err(InputError::File {
                file: weights.display().to_string(),
                message: "the run has no complete final weights".into(),
            }
            .into());
        }
        let config = Config::load(&config_path, &[])?;
        let manifest = read_manifest(run_dir)?;
        let probe_sets = load_probes(&run_dir.join("probes.json"), &manifest.probes_hash)?;
        Ok(FinishedRun {
            config,
            run_id: manifest.run_id,
            probe_sets,
            vocab_size: manifest.vocab_size,
            data_fingerprint: manifest.data_fingerprint,
            weights,
        })
    }

    /// The run's data, re-read with its saved tokenizer and checked against its fingerprint.
    pub fn reload_dataset(&self, config: &Config, run_dir: &Path) -> Result<Dataset, InputError> {
        reload_dataset(config, run_dir, &self.data_fingerprint)
    }

    /// The final weights, on `device`.
    pub fn model(&self, device: &burn::prelude::Device) -> Result<Gpt> {
        self.load(&self.weights, device)
    }

    /// The weights after `step`: the final ones for the last step, else a complete checkpoint's.
    pub fn model_at(
        &self,
        run_dir: &Path,
        step: usize,
        device: &burn::prelude::Device,
    ) -> Result<Gpt> {
        if step == self.config.train.steps {
            return self.model(device);
        }
        self.load(&checkpoint::model_path(run_dir, step), device)
    }

    /// The steps with weights to measure: every complete, healthy checkpoint, and the last step.
    pub fn steps_with_weights(&self, run_dir: &Path) -> Result<Vec<usize>> {
        let mut steps: Vec<usize> = checkpoint::list(run_dir)?
            .into_iter()
            .filter(|s| s.diverged_at.is_none())
            .map(|s| s.step)
            .collect();
        steps.push(self.config.train.steps);
        steps.sort_unstable();
        steps.dedup();
        Ok(steps)
    }

    fn load(&self, path: &Path, device: &burn::prelude::Device) -> Result<Gpt> {
        self.config
            .model
            .init(self.vocab_size, device)
            .try_load_file(path)
            .with_context(|| format!("loading {}", path.display()))
    }
}

/// Reads stored probe sets and checks them against `recorded`, the manifest's hash.
///
/// The hash is taken over the sets' JSON as serde_json writes it. Floats are written as the
/// shortest text that reads back to the same bits and parsed exactly (serde_json's
/// `float_roundtrip`), so the sets read back hash to what was recorded when they were written.
/// Before that feature was on, some values (0.9991666666666665) parsed one bit off and every
/// reload was refused; those files were written correctly and are accepted now unchanged.
pub fn load_probes(path: &Path, recorded: &str) -> Result<Vec<ProbeSet>, InputError> {
    let bad = |message: String| InputError::File {
        file: path.display().to_string(),
        message,
    };
    let text = fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let stored: probes::Stored =
        serde_json::from_slice(&text).map_err(|e| bad(format!("not a probe file: {e}")))?;
    if stored.hash != recorded {
        return Err(bad(format!(
            "the file says its sets hash to {}, the run's manifest records {recorded}: it is \
             not the probes.json this run wrote; restore that file or start a new run",
            stored.hash
        )));
    }
    let actual = probes::content_hash(&stored.sets);
    if actual != recorded {
        return Err(bad(format!(
            "the sets it holds hash to {actual}, the manifest and the file record {recorded}: \
             the sets were edited after the run started; restore the file or start a new run"
        )));
    }
    Ok(stored.sets)
}

/// Writes probe sets with their hash; returns the hash.
pub fn save_probes(dir: &RunDir, name: &str, sets: &[ProbeSet]) -> Result<String> {
    let hash = probes::content_hash(sets);
    let stored = probes::Stored {
        hash: hash.clone(),
        sets: sets.to_vec(),
    };
    dir.write_atomic(name, serde_json::to_string(&stored)?.as_bytes())?;
    Ok(hash)
}

fn device_record(d: &RunDevice) -> DeviceRecord {
    DeviceRecord {
        backend: d.backend.to_string(),
        reason: d.reason.clone(),
        adapter: d.adapter.clone(),
    }
}

/// A new run of `config` under `out`.
pub fn run(
    config: &Config,
    out: &Path,
    command_line: Vec<String>,
    stop: &AtomicBool,
) -> Result<RunOutcome> {
    let mut config = config.clone();
    config.absolutize_paths(&std::env::current_dir()?);
    let config = &config;
    let prepared = prepare(config, None)?;
    let dir = RunDir::create(out, &config.name, config.seed).map_err(|e| {
        InputError::Other(format!(
            "cannot create a run directory under {}: {e}",
            out.display()
        ))
    })?;
    let _lock = lock(&dir.root)?;
    tracing::info!("run directory {}", dir.root.display());
    let yaml = config.to_yaml();
    dir.write_atomic("config.yaml", yaml.as_bytes())?;
    dir.write_atomic(
        "tokenizer.json",
        prepared.data.tokenizer.to_json().as_bytes(),
    )?;
    let probes_hash = save_probes(&dir, "probes.json", &prepared.probe_sets)?;
    let manifest = Manifest {
        densitrace_version: env!("CARGO_PKG_VERSION").into(),
        git_revision: git_revision(),
        command_line,
        run_id: dir.run_id.clone(),
        seed: config.seed,
        config_hash: config_hash(&yaml),
        device: device_record(&prepared.device),
        data: prepared.data.describe(),
        data_fingerprint: prepared.data.fingerprint(),
        tokenizer: prepared.data.tokenizer.kind().into(),
        vocab_size: prepared.data.vocab_size,
        probes_hash,
        probe_sets: ProbeRecord::of(&prepared.probe_sets),
        parameters: 0,
        start_time: chrono::Utc::now().to_rfc3339(),
        end_time: None,
        status: "running".into(),
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
    let not_a_run = |what: &str| InputError::File {
        file: run_dir.display().to_string(),
        message: format!("not a densitrace run directory ({what})"),
    };
    let config_path = run_dir.join("config.yaml");
    let manifest_path = run_dir.join("manifest.json");
    if !config_path.is_file() || !manifest_path.is_file() {
        return Err(not_a_run("no config.yaml or manifest.json").into());
    }
    let _lock = lock(run_dir)?;
    let yaml = fs::read_to_string(&config_path).map_err(|_| not_a_run("config.yaml unreadable"))?;
    let config = Config::from_yaml(&yaml, &config_path.display().to_string(), &[])?;
    let mut manifest: Manifest = serde_json::from_slice(
        &fs::read(&manifest_path).map_err(|_| not_a_run("manifest.json unreadable"))?,
    )
    .map_err(|e| not_a_run(&format!("manifest.json: {e}")))?;
    if manifest.config_hash != config_hash(&yaml) {
        return Err(InputError::File {
            file: config_path.display().to_string(),
            message: "was edited after the run started; a resumed run must use the config it \
                      started with (start a new run instead)"
                .into(),
        }
        .into());
    }
    if manifest.status == "completed" {
        return Err(InputError::Other(format!(
            "{} is a completed run: there is nothing to resume",
            run_dir.display()
        ))
        .into());
    }
    let prepared = prepare(&config, Some((run_dir, &manifest)))?;
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
    let dir = RunDir {
        root: run_dir.to_path_buf(),
        run_id: manifest.run_id.clone(),
    };
    let keep_until = healthy.as_ref().map(|s| s.step);
    truncate_after(run_dir, keep_until)?;
    manifest
        .evaluations
        .retain(|e| keep_until.is_some_and(|c| e.step <= c));
    manifest.status = "running".into();
    manifest.diverged_at = None;
    manifest.end_time = None;
    manifest.resumes.push(ResumeRecord {
        from_step: keep_until.unwrap_or(0),
        time: chrono::Utc::now().to_rfc3339(),
        command_line,
        device: device_record(&prepared.device),
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

/// Deletes every result and checkpoint of a step after `step` (all of them for `None`), and any
/// temporary file a killed process left.
fn truncate_after(run_dir: &Path, step: Option<usize>) -> Result<()> {
    for table in ["density", "quantiles", "samples", "train", "checkpoints"] {
        let Ok(entries) = fs::read_dir(run_dir.join(table)) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            let part_step = name
                .strip_prefix("step-")
                .and_then(|s| s.trim_end_matches(".tmp").parse::<usize>().ok());
            let stale =
                name.ends_with(".tmp") || part_step.is_some_and(|s| step.is_none_or(|c| s > c));
            if stale {
                if path.is_dir() {
                    fs::remove_dir_all(&path)?;
                } else {
                    fs::remove_file(&path)?;
                }
            } else if path.is_dir() {
                for file in fs::read_dir(&path)? {
                    let file = file?.path();
                    if file.extension().is_some_and(|e| e == "tmp") {
                        fs::remove_file(&file)?;
                    }
                }
            }
        }
    }
    Ok(())
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
        self.dir.write_atomic(
            "manifest.json",
            serde_json::to_string_pretty(&self.manifest)?.as_bytes(),
        )
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
        let eval = evaluate(
            model,
            &p.probe_sets,
            &p.plan,
            self.config.model.layers,
            self.config.probes.batch_size,
            &p.device.device,
            p.device.measures_on_device(),
        );
        let wall = self.wall_time();
        let tokens = tokens_seen(self.config, step);
        let dir = self.dir;
        dir.write_density(step as i64, tokens, wall, &eval.rows)?;
        if !eval.quantile_rows.is_empty() {
            dir.write_quantiles(step as i64, tokens, wall, &eval.quantile_rows)?;
        }
        if !eval.sample_rows.is_empty() {
            dir.write_samples(step as i64, &eval.sample_rows)?;
        }
        self.write_train(step, train_rows)?;
        let seconds = t0.elapsed().as_secs_f64();
        tracing::info!(
            "step {step}: evaluated {} probe sets in {seconds:.2}s, {} rows, {} bytes read back",
            p.probe_sets.len(),
            eval.rows.len(),
            eval.readback_bytes
        );
        self.manifest.evaluations.retain(|e| e.step != step);
        self.manifest.evaluations.push(EvaluationRecord {
            step,
            rows: eval.rows.len(),
            readback_bytes: eval.readback_bytes,
            seconds,
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
        let path = checkpoint::write(&self.dir.root, model, optimizer, &state)?;
        checkpoint::prune(&self.dir.root, &self.config.checkpoint)?;
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
        &prepared.device.device,
        start,
        &progress,
        stop,
        &mut hooks,
    )?;
    drop(progress);

    let finish = match outcome {
        Outcome::Completed(model) => {
            let final_dir = dir.root.join("checkpoints/final");
            fs::create_dir_all(&final_dir)?;
            model
                .save_file(final_dir.join("model.bpk"))
                .with_context(|| format!("saving the final weights to {}", final_dir.display()))?;
            dir.write_atomic("checkpoints/final/DONE", b"")?;
            hooks.manifest.status = "completed".into();
            Finish::Completed
        }
        Outcome::Interrupted(step) => {
            hooks.manifest.status = "interrupted".into();
            tracing::warn!(
                "stopped after step {step}; continue with --resume {}",
                dir.root.display()
            );
            Finish::Interrupted(step)
        }
        Outcome::Diverged(step) => {
            hooks.manifest.status = "diverged".into();
            hooks.manifest.diverged_at = Some(step);
            Finish::Diverged(step)
        }
    };
    hooks.manifest.end_time = Some(chrono::Utc::now().to_rfc3339());
    hooks.write_manifest()?;
    let first = hooks.first.take();
    let summary_metric = ["topk_energy@0.05", "hoyer"]
        .into_iter()
        .find(|m| config.probes.metrics.iter().any(|x| x == m))
        .unwrap_or(config.probes.metrics[0].as_str())
        .to_string();
    Ok(RunOutcome {
        dir: dir.root.clone(),
        finish,
        summary_metric,
        steps: (first.as_ref().map_or(0, |f| f.0), hooks.last.0),
        first: first.map(|f| f.1).unwrap_or_default(),
        last: std::mem::take(&mut hooks.last.1),
    })
}

fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The end-of-run table: per probe set and level, a final-norm metric at the first and last
/// evaluation (position `last`), with the answer accuracy beside it.
pub fn summary_table(outcome: &RunOutcome) -> String {
    let metric = outcome.summary_metric.as_str();
    let pick = |rows: &[DensityRow], probe: &str, level: f64, site: &str, metric: &str| {
        rows.iter()
            .map(|r| (&r.key, r.value))
            .find(|(k, _)| {
                k.probe == probe
                    && k.shift_level == level
                    && k.site == site
                    && k.position == "last"
                    && k.metric == metric
            })
            .map(|(_, value)| value)
    };
    let mut keys: Vec<(String, f64)> = Vec::new();
    for k in outcome.last.iter().map(|r| &r.key) {
        if !keys
            .iter()
            .any(|(p, l)| *p == k.probe && *l == k.shift_level)
        {
            keys.push((k.probe.clone(), k.shift_level));
        }
    }
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    let mut out = format!(
        "{:<12} {:>6}  {:>12} {:>12} {:>9}  {:>9} {:>9}\n",
        "probe",
        "level",
        format!("step {}", outcome.steps.0),
        format!("step {}", outcome.steps.1),
        "change",
        "loss",
        "accuracy"
    );
    for (probe, level) in keys {
        let a = pick(&outcome.first, &probe, level, "final.norm", metric);
        let b = pick(&outcome.last, &probe, level, "final.norm", metric);
        let change = a.zip(b).map(|(a, b)| b - a);
        let loss = pick(&outcome.last, &probe, level, "logits", "next_token_loss");
        let acc = pick(&outcome.last, &probe, level, "logits", "choice_acc")
            .or_else(|| pick(&outcome.last, &probe, level, "logits", "answer_acc"));
        out.push_str(&format!(
            "{probe:<12} {level:>6}  {:>12} {:>12} {:>9}  {:>9} {:>9}\n",
            fmt(a),
            fmt(b),
            change.map_or("-".into(), |c| format!("{c:+.4}")),
            fmt(loss),
            fmt(acc)
        ));
    }
    out
}

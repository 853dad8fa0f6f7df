//! The run directory: the one module that knows its layout. Every other module asks it for paths,
//! and the commands that read a finished run (`probe`, `dump`, `report`, a sweep resuming its
//! cells) open it here, never through `run`.
//!
//! ```text
//! runs/<name>/<run_id>/
//!   .lock                                    held by the process using the run (an OS lock)
//!   config.yaml                              the resolved config, exactly what ran
//!   manifest.json                            version, git revision, command, device, times,
//!                                            data fingerprint, probe sets and probes.json's hash
//!   tokenizer.json                           the tokenizer, reloaded (never rebuilt) later
//!   probes.json                              every probe set's token ids, drawn once at the start
//!   density/step-000100/part-0.parquet       one file per evaluation (schemas: `tables`)
//!   quantiles/step-000100/part-0.parquet     per-metric quantiles over vectors, per evaluation
//!   samples/step-000100/part-0.parquet       each vector's metrics and each sample's losses (probes.per_sample)
//!   train/step-000100/part-0.parquet         train rows logged since the previous file
//!   checkpoints/step-000500/                 weights, optimizer, state.json, DONE (`checkpoint`)
//!   checkpoints/final/model.bpk + DONE       the final weights (Burn's burnpack format); DONE
//!                                            holds its content hash (`checkpoint::verify`)
//!   probes/<name>/                           `densitrace probe` outputs, same layout of tables
//! ```
//!
//! The folders are `step-NNNNNN`, not hive-style `step=NNNNNN`: every file carries its own `step`
//! column, and a hive key of the same name makes pyarrow refuse the dataset (int32 or dictionary
//! partition versus the int64 column). With no `=` in the path, pyarrow, pandas, polars and
//! DuckDB all read `density/` (or `density/**/*.parquet`) with the file's own types.
//!
//! Every file is written under a temporary name and renamed into place, so a crash never leaves a
//! half-written file under a final name; each evaluation is its own file, so a crash never
//! corrupts an earlier one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::module::Module;
use serde::{Deserialize, Serialize};

pub mod checkpoint;
pub mod staged;
pub mod tables;
pub mod write;

use crate::config::Config;
use crate::data::Dataset;
use crate::data::probes::{self, ProbeSet};
use crate::data::tokenizer::Tokenizer;
use crate::device::{AdapterSummary, RunDevice};
use crate::error::InputError;
use crate::model::Gpt;
use crate::seed::derive_seed;
use tables::Table;

pub const CONFIG: &str = "config.yaml";
pub const MANIFEST: &str = "manifest.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const PROBES: &str = "probes.json";
const LOCK: &str = ".lock";
pub const CHECKPOINTS: &str = "checkpoints";
const FINAL: &str = "checkpoints/final";
/// Where `densitrace probe` puts each of its outputs, `probes/<name>/`.
pub const PROBE_OUTPUTS: &str = "probes";

/// `step-000500`: the folder of one step's table file or checkpoint.
pub fn step_folder(step: usize) -> String {
    format!("step-{step:06}")
}

/// Where a run stands, as its manifest records it (`status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// A process is training it, or one was killed before it could record anything else: the
    /// run directory's lock tells which.
    Running,
    /// It reached `train.steps`: its final weights and tables are complete.
    Completed,
    /// Stopped by a signal after a checkpoint; `run --resume` continues it.
    Interrupted,
    /// Its loss went non-finite (at `diverged_at`); it stopped there.
    Diverged,
}

/// What `manifest.json` holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub densitrace_version: String,
    pub git_revision: Option<String>,
    pub command_line: Vec<String>,
    pub run_id: String,
    pub seed: u64,
    /// A hash of config.yaml's text: `--resume` refuses a run whose config was edited.
    pub config_hash: String,
    pub device: DeviceRecord,
    /// What the data source gave: documents or facts, tokens, the tokenizer.
    pub data: String,
    /// `Dataset::fingerprint`: `--resume` and `probe` refuse a corpus that changed.
    pub data_fingerprint: String,
    pub tokenizer: String,
    pub vocab_size: usize,
    /// The content hash of probes.json: every later command checks it.
    pub probes_hash: String,
    pub probe_sets: Vec<ProbeRecord>,
    pub parameters: usize,
    pub start_time: String,
    pub end_time: Option<String>,
    pub status: RunStatus,
    pub diverged_at: Option<usize>,
    pub resumes: Vec<ResumeRecord>,
    pub evaluations: Vec<EvaluationRecord>,
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
pub struct DeviceRecord {
    pub backend: String,
    pub reason: String,
    pub adapter: Option<AdapterSummary>,
}

impl DeviceRecord {
    pub fn of(device: &RunDevice) -> DeviceRecord {
        DeviceRecord {
            backend: device.backend.to_string(),
            reason: device.reason.clone(),
            adapter: device.adapter.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ResumeRecord {
    pub from_step: usize,
    pub time: String,
    pub command_line: Vec<String>,
    pub device: DeviceRecord,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EvaluationRecord {
    pub step: usize,
    pub rows: usize,
    /// Bytes read back from the device for this evaluation.
    pub readback_bytes: u64,
    pub seconds: f64,
    /// Of `seconds`: the forward passes, the metrics (with the read-back) and the table writes
    /// (absent in manifests written before they were recorded).
    #[serde(default)]
    pub forward_seconds: f64,
    #[serde(default)]
    pub reduce_seconds: f64,
    #[serde(default)]
    pub write_seconds: f64,
    /// Who computed the metrics (`measure::reduce::Reduction::name`): `kernels`, `cpu_fast` or
    /// `reference` (empty in manifests written before it was recorded).
    #[serde(default)]
    pub reduction: String,
}

/// The hash of config.yaml's text that the manifest records.
pub fn config_hash(yaml: &str) -> String {
    format!("{:016x}", derive_seed(0, yaml))
}

/// Held for the whole run: a second process on the same directory is refused. An OS file lock,
/// so a killed process (even by SIGKILL) releases it.
pub struct RunLock(#[allow(dead_code)] fs::File);

/// A run directory: its root and the id its tables carry. Made only by the constructors below,
/// so every run directory in the program came from one of the ways a run's folder can exist.
pub struct RunDir {
    root: PathBuf,
    run_id: String,
}

impl RunDir {
    /// A directory that may hold a run, its id not read yet: to lock it (is a process using it?)
    /// or read its manifest. `Unfinished::open` and `FinishedRun::open` read the id.
    pub fn at(root: PathBuf) -> RunDir {
        RunDir {
            root,
            run_id: String::new(),
        }
    }

    /// A folder that receives tables on behalf of the run `of` (`probe`'s staged output): its rows
    /// carry that run's id.
    pub fn writing_for(root: PathBuf, of: &RunDir) -> RunDir {
        RunDir {
            root,
            run_id: of.run_id.clone(),
        }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The id every table row of this run carries.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Creates `<out>/<name>/<run_id>/`, where `run_id` is the UTC start time and the seed, with a
    /// suffix if a run with that id already exists.
    pub fn create(out: &Path, name: &str, seed: u64) -> Result<RunDir, std::io::Error> {
        let (root, run_id) = create_new_dir(&out.join(name), &format!("{}-s{seed}", utc_stamp()))?;
        Ok(RunDir { root, run_id })
    }

    /// Creates exactly `path` (its parent if need be), which must not exist: a sweep names its
    /// cells' run directories itself. The run id ends with the directory's name, so cells of one
    /// sweep started in the same second (same seed, other settings) still differ.
    pub fn create_exactly(path: &Path) -> Result<RunDir, std::io::Error> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::create_dir(path)?;
        let stamp = utc_stamp();
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        Ok(RunDir {
            root: path.to_path_buf(),
            run_id: format!("{stamp}-{name}"),
        })
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Writes `bytes` to `relative` atomically: a temporary file, fsync, rename.
    pub fn write_atomic(&self, relative: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.root.join(relative), bytes)
    }

    /// Takes the run's lock, or says that another process holds it.
    pub fn lock(&self) -> Result<RunLock, InputError> {
        let path = self.root.join(LOCK);
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
                self.root.display()
            ))),
            Err(fs::TryLockError::Error(e)) => Err(InputError::File {
                file: path.display().to_string(),
                message: format!("cannot lock: {e}"),
            }),
        }
    }

    /// The run's manifest (for commands that only read a run, `RunDir::at` suffices).
    pub fn read_manifest(&self) -> Result<Manifest, InputError> {
        let path = self.root.join(MANIFEST);
        let bad = |message: String| InputError::File {
            file: path.display().to_string(),
            message,
        };
        let text = fs::read(&path).map_err(|e| bad(format!("cannot read: {e}")))?;
        serde_json::from_slice(&text).map_err(|e| bad(format!("not a run manifest: {e}")))
    }

    pub fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        self.write_atomic(MANIFEST, serde_json::to_string_pretty(manifest)?.as_bytes())
    }

    /// Writes probe sets to `relative` with their hash; returns the hash.
    pub fn save_probes(&self, relative: &str, sets: &[ProbeSet]) -> Result<String> {
        let hash = probes::content_hash(sets);
        let stored = probes::Stored {
            hash: hash.clone(),
            sets: sets.to_vec(),
        };
        self.write_atomic(relative, serde_json::to_string(&stored)?.as_bytes())?;
        Ok(hash)
    }

    /// The run's stored probe sets, checked against `recorded`, the manifest's hash.
    ///
    /// The hash is taken over the sets' JSON as serde_json writes it. Floats are written as the
    /// shortest text that reads back to the same bits and parsed exactly (serde_json's
    /// `float_roundtrip`), so the sets read back hash to what was recorded when they were written.
    /// Before that feature was on, some values (0.9991666666666665) parsed one bit off and every
    /// reload was refused; those files were written correctly and are accepted now unchanged.
    pub fn load_probes(&self, recorded: &str) -> Result<Vec<ProbeSet>, InputError> {
        let path = &self.root.join(PROBES);
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

    /// The run's data, re-read with its saved tokenizer and checked against the fingerprint it
    /// started with (`recorded`, from its manifest).
    pub fn reload_dataset(&self, config: &Config, recorded: &str) -> Result<Dataset, InputError> {
        let tokenizer = Tokenizer::load(&self.root.join(TOKENIZER))?;
        let data = Dataset::prepare(config, Some(tokenizer))?;
        let actual = data.fingerprint();
        if recorded != actual {
            return Err(InputError::Other(format!(
                "data.source: the data differs from what the run started with (fingerprint \
                 {actual}, the manifest records {recorded}); restore the corpus or start a new run"
            )));
        }
        Ok(data)
    }

    /// The final weights' file.
    pub fn final_weights(&self) -> PathBuf {
        self.root.join(FINAL).join("model.bpk")
    }

    /// Whether the final weights were written completely.
    pub fn has_final_weights(&self) -> bool {
        self.root.join(FINAL).join("DONE").is_file()
    }

    /// Saves the final weights, then marks them complete.
    pub fn save_final_weights(&self, model: Gpt) -> Result<()> {
        let dir = self.root.join(FINAL);
        fs::create_dir_all(&dir)?;
        model
            .save_file(self.final_weights())
            .with_context(|| format!("saving the final weights to {}", dir.display()))?;
        fs::File::open(self.final_weights())?.sync_all()?;
        let hashes = checkpoint::FileHashes::of(&dir, &["model.bpk"])?;
        self.write_atomic(&format!("{FINAL}/DONE"), &hashes.to_json()?)
    }

    /// Deletes every result and checkpoint of a step after `step` (all of them for `None`), and
    /// any temporary file a killed process left.
    pub fn truncate_after(&self, step: Option<usize>) -> Result<()> {
        let folders = Table::ALL.map(Table::folder);
        for folder in folders.iter().chain([&CHECKPOINTS]) {
            let Ok(entries) = fs::read_dir(self.root.join(folder)) else {
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
}

/// Now in UTC as `20261125T074740Z`: how run and sweep directories begin their names.
pub fn utc_stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

/// Creates `parent/base` (its parent if need be), or `base-1`, `base-2`, ... when a directory of
/// that name exists already; returns its path and name.
pub fn create_new_dir(parent: &Path, base: &str) -> Result<(PathBuf, String), std::io::Error> {
    fs::create_dir_all(parent)?;
    for attempt in 0.. {
        let name = match attempt {
            0 => base.to_string(),
            n => format!("{base}-{n}"),
        };
        match fs::create_dir(parent.join(&name)) {
            Ok(()) => return Ok((parent.join(&name), name)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns once a name is free")
}

/// A run to continue (`run --resume`): its directory, locked, the config it started with and its
/// manifest.
pub struct Unfinished {
    pub dir: RunDir,
    pub lock: RunLock,
    pub config: Config,
    pub manifest: Manifest,
}

impl Unfinished {
    /// Opens the run in `run_dir`, refusing a directory that is not a run, a run in use, a
    /// config edited since the run started and a completed run, before anything is changed.
    pub fn open(run_dir: &Path) -> Result<Unfinished> {
        let not_a_run = |what: &str| InputError::File {
            file: run_dir.display().to_string(),
            message: format!("not a densitrace run directory ({what})"),
        };
        let mut dir = RunDir::at(run_dir.to_path_buf());
        let config_path = dir.path(CONFIG);
        if !config_path.is_file() || !dir.path(MANIFEST).is_file() {
            return Err(not_a_run("no config.yaml or manifest.json").into());
        }
        let lock = dir.lock()?;
        let yaml =
            fs::read_to_string(&config_path).map_err(|_| not_a_run("config.yaml unreadable"))?;
        let config = Config::from_yaml(&yaml, &config_path.display().to_string(), &[])?;
        let manifest = dir.read_manifest()?;
        dir.run_id = manifest.run_id.clone();
        if manifest.config_hash != config_hash(&yaml) {
            return Err(InputError::File {
                file: config_path.display().to_string(),
                message: "was edited after the run started; a resumed run must use the config \
                          it started with (start a new run instead)"
                    .into(),
            }
            .into());
        }
        if manifest.status == RunStatus::Completed {
            return Err(InputError::Other(format!(
                "{} is a completed run: there is nothing to resume",
                run_dir.display()
            ))
            .into());
        }
        Ok(Unfinished {
            dir,
            lock,
            config,
            manifest,
        })
    }
}

/// The git revision of the working directory, if it is a repository, for the manifest.
pub fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Writes `bytes` to `path` through `path.tmp`, fsynced before and after the rename: every file
/// the project writes, in a run directory (`RunDir::write_atomic`) or not (a sweep's, a report's).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("a file path has a parent")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let mut file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// What later commands (`dump`, `probe`) need of a finished run: its config, its stored probe
/// sets, the model's vocabulary size and its weights.
pub struct FinishedRun {
    pub dir: RunDir,
    pub config: Config,
    pub probe_sets: Vec<ProbeSet>,
    pub vocab_size: usize,
    data_fingerprint: String,
}

impl FinishedRun {
    pub fn open(run_dir: &Path) -> Result<FinishedRun> {
        let config_path = run_dir.join(CONFIG);
        if !config_path.is_file() {
            return Err(InputError::File {
                file: run_dir.display().to_string(),
                message: "not a run directory (no config.yaml)".into(),
            }
            .into());
        }
        let mut dir = RunDir::at(run_dir.to_path_buf());
        if !dir.has_final_weights() {
            return Err(InputError::File {
                file: dir.final_weights().display().to_string(),
                message: "the run has no complete final weights".into(),
            }
            .into());
        }
        let config = Config::load(&config_path, &[])?;
        let manifest = dir.read_manifest()?;
        let probe_sets = dir.load_probes(&manifest.probes_hash)?;
        dir.run_id = manifest.run_id;
        Ok(FinishedRun {
            dir,
            config,
            probe_sets,
            vocab_size: manifest.vocab_size,
            data_fingerprint: manifest.data_fingerprint,
        })
    }

    /// The run's data, re-read with its saved tokenizer and checked against its fingerprint.
    pub fn reload_dataset(&self, config: &Config) -> Result<Dataset, InputError> {
        self.dir.reload_dataset(config, &self.data_fingerprint)
    }

    /// The final weights, on `device`.
    pub fn model(&self, device: &burn::prelude::Device) -> Result<Gpt> {
        self.load(&self.dir.final_weights(), device)
    }

    /// The weights after `step`: the final ones for the last step, else a complete checkpoint's.
    pub fn model_at(&self, step: usize, device: &burn::prelude::Device) -> Result<Gpt> {
        if step == self.config.train.steps {
            return self.model(device);
        }
        self.load(&checkpoint::model_path(&self.dir.root, step), device)
    }

    /// The steps with weights to measure: every complete, healthy checkpoint, and the last step.
    pub fn steps_with_weights(&self) -> Result<Vec<usize>> {
        let mut steps: Vec<usize> = checkpoint::list(&self.dir.root)?
            .into_iter()
            .filter(|s| s.diverged_at.is_none())
            .map(|s| s.step)
            .collect();
        steps.push(self.config.train.steps);
        steps.sort_unstable();
        steps.dedup();
        Ok(steps)
    }

    /// Loads weights after checking them against the content hashes their folder's DONE
    /// records (a mismatch is an error naming the file: exit 1).
    fn load(&self, path: &Path, device: &burn::prelude::Device) -> Result<Gpt> {
        if let Some(dir) = path.parent() {
            checkpoint::verify(dir)?;
        }
        self.config
            .model
            .init(self.vocab_size, device)
            .try_load_file(path)
            .with_context(|| format!("loading {}", path.display()))
    }
}

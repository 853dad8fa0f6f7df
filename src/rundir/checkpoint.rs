//! Checkpoints: everything a run needs to continue exactly where it was.
//!
//! ```text
//! checkpoints/step-000500/
//!   model.bpk        the weights (Burn's burnpack)
//!   optimizer.bpk    AdamW's moments, per parameter
//!   state.json       step, wall time, whether the run diverged there
//!   DONE             written last
//! ```
//! A checkpoint is written into `step-000500.tmp/` and renamed into place, so a directory named
//! `step-NNNNNN` is always complete; DONE is checked anyway. The rest of the state needs no
//! saving: the learning rate is a function of the step, the data order is replayed from the seed
//! (the batches before the step are drawn and dropped), and Burn's RNG is reseeded from
//! (seed, step) before every step.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};

use super::{CHECKPOINTS, step_folder};
use crate::config::CheckpointConfig;
use crate::model::Gpt;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointState {
    pub step: usize,
    /// Seconds since the run started, so a resumed run's wall times continue.
    pub wall_time: f64,
    /// Set when the loss went non-finite at `diverged_at`; resume skips such checkpoints.
    pub diverged_at: Option<usize>,
}

/// The weights file of the checkpoint at `step`.
pub fn model_path(run_dir: &Path, step: usize) -> PathBuf {
    run_dir
        .join(CHECKPOINTS)
        .join(step_folder(step))
        .join("model.bpk")
}

/// Writes a complete checkpoint under `checkpoints/`.
pub fn write(
    run_dir: &Path,
    model: &Gpt,
    optimizer: &ModuleOptimizer,
    state: &CheckpointState,
) -> Result<PathBuf> {
    let root = run_dir.join(CHECKPOINTS);
    let final_dir = root.join(step_folder(state.step));
    let tmp = root.join(format!("{}.tmp", step_folder(state.step)));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    model
        .clone()
        .save_file(tmp.join("model.bpk"))
        .context("saving the checkpoint's weights")?;
    optimizer
        .save(tmp.join("optimizer.bpk"))
        .context("saving the checkpoint's optimizer state")?;
    fs::write(tmp.join("state.json"), serde_json::to_vec_pretty(state)?)?;
    fs::write(tmp.join("DONE"), b"")?;
    for name in ["model.bpk", "optimizer.bpk", "state.json", "DONE"] {
        fs::File::open(tmp.join(name))?.sync_all()?;
    }
    if final_dir.exists() {
        // Rewritten (a diverged run's last checkpoint can land on a scheduled one).
        fs::remove_dir_all(&final_dir)?;
    }
    fs::rename(&tmp, &final_dir)?;
    fs::File::open(&root)?.sync_all()?;
    Ok(final_dir)
}

/// Every complete checkpoint, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<CheckpointState>> {
    let root = run_dir.join(CHECKPOINTS);
    let mut found = Vec::new();
    if !root.is_dir() {
        return Ok(found);
    }
    for entry in fs::read_dir(&root)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with("step-") || name.ends_with(".tmp") || !path.join("DONE").is_file() {
            continue;
        }
        let state: CheckpointState = serde_json::from_slice(&fs::read(path.join("state.json"))?)
            .with_context(|| format!("reading {}", path.join("state.json").display()))?;
        found.push(state);
    }
    found.sort_by_key(|s| s.step);
    Ok(found)
}

/// Deletes the checkpoints the config does not keep: all but the newest `keep_last`, the major
/// steps, and the newest non-diverged one (which `--resume` needs).
pub fn prune(run_dir: &Path, config: &CheckpointConfig) -> Result<()> {
    let all = list(run_dir)?;
    let newest_healthy = all
        .iter()
        .rev()
        .find(|s| s.diverged_at.is_none())
        .map(|s| s.step);
    let keep_from = all.len().saturating_sub(config.keep_last);
    for (i, state) in all.iter().enumerate() {
        let keep = i >= keep_from
            || config.major.contains(&state.step)
            || Some(state.step) == newest_healthy;
        if !keep {
            fs::remove_dir_all(run_dir.join(CHECKPOINTS).join(step_folder(state.step)))?;
        }
    }
    Ok(())
}

/// Loads a checkpoint's weights into `model` and its moments into `optimizer`.
pub fn load(
    run_dir: &Path,
    step: usize,
    model: Gpt,
    optimizer: ModuleOptimizer,
) -> Result<(Gpt, ModuleOptimizer)> {
    let dir = run_dir.join(CHECKPOINTS).join(step_folder(step));
    let model = model
        .try_load_file(dir.join("model.bpk"))
        .with_context(|| format!("loading {}", dir.join("model.bpk").display()))?;
    let optimizer = optimizer
        .load(dir.join("optimizer.bpk"))
        .with_context(|| format!("loading {}", dir.join("optimizer.bpk").display()))?;
    Ok((model, optimizer))
}

//! Checkpoints: everything a run needs to continue exactly where it was.
//!
//! ```text
//! checkpoints/step-000500/
//!   model.bpk        the weights (Burn's burnpack)
//!   optimizer.bpk    AdamW's moments, per parameter
//!   state.json       step, wall time, whether the run diverged there
//!   DONE             written last: each file's content hash (`FileHashes`, JSON)
//! ```
//! Loading a checkpoint (or the final weights, whose `checkpoints/final/DONE` has the same form)
//! checks every file against the hash its DONE records and refuses one that changed. A DONE
//! written before hashes were recorded is empty: such a checkpoint still loads, unchecked.
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
use crate::rundir::staged::StagedDir;

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
    let staged = StagedDir::create(root.join(format!("{}.tmp", step_folder(state.step))))?;
    let tmp = staged.path();
    model
        .clone()
        .save_file(tmp.join("model.bpk"))
        .context("saving the checkpoint's weights")?;
    optimizer
        .save(tmp.join("optimizer.bpk"))
        .context("saving the checkpoint's optimizer state")?;
    fs::write(tmp.join("state.json"), serde_json::to_vec_pretty(state)?)?;
    let hashed = std::time::Instant::now();
    let hashes = FileHashes::of(tmp, &["model.bpk", "optimizer.bpk", "state.json"])?;
    tracing::debug!(
        "checkpoint {}: content hashes in {:.3} s",
        state.step,
        hashed.elapsed().as_secs_f64()
    );
    fs::write(tmp.join("DONE"), hashes.to_json()?)?;
    for name in ["model.bpk", "optimizer.bpk", "state.json", "DONE"] {
        fs::File::open(tmp.join(name))?.sync_all()?;
    }
    if final_dir.exists() {
        // Rewritten (a diverged run's last checkpoint can land on a scheduled one).
        fs::remove_dir_all(&final_dir)?;
    }
    staged.commit(&final_dir)?;
    fs::File::open(&root)?.sync_all()?;
    Ok(final_dir)
}

/// The name of the content hash a DONE marker records.
pub const HASH_NAME: &str = "dt64";

/// What a DONE marker holds: the content hash (`content_hash`, as 16 hex digits) of each file of
/// its folder, by name.
#[derive(Debug, Serialize, Deserialize)]
pub struct FileHashes {
    pub hash: String,
    pub files: std::collections::BTreeMap<String, String>,
}

impl FileHashes {
    /// The hashes of `names` in `dir`.
    pub fn of(dir: &Path, names: &[&str]) -> Result<FileHashes> {
        let mut files = std::collections::BTreeMap::new();
        for name in names {
            files.insert(
                name.to_string(),
                format!("{:016x}", file_hash(&dir.join(name))?),
            );
        }
        Ok(FileHashes {
            hash: HASH_NAME.into(),
            files,
        })
    }

    pub fn to_json(&self) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec_pretty(self)?)
    }
}

/// Checks every file `dir/DONE` records against its content hash. A DONE without hashes (written
/// before they were recorded) passes unchecked; a mismatch is an error naming the file.
pub fn verify(dir: &Path) -> Result<()> {
    let done = dir.join("DONE");
    let text = fs::read(&done).with_context(|| format!("reading {}", done.display()))?;
    if text.iter().all(u8::is_ascii_whitespace) {
        tracing::info!(
            "{}: written before checkpoints recorded content hashes; loaded unchecked",
            dir.display()
        );
        return Ok(());
    }
    let recorded: FileHashes = serde_json::from_slice(&text)
        .with_context(|| format!("{}: not a checkpoint's DONE marker", done.display()))?;
    if recorded.hash != HASH_NAME {
        anyhow::bail!(
            "{}: records {} hashes; this densitrace knows only {HASH_NAME}",
            done.display(),
            recorded.hash
        );
    }
    for (name, hash) in &recorded.files {
        let path = dir.join(name);
        let actual = format!("{:016x}", file_hash(&path)?);
        if &actual != hash {
            anyhow::bail!(
                "{}: corrupted: its content hash is {actual}, {} records {hash} from when it was \
                 written; restore the file (or resume from an earlier checkpoint)",
                path.display(),
                done.display()
            );
        }
    }
    Ok(())
}

/// `content_hash` of a file's bytes, read in 1 MiB blocks.
pub fn file_hash(path: &Path) -> Result<u64> {
    use std::io::Read;
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

/// A fast non-cryptographic 64-bit content hash (`dt64`): four xxHash64-style lanes over 32-byte
/// stripes, the tail and the length folded in, and a splitmix64 finish. It detects corruption,
/// not tampering.
pub fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = Hasher::default();
    h.update(bytes);
    h.finish()
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;

/// The streaming form of `content_hash`.
pub struct Hasher {
    lanes: [u64; 4],
    len: u64,
    tail: Vec<u8>,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher {
            lanes: [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)],
            len: 0,
            tail: Vec::with_capacity(32),
        }
    }
}

impl Hasher {
    fn stripe(lanes: &mut [u64; 4], stripe: &[u8]) {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let w = u64::from_le_bytes(stripe[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            *lane = lane
                .wrapping_add(w.wrapping_mul(P2))
                .rotate_left(31)
                .wrapping_mul(P1);
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.tail.is_empty() {
            let take = (32 - self.tail.len()).min(data.len());
            self.tail.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.tail.len() < 32 {
                return;
            }
            let tail = std::mem::take(&mut self.tail);
            Self::stripe(&mut self.lanes, &tail);
            self.tail = tail;
            self.tail.clear();
        }
        let mut stripes = data.chunks_exact(32);
        for s in &mut stripes {
            Self::stripe(&mut self.lanes, s);
        }
        self.tail.extend_from_slice(stripes.remainder());
    }

    pub fn finish(&self) -> u64 {
        let [a, b, c, d] = self.lanes;
        let mut h = a
            .rotate_left(1)
            .wrapping_add(b.rotate_left(7))
            .wrapping_add(c.rotate_left(12))
            .wrapping_add(d.rotate_left(18))
            ^ self.len.wrapping_mul(P1);
        for &byte in &self.tail {
            h = (h ^ byte as u64).wrapping_mul(0x0000_0100_0000_01B3);
        }
        // splitmix64's finish.
        h ^= h >> 30;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^ (h >> 31)
    }
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
            // Renamed out of the `step-*` names first, so a kill during the deletion leaves no
            // half-deleted checkpoint that `list` would skip (no DONE) and never delete.
            let root = run_dir.join(CHECKPOINTS);
            let doomed = root.join(format!("{}{DELETING}", step_folder(state.step)));
            fs::rename(root.join(step_folder(state.step)), &doomed)?;
            fs::remove_dir_all(&doomed)?;
        }
    }
    // What an earlier kill left mid-deletion.
    let root = run_dir.join(CHECKPOINTS);
    if !root.is_dir() {
        return Ok(());
    }
    for entry in fs::read_dir(&root)? {
        let path = entry?.path();
        if path.to_string_lossy().ends_with(DELETING) {
            fs::remove_dir_all(&path)?;
        }
    }
    Ok(())
}

/// The suffix of a checkpoint folder being deleted (it ends in `.tmp`, which `list` skips).
const DELETING: &str = ".deleting.tmp";

/// Loads a checkpoint's weights into `model` and its moments into `optimizer`.
pub fn load(
    run_dir: &Path,
    step: usize,
    model: Gpt,
    optimizer: ModuleOptimizer,
) -> Result<(Gpt, ModuleOptimizer)> {
    let dir = run_dir.join(CHECKPOINTS).join(step_folder(step));
    verify(&dir)?;
    let model = model
        .try_load_file(dir.join("model.bpk"))
        .with_context(|| format!("loading {}", dir.join("model.bpk").display()))?;
    let optimizer = optimizer
        .load(dir.join("optimizer.bpk"))
        .with_context(|| format!("loading {}", dir.join("optimizer.bpk").display()))?;
    Ok((model, optimizer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_hash_streams_and_sees_any_change() {
        let data: Vec<u8> = (0..100_003u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let whole = content_hash(&data);
        for split in [0, 1, 31, 32, 33, 4096, 99_999] {
            let mut h = Hasher::default();
            h.update(&data[..split]);
            h.update(&data[split..]);
            assert_eq!(h.finish(), whole, "split at {split}");
        }
        let mut changed = data.clone();
        changed[50_000] ^= 1;
        assert_ne!(content_hash(&changed), whole);
        assert_ne!(content_hash(&data[..data.len() - 1]), whole);
        assert_ne!(content_hash(b""), content_hash(&[0]));
    }

    /// The cost of hashing against the cost of writing: `cargo test --release --lib
    /// checksum_cost -- --nocapture --ignored` prints both for 256 MiB.
    #[test]
    #[ignore]
    fn checksum_cost() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..256u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let path = dir.path().join("w.bin");
        let t = std::time::Instant::now();
        {
            use std::io::Write;
            let mut f = fs::File::create(&path).unwrap();
            f.write_all(&data).unwrap();
            f.sync_all().unwrap();
        }
        let write = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let h = file_hash(&path).unwrap();
        let hash = t.elapsed().as_secs_f64();
        eprintln!(
            "256 MiB: write+fsync {write:.3} s, hash (read back) {hash:.3} s ({:.2} GB/s), {:.0}% of the write; {h:x}",
            0.268435456 / hash,
            100.0 * hash / write
        );
    }
}

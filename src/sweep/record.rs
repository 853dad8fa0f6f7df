//! `sweep.json` and the sweep directory: the cells' states, read and changed only under an OS
//! lock and reconciled with the runs; the per-sweep and per-cell locks; the status table.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::{Exit, InputError};
use crate::seed::fingerprint;

use super::plan::plan;
use crate::rundir::{self, RunStatus, write_atomic};

/// A cell's state in `sweep.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellState {
    /// Not started yet.
    Pending,
    /// Started by a runner that has not recorded its end (or was killed).
    Running,
    /// Its run completed.
    Done,
    /// Its run exited with an error (or could not start); `sweep resume` runs it again.
    Failed,
    /// Its run's loss went non-finite (exit 3): a result, not retried.
    Diverged,
    /// Stopped by SIGINT/SIGTERM after a checkpoint (exit 130).
    Interrupted,
}

impl CellState {
    /// The state a cell's `densitrace run` exit code means (`run`'s documented codes).
    pub(super) fn from_exit(code: Option<i32>) -> CellState {
        match code.and_then(Exit::from_code) {
            Some(Exit::Success) => CellState::Done,
            Some(Exit::Diverged) => CellState::Diverged,
            Some(Exit::Interrupted) => CellState::Interrupted,
            Some(Exit::Failure | Exit::BadInput) | None => CellState::Failed,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            CellState::Pending => "pending",
            CellState::Running => "running",
            CellState::Done => "done",
            CellState::Failed => "failed",
            CellState::Diverged => "diverged",
            CellState::Interrupted => "interrupted",
        }
    }

    /// Whether `sweep resume` leaves the cell alone: it finished, or its loss diverged (a result).
    pub(super) fn is_final(self) -> bool {
        matches!(self, CellState::Done | CellState::Diverged)
    }
}

/// One cell of `sweep.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// Its position in the grid's product (the first key outermost); `sweep cell` takes it.
    pub index: usize,
    /// `007-seed=3,model.activation=silu`: its config, run directory and log are named by it.
    pub name: String,
    /// The grid's overrides of this cell, as `key=value`.
    pub overrides: Vec<String>,
    /// Its run directory, relative to the sweep directory.
    pub dir: String,
    pub state: CellState,
    /// Its run's last exit code.
    pub exit_code: Option<i32>,
    /// Seconds its last attempt took.
    pub wall_seconds: Option<f64>,
}

/// What `sweep.json` holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct SweepRecord {
    /// The sweep file's `name`.
    pub name: String,
    /// The sweep directory's name: its UTC creation time.
    pub sweep_id: String,
    /// The fingerprint of sweep.yaml's text: `sweep resume` refuses a sweep whose file was edited.
    pub sweep_hash: String,
    /// The base config as given, and the overrides every cell shares (the file's `set`, then
    /// the command line's `--set`).
    pub config: String,
    pub set: Vec<String>,
    pub cells: Vec<Cell>,
}

/// The sweep file as given.
pub const SWEEP_YAML: &str = "sweep.yaml";
/// The cells and their states.
pub const SWEEP_JSON: &str = "sweep.json";

/// An existing sweep directory.
pub struct SweepDir {
    /// `<out>/<name>/<sweep_id>/`.
    pub root: PathBuf,
}

impl SweepDir {
    /// Opens a sweep to read its state (`sweep status`), refusing a directory that is not one.
    pub fn open_to_read(root: &Path) -> Result<(SweepDir, SweepRecord), InputError> {
        let dir = SweepDir {
            root: root.to_path_buf(),
        };
        let record = dir
            .read()
            .map_err(|e| bad_file(root, format!("not a densitrace sweep directory ({e:#})")))?;
        Ok((dir, record))
    }

    /// Opens a sweep to run its cells, refusing a directory that is not one or whose sweep.yaml
    /// was edited since the sweep was created.
    pub fn open(root: &Path) -> Result<SweepDir, InputError> {
        let (dir, record) = Self::open_to_read(root)?;
        let yaml = root.join(SWEEP_YAML);
        let text = fs::read(&yaml).map_err(|e| bad_file(&yaml, format!("cannot read: {e}")))?;
        if fingerprint(&text) != record.sweep_hash {
            return Err(bad_file(
                &yaml,
                "was edited after the sweep started; a resumed sweep runs the cells it was \
                 created with (start a new sweep instead)"
                    .into(),
            ));
        }
        Ok(dir)
    }

    /// How many cells the sweep has.
    pub fn cell_count(&self) -> Result<usize> {
        Ok(self.read()?.cells.len())
    }

    /// `sweep.json`, each cell reconciled with its run (`reconcile`).
    pub(super) fn read(&self) -> Result<SweepRecord> {
        let mut record = self.read_recorded()?;
        for cell in &mut record.cells {
            self.reconcile(cell);
        }
        Ok(record)
    }

    fn read_recorded(&self) -> Result<SweepRecord> {
        let path = self.root.join(SWEEP_JSON);
        let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Makes `cell`'s state agree with its run: a run whose manifest says completed is `done`
    /// (and diverged `diverged`) whatever a process recorded, and a `running` cell that no live
    /// process holds (`cell_is_held`) is `interrupted`.
    fn reconcile(&self, cell: &mut Cell) {
        let status = rundir::RunDir::at(self.root.join(&cell.dir))
            .read_manifest()
            .ok()
            .map(|m| m.status);
        match status {
            Some(RunStatus::Completed) if cell.state != CellState::Done => {
                cell.state = CellState::Done;
                cell.exit_code = Some(Exit::Success.code().into());
            }
            Some(RunStatus::Diverged) if cell.state != CellState::Diverged => {
                cell.state = CellState::Diverged;
                cell.exit_code = Some(Exit::Diverged.code().into());
            }
            _ if cell.state == CellState::Running && !self.cell_is_held(cell) => {
                cell.state = CellState::Interrupted;
            }
            _ => {}
        }
    }

    fn cell_lock_path(&self, cell: &Cell) -> PathBuf {
        self.root.join("locks").join(format!("{}.lock", cell.name))
    }

    /// Whether a live process holds `cell`'s lock (is running it).
    fn cell_is_held(&self, cell: &Cell) -> bool {
        let Ok(file) = fs::File::open(self.cell_lock_path(cell)) else {
            return false;
        };
        // A shared probe: it conflicts only with a holder (exclusive), and is let go at once.
        match file.try_lock_shared() {
            Ok(()) => false,
            Err(fs::TryLockError::WouldBlock) => true,
            Err(fs::TryLockError::Error(_)) => false,
        }
    }

    /// Takes `cell`'s lock, or says which process-wide state keeps it: another live process is
    /// running the cell (exit 2). Retried briefly, so a reader's momentary probe is no conflict.
    pub(super) fn lock_cell(&self, cell: &Cell) -> Result<fs::File, InputError> {
        let path = self.cell_lock_path(cell);
        let file = fs::create_dir_all(self.root.join("locks"))
            .and_then(|()| {
                fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
            })
            .map_err(|e| bad_file(&path, format!("cannot open the cell's lock: {e}")))?;
        for attempt in 0.. {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(fs::TryLockError::WouldBlock) if attempt < 10 => {
                    std::thread::sleep(Duration::from_millis(30))
                }
                Err(fs::TryLockError::WouldBlock) => break,
                Err(fs::TryLockError::Error(e)) => {
                    return Err(bad_file(&path, format!("cannot lock: {e}")));
                }
            }
        }
        Err(InputError::Other(format!(
            "cell {} ({}) is being run by another live densitrace process; wait for it (see \
             densitrace sweep status {})",
            cell.index,
            cell.name,
            self.root.display()
        )))
    }

    /// Takes the sweep's lock: exclusively for a process that runs the whole sweep, shared for
    /// a `sweep cell` task. Refused (exit 2) when a process holds it in a conflicting way.
    pub fn lock_sweep(&self, exclusive: bool) -> Result<SweepLock, InputError> {
        let path = self.root.join("sweep.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| bad_file(&path, format!("cannot open the sweep's lock: {e}")))?;
        let taken = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match taken {
            Ok(()) => Ok(SweepLock(file)),
            Err(fs::TryLockError::WouldBlock) => Err(InputError::Other(format!(
                "{} is being run by another live densitrace process ({}); wait for it to end \
                 (densitrace sweep status shows its cells)",
                self.root.display(),
                if exclusive {
                    "a local sweep, a sweep resume or sweep cell tasks"
                } else {
                    "a local sweep or a sweep resume"
                }
            ))),
            Err(fs::TryLockError::Error(e)) => Err(bad_file(&path, format!("cannot lock: {e}"))),
        }
    }

    /// Reads `sweep.json`, changes it with `f` and writes it back, all under the sweep's lock.
    pub(super) fn update<T>(&self, f: impl FnOnce(&mut SweepRecord) -> T) -> Result<T> {
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("sweep.json.lock"))?;
        lock.lock()?;
        let mut record = self.read_recorded()?;
        let out = f(&mut record);
        for cell in &mut record.cells {
            self.reconcile(cell);
        }
        write_atomic(
            &self.root.join(SWEEP_JSON),
            serde_json::to_string_pretty(&record)?.as_bytes(),
        )?;
        Ok(out)
    }

    pub(super) fn config_path(&self, cell: &Cell) -> PathBuf {
        self.root
            .join("configs")
            .join(format!("{}.yaml", cell.name))
    }

    pub(super) fn log_path(&self, cell: &Cell) -> PathBuf {
        self.root.join("logs").join(format!("{}.log", cell.name))
    }

    pub(super) fn set_state(
        &self,
        index: usize,
        state: CellState,
        code: Option<i32>,
        wall: Option<f64>,
    ) {
        let updated = self.update(|r| {
            let cell = &mut r.cells[index];
            cell.state = state;
            cell.exit_code = code;
            if wall.is_some() {
                cell.wall_seconds = wall;
            }
        });
        if let Err(e) = updated {
            tracing::error!(
                "cannot update {}: {e:#}",
                self.root.join(SWEEP_JSON).display()
            );
        }
    }
}

/// Held while a process runs the sweep (`SweepDir::lock_sweep`); an OS lock, let go on exit.
pub struct SweepLock(#[allow(dead_code)] fs::File);

/// Creates a sweep directory for `file` under `out` (everything validated first).
pub fn create(file: &Path, cli_set: &[String], out: &Path) -> Result<SweepDir> {
    let mut plan = plan(file, cli_set)?;
    let parent = out.join(&plan.record.name);
    let (root, sweep_id) = rundir::create_new_dir(&parent, &rundir::utc_stamp()).map_err(|e| {
        InputError::Other(format!(
            "cannot create a sweep under {}: {e}",
            parent.display()
        ))
    })?;
    plan.record.sweep_id = sweep_id;
    let dir = SweepDir { root };
    write_atomic(&dir.root.join(SWEEP_YAML), plan.file_text.as_bytes())?;
    for (cell, config) in plan.record.cells.iter().zip(&plan.configs) {
        write_atomic(&dir.config_path(cell), config.to_yaml().as_bytes())?;
    }
    fs::create_dir_all(dir.root.join("cells"))?;
    fs::create_dir_all(dir.root.join("logs"))?;
    write_atomic(
        &dir.root.join(SWEEP_JSON),
        serde_json::to_string_pretty(&plan.record)?.as_bytes(),
    )?;
    println!(
        "sweep {}: {} cells in {}",
        plan.record.name,
        plan.record.cells.len(),
        dir.root.display()
    );
    Ok(dir)
}

pub(super) fn counts(record: &SweepRecord) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for cell in &record.cells {
        *counts.entry(cell.state.name()).or_insert(0) += 1;
    }
    counts
}

/// The `sweep status` table.
pub fn status_table(dir: &SweepDir) -> Result<String> {
    let record = dir.read()?;
    let width = record.cells.iter().map(|c| c.name.len()).max().unwrap_or(4);
    let mut out = format!(
        "{:<width$}  {:<11} {:>5} {:>9}\n",
        "cell", "state", "exit", "seconds"
    );
    for c in &record.cells {
        out.push_str(&format!(
            "{:<width$}  {:<11} {:>5} {:>9}\n",
            c.name,
            c.state.name(),
            c.exit_code.map_or("-".into(), |e| e.to_string()),
            c.wall_seconds.map_or("-".into(), |w| format!("{w:.1}")),
        ));
    }
    let counts: Vec<String> = counts(&record)
        .into_iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    out.push_str(&format!(
        "{} cells: {}\n",
        record.cells.len(),
        counts.join(", ")
    ));
    Ok(out)
}

pub(super) fn bad_file(file: &Path, message: String) -> InputError {
    InputError::File {
        file: file.display().to_string(),
        message,
    }
}

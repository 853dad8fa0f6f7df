//! `densitrace sweep`: a grid of seeds and settings from one YAML file, each cell an ordinary run.
//!
//! ```yaml
//! name: activation-seeds
//! config: ../quickstart.yaml        # relative to the sweep file
//! set: {train.steps: 2000}          # optional overrides applied to every cell
//! grid:                             # cartesian product, keys exactly as for --set
//!   seed: [1, 2, 3, 4, 5]
//!   model.activation: [relu, gelu, silu]
//! ```
//!
//! ```text
//! <out>/<name>/<sweep_id>/
//!   sweep.yaml                       the sweep file as given
//!   sweep.json                       the cells: overrides, run directory, state, exit code, time
//!   configs/007-seed=3,model.activation=silu.yaml    each cell's resolved config
//!   cells/007-seed=3,model.activation=silu/          each cell's run directory (as `run` writes)
//!   logs/007-seed=3,model.activation=silu.log        each cell's stdout and stderr, appended
//!   sweep.json.lock                  the lock every change of sweep.json is made under
//!   sweep.lock                       held while a process runs the sweep: exclusively by a
//!                                    local sweep (or --resume), shared by each `--cell` task
//!   locks/007-....lock               held by the process that runs (supervises) that cell
//!   slurm.sbatch                     with --slurm: the job array, one task a cell
//! ```
//!
//! Every cell's config is resolved and validated before anything is created. Each cell runs as a
//! child `densitrace run` process, so a cell that fails or diverges stops only itself, and a
//! killed sweep is continued cell by cell with the runs' own `--resume`. `sweep.json` is only
//! changed under an OS lock (`sweep.json.lock`), so cells finishing at once, in this process or in
//! Slurm tasks, never lose each other's state.
//!
//! Two processes never run one sweep or one cell at once: a local sweep holds `sweep.lock`
//! exclusively, so a second `--resume` (or a `--cell` task) is refused with exit 2; each `--cell`
//! task holds it shared and its cell's lock exclusively, so a second `--cell` on a cell being run
//! is refused with exit 2 and changes nothing. The locks are OS locks, released when their holder
//! dies. Every read of `sweep.json` reconciles each cell with its run: a run whose manifest says
//! completed (or diverged) is `done` (`diverged`) whatever was recorded, and a `running` cell whose
//! lock nobody holds (its process was killed) is `interrupted`.

use std::collections::BTreeMap;
use std::fs;
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::config::{self, Config};
use crate::error::InputError;
use crate::rundir::{self, RunDir, write_atomic};
use crate::seed::fingerprint;

/// A sweep file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    /// Sweeps land in `<out>/<name>/<sweep_id>/`.
    name: String,
    /// The base config, relative to the sweep file.
    config: PathBuf,
    /// Overrides applied to every cell.
    #[serde(default)]
    set: Ordered,
    /// Each key's list of values; the cells are their cartesian product, the first key outermost.
    grid: Ordered,
}

/// A YAML mapping in the order it was written (the grid's order names and numbers the cells).
#[derive(Debug, Default)]
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of config keys (as for --set) to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(Entries)
    }
}

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
    /// Its run exited with an error (or could not start); `--resume` runs it again.
    Failed,
    /// Its run's loss went non-finite (exit 3): a result, not retried.
    Diverged,
    /// Stopped by SIGINT/SIGTERM after a checkpoint (exit 130).
    Interrupted,
}

impl CellState {
    /// The state a cell's `densitrace run` exit code means (`run`'s documented codes).
    fn from_exit(code: Option<i32>) -> CellState {
        match code {
            Some(0) => CellState::Done,
            Some(3) => CellState::Diverged,
            Some(130) => CellState::Interrupted,
            _ => CellState::Failed,
        }
    }

    fn name(self) -> &'static str {
        match self {
            CellState::Pending => "pending",
            CellState::Running => "running",
            CellState::Done => "done",
            CellState::Failed => "failed",
            CellState::Diverged => "diverged",
            CellState::Interrupted => "interrupted",
        }
    }

    /// Whether `--resume` leaves the cell alone: it finished, or its loss diverged (a result).
    fn is_final(self) -> bool {
        matches!(self, CellState::Done | CellState::Diverged)
    }
}

/// One cell of `sweep.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// Its position in the grid's product (the first key outermost); `--cell` takes it.
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
    /// The fingerprint of sweep.yaml's text: `--resume` refuses a sweep whose file was edited.
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

/// `key=value` with the value as YAML (JSON is YAML), as `--set` takes it.
fn override_of(key: &str, value: &Value) -> String {
    format!("{key}={value}")
}

/// An override of `sweep.json` (`model.activation="silu"`) as a label: `model.activation=silu`.
pub fn override_label(spec: &str) -> String {
    match spec.split_once('=') {
        Some((key, value)) => match serde_json::from_str::<Value>(value) {
            Ok(value) => format!("{key}={}", shown(&value)),
            Err(_) => spec.to_string(),
        },
        None => spec.to_string(),
    }
}

/// A value as a cell's name (and `report`'s cell label) shows it: strings bare, everything else
/// as JSON.
pub fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `007-seed=3,model.activation=silu`, with anything but letters, digits and `-_.=,` replaced by
/// `_` so it is a safe file name.
fn cell_name(index: usize, width: usize, grid: &[(String, Value)]) -> String {
    let label: Vec<String> = grid
        .iter()
        .map(|(k, v)| format!("{k}={}", shown(v)))
        .collect();
    let label: String = label
        .join(",")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.=,".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{index:0width$}-{label}")
}

/// The cartesian product of the grid, the first key outermost.
fn product(grid: &[(String, Vec<Value>)]) -> Vec<Vec<(String, Value)>> {
    let mut cells: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for (key, values) in grid {
        cells = cells
            .into_iter()
            .flat_map(|cell| {
                values.iter().map(move |v| {
                    let mut c = cell.clone();
                    c.push((key.clone(), v.clone()));
                    c
                })
            })
            .collect()
    }
    cells
}

/// A new sweep, resolved and validated, not yet written.
struct Plan {
    file_text: String,
    record: SweepRecord,
    /// Each cell's resolved config.
    configs: Vec<Config>,
}

fn bad_file(file: &Path, message: String) -> InputError {
    InputError::File {
        file: file.display().to_string(),
        message,
    }
}

/// Reads and checks a sweep file and every cell's config; creates nothing.
fn plan(file: &Path, cli_set: &[String]) -> Result<Plan, InputError> {
    let text = fs::read_to_string(file).map_err(|e| bad_file(file, format!("cannot read: {e}")))?;
    let sweep: SweepFile =
        serde_saphyr::from_str(&text).map_err(|e| bad_file(file, format!("not a sweep: {e}")))?;
    if !config::is_folder_name(&sweep.name) {
        return Err(bad_file(
            file,
            format!(
                "name: {:?} must be non-empty and use only letters, digits, '-', '_' and '.'",
                sweep.name
            ),
        ));
    }
    let mut grid: Vec<(String, Vec<Value>)> = Vec::new();
    for (key, values) in sweep.grid.0 {
        let values = match values {
            Value::Array(v) if !v.is_empty() => v,
            Value::Array(_) => {
                return Err(bad_file(file, format!("grid.{key}: the list is empty")));
            }
            other => {
                return Err(bad_file(
                    file,
                    format!("grid.{key}: expected a list of values, got {other}"),
                ));
            }
        };
        if sweep.set.0.iter().any(|(k, _)| *k == key) {
            return Err(bad_file(
                file,
                format!("grid.{key}: also in `set`; a key is either swept or fixed"),
            ));
        }
        grid.push((key, values));
    }
    if grid.is_empty() {
        return Err(bad_file(file, "grid: needs at least one key".into()));
    }
    let base = file.parent().unwrap_or(Path::new(".")).join(&sweep.config);
    let base = fs::canonicalize(&base)
        .map_err(|e| bad_file(file, format!("config: {}: {e}", base.display())))?;
    let base_text =
        fs::read_to_string(&base).map_err(|e| bad_file(&base, format!("cannot read: {e}")))?;
    let origin = base.display().to_string();
    let mut set: Vec<String> = sweep.set.0.iter().map(|(k, v)| override_of(k, v)).collect();
    set.extend(cli_set.iter().cloned());

    let cells = product(&grid);
    let width = (cells.len() - 1).to_string().len().max(3);
    let cwd = std::env::current_dir().map_err(|e| InputError::Other(e.to_string()))?;
    let mut record_cells = Vec::new();
    let mut configs = Vec::new();
    for (index, values) in cells.iter().enumerate() {
        let name = cell_name(index, width, values);
        let overrides: Vec<String> = values.iter().map(|(k, v)| override_of(k, v)).collect();
        let all: Vec<String> = set.iter().chain(&overrides).cloned().collect();
        let mut config = Config::from_yaml(&base_text, &origin, &all).map_err(|e| {
            bad_file(
                file,
                format!("cell {name} (grid {}): {e}", overrides.join(" ")),
            )
        })?;
        config.absolutize_paths(&cwd);
        let yaml = config.to_yaml();
        if let Some(same) = configs.iter().position(|c: &Config| c.to_yaml() == yaml) {
            let first: &Cell = &record_cells[same];
            return Err(bad_file(
                file,
                format!(
                    "cells {} and {name} resolve to the same config (is a grid value repeated?): \
                     a sweep's cells must differ, or the report would count one run twice",
                    first.name
                ),
            ));
        }
        configs.push(config);
        record_cells.push(Cell {
            index,
            dir: format!("cells/{name}"),
            name,
            overrides,
            state: CellState::Pending,
            exit_code: None,
            wall_seconds: None,
        });
    }
    Ok(Plan {
        record: SweepRecord {
            name: sweep.name,
            sweep_id: String::new(),
            sweep_hash: fingerprint(text.as_bytes()),
            config: base.display().to_string(),
            set,
            cells: record_cells,
        },
        file_text: text,
        configs,
    })
}

/// An existing sweep directory.
pub struct SweepDir {
    /// `<out>/<name>/<sweep_id>/`.
    pub root: PathBuf,
}

impl SweepDir {
    /// Opens a sweep to read its state (`--status`), refusing a directory that is not one.
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
    fn read(&self) -> Result<SweepRecord> {
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
        let status = rundir::read_manifest(&self.root.join(&cell.dir))
            .ok()
            .map(|m| m.status);
        match status.as_deref() {
            Some("completed") if cell.state != CellState::Done => {
                cell.state = CellState::Done;
                cell.exit_code = Some(0);
            }
            Some("diverged") if cell.state != CellState::Diverged => {
                cell.state = CellState::Diverged;
                cell.exit_code = Some(3);
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
    fn lock_cell(&self, cell: &Cell) -> Result<fs::File, InputError> {
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
             densitrace sweep --status {})",
            cell.index,
            cell.name,
            self.root.display()
        )))
    }

    /// Takes the sweep's lock: exclusively for a process that runs the whole sweep, shared for
    /// a `--cell` task. Refused (exit 2) when a process holds it in a conflicting way.
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
                 (densitrace sweep --status shows its cells)",
                self.root.display(),
                if exclusive {
                    "a local sweep, a --resume or --cell tasks"
                } else {
                    "a local sweep or a --resume"
                }
            ))),
            Err(fs::TryLockError::Error(e)) => Err(bad_file(&path, format!("cannot lock: {e}"))),
        }
    }

    /// Reads `sweep.json`, changes it with `f` and writes it back, all under the sweep's lock.
    fn update<T>(&self, f: impl FnOnce(&mut SweepRecord) -> T) -> Result<T> {
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

    fn config_path(&self, cell: &Cell) -> PathBuf {
        self.root
            .join("configs")
            .join(format!("{}.yaml", cell.name))
    }

    fn log_path(&self, cell: &Cell) -> PathBuf {
        self.root.join("logs").join(format!("{}.log", cell.name))
    }

    /// What to do for `cell` now, from its run directory: nothing if its run already ended
    /// (completed or diverged), `run --resume` if it holds a run that can continue, else a fresh
    /// run (after removing what a run killed before writing its manifest left, unless a live run
    /// holds it). A manifest that cannot be read is an error: nothing is deleted.
    fn next(&self, cell: &Cell) -> Result<Next> {
        let run_dir = self.root.join(&cell.dir);
        let dir = RunDir {
            root: run_dir.clone(),
            run_id: String::new(),
        };
        let mut command = Command::new(this_executable()?);
        // argv[0] as the user started it, not /proc/self/exe: the run's manifest records it.
        command.arg0(std::env::current_exe()?);
        // A cell's run treats a second SIGINT/SIGTERM as the first: a Ctrl-C on the terminal
        // reaches it and the sweep forwards SIGTERM too, and it must still checkpoint.
        command.env(SUPERVISED_ENV, "1");
        if dir.path(rundir::MANIFEST).exists() {
            let manifest = dir.read_manifest()?;
            match manifest.status.as_str() {
                "completed" => return Ok(Next::Ended(CellState::Done, 0)),
                "diverged" => return Ok(Next::Ended(CellState::Diverged, 3)),
                _ => command.arg("run").arg("--resume").arg(&run_dir),
            };
        } else {
            if run_dir.exists() {
                // Held by a live run that has not written its manifest yet: leave it alone.
                let lock = dir.lock()?;
                drop(lock);
                fs::remove_dir_all(&run_dir)?;
            }
            command
                .arg("run")
                .arg(self.config_path(cell))
                .arg("--run-dir")
                .arg(&run_dir);
        }
        Ok(Next::Run(command))
    }

    /// Starts `cell`'s run with its output appended to the cell's log (earlier attempts stay).
    fn start(&self, cell: &Cell) -> Result<Option<Child>> {
        match self.next(cell)? {
            Next::Ended(state, code) => {
                self.set_state(cell.index, state, Some(code), None);
                Ok(None)
            }
            Next::Run(mut command) => {
                let log = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.log_path(cell))?;
                let child = command
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .context("starting a cell's densitrace run")?;
                self.set_state(cell.index, CellState::Running, None, None);
                Ok(Some(child))
            }
        }
    }

    fn set_state(&self, index: usize, state: CellState, code: Option<i32>, wall: Option<f64>) {
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

/// Set in a cell's environment: its run then stops after a checkpoint however many signals come.
pub const SUPERVISED_ENV: &str = "DENSITRACE_SWEEP_CELL";

/// What a cell needs next.
enum Next {
    /// Its run already ended this way (with this exit code); nothing to run.
    Ended(CellState, i32),
    Run(Command),
}

/// How a sweep command ended.
pub struct SweepOutcome {
    /// The sweep directory.
    pub dir: PathBuf,
    /// Cells per state.
    pub counts: BTreeMap<&'static str, usize>,
    /// Whether a signal stopped it.
    pub interrupted: bool,
}

impl SweepOutcome {
    /// 0 when every cell is done, 130 when stopped by a signal, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.interrupted {
            130
        } else if self.counts.keys().all(|s| *s == "done") {
            0
        } else {
            1
        }
    }
}

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

/// Cells at once when `--jobs` is not given: half the cores, but at least 2 where there are 2.
/// One run's CPU backend spreads over every core yet keeps them only partly busy: on 2 cores, 2
/// cells at once finish a sweep 1.74x faster than 1 (BENCHMARKS.md). On more cores, half of them
/// keeps the runs' thread pools from fighting.
pub fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).max(cores.min(2))
}

/// Runs every cell that is not done (or diverged), `jobs` at a time, until all have run or `stop`
/// is set (then the running cells are sent SIGTERM: they checkpoint and exit 130).
pub fn run_local(dir: &SweepDir, jobs: usize, stop: &AtomicBool) -> Result<SweepOutcome> {
    let _sweep_lock = dir.lock_sweep(true)?;
    // Write the cells' states as reconciled with their runs (a killed sweep's `running` cells
    // become `interrupted`).
    dir.update(|_| ())?;
    let record = dir.read()?;
    let mut todo: Vec<Cell> = record
        .cells
        .iter()
        .filter(|c| !c.state.is_final())
        .cloned()
        .collect();
    todo.reverse(); // pop() takes them in index order
    let total = record.cells.len();
    let mut finished = total - todo.len();
    eprintln!(
        "running {} of {total} cells, {jobs} at a time (--jobs); logs in {}",
        todo.len(),
        dir.root.join("logs").display()
    );
    let bar = indicatif::ProgressBar::new(total as u64);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} cells {elapsed}")
                .expect("a valid template"),
        );
        bar.set_position(finished as u64);
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut running: Vec<(Cell, Child, Instant, fs::File)> = Vec::new();
    let mut interrupted = false;
    loop {
        if stop.load(Ordering::SeqCst) && !interrupted {
            interrupted = true;
            for (_, child, _, _) in &running {
                // SAFETY: kill(2) on a child's pid; a child that already exited is a no-op.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            }
        }
        while !interrupted && running.len() < jobs {
            let Some(cell) = todo.pop() else { break };
            // A cell that cannot start is that cell's failure, not the sweep's: the others go on.
            let cell_lock = match dir.lock_cell(&cell) {
                Ok(lock) => lock,
                Err(e) => {
                    finished += 1;
                    bar.suspend(|| eprintln!("{}: left alone: {e}", cell.name));
                    continue;
                }
            };
            match dir.start(&cell) {
                Ok(Some(child)) => running.push((cell, child, Instant::now(), cell_lock)),
                Ok(None) => {
                    finished += 1;
                    bar.set_position(finished as u64);
                }
                Err(e) => {
                    dir.set_state(cell.index, CellState::Failed, None, None);
                    finished += 1;
                    bar.suspend(|| eprintln!("{}: cannot start: {e:#}", cell.name));
                }
            }
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut i = 0;
        while i < running.len() {
            let Some(status) = running[i].1.try_wait().ok().flatten() else {
                i += 1;
                continue;
            };
            let (cell, _, started, cell_lock) = running.swap_remove(i);
            let wall = started.elapsed().as_secs_f64();
            dir.set_state(
                cell.index,
                CellState::from_exit(status.code()),
                status.code(),
                Some(wall),
            );
            drop(cell_lock);
            // As recorded, reconciled with its run (a run that completed is done).
            let state = dir.read().map_or(CellState::from_exit(status.code()), |r| {
                r.cells[cell.index].state
            });
            finished += 1;
            bar.set_position(finished as u64);
            bar.suspend(|| {
                println!(
                    "[{finished}/{total}] {} {} in {wall:.1} s{}",
                    cell.name,
                    state.name(),
                    match state {
                        CellState::Done | CellState::Interrupted => String::new(),
                        _ => format!(
                            " (exit {:?}; log: {})",
                            status.code(),
                            dir.log_path(&cell).display()
                        ),
                    }
                )
            });
        }
    }
    bar.finish_and_clear();
    Ok(SweepOutcome {
        dir: dir.root.clone(),
        counts: counts(&dir.read()?),
        interrupted,
    })
}

/// Runs (or continues) cell `index` in the foreground: what one Slurm array task does.
pub fn run_cell(dir: &SweepDir, index: usize, stop: &AtomicBool) -> Result<SweepOutcome> {
    let record = dir.read()?;
    let cell = record.cells.get(index).cloned().ok_or_else(|| {
        InputError::Other(format!(
            "--cell {index}: the sweep has cells 0..={}",
            record.cells.len() - 1
        ))
    })?;
    let _sweep_lock = dir.lock_sweep(false)?;
    let cell_lock = dir.lock_cell(&cell)?;
    // Read again under the locks (another process may have finished the cell meanwhile), and
    // write the states as reconciled with the runs.
    dir.update(|_| ())?;
    let mut state = dir.read()?.cells[index].state;
    if !state.is_final() {
        if let Some(mut child) = dir.start(&cell)? {
            let started = Instant::now();
            let mut forwarded = false;
            let status = loop {
                if let Some(status) = child.try_wait()? {
                    break status;
                }
                // Slurm may signal only this process (sbatch --signal=B:...): pass it on once.
                if stop.load(Ordering::SeqCst) && !forwarded {
                    forwarded = true;
                    // SAFETY: kill(2) on our child's pid.
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            let wall = started.elapsed().as_secs_f64();
            dir.set_state(
                index,
                CellState::from_exit(status.code()),
                status.code(),
                Some(wall),
            );
            drop(cell_lock);
            state = dir.read()?.cells[index].state;
            println!("{} {} in {wall:.1} s", cell.name, state.name());
        } else {
            state = dir.read()?.cells[index].state;
        }
    }
    Ok(SweepOutcome {
        dir: dir.root.clone(),
        counts: BTreeMap::from([(state.name(), 1)]),
        interrupted: state == CellState::Interrupted,
    })
}

fn counts(record: &SweepRecord) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for cell in &record.cells {
        *counts.entry(cell.state.name()).or_insert(0) += 1;
    }
    counts
}

/// The `--status` table.
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

/// The binary every local cell runs: the sweep's own. On Linux that is `/proc/self/exe`, which
/// still names this process's binary after the file on disk was rebuilt or removed (a
/// `cargo build` during a sweep would otherwise leave every later cell unable to start); else
/// the path it was started from.
fn this_executable() -> std::io::Result<PathBuf> {
    let own = Path::new("/proc/self/exe");
    if own.exists() {
        Ok(own.to_path_buf())
    } else {
        std::env::current_exe()
    }
}

/// Writes `slurm.sbatch`: a job array with one task a cell, at most `max_parallel` at once, each
/// running `densitrace sweep --cell $SLURM_ARRAY_TASK_ID SWEEP_DIR` with this binary.
pub fn write_sbatch(
    dir: &SweepDir,
    max_parallel: usize,
    sbatch_args: &[String],
) -> Result<PathBuf> {
    let record = dir.read()?;
    let exe = std::env::current_exe()?;
    let root = fs::canonicalize(&dir.root)?;
    let shown = root.display().to_string();
    if shown.contains(|c: char| c.is_whitespace() || c == '%') {
        return Err(InputError::Other(format!(
            "{shown}: Slurm's #SBATCH --output cannot name a path with spaces or '%'; choose \
             another --out"
        ))
        .into());
    }
    let mut script = format!(
        "#!/bin/bash\n#SBATCH --job-name=densitrace-{}\n#SBATCH --array=0-{}%{}\n#SBATCH --output={}/logs/slurm-%A_%a.out\n",
        record.name,
        record.cells.len() - 1,
        max_parallel.max(1),
        root.display()
    );
    for arg in sbatch_args {
        script.push_str(&format!("#SBATCH {arg}\n"));
    }
    script.push_str(&format!(
        "exec {} sweep --cell \"$SLURM_ARRAY_TASK_ID\" {}\n",
        shell_quote(&exe.display().to_string()),
        shell_quote(&root.display().to_string())
    ));
    let path = dir.root.join("slurm.sbatch");
    write_atomic(&path, script.as_bytes())?;
    Ok(path)
}

/// Submits `slurm.sbatch` with `sbatch`; returns the job id.
pub fn submit(script: &Path) -> Result<String> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(script)
        .output()
        .map_err(|e| InputError::Other(format!("cannot run sbatch (is Slurm installed?): {e}")))?;
    if !out.status.success() {
        anyhow::bail!(
            "sbatch refused {}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(id.split(';').next().unwrap_or("").to_string())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_labels_show_strings_bare_as_cell_names_do() {
        let spec = override_of("model.activation", &Value::from("silu"));
        assert_eq!(spec, r#"model.activation="silu""#);
        assert_eq!(override_label(&spec), "model.activation=silu");
        let spec = override_of("model.d_model", &Value::from(256));
        assert_eq!(override_label(&spec), "model.d_model=256");
        let list = serde_json::json!([1, 2]);
        assert_eq!(override_label(&override_of("k", &list)), "k=[1,2]");
    }

    #[test]
    fn the_grid_is_a_product_with_the_first_key_outermost() {
        let grid = vec![
            ("seed".to_string(), vec![Value::from(1), Value::from(2)]),
            (
                "model.activation".to_string(),
                vec![Value::from("relu"), Value::from("gelu")],
            ),
        ];
        let cells = product(&grid);
        let names: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| cell_name(i, 3, c))
            .collect();
        assert_eq!(
            names,
            [
                "000-seed=1,model.activation=relu",
                "001-seed=1,model.activation=gelu",
                "002-seed=2,model.activation=relu",
                "003-seed=2,model.activation=gelu",
            ]
        );
        assert_eq!(
            override_of("model.activation", &Value::from("relu")),
            "model.activation=\"relu\""
        );
        assert_eq!(
            cell_name(7, 3, &[("data.path".into(), Value::from("a b/c"))]),
            "007-data.path=a_b_c"
        );
    }
}

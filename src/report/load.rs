//! What a report reads: the runs of a run or sweep directory, grouped into cells (a sweep's cell
//! without its seed), and each run's density, samples and train tables.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::config::Config;
use crate::error::InputError;
use crate::rundir::tables::{Columns, Table, col};
use crate::rundir::{CONFIG, MANIFEST, RunDir, RunStatus};
use crate::sweep::{CellState, SWEEP_JSON, SweepDir};

/// A shift level, ordered (levels are finite; `total_cmp` orders them as numbers).
#[derive(Debug, Clone, Copy)]
pub struct Level(pub f64);

impl PartialEq for Level {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}
impl Eq for Level {}
impl PartialOrd for Level {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Level {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl std::hash::Hash for Level {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

/// Where a measurement was taken: the density table's key columns but the step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Where {
    pub site: String,
    pub position: String,
    pub metric: String,
    pub layer: i32,
}

/// Which probe set: its name, family and level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Set {
    pub probe: String,
    pub level: Level,
    pub family: String,
}

/// One row's key in every table the report reads: the run tables' key columns
/// (`rundir::tables::KEY_COLUMNS`) and `step`, grouped and ordered for the report.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub at: Where,
    pub step: i64,
    pub set: Set,
}

/// One run's tables.
pub struct RunTables {
    /// The density table's `value` per key.
    pub density: BTreeMap<Key, f64>,
    /// The samples table's finite values per key (in vector order); empty without `samples/`.
    pub samples: HashMap<Key, Vec<f64>>,
    /// The train table, by step.
    pub train: Vec<TrainPoint>,
}

/// One row of a run's train table.
#[derive(Debug, Clone, Copy)]
pub struct TrainPoint {
    pub step: i64,
    pub loss: f64,
    pub tokens_per_s: f64,
}

/// One run that takes part in a report.
pub struct Unit {
    /// The sweep cell's overrides without its seed (`model.activation=silu`), or `base` when only
    /// the seed varies or the directory is one run.
    pub cell: String,
    /// The sweep cell's overrides without its seed, as (key, value as the cell label shows it).
    pub overrides: Vec<(String, String)>,
    pub seed: u64,
    pub run_id: String,
    pub dir: PathBuf,
    pub config: Config,
    pub tables: RunTables,
}

/// What the report's directory argument holds.
pub struct Source {
    /// `run` or `sweep`.
    pub kind: &'static str,
    pub name: String,
    pub units: Vec<Unit>,
    /// Runs left out, each with why (a sweep's cells that did not complete).
    pub skipped: Vec<String>,
    /// What the report must say is not complete: a single run that has not completed.
    pub incomplete: Vec<String>,
}

/// The cell name of a run with no overrides besides its seed.
pub const BASE_CELL: &str = "base";

/// Reads `dir` as a run or a sweep; anything else is bad input (exit 2).
pub fn read(dir: &Path) -> Result<Source> {
    if dir.join(SWEEP_JSON).is_file() {
        let (sweep, record) = SweepDir::open_to_read(dir)?;
        let mut units = Vec::new();
        let mut skipped = Vec::new();
        for cell in &record.cells {
            if cell.state != CellState::Done {
                skipped.push(format!("{}: {:?}, not completed", cell.name, cell.state));
                continue;
            }
            let label: Vec<String> = cell
                .overrides
                .iter()
                .filter(|o| !o.starts_with("seed="))
                .map(|o| crate::sweep::override_label(o))
                .collect();
            let overrides = label
                .iter()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let label = if label.is_empty() {
                BASE_CELL.to_string()
            } else {
                label.join(",")
            };
            let mut unit = read_run(&sweep.root.join(&cell.dir), label)?;
            unit.overrides = overrides;
            units.push(unit);
        }
        Ok(Source {
            kind: "sweep",
            name: record.name,
            units,
            skipped,
            incomplete: Vec::new(),
        })
    } else if dir.join(MANIFEST).is_file() && dir.join(CONFIG).is_file() {
        let unit = read_run(dir, BASE_CELL.to_string())?;
        let incomplete = run_status(dir, &unit).into_iter().collect();
        Ok(Source {
            kind: "run",
            name: unit.config.name.clone(),
            units: vec![unit],
            skipped: Vec::new(),
            incomplete,
        })
    } else {
        Err(InputError::File {
            file: dir.display().to_string(),
            message: format!(
                "neither a run directory (no {MANIFEST} and {CONFIG}) nor a sweep directory \
                 (no {SWEEP_JSON})"
            ),
        }
        .into())
    }
}

/// What a single run that has not completed is, from its manifest, with the step it reached;
/// `None` for a completed run.
fn run_status(dir: &Path, unit: &Unit) -> Option<String> {
    let run = RunDir::at(dir.to_path_buf());
    let manifest = run.read_manifest().ok()?;
    let reached = unit
        .tables
        .density
        .keys()
        .map(|k| k.step)
        .max()
        .unwrap_or(0);
    let steps = unit.config.train.steps;
    let what = match manifest.status {
        RunStatus::Completed => return None,
        RunStatus::Diverged => format!(
            "the run diverged (its loss went non-finite at step {}); its last evaluation is at \
             step {reached} of {steps}",
            manifest
                .diverged_at
                .map_or_else(|| "?".to_string(), |s| s.to_string())
        ),
        RunStatus::Running => {
            let live = run.lock().is_err();
            if live {
                format!(
                    "the run is still running: evaluated up to step {reached} of {steps} so far"
                )
            } else {
                format!(
                    "the run was killed (its manifest says running, no process holds it): \
                     evaluated up to step {reached} of {steps}; continue it with densitrace run \
                     --resume {}",
                    dir.display()
                )
            }
        }
        RunStatus::Interrupted => format!(
            "the run was interrupted: evaluated up to step {reached} of {steps}; continue it \
             with densitrace run --resume {}",
            dir.display()
        ),
    };
    Some(what)
}

/// Finds, in each cell, the runs missing an evaluation (a density step) that another run of the
/// cell has (a sweep's report reads only completed runs, and a cell's runs share one schedule),
/// and leaves each such run out of that step in every table: its samples rows at that step are
/// dropped too, so the density, gap, OOD and trend tables all use the same runs there. Returns
/// one note per run and step, naming both.
pub fn drop_missing_evaluations(units: &mut [Unit]) -> Vec<String> {
    use std::collections::BTreeSet;
    let steps_of =
        |u: &Unit| -> BTreeSet<i64> { u.tables.density.keys().map(|k| k.step).collect() };
    let mut by_cell: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for u in units.iter() {
        by_cell
            .entry(u.cell.clone())
            .or_default()
            .extend(steps_of(u));
    }
    let mut notes = Vec::new();
    for u in units.iter_mut() {
        let own = steps_of(u);
        let missing: BTreeSet<i64> = by_cell[&u.cell]
            .iter()
            .filter(|s| !own.contains(s))
            .copied()
            .collect();
        if missing.is_empty() {
            continue;
        }
        u.tables.samples.retain(|k, _| !missing.contains(&k.step));
        let list: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
        notes.push(format!(
            "{}run {} (seed {}, {}) has no evaluation at step {} that the other runs of its \
             cell have (no {}/step-*): it is left out of {} in every table",
            if u.cell == BASE_CELL {
                String::new()
            } else {
                format!("cell {}: ", u.cell)
            },
            u.run_id,
            u.seed,
            u.dir.display(),
            list.join(", "),
            Table::Density.folder(),
            if missing.len() == 1 {
                "that step"
            } else {
                "those steps"
            }
        ));
    }
    notes
}

fn read_run(dir: &Path, cell: String) -> Result<Unit> {
    let manifest = RunDir::at(dir.to_path_buf()).read_manifest()?;
    let config = Config::load(&dir.join(CONFIG), &[])?;
    let tables = RunTables {
        density: read_density(dir)?,
        samples: read_samples(dir)?,
        train: read_train(dir)?,
    };
    if tables.density.is_empty() {
        return Err(InputError::File {
            file: dir.display().to_string(),
            message: "the run has no density table yet".into(),
        }
        .into());
    }
    Ok(Unit {
        cell,
        overrides: Vec::new(),
        seed: manifest.seed,
        run_id: manifest.run_id,
        dir: dir.to_path_buf(),
        config,
        tables,
    })
}

/// Every batch of every part file of `table` in `dir`, in step order.
fn batches(dir: &Path, table: Table) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for path in table.parts(dir)? {
        let file = File::open(&path)?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
        for batch in reader {
            out.push(batch.with_context(|| format!("{}", path.display()))?);
        }
    }
    Ok(out)
}

/// The keys of one batch of the density or samples table, row by row.
fn keys(cols: &Columns) -> Result<Vec<Key>> {
    let step = cols.ints(col::STEP)?;
    let probe = cols.strings(col::PROBE)?;
    let family = cols.strings(col::SHIFT_FAMILY)?;
    let level = cols.floats(col::SHIFT_LEVEL)?;
    let layer = cols.layers()?;
    let site = cols.strings(col::SITE)?;
    let position = cols.strings(col::POSITION)?;
    let metric = cols.strings(col::METRIC)?;
    Ok((0..cols.rows())
        .map(|i| Key {
            at: Where {
                site: site.value(i).to_string(),
                position: position.value(i).to_string(),
                metric: metric.value(i).to_string(),
                layer: layer.value(i),
            },
            step: step.value(i),
            set: Set {
                probe: probe.value(i).to_string(),
                level: Level(level.value(i)),
                family: family.value(i).to_string(),
            },
        })
        .collect())
}

/// The `value` column of one batch.
fn values(cols: &Columns) -> Result<Vec<f64>> {
    Ok(cols.floats(col::VALUE)?.values().to_vec())
}

fn read_density(dir: &Path) -> Result<BTreeMap<Key, f64>> {
    let mut out = BTreeMap::new();
    for batch in batches(dir, Table::Density)? {
        let cols = Columns::of(&batch);
        out.extend(keys(&cols)?.into_iter().zip(values(&cols)?));
    }
    Ok(out)
}

fn read_samples(dir: &Path) -> Result<HashMap<Key, Vec<f64>>> {
    let mut out: HashMap<Key, Vec<f64>> = HashMap::new();
    for batch in batches(dir, Table::Samples)? {
        let cols = Columns::of(&batch);
        let (keys, values) = (keys(&cols)?, values(&cols)?);
        // Rows come grouped by key: look each key up once.
        let mut i = 0;
        while i < keys.len() {
            let mut j = i;
            while j < keys.len() && keys[j] == keys[i] {
                j += 1;
            }
            out.entry(keys[i].clone())
                .or_default()
                .extend(values[i..j].iter().filter(|v| v.is_finite()));
            i = j;
        }
    }
    Ok(out)
}

/// The run's train table, by step.
pub fn read_train(dir: &Path) -> Result<Vec<TrainPoint>> {
    let mut out = Vec::new();
    for batch in batches(dir, Table::Train)? {
        let cols = Columns::of(&batch);
        let step = cols.ints(col::STEP)?;
        let loss = cols.floats(col::LOSS)?;
        let rate = cols.floats(col::TOKENS_PER_S)?;
        out.extend((0..cols.rows()).map(|i| TrainPoint {
            step: step.value(i),
            loss: loss.value(i),
            tokens_per_s: rate.value(i),
        }));
    }
    out.sort_by_key(|p| p.step);
    Ok(out)
}

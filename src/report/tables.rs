//! The report's four tables, computed from the runs' own tables (no model is run):
//! - summary: every density row, mean over seeds with its 95% interval;
//! - gap: every shifted set minus the reference (id) set, paired within each seed;
//! - ood: each per-vector metric as a detector of the shifted set against id;
//! - trend: Spearman's rho between shift level and the metric, per family with 3 or more levels.
//!
//! Intervals: with 2 or more seeds, a percentile bootstrap over seeds of the per-seed values
//! (`interval = "seeds"`). With one run, a bootstrap over the probe set's vectors where the run
//! wrote them to `samples/` (`"samples"`; for rho over samples, Fisher's z: `"fisher_z"`), else
//! none (`"none"`, NaN bounds).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{Field, Schema};
use rayon::prelude::*;

use super::load::{Key, Level, Set, Unit, Where};
use super::stats::{self, Bootstrap, Estimate};
use crate::metrics::MetricSpec;

/// How an interval was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Seeds,
    Samples,
    FisherZ,
    None,
}

impl Interval {
    pub fn name(self) -> &'static str {
        match self {
            Interval::Seeds => "seeds",
            Interval::Samples => "samples",
            Interval::FisherZ => "fisher_z",
            Interval::None => "none",
        }
    }
}

/// One row of summary.parquet.
#[derive(Debug, Clone)]
pub struct SummaryRow {
    pub cell: String,
    pub key: Key,
    pub estimate: Estimate,
    pub seeds: usize,
    pub interval: Interval,
}

/// One row of gap.parquet: `key` is the shifted set's.
#[derive(Debug, Clone)]
pub struct GapRow {
    pub cell: String,
    pub key: Key,
    pub reference: String,
    pub estimate: Estimate,
    pub seeds: usize,
    pub interval: Interval,
}

/// One row of ood.parquet: one statistic of one detector, for one seed or across seeds.
#[derive(Debug, Clone)]
pub struct OodRow {
    pub cell: String,
    /// `None` on the across-seed row.
    pub seed: Option<u64>,
    pub key: Key,
    /// `higher` if a higher value is scored as shifted, else `lower`.
    pub shifted_when: &'static str,
    pub statistic: &'static str,
    pub estimate: Estimate,
    pub seeds: usize,
    pub interval: Interval,
    /// Id and shifted vectors (on a seed's row; their means across seeds on the across-seed row).
    pub n_id: f64,
    pub n_shifted: f64,
}

/// One row of trend.parquet: `key.set.level` is NaN (the row is over all levels).
#[derive(Debug, Clone)]
pub struct TrendRow {
    pub cell: String,
    pub key: Key,
    /// `level_means` or `samples`.
    pub over: &'static str,
    pub levels: usize,
    pub estimate: Estimate,
    pub seeds: usize,
    pub interval: Interval,
}

pub struct Tables {
    pub summary: Vec<SummaryRow>,
    pub gap: Vec<GapRow>,
    pub ood: Vec<OodRow>,
    pub trend: Vec<TrendRow>,
}

/// The runs of each cell, in cell order.
pub fn cells(units: &[Unit]) -> BTreeMap<String, Vec<&Unit>> {
    by_cell(units, |u| &u.cell)
}

/// `items` grouped by their cell, in cell order.
pub fn by_cell<'a, T>(items: &'a [T], cell: impl Fn(&T) -> &str) -> BTreeMap<String, Vec<&'a T>> {
    let mut out: BTreeMap<String, Vec<&T>> = BTreeMap::new();
    for item in items {
        out.entry(cell(item).to_string()).or_default().push(item);
    }
    out
}

/// The in-distribution set every shifted set is compared with: the set of family `none` named
/// `id`, else the first of family `none` by name.
pub fn reference_set(units: &[&Unit]) -> Option<Set> {
    let sets: BTreeSet<&Set> = units
        .iter()
        .flat_map(|u| u.tables.density.keys())
        .filter(|k| k.set.family == "none")
        .map(|k| &k.set)
        .collect();
    sets.iter()
        .find(|s| s.probe == "id")
        .or(sets.iter().next())
        .map(|s| (*s).clone())
}

/// `key` with `reference` in place of its set.
fn with_set(key: &Key, reference: &Set) -> Key {
    Key {
        at: key.at.clone(),
        step: key.step,
        set: reference.clone(),
    }
}

/// The id-ness score of a metric's value: denser is more like id, so the metric is negated when
/// a higher value means sparser. Metrics without a sparser direction score higher as shifted.
/// Whether a higher value of `metric` is scored as shifted: "sparser means shifted" for density
/// metrics with a direction; a higher value for the rest (the losses: unfamiliar inputs are
/// predicted worse; `l1`, `l2`, `kurtosis`, `nonfinite`).
fn shifted_when_higher(metric: &str) -> bool {
    metric
        .parse::<MetricSpec>()
        .ok()
        .and_then(|m| m.sparser_when_higher())
        .unwrap_or(true)
}

pub fn compute(units: &[Unit], boot: Bootstrap) -> Tables {
    let mut tables = Tables {
        summary: Vec::new(),
        gap: Vec::new(),
        ood: Vec::new(),
        trend: Vec::new(),
    };
    for (cell, runs) in cells(units) {
        let reference = reference_set(&runs);
        tables.summary.extend(summary(&cell, &runs, boot));
        if let Some(reference) = &reference {
            tables.gap.extend(gap(&cell, &runs, reference, boot));
            tables.ood.extend(ood(&cell, &runs, reference, boot));
        }
        tables.trend.extend(trend(&cell, &runs, boot));
    }
    tables
}

/// Every key any run of the cell has, sorted.
fn keys(runs: &[&Unit]) -> Vec<Key> {
    let keys: BTreeSet<&Key> = runs.iter().flat_map(|u| u.tables.density.keys()).collect();
    keys.into_iter().cloned().collect()
}

/// The across-seed estimate of per-seed `values`: their mean, with a bootstrap interval over
/// seeds when there are two or more.
fn over_seeds(values: &[f64], boot: Bootstrap) -> (Estimate, Interval) {
    if values.len() >= 2 {
        (boot.mean(values), Interval::Seeds)
    } else {
        (
            Estimate::point(values.first().copied().unwrap_or(f64::NAN)),
            Interval::None,
        )
    }
}

fn summary(cell: &str, runs: &[&Unit], boot: Bootstrap) -> Vec<SummaryRow> {
    keys(runs)
        .into_par_iter()
        .map(|key| {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|u| u.tables.density.get(&key))
                .copied()
                .filter(|v| !v.is_nan())
                .collect();
            let (mut estimate, mut interval) = over_seeds(&values, boot);
            if let ([value], [run]) = (values.as_slice(), runs) {
                if let Some(samples) = run.tables.samples.get(&key).filter(|s| s.len() >= 2) {
                    let e = boot.groups(&[samples], |m| m[0]);
                    estimate = Estimate { value: *value, ..e };
                    interval = Interval::Samples;
                }
            }
            SummaryRow {
                cell: cell.to_string(),
                key,
                estimate,
                seeds: values.len(),
                interval,
            }
        })
        .collect()
}

fn gap(cell: &str, runs: &[&Unit], reference: &Set, boot: Bootstrap) -> Vec<GapRow> {
    keys(runs)
        .into_par_iter()
        .filter(|key| key.set.family != "none")
        .map(|key| {
            let ref_key = with_set(&key, reference);
            // Paired: the difference within each seed, then across seeds.
            let differences: Vec<f64> = runs
                .iter()
                .filter_map(|u| Some(u.tables.density.get(&key)? - u.tables.density.get(&ref_key)?))
                .filter(|d| !d.is_nan())
                .collect();
            let (mut estimate, mut interval) = over_seeds(&differences, boot);
            if let ([difference], [run]) = (differences.as_slice(), runs) {
                let samples = &run.tables.samples;
                if let (Some(shifted), Some(id)) = (samples.get(&key), samples.get(&ref_key)) {
                    if shifted.len() >= 2 && id.len() >= 2 {
                        let e = boot.groups(&[id, shifted], |m| m[1] - m[0]);
                        estimate = Estimate {
                            value: *difference,
                            ..e
                        };
                        interval = Interval::Samples;
                    }
                }
            }
            GapRow {
                cell: cell.to_string(),
                key,
                reference: reference.probe.clone(),
                estimate,
                seeds: differences.len(),
                interval,
            }
        })
        .filter(|row| row.seeds > 0)
        .collect()
}

const DETECTION_STATISTICS: [&str; 4] = ["auroc", "aupr_in", "aupr_out", "fpr95"];

fn ood(cell: &str, runs: &[&Unit], reference: &Set, boot: Bootstrap) -> Vec<OodRow> {
    let sampled: BTreeSet<&Key> = runs
        .iter()
        .flat_map(|u| u.tables.samples.keys())
        .filter(|k| k.set.family != "none")
        .collect();
    sampled
        .into_par_iter()
        .flat_map_iter(|key| {
            let higher = shifted_when_higher(&key.at.metric);
            let shifted_when = if higher { "higher" } else { "lower" };
            // Per seed: (detection, n_id, n_shifted).
            let per_seed: Vec<(u64, stats::Detection, usize, usize)> = runs
                .iter()
                .filter_map(|u| {
                    let ref_key = with_set(key, reference);
                    let id_ness = |values: &Vec<f64>| -> Vec<f64> {
                        values
                            .iter()
                            .map(|&v| if higher { -v } else { v })
                            .collect()
                    };
                    let id = id_ness(u.tables.samples.get(&ref_key)?);
                    let shifted = id_ness(u.tables.samples.get(key)?);
                    let d = stats::detection(&id, &shifted)?;
                    Some((u.seed, d, id.len(), shifted.len()))
                })
                .collect();
            let mut rows = Vec::new();
            for (s, statistic) in DETECTION_STATISTICS.into_iter().enumerate() {
                let pick = |d: &stats::Detection| [d.auroc, d.aupr_in, d.aupr_out, d.fpr95][s];
                for (seed, d, n_id, n_shifted) in &per_seed {
                    rows.push(OodRow {
                        cell: cell.to_string(),
                        seed: Some(*seed),
                        key: key.clone(),
                        shifted_when,
                        statistic,
                        estimate: Estimate::point(pick(d)),
                        seeds: 1,
                        interval: Interval::None,
                        n_id: *n_id as f64,
                        n_shifted: *n_shifted as f64,
                    });
                }
                if per_seed.is_empty() {
                    continue;
                }
                let values: Vec<f64> = per_seed.iter().map(|(_, d, _, _)| pick(d)).collect();
                let (estimate, interval) = over_seeds(&values, boot);
                let mean_n = |f: fn(&(u64, stats::Detection, usize, usize)) -> usize| {
                    per_seed.iter().map(|p| f(p) as f64).sum::<f64>() / per_seed.len() as f64
                };
                rows.push(OodRow {
                    cell: cell.to_string(),
                    seed: None,
                    key: key.clone(),
                    shifted_when,
                    statistic,
                    estimate,
                    seeds: per_seed.len(),
                    interval,
                    n_id: mean_n(|p| p.2),
                    n_shifted: mean_n(|p| p.3),
                });
            }
            rows
        })
        .collect()
}

/// For each (where, step, probe) with 3 or more levels: the levels' keys.
fn graded_sets(runs: &[&Unit]) -> BTreeMap<(Where, i64, String, String), Vec<Key>> {
    let mut out: BTreeMap<(Where, i64, String, String), Vec<Key>> = BTreeMap::new();
    for key in keys(runs) {
        if key.set.family == "none" {
            continue;
        }
        out.entry((
            key.at.clone(),
            key.step,
            key.set.probe.clone(),
            key.set.family.clone(),
        ))
        .or_default()
        .push(key);
    }
    out.retain(|_, levels| levels.len() >= 3);
    out
}

fn trend(cell: &str, runs: &[&Unit], boot: Bootstrap) -> Vec<TrendRow> {
    graded_sets(runs)
        .into_par_iter()
        .flat_map_iter(|((at, step, probe, family), levels)| {
            let key = Key {
                at,
                step,
                set: Set {
                    probe,
                    level: Level(f64::NAN),
                    family,
                },
            };
            let x: Vec<f64> = levels.iter().map(|k| k.set.level.0).collect();
            let mut rows = Vec::new();
            let row = |over, estimate, seeds, interval| TrendRow {
                cell: cell.to_string(),
                key: key.clone(),
                over,
                levels: levels.len(),
                estimate,
                seeds,
                interval,
            };

            // Over level means: rho per seed, then across seeds.
            let per_seed: Vec<f64> = runs
                .iter()
                .filter_map(|u| {
                    let y: Option<Vec<f64>> = levels
                        .iter()
                        .map(|k| u.tables.density.get(k).copied())
                        .collect();
                    Some(stats::spearman(&x, &y?))
                })
                .filter(|r| !r.is_nan())
                .collect();
            let (mut estimate, mut interval) = over_seeds(&per_seed, boot);
            if let ([rho], [run]) = (per_seed.as_slice(), runs) {
                let groups: Option<Vec<&[f64]>> = levels
                    .iter()
                    .map(|k| run.tables.samples.get(k).map(Vec::as_slice))
                    .collect();
                if let Some(groups) = groups.filter(|g| g.iter().all(|s| s.len() >= 2)) {
                    let e = boot.groups(&groups, |means| stats::spearman(&x, means));
                    estimate = Estimate { value: *rho, ..e };
                    interval = Interval::Samples;
                }
            }
            rows.push(row("level_means", estimate, per_seed.len(), interval));

            // Over samples: every vector with its set's level.
            let per_seed: Vec<(f64, usize)> = runs
                .iter()
                .filter_map(|u| {
                    let (mut xs, mut ys) = (Vec::new(), Vec::new());
                    for (k, &level) in levels.iter().zip(&x) {
                        let s = u.tables.samples.get(k)?;
                        xs.extend(std::iter::repeat_n(level, s.len()));
                        ys.extend_from_slice(s);
                    }
                    Some((stats::spearman(&xs, &ys), ys.len()))
                })
                .filter(|(r, _)| !r.is_nan())
                .collect();
            if !per_seed.is_empty() {
                let rhos: Vec<f64> = per_seed.iter().map(|p| p.0).collect();
                let (estimate, interval) = match per_seed.as_slice() {
                    [(rho, n)] => (stats::spearman_fisher_interval(*rho, *n), Interval::FisherZ),
                    _ => over_seeds(&rhos, boot),
                };
                rows.push(row("samples", estimate, per_seed.len(), interval));
            }
            rows
        })
        .collect()
}

/// Builds one Parquet table column by column.
struct Columns {
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
}

impl Columns {
    fn new() -> Columns {
        Columns {
            fields: Vec::new(),
            arrays: Vec::new(),
        }
    }
    fn push(&mut self, name: &str, array: ArrayRef) {
        self.fields
            .push(Field::new(name, array.data_type().clone(), false));
        self.arrays.push(array);
    }
    fn push_nullable(&mut self, name: &str, array: ArrayRef) {
        self.fields
            .push(Field::new(name, array.data_type().clone(), true));
        self.arrays.push(array);
    }
    fn strings<'a>(&mut self, name: &str, values: impl Iterator<Item = &'a str>) {
        self.push(name, Arc::new(StringArray::from_iter_values(values)));
    }
    fn floats(&mut self, name: &str, values: impl Iterator<Item = f64>) {
        self.push(name, Arc::new(Float64Array::from_iter_values(values)));
    }
    fn ints(&mut self, name: &str, values: impl Iterator<Item = i64>) {
        self.push(name, Arc::new(Int64Array::from_iter_values(values)));
    }
    /// `cell`, then the key's columns in the density table's order (`with_level`: and its
    /// `shift_level`).
    /// `cell`, then the rows' key columns in the density table's order (`with_level`: and its
    /// `shift_level`).
    fn key<R: Row>(&mut self, rows: &[R], with_level: bool) {
        self.strings("cell", rows.iter().map(|r| r.cell()));
        let keys: Vec<&Key> = rows.iter().map(Row::key).collect();
        self.ints("step", keys.iter().map(|k| k.step));
        self.strings("probe", keys.iter().map(|k| k.set.probe.as_str()));
        self.strings("shift_family", keys.iter().map(|k| k.set.family.as_str()));
        if with_level {
            self.floats("shift_level", keys.iter().map(|k| k.set.level.0));
        }
        self.push(
            "layer",
            Arc::new(Int32Array::from_iter_values(
                keys.iter().map(|k| k.at.layer),
            )),
        );
        self.strings("site", keys.iter().map(|k| k.at.site.as_str()));
        self.strings("position", keys.iter().map(|k| k.at.position.as_str()));
        self.strings("metric", keys.iter().map(|k| k.at.metric.as_str()));
    }
    /// `value` (named so), `lo`, `hi`, `seeds` and `interval` of the rows' estimates.
    fn estimates<R: Row>(&mut self, value: &str, rows: &[R]) {
        self.floats(value, rows.iter().map(|r| r.estimate().value));
        self.floats("lo", rows.iter().map(|r| r.estimate().lo));
        self.floats("hi", rows.iter().map(|r| r.estimate().hi));
        self.ints("seeds", rows.iter().map(|r| r.seeds() as i64));
        self.strings("interval", rows.iter().map(|r| r.interval().name()));
    }
    fn write(self, path: &Path) -> Result<()> {
        let batch = RecordBatch::try_new(Arc::new(Schema::new(self.fields)), self.arrays)?;
        crate::sink::write_parquet(path, &batch)
    }
}

/// What every row of the four tables has: its cell, its key and an estimate with how it was made.
trait Row {
    fn cell(&self) -> &str;
    fn key(&self) -> &Key;
    fn estimate(&self) -> Estimate;
    fn seeds(&self) -> usize;
    fn interval(&self) -> Interval;
}

macro_rules! rows {
    ($($t:ty),*) => {$(
        impl Row for $t {
            fn cell(&self) -> &str {
                &self.cell
            }
            fn key(&self) -> &Key {
                &self.key
            }
            fn estimate(&self) -> Estimate {
                self.estimate
            }
            fn seeds(&self) -> usize {
                self.seeds
            }
            fn interval(&self) -> Interval {
                self.interval
            }
        }
    )*};
}
rows!(SummaryRow, GapRow, OodRow, TrendRow);

impl Tables {
    /// Writes `summary.parquet`, `gap.parquet`, `trend.parquet` and (if any run wrote samples)
    /// `ood.parquet` into `dir`; returns the file names written.
    pub fn write(&self, dir: &Path) -> Result<Vec<&'static str>> {
        let mut written = vec!["summary.parquet", "gap.parquet", "trend.parquet"];

        let mut c = Columns::new();
        c.key(&self.summary, true);
        c.estimates("value", &self.summary);
        c.write(&dir.join("summary.parquet"))?;

        let mut c = Columns::new();
        c.key(&self.gap, true);
        c.strings("reference", self.gap.iter().map(|r| r.reference.as_str()));
        c.estimates("gap", &self.gap);
        c.push(
            "excludes_zero",
            Arc::new(BooleanArray::from_iter(
                self.gap.iter().map(|r| Some(r.estimate.excludes_zero())),
            )),
        );
        c.write(&dir.join("gap.parquet"))?;

        let mut c = Columns::new();
        c.key(&self.trend, false);
        c.strings("over", self.trend.iter().map(|r| r.over));
        c.ints("levels", self.trend.iter().map(|r| r.levels as i64));
        c.estimates("rho", &self.trend);
        c.write(&dir.join("trend.parquet"))?;

        if !self.ood.is_empty() {
            let mut c = Columns::new();
            c.key(&self.ood, true);
            c.push_nullable(
                "seed",
                Arc::new(Int64Array::from_iter(
                    self.ood.iter().map(|r| r.seed.map(|s| s as i64)),
                )),
            );
            c.strings("shifted_when", self.ood.iter().map(|r| r.shifted_when));
            c.strings("statistic", self.ood.iter().map(|r| r.statistic));
            c.estimates("value", &self.ood);
            c.floats("n_id", self.ood.iter().map(|r| r.n_id));
            c.floats("n_shifted", self.ood.iter().map(|r| r.n_shifted));
            c.write(&dir.join("ood.parquet"))?;
            written.push("ood.parquet");
        }
        Ok(written)
    }
}

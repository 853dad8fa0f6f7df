//! The report's tables, computed from the runs' own tables (no model is run):
//! - summary: every density row, mean over seeds with its 95% interval, beside the metric's value
//!   for unstructured (iid Gaussian) vectors of the site's width and the excess over it;
//! - gap: every tested set minus its reference set, paired within each seed, with a test;
//! - ood: each per-vector metric as a detector of the tested set against its reference;
//! - trend (`trend.rs`): Spearman's rho between shift level and the metric, for sets with 3 or
//!   more levels, per seed and across seeds, with permutation tests;
//! - contrast (`contrast.rs`): paired differences between cells that differ in one grid key.
//!
//! A tested set is every set of a shift family, and any `none` set that names a `reference` in
//! the config (a second in-distribution draw as a negative control, say). Its reference is the
//! set its config names, else the in-distribution set (`reference_set`); a reference with the
//! tested set's level (a matched reference drawn per level) is used at that level.
//!
//! Intervals: with 2 or more seeds, over seeds of the per-seed values by `--interval` (Student's
//! t by default; `interval = "seeds"`, `method` says which). With one run, a percentile bootstrap
//! over the probe set's vectors where the run wrote them to `samples/` (`"samples"`; for rho over
//! samples, Fisher's z: `"fisher_z"`), else none (`"none"`, NaN bounds).
//!
//! Tests (`test`, `p`): across 2 or more seeds, exact sign flips of the per-seed values (gaps,
//! AUROC - 0.5, rho over samples, contrasts) and the exact permutation test of rho over levels;
//! a single run tests over its samples (Welch's t for a gap, Mann-Whitney for an AUROC, the t
//! approximation for rho over samples). `p_holm` and `q_bh` correct within each family
//! (`family.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Result;
use rayon::prelude::*;

use super::contrast::ContrastRow;
use super::family::FamilySpec;
use super::iid::{self, IidTable};
use super::inference::{self, IntervalMethod, MonteCarlo};
use super::load::{Key, Set, Unit};
use super::stats::{self, Bootstrap, Estimate};
use super::trend::TrendRow;
use crate::error::InputError;
use crate::metrics::MetricSpec;

/// How the report makes its intervals and tests.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Resampling for the bootstrap intervals (percentile and BCa; a single run's intervals).
    pub boot: Bootstrap,
    /// How intervals over seeds are made.
    pub interval: IntervalMethod,
    /// Draws for the permutation tests too large to enumerate.
    pub mc: MonteCarlo,
    /// Which tests are corrected together.
    pub family: FamilySpec,
    /// The grid key of the paired contrasts between cells; `None`: every key that has pairs.
    pub contrast: Option<String>,
}

/// Where an interval came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// Over seeds, by this method.
    Seeds(IntervalMethod),
    /// A percentile bootstrap over a single run's vectors.
    Samples,
    /// Fisher's z for a single run's rho over its samples.
    FisherZ,
    None,
}

impl Interval {
    /// The `interval` column: what was resampled or pooled.
    pub fn name(self) -> &'static str {
        match self {
            Interval::Seeds(_) => "seeds",
            Interval::Samples => "samples",
            Interval::FisherZ => "fisher_z",
            Interval::None => "none",
        }
    }

    /// The `method` column: how the interval was made from it.
    pub fn method(self) -> &'static str {
        match self {
            Interval::Seeds(m) => m.name(),
            Interval::Samples => "percentile",
            Interval::FisherZ => "fisher_z",
            Interval::None => "none",
        }
    }
}

/// A hypothesis test of one row, with its corrections for many comparisons.
#[derive(Debug, Clone)]
pub struct Test {
    /// Which test (`sign_flip`, `permutation_levels`, `welch_samples`, ...; `_mc` when drawn).
    pub name: &'static str,
    /// Two-sided p-value.
    pub p: f64,
    /// Holm-adjusted p within the row's family (NaN outside every family).
    pub p_holm: f64,
    /// Benjamini-Hochberg q within the row's family.
    pub q_bh: f64,
    /// The family, as `column=value` terms; empty where `--family` leaves the row out.
    pub family: String,
}

impl Test {
    /// A test with p-value `p`, or none where p is undefined.
    pub fn new(name: &'static str, p: f64) -> Option<Test> {
        (!p.is_nan()).then(|| Test {
            name,
            p,
            p_holm: f64::NAN,
            q_bh: f64::NAN,
            family: String::new(),
        })
    }
}

/// The exact sign-flip test of per-seed values, or its Monte Carlo form above 16 seeds.
pub fn sign_flip(values: &[f64], mc: MonteCarlo) -> Option<Test> {
    if values.len() < 2 {
        return None;
    }
    let name = if values.len() <= inference::EXACT_SIGN_FLIPS {
        "sign_flip"
    } else {
        "sign_flip_mc"
    };
    Test::new(name, inference::sign_flip_p(values, mc))
}

/// One row of summary.parquet.
#[derive(Debug, Clone)]
pub struct SummaryRow {
    pub cell: String,
    pub key: Key,
    pub estimate: Estimate,
    pub seeds: usize,
    pub interval: Interval,
    /// The metric's mean over iid N(0, 1) vectors of the site's width (NaN where it has none).
    pub iid_reference: f64,
}

/// One row of gap.parquet: `key` is the tested set's.
#[derive(Debug, Clone)]
pub struct GapRow {
    pub cell: String,
    pub key: Key,
    pub reference: String,
    pub estimate: Estimate,
    pub seeds: usize,
    pub interval: Interval,
    pub test: Option<Test>,
}

/// One row of ood.parquet: one statistic of one detector, for one seed or across seeds.
#[derive(Debug, Clone)]
pub struct OodRow {
    pub cell: String,
    /// `None` on the across-seed row.
    pub seed: Option<u64>,
    pub key: Key,
    pub reference: String,
    /// `higher` if a higher value is scored as shifted, else `lower`.
    pub shifted_when: &'static str,
    pub statistic: &'static str,
    pub estimate: Estimate,
    pub seeds: usize,
    pub interval: Interval,
    /// Reference and tested vectors (on a seed's row; their means across seeds on the
    /// across-seed row).
    pub n_id: f64,
    pub n_shifted: f64,
    /// On the across-seed AUROC row: AUROC = 0.5.
    pub test: Option<Test>,
}

pub struct Tables {
    pub summary: Vec<SummaryRow>,
    pub gap: Vec<GapRow>,
    pub ood: Vec<OodRow>,
    pub trend: Vec<TrendRow>,
    pub contrast: Vec<ContrastRow>,
}

/// The runs of each cell, in cell order.
pub fn cells(units: &[Unit]) -> BTreeMap<String, Vec<&Unit>> {
    by_cell(units, |u| &u.cell)
}

/// `items` grouped by their cell, in cell order.
pub fn by_cell<T>(items: &[T], cell: impl Fn(&T) -> &str) -> BTreeMap<String, Vec<&T>> {
    let mut out: BTreeMap<String, Vec<&T>> = BTreeMap::new();
    for item in items {
        out.entry(cell(item).to_string()).or_default().push(item);
    }
    out
}

/// The in-distribution set a tested set is compared with when its config names no reference:
/// the set of family `none` named `id`, else the first of family `none` by name.
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

/// Which sets of a cell are tested, and against what.
pub struct References {
    default: Option<Set>,
    /// Tested set name -> the reference its config names.
    declared: HashMap<String, String>,
    sets: BTreeSet<Set>,
}

impl References {
    /// The cell's references; a declared reference with no rows in the density table, or with
    /// no samples where its tested set has them, is bad input naming the config field.
    pub fn new(cell: &str, runs: &[&Unit]) -> Result<References, InputError> {
        let sets: BTreeSet<Set> = runs
            .iter()
            .flat_map(|u| u.tables.density.keys())
            .map(|k| k.set.clone())
            .collect();
        let mut declared = HashMap::new();
        for run in runs {
            for (i, set) in run.config.probes.sets.iter().enumerate() {
                let Some(reference) = &set.reference else {
                    continue;
                };
                if !sets.iter().any(|s| &s.probe == reference) {
                    return Err(InputError::File {
                        file: run.dir.display().to_string(),
                        message: format!(
                            "probes.sets[{i}].reference: set {reference:?} (the reference of \
                             {:?}) has no rows in the density table of cell {cell}",
                            set.name
                        ),
                    });
                }
                let sampled = |name: &str| run.tables.samples.keys().any(|k| k.set.probe == name);
                if sampled(&set.name) && !sampled(reference) {
                    return Err(InputError::File {
                        file: run.dir.display().to_string(),
                        message: format!(
                            "probes.sets[{i}].reference: set {reference:?} (the reference of \
                             {:?}) has no samples/ rows, though {:?} has",
                            set.name, set.name
                        ),
                    });
                }
                declared.insert(set.name.clone(), reference.clone());
            }
        }
        Ok(References {
            default: reference_set(runs),
            declared,
            sets,
        })
    }

    /// Whether `set` is compared with a reference: a shifted set, or a `none` set that names one.
    pub fn is_tested(&self, set: &Set) -> bool {
        set.family != "none" || self.declared.contains_key(&set.probe)
    }

    /// The reference set of `set`: the declared (else default) reference at `set`'s level when
    /// it has that level, else its only level.
    pub fn of(&self, set: &Set) -> Option<Set> {
        let name = match self.declared.get(&set.probe) {
            Some(name) => name.as_str(),
            None => self.default.as_ref()?.probe.as_str(),
        };
        let candidates: Vec<&Set> = self.sets.iter().filter(|s| s.probe == name).collect();
        candidates
            .iter()
            .find(|s| s.level == set.level)
            .or(if candidates.len() == 1 {
                candidates.first()
            } else {
                None
            })
            .map(|s| (*s).clone())
    }
}

/// `key` with `reference` in place of its set.
pub fn with_set(key: &Key, reference: &Set) -> Key {
    Key {
        at: key.at.clone(),
        step: key.step,
        set: reference.clone(),
    }
}

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

pub fn compute(units: &[Unit], s: &Settings) -> Result<Tables> {
    let mut tables = Tables {
        summary: Vec::new(),
        gap: Vec::new(),
        ood: Vec::new(),
        trend: Vec::new(),
        contrast: Vec::new(),
    };
    // Each cell's references, made once: the contrasts compare cells through them too.
    let mut refs_by_cell = BTreeMap::new();
    for (cell, runs) in cells(units) {
        let refs = References::new(&cell, &runs)?;
        tables.summary.extend(summary(&cell, &runs, s));
        tables.gap.extend(gap(&cell, &runs, &refs, s));
        tables.ood.extend(ood(&cell, &runs, &refs, s));
        tables.trend.extend(super::trend::trend(&cell, &runs, s));
        refs_by_cell.insert(cell, refs);
    }
    let iid = iid_references(units, &mut tables.summary);
    tables.contrast = super::contrast::contrasts(units, &tables, &refs_by_cell, &iid, s)?;
    adjust(&mut tables, &s.family);
    Ok(tables)
}

/// The width of each site of `unit`'s model.
pub fn width_of(unit: &Unit, site: &str) -> Option<usize> {
    iid::site_width(site, unit.config.model.d_model, unit.config.model.d_ff)
}

/// Fills the summary's iid references; returns the table they came from.
fn iid_references(units: &[Unit], summary: &mut [SummaryRow]) -> IidTable {
    let first_of: HashMap<&str, &Unit> = units.iter().rev().map(|u| (u.cell.as_str(), u)).collect();
    let width = |row: &SummaryRow| width_of(first_of[row.cell.as_str()], &row.key.at.site);
    let needed: BTreeSet<(String, usize)> = summary
        .iter()
        .filter_map(|r| Some((r.key.at.metric.clone(), width(r)?)))
        .collect();
    let iid = IidTable::compute(&needed);
    for row in summary.iter_mut() {
        row.iid_reference = width(row).map_or(f64::NAN, |w| iid.get(&row.key.at.metric, w));
    }
    iid
}

/// Holm and Benjamini-Hochberg within each family, over the across-seed tests of every table.
fn adjust(tables: &mut Tables, spec: &FamilySpec) {
    // (table, row, family, p) of every test in a family.
    let mut entries: Vec<(u8, usize, String, f64)> = Vec::new();
    let mut add = |table: u8, name: &str, i: usize, cell: &str, key: &Key, test: &Option<Test>| {
        if let (Some(test), Some(family)) = (test, spec.label(name, cell, key)) {
            entries.push((table, i, family, test.p));
        }
    };
    for (i, r) in tables.gap.iter().enumerate() {
        add(0, "gap", i, &r.cell, &r.key, &r.test);
    }
    for (i, r) in tables.ood.iter().enumerate() {
        if r.seed.is_none() {
            add(1, "ood", i, &r.cell, &r.key, &r.test);
        }
    }
    for (i, r) in tables.trend.iter().enumerate() {
        if r.seed.is_none() {
            add(2, "trend", i, &r.cell, &r.key, &r.test);
        }
    }
    for (i, r) in tables.contrast.iter().enumerate() {
        add(3, "contrast", i, &r.cell, &r.key, &r.test);
    }
    let mut families: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (e, entry) in entries.iter().enumerate() {
        families.entry(entry.2.as_str()).or_default().push(e);
    }
    let mut adjusted: Vec<(f64, f64)> = vec![(f64::NAN, f64::NAN); entries.len()];
    for members in families.values() {
        let p: Vec<f64> = members.iter().map(|&e| entries[e].3).collect();
        let (holm, bh) = (inference::holm(&p), inference::benjamini_hochberg(&p));
        for (k, &e) in members.iter().enumerate() {
            adjusted[e] = (holm[k], bh[k]);
        }
    }
    for ((table, i, family, _), (holm, bh)) in entries.into_iter().zip(adjusted) {
        let test = match table {
            0 => &mut tables.gap[i].test,
            1 => &mut tables.ood[i].test,
            2 => &mut tables.trend[i].test,
            _ => &mut tables.contrast[i].test,
        };
        if let Some(test) = test {
            test.p_holm = holm;
            test.q_bh = bh;
            test.family = family;
        }
    }
}

/// Every key any run of the cell has, sorted.
pub fn keys(runs: &[&Unit]) -> Vec<Key> {
    let keys: BTreeSet<&Key> = runs.iter().flat_map(|u| u.tables.density.keys()).collect();
    keys.into_iter().cloned().collect()
}

/// The across-seed estimate of per-seed `values`: their mean, with an interval over seeds by
/// `--interval` when there are two or more.
pub fn over_seeds(values: &[f64], s: &Settings) -> (Estimate, Interval) {
    if values.len() >= 2 {
        (
            inference::mean_interval(values, s.interval, s.boot),
            Interval::Seeds(s.interval),
        )
    } else {
        (
            Estimate::point(values.first().copied().unwrap_or(f64::NAN)),
            Interval::None,
        )
    }
}

fn summary(cell: &str, runs: &[&Unit], s: &Settings) -> Vec<SummaryRow> {
    keys(runs)
        .into_par_iter()
        .map(|key| {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|u| u.tables.density.get(&key))
                .copied()
                .filter(|v| !v.is_nan())
                .collect();
            let (mut estimate, mut interval) = over_seeds(&values, s);
            if let ([value], [run]) = (values.as_slice(), runs)
                && let Some(samples) = run.tables.samples.get(&key).filter(|s| s.len() >= 2)
            {
                let e = s.boot.groups(&[samples], |m| m[0]);
                estimate = Estimate { value: *value, ..e };
                interval = Interval::Samples;
            }
            SummaryRow {
                cell: cell.to_string(),
                key,
                estimate,
                seeds: values.len(),
                interval,
                iid_reference: f64::NAN,
            }
        })
        .collect()
}

/// One run's gap at `key`: the tested set's value minus its reference's.
pub fn run_gap(unit: &Unit, key: &Key, reference: &Set) -> Option<f64> {
    let d = unit.tables.density.get(key)? - unit.tables.density.get(&with_set(key, reference))?;
    (!d.is_nan()).then_some(d)
}

fn gap(cell: &str, runs: &[&Unit], refs: &References, s: &Settings) -> Vec<GapRow> {
    keys(runs)
        .into_par_iter()
        .filter(|key| refs.is_tested(&key.set))
        .filter_map(|key| {
            let reference = refs.of(&key.set)?;
            let ref_key = with_set(&key, &reference);
            // Paired: the difference within each seed, then across seeds.
            let differences: Vec<f64> = runs
                .iter()
                .filter_map(|u| run_gap(u, &key, &reference))
                .collect();
            let (mut estimate, mut interval) = over_seeds(&differences, s);
            let mut test = sign_flip(&differences, s.mc);
            if let ([difference], [run]) = (differences.as_slice(), runs) {
                let samples = &run.tables.samples;
                if let (Some(shifted), Some(id)) = (samples.get(&key), samples.get(&ref_key))
                    && shifted.len() >= 2
                    && id.len() >= 2
                {
                    let e = s.boot.groups(&[id, shifted], |m| m[1] - m[0]);
                    estimate = Estimate {
                        value: *difference,
                        ..e
                    };
                    interval = Interval::Samples;
                    test = Test::new("welch_samples", inference::welch_p(id, shifted));
                }
            }
            Some(GapRow {
                cell: cell.to_string(),
                key,
                reference: reference.probe,
                estimate,
                seeds: differences.len(),
                interval,
                test,
            })
        })
        .filter(|row| row.seeds > 0)
        .collect()
}

const DETECTION_STATISTICS: [&str; 4] = ["auroc", "aupr_in", "aupr_out", "fpr95"];

/// One seed's detection scores of a tested set against its reference.
struct SeedDetection {
    seed: u64,
    d: stats::Detection,
    n_id: usize,
    n_shifted: usize,
    /// Mann-Whitney's p over this seed's vectors (AUROC = 0.5).
    mann_whitney: f64,
}

fn ood(cell: &str, runs: &[&Unit], refs: &References, s: &Settings) -> Vec<OodRow> {
    let sampled: BTreeSet<&Key> = runs
        .iter()
        .flat_map(|u| u.tables.samples.keys())
        .filter(|k| refs.is_tested(&k.set))
        .collect();
    sampled
        .into_par_iter()
        .flat_map_iter(|key| {
            let Some(reference) = refs.of(&key.set) else {
                return Vec::new();
            };
            let higher = shifted_when_higher(&key.at.metric);
            let shifted_when = if higher { "higher" } else { "lower" };
            let ref_key = with_set(key, &reference);
            let per_seed: Vec<SeedDetection> = runs
                .iter()
                .filter_map(|u| {
                    let id_ness = |values: &Vec<f64>| -> Vec<f64> {
                        values
                            .iter()
                            .map(|&v| if higher { -v } else { v })
                            .collect()
                    };
                    let id = id_ness(u.tables.samples.get(&ref_key)?);
                    let shifted = id_ness(u.tables.samples.get(key)?);
                    let d = stats::detection(&id, &shifted)?;
                    // Only a single run is tested over its own vectors.
                    let mann_whitney = if runs.len() == 1 {
                        inference::mann_whitney_p(&id, &shifted)
                    } else {
                        f64::NAN
                    };
                    Some(SeedDetection {
                        seed: u.seed,
                        d,
                        n_id: id.len(),
                        n_shifted: shifted.len(),
                        mann_whitney,
                    })
                })
                .collect();
            let mut rows = Vec::new();
            for (i, statistic) in DETECTION_STATISTICS.into_iter().enumerate() {
                let pick = |d: &stats::Detection| [d.auroc, d.aupr_in, d.aupr_out, d.fpr95][i];
                let row = |seed, estimate, seeds, interval, n_id, n_shifted, test| OodRow {
                    cell: cell.to_string(),
                    seed,
                    key: key.clone(),
                    reference: reference.probe.clone(),
                    shifted_when,
                    statistic,
                    estimate,
                    seeds,
                    interval,
                    n_id,
                    n_shifted,
                    test,
                };
                for p in &per_seed {
                    rows.push(row(
                        Some(p.seed),
                        Estimate::point(pick(&p.d)),
                        1,
                        Interval::None,
                        p.n_id as f64,
                        p.n_shifted as f64,
                        None,
                    ));
                }
                if per_seed.is_empty() {
                    continue;
                }
                let values: Vec<f64> = per_seed.iter().map(|p| pick(&p.d)).collect();
                let (estimate, interval) = over_seeds(&values, s);
                // Every detection statistic lies in [0, 1]; a t interval need not (clamp keeps
                // a missing bound missing).
                let estimate = Estimate {
                    lo: estimate.lo.clamp(0.0, 1.0),
                    hi: estimate.hi.clamp(0.0, 1.0),
                    ..estimate
                };
                let test = match (statistic, per_seed.as_slice()) {
                    ("auroc", [one]) => Test::new("mann_whitney_samples", one.mann_whitney),
                    ("auroc", _) => {
                        let centred: Vec<f64> = values.iter().map(|v| v - 0.5).collect();
                        sign_flip(&centred, s.mc)
                    }
                    _ => None,
                };
                let mean_n = |f: fn(&SeedDetection) -> usize| {
                    per_seed.iter().map(|p| f(p) as f64).sum::<f64>() / per_seed.len() as f64
                };
                rows.push(row(
                    None,
                    estimate,
                    per_seed.len(),
                    interval,
                    mean_n(|p| p.n_id),
                    mean_n(|p| p.n_shifted),
                    test,
                ));
            }
            rows
        })
        .collect()
}

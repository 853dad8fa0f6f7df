//! trend.parquet: Spearman's rho between shift level and the metric, for every probe set with 3
//! or more levels, over the level means (per seed, with the exact permutation test of the seed's
//! levels, then across seeds with the combined test of the mean rho) and over every vector with
//! its set's level.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::inference;
use super::load::{Key, Level, Set, Unit, Where};
use super::stats::{self, Estimate};
use super::tables::{Interval, Settings, Test, keys, over_seeds, sign_flip};

/// One row of trend.parquet: `key.set.level` is NaN (the row is over all levels).
#[derive(Debug, Clone)]
pub struct TrendRow {
    pub cell: String,
    /// `None` on the across-seed row.
    pub seed: Option<u64>,
    pub key: Key,
    /// `level_means` or `samples`.
    pub over: &'static str,
    pub levels: usize,
    pub estimate: Estimate,
    pub seeds: usize,
    pub interval: Interval,
    pub test: Option<Test>,
}

/// For each (where, step, probe, family) with 3 or more levels: the levels' keys.
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

/// A mean rho's interval kept within [-1, 1].
fn clamp_rho(e: Estimate) -> Estimate {
    Estimate {
        value: e.value,
        // clamp keeps a missing (NaN) bound missing, where max and min would not.
        lo: e.lo.clamp(-1.0, 1.0),
        hi: e.hi.clamp(-1.0, 1.0),
    }
}

pub fn trend(cell: &str, runs: &[&Unit], s: &Settings) -> Vec<TrendRow> {
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
            let row = |seed, over, estimate, seeds, interval, test| TrendRow {
                cell: cell.to_string(),
                seed,
                key: key.clone(),
                over,
                levels: levels.len(),
                estimate,
                seeds,
                interval,
                test,
            };

            // Over level means: rho per seed with its exact permutation test, then across
            // seeds with the combined test of the mean rho.
            let per_seed: Vec<(u64, Vec<f64>)> = runs
                .iter()
                .filter_map(|u| {
                    let y: Option<Vec<f64>> = levels
                        .iter()
                        .map(|k| u.tables.density.get(k).copied())
                        .collect();
                    let y = y?;
                    (!stats::spearman(&x, &y).is_nan()).then_some((u.seed, y))
                })
                .collect();
            let ys: Vec<Vec<f64>> = per_seed.iter().map(|p| p.1.clone()).collect();
            let tested = inference::trend_test(&x, &ys, s.mc);
            let name = if tested.drawn {
                "permutation_levels_mc"
            } else {
                "permutation_levels"
            };
            for ((seed, _), (rho, p)) in per_seed
                .iter()
                .zip(tested.rhos.iter().zip(&tested.per_seed_p))
            {
                rows.push(row(
                    Some(*seed),
                    "level_means",
                    Estimate::point(*rho),
                    1,
                    Interval::None,
                    Test::new(name, *p),
                ));
            }
            let (mut estimate, mut interval) = over_seeds(&tested.rhos, s);
            if let ([rho], [run]) = (tested.rhos.as_slice(), runs) {
                let groups: Option<Vec<&[f64]>> = levels
                    .iter()
                    .map(|k| run.tables.samples.get(k).map(Vec::as_slice))
                    .collect();
                if let Some(groups) = groups.filter(|g| g.iter().all(|s| s.len() >= 2)) {
                    let e = s.boot.groups(&groups, |means| stats::spearman(&x, means));
                    estimate = Estimate { value: *rho, ..e };
                    interval = Interval::Samples;
                }
            }
            // A constant metric has no rho in any seed: no across-seed row either.
            if !tested.rhos.is_empty() {
                rows.push(row(
                    None,
                    "level_means",
                    clamp_rho(estimate),
                    tested.rhos.len(),
                    interval,
                    Test::new(name, tested.combined_p),
                ));
            }

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
                let (estimate, interval, test) = match (per_seed.as_slice(), runs) {
                    // Only a single run is tested over its own vectors.
                    ([(rho, n)], [_]) => (
                        stats::spearman_fisher_interval(*rho, *n),
                        Interval::FisherZ,
                        Test::new("spearman_t_samples", inference::spearman_t_p(*rho, *n)),
                    ),
                    _ => {
                        let (e, i) = over_seeds(&rhos, s);
                        (e, i, sign_flip(&rhos, s.mc))
                    }
                };
                rows.push(row(
                    None,
                    "samples",
                    clamp_rho(estimate),
                    per_seed.len(),
                    interval,
                    test,
                ));
            }
            rows
        })
        .collect()
}

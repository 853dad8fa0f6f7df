//! Paired contrasts between cells (`contrast.parquet`): for a sweep whose cells differ in one
//! grid key and share seeds, each seed's difference of a quantity between a cell and its
//! partner at the key's first grid value (the baseline), then the mean over shared seeds with its
//! interval and exact sign-flip test. A size ladder or an activation comparison is then one
//! paired answer rather than two intervals side by side.
//!
//! Quantities, each at the same key (site, position, metric, step, set) in both cells:
//! - `gap`: the set's gap to its reference;
//! - `excess`: the set's value minus the iid reference at each cell's own width, so that models
//!   of different widths are compared on one scale;
//! - `auroc`: the set's AUROC against its reference (where both cells wrote samples).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Result;

use super::iid::IidTable;
use super::load::{Key, Unit};
use super::stats::Estimate;
use super::tables::{self, Interval, References, Settings, Tables, Test, sign_flip};
use crate::error::InputError;

/// One row of contrast.parquet.
#[derive(Debug, Clone)]
pub struct ContrastRow {
    /// `cell_to - cell_from`.
    pub cell: String,
    pub grid_key: String,
    /// The baseline's value of `grid_key` and the compared cell's.
    pub from: String,
    pub to: String,
    pub cell_from: String,
    pub cell_to: String,
    /// `gap`, `excess` or `auroc`.
    pub quantity: &'static str,
    pub key: Key,
    /// The reference of a gap or AUROC in the compared cell (empty for `excess`).
    pub reference: String,
    /// Mean over shared seeds of (to - from), with its interval over seeds.
    pub estimate: Estimate,
    pub seeds: usize,
    pub interval: Interval,
    pub test: Option<Test>,
}

/// A cell's runs and grid values.
struct Cell<'a> {
    name: &'a str,
    runs: Vec<&'a Unit>,
    overrides: BTreeMap<&'a str, &'a str>,
    refs: &'a References,
}

impl Cell<'_> {
    fn seeds(&self) -> BTreeSet<u64> {
        self.runs.iter().map(|u| u.seed).collect()
    }
    fn run(&self, seed: u64) -> &Unit {
        self.runs.iter().find(|u| u.seed == seed).unwrap()
    }
}

pub fn contrasts(
    units: &[Unit],
    tables: &Tables,
    refs: &BTreeMap<String, References>,
    iid: &IidTable,
    s: &Settings,
) -> Result<Vec<ContrastRow>> {
    let mut grid_keys: Vec<&str> = Vec::new();
    for unit in units {
        for (k, _) in &unit.overrides {
            if !grid_keys.contains(&k.as_str()) {
                grid_keys.push(k);
            }
        }
    }
    let bad = |why: String| -> anyhow::Error { InputError::Other(why).into() };
    if let Some(k) = &s.contrast
        && !grid_keys.contains(&k.as_str())
    {
        return Err(bad(format!(
            "--contrast {k}: not a grid key of these runs (grid keys besides seed: {})",
            if grid_keys.is_empty() {
                "none".to_string()
            } else {
                grid_keys.join(", ")
            }
        )));
    }
    let cells: Vec<Cell> = tables::cells(units)
        .into_iter()
        .map(|(cell, runs)| Cell {
            name: runs[0].cell.as_str(),
            refs: &refs[&cell],
            overrides: runs[0]
                .overrides
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            runs,
        })
        .collect();
    // Each seed's AUROC of each cell and key, from the ood table's per-seed rows.
    let aurocs: HashMap<(&str, u64, &Key), (f64, &str)> = tables
        .ood
        .iter()
        .filter(|r| r.statistic == "auroc")
        .filter_map(|r| {
            Some((
                (r.cell.as_str(), r.seed?, &r.key),
                (r.estimate.value, r.reference.as_str()),
            ))
        })
        .collect();

    let mut rows = Vec::new();
    let requested: Vec<&str> = match &s.contrast {
        Some(k) => vec![k.as_str()],
        None => grid_keys.clone(),
    };
    for grid_key in requested {
        // The key's values in grid order; the first is the baseline.
        let mut values: Vec<&str> = Vec::new();
        for unit in units {
            if let Some((_, v)) = unit.overrides.iter().find(|(k, _)| k == grid_key)
                && !values.contains(&v.as_str())
            {
                values.push(v);
            }
        }
        let mut paired = false;
        for to in &cells {
            let Some(&value) = to.overrides.get(grid_key) else {
                continue;
            };
            if value == values[0] {
                continue;
            }
            let mut partner = to.overrides.clone();
            partner.insert(grid_key, values[0]);
            let Some(from) = cells.iter().find(|c| c.overrides == partner) else {
                continue;
            };
            let shared: Vec<u64> = from.seeds().intersection(&to.seeds()).copied().collect();
            if shared.is_empty() {
                continue;
            }
            paired = true;
            let pair = Pair {
                grid_key,
                from,
                to,
                seeds: &shared,
                baseline: values[0],
                value,
            };
            rows.extend(pair.rows(iid, &aurocs, s));
        }
        if s.contrast.is_some() && !paired {
            return Err(bad(format!(
                "--contrast {grid_key}: no two cells that differ only in {grid_key} share a seed"
            )));
        }
    }
    Ok(rows)
}

struct Pair<'a> {
    grid_key: &'a str,
    from: &'a Cell<'a>,
    to: &'a Cell<'a>,
    seeds: &'a [u64],
    baseline: &'a str,
    value: &'a str,
}

impl Pair<'_> {
    fn row(
        &self,
        quantity: &'static str,
        key: &Key,
        reference: &str,
        d: &[f64],
        s: &Settings,
    ) -> ContrastRow {
        let (estimate, interval) = tables::over_seeds(d, s);
        ContrastRow {
            cell: format!("{} - {}", self.to.name, self.from.name),
            grid_key: self.grid_key.to_string(),
            from: self.baseline.to_string(),
            to: self.value.to_string(),
            cell_from: self.from.name.to_string(),
            cell_to: self.to.name.to_string(),
            quantity,
            key: key.clone(),
            reference: reference.to_string(),
            estimate,
            seeds: d.len(),
            interval,
            test: sign_flip(d, s.mc),
        }
    }

    fn rows(
        &self,
        iid: &IidTable,
        aurocs: &HashMap<(&str, u64, &Key), (f64, &str)>,
        s: &Settings,
    ) -> Vec<ContrastRow> {
        let (refs_from, refs_to) = (self.from.refs, self.to.refs);
        let keys: BTreeSet<&Key> = self
            .to
            .runs
            .iter()
            .flat_map(|u| u.tables.density.keys())
            .collect();
        let mut rows = Vec::new();
        for key in keys {
            let pairs = || {
                self.seeds
                    .iter()
                    .map(|&seed| (self.from.run(seed), self.to.run(seed)))
            };
            // Gap.
            if refs_to.is_tested(&key.set) {
                // Only gaps taken against the same reference set are compared.
                if let (Some(r_from), Some(r_to)) = (refs_from.of(&key.set), refs_to.of(&key.set))
                    && r_from == r_to
                {
                    let d: Vec<f64> = pairs()
                        .filter_map(|(a, b)| {
                            Some(
                                tables::run_gap(b, key, &r_to)? - tables::run_gap(a, key, &r_from)?,
                            )
                        })
                        .collect();
                    if !d.is_empty() {
                        rows.push(self.row("gap", key, &r_to.probe, &d, s));
                    }
                }
            }
            // Excess over the iid reference at each cell's own width.
            let excess = |u: &Unit| -> Option<f64> {
                let width = tables::width_of(u, &key.at.site)?;
                let e = u.tables.density.get(key)? - iid.get(&key.at.metric, width);
                (!e.is_nan()).then_some(e)
            };
            let d: Vec<f64> = pairs()
                .filter_map(|(a, b)| Some(excess(b)? - excess(a)?))
                .collect();
            if !d.is_empty() {
                rows.push(self.row("excess", key, "", &d, s));
            }
            // AUROC.
            let mut reference = "";
            let d: Vec<f64> = self
                .seeds
                .iter()
                .filter_map(|&seed| {
                    let (b, r) = aurocs.get(&(self.to.name, seed, key))?;
                    let (a, r_from) = aurocs.get(&(self.from.name, seed, key))?;
                    if r != r_from {
                        return None;
                    }
                    reference = *r;
                    Some(b - a)
                })
                .collect();
            if !d.is_empty() {
                rows.push(self.row("auroc", key, reference, &d, s));
            }
        }
        rows
    }
}

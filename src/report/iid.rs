//! Each per-vector metric's value for a vector with no structure at all: the mean over seeded
//! vectors of i.i.d. N(0, 1) entries at the site's width, by the f64 reference. A metric's value
//! minus this is its `excess`, which compares sites and model sizes of different widths on one
//! scale (top-5% energy of an unstructured vector is 0.262 at d = 128 and 0.264 at d = 256;
//! docs/metrics.md has the table).

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;

use super::stats::SplitMix64;
use crate::kernels::reference;
use crate::metrics::{Columns, MetricSpec};

/// Vectors averaged per width: the reference's Monte Carlo standard error is then below 3e-4 for
/// every metric at every width (top-5% energy's per-vector sd is at most about 0.02).
pub const IID_VECTORS: usize = 8192;

/// docs/science.md's "Reference values on i.i.d. N(0,1) vectors": these metrics' means at these
/// widths, to the 0.005 the table states. The WGSL kernels' test and this module's test both
/// reproduce it.
pub const SCIENCE_TABLE_METRICS: [&str; 9] = [
    "topk_energy@0.01",
    "topk_energy@0.05",
    "topk_energy@0.1",
    "eff_rank",
    "eff_rank_l1",
    "hoyer",
    "participation_ratio",
    "l0_mean_std",
    "gini",
];

/// The rows of that table: (width, each metric's mean in `SCIENCE_TABLE_METRICS` order).
pub const SCIENCE_TABLE: [(usize, [f64; 9]); 3] = [
    (
        128,
        [
            0.064, 0.262, 0.417, 0.487, 0.755, 0.220, 0.344, 0.163, 0.411,
        ],
    ),
    (
        256,
        [
            0.066, 0.264, 0.430, 0.485, 0.754, 0.215, 0.339, 0.162, 0.413,
        ],
    ),
    (
        1024,
        [
            0.082, 0.278, 0.438, 0.482, 0.753, 0.209, 0.334, 0.161, 0.414,
        ],
    ),
];

/// Whether `metric` has a width-only iid reference: the scale-free per-vector metrics. Not `l1`,
/// `l2` or `near_zero@eps` (they scale with the vector), `nonfinite` (0 by construction), nor
/// the metrics across a set's vectors.
pub fn has_reference(metric: &MetricSpec) -> bool {
    use MetricSpec::*;
    matches!(
        metric,
        Hoyer
            | ParticipationRatio
            | EffRank
            | EffRankL1
            | L0MeanStd
            | Kurtosis
            | NearZeroRel(_)
            | TopkEnergy(_)
            | Gini
            | MaxOverMedian
    )
}

/// The width of the vectors measured at `site` of a model: the MLP's hidden width at `mlp.post`,
/// the residual width at the other activation sites; `None` at `logits` (its metrics are losses).
/// `site` as the density table writes it: `blocks.{i}.mlp.post`, `final.norm`, `logits`, ...
pub fn site_width(site: &str, d_model: usize, d_ff: usize) -> Option<usize> {
    let kind = site
        .strip_prefix("blocks.")
        .and_then(|rest| rest.split_once('.'))
        .map_or(site, |(_, kind)| kind);
    match kind {
        "mlp.post" => Some(d_ff),
        "resid_post" | "attn.out" | "final.norm" => Some(d_model),
        _ => None,
    }
}

/// The iid references the report needs, by (metric name, width).
#[derive(Debug, Default)]
pub struct IidTable {
    values: BTreeMap<(String, usize), f64>,
}

impl IidTable {
    /// The references of every (metric, width) pair in `needed` that has one.
    pub fn compute(needed: &BTreeSet<(String, usize)>) -> IidTable {
        let mut by_width: BTreeMap<usize, Vec<(String, MetricSpec)>> = BTreeMap::new();
        for (name, width) in needed {
            if let Ok(metric) = name.parse::<MetricSpec>()
                && has_reference(&metric)
                && *width >= 1
            {
                by_width
                    .entry(*width)
                    .or_default()
                    .push((name.clone(), metric));
            }
        }
        let mut values = BTreeMap::new();
        for (width, metrics) in by_width {
            let specs: Vec<MetricSpec> = metrics.iter().map(|m| m.1).collect();
            for ((name, _), value) in metrics.iter().zip(iid_means(&specs, width)) {
                values.insert((name.clone(), width), value);
            }
        }
        IidTable { values }
    }

    /// The reference of `metric` at `width`, or NaN where there is none.
    pub fn get(&self, metric: &str, width: usize) -> f64 {
        self.values
            .get(&(metric.to_string(), width))
            .copied()
            .unwrap_or(f64::NAN)
    }
}

/// The mean of each of `metrics` over `IID_VECTORS` seeded N(0, 1) vectors of `width` entries,
/// by the f64 reference (undefined per-vector values left out, as the density table does).
pub fn iid_means(metrics: &[MetricSpec], width: usize) -> Vec<f64> {
    let cols = Columns::for_metrics(metrics);
    let per_vector: Vec<Vec<f64>> = (0..IID_VECTORS)
        .into_par_iter()
        .map(|i| {
            let mut rng = SplitMix64(0x11D_0000 ^ ((width as u64) << 32) ^ i as u64);
            let mut uniform = || ((rng.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let row: Vec<f32> = (0..width)
                .map(|_| {
                    let (u, v) = (uniform(), uniform());
                    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
                })
                .collect();
            reference::row_metrics(&row, &cols)
        })
        .collect();
    metrics
        .iter()
        .map(|m| {
            let c = cols.column(m);
            let finite: Vec<f64> = per_vector
                .iter()
                .map(|v| v[c])
                .filter(|v| v.is_finite())
                .collect();
            finite.iter().sum::<f64>() / finite.len() as f64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/science.md's reference table (2,000 vectors through the WGSL kernels) agrees with
    /// this module's reference simulation within the table's stated 0.005.
    #[test]
    fn iid_means_reproduce_the_science_reference_table() {
        let names = SCIENCE_TABLE_METRICS;
        let metrics: Vec<MetricSpec> = names.iter().map(|s| s.parse().unwrap()).collect();
        for (width, expected) in SCIENCE_TABLE {
            let got = iid_means(&metrics, width);
            for ((name, want), got) in names.iter().zip(expected).zip(got) {
                assert!(
                    (got - want).abs() <= 0.005,
                    "d {width}, {name}: {got:.4} vs table {want}"
                );
            }
        }
    }

    /// The reference moves with width where the metric's definition makes it (top-k energy's k
    /// is floor(f d)), which is why sizes are compared on the excess.
    #[test]
    fn widths_get_their_own_reference() {
        let m: MetricSpec = "topk_energy@0.05".parse().unwrap();
        let needed: BTreeSet<(String, usize)> = [(m.to_string(), 10), (m.to_string(), 128)]
            .into_iter()
            .chain([("l2".to_string(), 128)])
            .collect();
        let table = IidTable::compute(&needed);
        // At d = 10, k = 1: the largest of 10 squared normals over their sum, about 0.38.
        let (narrow, wide) = (
            table.get(&m.to_string(), 10),
            table.get(&m.to_string(), 128),
        );
        assert!(narrow > wide + 0.05, "{narrow} vs {wide}");
        assert!(table.get("l2", 128).is_nan());
        assert_eq!(site_width("blocks.1.mlp.post", 128, 512), Some(512));
        assert_eq!(site_width("blocks.0.resid_post", 128, 512), Some(128));
        assert_eq!(site_width("final.norm", 128, 512), Some(128));
        assert_eq!(site_width("logits", 128, 512), None);
    }
}

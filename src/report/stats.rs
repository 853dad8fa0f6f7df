//! The report's statistics: detection scores (AUROC, AUPR, FPR at 95% TPR), Spearman's rho and
//! percentile bootstrap intervals. Each is tested against values computed independently by scipy
//! and scikit-learn (`scripts/report_fixtures.py` made `tests/fixtures/report_stats.json`), and the
//! bootstrap's coverage against simulated experiments.

/// An estimate with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Estimate {
    /// A value without an interval.
    pub fn point(value: f64) -> Estimate {
        Estimate {
            value,
            lo: f64::NAN,
            hi: f64::NAN,
        }
    }

    /// Whether the interval lies wholly on one side of 0.
    pub fn excludes_zero(&self) -> bool {
        self.lo > 0.0 || self.hi < 0.0
    }
}

/// In-distribution against shifted, scored the OpenOOD way: id is the positive class and the
/// score is id-ness (higher means "more like id").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Area under the ROC curve (ties count half): the probability that a random id vector scores
    /// above a random shifted one.
    pub auroc: f64,
    /// Average precision with id as the positive class (scikit-learn's
    /// `average_precision_score`: the step-wise sum, not a trapezoid).
    pub aupr_in: f64,
    /// Average precision with shifted as the positive class and the score negated.
    pub aupr_out: f64,
    /// The fraction of shifted vectors accepted as id at the highest threshold that accepts at
    /// least 95% of the id vectors.
    pub fpr95: f64,
}

/// Scores `id` against `shifted`; `None` if either is empty. The scores must be finite.
pub fn detection(id: &[f64], shifted: &[f64]) -> Option<Detection> {
    if id.is_empty() || shifted.is_empty() {
        return None;
    }
    // Every score, highest first, with whether it is an id vector.
    let mut scored: Vec<(f64, bool)> = id
        .iter()
        .map(|&s| (s, true))
        .chain(shifted.iter().map(|&s| (s, false)))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (positives, negatives) = (id.len() as f64, shifted.len() as f64);

    // Walk the thresholds (the distinct scores) from the top: each group of tied scores moves
    // the ROC curve by (its shifted, its id) at once.
    let (mut tp, mut fp) = (0.0_f64, 0.0_f64);
    let (mut auroc, mut aupr_in) = (0.0, 0.0);
    let mut fpr95 = f64::NAN;
    let mut i = 0;
    while i < scored.len() {
        let (prev_tp, prev_fp) = (tp, fp);
        let score = scored[i].0;
        while i < scored.len() && scored[i].0 == score {
            if scored[i].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        let (tpr, fpr) = (tp / positives, fp / negatives);
        // Trapezoid between this point and the last.
        auroc += (fpr - prev_fp / negatives) * (tpr + prev_tp / positives) / 2.0;
        aupr_in += (tp - prev_tp) / positives * tp / (tp + fp);
        if fpr95.is_nan() && tpr >= 0.95 {
            fpr95 = fpr;
        }
    }

    // Shifted as positive, lowest score first.
    let (mut tp, mut fp) = (0.0_f64, 0.0_f64);
    let mut aupr_out = 0.0;
    let mut i = scored.len();
    while i > 0 {
        let prev_tp = tp;
        let score = scored[i - 1].0;
        while i > 0 && scored[i - 1].0 == score {
            if scored[i - 1].1 {
                fp += 1.0;
            } else {
                tp += 1.0;
            }
            i -= 1;
        }
        aupr_out += (tp - prev_tp) / negatives * tp / (tp + fp);
    }
    Some(Detection {
        auroc,
        aupr_in,
        aupr_out,
        fpr95,
    })
}

/// Ranks from 1, ties given their average rank (scipy's `rankdata` default).
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// Pearson's correlation; NaN if either side is constant or there are fewer than 2 pairs.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    if x.len() < 2 {
        return f64::NAN;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    sxy / (sxx * syy).sqrt()
}

/// Spearman's rho: Pearson's correlation of the average ranks (scipy's `spearmanr`).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&average_ranks(x), &average_ranks(y))
}

/// The approximate 95% interval of Spearman's rho over `n` pairs from Fisher's z with the
/// standard error sqrt(1.06 / (n - 3)) (Fieller, Hartley and Pearson, 1957); NaN below 4 pairs.
pub fn spearman_fisher_interval(rho: f64, n: usize) -> Estimate {
    if n < 4 || rho.is_nan() {
        return Estimate::point(rho);
    }
    let z = rho.clamp(-1.0 + 1e-12, 1.0 - 1e-12).atanh();
    let half = 1.959_963_984_540_054 * (1.06 / (n as f64 - 3.0)).sqrt();
    Estimate {
        value: rho,
        lo: (z - half).tanh(),
        hi: (z + half).tanh(),
    }
}

/// numpy's default (linear) percentile of sorted values, `q` in [0, 1].
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (below, frac) = (pos.floor() as usize, pos - pos.floor());
    match sorted.get(below + 1) {
        Some(&above) => sorted[below] + frac * (above - sorted[below]),
        None => sorted[below],
    }
}

pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// A seeded percentile bootstrap: the 2.5th and 97.5th percentiles of a statistic recomputed on
/// `resamples` resamples drawn with replacement. The same seed gives the same interval, so a
/// report is reproducible.
#[derive(Debug, Clone, Copy)]
pub struct Bootstrap {
    pub resamples: usize,
    pub seed: u64,
}

impl Bootstrap {
    /// The mean of `values` (one per seed, say) with its interval; NaN bounds below 2 values.
    pub fn mean(&self, values: &[f64]) -> Estimate {
        self.groups(&[values], |means| means[0])
    }

    /// The means of `resamples` resamples of `values` drawn with replacement (the replicates BCa
    /// starts from); the same draws as `mean`'s.
    pub fn replicate_means(&self, values: &[f64]) -> Vec<f64> {
        let mut rng = SplitMix64(self.seed);
        (0..self.resamples)
            .map(|_| {
                let mut sum = 0.0;
                for _ in 0..values.len() {
                    sum += values[rng.below(values.len())];
                }
                sum / values.len() as f64
            })
            .collect()
    }

    /// `statistic` of the groups' means, with its interval from resampling each group on its own
    /// (a stratified bootstrap: each group keeps its size). With one group and `|m| m[0]` this is
    /// the bootstrap of a mean; with two, `|m| m[1] - m[0]` is that of a difference of two
    /// independent means. NaN bounds if a group has fewer than 2 values.
    pub fn groups(&self, groups: &[&[f64]], statistic: impl Fn(&[f64]) -> f64) -> Estimate {
        let means: Vec<f64> = groups.iter().map(|g| mean(g)).collect();
        let value = statistic(&means);
        if groups.iter().any(|g| g.len() < 2) {
            return Estimate::point(value);
        }
        let mut rng = SplitMix64(self.seed);
        let mut resampled = vec![0.0; groups.len()];
        let mut stats = Vec::with_capacity(self.resamples);
        for _ in 0..self.resamples {
            for (g, m) in groups.iter().zip(&mut resampled) {
                let mut sum = 0.0;
                for _ in 0..g.len() {
                    sum += g[rng.below(g.len())];
                }
                *m = sum / g.len() as f64;
            }
            stats.push(statistic(&resampled));
        }
        stats.retain(|s| !s.is_nan());
        stats.sort_by(f64::total_cmp);
        Estimate {
            value,
            lo: percentile_sorted(&stats, 0.025),
            hi: percentile_sorted(&stats, 0.975),
        }
    }
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a fast, seedable generator, enough for resampling
/// indices; written out so the report's intervals do not depend on a crate's generator choice.
pub(crate) struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (Lemire's multiply-shift; its bias, below n / 2^64, is negligible here).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{fixtures, floats};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12
    }

    #[test]
    fn detection_matches_scikit_learn() {
        let fixtures = fixtures();
        let cases = fixtures["detection"].as_array().unwrap();
        assert!(cases.len() >= 7);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let d = detection(&floats(&case["id"]), &floats(&case["shifted"])).unwrap();
            for (what, ours) in [
                ("auroc", d.auroc),
                ("aupr_in", d.aupr_in),
                ("aupr_out", d.aupr_out),
                ("fpr95", d.fpr95),
            ] {
                let theirs = case[what].as_f64().unwrap();
                assert!(close(ours, theirs), "{name} {what}: {ours} vs {theirs}");
            }
        }
    }

    #[test]
    fn detection_needs_both_sides() {
        assert_eq!(detection(&[], &[1.0]), None);
        assert_eq!(detection(&[1.0], &[]), None);
    }

    #[test]
    fn spearman_matches_scipy() {
        let fixtures = fixtures();
        let cases = fixtures["spearman"].as_array().unwrap();
        assert!(cases.len() >= 5);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let ours = spearman(&floats(&case["x"]), &floats(&case["y"]));
            let theirs = case["rho"].as_f64().unwrap();
            assert!(close(ours, theirs), "{name}: {ours} vs {theirs}");
        }
    }

    #[test]
    fn spearman_of_a_constant_is_undefined() {
        assert!(spearman(&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0]).is_nan());
    }

    #[test]
    fn percentiles_follow_numpy() {
        // numpy.percentile([1, 2, 3, 4], [0, 2.5, 50, 97.5, 100]) = 1, 1.075, 2.5, 3.925, 4
        let sorted = [1.0, 2.0, 3.0, 4.0];
        for (q, want) in [
            (0.0, 1.0),
            (0.025, 1.075),
            (0.5, 2.5),
            (0.975, 3.925),
            (1.0, 4.0),
        ] {
            assert!(close(percentile_sorted(&sorted, q), want), "q {q}");
        }
    }

    /// Normal draws from a seeded generator (Box-Muller).
    fn normals(rng: &mut SplitMix64, n: usize, mu: f64, sd: f64) -> Vec<f64> {
        let mut uniform = || (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        (0..n)
            .map(|_| {
                let (u, v) = (1.0 - uniform(), uniform());
                mu + sd * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
            })
            .collect()
    }

    /// The percentile bootstrap's interval for a mean covers the true mean in about 95% of
    /// simulated experiments. At 20 values the known small-sample shortfall of the percentile
    /// method is about 1.5 points, and 1,000 experiments estimate coverage to within about 0.7
    /// points (one standard error), so the accepted band is [0.91, 0.97].
    #[test]
    fn bootstrap_interval_covers_the_mean() {
        let boot = Bootstrap {
            resamples: 1000,
            seed: 7,
        };
        let mut rng = SplitMix64(2026);
        let experiments = 1000;
        let mut covered = 0;
        for _ in 0..experiments {
            let values = normals(&mut rng, 20, 0.28, 0.003);
            let e = boot.mean(&values);
            if e.lo <= 0.28 && 0.28 <= e.hi {
                covered += 1;
            }
        }
        let coverage = covered as f64 / experiments as f64;
        assert!((0.91..=0.97).contains(&coverage), "coverage {coverage}");
    }

    /// The paired design: within a seed, id and shifted share the model, so a seed's effect moves
    /// both. Bootstrapping the per-seed differences keeps that; resampling the two sets as if
    /// independent does not. Simulated seeds with a large shared effect (sd 0.01) and a small true
    /// gap (0.002, per-seed noise sd 0.001): the paired interval covers the gap about 95% of the
    /// time and excludes 0 almost always, while the unpaired one is several times wider and
    /// rarely excludes 0.
    #[test]
    fn paired_differences_resolve_what_independent_means_cannot() {
        let boot = Bootstrap {
            resamples: 1000,
            seed: 11,
        };
        let mut rng = SplitMix64(5);
        let (experiments, seeds, gap) = (400, 10, 0.002);
        let (mut covered, mut paired_excludes, mut unpaired_excludes) = (0, 0, 0);
        let (mut paired_width, mut unpaired_width) = (0.0, 0.0);
        for _ in 0..experiments {
            let seed_effect = normals(&mut rng, seeds, 0.28, 0.01);
            let id = seed_effect.clone();
            let noise = normals(&mut rng, seeds, 0.0, 0.001);
            let shifted: Vec<f64> = seed_effect
                .iter()
                .zip(&noise)
                .map(|(s, e)| s + gap + e)
                .collect();
            let differences: Vec<f64> = shifted.iter().zip(&id).map(|(s, i)| s - i).collect();
            let paired = boot.mean(&differences);
            let unpaired = boot.groups(&[&id, &shifted], |m| m[1] - m[0]);
            covered += (paired.lo <= gap && gap <= paired.hi) as usize;
            paired_excludes += paired.excludes_zero() as usize;
            unpaired_excludes += unpaired.excludes_zero() as usize;
            paired_width += paired.hi - paired.lo;
            unpaired_width += unpaired.hi - unpaired.lo;
        }
        let coverage = covered as f64 / experiments as f64;
        assert!(
            (0.88..=0.98).contains(&coverage),
            "paired coverage {coverage}"
        );
        assert!(
            paired_excludes as f64 / experiments as f64 > 0.95,
            "{paired_excludes}"
        );
        assert!(
            (unpaired_excludes as f64 / experiments as f64) < 0.2,
            "{unpaired_excludes}"
        );
        assert!(unpaired_width > 5.0 * paired_width);
    }

    #[test]
    fn bootstrap_is_reproducible_and_needs_two_values() {
        let boot = Bootstrap {
            resamples: 500,
            seed: 3,
        };
        let values = [0.1, 0.4, 0.2, 0.9, 0.5];
        assert_eq!(boot.mean(&values), boot.mean(&values));
        let one = boot.mean(&[0.3]);
        assert_eq!(one.value, 0.3);
        assert!(one.lo.is_nan() && one.hi.is_nan());
    }

    #[test]
    fn fisher_interval_brackets_rho() {
        let e = spearman_fisher_interval(0.3, 200);
        assert!(e.lo < 0.3 && 0.3 < e.hi && e.lo > 0.1 && e.hi < 0.5);
        assert!(spearman_fisher_interval(0.3, 3).lo.is_nan());
    }
}

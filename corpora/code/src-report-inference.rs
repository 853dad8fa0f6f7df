//! Inference over seeds that holds at small n: intervals for a mean (Student's t, BCa, the
//! percentile bootstrap), exact permutation tests (sign flips of paired differences; permuted
//! levels for a trend, per seed and combined across seeds), the tests a single run makes over its
//! own samples, and Holm's and Benjamini-Hochberg's corrections. Each is checked against scipy or
//! statsmodels (`scripts/report_fixtures.py` -> `tests/fixtures/report_stats.json`), and the
//! intervals' coverage against simulation (`docs/reports.md`, "Coverage").

use std::collections::BTreeMap;

use super::dist;
use super::stats::{self, Bootstrap, Estimate, SplitMix64, mean, percentile_sorted};

/// How an interval over seeds is made (`--interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IntervalMethod {
    /// Student's t: mean ± t(0.975, n-1) · s/√n. Exact for normal data at any n; the default,
    /// chosen by the coverage study (docs/reports.md).
    T,
    /// The bias-corrected and accelerated bootstrap (Efron 1987), as scipy's `bootstrap`.
    Bca,
    /// The percentile bootstrap: under-covers below about 10 values.
    Percentile,
}

impl IntervalMethod {
    /// As the tables' `method` column and `--interval` write it.
    pub fn name(self) -> &'static str {
        match self {
            IntervalMethod::T => "t",
            IntervalMethod::Bca => "bca",
            IntervalMethod::Percentile => "percentile",
        }
    }

    /// As the figures' legends say it.
    pub fn description(self) -> &'static str {
        match self {
            IntervalMethod::T => "Student t",
            IntervalMethod::Bca => "BCa bootstrap",
            IntervalMethod::Percentile => "percentile bootstrap",
        }
    }
}

/// The mean of `values` with its 95% interval by `method`; NaN bounds below 2 values, and a
/// zero-width interval when all values are equal.
pub fn mean_interval(values: &[f64], method: IntervalMethod, boot: Bootstrap) -> Estimate {
    let n = values.len();
    let m = mean(values);
    if n < 2 {
        return Estimate::point(m);
    }
    let sd = sample_sd(values);
    if sd == 0.0 {
        return Estimate {
            value: m,
            lo: m,
            hi: m,
        };
    }
    match method {
        IntervalMethod::T => {
            let half = dist::t_ppf(0.975, (n - 1) as f64) * sd / (n as f64).sqrt();
            Estimate {
                value: m,
                lo: m - half,
                hi: m + half,
            }
        }
        IntervalMethod::Percentile => boot.mean(values),
        IntervalMethod::Bca => bca_mean(values, &boot.replicate_means(values)),
    }
}

/// The sample standard deviation (n - 1).
pub fn sample_sd(values: &[f64]) -> f64 {
    let m = mean(values);
    let ss: f64 = values.iter().map(|v| (v - m) * (v - m)).sum();
    (ss / (values.len() as f64 - 1.0)).sqrt()
}

/// The 95% BCa interval of the mean of `data` from its bootstrap `replicates`, as scipy computes
/// it: z0 from the share of replicates below the estimate (ties count half), the acceleration
/// from the jackknife, and the adjusted percentiles by numpy's linear interpolation.
///
/// At a few seeds many replicates equal the estimate (a resample that is the data reordered),
/// and whether rounding puts them a bit below or above it moves z0, and the interval, a lot; so
/// replicates within 1e-12 x (|estimate| + the data's standard deviation) of the estimate count
/// as ties.
pub fn bca_mean(data: &[f64], replicates: &[f64]) -> Estimate {
    let tolerance = 1e-12 * (mean(data).abs() + sample_sd(data));
    bca_from(data, mean(data), replicates, tolerance)
}

/// `bca_mean` with the estimate `theta` given and ties within `tolerance` of it; with a
/// tolerance of 0 this is scipy's computation bit for bit (its tests pass numpy's mean).
pub fn bca_from(data: &[f64], theta: f64, replicates: &[f64], tolerance: f64) -> Estimate {
    let b = replicates.len() as f64;
    let below = replicates
        .iter()
        .filter(|&&r| r < theta - tolerance)
        .count() as f64;
    let at_or_below = replicates
        .iter()
        .filter(|&&r| r <= theta + tolerance)
        .count() as f64;
    let z0 = dist::ndtri((below + at_or_below) / (2.0 * b));
    let n = data.len() as f64;
    let total: f64 = data.iter().sum();
    let jackknife: Vec<f64> = data.iter().map(|x| (total - x) / (n - 1.0)).collect();
    let dot = mean(&jackknife);
    let num: f64 = jackknife.iter().map(|j| (dot - j).powi(3)).sum();
    let den = 6.0
        * jackknife
            .iter()
            .map(|j| (dot - j).powi(2))
            .sum::<f64>()
            .powf(1.5);
    let a = num / den;
    let z = dist::ndtri(0.025);
    let adjusted = |zq: f64| dist::ndtr(z0 + (z0 + zq) / (1.0 - a * (z0 + zq)));
    let mut sorted = replicates.to_vec();
    sorted.sort_by(f64::total_cmp);
    Estimate {
        value: theta,
        lo: percentile_sorted(&sorted, adjusted(z)),
        hi: percentile_sorted(&sorted, adjusted(-z)),
    }
}

/// Seeded Monte Carlo where exact enumeration is too large.
#[derive(Debug, Clone, Copy)]
pub struct MonteCarlo {
    pub draws: usize,
    pub seed: u64,
}

/// Exact sign-flip enumeration up to this many values (2^16 flips); seeded Monte Carlo above.
pub const EXACT_SIGN_FLIPS: usize = 16;

/// The two-sided p-value of "the paired differences `d` are symmetric about 0" from flipping
/// their signs: every one of the 2^n flips up to `EXACT_SIGN_FLIPS` values (p is then exact, and
/// never below 2/2^n: 0.0625 at 5 seeds, 0.002 at 10), else `mc.draws` random flips with
/// p = (1 + extreme) / (1 + draws). Two-sided as scipy's `permutation_test`: twice the smaller
/// tail, at most 1. NaN for no values.
pub fn sign_flip_p(d: &[f64], mc: MonteCarlo) -> f64 {
    let n = d.len();
    if n == 0 {
        return f64::NAN;
    }
    let observed: f64 = d.iter().sum();
    // Sums that differ from the observed one by rounding alone count as ties.
    let tolerance = 1e-9 * d.iter().map(|x| x.abs()).sum::<f64>();
    if n <= EXACT_SIGN_FLIPS {
        // Gray-code order: each next flip changes one sign, so each sum costs one addition.
        let mut positive = vec![true; n];
        let mut sum = observed;
        let (mut at_least, mut at_most) = (0u64, 0u64);
        let flips = 1u64 << n;
        for i in 0..flips {
            if i > 0 {
                let j = i.trailing_zeros() as usize;
                sum += if positive[j] { -2.0 * d[j] } else { 2.0 * d[j] };
                positive[j] = !positive[j];
            }
            at_least += (sum >= observed - tolerance) as u64;
            at_most += (sum <= observed + tolerance) as u64;
        }
        return (2.0 * at_least.min(at_most) as f64 / flips as f64).min(1.0);
    }
    let mut rng = SplitMix64(mc.seed);
    let mut extreme = 0usize;
    for _ in 0..mc.draws {
        let mut sum = 0.0;
        let mut bits = 0u64;
        for (i, x) in d.iter().enumerate() {
            if i % 64 == 0 {
                bits = rng.next();
            }
            sum += if bits & 1 == 1 { *x } else { -*x };
            bits >>= 1;
        }
        extreme += (sum.abs() >= observed.abs() - tolerance) as usize;
    }
    (1 + extreme) as f64 / (1 + mc.draws) as f64
}

/// Exact enumeration of level orders up to this many levels (8! = 40,320); Monte Carlo above.
pub const EXACT_TREND_LEVELS: usize = 8;

/// Rho values are compared on this grid, so that the same rho reached by two orders counts as
/// one value when the seeds' null distributions are convolved.
const RHO_GRID: f64 = 1e9;

/// A trend's permutation test: Spearman's rho between the levels `x` (distinct) and each seed's
/// per-level values, against the null in which each seed's values are in a random order.
pub struct TrendTest {
    /// Each seed's rho.
    pub rhos: Vec<f64>,
    /// Each seed's exact two-sided p-value (|rho| at least the observed, over all orders).
    pub per_seed_p: Vec<f64>,
    /// The combined two-sided p-value of the mean rho over seeds: its exact null is the
    /// convolution of the seeds' own nulls (each seed's levels permuted independently).
    pub combined_p: f64,
    /// Whether the p-values were drawn (Monte Carlo) rather than enumerated.
    pub drawn: bool,
}

/// Runs the trend test of `ys` (one vector of per-level values per seed) over levels `x`.
/// Seeds whose rho is undefined (constant values) are left out.
pub fn trend_test(x: &[f64], ys: &[Vec<f64>], mc: MonteCarlo) -> TrendTest {
    let ys: Vec<&Vec<f64>> = ys
        .iter()
        .filter(|y| !stats::spearman(x, y).is_nan())
        .collect();
    let rhos: Vec<f64> = ys.iter().map(|y| stats::spearman(x, y)).collect();
    if ys.is_empty() {
        return TrendTest {
            rhos,
            per_seed_p: Vec::new(),
            combined_p: f64::NAN,
            drawn: false,
        };
    }
    if x.len() > EXACT_TREND_LEVELS {
        return trend_monte_carlo(x, &ys, rhos, mc);
    }
    let grid = |r: f64| (r * RHO_GRID).round() as i64;
    let nulls: Vec<BTreeMap<i64, f64>> = ys.iter().map(|y| rho_null(x, y)).collect();
    let tail = |null: &BTreeMap<i64, f64>, observed: i64, slack: i64| -> f64 {
        null.iter()
            .filter(|(v, _)| v.abs() >= observed.abs() - slack)
            .map(|(_, p)| p)
            .sum::<f64>()
            .min(1.0)
    };
    let per_seed_p = nulls
        .iter()
        .zip(&rhos)
        .map(|(null, &r)| tail(null, grid(r), 1))
        .collect();
    // The mean's null: convolve the seeds' nulls on the grid (sums of grid values). Ordered maps
    // keep every sum of probabilities in one order, so two reports agree to the last bit.
    let mut sum_null: BTreeMap<i64, f64> = BTreeMap::from([(0, 1.0)]);
    for null in &nulls {
        let mut next: BTreeMap<i64, f64> = BTreeMap::new();
        for (s, ps) in &sum_null {
            for (v, pv) in null {
                *next.entry(s + v).or_default() += ps * pv;
            }
        }
        sum_null = next;
        if sum_null.len() > 2_000_000 {
            return trend_monte_carlo(x, &ys, rhos, mc);
        }
    }
    let observed: i64 = rhos.iter().map(|&r| grid(r)).sum();
    let combined_p = tail(&sum_null, observed, rhos.len() as i64);
    TrendTest {
        rhos,
        per_seed_p,
        combined_p,
        drawn: false,
    }
}

/// The exact null of rho(x, y in a random order): each distinct value on the grid with its
/// probability over all orders of `y`.
fn rho_null(x: &[f64], y: &[f64]) -> BTreeMap<i64, f64> {
    let mut order: Vec<f64> = y.to_vec();
    let mut counts: BTreeMap<i64, f64> = BTreeMap::new();
    let mut total = 0.0;
    // Heap's algorithm visits every order once.
    let n = order.len();
    let mut c = vec![0usize; n];
    let mut visit = |o: &[f64]| {
        *counts
            .entry((stats::spearman(x, o) * RHO_GRID).round() as i64)
            .or_default() += 1.0;
        total += 1.0;
    };
    visit(&order);
    let mut i = 0;
    while i < n {
        if c[i] < i {
            if i % 2 == 0 {
                order.swap(0, i);
            } else {
                order.swap(c[i], i);
            }
            visit(&order);
            c[i] += 1;
            i = 0;
        } else {
            c[i] = 0;
            i += 1;
        }
    }
    counts.values_mut().for_each(|v| *v /= total);
    counts
}

fn trend_monte_carlo(x: &[f64], ys: &[&Vec<f64>], rhos: Vec<f64>, mc: MonteCarlo) -> TrendTest {
    let mut rng = SplitMix64(mc.seed);
    let observed_mean = mean(&rhos);
    let mut shuffled: Vec<Vec<f64>> = ys.iter().map(|y| y.to_vec()).collect();
    let mut per_seed_extreme = vec![0usize; ys.len()];
    let mut combined_extreme = 0usize;
    for _ in 0..mc.draws {
        let mut sum = 0.0;
        for (s, y) in shuffled.iter_mut().enumerate() {
            for i in (1..y.len()).rev() {
                y.swap(i, rng.below(i + 1));
            }
            let r = stats::spearman(x, y);
            per_seed_extreme[s] += (r.abs() >= rhos[s].abs() - 1e-9) as usize;
            sum += r;
        }
        let m = sum / ys.len() as f64;
        combined_extreme += (m.abs() >= observed_mean.abs() - 1e-9) as usize;
    }
    let p = |extreme: usize| (1 + extreme) as f64 / (1 + mc.draws) as f64;
    TrendTest {
        per_seed_p: per_seed_extreme.into_iter().map(p).collect(),
        combined_p: p(combined_extreme),
        rhos,
        drawn: true,
    }
}

/// Welch's two-sided t-test of mean(b) - mean(a) (scipy's `ttest_ind(b, a, equal_var=False)`):
/// a single run's test of a gap over its samples. NaN below 2 values a side or with no spread.
pub fn welch_p(a: &[f64], b: &[f64]) -> f64 {
    if a.len() < 2 || b.len() < 2 {
        return f64::NAN;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (va, vb) = (sample_sd(a).powi(2) / na, sample_sd(b).powi(2) / nb);
    if va + vb == 0.0 {
        return f64::NAN;
    }
    let t = (mean(b) - mean(a)) / (va + vb).sqrt();
    let df = (va + vb).powi(2) / (va * va / (na - 1.0) + vb * vb / (nb - 1.0));
    (2.0 * dist::t_sf(t.abs(), df)).min(1.0)
}

/// The Mann-Whitney U test's two-sided p-value, normal approximation with the tie correction
/// and continuity correction (scipy's `mannwhitneyu(..., method="asymptotic")`): a single run's
/// test of an AUROC against 0.5 over its samples.
pub fn mann_whitney_p(x: &[f64], y: &[f64]) -> f64 {
    if x.is_empty() || y.is_empty() {
        return f64::NAN;
    }
    let (n1, n2) = (x.len() as f64, y.len() as f64);
    let all: Vec<f64> = x.iter().chain(y).copied().collect();
    let ranks = stats::average_ranks(&all);
    let r1: f64 = ranks[..x.len()].iter().sum();
    let u1 = r1 - n1 * (n1 + 1.0) / 2.0;
    let u = u1.max(n1 * n2 - u1);
    let n = n1 + n2;
    let mut sorted = all;
    sorted.sort_by(f64::total_cmp);
    let mut ties = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j] == sorted[i] {
            j += 1;
        }
        let t = (j - i) as f64;
        ties += t * t * t - t;
        i = j;
    }
    let s = (n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)))).sqrt();
    if s == 0.0 {
        return 1.0;
    }
    let z = (u - n1 * n2 / 2.0 - 0.5) / s;
    (2.0 * dist::ndtr(-z)).clamp(0.0, 1.0)
}

/// The two-sided p-value of Spearman's rho over `n` pairs from the t distribution with n - 2
/// degrees of freedom (scipy's `spearmanr(...).pvalue`): a single run's test of a trend over its
/// samples.
pub fn spearman_t_p(rho: f64, n: usize) -> f64 {
    if rho.is_nan() || n < 3 {
        return f64::NAN;
    }
    if rho.abs() >= 1.0 {
        return 0.0;
    }
    let df = n as f64 - 2.0;
    let t = rho * (df / ((1.0 + rho) * (1.0 - rho))).sqrt();
    (2.0 * dist::t_sf(t.abs(), df)).min(1.0)
}

/// Holm's step-down adjusted p-values (family-wise error; statsmodels' `multipletests(p,
/// method="holm")`). NaN entries are not tests: they stay NaN and do not count in the family.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let order = finite_order(p);
    let m = order.len();
    let mut out = vec![f64::NAN; p.len()];
    let mut running = 0.0_f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
}

/// Benjamini-Hochberg's adjusted p-values, or q-values (false discovery rate; statsmodels'
/// `multipletests(p, method="fdr_bh")`). NaN entries stay NaN and do not count.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let order = finite_order(p);
    let m = order.len();
    let mut out = vec![f64::NAN; p.len()];
    let mut running = 1.0_f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min((m as f64 * p[i] / (rank + 1) as f64).min(1.0));
        out[i] = running;
    }
    out
}

/// Indices of the non-NaN entries, ascending by value (stable).
fn finite_order(p: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| !p[i].is_nan()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    order
}

#[cfg(test)]
#[path = "inference_tests.rs"]
mod tests;

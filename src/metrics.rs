//! Metric names, their parameters, and the column layout every kernel and the reference share.
//!
//! Definitions (docs/metrics.md; `h` one activation vector of width d, `a = |h|`):
//! - `l1`, `l2`: ||h||_1, ||h||_2.
//! - `hoyer`: (sqrt(d) - ||h||_1/||h||_2) / (sqrt(d) - 1). Higher = sparser.
//! - `participation_ratio`: (sum h^2)^2 / sum h^4 / d. Lower = sparser.
//! - `eff_rank`: p = h^2/||h||_2^2; exp(-sum p ln(p + 1e-10)) / d. Lower = sparser.
//! - `eff_rank_l1`: q = |h|/||h||_1 + 1e-10; exp(-sum q ln q) / d. Lower = sparser.
//! - `l0_mean_std`: fraction of i with a_i > mean(a) + std(a) (population std). Lower = sparser.
//! - `kurtosis`: excess kurtosis of the entries, m4/m2^2 - 3 with central moments; undefined
//!   when var(h / max|h|) <= 1e-8, a spread f32 cannot resolve.
//! - `near_zero@eps`: fraction of i with a_i <= eps; `near_zero_rel@r`: a_i <= r * max(a).
//! - `nonfinite`: count of NaN/Inf entries.
//! - `topk_energy@f`: k = max(1, floor(f d)); sum of the k largest h^2 / sum h^2. Higher = sparser.
//! - `gini`: a sorted ascending, i = 1..d: sum (2i - d - 1) a_(i) / (d sum a), which equals
//!   2 sum i a_(i) / (d sum a) - (d + 1)/d without its cancellation. Higher = sparser.
//! - `max_over_median`: max a / median a (numpy's median: the mean of the middle two for even d);
//!   undefined when the median is 0.
//!
//! Across a probe set's vectors (one value per site, position and probe set):
//! - `active_fraction@eps`: per neuron i, the fraction of vectors with a_i > eps; reported as its
//!   mean over neurons (`std` across neurons). With ReLU, `active_fraction@0` counts h_i > 0.
//! - `dead_fraction@eps`: the fraction of neurons with a_i > eps in no vector.
//! - `rankme`: the effective rank exp(-sum p ln p), p = lambda / sum lambda, of the eigenvalues
//!   lambda of the vectors' covariance (centred, n - 1): between 1 and d. The covariance is
//!   computed on the device; its spectrum on the host from the d x d matrix.
//!
//! A value that is undefined for a vector (a ratio with a zero norm, hoyer at d = 1, kurtosis of
//! a constant vector) is NaN for that vector and left out of its aggregate, as is every metric of
//! a vector holding a NaN or Inf; `n` says how many vectors each aggregate is over.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What `probes.metrics` holds when the config says nothing.
pub const DEFAULT_METRICS: &[MetricSpec] = &[
    MetricSpec::L1,
    MetricSpec::L2,
    MetricSpec::Hoyer,
    MetricSpec::ParticipationRatio,
    MetricSpec::EffRank,
    MetricSpec::EffRankL1,
    MetricSpec::L0MeanStd,
    MetricSpec::Kurtosis,
    MetricSpec::NearZero(0.001),
    MetricSpec::NearZeroRel(0.01),
    MetricSpec::TopkEnergy(0.01),
    MetricSpec::TopkEnergy(0.05),
    MetricSpec::TopkEnergy(0.1),
    MetricSpec::Gini,
    MetricSpec::MaxOverMedian,
    MetricSpec::Nonfinite,
];

/// Metrics, sites and positions are written in configs (and read back) as their names, e.g.
/// `topk_energy@0.05`, `mlp.post`, `last`; a bad name fails at load with its field path.
macro_rules! serde_by_name {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    )*};
}
serde_by_name!(MetricSpec, SiteKind, Position);

/// One per-vector metric with its parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricSpec {
    L1,
    L2,
    Hoyer,
    ParticipationRatio,
    EffRank,
    EffRankL1,
    L0MeanStd,
    Kurtosis,
    NearZero(f64),
    NearZeroRel(f64),
    Nonfinite,
    TopkEnergy(f64),
    Gini,
    MaxOverMedian,
    ActiveFraction(f64),
    DeadFraction(f64),
    Rankme,
}

impl MetricSpec {
    /// The metric the end-of-run table shows: the paper's (top-5% energy) if it is measured,
    /// else Hoyer, else the first measured.
    pub fn headline(measured: &[MetricSpec]) -> MetricSpec {
        [MetricSpec::TopkEnergy(0.05), MetricSpec::Hoyer]
            .into_iter()
            .find(|m| measured.contains(m))
            .unwrap_or(measured[0])
    }

    /// Whether a sparser vector (or probe set) has a higher value: the "sparser means" column of
    /// docs/metrics.md. `None` for what does not measure sparsity: scale (`l1`, `l2`), tails
    /// (`kurtosis`), health (`nonfinite`) and `rankme` (diversity across vectors).
    pub fn sparser_when_higher(&self) -> Option<bool> {
        use MetricSpec::*;
        match self {
            TopkEnergy(_) | Gini | MaxOverMedian | Hoyer | NearZero(_) | NearZeroRel(_)
            | DeadFraction(_) => Some(true),
            EffRank | EffRankL1 | ParticipationRatio | L0MeanStd | ActiveFraction(_) => Some(false),
            L1 | L2 | Kurtosis | Nonfinite | Rankme => None,
        }
    }

    /// True for metrics of one vector; false for those taken across a probe set's vectors.
    pub fn is_per_vector(&self) -> bool {
        !matches!(
            self,
            MetricSpec::ActiveFraction(_) | MetricSpec::DeadFraction(_) | MetricSpec::Rankme
        )
    }
}

impl FromStr for MetricSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, param) = match s.split_once('@') {
            Some((n, p)) => (n, Some(p)),
            None => (s, None),
        };
        let number = |p: Option<&str>| -> Result<f64, String> {
            let p = p.ok_or_else(|| format!("{name} needs a parameter: {name}@VALUE"))?;
            p.parse::<f64>()
                .map_err(|_| format!("{s:?}: {p:?} is not a number"))
        };
        let plain = |m: MetricSpec| match param {
            None => Ok(m),
            Some(_) => Err(format!("{name} takes no parameter")),
        };
        match name {
            "l1" => plain(MetricSpec::L1),
            "l2" => plain(MetricSpec::L2),
            "hoyer" => plain(MetricSpec::Hoyer),
            "participation_ratio" => plain(MetricSpec::ParticipationRatio),
            "eff_rank" => plain(MetricSpec::EffRank),
            "eff_rank_l1" => plain(MetricSpec::EffRankL1),
            "l0_mean_std" => plain(MetricSpec::L0MeanStd),
            "kurtosis" => plain(MetricSpec::Kurtosis),
            "nonfinite" => plain(MetricSpec::Nonfinite),
            "gini" => plain(MetricSpec::Gini),
            "max_over_median" => plain(MetricSpec::MaxOverMedian),
            "rankme" => plain(MetricSpec::Rankme),
            "active_fraction" | "dead_fraction" => {
                let eps = number(param)?;
                if !(eps.is_finite() && eps >= 0.0) {
                    return Err(format!("{s:?}: eps must be a finite number >= 0"));
                }
                Ok(if name == "active_fraction" {
                    MetricSpec::ActiveFraction(eps)
                } else {
                    MetricSpec::DeadFraction(eps)
                })
            }
            "topk_energy" => {
                let f = number(param)?;
                if f > 0.0 && f <= 1.0 {
                    Ok(MetricSpec::TopkEnergy(f))
                } else {
                    Err(format!("{s:?}: the fraction must be within (0, 1]"))
                }
            }
            "near_zero" => {
                let eps = number(param)?;
                if eps.is_finite() && eps >= 0.0 {
                    Ok(MetricSpec::NearZero(eps))
                } else {
                    Err(format!("{s:?}: eps must be a finite number >= 0"))
                }
            }
            "near_zero_rel" => {
                let r = number(param)?;
                if (0.0..=1.0).contains(&r) {
                    Ok(MetricSpec::NearZeroRel(r))
                } else {
                    Err(format!("{s:?}: the ratio must be within [0, 1]"))
                }
            }
            _ => Err(format!(
                "unknown metric {s:?}; known: l1, l2, hoyer, participation_ratio, eff_rank, \
                 eff_rank_l1, l0_mean_std, kurtosis, near_zero@EPS, near_zero_rel@R, \
                 topk_energy@F, gini, max_over_median, nonfinite, active_fraction@EPS, \
                 dead_fraction@EPS, rankme"
            )),
        }
    }
}

impl fmt::Display for MetricSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricSpec::L1 => f.write_str("l1"),
            MetricSpec::L2 => f.write_str("l2"),
            MetricSpec::Hoyer => f.write_str("hoyer"),
            MetricSpec::ParticipationRatio => f.write_str("participation_ratio"),
            MetricSpec::EffRank => f.write_str("eff_rank"),
            MetricSpec::EffRankL1 => f.write_str("eff_rank_l1"),
            MetricSpec::L0MeanStd => f.write_str("l0_mean_std"),
            MetricSpec::Kurtosis => f.write_str("kurtosis"),
            MetricSpec::NearZero(eps) => write!(f, "near_zero@{eps}"),
            MetricSpec::NearZeroRel(r) => write!(f, "near_zero_rel@{r}"),
            MetricSpec::Nonfinite => f.write_str("nonfinite"),
            MetricSpec::TopkEnergy(frac) => write!(f, "topk_energy@{frac}"),
            MetricSpec::Gini => f.write_str("gini"),
            MetricSpec::MaxOverMedian => f.write_str("max_over_median"),
            MetricSpec::ActiveFraction(eps) => write!(f, "active_fraction@{eps}"),
            MetricSpec::DeadFraction(eps) => write!(f, "dead_fraction@{eps}"),
            MetricSpec::Rankme => f.write_str("rankme"),
        }
    }
}

/// The site name of the rows measured on the model's output rather than on activations.
pub const LOGITS_SITE: &str = "logits";

/// What a probe set's logits are scored by (site `logits`, position `last`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsMetric {
    /// The mean next-token cross-entropy over the sample's tokens (for the rule graph, the
    /// answer's included).
    NextTokenLoss,
    /// The mean next-token cross-entropy over the prompt's own tokens: each token after the
    /// first, predicted from those before it; no answer, no continuation. What a detector can
    /// compute without the label. NaN for a one-token prompt.
    PromptLoss,
    /// Rule-graph answers: the answer token's cross-entropy.
    AnswerLoss,
    /// Rule-graph answers: whether the answer is the most likely token.
    AnswerAcc,
    /// Multiple choice: whether the correct option has the lowest length-normalised loss.
    ChoiceAcc,
    /// Rule-graph answers: whether the frequency prior (the most common training tail of the
    /// prompt's last read token, `data::rulegraph::Prior`) is the answer. Depends on the probe
    /// set and the training facts only: the same at every step; what `answer_acc` must beat to
    /// show more than familiarity with a relation's tails.
    PriorAcc,
}

impl LogitsMetric {
    pub fn name(self) -> &'static str {
        match self {
            LogitsMetric::NextTokenLoss => "next_token_loss",
            LogitsMetric::PromptLoss => "prompt_loss",
            LogitsMetric::AnswerLoss => "answer_loss",
            LogitsMetric::AnswerAcc => "answer_acc",
            LogitsMetric::ChoiceAcc => "choice_acc",
            LogitsMetric::PriorAcc => "prior_acc",
        }
    }
}

/// The columns of the per-vector metric table: first those the moments kernel writes (the fixed
/// columns, then one per near-zero threshold), then, when any order statistic is asked for,
/// those the order kernel writes (gini, max_over_median, then one per top-k fraction). The
/// reference computes the same table.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    pub near_zero: Vec<f32>,
    pub near_zero_rel: Vec<f32>,
    /// Whether the order kernel runs (it sorts every row, so it runs only when asked).
    pub order: bool,
    pub topk: Vec<f64>,
}

impl Columns {
    pub const NONFINITE: usize = 0;
    pub const L1: usize = 1;
    pub const L2: usize = 2;
    pub const HOYER: usize = 3;
    pub const PARTICIPATION_RATIO: usize = 4;
    pub const EFF_RANK: usize = 5;
    pub const EFF_RANK_L1: usize = 6;
    pub const L0_MEAN_STD: usize = 7;
    pub const KURTOSIS: usize = 8;
    pub const FIXED: usize = 9;
    /// Offsets within the order kernel's columns.
    pub const GINI: usize = 0;
    pub const MAX_OVER_MEDIAN: usize = 1;
    pub const ORDER_FIXED: usize = 2;

    /// The layout that covers `metrics` (parameters deduplicated, in first-seen order).
    pub fn for_metrics(metrics: &[MetricSpec]) -> Self {
        let mut cols = Columns {
            near_zero: Vec::new(),
            near_zero_rel: Vec::new(),
            order: false,
            topk: Vec::new(),
        };
        for m in metrics {
            match *m {
                MetricSpec::NearZero(e) if !cols.near_zero.contains(&(e as f32)) => {
                    cols.near_zero.push(e as f32)
                }
                MetricSpec::NearZeroRel(r) if !cols.near_zero_rel.contains(&(r as f32)) => {
                    cols.near_zero_rel.push(r as f32)
                }
                MetricSpec::TopkEnergy(f) => {
                    cols.order = true;
                    if !cols.topk.contains(&f) {
                        cols.topk.push(f);
                    }
                }
                MetricSpec::Gini | MetricSpec::MaxOverMedian => cols.order = true,
                _ => {}
            }
        }
        cols
    }

    /// Columns the moments kernel writes.
    pub fn moments_count(&self) -> usize {
        Self::FIXED + self.near_zero.len() + self.near_zero_rel.len()
    }

    /// Columns the order kernel writes (0 when it does not run).
    pub fn order_count(&self) -> usize {
        if self.order {
            Self::ORDER_FIXED + self.topk.len()
        } else {
            0
        }
    }

    pub fn count(&self) -> usize {
        self.moments_count() + self.order_count()
    }

    /// Each column's metric name in layout order, as configs write them (`near_zero@0.001`), so
    /// a check that compares the table column by column can name what failed.
    pub fn names(&self) -> Vec<String> {
        use MetricSpec::*;
        let fixed = [
            Nonfinite,
            L1,
            L2,
            Hoyer,
            ParticipationRatio,
            EffRank,
            EffRankL1,
            L0MeanStd,
            Kurtosis,
        ];
        let mut names: Vec<String> = fixed.iter().map(MetricSpec::to_string).collect();
        // The thresholds are stored as f32: their own Display gives the name a config would use.
        names.extend(self.near_zero.iter().map(|e| format!("near_zero@{e}")));
        names.extend(
            self.near_zero_rel
                .iter()
                .map(|r| format!("near_zero_rel@{r}")),
        );
        if self.order {
            names.extend([Gini.to_string(), MaxOverMedian.to_string()]);
            names.extend(self.topk.iter().map(|&f| TopkEnergy(f).to_string()));
        }
        debug_assert_eq!(names.len(), self.count());
        names
    }

    /// The k of each top-k fraction at width `d`: max(1, floor(f d)).
    pub fn topk_counts(&self, d: usize) -> Vec<usize> {
        self.topk
            .iter()
            .map(|f| ((f * d as f64).floor() as usize).max(1))
            .collect()
    }

    /// The column holding `metric`.
    pub fn column(&self, metric: &MetricSpec) -> usize {
        let order = self.moments_count();
        match *metric {
            MetricSpec::Nonfinite => Self::NONFINITE,
            MetricSpec::L1 => Self::L1,
            MetricSpec::L2 => Self::L2,
            MetricSpec::Hoyer => Self::HOYER,
            MetricSpec::ParticipationRatio => Self::PARTICIPATION_RATIO,
            MetricSpec::EffRank => Self::EFF_RANK,
            MetricSpec::EffRankL1 => Self::EFF_RANK_L1,
            MetricSpec::L0MeanStd => Self::L0_MEAN_STD,
            MetricSpec::Kurtosis => Self::KURTOSIS,
            MetricSpec::NearZero(e) => {
                Self::FIXED + self.near_zero.iter().position(|&x| x == e as f32).unwrap()
            }
            MetricSpec::NearZeroRel(r) => {
                Self::FIXED
                    + self.near_zero.len()
                    + self
                        .near_zero_rel
                        .iter()
                        .position(|&x| x == r as f32)
                        .unwrap()
            }
            MetricSpec::Gini => order + Self::GINI,
            MetricSpec::MaxOverMedian => order + Self::MAX_OVER_MEDIAN,
            MetricSpec::TopkEnergy(f) => {
                order + Self::ORDER_FIXED + self.topk.iter().position(|&x| x == f).unwrap()
            }
            MetricSpec::ActiveFraction(_) | MetricSpec::DeadFraction(_) | MetricSpec::Rankme => {
                panic!("{metric} is taken across vectors and has no per-vector column")
            }
        }
    }
}

/// Where in the model a vector is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteKind {
    /// The residual stream after block i.
    ResidPost,
    /// The MLP's hidden activation after the nonlinearity, before its output projection.
    MlpPost,
    /// The attention sublayer's output (after its output projection), before the residual add.
    AttnOut,
    /// The final hidden state after the final LayerNorm (the paper's "last hidden state").
    FinalNorm,
}

impl FromStr for SiteKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "resid_post" => Ok(SiteKind::ResidPost),
            "mlp.post" => Ok(SiteKind::MlpPost),
            "attn.out" => Ok(SiteKind::AttnOut),
            "final.norm" => Ok(SiteKind::FinalNorm),
            _ => Err(format!(
                "unknown site {s:?}; known: resid_post, mlp.post, attn.out, final.norm"
            )),
        }
    }
}

impl fmt::Display for SiteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

impl SiteKind {
    /// The suffix of the site's full name (`blocks.{i}.` + suffix, or the name itself).
    pub fn suffix(self) -> &'static str {
        match self {
            SiteKind::ResidPost => "resid_post",
            SiteKind::MlpPost => "mlp.post",
            SiteKind::AttnOut => "attn.out",
            SiteKind::FinalNorm => "final.norm",
        }
    }
}

/// Which token positions of each probe sample are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Position {
    /// The last prompt token: the one whose state predicts the answer (the paper's choice).
    Last,
    /// Every prompt token.
    All,
}

impl FromStr for Position {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "last" => Ok(Position::Last),
            "all" => Ok(Position::All),
            _ => Err(format!("unknown position {s:?}; known: last, all")),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Position {
    pub fn name(self) -> &'static str {
        match self {
            Position::Last => "last",
            Position::All => "all",
        }
    }
}

/// The effective rank of a symmetric d x d matrix (row-major): exp(-sum p ln p) over its
/// eigenvalues clamped at 0, p = lambda / sum lambda. NaN when every eigenvalue is 0.
pub fn effective_rank(matrix: &[f64], d: usize) -> f64 {
    let m = nalgebra::DMatrix::from_row_slice(d, d, matrix);
    let eigenvalues = m.symmetric_eigenvalues();
    let total: f64 = eigenvalues.iter().map(|l| l.max(0.0)).sum();
    if total <= 0.0 {
        return f64::NAN;
    }
    let entropy: f64 = eigenvalues
        .iter()
        .map(|l| l.max(0.0) / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    entropy.exp()
}

/// One aggregate over a probe set's vectors: mean and sample std (n - 1) of the defined values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub std: f64,
    pub n: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_round_trip_through_display() {
        for spec in DEFAULT_METRICS {
            let name = spec.to_string();
            assert_eq!(name.parse::<MetricSpec>().unwrap(), *spec, "{name}");
        }
        for name in ["resid_post", "mlp.post", "attn.out", "final.norm"] {
            assert_eq!(name.parse::<SiteKind>().unwrap().to_string(), name);
        }
        for name in ["last", "all"] {
            assert_eq!(name.parse::<Position>().unwrap().to_string(), name);
        }
    }

    /// `names` labels each column with the metric `column` puts there.
    #[test]
    fn column_names_follow_the_layout() {
        let cols = Columns::for_metrics(DEFAULT_METRICS);
        let names = cols.names();
        assert_eq!(names.len(), cols.count());
        for metric in DEFAULT_METRICS {
            assert_eq!(names[cols.column(metric)], metric.to_string(), "{metric}");
        }
    }

    #[test]
    fn bad_metric_names_say_why() {
        assert!(
            "near_zero"
                .parse::<MetricSpec>()
                .unwrap_err()
                .contains("parameter")
        );
        assert!(
            "near_zero@x"
                .parse::<MetricSpec>()
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            "near_zero_rel@2"
                .parse::<MetricSpec>()
                .unwrap_err()
                .contains("[0, 1]")
        );
        assert!(
            "hoyer@1"
                .parse::<MetricSpec>()
                .unwrap_err()
                .contains("no parameter")
        );
        assert!(
            "sparsity"
                .parse::<MetricSpec>()
                .unwrap_err()
                .contains("unknown metric")
        );
        assert!(
            "topk_energy@0"
                .parse::<MetricSpec>()
                .unwrap_err()
                .contains("(0, 1]")
        );
    }

    #[test]
    fn effective_rank_counts_equal_directions() {
        // diag(1, 1, 1, 0): three equal directions.
        let mut m = vec![0.0; 16];
        for i in 0..3 {
            m[i * 5] = 1.0;
        }
        assert!((effective_rank(&m, 4) - 3.0).abs() < 1e-9);
        assert!(effective_rank(&[0.0; 4], 2).is_nan());
        // One dominant direction gives a rank near 1.
        assert!(effective_rank(&[1.0, 0.0, 0.0, 1e-9], 2) < 1.001);
    }

    #[test]
    fn columns_deduplicate_thresholds() {
        let metrics: Vec<MetricSpec> =
            ["near_zero@0.1", "near_zero@0.1", "near_zero_rel@0.5", "l1"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
        let cols = Columns::for_metrics(&metrics);
        assert_eq!(cols.count(), Columns::FIXED + 2);
        assert_eq!(cols.column(&metrics[2]), Columns::FIXED + 1);
        assert!(!cols.order, "no order statistic asked for, no sort");
        let with_order: Vec<MetricSpec> = ["topk_energy@0.05", "l1", "topk_energy@0.05", "gini"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let cols = Columns::for_metrics(&with_order);
        assert_eq!(cols.count(), Columns::FIXED + Columns::ORDER_FIXED + 1);
        assert_eq!(
            cols.column(&with_order[0]),
            Columns::FIXED + Columns::ORDER_FIXED
        );
        assert_eq!(cols.topk_counts(10), vec![1]);
        assert_eq!(cols.topk_counts(100), vec![5]);
    }
}

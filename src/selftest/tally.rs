//! How a check's comparisons are judged and collected: the tolerance or bound each value must
//! keep, and per metric the comparison that came closest to failing.

use serde::Serialize;

/// A deliberate error in what a check expects: `want + shift * max(|want|, 1)` for every value
/// of `metric`. Only the test that proves a wrong value fails, naming its metric, uses it.
#[derive(Debug, Clone)]
pub struct Perturbation {
    pub metric: String,
    pub shift: f64,
}

/// The bound a row's value must keep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    AtMost(f64),
    Below(f64),
    Above(f64),
}

impl Limit {
    /// Whether `value` keeps the bound; NaN never does.
    pub fn holds(self, value: f64) -> bool {
        match self {
            Limit::AtMost(l) => value <= l,
            Limit::Below(l) => value < l,
            Limit::Above(l) => value > l,
        }
    }

    pub(super) fn text(self) -> String {
        match self {
            Limit::AtMost(l) => format!("<= {}", number(l)),
            Limit::Below(l) => format!("< {}", number(l)),
            Limit::Above(l) => format!("> {}", number(l)),
        }
    }
}

/// One metric of one check: the comparison that came closest to failing, and how many were made.
#[derive(Debug, Clone, Serialize)]
pub struct MetricRow {
    pub metric: String,
    /// The largest error relative to its tolerance: the error there (for a bound, the value).
    pub value: f64,
    /// The tolerance at that comparison (for a bound, the bound).
    pub limit: Limit,
    pub compared: usize,
    pub failed: usize,
    /// Where `value` was found (width, kind of row, column...).
    pub at: String,
    #[serde(skip)]
    worst_ratio: f64,
}

impl MetricRow {
    pub fn passed(&self) -> bool {
        self.failed == 0
    }
}

/// Collects a check's comparisons, one row per metric in first-seen order.
pub(super) struct Tally {
    rows: Vec<MetricRow>,
    perturbation: Option<Perturbation>,
}

impl Tally {
    pub(super) fn new(perturbation: Option<Perturbation>) -> Tally {
        Tally {
            rows: Vec::new(),
            perturbation,
        }
    }

    /// One row per metric, in first-seen order.
    pub(super) fn into_rows(self) -> Vec<MetricRow> {
        self.rows
    }

    fn row(&mut self, metric: &str) -> &mut MetricRow {
        let at = match self.rows.iter().position(|r| r.metric == metric) {
            Some(at) => at,
            None => {
                self.rows.push(MetricRow {
                    metric: metric.to_string(),
                    value: 0.0,
                    limit: Limit::AtMost(0.0),
                    compared: 0,
                    failed: 0,
                    at: String::new(),
                    worst_ratio: -1.0,
                });
                self.rows.len() - 1
            }
        };
        &mut self.rows[at]
    }

    /// `got` against `want` within `tolerance`; NaN matches only NaN (an undefined value must
    /// stay undefined).
    pub(super) fn compare(
        &mut self,
        metric: &str,
        got: f64,
        want: f64,
        tolerance: f64,
        at: impl FnOnce() -> String,
    ) {
        let want = match &self.perturbation {
            Some(p) if p.metric == metric => want + p.shift * want.abs().max(1.0),
            _ => want,
        };
        // A tolerance relative to an undefined value is itself NaN: matched NaNs pass first.
        let (error, passed) = match (got.is_nan(), want.is_nan()) {
            (true, true) => (0.0, true),
            (false, false) => ((got - want).abs(), (got - want).abs() <= tolerance),
            _ => (f64::INFINITY, false),
        };
        let ratio = if error == 0.0 {
            0.0
        } else if tolerance > 0.0 {
            error / tolerance
        } else {
            f64::INFINITY
        };
        let row = self.row(metric);
        row.compared += 1;
        if !passed {
            row.failed += 1;
        }
        if ratio > row.worst_ratio {
            row.worst_ratio = ratio;
            row.value = error;
            row.limit = Limit::AtMost(tolerance);
            row.at = format!("{} (got {}, want {})", at(), number(got), number(want));
        }
    }

    /// One value that must keep `limit`.
    pub(super) fn bound(&mut self, metric: &str, value: f64, limit: Limit, at: String) {
        let row = self.row(metric);
        row.compared += 1;
        if !limit.holds(value) {
            row.failed += 1;
        }
        row.value = value;
        row.limit = limit;
        row.at = at;
    }
}

/// A number short enough for the table: integers as such, the rest in 4 significant digits.
pub(super) fn number(x: f64) -> String {
    if x.is_finite() && x == x.trunc() && x.abs() < 1e9 {
        format!("{x}")
    } else if x.is_finite() && (1e-3..1e4).contains(&x.abs()) {
        format!("{x:.4}")
    } else {
        format!("{x:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_fail_on_nan() {
        for limit in [Limit::AtMost(1.0), Limit::Below(0.0), Limit::Above(0.0)] {
            assert!(!limit.holds(f64::NAN), "{limit:?}");
        }
        let mut tally = Tally::new(None);
        tally.compare("x", f64::NAN, 1.0, 1.0, String::new);
        tally.compare("x", 1.0, f64::NAN, 1.0, String::new);
        tally.compare("x", f64::NAN, f64::NAN, 0.0, String::new);
        // A tolerance relative to an undefined reference value is NaN too.
        tally.compare("x", f64::NAN, f64::NAN, f64::NAN, String::new);
        assert_eq!((tally.rows[0].compared, tally.rows[0].failed), (4, 2));
    }
}

//! The f64 CPU reference: the metrics exactly as `metrics.rs` defines them, written for clarity
//! rather than speed. Every WGSL kernel is tested against it, and `device: cpu` uses it.

use rayon::prelude::*;

use crate::metrics::{Columns, MetricSpec, Summary, effective_rank};

/// Kurtosis is NaN when var(h / max|h|) is at most this: the spread is below f32 resolution.
pub const MIN_KURTOSIS_VAR: f64 = 1e-8;

/// Per-vector metrics of one row in `cols`' layout. Undefined values are NaN; a row holding a NaN
/// or Inf gets its non-finite count and NaN everywhere else.
pub fn row_metrics(row: &[f32], cols: &Columns) -> Vec<f64> {
    let mut out = vec![f64::NAN; cols.count()];
    let nonfinite = row.iter().filter(|x| !x.is_finite()).count();
    out[Columns::NONFINITE] = nonfinite as f64;
    if nonfinite > 0 {
        return out;
    }
    let d = row.len() as f64;
    let h: Vec<f64> = row.iter().map(|&x| x as f64).collect();
    let a: Vec<f64> = h.iter().map(|x| x.abs()).collect();
    let l1: f64 = a.iter().sum();
    let s2: f64 = h.iter().map(|x| x * x).sum();
    let s4: f64 = h.iter().map(|x| x.powi(4)).sum();
    let max_a = a.iter().cloned().fold(0.0, f64::max);

    out[Columns::L1] = l1;
    out[Columns::L2] = s2.sqrt();
    if s2 > 0.0 {
        if d > 1.0 {
            out[Columns::HOYER] = (d.sqrt() - l1 / s2.sqrt()) / (d.sqrt() - 1.0);
        }
        out[Columns::PARTICIPATION_RATIO] = s2 * s2 / s4 / d;
        let entropy: f64 = h
            .iter()
            .map(|x| {
                let p = x * x / s2;
                p * (p + 1e-10).ln()
            })
            .sum();
        out[Columns::EFF_RANK] = (-entropy).exp() / d;
        let entropy_l1: f64 = a
            .iter()
            .map(|x| {
                let q = x / l1 + 1e-10;
                q * q.ln()
            })
            .sum();
        out[Columns::EFF_RANK_L1] = (-entropy_l1).exp() / d;
    }

    let mean_a = l1 / d;
    let std_a = (a.iter().map(|x| (x - mean_a).powi(2)).sum::<f64>() / d).sqrt();
    out[Columns::L0_MEAN_STD] = a.iter().filter(|&&x| x > mean_a + std_a).count() as f64 / d;

    let mean_h = h.iter().sum::<f64>() / d;
    let m2 = h.iter().map(|x| (x - mean_h).powi(2)).sum::<f64>() / d;
    let m4 = h.iter().map(|x| (x - mean_h).powi(4)).sum::<f64>() / d;
    // Undefined when the spread is below what f32 resolves (see MIN_KURTOSIS_VAR in the shader).
    if max_a > 0.0 && m2 / (max_a * max_a) > MIN_KURTOSIS_VAR {
        out[Columns::KURTOSIS] = m4 / (m2 * m2) - 3.0;
    }

    for (i, &eps) in cols.near_zero.iter().enumerate() {
        let count = a.iter().filter(|&&x| x <= eps as f64).count();
        out[Columns::FIXED + i] = count as f64 / d;
    }
    for (i, &r) in cols.near_zero_rel.iter().enumerate() {
        let count = a.iter().filter(|&&x| x <= r as f64 * max_a).count();
        out[Columns::FIXED + cols.near_zero.len() + i] = count as f64 / d;
    }
    if cols.order {
        order_statistics(&a, cols, &mut out[cols.moments_count()..]);
    }
    out
}

/// gini, max_over_median and the top-k energies of the magnitudes `a`, from a sorted copy.
fn order_statistics(a: &[f64], cols: &Columns, out: &mut [f64]) {
    let d = a.len();
    let mut sorted = a.to_vec();
    sorted.sort_by(f64::total_cmp);
    let sum: f64 = sorted.iter().sum();
    if sum > 0.0 {
        let weighted: f64 = sorted
            .iter()
            .enumerate()
            .map(|(i, x)| (2.0 * (i + 1) as f64 - d as f64 - 1.0) * x)
            .sum();
        out[Columns::GINI] = weighted / (d as f64 * sum);
    }
    let median = if d % 2 == 1 {
        sorted[d / 2]
    } else {
        (sorted[d / 2 - 1] + sorted[d / 2]) / 2.0
    };
    if median > 0.0 {
        out[Columns::MAX_OVER_MEDIAN] = sorted[d - 1] / median;
    }
    let energy: f64 = sorted.iter().map(|x| x * x).sum();
    if energy > 0.0 {
        for (i, k) in cols.topk_counts(d).into_iter().enumerate() {
            let top: f64 = sorted[d - k..].iter().map(|x| x * x).sum();
            out[Columns::ORDER_FIXED + i] = top / energy;
        }
    }
}

/// Per-vector metrics of every row of a row-major `[rows, width]` matrix. Rows are independent,
/// so they are computed in parallel; the result is in row order and the same on any core count.
pub fn matrix_metrics(data: &[f32], width: usize, cols: &Columns) -> Vec<Vec<f64>> {
    data.par_chunks(width)
        .map(|row| row_metrics(row, cols))
        .collect()
}

/// The values of one column that take part in its aggregates (see `aggregate`).
fn valid_values(per_row: &[Vec<f64>], column: usize) -> Vec<f64> {
    per_row
        .iter()
        .filter(|r| column == Columns::NONFINITE || r[Columns::NONFINITE] == 0.0)
        .map(|r| r[column])
        .filter(|v| v.is_finite())
        .collect()
}

/// Quantiles of one column over its valid values, with numpy's default linear interpolation;
/// NaN when there are none.
pub fn quantiles(per_row: &[Vec<f64>], column: usize, qs: &[f64]) -> Vec<f64> {
    let mut values = valid_values(per_row, column);
    values.sort_by(f64::total_cmp);
    let n = values.len();
    qs.iter()
        .map(|q| {
            if n == 0 {
                return f64::NAN;
            }
            let pos = q * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            values[lo] + (pos - lo as f64) * (values[hi] - values[lo])
        })
        .collect()
}

/// Aggregates one column over rows: the non-finite column over every row, any other column over
/// the rows whose input was finite and whose value is defined.
pub fn aggregate(per_row: &[Vec<f64>], column: usize) -> Summary {
    summarize(&valid_values(per_row, column))
}

/// An across-vector metric (`active_fraction@eps`, `dead_fraction@eps`, `rankme`) of the rows of
/// `data` whose per-row metrics say they are finite. `n` is the number of those rows; `std` is
/// across neurons for `active_fraction` and NaN otherwise.
pub fn across_vectors(
    data: &[f32],
    width: usize,
    per_row: &[Vec<f64>],
    metric: &MetricSpec,
) -> Summary {
    let rows: Vec<&[f32]> = data
        .chunks(width)
        .zip(per_row)
        .filter(|(_, m)| m[Columns::NONFINITE] == 0.0)
        .map(|(r, _)| r)
        .collect();
    let n = rows.len();
    let active = |eps: f64| -> Vec<f64> {
        (0..width)
            .map(|i| rows.iter().filter(|r| (r[i] as f64).abs() > eps).count() as f64 / n as f64)
            .collect()
    };
    match *metric {
        MetricSpec::ActiveFraction(eps) => Summary {
            n: n as u64,
            ..summarize(&active(eps))
        },
        MetricSpec::DeadFraction(eps) => {
            let per_neuron = active(eps);
            let dead = per_neuron.iter().filter(|&&f| f == 0.0).count();
            Summary {
                mean: dead as f64 / width as f64,
                std: f64::NAN,
                n: n as u64,
            }
        }
        MetricSpec::Rankme => {
            let mean: Vec<f64> = (0..width)
                .map(|i| rows.iter().map(|r| r[i] as f64).sum::<f64>() / n as f64)
                .collect();
            let centred = nalgebra::DMatrix::from_fn(n, width, |r, i| rows[r][i] as f64 - mean[i]);
            // Symmetric, so its column-major storage reads as the row-major matrix.
            let cov = centred.tr_mul(&centred) / (n as f64 - 1.0).max(1.0);
            Summary {
                mean: if n > 1 {
                    effective_rank(cov.as_slice(), width)
                } else {
                    f64::NAN
                },
                std: f64::NAN,
                n: n as u64,
            }
        }
        _ => panic!("{metric} is a per-vector metric"),
    }
}

/// Mean and sample standard deviation (n - 1; NaN below two values).
pub fn summarize(values: &[f64]) -> Summary {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = if n > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        f64::NAN
    };
    Summary {
        mean,
        std,
        n: n as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Columns {
        Columns {
            near_zero: vec![1e-3],
            near_zero_rel: vec![0.5],
            order: true,
            topk: vec![0.01, 0.25],
        }
    }

    #[test]
    fn one_hot_vector_is_maximally_sparse() {
        let mut row = vec![0.0f32; 64];
        row[7] = -3.0;
        let m = row_metrics(&row, &cols());
        assert!((m[Columns::HOYER] - 1.0).abs() < 1e-12);
        assert!((m[Columns::PARTICIPATION_RATIO] - 1.0 / 64.0).abs() < 1e-12);
        assert!((m[Columns::EFF_RANK] - 1.0 / 64.0).abs() < 1e-8);
        assert!((m[Columns::FIXED] - 63.0 / 64.0).abs() < 1e-12);
        assert_eq!(m[Columns::L1], 3.0);
        let order = cols().moments_count();
        assert!((m[order + Columns::GINI] - 63.0 / 64.0).abs() < 1e-12);
        assert_eq!(
            m[order + Columns::ORDER_FIXED],
            1.0,
            "top-1 energy of a one-hot"
        );
        assert!(m[order + Columns::MAX_OVER_MEDIAN].is_nan(), "median 0");
    }

    #[test]
    fn constant_vector_is_maximally_dense() {
        let m = row_metrics(&[2.0f32; 10], &cols());
        assert!(m[Columns::HOYER].abs() < 1e-12);
        assert!((m[Columns::PARTICIPATION_RATIO] - 1.0).abs() < 1e-12);
        assert!((m[Columns::EFF_RANK] - 1.0).abs() < 1e-8);
        assert_eq!(m[Columns::L0_MEAN_STD], 0.0);
        assert!(m[Columns::KURTOSIS].is_nan(), "a constant has no kurtosis");
        let order = cols().moments_count();
        assert!(m[order + Columns::GINI].abs() < 1e-12);
        assert_eq!(m[order + Columns::MAX_OVER_MEDIAN], 1.0);
        // k = max(1, floor(0.25 * 10)) = 2 of 10 equal entries.
        assert!((m[order + Columns::ORDER_FIXED + 1] - 0.2).abs() < 1e-12);
    }

    #[test]
    fn order_statistics_follow_their_definitions_on_a_small_vector() {
        // |h| sorted: 0, 1, 2, 3, 4; d = 5.
        let m = row_metrics(&[3.0, -1.0, 0.0, 4.0, -2.0], &cols());
        let order = cols().moments_count();
        // gini = 2 (1*0 + 2*1 + 3*2 + 4*3 + 5*4) / (5 * 10) - 6/5 = 80/50 - 1.2 = 0.4.
        assert!((m[order + Columns::GINI] - 0.4).abs() < 1e-12);
        assert_eq!(m[order + Columns::MAX_OVER_MEDIAN], 2.0);
        // k = max(1, floor(0.01 * 5)) = 1: 16 / 30.
        assert!((m[order + Columns::ORDER_FIXED] - 16.0 / 30.0).abs() < 1e-12);
    }

    #[test]
    fn nonfinite_rows_are_counted_and_kept_out() {
        let rows = vec![
            row_metrics(&[1.0, f32::NAN, f32::INFINITY], &cols()),
            row_metrics(&[1.0, 1.0, 0.0], &cols()),
        ];
        assert_eq!(rows[0][Columns::NONFINITE], 2.0);
        assert!(rows[0][Columns::L1].is_nan());
        let l1 = aggregate(&rows, Columns::L1);
        assert_eq!((l1.mean, l1.n), (2.0, 1));
        let nf = aggregate(&rows, Columns::NONFINITE);
        assert_eq!((nf.mean, nf.n), (1.0, 2));
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        // numpy.quantile([1, 2, 3, 4], [0, 0.25, 0.5, 1]) = [1, 1.75, 2.5, 4].
        let rows: Vec<Vec<f64>> = [4.0, 1.0, 3.0, 2.0].iter().map(|&v| vec![0.0, v]).collect();
        assert_eq!(
            quantiles(&rows, 1, &[0.0, 0.25, 0.5, 1.0]),
            vec![1.0, 1.75, 2.5, 4.0]
        );
        assert!(quantiles(&rows[..0], 1, &[0.5])[0].is_nan());
    }

    #[test]
    fn all_zero_row_has_norms_but_no_ratios() {
        let m = row_metrics(&[0.0f32; 5], &cols());
        assert_eq!(m[Columns::L2], 0.0);
        assert!(m[Columns::HOYER].is_nan());
        assert_eq!(m[Columns::FIXED], 1.0);
        assert_eq!(m[Columns::FIXED + 1], 1.0);
    }
}

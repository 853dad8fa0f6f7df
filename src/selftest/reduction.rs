//! The reduction checks (`Family::Kernels`): what the device's evaluations reduce activations
//! with, held to the f64 reference, to closed forms and to invariances.

use anyhow::Result;
use burn::prelude::*;
use rand::seq::SliceRandom;

use super::inputs::{WIDTHS, adversarial_rows, normal, normals, rng, test_columns};
use super::{Context, Ran};
use crate::kernels::{self, across, fast, reference};
use crate::measure::reduce::Reduction;
use crate::metrics::{Columns, MetricSpec};
use crate::report::iid::{SCIENCE_TABLE, SCIENCE_TABLE_METRICS};

impl Context {
    /// What this device's evaluations reduce activations with, or why comparing it with the
    /// f64 reference would mean nothing.
    fn reducer(&self) -> Result<Reducer<'_>, String> {
        match Reduction::for_device(&self.device) {
            Reduction::Kernels => Ok(Reducer::Kernels(&self.device.device)),
            Reduction::CpuFast => Ok(Reducer::CpuFast),
            Reduction::Reference => Err("this device's evaluations reduce with the f64 \
                 reference itself, which a comparison would match with itself"
                .into()),
        }
    }

    /// `check` on this device's reducer, or the check skipped, with the reason, where no reducer
    /// is worth holding to the reference.
    fn with_reducer(&self, check: impl FnOnce(Reducer<'_>) -> Result<Ran>) -> Result<Ran> {
        match self.reducer() {
            Ok(reducer) => check(reducer),
            Err(reason) => Ok(Ran::Skipped(reason)),
        }
    }

    /// `check` on the WGSL kernels' device, or the check skipped, with why a check of them
    /// means nothing here.
    fn with_kernel_device(&self, check: impl FnOnce(&Device) -> Result<Ran>) -> Result<Ran> {
        self.with_reducer(|reducer| match reducer {
            Reducer::Kernels(device) => check(device),
            Reducer::CpuFast => Ok(Ran::Skipped(
                "the CPU backend runs no WGSL kernels (it reduces with kernels::fast, which the \
                 other reduction checks hold to the reference)"
                    .into(),
            )),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Tolerances, shared by every comparison with the reference.

/// Counting metrics (l0_mean_std and the near-zero fractions): an f32 threshold can land on the
/// other side of one entry than the f64 one.
fn is_count(cols: &Columns, column: usize) -> bool {
    column == Columns::L0_MEAN_STD || (Columns::FIXED..cols.moments_count()).contains(&column)
}

/// A per-vector value's tolerance: 1e-4 relative (plus 1e-6 absolute, for values that are 0);
/// kurtosis relative to m4/m2^2 = kurtosis + 3, since the excess subtracts 3; counts within one
/// element (1/d).
pub(crate) fn row_tolerance(cols: &Columns, column: usize, width: usize, want: f64) -> f64 {
    if is_count(cols, column) {
        1.0 / width as f64 + 1e-6
    } else if column == Columns::KURTOSIS {
        1e-4 * (want.abs() + 3.0)
    } else {
        1e-4 * want.abs() + 1e-6
    }
}

// ---------------------------------------------------------------------------------------------
// Reductions on the device, and back.

fn upload(data: &[f32], rows: usize, width: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(data.to_vec(), [rows, width]), device)
}

pub(super) fn download<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_to_vec::<f32>()
        .expect("an f32 tensor reads back as f32")
}

/// A reduction of activations into metrics that the checks hold to the f64 reference.
enum Reducer<'a> {
    /// The WGSL kernels on this wgpu device.
    Kernels(&'a Device),
    /// `kernels::fast`, the CPU backend's host reduction.
    CpuFast,
}

impl Reducer<'_> {
    /// The per-vector table of `[rows, width]` `data`, row-major.
    fn row_table(&self, data: &[f32], width: usize, cols: &Columns) -> Vec<f64> {
        match self {
            Reducer::Kernels(device) => {
                let rows = data.len() / width;
                let table = kernels::row_metrics(upload(data, rows, width, device), cols);
                download(table).into_iter().map(f64::from).collect()
            }
            Reducer::CpuFast => fast::matrix_metrics(data, width, cols).concat(),
        }
    }

    /// Each column's (mean, std, n) over the finite vectors of `data`.
    fn summaries(&self, data: &[f32], width: usize, cols: &Columns) -> Vec<[f64; 3]> {
        match self {
            Reducer::Kernels(device) => {
                let rows = data.len() / width;
                let summary = download(kernels::summarize(upload(data, rows, width, device), cols));
                summary
                    .chunks(3)
                    .map(|s| [s[0].into(), s[1].into(), s[2].into()])
                    .collect()
            }
            Reducer::CpuFast => {
                let per_row = fast::matrix_metrics(data, width, cols);
                (0..cols.count())
                    .map(|c| {
                        let s = fast::aggregate(&per_row, c);
                        [s.mean, s.std, s.n as f64]
                    })
                    .collect()
            }
        }
    }
}

/// The per-vector table as the chosen device's evaluations compute it (the reference itself
/// where that is what they use), for the checks against closed forms and invariances.
fn device_row_metrics(context: &Context, data: &[f32], width: usize, cols: &Columns) -> Vec<f64> {
    match context.reducer() {
        Ok(reducer) => reducer.row_table(data, width, cols),
        Err(_) => reference::matrix_metrics(data, width, cols).concat(),
    }
}

/// Each column's mean over the finite vectors, as the chosen device's evaluations compute it.
fn device_means(context: &Context, data: &[f32], width: usize, cols: &Columns) -> Vec<f64> {
    match context.reducer() {
        Ok(reducer) => reducer
            .summaries(data, width, cols)
            .iter()
            .map(|s| s[0])
            .collect(),
        Err(_) => {
            let per_row = reference::matrix_metrics(data, width, cols);
            (0..cols.count())
                .map(|c| reference::aggregate(&per_row, c).mean)
                .collect()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The kernel checks.

pub(super) fn row_metrics(context: &Context) -> Result<Ran> {
    context.with_reducer(|reducer| {
        let cols = test_columns();
        let names = cols.names();
        let mut tally = context.tally();
        for (i, &width) in WIDTHS.iter().enumerate() {
            let rows = adversarial_rows(width, i as u64);
            let data: Vec<f32> = rows.iter().flat_map(|(_, r)| r.iter().copied()).collect();
            let got = reducer.row_table(&data, width, &cols);
            for (r, (kind, row)) in rows.iter().enumerate() {
                let want = reference::row_metrics(row, &cols);
                for (c, &w) in want.iter().enumerate() {
                    let g = got[r * cols.count() + c];
                    let tolerance = row_tolerance(&cols, c, width, w);
                    tally.compare(&names[c], g, w, tolerance, || {
                        format!("width {width}, {kind}")
                    });
                }
            }
        }
        Ok(Ran::Compared(tally))
    })
}

pub(super) fn aggregate(context: &Context) -> Result<Ran> {
    context.with_reducer(|reducer| {
        let cols = test_columns();
        let names = cols.names();
        let (rows, width) = (777, 96);
        let mut r = rng(42);
        let mut data: Vec<f32> = normals(&mut r, rows * width)
            .iter()
            .map(|x| x * 2.0)
            .collect();
        for row in [3usize, 100, 500] {
            data[row * width + 7] = f32::NAN;
        }
        for row in [10usize, 11] {
            data[row * width..(row + 1) * width].fill(0.0);
        }
        let summary = reducer.summaries(&data, width, &cols);
        let per_row = reference::matrix_metrics(&data, width, &cols);
        let mut tally = context.tally();
        for (c, name) in names.iter().enumerate() {
            let want = reference::aggregate(&per_row, c);
            let [mean, std, n] = summary[c];
            let at = || format!("column {name}");
            tally.compare("mean", mean, want.mean, 1e-4 * want.mean.abs() + 1e-6, at);
            // A std is a difference of sums: f32 loses a decimal more than a mean does.
            tally.compare("std", std, want.std, 1e-3 * want.std.abs() + 1e-6, at);
            tally.compare("n (finite vectors)", n, want.n as f64, 0.0, at);
        }
        Ok(Ran::Compared(tally))
    })
}

pub(super) fn quantiles(context: &Context) -> Result<Ran> {
    context.with_reducer(|reducer| {
        let cols = test_columns();
        let names = cols.names();
        let qs = [0.0, 0.05, 0.25, 0.5, 0.95, 1.0];
        let qs32: Vec<f32> = qs.iter().map(|&q| q as f32).collect();
        let mut tally = context.tally();
        // The kernels sort 777 vectors in workgroup memory (padded to 1024), 5000 in global memory.
        for (rows, width) in [(777usize, 40usize), (5000, 24)] {
            let mut r = rng(rows as u64);
            let mut data = normals(&mut r, rows * width);
            data[5 * width] = f32::INFINITY;
            data[9 * width..10 * width].fill(0.0);
            let got: Vec<f64> = match reducer {
                Reducer::Kernels(device) => {
                    let table = kernels::row_metrics(upload(&data, rows, width, device), &cols);
                    let got = download(kernels::column_quantiles(table, &qs32));
                    got.into_iter().map(f64::from).collect()
                }
                Reducer::CpuFast => {
                    let per_row = fast::matrix_metrics(&data, width, &cols);
                    (0..cols.count())
                        .flat_map(|c| fast::quantiles(&per_row, c, &qs))
                        .collect()
                }
            };
            let per_row = reference::matrix_metrics(&data, width, &cols);
            let metric = format!("quantiles ({rows} vectors)");
            for (c, name) in names.iter().enumerate() {
                let want = reference::quantiles(&per_row, c, &qs);
                for (k, &w) in want.iter().enumerate() {
                    let g = got[c * qs.len() + k];
                    let tolerance = if is_count(&cols, c) {
                        1.0 / width as f64
                    } else {
                        1e-4 * w.abs() + 1e-5
                    };
                    tally.compare(&metric, g, w, tolerance, || {
                        format!("{rows} vectors, {name}, q {}", qs[k])
                    });
                }
            }
        }
        Ok(Ran::Compared(tally))
    })
}

pub(super) fn across_vectors(context: &Context) -> Result<Ran> {
    context.with_reducer(|reducer| {
        let cols = test_columns();
        let (rows, width) = (300, 48);
        let mut r = rng(11);
        // ReLU-like vectors with a rank-3 part; neurons 0..5 never fire; one vector holds a NaN.
        let basis = normals(&mut r, 3 * width);
        let mut data = Vec::with_capacity(rows * width);
        for _ in 0..rows {
            let c = normals(&mut r, 3);
            for i in 0..width {
                let v =
                    (0..3).map(|k| c[k] * basis[k * width + i]).sum::<f32>() + 0.1 * normal(&mut r);
                data.push(if i < 5 { 0.0 } else { v.max(0.0) });
            }
        }
        data[17 * width + 9] = f32::NAN;
        let per_row = reference::matrix_metrics(&data, width, &cols);
        let want = |metric: &str| {
            let metric: MetricSpec = metric.parse().expect("a metric name");
            reference::across_vectors(&data, width, &per_row, &metric)
        };
        // [active_fraction mean, its std, dead_fraction] and rankme, as the reducer computes them.
        let (stats, rank) = match reducer {
            Reducer::Kernels(device) => {
                let x = upload(&data, rows, width, device);
                let valid = across::valid_rows(kernels::row_metrics(x.clone(), &cols));
                let stats = download(across::active_stats(x.clone(), valid.clone(), 0.2));
                let cov: Vec<f64> = download(across::covariance(x, valid))
                    .into_iter()
                    .map(f64::from)
                    .collect();
                let stats = [stats[0].into(), stats[1].into(), stats[2].into()];
                (stats, crate::metrics::effective_rank(&cov, width))
            }
            Reducer::CpuFast => {
                let fast_rows = fast::matrix_metrics(&data, width, &cols);
                let of = |metric: &str| {
                    let metric: MetricSpec = metric.parse().expect("a metric name");
                    fast::across_vectors(&data, width, &fast_rows, &metric)
                };
                let (active, dead) = (of("active_fraction@0.2"), of("dead_fraction@0.2"));
                ([active.mean, active.std, dead.mean], of("rankme").mean)
            }
        };
        let (active, dead) = (want("active_fraction@0.2"), want("dead_fraction@0.2"));
        let mut tally = context.tally();
        let at = || format!("{rows} vectors of width {width}");
        tally.compare("active_fraction mean", stats[0], active.mean, 1e-5, at);
        tally.compare("active_fraction std", stats[1], active.std, 1e-4, at);
        tally.compare("dead_fraction", stats[2], dead.mean, 1e-6, at);
        let want_rank = want("rankme").mean;
        tally.compare("rankme", rank, want_rank, 1e-3 * want_rank, at);
        Ok(Ran::Compared(tally))
    })
}

pub(super) fn large_dispatch(context: &Context) -> Result<Ran> {
    context.with_kernel_device(|device| {
        if context.quick {
            return Ok(Ran::Skipped(
                "--quick: 2.65 million values; the full selftest and tests/kernels.rs run it"
                    .into(),
            ));
        }
        let cols = test_columns();
        let names = cols.names();
        // The moments kernel packs 8 rows of width 5 into a workgroup and the order kernel loops
        // over rows, so crossing 65,535 workgroups takes more than 8 x 65,535 rows.
        let (rows, width) = (530_000, 5);
        let data = normals(&mut rng(7), rows * width);
        let got = download(kernels::row_metrics(
            upload(&data, rows, width, device),
            &cols,
        ));
        let mut tally = context.tally();
        let boundaries = [0, 65_535, 65_536, 524_279, 524_280, 524_287, 524_288];
        for row in boundaries.into_iter().chain([rows - 1]) {
            let want = reference::row_metrics(&data[row * width..(row + 1) * width], &cols);
            for (c, &w) in want.iter().enumerate() {
                let g = f64::from(got[row * cols.count() + c]);
                let tolerance = row_tolerance(&cols, c, width, w);
                tally.compare("every column", g, w, tolerance, || {
                    format!("row {row}, {}", names[c])
                });
            }
        }
        Ok(Ran::Compared(tally))
    })
}

pub(super) fn science_table(context: &Context) -> Result<Ran> {
    let metrics: Vec<MetricSpec> = SCIENCE_TABLE_METRICS
        .iter()
        .map(|s| s.parse().expect("the table's metrics parse"))
        .collect();
    let cols = Columns::for_metrics(&metrics);
    let vectors = if context.quick { 1000 } else { 2000 };
    let mut tally = context.tally();
    for (d, expected) in SCIENCE_TABLE {
        let data = normals(&mut rng(d as u64), vectors * d);
        let means = device_means(context, &data, d, &cols);
        for (metric, &want) in metrics.iter().zip(&expected) {
            let got = means[cols.column(metric)];
            tally.compare(&metric.to_string(), got, want, 0.005, || {
                format!("d {d}, {vectors} vectors")
            });
        }
    }
    Ok(Ran::Compared(tally))
}

pub(super) fn invariance(context: &Context) -> Result<Ran> {
    let cols = test_columns();
    let names = cols.names();
    let width = 300;
    let factor = 37.5;
    let mut r = rng(9);
    let row: Vec<f32> = (0..width)
        .map(|_| normal(&mut r) / normal(&mut r).abs().max(0.1))
        .collect();
    let scaled: Vec<f32> = row.iter().map(|x| x * factor as f32).collect();
    let mut permuted = row.clone();
    permuted.shuffle(&mut r);
    let got = device_row_metrics(context, &[row, scaled, permuted].concat(), width, &cols);
    let m = cols.count();
    let absolute_threshold = Columns::FIXED..Columns::FIXED + cols.near_zero.len();
    let mut tally = context.tally();
    for (c, name) in names.iter().enumerate() {
        let base = got[c];
        // l1 and l2 scale with the row; near_zero@eps's threshold does not, so entries cross it.
        let want_scaled = match c {
            Columns::L1 | Columns::L2 => Some(base * factor),
            _ if absolute_threshold.contains(&c) => None,
            _ => Some(base),
        };
        if let Some(want) = want_scaled {
            let tolerance = row_tolerance(&cols, c, width, want);
            tally.compare(name, got[m + c], want, tolerance, || "scaled x 37.5".into());
        }
        let tolerance = row_tolerance(&cols, c, width, base);
        tally.compare(name, got[2 * m + c], base, tolerance, || "permuted".into());
    }
    Ok(Ran::Compared(tally))
}

pub(super) fn extremes(context: &Context) -> Result<Ran> {
    let cols = test_columns();
    let order = cols.moments_count();
    let mut tally = context.tally();
    for width in [2usize, 127, 1000, 4096, 8192] {
        let mut one_hot = vec![0.0f32; width];
        one_hot[width / 3] = 4.0;
        let constant = vec![-1.5f32; width];
        let got = device_row_metrics(context, &[one_hot, constant].concat(), width, &cols);
        let (hot, flat) = got.split_at(cols.count());
        let d = width as f64;
        let mut close = |metric: &str, got: f64, want: f64, row: &str| {
            let tolerance = 1e-5 * want.abs().max(1.0);
            tally.compare(metric, got, want, tolerance, || {
                format!("width {width}, {row}")
            });
        };
        close("hoyer", hot[Columns::HOYER], 1.0, "one-hot");
        close("eff_rank", hot[Columns::EFF_RANK], 1.0 / d, "one-hot");
        close("gini", hot[order + Columns::GINI], (d - 1.0) / d, "one-hot");
        for (t, f) in cols.topk.iter().enumerate() {
            let got = hot[order + Columns::ORDER_FIXED + t];
            close("topk_energy", got, 1.0, &format!("one-hot, f {f}"));
        }
        close("hoyer", flat[Columns::HOYER], 0.0, "constant");
        close("gini", flat[order + Columns::GINI], 0.0, "constant");
        let ratio = flat[order + Columns::MAX_OVER_MEDIAN];
        close("max_over_median", ratio, 1.0, "constant");
    }
    Ok(Ran::Compared(tally))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeviceChoice;
    use crate::device;
    use crate::selftest::{CHECKS, CheckResult, Family, MetricRow, Outcome, Perturbation, check};
    use crate::selftest::{run_check, table};

    fn cpu() -> Context {
        Context::new(
            device::select(DeviceChoice::Cpu).expect("the CPU backend is always there"),
            true,
        )
    }

    fn metrics(result: &CheckResult) -> &[MetricRow] {
        match &result.outcome {
            Outcome::Ran { metrics } => metrics,
            other => panic!("{} did not run: {other:?}", result.check),
        }
    }

    /// A wrong reference value fails its check, and the failure names exactly that metric; the
    /// other metrics of the check still pass.
    #[test]
    fn a_perturbed_reference_fails_the_fast_reduction_naming_its_metric() {
        let mut context = cpu();
        context.perturbation = Some(Perturbation {
            metric: "hoyer".into(),
            shift: 1e-3,
        });
        let result = run_check(check("row metrics"), &context);
        assert_eq!(result.failures(), vec!["row metrics: hoyer".to_string()]);
        let printed = table(std::slice::from_ref(&result));
        let hoyer = printed.lines().find(|l| l.contains(" hoyer ")).unwrap();
        assert!(hoyer.contains("FAIL"), "{printed}");
    }

    /// The same for a closed form: the expected one-hot and constant gini shifted.
    #[test]
    fn a_perturbed_closed_form_fails_naming_its_metric() {
        let mut context = cpu();
        context.perturbation = Some(Perturbation {
            metric: "gini".into(),
            shift: 1e-3,
        });
        let result = run_check(check("extremes"), &context);
        assert_eq!(result.failures(), vec!["extremes: gini".to_string()]);
        let printed = table(std::slice::from_ref(&result));
        let gini = printed
            .lines()
            .find(|l| l.contains(" gini "))
            .expect("a gini row");
        assert!(gini.contains("FAIL 10/10"), "{printed}");
        assert!(
            !printed
                .lines()
                .any(|l| l.contains("hoyer") && l.contains("FAIL"))
        );
    }

    /// On the CPU backend the reduction checks hold `kernels::fast` to the reference; the one
    /// about wgpu's dispatch grid says why it is skipped instead of passing.
    #[test]
    fn the_cpu_backend_checks_its_fast_reduction_and_skips_only_the_dispatch() {
        for c in CHECKS.iter().filter(|c| c.family == Family::Kernels) {
            let result = run_check(c, &cpu());
            let skipped = c.name == "dispatch past 65,535 workgroups";
            assert_eq!(result.skipped(), skipped, "{}", c.name);
            assert!(result.passed(), "{}", table(std::slice::from_ref(&result)));
            if !skipped {
                assert!(
                    metrics(&result).iter().all(|m| m.compared > 0),
                    "{}",
                    c.name
                );
            }
            if let Outcome::Skipped { reason } = &result.outcome {
                let line = table(std::slice::from_ref(&result));
                assert!(line.contains(&format!("skipped: {reason}")), "{line}");
                assert!(!line.contains("pass"), "{line}");
            }
        }
    }
}

//! The kernel table of `densitrace bench`: each density kernel, checked against the f64
//! reference, then timed against the same metrics from Burn tensor ops and against reading the
//! activations back and reducing on the host, with the device's copy bandwidth for scale.
//!
//! The Burn-ops composition of the metrics skips what the kernels do beyond the formulas
//! (keeping vectors with NaN/Inf out, undefined values), so it does slightly less work.
//!
//! A time means nothing for a kernel that computes something else: before each of densitrace's
//! kernels is timed (`kernels::fast`, and on wgpu the WGSL kernels), its summaries of the same
//! tensor are compared once with the f64 reference's, within selftest's per-vector tolerances,
//! and `bench` fails naming the kernel if they disagree. (The Burn-ops composition is a yardstick
//! outside densitrace and is not checked.)

use std::time::{Duration, Instant};

use anyhow::Result;
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::kernels::{self, fast, reference};
use crate::metrics::{Columns, MetricSpec, Summary};
use crate::selftest::row_tolerance;

/// One kernel family at one tensor size; times are medians in milliseconds.
#[derive(Debug, Serialize)]
pub struct KernelRow {
    /// `moments` (row_moments.wgsl) or `order` (row_order.wgsl, a sort per row).
    pub family: String,
    pub vectors: usize,
    pub width: usize,
    /// Megabytes of activations (f32).
    pub mb: f64,
    /// The device's copy of the tensor (read and write), GB/s; None on the CPU backend.
    pub copy_gb_s: Option<f64>,
    /// The WGSL kernels, then the aggregate over vectors, with the summary read back.
    pub wgsl_ms: Option<f64>,
    /// The activations read once by the kernels per unit of time, GB/s.
    pub wgsl_gb_s: Option<f64>,
    /// `wgsl_gb_s / copy_gb_s`.
    pub share_of_copy: Option<f64>,
    /// The same metrics as Burn tensor ops on the device.
    pub burn_ms: Option<f64>,
    /// Read back, then the f64 reference on the host (rows in parallel).
    pub host_ms: f64,
    /// Read back, then `kernels::fast` on the host (rows in parallel), every column computed.
    pub host_fast_ms: f64,
}

pub(super) const WARMUP: usize = 2;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// The median of `repeats` runs of `f` after `WARMUP` runs.
fn median_time(repeats: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..WARMUP {
        f();
    }
    median(
        (0..repeats)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn family_columns(family: &str) -> Columns {
    let names: &[&str] = match family {
        "moments" => &["l1", "hoyer", "near_zero@0.001"],
        _ => &[
            "gini",
            "max_over_median",
            "topk_energy@0.01",
            "topk_energy@0.05",
            "topk_energy@0.1",
        ],
    };
    let metrics: Vec<MetricSpec> = names.iter().map(|s| s.parse().unwrap()).collect();
    let columns = Columns::for_metrics(&metrics);
    if family == "moments" {
        Columns {
            order: false,
            ..columns
        }
    } else {
        columns
    }
}

/// The moment metrics as Burn tensor ops, reduced to mean and variance over vectors.
fn burn_moments(x: Tensor<2>) -> Tensor<2> {
    let [_, d] = x.dims();
    let df = d as f64;
    let a = x.clone().abs();
    let l1 = a.clone().sum_dim(1);
    let s2 = x.clone().powi_scalar(2).sum_dim(1);
    let l2 = s2.clone().sqrt();
    let s4 = x.clone().powi_scalar(4).sum_dim(1);
    let hoyer = (l1.clone() / l2.clone()).neg().add_scalar(df.sqrt()) / (df.sqrt() - 1.0);
    let pr = s2.clone().powi_scalar(2) / s4 / df;
    let p = x.clone().powi_scalar(2) / s2;
    let eff_rank = (p.clone() * p.add_scalar(1e-10).log())
        .sum_dim(1)
        .neg()
        .exp()
        / df;
    let q = (a.clone() / l1.clone()).add_scalar(1e-10);
    let eff_rank_l1 = (q.clone() * q.log()).sum_dim(1).neg().exp() / df;
    let mean_a = l1.clone() / df;
    let std_a = (a.clone() - mean_a.clone())
        .powi_scalar(2)
        .mean_dim(1)
        .sqrt();
    let l0 = a.clone().greater(mean_a + std_a).float().mean_dim(1);
    let centred = x.clone() - x.mean_dim(1);
    let m2 = centred.clone().powi_scalar(2).mean_dim(1);
    let kurtosis = centred.powi_scalar(4).mean_dim(1) / m2.powi_scalar(2) - 3.0;
    let near_zero = a.lower_equal_elem(1e-3).float().mean_dim(1);
    let table = Tensor::cat(
        vec![
            l1,
            l2,
            hoyer,
            pr,
            eff_rank,
            eff_rank_l1,
            l0,
            kurtosis,
            near_zero,
        ],
        1,
    );
    Tensor::cat(vec![table.clone().mean_dim(0), table.var(0)], 0)
}

/// The order metrics as Burn tensor ops (a sort per row), reduced over vectors.
fn burn_order(x: Tensor<2>) -> Tensor<2> {
    let [n, d] = x.dims();
    let sorted = x.abs().sort(1);
    let energy = sorted.clone().powi_scalar(2);
    let total = energy.clone().sum_dim(1);
    let mut columns = Vec::new();
    for f in [0.01, 0.05, 0.1] {
        let k = ((f * d as f64).floor() as usize).max(1);
        columns.push(energy.clone().slice([0..n, d - k..d]).sum_dim(1) / total.clone());
    }
    let weights: Vec<f32> = (1..=d).map(|i| (2 * i) as f32 - d as f32 - 1.0).collect();
    let weights = Tensor::<1>::from_floats(weights.as_slice(), &sorted.device()).reshape([1, d]);
    let sum = sorted.clone().sum_dim(1);
    columns.push((sorted.clone() * weights).sum_dim(1) / (sum * d as f64));
    let median = sorted.clone().slice([0..n, d / 2..d / 2 + 1]);
    columns.push(sorted.slice([0..n, d - 1..d]) / median);
    let table = Tensor::cat(columns, 1);
    Tensor::cat(vec![table.clone().mean_dim(0), table.var(0)], 0)
}

fn read(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The f64 reference's (mean, std, n) of each column of a tensor's per-vector table, with each
/// column's largest finite magnitude, the scale of its tolerance.
struct ReferenceSummary {
    summaries: Vec<Summary>,
    scale: Vec<f64>,
}

impl ReferenceSummary {
    /// Of `[vectors, width]` `values`.
    fn of(values: &[f32], width: usize, cols: &Columns) -> ReferenceSummary {
        let per_row = reference::matrix_metrics(values, width, cols);
        let summaries = (0..cols.count())
            .map(|c| reference::aggregate(&per_row, c))
            .collect();
        let scale = (0..cols.count())
            .map(|c| {
                per_row
                    .iter()
                    .map(|row| row[c].abs())
                    .filter(|v| v.is_finite())
                    .fold(0.0, f64::max)
            })
            .collect();
        ReferenceSummary { summaries, scale }
    }

    /// Whether `got`, each column's (mean, std, n) as `kernel` computes them, agrees with the
    /// reference. Each vector's value may be off by selftest's `row_tolerance` at the column's
    /// scale, and so may a mean; a sample std by that times sqrt(n / (n - 1)), plus 1e-3 of itself
    /// for its f32 sums; the count of finite vectors not at all. NaN matches only NaN.
    fn check(&self, kernel: &str, cols: &Columns, width: usize, got: &[[f64; 3]]) -> Result<()> {
        let names = cols.names();
        anyhow::ensure!(
            got.len() == self.summaries.len(),
            "bench: the {kernel} returned {} columns, the reference {}",
            got.len(),
            self.summaries.len()
        );
        for (c, (want, &[mean, std, n])) in self.summaries.iter().zip(got).enumerate() {
            let per_vector = row_tolerance(cols, c, width, self.scale[c]);
            let samples = want.n as f64;
            let std_tolerance =
                per_vector * (samples / (samples - 1.0).max(1.0)).sqrt() + 1e-3 * want.std.abs();
            for (what, got, want, tolerance) in [
                ("mean", mean, want.mean, per_vector),
                ("std", std, want.std, std_tolerance),
                ("n", n, want.n as f64, 0.0),
            ] {
                let agrees = match (got.is_nan(), want.is_nan()) {
                    (true, true) => true,
                    (false, false) => (got - want).abs() <= tolerance,
                    _ => false,
                };
                anyhow::ensure!(
                    agrees,
                    "bench: the {kernel} disagrees with the f64 reference: {} {what} {got} \
                     against {want} (tolerance {tolerance:.3e}); its time would mean nothing",
                    names[c]
                );
            }
        }
        Ok(())
    }
}

/// The kernel table: every family at every size, each kernel checked against the f64 reference
/// before it is timed.
pub(super) fn kernel_rows(
    device: &Device,
    on_device: bool,
    quick: bool,
    repeats: usize,
) -> Result<Vec<KernelRow>> {
    let sizes: &[(usize, usize)] = if quick {
        &[(1024, 128), (4096, 512)]
    } else {
        &[
            (1024, 128),
            (4096, 512),
            (16384, 128),
            (2048, 2048),
            (512, 8192),
            (16384, 2048),
        ]
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut rows = Vec::new();
    for family in ["moments", "order"] {
        let cols = family_columns(family);
        for &(vectors, width) in sizes {
            let data: Vec<f32> = (0..vectors * width)
                .map(|_| rng.random::<f32>() * 2.0 - 1.0)
                .collect();
            let x = Tensor::<2>::from_data(TensorData::new(data, [vectors, width]), device);
            let mb = (vectors * width * 4) as f64 / 1e6;
            let reference = ReferenceSummary::of(&read(x.clone()), width, &cols);
            let at = |kernel: &str| format!("{kernel} ({family}, {vectors} x {width})");
            let host = median_time(repeats, || {
                let values = read(x.clone());
                let per_row = reference::matrix_metrics(&values, width, &cols);
                for c in 0..cols.count() {
                    std::hint::black_box(reference::aggregate(&per_row, c));
                }
            });
            let values = read(x.clone());
            let per_row = fast::matrix_metrics(&values, width, &cols);
            let fast_summaries: Vec<[f64; 3]> = (0..cols.count())
                .map(|c| {
                    let s = fast::aggregate(&per_row, c);
                    [s.mean, s.std, s.n as f64]
                })
                .collect();
            reference.check(
                &at("kernels::fast reduction"),
                &cols,
                width,
                &fast_summaries,
            )?;
            let host_fast = median_time(repeats, || {
                let values = read(x.clone());
                let per_row = fast::matrix_metrics(&values, width, &cols);
                for c in 0..cols.count() {
                    std::hint::black_box(fast::aggregate(&per_row, c));
                }
            });
            let mut row = KernelRow {
                family: family.into(),
                vectors,
                width,
                mb,
                copy_gb_s: None,
                wgsl_ms: None,
                wgsl_gb_s: None,
                share_of_copy: None,
                burn_ms: None,
                host_ms: ms(host),
                host_fast_ms: ms(host_fast),
            };
            if on_device {
                // A plain element-wise copy, kept alive until the device is idle, so it is
                // written in full: read once and written once.
                let copy = median_time(repeats, || {
                    let y = x.clone().neg();
                    device.sync().expect("the device runs the copy");
                    drop(y);
                });
                let summary = read(kernels::aggregate(kernels::row_metrics(x.clone(), &cols)));
                let wgsl_summaries: Vec<[f64; 3]> = summary
                    .chunks(3)
                    .map(|s| [s[0].into(), s[1].into(), s[2].into()])
                    .collect();
                reference.check(&at("WGSL kernels"), &cols, width, &wgsl_summaries)?;
                let wgsl = median_time(repeats, || {
                    read(kernels::aggregate(kernels::row_metrics(x.clone(), &cols)));
                });
                let burn_ops = median_time(repeats, || {
                    read(if family == "moments" {
                        burn_moments(x.clone())
                    } else {
                        burn_order(x.clone())
                    });
                });
                let copy_gb_s = 2.0 * mb / 1e3 / copy.as_secs_f64();
                let wgsl_gb_s = mb / 1e3 / wgsl.as_secs_f64();
                row.copy_gb_s = Some(copy_gb_s);
                row.wgsl_ms = Some(ms(wgsl));
                row.wgsl_gb_s = Some(wgsl_gb_s);
                row.share_of_copy = Some(wgsl_gb_s / copy_gb_s);
                row.burn_ms = Some(ms(burn_ops));
            }
            rows.push(row);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check before timing passes `kernels::fast` on the bench's own kind of tensor, and
    /// fails, naming the kernel and the column, once one of its means is off.
    #[test]
    fn a_kernel_that_disagrees_with_the_reference_is_not_timed() {
        let (vectors, width) = (256, 64);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let values: Vec<f32> = (0..vectors * width)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect();
        for family in ["moments", "order"] {
            let cols = family_columns(family);
            let reference = ReferenceSummary::of(&values, width, &cols);
            let per_row = fast::matrix_metrics(&values, width, &cols);
            let mut got: Vec<[f64; 3]> = (0..cols.count())
                .map(|c| {
                    let s = fast::aggregate(&per_row, c);
                    [s.mean, s.std, s.n as f64]
                })
                .collect();
            reference.check("fast", &cols, width, &got).unwrap();
            // l1's mean, or gini's, 1% off.
            let c = if family == "moments" {
                Columns::L1
            } else {
                cols.moments_count() + Columns::GINI
            };
            got[c][0] *= 1.01;
            let message = reference
                .check("fast", &cols, width, &got)
                .unwrap_err()
                .to_string();
            assert!(message.contains("the fast disagrees"), "{message}");
            assert!(message.contains(&cols.names()[c]), "{message}");
        }
    }
}

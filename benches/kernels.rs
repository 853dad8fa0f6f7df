//! Kernel benchmark: `scripts/bench-kernels` (or `cargo bench --bench kernels`).
//!
//! For each kernel family and tensor size, on the wgpu adapter in use, prints the time of the
//! WGSL path and its ratio against (a) the same metrics composed from Burn tensor ops on the
//! device and (b) reading the activations back and reducing on the host with the f64 reference,
//! which is what hook-based loggers do. Each variant ends by reading back its (small) result, so
//! the time covers the work; the median of `REPEATS` runs after `WARMUP` runs is reported.
//!
//! Families:
//! - moments: the 9 fixed moment metrics plus one near-zero threshold (row_moments.wgsl), then
//!   mean/std/n over vectors (aggregate.wgsl).
//! - order: gini, max_over_median, top-1/5/10% energy (row_order.wgsl: a per-row sort), then the
//!   aggregate.
//!
//! The Burn-ops composition skips what the kernels do beyond the formulas (keeping vectors with
//! NaN/Inf out, undefined values), so it does slightly less work than the kernels.

use std::time::{Duration, Instant};

use burn::prelude::*;
use densitrace::config::DeviceChoice;
use densitrace::device;
use densitrace::kernels::{self, reference};
use densitrace::metrics::{Columns, MetricSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const WARMUP: usize = 2;
const REPEATS: usize = 7;

fn median_time(mut f: impl FnMut()) -> Duration {
    for _ in 0..WARMUP {
        f();
    }
    let mut times: Vec<Duration> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[REPEATS / 2]
}

fn columns(family: &str) -> Columns {
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
    Columns::for_metrics(&metrics)
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

fn main() {
    let run_device = match device::select(DeviceChoice::Wgpu) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bench-kernels needs a wgpu adapter: {e}");
            std::process::exit(2);
        }
    };
    let adapter = run_device.adapter.as_ref().unwrap();
    let device = run_device.device.clone();
    println!(
        "adapter: {} ({}, {}, driver {} {})",
        adapter.name, adapter.backend, adapter.device_type, adapter.driver, adapter.driver_info
    );
    println!(
        "median of {REPEATS} runs after {WARMUP} warm-up runs; each run reads its result back\n"
    );
    println!(
        "| family | vectors x width | MB read | WGSL ms | GB/s | Burn ops ms | WGSL speed-up | host ms | WGSL speed-up |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");

    let sizes: &[(usize, usize)] = &[
        (1024, 128),
        (4096, 512),
        (16384, 128),
        (2048, 2048),
        (512, 8192),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for family in ["moments", "order"] {
        let cols = columns(family);
        for &(rows, width) in sizes {
            let data: Vec<f32> = (0..rows * width)
                .map(|_| rng.random::<f32>() * 2.0 - 1.0)
                .collect();
            let x = Tensor::<2>::from_data(TensorData::new(data.clone(), [rows, width]), &device);
            let wgsl = median_time(|| {
                let table = if family == "moments" {
                    kernels::row_metrics(
                        x.clone(),
                        &Columns {
                            order: false,
                            ..cols.clone()
                        },
                    )
                } else {
                    kernels::row_metrics(x.clone(), &cols)
                };
                read(kernels::aggregate(table));
            });
            let burn_ops = median_time(|| {
                read(if family == "moments" {
                    burn_moments(x.clone())
                } else {
                    burn_order(x.clone())
                });
            });
            let host = median_time(|| {
                let values = read(x.clone());
                let per_row = reference::matrix_metrics(&values, width, &cols);
                for c in 0..cols.count() {
                    std::hint::black_box(reference::aggregate(&per_row, c));
                }
            });
            let mb = (rows * width * 4) as f64 / 1e6;
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "| {family} | {rows} x {width} | {mb:.1} | {:.2} | {:.2} | {:.2} | {:.1}x | {:.2} | {:.1}x |",
                ms(wgsl),
                mb / 1e3 / wgsl.as_secs_f64(),
                ms(burn_ops),
                burn_ops.as_secs_f64() / wgsl.as_secs_f64(),
                ms(host),
                host.as_secs_f64() / wgsl.as_secs_f64(),
            );
        }
    }
}

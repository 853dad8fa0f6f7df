//! `densitrace bench`: what densitrace costs on the device it runs on, as one Markdown report
//! (and `--json`):
//! - the adapter;
//! - the density kernels against the same metrics from Burn tensor ops and against reading the
//!   activations back and reducing on the host (what hook-based loggers do), with the kernels'
//!   read bandwidth as a share of the device's own copy bandwidth, measured here by a plain
//!   element-wise copy of the same tensor;
//! - training throughput of the quickstart model (and, without `--quick`, gpu-medium's), and the
//!   instrumentation's cost: one evaluation at the config's probe sets against the training time
//!   between evaluations at its schedule;
//! - on the CPU backend, where an evaluation's seconds go (forward passes against metrics) with
//!   each host reduction, `kernels::fast` and the f64 reference, interleaved in one process on
//!   the trained model, so the two are compared under the same load.
//!
//! By job: the options, the report and `bench` itself, which runs the parts in order (here); the
//! kernel table, each kernel checked against the f64 reference before it is timed
//! (`kernel_table.rs`); the training rows and the evaluation split (`training.rs`); the report as
//! Markdown (`markdown.rs`).

mod kernel_table;
mod markdown;
mod training;

pub use kernel_table::KernelRow;
pub use training::{EvaluationRow, TrainingRow};

use anyhow::Result;
use serde::Serialize;

use crate::config::DeviceChoice;
use crate::device;
use kernel_table::{WARMUP, kernel_rows};
use training::{GPU_MEDIUM, QUICKSTART, training_row};

#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    pub device: DeviceChoice,
    /// Fewer sizes, runs and steps, and the quickstart model only: under 2 minutes on llvmpipe.
    pub quick: bool,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// `wgpu` or `cpu`.
    pub backend: String,
    /// The adapter line (wgpu), or the CPU backend and the machine's cores.
    pub adapter: String,
    pub quick: bool,
    /// Timing protocol of the kernel table.
    pub warmup: usize,
    pub repeats: usize,
    pub kernels: Vec<KernelRow>,
    pub training: Vec<TrainingRow>,
    /// CPU backend only: each timed model's evaluation with each host reduction.
    pub evaluations: Vec<EvaluationRow>,
}

/// Evaluations per host reduction in the evaluation split (alternating; the median is reported).
const SPLIT_ROUNDS: usize = 3;

pub fn bench(options: BenchOptions) -> Result<BenchReport> {
    let run_device = device::select(options.device)?;
    let on_device = run_device.measures_on_device();
    let adapter = match &run_device.adapter {
        Some(a) => format!(
            "{} ({}, {}, driver {} {})",
            a.name, a.backend, a.device_type, a.driver, a.driver_info
        ),
        None => format!(
            "Burn CPU backend ({}), {} threads",
            device::cpu_backend_name()?,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
    };
    eprintln!("bench on {adapter}");
    let repeats = if options.quick { 3 } else { 7 };
    let kernels = kernel_rows(&run_device.device, on_device, options.quick, repeats)?;
    eprintln!("kernel table done");

    let mut training = Vec::new();
    let mut evaluations = Vec::new();
    // On the CPU backend the metrics run on the host, where the reduction is a choice.
    let split = (!on_device).then_some((&run_device, SPLIT_ROUNDS));
    let quickstart_steps = if options.quick { 30 } else { 200 };
    let (row, split_rows) = training_row(
        "quickstart",
        QUICKSTART,
        options.device,
        quickstart_steps,
        10,
        split,
    )?;
    training.push(row);
    evaluations.extend(split_rows);
    if !options.quick {
        let (row, split_rows) =
            training_row("gpu-medium", GPU_MEDIUM, options.device, 30, 5, split)?;
        training.push(row);
        evaluations.extend(split_rows);
    }
    Ok(BenchReport {
        backend: run_device.backend.to_string(),
        adapter,
        quick: options.quick,
        warmup: WARMUP,
        repeats,
        kernels,
        training,
        evaluations,
    })
}

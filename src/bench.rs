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
//! Training is measured by running the shipped config itself (`run::run`, shortened) in a
//! temporary directory, and read from the run's own tables, so it is the code path users run.
//!
//! The Burn-ops composition of the metrics skips what the kernels do beyond the formulas
//! (keeping vectors with NaN/Inf out, undefined values), so it does slightly less work.
//!
//! A time means nothing for a kernel that computes something else: before each of densitrace's
//! kernels is timed (`kernels::fast`, and on wgpu the WGSL kernels), its summaries of the same
//! tensor are compared once with the f64 reference's, within selftest's per-vector tolerances,
//! and `bench` fails naming the kernel if they disagree. (The Burn-ops composition is a yardstick
//! outside densitrace and is not checked.)

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::config::{Config, DeviceChoice, ReductionChoice};
use crate::device::{self, RunDevice};
use crate::kernels::{self, fast, reference};
use crate::measure::Probing;
use crate::measure::reduce::Reduction;
use crate::metrics::{Columns, MetricSpec, Summary};
use crate::run::{self, Destination};
use crate::selftest::row_tolerance;

/// The shipped configs whose models are timed (embedded, so the binary benches anywhere).
const QUICKSTART: &str = include_str!("../experiments/quickstart.yaml");
const GPU_MEDIUM: &str = include_str!("../experiments/gpu-medium.yaml");

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

/// One evaluation of a trained model with one reduction: medians over interleaved rounds.
#[derive(Debug, Serialize)]
pub struct EvaluationRow {
    /// The config it comes from (`quickstart`, `gpu-medium`).
    pub model: String,
    /// `Reduction::name`: `cpu_fast` or `reference`.
    pub reduction: String,
    /// Evaluations timed with this reduction, alternating with the other.
    pub rounds: usize,
    /// The probe sets' forward passes, median seconds.
    pub forward_s: f64,
    /// The read-back and the reduction, median seconds.
    pub metrics_s: f64,
}

/// Training throughput and the instrumentation's cost for one model.
#[derive(Debug, Serialize)]
pub struct TrainingRow {
    /// The config it comes from (`quickstart`, `gpu-medium`).
    pub model: String,
    pub parameters: usize,
    pub tokens_per_step: usize,
    /// Steps timed (after the warm-up steps).
    pub steps_timed: usize,
    pub warmup_steps: usize,
    /// Median over the timed steps.
    pub ms_per_step: f64,
    pub tokens_per_s: f64,
    /// The config's probe sets through the model once (the last of the run's two evaluations,
    /// so compilation and tuning are excluded).
    pub evaluation_s: f64,
    /// Of `evaluation_s`: the forward passes, the metrics (with the read-back), the writes.
    pub forward_s: f64,
    pub metrics_s: f64,
    pub write_s: f64,
    /// Evaluations in the config's full schedule (step 0, `probes.every`, log-spaced steps, the
    /// last step) and its training steps.
    pub schedule_evaluations: usize,
    pub schedule_steps: usize,
    /// Evaluation time over training time for the full schedule.
    pub instrumentation_share: f64,
}

const WARMUP: usize = 2;

/// Evaluations per host reduction in the evaluation split (alternating; the median is reported).
const SPLIT_ROUNDS: usize = 3;

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
fn kernel_rows(
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

/// `yaml` on `choice` for `steps` steps, every step logged, evaluated at step 0 and the last
/// step only, without checkpoints.
fn shortened(yaml: &str, model: &str, choice: DeviceChoice, steps: usize) -> Result<Config> {
    let device = serde_json::to_value(choice)?;
    let overrides: Vec<String> = vec![
        format!(
            "device={}",
            device.as_str().expect("a device choice is a name")
        ),
        format!("train.steps={steps}"),
        format!("probes.every={steps}"),
        "probes.log_spaced=false".into(),
        "train.log_every=1".into(),
        "checkpoint.every=0".into(),
        "checkpoint.log_spaced=false".into(),
    ];
    Ok(Config::from_yaml(yaml, model, &overrides)?)
}

/// Runs `yaml` shortened to `steps` (probes at step 0 and `steps`, no checkpoints) on `choice`,
/// and reads its throughput and evaluation time back from the run's tables. With
/// `split_rounds > 0`, then evaluates the trained model that many times with each host
/// reduction (`evaluation_split`).
fn training_row(
    model: &str,
    yaml: &str,
    choice: DeviceChoice,
    steps: usize,
    warmup_steps: usize,
    split: Option<(&RunDevice, usize)>,
) -> Result<(TrainingRow, Vec<EvaluationRow>)> {
    let full = Config::from_yaml(yaml, model, &[])?;
    let config = shortened(yaml, model, choice, steps)?;
    let dir = std::env::temp_dir().join(format!("densitrace-bench-{}-{model}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stop = AtomicBool::new(false);
    let outcome = run::run(
        &config,
        &Destination::Exactly(dir.clone()),
        vec!["densitrace bench".into()],
        &stop,
    );
    let measured = outcome.and_then(|_| {
        let manifest = crate::rundir::RunDir::at(dir.clone()).read_manifest()?;
        let train = crate::report::load::read_train(&dir)?;
        let evaluations = match split {
            Some((device, rounds)) => evaluation_split(&dir, model, device, rounds)?,
            None => Vec::new(),
        };
        Ok((manifest, train, evaluations))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let (manifest, train, evaluations) =
        measured.with_context(|| format!("timing the {model} model"))?;

    // tokens_per_s of each step after the warm-up (the train table logs every step here).
    let rates: Vec<f64> = train
        .iter()
        .filter(|r| r.step as usize > warmup_steps)
        .map(|r| r.tokens_per_s)
        .collect();
    let tokens_per_step = config.train.batch_size * config.context();
    let mut step_ms: Vec<f64> = rates
        .iter()
        .map(|r| tokens_per_step as f64 / r * 1e3)
        .collect();
    step_ms.sort_by(f64::total_cmp);
    let ms_per_step = step_ms[step_ms.len() / 2];
    let last = manifest
        .evaluations
        .last()
        .context("the run recorded no evaluation")?;
    let schedule_steps = full.train.steps;
    // The full config's own schedule: step 0, every `probes.every` (and the log-spaced steps),
    // and the last step.
    let schedule_evaluations = (0..=schedule_steps)
        .filter(|&s| crate::train::is_eval_step(&full, s))
        .count();
    let evaluation_s = last.seconds;
    let instrumentation_share =
        schedule_evaluations as f64 * evaluation_s / (schedule_steps as f64 * ms_per_step / 1e3);
    let row = TrainingRow {
        model: model.into(),
        parameters: manifest.parameters,
        tokens_per_step,
        steps_timed: step_ms.len(),
        warmup_steps,
        ms_per_step,
        tokens_per_s: tokens_per_step as f64 / ms_per_step * 1e3,
        evaluation_s,
        forward_s: last.forward_seconds,
        metrics_s: last.reduce_seconds,
        write_s: last.write_seconds,
        schedule_evaluations,
        schedule_steps,
        instrumentation_share,
    };
    Ok((row, evaluations))
}

/// The finished run in `dir` evaluated `rounds` times with each host reduction, alternating
/// (fast, reference, fast, ...) so that both see the same load on a shared machine; each
/// reduction's median forward and metrics seconds. The run's own two evaluations came first, so
/// nothing here pays for first-use costs.
fn evaluation_split(
    dir: &std::path::Path,
    model: &str,
    device: &RunDevice,
    rounds: usize,
) -> Result<Vec<EvaluationRow>> {
    let finished = crate::rundir::FinishedRun::open(dir)?;
    let config = &finished.config;
    let gpt = finished.model(&device.device)?;
    let prior = finished.reload_dataset(config)?.prior();
    // Each host reduction as `probes.reduction` chooses it on the CPU backend: `fast` is
    // `kernels::fast`, `reference` the f64 reference.
    let probings: Vec<Probing> = [ReductionChoice::Fast, ReductionChoice::Reference]
        .into_iter()
        .map(|reduction| {
            let mut config = config.clone();
            config.probes.reduction = reduction;
            Probing::new(&config, device, &finished.probe_sets, prior.as_ref())
        })
        .collect();
    let mut seconds: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); probings.len()];
    for _ in 0..rounds {
        for (probing, (forward, metrics)) in probings.iter().zip(&mut seconds) {
            let timing = probing.evaluate(&gpt).timing;
            forward.push(timing.forward);
            metrics.push(timing.reduce);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(probings
        .iter()
        .zip(seconds)
        .map(|(probing, (forward, metrics))| EvaluationRow {
            model: model.into(),
            reduction: probing.reduction().name().into(),
            rounds,
            forward_s: median(forward),
            metrics_s: median(metrics),
        })
        .collect())
}

pub fn bench(options: BenchOptions) -> Result<BenchReport> {
    let run_device = device::select(options.device)?;
    let on_device = run_device.measures_on_device();
    let adapter = match &run_device.adapter {
        Some(a) => format!(
            "{} ({}, {}, driver {} {})",
            a.name, a.backend, a.device_type, a.driver, a.driver_info
        ),
        None => format!(
            "Burn CPU backend (flex), {} threads",
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

impl BenchReport {
    /// The report as Markdown (the format BENCHMARKS.md documents).
    pub fn markdown(&self) -> String {
        let opt = |v: Option<f64>, digits: usize| match v {
            Some(v) => format!("{v:.digits$}"),
            None => "-".into(),
        };
        let mut out = String::new();
        out.push_str(&format!(
            "# densitrace bench{}\n\nadapter: {}\n\n",
            if self.quick { " --quick" } else { "" },
            self.adapter
        ));
        out.push_str(&format!(
            "## Density kernels\n\nmedian of {} runs after {} warm-up runs; each run reads its result back. \
             copy: an element-wise copy on the device (read + write); share: the kernels' read \
             GB/s over the copy's.{}\n\n",
            self.repeats,
            self.warmup,
            if self.backend == "wgpu" {
                " host: the f64 reference; host fast: `kernels::fast` (fast speed-up: host over host fast)."
            } else {
                " On the CPU backend only the host reductions run (the kernels need wgpu): the f64 \
                 reference (host) and `kernels::fast` (host fast; fast speed-up: host over host fast)."
            }
        ));
        out.push_str(
            "| family | vectors x width | MB | copy GB/s | WGSL ms | WGSL GB/s | share of copy | Burn ops ms | WGSL speed-up | host ms | WGSL speed-up | host fast ms | fast speed-up |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for r in &self.kernels {
            let speedup = |other: Option<f64>| match (other, r.wgsl_ms) {
                (Some(o), Some(w)) => format!("{:.1}x", o / w),
                _ => "-".into(),
            };
            out.push_str(&format!(
                "| {} | {} x {} | {:.1} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {:.2} | {:.1}x |\n",
                r.family,
                r.vectors,
                r.width,
                r.mb,
                opt(r.copy_gb_s, 2),
                opt(r.wgsl_ms, 2),
                opt(r.wgsl_gb_s, 2),
                r.share_of_copy
                    .map_or("-".into(), |s| format!("{:.0}%", s * 100.0)),
                opt(r.burn_ms, 2),
                speedup(r.burn_ms),
                r.host_ms,
                speedup(Some(r.host_ms)),
                r.host_fast_ms,
                r.host_ms / r.host_fast_ms,
            ));
        }
        out.push_str(
            "\n## Training and instrumentation\n\nms/step: median after the warm-up steps, from the run's train table. \
             evaluation: the config's probe sets once (after a first, warm-up evaluation). \
             share: evaluations x evaluation time over steps x step time, at the config's full schedule.\n\n\
             forward / metrics / writes: where the evaluation's seconds go (on wgpu the forward passes are only queued; \
             the device's work is in metrics, which waits for the read-back).\n\n\
             | model | parameters | tokens/step | steps timed | ms/step | tokens/s | evaluation s | forward / metrics / writes s | evaluations / steps | instrumentation share |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for t in &self.training {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.2} / {:.2} / {:.2} | {} / {} | {:.1}% |\n",
                t.model,
                t.parameters,
                t.tokens_per_step,
                t.steps_timed,
                t.ms_per_step,
                t.tokens_per_s,
                t.evaluation_s,
                t.forward_s,
                t.metrics_s,
                t.write_s,
                t.schedule_evaluations,
                t.schedule_steps,
                t.instrumentation_share * 100.0
            ));
        }
        if !self.evaluations.is_empty() {
            out.push_str(
                "\n## Evaluation split by reduction (CPU backend)\n\n\
                 The trained model's probe sets evaluated with `kernels::fast` (`probes.reduction: fast`, \
                 the default) and with the f64 reference (`probes.reduction: reference`), alternating in \
                 this process; medians over the rounds. metrics: the read-back and the reduction.\n\n\
                 | model | reduction | rounds | forward s | metrics s | metrics / forward | metrics speed-up |\n\
                 | --- | --- | --- | --- | --- | --- | --- |\n",
            );
            for e in &self.evaluations {
                let reference = self
                    .evaluations
                    .iter()
                    .find(|r| r.model == e.model && r.reduction == Reduction::Reference.name())
                    .map_or(f64::NAN, |r| r.metrics_s);
                out.push_str(&format!(
                    "| {} | {} | {} | {:.3} | {:.3} | {:.2} | {:.1}x |\n",
                    e.model,
                    e.reduction,
                    e.rounds,
                    e.forward_s,
                    e.metrics_s,
                    e.metrics_s / e.forward_s,
                    reference / e.metrics_s,
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both timed models' shortened configs validate on every device choice (the full bench
    /// times gpu-medium, which CI's `--quick` does not reach).
    #[test]
    fn the_timed_configs_shorten_to_valid_runs() {
        for (model, yaml) in [("quickstart", QUICKSTART), ("gpu-medium", GPU_MEDIUM)] {
            for choice in [DeviceChoice::Auto, DeviceChoice::Wgpu, DeviceChoice::Cpu] {
                let config = shortened(yaml, model, choice, 30).unwrap();
                assert_eq!(config.train.steps, 30);
                assert_eq!(config.checkpoint.every, 0);
            }
        }
    }

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

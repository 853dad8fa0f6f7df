//! `probes.reduction: fast` against `probes.reduction: reference` on a whole CPU run: the same
//! config and seed trained twice (training is deterministic on one machine), measured once with
//! `kernels::fast` and once with the f64 reference, must write the same density, quantile and
//! sample tables. `src/kernels/fast.rs` compares the two reductions metric by metric on
//! adversarial rows; this checks the wiring: `Reduction::for_config`, which columns the fast path
//! computes for a plan (`fast::Wanted`), and everything an evaluation does with the results.
//!
//! Tolerance: 1e-6 relative plus 1e-9 absolute, as in `kernels::fast`'s tests (kurtosis relative
//! to kurtosis + 3); a `std` over vectors also gets 1e-9 times its metric's scale (the mean),
//! since it is a difference of nearly equal values when the metric barely varies.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use arrow::array::{Array, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use arrow::util::display::array_value_to_string;
use densitrace::config::Config;
use densitrace::run::{self, Destination};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// end_to_end.rs's tiny run with every per-vector metric (gini, the entropies and
/// max_over_median included, so the fast path sorts and takes logarithms), the across-vector
/// ones, and every vector's table written.
// The shared data and model (common::tiny_config!), then this file's own settings.
const TINY: &str = tiny_config!(
    "
name: tiny
seed: 3
train: {steps: 6, batch_size: 8, warmup_steps: 2, log_every: 3}
probes:
  every: 3
  samples: 24
  sites: [resid_post, mlp.post, attn.out, final.norm]
  positions: [last, all]
  metrics: [topk_energy@0.01, topk_energy@0.05, topk_energy@0.5, hoyer, gini, eff_rank,
            eff_rank_l1, participation_ratio, l0_mean_std, kurtosis, max_over_median, l1, l2,
            near_zero@0.001, near_zero_rel@0.01, nonfinite, active_fraction@0.01,
            dead_fraction@0.01, rankme]
  quantiles: [0, 0.05, 0.5, 0.95, 1]
  per_sample: true
  sets:
    - {name: id, family: none}
    - {name: hops, family: hops}
    - {name: corrupt, family: token_corruption, levels: [0.5]}
"
);

/// Burn's RNG is one per process, reseeded by each run as it starts and steps: two runs in one
/// process at once would draw from each other's seeds. Each test holds this while it runs.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run_with(reduction: &str, root: &Path) -> PathBuf {
    run_named(reduction, &[format!("probes.reduction={reduction}")], root)
}

/// TINY with `overrides`, run into `root/name`.
fn run_named(name: &str, overrides: &[String], root: &Path) -> PathBuf {
    let config = Config::from_yaml(TINY, "tiny", overrides).unwrap();
    let dir = root.join(name);
    let stop = AtomicBool::new(false);
    run::run(
        &config,
        &Destination::Exactly(dir.clone()),
        vec!["fast_reduction test".into()],
        &stop,
    )
    .unwrap();
    dir
}

/// Every Parquet part under `table/`, by its path inside the run.
fn parts(run: &Path, table: &str) -> BTreeMap<String, RecordBatch> {
    let mut out = BTreeMap::new();
    for step in std::fs::read_dir(run.join(table)).unwrap() {
        let path = step.unwrap().path().join("part-0.parquet");
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let name = path.strip_prefix(run).unwrap().display().to_string();
        out.insert(name, batch);
    }
    out
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref()
        .unwrap()
}

/// Compares two tables row by row: identifiers exactly, measured floats within the tolerance.
fn compare(name: &str, fast: &RecordBatch, reference: &RecordBatch, failures: &mut Vec<String>) {
    assert_eq!(fast.schema(), reference.schema(), "{name}: schema");
    assert_eq!(fast.num_rows(), reference.num_rows(), "{name}: rows");
    let metric: &StringArray = column(fast, "metric");
    // Each metric's scale in this table: the largest |value| it takes, for std's slack.
    let mut scale: BTreeMap<String, f64> = BTreeMap::new();
    let values: &Float64Array = column(reference, "value");
    for i in 0..fast.num_rows() {
        let s = scale.entry(metric.value(i).to_string()).or_default();
        if values.value(i).is_finite() {
            *s = s.max(values.value(i).abs());
        }
    }
    for field in fast.schema().fields() {
        let col = field.name().as_str();
        // Stamped with the run's own id and clock.
        if col == "run_id" || col == "wall_time" {
            continue;
        }
        let (f, r) = (
            fast.column_by_name(col).unwrap(),
            reference.column_by_name(col).unwrap(),
        );
        for i in 0..fast.num_rows() {
            let what = || {
                format!(
                    "{name}, row {i} ({}), {col}",
                    (0..fast.num_columns())
                        .filter(|&c| fast.schema().field(c).data_type() == &DataType::Utf8)
                        .map(|c| array_value_to_string(fast.column(c), i).unwrap())
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            };
            if field.data_type() != &DataType::Float64 {
                let (a, b) = (
                    array_value_to_string(f, i).unwrap(),
                    array_value_to_string(r, i).unwrap(),
                );
                if a != b {
                    failures.push(format!("{}: {a} vs {b}", what()));
                }
                continue;
            }
            let a = f.as_any().downcast_ref::<Float64Array>().unwrap().value(i);
            let b = r.as_any().downcast_ref::<Float64Array>().unwrap().value(i);
            if a.is_nan() || b.is_nan() {
                if a.is_nan() != b.is_nan() {
                    failures.push(format!("{}: {a} vs {b}", what()));
                }
                continue;
            }
            let m = metric.value(i);
            let tolerance = match col {
                "std" => 1e-6 * b.abs() + 1e-9 * (1.0 + scale[m]),
                _ if m == "kurtosis" => 1e-6 * (b.abs() + 3.0),
                _ => 1e-6 * b.abs() + 1e-9,
            };
            if (a - b).abs() > tolerance {
                failures.push(format!(
                    "{}: {a:e} vs {b:e} (tolerance {tolerance:e})",
                    what()
                ));
            }
        }
    }
}

fn reductions_recorded(run: &Path) -> Vec<String> {
    let manifest = common::cli::manifest(run);
    manifest["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reduction"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn fast_and_reference_reductions_write_the_same_tables() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let fast = run_with("fast", root.path());
    let reference = run_with("reference", root.path());
    assert_eq!(reductions_recorded(&fast), vec!["cpu_fast"; 3]);
    assert_eq!(reductions_recorded(&reference), vec!["reference"; 3]);

    let mut failures = Vec::new();
    let mut compared = 0;
    for table in ["density", "quantiles", "samples"] {
        let (f, r) = (parts(&fast, table), parts(&reference, table));
        assert_eq!(
            f.keys().collect::<Vec<_>>(),
            r.keys().collect::<Vec<_>>(),
            "{table}: the same steps"
        );
        assert_eq!(f.len(), 3, "{table}: evaluations at steps 0, 3 and 6");
        for (name, batch) in &f {
            compare(name, batch, &r[name], &mut failures);
            compared += batch.num_rows();
        }
    }
    assert!(compared > 10_000, "{compared} rows: too few to mean much");
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures[..failures.len().min(40)].join("\n")
    );
}

/// Every cell of `batch` but the run's id and clock, as text (NaN as NaN), by row, for rows at
/// `position`.
fn cells_at(batch: &RecordBatch, position: &str) -> Vec<Vec<String>> {
    let positions: &StringArray = column(batch, "position");
    let schema = batch.schema();
    let kept: Vec<usize> = (0..batch.num_columns())
        .filter(|&c| !["run_id", "wall_time"].contains(&schema.field(c).name().as_str()))
        .collect();
    (0..batch.num_rows())
        .filter(|&i| positions.value(i) == position)
        .map(|i| {
            kept.iter()
                .map(|&c| array_value_to_string(batch.column(c), i).unwrap())
                .collect()
        })
        .collect()
}

/// With both positions measured, the fast reduction takes each `last` vector's metrics from the
/// `all` position's table instead of computing them again (`Probing::reduce_all`). The `last`
/// rows must be exactly those of a run that measures `last` alone: density, quantiles and
/// samples, cell for cell.
#[test]
fn last_rows_taken_from_the_all_table_equal_a_last_only_run() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let both = run_named("both", &[], root.path());
    let last = run_named(
        "last",
        &["probes.positions=[last]".to_string()],
        root.path(),
    );
    let mut compared = 0;
    for table in ["density", "quantiles", "samples"] {
        let (b, l) = (parts(&both, table), parts(&last, table));
        assert_eq!(b.keys().collect::<Vec<_>>(), l.keys().collect::<Vec<_>>());
        for (name, batch) in &b {
            let (from_both, alone) = (cells_at(batch, "last"), cells_at(&l[name], "last"));
            assert_eq!(alone.len(), l[name].num_rows(), "{name}: only last rows");
            assert!(
                batch.num_rows() > alone.len(),
                "{name}: the both run has all rows too"
            );
            assert_eq!(from_both, alone, "{name}");
            compared += alone.len();
        }
    }
    assert!(compared > 1_000, "{compared} rows: too few to mean much");
}

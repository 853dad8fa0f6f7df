//! `densitrace report` through the binary, on a 3-seed sweep of tiny runs and on single runs: its
//! numbers recomputed here from the runs' own tables by independent (brute-force) code, its
//! outputs present and reproducible, and bad input refused with exit 2 and nothing written.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use common::cli::{expect_success, parquet_files, run_cli};

const BASE: &str = "
name: tiny
seed: 1
device: cpu
data:
  source: {kind: rulegraph, entities: 20, relations: 3, rules: 4, min_hops: 2, max_hops: 3}
model: {layers: 1, d_model: 16, heads: 2, d_ff: 32, seq_len: 4}
train: {steps: 40, batch_size: 8, warmup_steps: 5, log_every: 5}
probes:
  every: 20
  samples: 24
  sites: [resid_post, final.norm]
  metrics: [l1, hoyer, topk_energy@0.1]
  sets:
    - {name: id, family: none}
    - {name: corrupt, family: token_corruption, levels: [0.25, 0.5, 1.0]}
checkpoint: {every: 0}
";

const SWEEP: &str = "
name: seeds
config: base.yaml
grid:
  seed: [1, 2, 3]
";

#[derive(Debug, Clone)]
enum Cell {
    S(String),
    F(f64),
    I(i64),
    B(bool),
    Null,
}

/// Equal values; NaN equals NaN (an interval that is not there is the same in two reports).
impl PartialEq for Cell {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Cell::F(a), Cell::F(b)) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            (Cell::S(a), Cell::S(b)) => a == b,
            (Cell::I(a), Cell::I(b)) => a == b,
            (Cell::B(a), Cell::B(b)) => a == b,
            (Cell::Null, Cell::Null) => true,
            _ => false,
        }
    }
}

impl Cell {
    fn f(&self) -> f64 {
        match self {
            Cell::F(v) => *v,
            Cell::I(v) => *v as f64,
            other => panic!("not a number: {other:?}"),
        }
    }
    fn s(&self) -> &str {
        match self {
            Cell::S(v) => v,
            other => panic!("not a string: {other:?}"),
        }
    }
}

type Row = BTreeMap<String, Cell>;

/// Every row of every Parquet file at `path` (a file or a folder of them).
fn rows(path: &Path) -> Vec<Row> {
    let files = if path.is_dir() {
        parquet_files(path)
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for file in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&file).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            for i in 0..batch.num_rows() {
                let mut row = Row::new();
                for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                    let cell = if column.is_null(i) {
                        Cell::Null
                    } else {
                        match field.data_type() {
                            DataType::Utf8 => Cell::S(column.as_string::<i32>().value(i).into()),
                            DataType::Float64 => {
                                Cell::F(column.as_primitive::<Float64Type>().value(i))
                            }
                            DataType::Int64 => Cell::I(column.as_primitive::<Int64Type>().value(i)),
                            DataType::Int32 => {
                                Cell::I(column.as_primitive::<Int32Type>().value(i) as i64)
                            }
                            DataType::Boolean => Cell::B(column.as_boolean().value(i)),
                            other => panic!("unexpected column type {other}"),
                        }
                    };
                    row.insert(field.name().clone(), cell);
                }
                out.push(row);
            }
        }
    }
    out
}

/// Whether `row` has each (column, value) of `wanted`.
fn has(row: &Row, wanted: &[(&str, Cell)]) -> bool {
    wanted.iter().all(|(k, v)| row.get(*k) == Some(v))
}

fn s(v: &str) -> Cell {
    Cell::S(v.into())
}

/// A completed 3-seed sweep of the tiny config; returns the sweep directory.
fn sweep(tmp: &Path) -> PathBuf {
    std::fs::write(tmp.join("base.yaml"), BASE).unwrap();
    std::fs::write(tmp.join("sweep.yaml"), SWEEP).unwrap();
    let out = tmp.join("out");
    let stdout = expect_success(&[
        "sweep",
        tmp.join("sweep.yaml").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "2",
    ]);
    assert!(stdout.contains("cells: 3 done"), "{stdout}");
    std::fs::read_dir(out.join("seeds"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

/// A single tiny run with `overrides`; returns its directory.
fn single_run(tmp: &Path, overrides: &[&str]) -> PathBuf {
    std::fs::write(tmp.join("base.yaml"), BASE).unwrap();
    let dir = tmp.join("run");
    let mut args: Vec<String> = vec![
        "run".into(),
        tmp.join("base.yaml").to_str().unwrap().to_string(),
        "--run-dir".into(),
        dir.to_str().unwrap().into(),
    ];
    for o in overrides {
        args.extend(["--set".to_string(), o.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    expect_success(&args);
    dir
}

/// P(shifted > id) + P(shifted = id) / 2 over every pair: AUROC with "higher is shifted".
fn brute_force_auroc(id: &[f64], shifted: &[f64]) -> f64 {
    let mut wins = 0.0;
    for &a in shifted {
        for &b in id {
            wins += if a > b {
                1.0
            } else if a == b {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (id.len() * shifted.len()) as f64
}

/// The key columns of one row at final.norm, last: (step, probe, metric).
fn at(step: i64, probe: &str, metric: &str) -> Vec<(&'static str, Cell)> {
    vec![
        ("step", Cell::I(step)),
        ("probe", s(probe)),
        ("site", s("final.norm")),
        ("position", s("last")),
        ("metric", s(metric)),
    ]
}

/// `at`, and the shift level.
fn at_level(step: i64, probe: &str, level: f64, metric: &str) -> Vec<(&'static str, Cell)> {
    let mut key = at(step, probe, metric);
    key.push(("shift_level", Cell::F(level)));
    key
}

fn sample_values(run: &Path, step: i64, probe: &str, level: f64, metric: &str) -> Vec<f64> {
    let want = at_level(step, probe, level, metric);
    let mut v: Vec<(i64, f64)> = rows(&run.join("samples"))
        .iter()
        .filter(|r| has(r, &want))
        .map(|r| (r["vector"].f() as i64, r["value"].f()))
        .collect();
    v.sort_by_key(|p| p.0);
    v.into_iter()
        .map(|p| p.1)
        .filter(|x| x.is_finite())
        .collect()
}

fn density_value(run: &Path, step: i64, probe: &str, level: f64, metric: &str) -> f64 {
    let want = at_level(step, probe, level, metric);
    let found: Vec<f64> = rows(&run.join("density"))
        .iter()
        .filter(|r| has(r, &want))
        .map(|r| r["value"].f())
        .collect();
    assert_eq!(found.len(), 1);
    found[0]
}

#[test]
fn a_sweep_report_agrees_with_the_runs_own_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sweep(tmp.path());
    let stdout = expect_success(&[
        "report",
        dir.to_str().unwrap(),
        "--metric",
        "topk_energy@0.1",
    ]);
    let report = dir.join("report");
    for file in [
        "summary.parquet",
        "gap.parquet",
        "ood.parquet",
        "trend.parquet",
        "density-base.png",
        "gap-base.png",
        "auroc-base.png",
        "auroc-loss-base.png",
        "layers-base.png",
        "loss-base.png",
        "index.html",
    ] {
        let bytes = std::fs::read(report.join(file)).unwrap_or_else(|_| panic!("no {file}"));
        if file.ends_with(".png") {
            assert!(
                bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
                "{file}"
            );
        }
    }
    assert!(stdout.contains("corrupt 0.5"), "{stdout}");
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains("densitrace report") && html.contains("--metric topk_energy@0.1"));

    let cells: Vec<PathBuf> = {
        let mut c: Vec<PathBuf> = std::fs::read_dir(dir.join("cells"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        c.sort();
        c
    };
    assert_eq!(cells.len(), 3);
    let metric = "topk_energy@0.1";

    // The gap: the mean over seeds of each seed's own (shifted - id), paired.
    let differences: Vec<f64> = cells
        .iter()
        .map(|c| {
            density_value(c, 40, "corrupt", 0.5, metric) - density_value(c, 40, "id", 0.0, metric)
        })
        .collect();
    let gap: Vec<Row> = rows(&report.join("gap.parquet"))
        .into_iter()
        .filter(|r| has(r, &at_level(40, "corrupt", 0.5, metric)))
        .collect();
    assert_eq!(gap.len(), 1);
    let g = &gap[0];
    let mean = differences.iter().sum::<f64>() / 3.0;
    assert!(
        (g["gap"].f() - mean).abs() < 1e-12,
        "{g:?} vs {differences:?}"
    );
    assert_eq!(g["seeds"], Cell::I(3));
    assert_eq!(g["interval"], s("seeds"));
    assert_eq!(g["reference"], s("id"));
    let (lo, hi) = (g["lo"].f(), g["hi"].f());
    let (min, max) = differences
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &d| {
            (a.min(d), b.max(d))
        });
    // A percentile bootstrap of a mean of 3 values lies within their range.
    assert!(
        min <= lo && lo <= mean && mean <= hi && hi <= max,
        "{lo} {mean} {hi} {differences:?}"
    );
    assert_eq!(g["excludes_zero"], Cell::B(lo > 0.0 || hi < 0.0));

    // AUROC of seed 1 (the first cell): top-k energy is higher when sparser, so "higher is
    // shifted", computed over every pair of the samples table.
    let id = sample_values(&cells[0], 40, "id", 0.0, metric);
    let shifted = sample_values(&cells[0], 40, "corrupt", 0.5, metric);
    assert_eq!((id.len(), shifted.len()), (24, 24));
    let ood = rows(&report.join("ood.parquet"));
    let mut key = at_level(40, "corrupt", 0.5, metric);
    key.push(("statistic", s("auroc")));
    let seed1: Vec<&Row> = ood
        .iter()
        .filter(|r| has(r, &key) && r["seed"] == Cell::I(1))
        .collect();
    assert_eq!(seed1.len(), 1);
    assert_eq!(seed1[0]["shifted_when"], s("higher"));
    let want = brute_force_auroc(&id, &shifted);
    assert!(
        (seed1[0]["value"].f() - want).abs() < 1e-12,
        "{:?} vs {want}",
        seed1[0]
    );
    let across: Vec<&Row> = ood
        .iter()
        .filter(|r| has(r, &key) && r["seed"] == Cell::Null)
        .collect();
    assert_eq!(across.len(), 1);
    assert_eq!(across[0]["seeds"], Cell::I(3));
    let per_seed: Vec<f64> = ood
        .iter()
        .filter(|r| has(r, &key) && r["seed"] != Cell::Null)
        .map(|r| r["value"].f())
        .collect();
    assert_eq!(per_seed.len(), 3);
    assert!((across[0]["value"].f() - per_seed.iter().sum::<f64>() / 3.0).abs() < 1e-12);

    // The baseline detector: each sample's prompt loss, higher loss scored as shifted, over
    // every pair of the loss samples.
    let loss_key = |probe: &str, level: f64| {
        vec![
            ("step", Cell::I(40)),
            ("probe", s(probe)),
            ("shift_level", Cell::F(level)),
            ("site", s("logits")),
            ("metric", s("prompt_loss")),
        ]
    };
    let loss_values = |probe: &str, level: f64| -> Vec<f64> {
        let mut v: Vec<(i64, f64)> = rows(&cells[0].join("samples"))
            .iter()
            .filter(|r| has(r, &loss_key(probe, level)))
            .map(|r| (r["vector"].f() as i64, r["value"].f()))
            .collect();
        v.sort_by_key(|p| p.0);
        v.into_iter().map(|p| p.1).collect()
    };
    let (id_loss, shifted_loss) = (loss_values("id", 0.0), loss_values("corrupt", 0.5));
    assert_eq!((id_loss.len(), shifted_loss.len()), (24, 24));
    let mut key = loss_key("corrupt", 0.5);
    key.push(("statistic", s("auroc")));
    let loss_seed1: Vec<&Row> = ood
        .iter()
        .filter(|r| has(r, &key) && r["seed"] == Cell::I(1))
        .collect();
    assert_eq!(loss_seed1.len(), 1);
    assert_eq!(loss_seed1[0]["shifted_when"], s("higher"));
    let want = brute_force_auroc(&id_loss, &shifted_loss);
    assert!((loss_seed1[0]["value"].f() - want).abs() < 1e-12, "{want}");
    // The headline's last column is that detector's across-seed AUROC with its interval.
    let loss_across: Vec<&Row> = ood
        .iter()
        .filter(|r| has(r, &key) && r["seed"] == Cell::Null)
        .collect();
    assert_eq!(loss_across.len(), 1);
    let shown = format!(
        "{:.4} [{:.4}, {:.4}]",
        loss_across[0]["value"].f(),
        loss_across[0]["lo"].f(),
        loss_across[0]["hi"].f()
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("corrupt 0.5"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.trim_end().ends_with(&shown), "{line} / {shown}");

    // Trend: corrupt has 3 levels; rho over level means is each seed's rho, averaged.
    let trend = rows(&report.join("trend.parquet"));
    let t: Vec<&Row> = trend
        .iter()
        .filter(|r| has(r, &at(40, "corrupt", metric)) && r["over"] == s("level_means"))
        .collect();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0]["levels"], Cell::I(3));
    let rho_of = |cell: &Path| {
        let y: Vec<f64> = [0.25, 0.5, 1.0]
            .iter()
            .map(|&l| density_value(cell, 40, "corrupt", l, metric))
            .collect();
        // Three distinct levels: rho is 1 - 6 sum d^2 / (n (n^2 - 1)) when y has no ties.
        let mut order: Vec<usize> = (0..3).collect();
        order.sort_by(|&a, &b| y[a].total_cmp(&y[b]));
        let mut rank = [0.0; 3];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r as f64 + 1.0;
        }
        let d2: f64 = (0..3).map(|i| (rank[i] - (i as f64 + 1.0)).powi(2)).sum();
        1.0 - 6.0 * d2 / 24.0
    };
    let want = cells.iter().map(|c| rho_of(c)).sum::<f64>() / 3.0;
    assert!(
        (t[0]["rho"].f() - want).abs() < 1e-12,
        "{:?} vs {want}",
        t[0]
    );

    // Summary: the mean over seeds of the density value.
    let summary = rows(&report.join("summary.parquet"));
    let row: Vec<&Row> = summary
        .iter()
        .filter(|r| has(r, &at(0, "id", metric)))
        .collect();
    assert_eq!(row.len(), 1);
    let want = cells
        .iter()
        .map(|c| density_value(c, 0, "id", 0.0, metric))
        .sum::<f64>()
        / 3.0;
    assert!((row[0]["value"].f() - want).abs() < 1e-12);

    // The same command gives the same tables (the bootstrap is seeded).
    let again = tmp.path().join("again");
    expect_success(&[
        "report",
        dir.to_str().unwrap(),
        "--metric",
        metric,
        "-o",
        again.to_str().unwrap(),
    ]);
    for table in [
        "summary.parquet",
        "gap.parquet",
        "ood.parquet",
        "trend.parquet",
    ] {
        let (a, b) = (rows(&report.join(table)), rows(&again.join(table)));
        assert!(!a.is_empty() && a.len() == b.len(), "{table}");
        let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert_eq!(
            differ, 0,
            "{table}: {differ} rows differ between two reports"
        );
    }
}

#[test]
fn a_single_run_is_bootstrapped_over_its_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let run = single_run(tmp.path(), &[]);
    let stdout = expect_success(&["report", run.to_str().unwrap()]);
    assert!(!stdout.contains("not made"), "{stdout}");
    let summary = rows(&run.join("report/summary.parquet"));
    let sampled = |r: &&Row| r["site"].s() == "final.norm" && r["position"].s() == "last";
    // final.norm/last has samples (the default per_sample): intervals from them; elsewhere none.
    assert!(
        summary
            .iter()
            .filter(sampled)
            .all(|r| r["interval"] == s("samples") && r["lo"].f() <= r["hi"].f())
    );
    assert!(
        summary
            .iter()
            .filter(|r| r["site"].s() == "blocks.0.resid_post")
            .all(|r| r["interval"] == s("none") && r["lo"].f().is_nan())
    );
    let trend = rows(&run.join("report/trend.parquet"));
    assert!(
        trend
            .iter()
            .any(|r| r["over"] == s("samples") && r["interval"] == s("fisher_z"))
    );
}

#[test]
fn a_run_without_samples_reports_what_it_could_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    let run = single_run(tmp.path(), &["probes.per_sample=false"]);
    assert!(!run.join("samples").exists());
    let stdout = expect_success(&["report", run.to_str().unwrap()]);
    assert!(
        stdout.contains("not made: ood.parquet") && stdout.contains("intervals of this single run"),
        "{stdout}"
    );
    let report = run.join("report");
    assert!(!report.join("ood.parquet").exists() && !report.join("auroc-base.png").exists());
    assert!(report.join("gap.parquet").is_file() && report.join("density-base.png").is_file());
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains("Not made"));
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let neither = tmp.path().join("neither");
    std::fs::create_dir(&neither).unwrap();
    let (code, stderr) = run_cli(&["report", neither.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("neither a run directory") && stderr.contains("neither"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&neither).unwrap().count(), 0);

    let run = single_run(tmp.path(), &[]);
    for (args, names) in [
        (vec!["--metric", "bogus"], "--metric bogus"),
        (
            vec!["--site", "blocks.9.mlp.post"],
            "--site blocks.9.mlp.post",
        ),
        (vec!["--position", "first"], "--position first"),
    ] {
        let mut all = vec!["report", run.to_str().unwrap()];
        all.extend(args);
        let (code, stderr) = run_cli(&all);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains(names) && stderr.contains("known:"),
            "{stderr}"
        );
        assert!(!run.join("report").exists());
    }
    // An output folder that is something else is not replaced, even one with an index.html.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("keep.txt"), "mine").unwrap();
    std::fs::write(other.join("index.html"), "<p>mine</p>").unwrap();
    let (code, stderr) = run_cli(&[
        "report",
        run.to_str().unwrap(),
        "-o",
        other.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(other.join("keep.txt").is_file());
}

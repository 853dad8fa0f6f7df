//! `densitrace report` through the binary, on a 3-seed sweep of tiny runs and on single runs: its
//! numbers recomputed here from the runs' own tables by independent (brute-force) code, its
//! outputs present and reproducible, and bad input refused with exit 2 and nothing written.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use common::cli::{expect_success, parquet_files, run_cli};

// The shared data and model (common::tiny_config!), then this file's own settings.
const BASE: &str = tiny_config!(
    "
name: tiny
seed: 1
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
"
);

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

/// The two-sided exact sign-flip p-value by listing every sign pattern.
fn sign_flip_brute_force(d: &[f64]) -> f64 {
    let observed: f64 = d.iter().sum::<f64>().abs();
    let n = d.len();
    let extreme = (0..1u32 << n)
        .filter(|mask| {
            let sum: f64 = (0..n)
                .map(|i| if mask >> i & 1 == 1 { -d[i] } else { d[i] })
                .sum();
            sum.abs() >= observed - 1e-12
        })
        .count();
    extreme as f64 / (1u32 << n) as f64
}

/// Holm's and Benjamini-Hochberg's adjusted p-values from their definitions: Holm's is the
/// largest (m - j + 1) p_(j) over the p-values at or below p_i; BH's the smallest m p_(j) / j over
/// those at or above it.
fn holm_bh_brute_force(p: &[f64]) -> Vec<(f64, f64)> {
    let m = p.len();
    let mut sorted = p.to_vec();
    sorted.sort_by(f64::total_cmp);
    p.iter()
        .map(|&pi| {
            let at = sorted.iter().rposition(|&q| q <= pi).unwrap();
            let first = sorted.iter().position(|&q| q >= pi).unwrap();
            let holm = (0..=at)
                .map(|j| ((m - j) as f64 * sorted[j]).min(1.0))
                .fold(0.0, f64::max);
            let bh = (first..m)
                .map(|j| (m as f64 * sorted[j] / (j + 1) as f64).min(1.0))
                .fold(1.0, f64::min);
            (holm, bh)
        })
        .collect()
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
    // The headline is a sortable HTML table with the tests and the family stated.
    assert!(html.contains("<table class=\"sortable\">") && html.contains("<th>p (Holm)</th>"));
    assert!(html.contains("<code>cell,step</code>"), "{html}");

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
    // The default interval: Student's t over the 3 seeds, t(0.975, 2) = 4.302652729749462 (scipy).
    assert_eq!(g["method"], s("t"));
    let sd = (differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    let half = 4.302_652_729_749_462 * sd / 3f64.sqrt();
    assert!(
        (lo - (mean - half)).abs() < 1e-12 && (hi - (mean + half)).abs() < 1e-12,
        "{lo:e} {hi:e} vs {mean:e} ± {half:e}: {:e} {:e}",
        lo - (mean - half),
        hi - (mean + half)
    );
    assert_eq!(g["excludes_zero"], Cell::B(lo > 0.0 || hi < 0.0));
    // The exact sign-flip test: the share of the 8 sign patterns whose |sum| reaches the
    // observed one.
    assert_eq!(g["test"], s("sign_flip"));
    assert!(
        (g["p"].f() - sign_flip_brute_force(&differences)).abs() < 1e-12,
        "{g:?}"
    );
    assert_eq!(g["family"], s("cell=base,step=40"));

    // Holm and BH recomputed over that family: every across-seed test of the cell at step 40.
    let family: Vec<Row> = ["gap.parquet", "ood.parquet", "trend.parquet"]
        .iter()
        .flat_map(|t| rows(&report.join(t)))
        .filter(|r| r["family"] == s("cell=base,step=40"))
        .collect();
    assert!(family.len() > 20, "{}", family.len());
    assert!(
        family
            .iter()
            .all(|r| r.get("seed").is_none_or(|c| *c == Cell::Null))
    );
    let ps: Vec<f64> = family.iter().map(|r| r["p"].f()).collect();
    for (r, (holm, bh)) in family.iter().zip(holm_bh_brute_force(&ps)) {
        assert!((r["p_holm"].f() - holm).abs() < 1e-12, "{r:?} vs {holm}");
        assert!((r["q_bh"].f() - bh).abs() < 1e-12, "{r:?} vs {bh}");
    }

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
        .filter(|r| {
            has(r, &at(40, "corrupt", metric))
                && r["over"] == s("level_means")
                && r["seed"] == Cell::Null
        })
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
    let rhos: Vec<f64> = cells.iter().map(|c| rho_of(c)).collect();
    let want = rhos.iter().sum::<f64>() / 3.0;
    assert!(
        (t[0]["rho"].f() - want).abs() < 1e-12,
        "{:?} vs {want}",
        t[0]
    );
    // Over 3 levels a seed's rho takes 4 values over the 6 orders (1, 0.5, -0.5, -1 with
    // counts 1, 2, 2, 1): its exact p is the share of orders with |rho| at least as large; the
    // combined p is the share of the 6^3 joint orders whose mean |rho| reaches the observed one.
    let null: [f64; 6] = [1.0, 0.5, 0.5, -0.5, -0.5, -1.0];
    let per_seed: Vec<&Row> = trend
        .iter()
        .filter(|r| {
            has(r, &at(40, "corrupt", metric))
                && r["over"] == s("level_means")
                && r["seed"] != Cell::Null
        })
        .collect();
    assert_eq!(per_seed.len(), 3);
    for (row, rho) in per_seed.iter().zip(&rhos) {
        let p = null.iter().filter(|n| n.abs() >= rho.abs() - 1e-9).count() as f64 / 6.0;
        assert!((row["p"].f() - p).abs() < 1e-12, "{row:?} vs {p}");
        assert_eq!(row["family"], s(""));
    }
    let mut extreme = 0;
    for a in null {
        for b in null {
            for c in null {
                extreme += (((a + b + c) / 3.0_f64).abs() >= want.abs() - 1e-9) as usize;
            }
        }
    }
    let p = extreme as f64 / 216.0;
    assert_eq!(t[0]["test"], s("permutation_levels"));
    assert!((t[0]["p"].f() - p).abs() < 1e-12, "{:?} vs {p}", t[0]);

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
    // Without samples a single run's trend has no interval: its bounds stay missing, never
    // stretched to [-1, 1].
    let trend = rows(&report.join("trend.parquet"));
    assert!(!trend.is_empty());
    for r in trend.iter().filter(|r| r["interval"] == s("none")) {
        assert!(r["lo"].f().is_nan() && r["hi"].f().is_nan(), "{r:?}");
    }
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
    // The metric and site are checked against the run's tables; the position is a closed set
    // that the command line itself refuses (clap, also exit 2), listing the values it takes.
    for (args, needles) in [
        (vec!["--metric", "bogus"], ["--metric bogus", "known:"]),
        (
            vec!["--site", "blocks.9.mlp.post"],
            ["--site blocks.9.mlp.post", "known:"],
        ),
        (
            vec!["--position", "first"],
            ["'first'", "[possible values: last, all]"],
        ),
    ] {
        let mut all = vec!["report", run.to_str().unwrap()];
        all.extend(args);
        let (code, stderr) = run_cli(&all);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(needles.iter().all(|n| stderr.contains(n)), "{stderr}");
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

/// Rows of `table` of `report` whose column `column` is `value`.
fn rows_where(report: &Path, table: &str, column: &str, value: &str) -> Vec<Row> {
    rows(&report.join(table))
        .into_iter()
        .filter(|r| r[column] == s(value))
        .collect()
}

/// A negative and a positive control in one run, tested over its samples. Negative: `id_again`,
/// a second draw of training facts with id's relation tokens (`matched_to: id`), tested against
/// id (`reference: id`): the two are samples of one distribution, so at most the nominal 5% of
/// its rows may be Holm-significant. Positive: random prompts against id at the last block's
/// residual stream, which the model reads very differently: significant after Holm.
#[test]
fn controls_a_null_set_is_not_significant_and_random_prompts_are() {
    let tmp = tempfile::tempdir().unwrap();
    let run = single_run(
        tmp.path(),
        &[
            // Enough training facts (200 x 3) that two draws of 192 differ.
            "data.source.entities=200",
            "probes.samples=192",
            "probes.per_sample={sites: [resid_post, final.norm], positions: [last]}",
            "probes.sets=[{name: id, family: none}, {name: id_again, family: none, matched_to: id, reference: id}, {name: random, family: random}]",
        ],
    );
    expect_success(&["report", run.to_str().unwrap()]);
    let report = run.join("report");

    let null = rows_where(&report, "gap.parquet", "probe", "id_again");
    assert!(null.len() >= 12, "{}", null.len());
    assert!(null.iter().all(|r| r["reference"] == s("id")));
    // A single run is tested over its own samples, and the table says so.
    let tested: Vec<&Row> = null.iter().filter(|r| r["test"] != s("")).collect();
    assert!(!tested.is_empty() && tested.iter().all(|r| r["test"] == s("welch_samples")));
    let significant = tested.iter().filter(|r| r["p_holm"].f() < 0.05).count();
    assert!(
        significant as f64 <= 0.05 * tested.len() as f64,
        "{significant} of {} null rows Holm-significant",
        tested.len()
    );
    // The null rows are real tests, not constant ones: their p-values spread out.
    let ps: Vec<f64> = tested.iter().map(|r| r["p"].f()).collect();
    assert!(
        ps.iter().any(|&p| p < 0.9) && ps.iter().any(|&p| p > 0.1),
        "{ps:?}"
    );

    let positive: Vec<Row> = rows_where(&report, "gap.parquet", "probe", "random")
        .into_iter()
        .filter(|r| {
            r["site"] == s("blocks.0.resid_post")
                && r["position"] == s("last")
                && r["step"] == Cell::I(40)
        })
        .collect();
    assert!(!positive.is_empty());
    assert!(
        positive.iter().any(|r| r["p_holm"].f() < 0.05),
        "{positive:?}"
    );
    // The AUROC's single-run test is Mann-Whitney over the samples.
    let auroc: Vec<Row> = rows_where(&report, "ood.parquet", "probe", "random")
        .into_iter()
        .filter(|r| r["statistic"] == s("auroc") && r["seed"] == Cell::Null)
        .collect();
    assert!(!auroc.is_empty() && auroc.iter().all(|r| r["test"] == s("mann_whitney_samples")));
}

/// A set with a matched reference is compared with it level by level: the gap of hops at each
/// level is hops minus the matched id set at that level, and the tables name the reference.
#[test]
fn matched_references_are_used_level_by_level() {
    let tmp = tempfile::tempdir().unwrap();
    let run = single_run(
        tmp.path(),
        &[
            "probes.sets=[{name: id, family: none}, {name: id_hops, family: none, matched_to: hops}, {name: hops, family: hops, reference: id_hops}]",
        ],
    );
    expect_success(&["report", run.to_str().unwrap()]);
    let report = run.join("report");
    let metric = "hoyer";
    let gaps = rows_where(&report, "gap.parquet", "probe", "hops");
    assert!(gaps.iter().all(|r| r["reference"] == s("id_hops")));
    for level in [2.0, 3.0] {
        let g: Vec<&Row> = gaps
            .iter()
            .filter(|r| has(r, &at_level(40, "hops", level, metric)))
            .collect();
        assert_eq!(g.len(), 1, "level {level}");
        let want = density_value(&run, 40, "hops", level, metric)
            - density_value(&run, 40, "id_hops", level, metric);
        assert!(
            (g[0]["gap"].f() - want).abs() < 1e-12,
            "{:?} vs {want}",
            g[0]
        );
    }
    // The matched set itself names no reference, so it is not tested.
    assert!(rows_where(&report, "gap.parquet", "probe", "id_hops").is_empty());
    let ood = rows_where(&report, "ood.parquet", "probe", "hops");
    assert!(!ood.is_empty() && ood.iter().all(|r| r["reference"] == s("id_hops")));
}

/// Cells that differ in one grid key and share seeds are contrasted seed by seed.
#[test]
fn contrasts_pair_cells_on_their_shared_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("base.yaml"), BASE).unwrap();
    std::fs::write(
        tmp.path().join("sweep.yaml"),
        "name: act\nconfig: base.yaml\ngrid:\n  model.activation: [gelu, relu]\n  seed: [1, 2]\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    expect_success(&[
        "sweep",
        tmp.path().join("sweep.yaml").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "2",
    ]);
    let dir = std::fs::read_dir(out.join("act"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    expect_success(&["report", dir.to_str().unwrap()]);
    let contrast = rows(&dir.join("report/contrast.parquet"));
    let metric = "hoyer";
    let gap_rows: Vec<&Row> = contrast
        .iter()
        .filter(|r| r["quantity"] == s("gap") && has(r, &at_level(40, "corrupt", 1.0, metric)))
        .collect();
    assert_eq!(gap_rows.len(), 1, "{contrast:?}");
    let r = gap_rows[0];
    assert_eq!(r["grid_key"], s("model.activation"));
    assert_eq!((r["from_value"].s(), r["to_value"].s()), ("gelu", "relu"));
    assert_eq!(r["seeds"], Cell::I(2));
    // Each seed's relu gap minus its gelu gap, averaged.
    let cell = |activation: &str, seed: u64| -> PathBuf {
        std::fs::read_dir(dir.join("cells"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.contains(&format!("model.activation={activation}"))
                    && name.contains(&format!("seed={seed}"))
            })
            .unwrap()
    };
    let gap_of = |c: &Path| {
        density_value(c, 40, "corrupt", 1.0, metric) - density_value(c, 40, "id", 0.0, metric)
    };
    let d: Vec<f64> = [1, 2]
        .iter()
        .map(|&seed| gap_of(&cell("relu", seed)) - gap_of(&cell("gelu", seed)))
        .collect();
    assert!(
        (r["difference"].f() - (d[0] + d[1]) / 2.0).abs() < 1e-12,
        "{r:?} vs {d:?}"
    );
    assert!((r["p"].f() - sign_flip_brute_force(&d)).abs() < 1e-12);
    // Excess rows compare each cell against its own width's iid reference; AUROC rows exist
    // where samples were written.
    assert!(contrast.iter().any(|r| r["quantity"] == s("excess")));
    assert!(contrast.iter().any(|r| r["quantity"] == s("auroc")));

    // A contrast key that is not in the grid is bad input, and nothing is written.
    let elsewhere = tmp.path().join("elsewhere");
    let (code, stderr) = run_cli(&[
        "report",
        dir.to_str().unwrap(),
        "--contrast",
        "model.d_model",
        "-o",
        elsewhere.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--contrast model.d_model"), "{stderr}");
    assert!(!elsewhere.exists());
}

/// Unknown interval methods and families are refused with exit 2, naming the flag.
#[test]
fn bad_inference_flags_exit_2_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let run = single_run(tmp.path(), &[]);
    for (args, names) in [
        (vec!["--interval", "wald"], "--interval"),
        (vec!["--family", "cell,colour"], "--family"),
        (vec!["--family", "step=late"], "--family"),
    ] {
        let mut all = vec!["report", run.to_str().unwrap()];
        all.extend(args);
        let (code, stderr) = run_cli(&all);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(names), "{stderr}");
        assert!(!run.join("report").exists());
    }
}

#[test]
fn a_report_is_replaced_atomically_even_through_dot_dot() {
    let tmp = tempfile::tempdir().unwrap();
    let run = single_run(tmp.path(), &[]);
    let rep = tmp.path().join("rep");
    expect_success(&["report", run.to_str().unwrap(), "-o", rep.to_str().unwrap()]);
    let first = std::fs::read_to_string(rep.join("index.html")).unwrap();
    let dotted = rep.join("..").join("rep");
    let (code, stderr) = run_cli(&[
        "report",
        run.to_str().unwrap(),
        "-o",
        dotted.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(rep.join("index.html").is_file() && rep.join("summary.parquet").is_file());
    // The new report (its page shows the command that made it), not the old one.
    let second = std::fs::read_to_string(rep.join("index.html")).unwrap();
    assert!(second.contains("rep/../rep") && !first.contains("rep/../rep"));
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".rep"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Sets fields of the run's manifest.
fn edit_manifest(run: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = run.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(&path, m.to_string()).unwrap();
}

#[test]
fn a_single_run_that_did_not_complete_is_reported_as_incomplete() {
    let tmp = tempfile::tempdir().unwrap();
    let run = single_run(tmp.path(), &[]);
    let stdout = expect_success(&["report", run.to_str().unwrap()]);
    assert!(!stdout.contains("incomplete"), "{stdout}");
    for (status, says) in [
        ("diverged", "diverged (its loss went non-finite at step 30)"),
        ("interrupted", "interrupted: evaluated up to step 40 of 40"),
        ("running", "killed"),
    ] {
        edit_manifest(&run, |m| {
            m["status"] = status.into();
            m["diverged_at"] = if status == "diverged" {
                30.into()
            } else {
                serde_json::Value::Null
            };
        });
        let stdout = expect_success(&["report", run.to_str().unwrap()]);
        assert!(
            stdout.contains("incomplete:") && stdout.contains(says),
            "{status}: {stdout}"
        );
        let html = std::fs::read_to_string(run.join("report/index.html")).unwrap();
        assert!(
            html.contains("Incomplete") && html.contains(says),
            "{status}"
        );
    }
}

#[test]
fn a_missing_evaluation_is_named_and_left_out_of_every_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sweep(tmp.path());
    let mut cells: Vec<PathBuf> = std::fs::read_dir(dir.join("cells"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cells.sort();
    let cell = &cells[1];
    let m = common::cli::manifest(cell);
    let seed = m["seed"].as_i64().unwrap();
    std::fs::remove_dir_all(cell.join("density/step-000020")).unwrap();
    let stdout = expect_success(&["report", dir.to_str().unwrap()]);
    let run_id = m["run_id"].as_str().unwrap();
    assert!(
        stdout.contains("incomplete:")
            && stdout.contains("no evaluation at step 20")
            && stdout.contains(run_id),
        "{stdout}"
    );
    let report = dir.join("report");
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains("no evaluation at step 20"));
    // Two seeds at step 20 and three at 40, in the summary; and the run's own OOD rows (from its
    // samples/ table, which still has step 20) are left out of step 20 too.
    let summary = rows(&report.join("summary.parquet"));
    assert!(
        summary
            .iter()
            .filter(|r| r["step"] == Cell::I(20))
            .all(|r| r["seeds"] == Cell::I(2))
    );
    assert!(
        summary
            .iter()
            .filter(|r| r["step"] == Cell::I(40))
            .all(|r| r["seeds"] == Cell::I(3))
    );
    let ood = rows(&report.join("ood.parquet"));
    let of_seed = |step: i64| {
        ood.iter()
            .filter(|r| r["step"] == Cell::I(step) && r.get("seed") == Some(&Cell::I(seed)))
            .count()
    };
    assert_eq!(of_seed(20), 0);
    assert!(of_seed(40) > 0);
}

//! Whole runs through the binary, read back with arrow's Parquet reader (not our writer's
//! structs): one on the CPU backend, one on wgpu (software Vulkan without a GPU) that wires the
//! whole GPU path together: training and the density kernels.

#[macro_use]
mod common;

use common::cli::bin;
use densitrace::measure::reduce::Reduction;
use densitrace::rundir::FinishedRun;
use densitrace::selftest::expected_readback_bytes;

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, Float64Array, Int64Array, StringArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

// The shared data and model (common::tiny_config!), this file's schedule, then the probe plan
// selftest's end-to-end run measures too.
const TINY: &str = concat!(
    tiny_config!(
        "
name: tiny
seed: 3
train: {steps: 12, batch_size: 8, warmup_steps: 2, log_every: 3}
probes:
  every: 6
"
    ),
    densitrace::tiny_probe_plan!()
);

fn run(config: &str, overrides: &[&str]) -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("tiny.yaml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = bin();
    cmd.args([
        "run",
        path.to_str().unwrap(),
        "--out",
        dir.join("runs").to_str().unwrap(),
    ]);
    for o in overrides {
        cmd.args(["--set", o]);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "run failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains("hoyer of final.norm at the last prompt token"),
        "no summary table: {stdout}"
    );
    let runs: Vec<_> = std::fs::read_dir(dir.join("runs/tiny")).unwrap().collect();
    assert_eq!(runs.len(), 1);
    runs.into_iter().next().unwrap().unwrap().path()
}

fn read(path: &Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn parts(run: &Path, table: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(run.join(table))
        .unwrap()
        .map(|e| e.unwrap().path().join("part-0.parquet"))
        .collect();
    files.sort();
    files
}

fn strings<'a>(b: &'a RecordBatch, name: &str) -> &'a StringArray {
    b.column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref()
        .unwrap()
}

fn floats<'a>(b: &'a RecordBatch, name: &str) -> &'a Float64Array {
    b.column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref()
        .unwrap()
}

fn ints<'a>(b: &'a RecordBatch, name: &str) -> &'a Int64Array {
    b.column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref()
        .unwrap()
}

/// Checks the run directory of TINY (with `steps` and `every` as given) whatever the device.
fn check_run(run: &Path, eval_steps: &[i64], backend: &str) {
    let density = parts(run, "density");
    let names: Vec<String> = density
        .iter()
        .map(|p| {
            p.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let expected: Vec<String> = eval_steps.iter().map(|s| format!("step-{s:06}")).collect();
    assert_eq!(names, expected);

    // Probe sets: id, hops levels 2 and 3, corrupt 0.5 = 4; sites: blocks.0.resid_post,
    // blocks.0.mlp.post, final.norm = 3; positions 2; metrics 6; plus 5 logits rows per set
    // (next_token_loss, prompt_loss, answer_loss, answer_acc, prior_acc).
    let expected_rows = 4 * 3 * 2 * 6 + 4 * 5;
    let schema = [
        ("run_id", DataType::Utf8),
        ("step", DataType::Int64),
        ("tokens_seen", DataType::Int64),
        ("probe", DataType::Utf8),
        ("shift_family", DataType::Utf8),
        ("shift_level", DataType::Float64),
        ("layer", DataType::Int32),
        ("site", DataType::Utf8),
        ("position", DataType::Utf8),
        ("metric", DataType::Utf8),
        ("value", DataType::Float64),
        ("std", DataType::Float64),
        ("n", DataType::Int64),
        ("wall_time", DataType::Float64),
    ];
    for (path, &step) in density.iter().zip(eval_steps) {
        let b = read(path);
        let fields: Vec<(String, DataType)> = b
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        let want: Vec<(String, DataType)> = schema
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        assert_eq!(fields, want, "{}", path.display());
        assert_eq!(b.num_rows(), expected_rows, "{}", path.display());
        assert!(ints(&b, "step").iter().all(|s| s == Some(step)));
        assert_eq!(ints(&b, "tokens_seen").value(0), step * 8 * 3);
        let (value, std, n) = (floats(&b, "value"), floats(&b, "std"), ints(&b, "n"));
        for i in 0..b.num_rows() {
            let what = format!(
                "{} {} {} {}",
                strings(&b, "probe").value(i),
                strings(&b, "site").value(i),
                strings(&b, "position").value(i),
                strings(&b, "metric").value(i)
            );
            assert!(n.value(i) > 0, "{what}: n = 0");
            assert!(
                value.value(i).is_finite(),
                "{what}: value {}",
                value.value(i)
            );
            // rankme is one value per probe set: it has no spread.
            let metric = strings(&b, "metric").value(i);
            assert_eq!(
                std.value(i).is_finite(),
                metric != "rankme",
                "{what}: std {}",
                std.value(i)
            );
        }
        let levels: Vec<f64> = floats(&b, "shift_level").iter().flatten().collect();
        for l in [0.0, 2.0, 3.0, 0.5] {
            assert!(levels.contains(&l), "no rows at shift_level {l}");
        }
        // 16 samples, so `last` has 16 vectors and `all` 16 x 3 prompt tokens.
        for i in 0..b.num_rows() {
            if strings(&b, "metric").value(i) == "hoyer" {
                let expect = if strings(&b, "position").value(i) == "last" {
                    16
                } else {
                    48
                };
                assert_eq!(n.value(i), expect);
            }
        }
    }

    // The default quantiles (5 of them) of each per-vector metric (4 of the 6).
    for (path, &step) in parts(run, "quantiles").iter().zip(eval_steps) {
        let b = read(path);
        assert_eq!(b.num_rows(), 4 * 3 * 2 * 4 * 5, "{}", path.display());
        assert!(ints(&b, "step").iter().all(|s| s == Some(step)));
        let q: Vec<f64> = floats(&b, "quantile").iter().flatten().collect();
        assert_eq!(&q[..5], &[0.05, 0.25, 0.5, 0.75, 0.95]);
        assert!(floats(&b, "value").iter().all(|v| v.unwrap().is_finite()));
    }
    assert_eq!(parts(run, "quantiles").len(), eval_steps.len());

    let train = parts(run, "train");
    let logged: usize = train.iter().map(|p| read(p).num_rows()).sum();
    assert_eq!(logged, 4, "steps 3, 6, 9, 12 are logged");
    for p in &train {
        let b = read(p);
        assert!(floats(&b, "loss").iter().all(|l| l.unwrap().is_finite()));
    }

    let manifest = common::cli::manifest(run);
    assert_eq!(manifest["device"]["backend"], backend);
    assert_eq!(manifest["status"], "completed");
    assert_eq!(
        manifest["evaluations"].as_array().unwrap().len(),
        eval_steps.len()
    );
    assert!(run.join("checkpoints/final/model.bpk").is_file());
    assert!(run.join("checkpoints/final/DONE").is_file());
    let config = std::fs::read_to_string(run.join("config.yaml")).unwrap();
    densitrace::config::Config::from_yaml(&config, "config.yaml", &[]).unwrap();
    let no_tmp = walk(run)
        .into_iter()
        .all(|p| !p.to_string_lossy().ends_with(".tmp"));
    assert!(no_tmp, "a temporary file was left behind");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_cpu_run_writes_every_evaluation_as_valid_parquet() {
    let run = run(TINY, &[]);
    check_run(&run, &[0, 6, 12], "cpu");
    // On the CPU backend the activations themselves are read back: 4 sets x (16 + 48 vectors) x
    // the widths of the 3 sites (16, 32 for mlp.post, 16), plus per set 8 answer statistics and
    // the 16 samples' two losses; 4 bytes each.
    let bytes = (4 * ((16 + 48) * (16 + 32 + 16) + 8 + 2 * 16) * 4) as u64;
    let recorded: Vec<u64> = recorded_bytes(&run);
    assert_eq!(recorded, vec![bytes; 3]);
    // Any host reduction (kernels::fast, the reference) reads back the same activations.
    assert_eq!(expected_bytes(&run, Reduction::Reference), recorded);
}

/// Each evaluation's `readback_bytes`, from the manifest.
fn recorded_bytes(run: &Path) -> Vec<u64> {
    let manifest = common::cli::manifest(run);
    manifest["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["readback_bytes"].as_u64().unwrap())
        .collect()
}

/// What `densitrace selftest` expects each evaluation of the run to read back, one entry per
/// evaluation recorded.
fn expected_bytes(run: &Path, reduction: Reduction) -> Vec<u64> {
    let finished = FinishedRun::open(run).unwrap();
    let want = expected_readback_bytes(&finished.config, &finished.probe_sets, reduction);
    vec![want; recorded_bytes(run).len()]
}

#[test]
fn a_wgpu_run_trains_and_measures_with_the_kernels() {
    if common::wgpu_device().is_none() {
        return;
    }
    let run = run(
        TINY,
        &[
            "device=wgpu",
            "train.steps=2",
            "probes.every=1",
            "train.log_every=1",
        ],
    );
    let density = parts(&run, "density");
    assert_eq!(density.len(), 3, "evaluations at steps 0, 1, 2");
    let manifest = common::cli::manifest(&run);
    assert_eq!(manifest["device"]["backend"], "wgpu");
    assert!(manifest["device"]["adapter"]["name"].is_string());
    // Only summaries cross, never the activations. Per set, site and position: (9 + 1 columns) x
    // (mean, std, n and 5 quantiles) plus 3 active-fraction statistics; per set and position, the
    // covariance of each site for rankme (widths 16, 32 and 16); 8 logits floats per set (mean
    // and std of next_token_loss, prompt_loss, answer_loss, answer_acc); and per set, the
    // per-vector table of final.norm at last (the default probes.per_sample): 16 vectors x 10
    // columns, and the 16 samples' two losses.
    let per_measured = 10 * (3 + 5) + 3;
    let covariances = 2 * (16 * 16 + 32 * 32 + 16 * 16);
    let samples = 16 * 10 + 2 * 16;
    let bytes = manifest["evaluations"][0]["readback_bytes"]
        .as_u64()
        .unwrap();
    assert_eq!(
        bytes,
        (4 * (3 * 2 * per_measured + covariances + 8 + samples) * 4) as u64
    );
    // The selftest's derivation from the plan agrees with this hand count on every evaluation.
    assert_eq!(
        expected_bytes(&run, Reduction::Kernels),
        vec![bytes; 3],
        "selftest::expected_readback_bytes"
    );
    for path in density {
        let b = read(&path);
        // Per set: 3 sites x 2 positions x 6 metrics, and 5 logits rows (the 4 losses and
        // accuracies read back, and prior_acc, computed on the host).
        assert_eq!(b.num_rows(), 4 * 3 * 2 * 6 + 4 * 5);
        let value = floats(&b, "value");
        assert!(value.iter().all(|v| v.unwrap().is_finite()));
    }
}

/// Reads a float32 C-order .npy written by `densitrace dump`: (shape, values).
fn read_npy(path: &Path) -> ([usize; 2], Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"));
    let shape = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let dims: Vec<usize> = shape
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let values = bytes[10 + len..]
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    ([dims[0], dims[1]], values)
}

#[test]
fn dump_and_per_sample_output_reproduce_the_density_table() {
    let run = run(TINY, &["probes.per_sample=true"]);
    let npy = run.join("acts.npy");
    let out = bin()
        .args([
            "dump",
            run.to_str().unwrap(),
            "--probe",
            "hops",
            "--level",
            "2",
        ])
        .args([
            "--site",
            "blocks.0.mlp.post",
            "--position",
            "all",
            "-o",
            npy.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ([n, d], values) = read_npy(&npy);
    assert_eq!([n, d], [48, 32], "16 samples x 3 tokens, d_ff 32");

    // The last evaluation used the final weights: its l1 is the mean of the dumped vectors' l1.
    let density = read(parts(&run, "density").last().unwrap());
    let row = |metric: &str| {
        (0..density.num_rows())
            .find(|&i| {
                strings(&density, "probe").value(i) == "hops"
                    && floats(&density, "shift_level").value(i) == 2.0
                    && strings(&density, "site").value(i) == "blocks.0.mlp.post"
                    && strings(&density, "position").value(i) == "all"
                    && strings(&density, "metric").value(i) == metric
            })
            .unwrap()
    };
    let l1: f64 = values
        .chunks(d)
        .map(|v| v.iter().map(|x| x.abs() as f64).sum::<f64>())
        .sum::<f64>()
        / n as f64;
    let table_l1 = floats(&density, "value").value(row("l1"));
    assert!(
        (l1 - table_l1).abs() <= 1e-5 * table_l1,
        "{l1} vs {table_l1}"
    );

    // Per-sample rows: one per vector and per-vector metric, averaging to the table's value.
    let samples = read(parts(&run, "samples").last().unwrap());
    let hoyer: Vec<f64> = (0..samples.num_rows())
        .filter(|&i| {
            strings(&samples, "probe").value(i) == "hops"
                && floats(&samples, "shift_level").value(i) == 2.0
                && strings(&samples, "site").value(i) == "blocks.0.mlp.post"
                && strings(&samples, "position").value(i) == "all"
                && strings(&samples, "metric").value(i) == "hoyer"
        })
        .map(|i| floats(&samples, "value").value(i))
        .collect();
    assert_eq!(hoyer.len(), 48);
    let mean = hoyer.iter().sum::<f64>() / 48.0;
    let table_hoyer = floats(&density, "value").value(row("hoyer"));
    assert!(
        (mean - table_hoyer).abs() <= 1e-12,
        "{mean} vs {table_hoyer}"
    );
    // Each sample's two losses: 16 per set each, averaging to the density table's means; the
    // prompt's own loss leaves out the answer, so it differs from the whole sequence's.
    let mut means = Vec::new();
    for metric in ["next_token_loss", "prompt_loss"] {
        let losses: Vec<f64> = (0..samples.num_rows())
            .filter(|&i| {
                strings(&samples, "probe").value(i) == "hops"
                    && floats(&samples, "shift_level").value(i) == 2.0
                    && strings(&samples, "site").value(i) == "logits"
                    && strings(&samples, "metric").value(i) == metric
            })
            .map(|i| floats(&samples, "value").value(i))
            .collect();
        assert_eq!(losses.len(), 16, "{metric}");
        let loss_row = (0..density.num_rows())
            .find(|&i| {
                strings(&density, "probe").value(i) == "hops"
                    && floats(&density, "shift_level").value(i) == 2.0
                    && strings(&density, "site").value(i) == "logits"
                    && strings(&density, "metric").value(i) == metric
            })
            .unwrap();
        let table_loss = floats(&density, "value").value(loss_row);
        let mean_loss = losses.iter().sum::<f64>() / 16.0;
        assert!(
            (mean_loss - table_loss).abs() <= 1e-5 * table_loss,
            "{metric}: {mean_loss} vs {table_loss}"
        );
        assert!(
            losses.iter().any(|&l| (l - mean_loss).abs() > 1e-3),
            "{metric}: one loss per sample"
        );
        means.push(mean_loss);
    }
    assert!((means[0] - means[1]).abs() > 1e-3, "{means:?}");
    // 4 sets x 3 sites x (16 + 48 vectors) x 4 per-vector metrics, and 4 sets x 16 x 2 losses.
    assert_eq!(samples.num_rows(), 4 * 3 * 64 * 4 + 4 * 16 * 2);

    for (args, needle) in [
        (vec!["--probe", "hops", "--site", "final.norm"], "--level"),
        (
            vec!["--probe", "nope", "--site", "final.norm"],
            "no such probe set",
        ),
        (
            vec!["--probe", "id", "--site", "blocks.7.mlp.post"],
            "no such site",
        ),
        (
            vec![
                "--probe",
                "id",
                "--site",
                "final.norm",
                "--position",
                "first",
            ],
            "--position",
        ),
    ] {
        let out = bin()
            .arg("dump")
            .arg(&run)
            .args(&args)
            .args(["-o", run.join("bad.npy").to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!run.join("bad.npy").exists());
    }
}

/// With `XDG_RUNTIME_DIR` unset (a headless machine, a batch job), Mesa's Vulkan drivers print
/// "error: XDG_RUNTIME_DIR is invalid or not set", which reads like a failure; densitrace points
/// the variable at a private directory first, so a command that loads the drivers prints no such
/// line.
#[test]
fn a_headless_command_that_loads_the_vulkan_drivers_prints_no_runtime_dir_error() {
    let output = bin()
        .arg("devices")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stderr.contains("XDG_RUNTIME_DIR"),
        "a headless command printed Mesa's runtime-dir error: {stderr}"
    );
}

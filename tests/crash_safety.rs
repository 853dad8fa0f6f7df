//! Runs that can be killed at any moment, resumed, and give the same numbers: SIGKILL at random
//! points, SIGINT, the run-directory lock, divergence and determinism, through the binary.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::{Rng, SeedableRng};

const CONFIG: &str = "
name: crash
seed: 5
device: cpu
data:
  source: {kind: rulegraph, entities: 20, relations: 3, rules: 4, min_hops: 2, max_hops: 3}
model: {layers: 1, d_model: 16, heads: 2, d_ff: 32, seq_len: 4}
train: {steps: 4000, batch_size: 8, warmup_steps: 10, log_every: 7}
probes:
  every: 100
  samples: 16
  sites: [resid_post, final.norm]
  metrics: [l1, hoyer, topk_energy@0.1, nonfinite]
  sets:
    - {name: id, family: none}
    - {name: corrupt, family: token_corruption, levels: [0.5]}
checkpoint: {every: 50, keep_last: 2, major: [500]}
";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_densitrace"))
}

fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn start(config: &Path, out: &Path, extra: &[&str]) -> Child {
    bin()
        .args([
            "run",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn resume(run: &Path) -> Child {
    bin()
        .args(["run", "--resume", run.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

/// The one run directory under `out`, if it was created.
fn run_dir(out: &Path, name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(out.join(name)).ok()?;
    let dirs: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    assert!(dirs.len() <= 1, "more than one run directory: {dirs:?}");
    dirs.into_iter().next()
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every row of a table as text, keyed by its identifying columns, without the columns that
/// legitimately differ between runs (run_id, wall_time, tokens_per_s). Also proves each file
/// is a complete, valid Parquet file.
fn table(run: &Path, name: &str) -> BTreeMap<String, String> {
    let mut rows = BTreeMap::new();
    for path in parquet_files(&run.join(name)) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap_or_else(|e| panic!("{} is not valid Parquet: {e}", path.display()))
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            for i in 0..batch.num_rows() {
                let mut cells = Vec::new();
                for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                    if ["run_id", "wall_time", "tokens_per_s"].contains(&field.name().as_str()) {
                        continue;
                    }
                    let cell = match field.data_type() {
                        DataType::Utf8 => column.as_string::<i32>().value(i).to_string(),
                        DataType::Int64 => column.as_primitive::<Int64Type>().value(i).to_string(),
                        DataType::Int32 => column.as_primitive::<Int32Type>().value(i).to_string(),
                        DataType::Float64 => {
                            format!("{:?}", column.as_primitive::<Float64Type>().value(i))
                        }
                        other => panic!("unexpected column type {other}"),
                    };
                    cells.push(format!("{}={cell}", field.name()));
                }
                let line = cells.join(" ");
                let key = cells
                    .iter()
                    .filter(|c| {
                        !c.starts_with("value=")
                            && !c.starts_with("std=")
                            && !c.starts_with("loss=")
                    })
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ");
                assert!(
                    rows.insert(key.clone(), line).is_none(),
                    "{name}: a row appears twice: {key}"
                );
            }
        }
    }
    rows
}

fn assert_same_tables(a: &Path, b: &Path) {
    for name in ["density", "quantiles", "train"] {
        let (ta, tb) = (table(a, name), table(b, name));
        assert!(!ta.is_empty(), "{name} is empty");
        assert_eq!(ta.len(), tb.len(), "{name}: row counts differ");
        for (key, row) in &ta {
            assert_eq!(Some(row), tb.get(key), "{name}: {key}");
        }
    }
}

/// A completed 20-step run of CONFIG under `dir`.
fn finished_run(dir: &Path) -> PathBuf {
    let config = write_config(dir, CONFIG);
    let out = dir.join("runs");
    let output = finish(start(&config, &out, &["--set", "train.steps=20"]));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    run_dir(&out, "crash").unwrap()
}

fn manifest(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn sigkill_at_random_points_then_resume_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), CONFIG);
    let reference_out = tmp.path().join("reference");
    let t0 = Instant::now();
    let out = finish(start(&config, &reference_out, &[]));
    // Kill points are drawn within the first half of an uninterrupted run's duration, so most
    // land mid-run whatever this machine's speed.
    let duration = t0.elapsed().as_millis() as u64;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = run_dir(&reference_out, "crash").unwrap();

    let killed_out = tmp.path().join("killed");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261125);
    let mut kills = 0;
    for _ in 0..4 {
        let mut child = match run_dir(&killed_out, "crash") {
            Some(run) => resume(&run),
            None => start(&config, &killed_out, &[]),
        };
        std::thread::sleep(Duration::from_millis(
            rng.random_range(duration / 10..duration / 2),
        ));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        finish(child);
        if let Some(run) = run_dir(&killed_out, "crash") {
            // Every Parquet file is complete and valid, whatever the moment of the kill.
            for name in ["density", "quantiles", "train"] {
                table(&run, name);
            }
        }
    }
    assert!(
        kills >= 2,
        "only {kills} kills landed mid-run: the run is too short for the test"
    );
    // Finish it, unless the last attempt already did (a completed run is not resumed).
    match run_dir(&killed_out, "crash") {
        Some(run) if manifest(&run)["status"] == "completed" => {}
        Some(run) => {
            let out = finish(resume(&run));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => {
            let out = finish(start(&config, &killed_out, &[]));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let run = run_dir(&killed_out, "crash").unwrap();
    assert_same_tables(&reference, &run);
    assert_eq!(manifest(&run)["status"], "completed");
    assert!(run.join("checkpoints/final/DONE").is_file());
    // keep_last 2 plus the major step 500.
    let mut kept: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["final", "step-000500", "step-003950", "step-004000"]);
}

/// Starts a long run, waits for its first evaluation, sends `signal` and checks the stop.
fn stop_with(signal: i32) {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), CONFIG);
    let out = tmp.path().join("runs");
    let child = start(&config, &out, &["--set", "train.steps=200000"]);
    // Wait for the first evaluation, then interrupt.
    let t0 = Instant::now();
    while run_dir(&out, "crash").is_none_or(|r| !r.join("density/step-000100").exists()) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the run never reached step 100"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, signal) };
    let output = finish(child);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    let run = run_dir(&out, "crash").unwrap();
    let m = manifest(&run);
    assert_eq!(m["status"], "interrupted");
    let checkpoints: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        checkpoints.iter().any(|c| c.join("DONE").is_file()),
        "no complete checkpoint"
    );
    for name in ["density", "train"] {
        table(&run, name);
    }
}

#[test]
fn sigint_writes_a_checkpoint_and_exits_130() {
    stop_with(libc::SIGINT);
}

#[test]
fn sigterm_writes_a_checkpoint_and_exits_130() {
    stop_with(libc::SIGTERM);
}

#[test]
fn a_run_directory_in_use_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = finished_run(tmp.path());
    let held = File::options().write(true).open(run.join(".lock")).unwrap();
    held.lock().unwrap();
    let output = finish(resume(&run));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("in use by another densitrace process"),
        "{stderr}"
    );
    // Released with its holder: the next refusal is about the run itself, which is complete.
    drop(held);
    let output = finish(resume(&run));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("completed run: there is nothing to resume"),
        "{stderr}"
    );
}

#[test]
fn resume_refuses_what_is_not_a_run_or_was_edited() {
    let tmp = tempfile::tempdir().unwrap();
    let output = finish(resume(tmp.path()));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a densitrace run directory"));

    let run = finished_run(tmp.path());
    let before = std::fs::read_dir(run.join("density")).unwrap().count();
    let yaml = std::fs::read_to_string(run.join("config.yaml")).unwrap();
    std::fs::write(run.join("config.yaml"), yaml.replace("seed: 5", "seed: 6")).unwrap();
    let output = finish(resume(&run));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("config.yaml") && stderr.contains("edited"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(run.join("density")).unwrap().count(),
        before,
        "nothing deleted"
    );
}

#[test]
fn a_diverging_loss_stops_the_run_after_a_last_evaluation_and_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), CONFIG);
    let out = tmp.path().join("runs");
    let overrides = [
        "train.lr=1e30",
        "train.min_lr=0",
        "train.warmup_steps=0",
        "train.grad_clip=0",
    ];
    let args: Vec<&str> = overrides.iter().flat_map(|o| ["--set", o]).collect();
    let output = finish(start(&config, &out, &args));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("not finite at step 2"), "{stderr}");
    let run = run_dir(&out, "crash").unwrap();
    let m = manifest(&run);
    assert_eq!(
        (m["status"].as_str(), m["diverged_at"].as_u64()),
        (Some("diverged"), Some(2))
    );
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("checkpoints/step-000001/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["diverged_at"], 2);
    // The last evaluation (the model after step 1) exists, its non-finite vectors counted.
    let density = table(&run, "density");
    let nonfinite: Vec<&String> = density
        .values()
        .filter(|r| r.contains("step=1 ") && r.contains("metric=nonfinite"))
        .collect();
    assert!(!nonfinite.is_empty(), "no evaluation at step 1");
}

#[test]
fn the_same_config_and_seed_give_identical_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), CONFIG);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for out in [&a, &b] {
        assert!(
            finish(start(&config, out, &["--set", "train.steps=300"]))
                .status
                .success()
        );
    }
    assert_same_tables(
        &run_dir(&a, "crash").unwrap(),
        &run_dir(&b, "crash").unwrap(),
    );
}

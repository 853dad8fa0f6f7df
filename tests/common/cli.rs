//! The densitrace binary as a user runs it: start, resume, wait, find the run directory and read
//! its tables back.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The densitrace binary this test suite was built with, or `DENSITRACE_BIN` when set (to run
/// the tests against another build of it, e.g. a copy moved elsewhere).
/// DENSITRACE_CPU_BACKEND is removed (a test that needs it sets it), so that one left exported
/// from a benchmark cannot change what the tests run.
pub fn bin() -> Command {
    let mut command = match std::env::var_os("DENSITRACE_BIN") {
        Some(path) => Command::new(path),
        None => Command::new(env!("CARGO_BIN_EXE_densitrace")),
    };
    command.env_remove("DENSITRACE_CPU_BACKEND");
    command
}

/// Runs `densitrace ARGS` to the end; returns its exit code and stderr.
pub fn run_cli(args: &[&str]) -> (Option<i32>, String) {
    let out = bin().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// As `run_cli`, failing the test (with stderr) unless the command succeeded; returns stdout.
pub fn expect_success(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "densitrace {} exited {:?}:\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// `densitrace run CONFIG --out OUT EXTRA...`, in the background.
pub fn start(config: &Path, out: &Path, extra: &[&str]) -> Child {
    bin()
        .args([
            "run",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `densitrace run --resume RUN`, in the background.
pub fn resume(run: &Path) -> Child {
    bin()
        .args(["run", "--resume", run.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

/// Fails the test with the process's stderr unless it exited 0.
pub fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} exited {:?}:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The one run directory under `out/name`, if it was created.
pub fn run_dir(out: &Path, name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(out.join(name)).ok()?;
    let dirs: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    assert!(dirs.len() <= 1, "more than one run directory: {dirs:?}");
    dirs.into_iter().next()
}

pub fn manifest(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap()
}

/// Whether the run has a complete checkpoint.
pub fn has_checkpoint(run: &Path) -> bool {
    std::fs::read_dir(run.join("checkpoints")).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("step-") && !name.ends_with(".tmp") && e.path().join("DONE").is_file()
        })
    })
}

/// Every Parquet file under `dir`, sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
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
pub fn table(run: &Path, name: &str) -> BTreeMap<String, String> {
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

/// The density, quantiles and train tables of two runs hold the same rows.
pub fn assert_same_tables(a: &Path, b: &Path) {
    for name in ["density", "quantiles", "train"] {
        let (ta, tb) = (table(a, name), table(b, name));
        assert!(!ta.is_empty(), "{name} is empty");
        assert_eq!(ta.len(), tb.len(), "{name}: row counts differ");
        for (key, row) in &ta {
            assert_eq!(Some(row), tb.get(key), "{name}: {key}");
        }
    }
}

//! Where results land: the run directory, its Parquet tables and its manifest.
//!
//! Every file is written under a temporary name and renamed into place, so a crash never leaves a
//! half-written file under a final name; each evaluation is its own Parquet file, so a crash
//! never corrupts an earlier one.
//!
//! The folders are `step-NNNNNN`, not hive-style `step=NNNNNN`: every file carries its own `step`
//! column, and a hive key of the same name makes pyarrow refuse the dataset (int32 or dictionary
//! partition versus the int64 column). With no `=` in the path, pyarrow, pandas, polars and
//! DuckDB all read `density/` (or `density/**/*.parquet`) with the file's own types.
//!
//! ```text
//! runs/<name>/<run_id>/
//!   config.yaml                              the resolved config, exactly what ran
//!   manifest.json                            version, git revision, command, device, times
//!   density/step-000100/part-0.parquet       one file per evaluation (schema: `density_schema`)
//!   quantiles/step-000100/part-0.parquet     per-metric quantiles over vectors, per evaluation
//!   samples/step-000100/part-0.parquet       each vector's metrics (only with probes.per_sample)
//!   train/step-000100/part-0.parquet         train rows logged since the previous file
//!   checkpoints/final/model.bpk + DONE       the final weights (Burn's burnpack format)
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// One aggregate of one metric, at one site and position, over one probe set.
#[derive(Debug, Clone, PartialEq)]
pub struct DensityRow {
    pub probe: String,
    pub shift_family: &'static str,
    pub shift_level: f64,
    pub layer: i32,
    pub site: String,
    pub position: &'static str,
    pub metric: String,
    pub value: f64,
    pub std: f64,
    pub n: i64,
}

/// One quantile of one metric's per-vector values, at one site and position, over one probe set.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantileRow {
    pub probe: String,
    pub shift_family: &'static str,
    pub shift_level: f64,
    pub layer: i32,
    pub site: String,
    pub position: &'static str,
    pub metric: String,
    pub quantile: f64,
    pub value: f64,
    pub n: i64,
}

/// One per-vector metric of one vector: what `probes.per_sample` writes.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    pub probe: String,
    pub shift_family: &'static str,
    pub shift_level: f64,
    pub layer: i32,
    pub site: String,
    pub position: &'static str,
    /// The vector's index: the sample for `last`, sample * tokens + token for `all`.
    pub vector: i64,
    pub metric: String,
    pub value: f64,
}

/// One logged training step.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainRow {
    pub step: i64,
    pub tokens_seen: i64,
    pub loss: f64,
    pub lr: f64,
    pub tokens_per_s: f64,
    pub wall_time: f64,
}

/// The density table's columns, a public interface documented in the README.
pub fn density_schema() -> Schema {
    Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("step", DataType::Int64, false),
        Field::new("tokens_seen", DataType::Int64, false),
        Field::new("probe", DataType::Utf8, false),
        Field::new("shift_family", DataType::Utf8, false),
        Field::new("shift_level", DataType::Float64, false),
        Field::new("layer", DataType::Int32, false),
        Field::new("site", DataType::Utf8, false),
        Field::new("position", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("std", DataType::Float64, false),
        Field::new("n", DataType::Int64, false),
        Field::new("wall_time", DataType::Float64, false),
    ])
}

/// The quantiles table's columns, a public interface documented in the README.
pub fn quantiles_schema() -> Schema {
    Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("step", DataType::Int64, false),
        Field::new("tokens_seen", DataType::Int64, false),
        Field::new("probe", DataType::Utf8, false),
        Field::new("shift_family", DataType::Utf8, false),
        Field::new("shift_level", DataType::Float64, false),
        Field::new("layer", DataType::Int32, false),
        Field::new("site", DataType::Utf8, false),
        Field::new("position", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("quantile", DataType::Float64, false),
        Field::new("value", DataType::Float64, false),
        Field::new("n", DataType::Int64, false),
        Field::new("wall_time", DataType::Float64, false),
    ])
}

/// The samples table's columns, a public interface documented in the README.
pub fn samples_schema() -> Schema {
    Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("step", DataType::Int64, false),
        Field::new("probe", DataType::Utf8, false),
        Field::new("shift_family", DataType::Utf8, false),
        Field::new("shift_level", DataType::Float64, false),
        Field::new("layer", DataType::Int32, false),
        Field::new("site", DataType::Utf8, false),
        Field::new("position", DataType::Utf8, false),
        Field::new("vector", DataType::Int64, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ])
}

/// The train table's columns, a public interface documented in the README.
pub fn train_schema() -> Schema {
    Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("step", DataType::Int64, false),
        Field::new("tokens_seen", DataType::Int64, false),
        Field::new("loss", DataType::Float64, false),
        Field::new("lr", DataType::Float64, false),
        Field::new("tokens_per_s", DataType::Float64, false),
        Field::new("wall_time", DataType::Float64, false),
    ])
}

pub struct RunDir {
    pub root: PathBuf,
    pub run_id: String,
}

impl RunDir {
    /// Creates `<out>/<name>/<run_id>/`, where `run_id` is the UTC start time and the seed, with a
    /// suffix if a run with that id already exists.
    pub fn create(out: &Path, name: &str, seed: u64) -> Result<RunDir, std::io::Error> {
        let parent = out.join(name);
        fs::create_dir_all(&parent)?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        for attempt in 0.. {
            let run_id = match attempt {
                0 => format!("{stamp}-s{seed}"),
                n => format!("{stamp}-s{seed}-{n}"),
            };
            match fs::create_dir(parent.join(&run_id)) {
                Ok(()) => {
                    return Ok(RunDir {
                        root: parent.join(&run_id),
                        run_id,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        unreachable!()
    }

    /// Writes `bytes` to `relative` atomically: a temporary file, fsync, rename.
    pub fn write_atomic(&self, relative: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.root.join(relative), bytes)
    }

    pub fn write_density(
        &self,
        step: i64,
        tokens_seen: i64,
        wall_time: f64,
        rows: &[DensityRow],
    ) -> Result<PathBuf> {
        let n = rows.len();
        let column = |f: &dyn Fn(&DensityRow) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![self.run_id.as_str(); n])),
            Arc::new(Int64Array::from(vec![step; n])),
            Arc::new(Int64Array::from(vec![tokens_seen; n])),
            column(&|r| &r.probe),
            column(&|r| r.shift_family),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.shift_level),
            )),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.layer))),
            column(&|r| &r.site),
            column(&|r| r.position),
            column(&|r| &r.metric),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.value))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.std))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.n))),
            Arc::new(Float64Array::from(vec![wall_time; n])),
        ];
        let batch = RecordBatch::try_new(Arc::new(density_schema()), columns)?;
        self.write_parquet(&format!("density/step-{step:06}/part-0.parquet"), &batch)
    }

    pub fn write_quantiles(
        &self,
        step: i64,
        tokens_seen: i64,
        wall_time: f64,
        rows: &[QuantileRow],
    ) -> Result<PathBuf> {
        let n = rows.len();
        let column = |f: &dyn Fn(&QuantileRow) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
        };
        let float = |f: &dyn Fn(&QuantileRow) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(rows.iter().map(f)))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![self.run_id.as_str(); n])),
            Arc::new(Int64Array::from(vec![step; n])),
            Arc::new(Int64Array::from(vec![tokens_seen; n])),
            column(&|r| &r.probe),
            column(&|r| r.shift_family),
            float(&|r| r.shift_level),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.layer))),
            column(&|r| &r.site),
            column(&|r| r.position),
            column(&|r| &r.metric),
            float(&|r| r.quantile),
            float(&|r| r.value),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.n))),
            Arc::new(Float64Array::from(vec![wall_time; n])),
        ];
        let batch = RecordBatch::try_new(Arc::new(quantiles_schema()), columns)?;
        self.write_parquet(&format!("quantiles/step-{step:06}/part-0.parquet"), &batch)
    }

    pub fn write_samples(&self, step: i64, rows: &[SampleRow]) -> Result<PathBuf> {
        let n = rows.len();
        let column = |f: &dyn Fn(&SampleRow) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![self.run_id.as_str(); n])),
            Arc::new(Int64Array::from(vec![step; n])),
            column(&|r| &r.probe),
            column(&|r| r.shift_family),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.shift_level),
            )),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.layer))),
            column(&|r| &r.site),
            column(&|r| r.position),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.vector))),
            column(&|r| &r.metric),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.value))),
        ];
        let batch = RecordBatch::try_new(Arc::new(samples_schema()), columns)?;
        self.write_parquet(&format!("samples/step-{step:06}/part-0.parquet"), &batch)
    }

    /// Writes the train rows logged since the last call, named by the step they end at.
    pub fn write_train(&self, step: i64, rows: &[TrainRow]) -> Result<PathBuf> {
        let n = rows.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![self.run_id.as_str(); n])),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.step))),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.tokens_seen),
            )),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.loss))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.lr))),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.tokens_per_s),
            )),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.wall_time),
            )),
        ];
        let batch = RecordBatch::try_new(Arc::new(train_schema()), columns)?;
        self.write_parquet(&format!("train/step-{step:06}/part-0.parquet"), &batch)
    }

    fn write_parquet(&self, relative: &str, batch: &RecordBatch) -> Result<PathBuf> {
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let mut buffer = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut buffer, batch.schema(), Some(props))?;
        writer.write(batch)?;
        writer.close()?;
        let path = self.root.join(relative);
        write_atomic(&path, &buffer)?;
        Ok(path)
    }
}

/// Writes `bytes` to `path` through `path.tmp`, fsynced before and after the rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("a file path has a parent")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let mut file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

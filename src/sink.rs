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

/// What one row of the density, quantiles and samples tables is about.
#[derive(Debug, Clone, PartialEq)]
pub struct RowKey {
    pub probe: String,
    pub shift_family: &'static str,
    pub shift_level: f64,
    pub layer: i32,
    pub site: String,
    pub position: &'static str,
    pub metric: String,
}

/// One aggregate of one metric, at one site and position, over one probe set.
#[derive(Debug, Clone, PartialEq)]
pub struct DensityRow {
    pub key: RowKey,
    pub value: f64,
    pub std: f64,
    pub n: i64,
}

/// One quantile of one metric's per-vector values, at one site and position, over one probe set.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantileRow {
    pub key: RowKey,
    pub quantile: f64,
    pub value: f64,
    pub n: i64,
}

/// One per-vector metric of one vector: what `probes.per_sample` writes.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    pub key: RowKey,
    /// The vector's index: the sample for `last`, sample * tokens + token for `all`.
    pub vector: i64,
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

fn field(name: &str, data_type: DataType) -> Field {
    Field::new(name, data_type, false)
}

/// `run_id`, `step` and, but for the samples table, `tokens_seen`.
fn run_fields(tokens: bool) -> Vec<Field> {
    let mut fields = vec![
        field("run_id", DataType::Utf8),
        field("step", DataType::Int64),
    ];
    if tokens {
        fields.push(field("tokens_seen", DataType::Int64));
    }
    fields
}

/// The `RowKey` columns.
fn key_fields() -> Vec<Field> {
    vec![
        field("probe", DataType::Utf8),
        field("shift_family", DataType::Utf8),
        field("shift_level", DataType::Float64),
        field("layer", DataType::Int32),
        field("site", DataType::Utf8),
        field("position", DataType::Utf8),
        field("metric", DataType::Utf8),
    ]
}

/// The density table's columns, a public interface documented in the README.
pub fn density_schema() -> Schema {
    let mut fields = run_fields(true);
    fields.extend(key_fields());
    fields.extend([
        field("value", DataType::Float64),
        field("std", DataType::Float64),
        field("n", DataType::Int64),
        field("wall_time", DataType::Float64),
    ]);
    Schema::new(fields)
}

/// The quantiles table's columns, a public interface documented in the README.
pub fn quantiles_schema() -> Schema {
    let mut fields = run_fields(true);
    fields.extend(key_fields());
    fields.extend([
        field("quantile", DataType::Float64),
        field("value", DataType::Float64),
        field("n", DataType::Int64),
        field("wall_time", DataType::Float64),
    ]);
    Schema::new(fields)
}

/// The samples table's columns, a public interface documented in the README.
pub fn samples_schema() -> Schema {
    let mut fields = run_fields(false);
    fields.extend(key_fields());
    fields.extend([
        field("vector", DataType::Int64),
        field("value", DataType::Float64),
    ]);
    Schema::new(fields)
}

/// The train table's columns, a public interface documented in the README.
pub fn train_schema() -> Schema {
    let mut fields = run_fields(true);
    fields.extend([
        field("loss", DataType::Float64),
        field("lr", DataType::Float64),
        field("tokens_per_s", DataType::Float64),
        field("wall_time", DataType::Float64),
    ]);
    Schema::new(fields)
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn floats(values: impl Iterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(values))
}

fn ints(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(values))
}

/// The `RowKey` columns of `keys`, in `key_fields` order.
fn key_columns(keys: &[&RowKey]) -> Vec<ArrayRef> {
    vec![
        strings(keys.iter().map(|k| k.probe.as_str())),
        strings(keys.iter().map(|k| k.shift_family)),
        floats(keys.iter().map(|k| k.shift_level)),
        Arc::new(Int32Array::from_iter_values(keys.iter().map(|k| k.layer))),
        strings(keys.iter().map(|k| k.site.as_str())),
        strings(keys.iter().map(|k| k.position)),
        strings(keys.iter().map(|k| k.metric.as_str())),
    ]
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

    /// `run_id`, `step` and (when given) `tokens_seen` for `n` rows.
    fn run_columns(&self, n: usize, step: i64, tokens_seen: Option<i64>) -> Vec<ArrayRef> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![self.run_id.as_str(); n])),
            Arc::new(Int64Array::from(vec![step; n])),
        ];
        if let Some(tokens) = tokens_seen {
            columns.push(Arc::new(Int64Array::from(vec![tokens; n])));
        }
        columns
    }

    pub fn write_density(
        &self,
        step: i64,
        tokens_seen: i64,
        wall_time: f64,
        rows: &[DensityRow],
    ) -> Result<PathBuf> {
        let keys: Vec<&RowKey> = rows.iter().map(|r| &r.key).collect();
        let mut columns = self.run_columns(rows.len(), step, Some(tokens_seen));
        columns.extend(key_columns(&keys));
        columns.extend([
            floats(rows.iter().map(|r| r.value)),
            floats(rows.iter().map(|r| r.std)),
            ints(rows.iter().map(|r| r.n)),
            floats(rows.iter().map(|_| wall_time)),
        ]);
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
        let keys: Vec<&RowKey> = rows.iter().map(|r| &r.key).collect();
        let mut columns = self.run_columns(rows.len(), step, Some(tokens_seen));
        columns.extend(key_columns(&keys));
        columns.extend([
            floats(rows.iter().map(|r| r.quantile)),
            floats(rows.iter().map(|r| r.value)),
            ints(rows.iter().map(|r| r.n)),
            floats(rows.iter().map(|_| wall_time)),
        ]);
        let batch = RecordBatch::try_new(Arc::new(quantiles_schema()), columns)?;
        self.write_parquet(&format!("quantiles/step-{step:06}/part-0.parquet"), &batch)
    }

    pub fn write_samples(&self, step: i64, rows: &[SampleRow]) -> Result<PathBuf> {
        let keys: Vec<&RowKey> = rows.iter().map(|r| &r.key).collect();
        let mut columns = self.run_columns(rows.len(), step, None);
        columns.extend(key_columns(&keys));
        columns.extend([
            ints(rows.iter().map(|r| r.vector)),
            floats(rows.iter().map(|r| r.value)),
        ]);
        let batch = RecordBatch::try_new(Arc::new(samples_schema()), columns)?;
        self.write_parquet(&format!("samples/step-{step:06}/part-0.parquet"), &batch)
    }

    /// Writes the train rows logged since the last call, named by the step they end at.
    pub fn write_train(&self, step: i64, rows: &[TrainRow]) -> Result<PathBuf> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![self.run_id.as_str(); rows.len()])),
            ints(rows.iter().map(|r| r.step)),
            ints(rows.iter().map(|r| r.tokens_seen)),
        ];
        columns.extend([
            floats(rows.iter().map(|r| r.loss)),
            floats(rows.iter().map(|r| r.lr)),
            floats(rows.iter().map(|r| r.tokens_per_s)),
            floats(rows.iter().map(|r| r.wall_time)),
        ]);
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

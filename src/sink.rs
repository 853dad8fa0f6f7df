//! The run's Parquet tables: their schemas (a public interface documented in
//! docs/run-directory.md) and the writers that encode rows into them. Where each file lands is
//! `rundir`'s business (`Table::part`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::rundir::{RunDir, Table, write_atomic};

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
    /// The global L2 norm of the step's gradients, before clipping.
    pub grad_norm: f64,
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

/// The density table's columns, a public interface documented in
/// docs/run-directory.md.
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

/// The quantiles table's columns, a public interface documented in
/// docs/run-directory.md.
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

/// The samples table's columns, a public interface documented in
/// docs/run-directory.md.
pub fn samples_schema() -> Schema {
    let mut fields = run_fields(false);
    fields.extend(key_fields());
    fields.extend([
        field("vector", DataType::Int64),
        field("value", DataType::Float64),
    ]);
    Schema::new(fields)
}

/// The train table's columns, a public interface documented in
/// docs/run-directory.md.
pub fn train_schema() -> Schema {
    let mut fields = run_fields(true);
    fields.extend([
        field("loss", DataType::Float64),
        field("grad_norm", DataType::Float64),
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

impl RunDir {
    /// `run_id`, `step` and (when given) `tokens_seen` for `n` rows.
    fn run_columns(&self, n: usize, step: i64, tokens_seen: Option<i64>) -> Vec<ArrayRef> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![self.run_id(); n])),
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
        self.write_parquet(Table::Density, step, &batch)
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
        self.write_parquet(Table::Quantiles, step, &batch)
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
        self.write_parquet(Table::Samples, step, &batch)
    }

    /// Writes the train rows logged since the last call, named by the step they end at.
    pub fn write_train(&self, step: i64, rows: &[TrainRow]) -> Result<PathBuf> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![self.run_id(); rows.len()])),
            ints(rows.iter().map(|r| r.step)),
            ints(rows.iter().map(|r| r.tokens_seen)),
        ];
        columns.extend([
            floats(rows.iter().map(|r| r.loss)),
            floats(rows.iter().map(|r| r.grad_norm)),
            floats(rows.iter().map(|r| r.lr)),
            floats(rows.iter().map(|r| r.tokens_per_s)),
            floats(rows.iter().map(|r| r.wall_time)),
        ]);
        let batch = RecordBatch::try_new(Arc::new(train_schema()), columns)?;
        self.write_parquet(Table::Train, step, &batch)
    }

    fn write_parquet(&self, table: Table, step: i64, batch: &RecordBatch) -> Result<PathBuf> {
        let path = self.root().join(table.part(step as usize));
        write_parquet(&path, batch)?;
        Ok(path)
    }
}

/// `batch` as one Snappy-compressed Parquet file at `path`, written atomically (every table the
/// project writes, the report's included).
pub fn write_parquet(path: &std::path::Path, batch: &RecordBatch) -> Result<()> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buffer, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    write_atomic(path, &buffer)
}

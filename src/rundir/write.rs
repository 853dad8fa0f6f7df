//! Writes the run's tables: rows encoded as Arrow columns in `tables`' schemas, one Parquet file
//! per step at `Table::part`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::tables::{
    DensityRow, QuantileRow, RowKey, SampleRow, Table, TrainRow, density_schema, quantiles_schema,
    samples_schema, train_schema,
};
use super::{RunDir, write_atomic};

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn floats(values: impl Iterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(values))
}

fn ints(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(values))
}

/// The `RowKey` columns of `keys`, in `tables::KEY_COLUMNS` order.
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
        self.write_table(Table::Density, step, &batch)
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
        self.write_table(Table::Quantiles, step, &batch)
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
        self.write_table(Table::Samples, step, &batch)
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
        self.write_table(Table::Train, step, &batch)
    }

    fn write_table(&self, table: Table, step: i64, batch: &RecordBatch) -> Result<PathBuf> {
        let path = self.path(&table.part(step as usize));
        write_parquet(&path, batch)?;
        Ok(path)
    }
}

/// `batch` as one Snappy-compressed Parquet file at `path`, written atomically (every table the
/// project writes, the report's included).
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<()> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buffer, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    write_atomic(path, &buffer)
}

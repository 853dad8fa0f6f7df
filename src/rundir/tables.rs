//! The run's tables, a public interface documented in docs/run-directory.md: their files, every
//! column's name and type, and the rows the program writes into them. The writers (`write`) and
//! the report's reader (`report::load`) both take names and types from here, so a column renamed
//! here is renamed for both.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arrow::array::{AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Int64Type, Schema};

use super::step_folder;

/// The tables of a run, one Parquet file per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Density,
    Quantiles,
    Samples,
    Train,
}

impl Table {
    pub const ALL: [Table; 4] = [
        Table::Density,
        Table::Quantiles,
        Table::Samples,
        Table::Train,
    ];

    pub fn folder(self) -> &'static str {
        match self {
            Table::Density => "density",
            Table::Quantiles => "quantiles",
            Table::Samples => "samples",
            Table::Train => "train",
        }
    }

    /// `density/step-000100/part-0.parquet`, relative to the run directory.
    pub fn part(self, step: usize) -> String {
        format!("{}/{}/part-0.parquet", self.folder(), step_folder(step))
    }

    /// Every part file of this table under `root` (a run directory), in step order.
    pub fn parts(self, root: &Path) -> Result<Vec<PathBuf>> {
        let pattern = root.join(self.folder()).join("step-*").join("*.parquet");
        let mut paths: Vec<PathBuf> =
            glob::glob(&pattern.display().to_string())?.collect::<Result<_, _>>()?;
        // `step-NNNNNN` is zero-padded: name order is step order.
        paths.sort();
        Ok(paths)
    }
}

/// Every column name of the run's tables.
pub mod col {
    pub const RUN_ID: &str = "run_id";
    pub const STEP: &str = "step";
    pub const TOKENS_SEEN: &str = "tokens_seen";
    pub const PROBE: &str = "probe";
    pub const SHIFT_FAMILY: &str = "shift_family";
    pub const SHIFT_LEVEL: &str = "shift_level";
    pub const LAYER: &str = "layer";
    pub const SITE: &str = "site";
    pub const POSITION: &str = "position";
    pub const METRIC: &str = "metric";
    pub const VALUE: &str = "value";
    pub const STD: &str = "std";
    pub const N: &str = "n";
    pub const QUANTILE: &str = "quantile";
    pub const VECTOR: &str = "vector";
    pub const LOSS: &str = "loss";
    pub const GRAD_NORM: &str = "grad_norm";
    pub const LR: &str = "lr";
    pub const TOKENS_PER_S: &str = "tokens_per_s";
    pub const WALL_TIME: &str = "wall_time";
}

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
        field(col::RUN_ID, DataType::Utf8),
        field(col::STEP, DataType::Int64),
    ];
    if tokens {
        fields.push(field(col::TOKENS_SEEN, DataType::Int64));
    }
    fields
}

/// The `RowKey` columns, in the order every keyed table has them.
pub const KEY_COLUMNS: [&str; 7] = [
    col::PROBE,
    col::SHIFT_FAMILY,
    col::SHIFT_LEVEL,
    col::LAYER,
    col::SITE,
    col::POSITION,
    col::METRIC,
];

fn key_fields() -> Vec<Field> {
    let types = [
        DataType::Utf8,
        DataType::Utf8,
        DataType::Float64,
        DataType::Int32,
        DataType::Utf8,
        DataType::Utf8,
        DataType::Utf8,
    ];
    KEY_COLUMNS
        .iter()
        .zip(types)
        .map(|(name, data_type)| field(name, data_type))
        .collect()
}

/// The density table's columns.
pub fn density_schema() -> Schema {
    let mut fields = run_fields(true);
    fields.extend(key_fields());
    fields.extend([
        field(col::VALUE, DataType::Float64),
        field(col::STD, DataType::Float64),
        field(col::N, DataType::Int64),
        field(col::WALL_TIME, DataType::Float64),
    ]);
    Schema::new(fields)
}

/// The quantiles table's columns.
pub fn quantiles_schema() -> Schema {
    let mut fields = run_fields(true);
    fields.extend(key_fields());
    fields.extend([
        field(col::QUANTILE, DataType::Float64),
        field(col::VALUE, DataType::Float64),
        field(col::N, DataType::Int64),
        field(col::WALL_TIME, DataType::Float64),
    ]);
    Schema::new(fields)
}

/// The samples table's columns.
pub fn samples_schema() -> Schema {
    let mut fields = run_fields(false);
    fields.extend(key_fields());
    fields.extend([
        field(col::VECTOR, DataType::Int64),
        field(col::VALUE, DataType::Float64),
    ]);
    Schema::new(fields)
}

/// The train table's columns.
pub fn train_schema() -> Schema {
    let mut fields = run_fields(true);
    fields.extend([
        field(col::LOSS, DataType::Float64),
        field(col::GRAD_NORM, DataType::Float64),
        field(col::LR, DataType::Float64),
        field(col::TOKENS_PER_S, DataType::Float64),
        field(col::WALL_TIME, DataType::Float64),
    ]);
    Schema::new(fields)
}

/// One batch read back from a table, its columns looked up by name with the schema's types.
pub struct Columns<'a> {
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    pub fn of(batch: &'a RecordBatch) -> Columns<'a> {
        Columns { batch }
    }

    pub fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    fn column(&self, name: &str) -> Result<&'a dyn arrow::array::Array> {
        self.batch
            .column_by_name(name)
            .map(|c| c.as_ref())
            .with_context(|| format!("no column {name}"))
    }

    /// A string column (`col::PROBE`, ...).
    pub fn strings(&self, name: &str) -> Result<&'a StringArray> {
        self.column(name)?
            .as_string_opt::<i32>()
            .with_context(|| format!("column {name} is not a string"))
    }

    /// A float64 column (`col::VALUE`, ...).
    pub fn floats(&self, name: &str) -> Result<&'a Float64Array> {
        self.column(name)?
            .as_primitive_opt::<Float64Type>()
            .with_context(|| format!("column {name} is not float64"))
    }

    /// An int64 column (`col::STEP`, ...).
    pub fn ints(&self, name: &str) -> Result<&'a Int64Array> {
        self.column(name)?
            .as_primitive_opt::<Int64Type>()
            .with_context(|| format!("column {name} is not int64"))
    }

    /// The int32 `layer` column.
    pub fn layers(&self) -> Result<&'a Int32Array> {
        self.column(col::LAYER)?
            .as_primitive_opt::<Int32Type>()
            .with_context(|| format!("column {} is not int32", col::LAYER))
    }
}

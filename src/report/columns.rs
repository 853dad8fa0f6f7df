//! The report's tables as Parquet: one builder for their shared columns (the key, an estimate
//! with its interval, a test with its corrections), and each table's schema in `Tables::write`.
//! docs/reports.md ("The tables") documents every column.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{Field, Schema};

use super::contrast::ContrastRow;
use super::load::Key;
use super::stats::Estimate;
use super::tables::{GapRow, Interval, OodRow, SummaryRow, Tables, Test};
use super::trend::TrendRow;
use crate::rundir::tables::col;

/// Builds one Parquet table column by column.
struct Columns {
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
}

impl Columns {
    fn new() -> Columns {
        Columns {
            fields: Vec::new(),
            arrays: Vec::new(),
        }
    }
    fn push(&mut self, name: &str, array: ArrayRef) {
        self.fields
            .push(Field::new(name, array.data_type().clone(), false));
        self.arrays.push(array);
    }
    fn push_nullable(&mut self, name: &str, array: ArrayRef) {
        self.fields
            .push(Field::new(name, array.data_type().clone(), true));
        self.arrays.push(array);
    }
    fn strings<'a>(&mut self, name: &str, values: impl Iterator<Item = &'a str>) {
        self.push(name, Arc::new(StringArray::from_iter_values(values)));
    }
    fn floats(&mut self, name: &str, values: impl Iterator<Item = f64>) {
        self.push(name, Arc::new(Float64Array::from_iter_values(values)));
    }
    fn ints(&mut self, name: &str, values: impl Iterator<Item = i64>) {
        self.push(name, Arc::new(Int64Array::from_iter_values(values)));
    }
    fn seeds(&mut self, values: impl Iterator<Item = Option<u64>>) {
        self.push_nullable(
            "seed",
            Arc::new(Int64Array::from_iter(values.map(|s| s.map(|s| s as i64)))),
        );
    }
    /// `cell`, then the rows' key columns in the density table's order (`with_level`: and its
    /// `shift_level`).
    fn key<R: Row>(&mut self, rows: &[R], with_level: bool) {
        self.strings("cell", rows.iter().map(|r| r.cell()));
        let keys: Vec<&Key> = rows.iter().map(Row::key).collect();
        self.ints(col::STEP, keys.iter().map(|k| k.step));
        self.strings(col::PROBE, keys.iter().map(|k| k.set.probe.as_str()));
        self.strings(
            col::SHIFT_FAMILY,
            keys.iter().map(|k| k.set.family.as_str()),
        );
        if with_level {
            self.floats(col::SHIFT_LEVEL, keys.iter().map(|k| k.set.level.0));
        }
        self.push(
            col::LAYER,
            Arc::new(Int32Array::from_iter_values(
                keys.iter().map(|k| k.at.layer),
            )),
        );
        self.strings(col::SITE, keys.iter().map(|k| k.at.site.as_str()));
        self.strings(col::POSITION, keys.iter().map(|k| k.at.position.as_str()));
        self.strings(col::METRIC, keys.iter().map(|k| k.at.metric.as_str()));
    }
    /// `value` (named so), `lo`, `hi`, `seeds`, `interval` and `method` of the rows' estimates.
    fn estimates<R: Row>(&mut self, value: &str, rows: &[R]) {
        self.floats(value, rows.iter().map(|r| r.estimate().value));
        self.floats("lo", rows.iter().map(|r| r.estimate().lo));
        self.floats("hi", rows.iter().map(|r| r.estimate().hi));
        self.ints("seeds", rows.iter().map(|r| r.seeds() as i64));
        self.strings("interval", rows.iter().map(|r| r.interval().name()));
        self.strings("method", rows.iter().map(|r| r.interval().method()));
    }
    /// `test`, `p`, `p_holm`, `q_bh` and `family` (empty and NaN on rows without a test).
    fn tests<R: Tested>(&mut self, rows: &[R]) {
        let tests: Vec<Option<&Test>> = rows.iter().map(Tested::test).collect();
        let f = |g: fn(&Test) -> f64| tests.iter().map(move |t| t.map_or(f64::NAN, g));
        self.strings("test", tests.iter().map(|t| t.map_or("", |t| t.name)));
        self.floats("p", f(|t| t.p));
        self.floats("p_holm", f(|t| t.p_holm));
        self.floats("q_bh", f(|t| t.q_bh));
        self.strings(
            "family",
            tests.iter().map(|t| t.map_or("", |t| t.family.as_str())),
        );
    }
    fn write(self, path: &Path) -> Result<()> {
        let batch = RecordBatch::try_new(Arc::new(Schema::new(self.fields)), self.arrays)?;
        crate::rundir::write::write_parquet(path, &batch)
    }
}

/// What every row of the report's tables has: its cell, its key and an estimate with how it was
/// made.
trait Row {
    fn cell(&self) -> &str;
    fn key(&self) -> &Key;
    fn estimate(&self) -> Estimate;
    fn seeds(&self) -> usize;
    fn interval(&self) -> Interval;
}

/// A row of a table with tests.
trait Tested {
    fn test(&self) -> Option<&Test>;
}

macro_rules! rows {
    ($($t:ty),*) => {$(
        impl Row for $t {
            fn cell(&self) -> &str {
                &self.cell
            }
            fn key(&self) -> &Key {
                &self.key
            }
            fn estimate(&self) -> Estimate {
                self.estimate
            }
            fn seeds(&self) -> usize {
                self.seeds
            }
            fn interval(&self) -> Interval {
                self.interval
            }
        }
    )*};
}
rows!(SummaryRow, GapRow, OodRow, TrendRow, ContrastRow);

macro_rules! tested {
    ($($t:ty),*) => {$(
        impl Tested for $t {
            fn test(&self) -> Option<&Test> {
                self.test.as_ref()
            }
        }
    )*};
}
tested!(GapRow, OodRow, TrendRow, ContrastRow);

impl Tables {
    /// Writes `summary.parquet`, `gap.parquet`, `trend.parquet`, and (where they have rows)
    /// `ood.parquet` and `contrast.parquet` into `dir`; returns the file names written.
    pub fn write(&self, dir: &Path) -> Result<Vec<&'static str>> {
        let mut written = vec!["summary.parquet", "gap.parquet", "trend.parquet"];

        let mut c = Columns::new();
        c.key(&self.summary, true);
        c.estimates("value", &self.summary);
        c.floats(
            "iid_reference",
            self.summary.iter().map(|r| r.iid_reference),
        );
        c.floats(
            "excess",
            self.summary
                .iter()
                .map(|r| r.estimate.value - r.iid_reference),
        );
        c.write(&dir.join("summary.parquet"))?;

        let mut c = Columns::new();
        c.key(&self.gap, true);
        c.strings("reference", self.gap.iter().map(|r| r.reference.as_str()));
        c.estimates("gap", &self.gap);
        c.push(
            "excludes_zero",
            Arc::new(BooleanArray::from_iter(
                self.gap.iter().map(|r| Some(r.estimate.excludes_zero())),
            )),
        );
        c.tests(&self.gap);
        c.write(&dir.join("gap.parquet"))?;

        let mut c = Columns::new();
        c.key(&self.trend, false);
        c.seeds(self.trend.iter().map(|r| r.seed));
        c.strings("over", self.trend.iter().map(|r| r.over));
        c.ints("levels", self.trend.iter().map(|r| r.levels as i64));
        c.estimates("rho", &self.trend);
        c.tests(&self.trend);
        c.write(&dir.join("trend.parquet"))?;

        if !self.ood.is_empty() {
            let mut c = Columns::new();
            c.key(&self.ood, true);
            c.seeds(self.ood.iter().map(|r| r.seed));
            c.strings("reference", self.ood.iter().map(|r| r.reference.as_str()));
            c.strings("shifted_when", self.ood.iter().map(|r| r.shifted_when));
            c.strings("statistic", self.ood.iter().map(|r| r.statistic));
            c.estimates("value", &self.ood);
            c.floats("n_id", self.ood.iter().map(|r| r.n_id));
            c.floats("n_shifted", self.ood.iter().map(|r| r.n_shifted));
            c.tests(&self.ood);
            c.write(&dir.join("ood.parquet"))?;
            written.push("ood.parquet");
        }

        if !self.contrast.is_empty() {
            let rows = &self.contrast;
            let mut c = Columns::new();
            c.key(rows, true);
            c.strings("grid_key", rows.iter().map(|r| r.grid_key.as_str()));
            c.strings("from_value", rows.iter().map(|r| r.from.as_str()));
            c.strings("to_value", rows.iter().map(|r| r.to.as_str()));
            c.strings("cell_from", rows.iter().map(|r| r.cell_from.as_str()));
            c.strings("cell_to", rows.iter().map(|r| r.cell_to.as_str()));
            c.strings("quantity", rows.iter().map(|r| r.quantity));
            c.strings("reference", rows.iter().map(|r| r.reference.as_str()));
            c.estimates("difference", rows);
            c.tests(rows);
            c.write(&dir.join("contrast.parquet"))?;
            written.push("contrast.parquet");
        }
        Ok(written)
    }
}

//! Families of tests for the corrections for many comparisons (`--family`).
//!
//! A family is written as comma-separated terms over the tables' columns: a bare column name
//! splits the tests into one family per value of that column, and `column=value` keeps only the
//! tests where the column has that value. The default, `cell,step`, makes every test of one cell
//! at one step a family. `--family 'site=final.norm,position=last'` makes one family of every
//! test at that site and position, over all cells and steps; `step,site=final.norm` one family
//! per step; `all` one family of every test. Tests outside the filters keep their p-value but
//! get no adjusted one.

use super::load::Key;
use crate::error::InputError;
use crate::rundir::tables::col;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Table,
    Cell,
    Step,
    Probe,
    ShiftFamily,
    ShiftLevel,
    Layer,
    Site,
    Position,
    Metric,
}

const COLUMNS: [(&str, Column); 10] = [
    ("table", Column::Table),
    ("cell", Column::Cell),
    (col::STEP, Column::Step),
    (col::PROBE, Column::Probe),
    (col::SHIFT_FAMILY, Column::ShiftFamily),
    (col::SHIFT_LEVEL, Column::ShiftLevel),
    (col::LAYER, Column::Layer),
    (col::SITE, Column::Site),
    (col::POSITION, Column::Position),
    (col::METRIC, Column::Metric),
];

/// The default family: every test of one cell at one step.
pub const DEFAULT_FAMILY: &str = "cell,step";

#[derive(Debug, Clone)]
pub struct FamilySpec {
    text: String,
    group_by: Vec<Column>,
    filters: Vec<(Column, String)>,
}

impl Default for FamilySpec {
    fn default() -> Self {
        FamilySpec::parse(DEFAULT_FAMILY).expect("the default family parses")
    }
}

fn name_of(column: Column) -> &'static str {
    COLUMNS.iter().find(|(_, c)| *c == column).unwrap().0
}

impl FamilySpec {
    /// Parses `--family`; an unknown column, an empty term or a number column with a value that
    /// is not a number is bad input naming the flag.
    pub fn parse(text: &str) -> Result<FamilySpec, InputError> {
        if text.trim() == "all" {
            // One family of every test in the report.
            return Ok(FamilySpec {
                text: text.to_string(),
                group_by: Vec::new(),
                filters: Vec::new(),
            });
        }
        let bad = |why: String| InputError::Other(format!("--family {text:?}: {why}"));
        let known = || {
            COLUMNS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let column = |name: &str| {
            COLUMNS
                .iter()
                .find(|(n, _)| *n == name.trim())
                .map(|(_, c)| *c)
                .ok_or_else(|| bad(format!("unknown column {name:?}; known: {}", known())))
        };
        let mut spec = FamilySpec {
            text: text.to_string(),
            group_by: Vec::new(),
            filters: Vec::new(),
        };
        for term in text.split(',') {
            let term = term.trim();
            if term.is_empty() {
                return Err(bad("an empty term".into()));
            }
            match term.split_once('=') {
                Some((name, value)) => {
                    let c = column(name)?;
                    let value = value.trim().to_string();
                    let numeric = matches!(c, Column::Step | Column::ShiftLevel | Column::Layer);
                    if numeric && value.parse::<f64>().is_err() {
                        return Err(bad(format!("{name}={value}: {name} takes a number")));
                    }
                    spec.filters.push((c, value));
                }
                None => spec.group_by.push(column(term)?),
            }
        }
        Ok(spec)
    }

    /// The spec as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The family of a test in `table` of `cell` at `key`, as `column=value` terms; `None` when
    /// a filter leaves the test out.
    pub fn label(&self, table: &str, cell: &str, key: &Key) -> Option<String> {
        let value = |c: Column| -> String {
            match c {
                Column::Table => table.to_string(),
                Column::Cell => cell.to_string(),
                Column::Step => key.step.to_string(),
                Column::Probe => key.set.probe.clone(),
                Column::ShiftFamily => key.set.family.clone(),
                Column::ShiftLevel => key.set.level.0.to_string(),
                Column::Layer => key.at.layer.to_string(),
                Column::Site => key.at.site.clone(),
                Column::Position => key.at.position.clone(),
                Column::Metric => key.at.metric.clone(),
            }
        };
        for (c, want) in &self.filters {
            let have = value(*c);
            let equal = match c {
                Column::Step | Column::ShiftLevel | Column::Layer => {
                    have.parse::<f64>().ok() == want.parse::<f64>().ok()
                }
                _ => &have == want,
            };
            if !equal {
                return None;
            }
        }
        let terms: Vec<String> = self
            .group_by
            .iter()
            .map(|&c| format!("{}={}", name_of(c), value(c)))
            .chain(
                self.filters
                    .iter()
                    .map(|(c, v)| format!("{}={v}", name_of(*c))),
            )
            .collect();
        Some(if terms.is_empty() {
            "all".into()
        } else {
            terms.join(",")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::load::{Level, Set, Where};

    fn key() -> Key {
        Key {
            at: Where {
                site: "final.norm".into(),
                position: "last".into(),
                metric: "hoyer".into(),
                layer: 2,
            },
            step: 500,
            set: Set {
                probe: "random".into(),
                level: Level(1.0),
                family: "random".into(),
            },
        }
    }

    #[test]
    fn default_family_is_one_cell_at_one_step() {
        let spec = FamilySpec::default();
        assert_eq!(
            spec.label("gap", "base", &key()).as_deref(),
            Some("cell=base,step=500")
        );
    }

    #[test]
    fn filters_keep_or_leave_out_and_name_the_family() {
        let spec =
            FamilySpec::parse("step, site=final.norm,position=last,shift_level=1.0").unwrap();
        assert_eq!(
            spec.label("gap", "base", &key()).as_deref(),
            Some("step=500,site=final.norm,position=last,shift_level=1.0")
        );
        let spec = FamilySpec::parse("site=mlp.post").unwrap();
        assert_eq!(spec.label("gap", "base", &key()), None);
        let spec = FamilySpec::parse("all").unwrap();
        assert_eq!(spec.label("trend", "x", &key()).as_deref(), Some("all"));
        let spec = FamilySpec::parse("metric=hoyer").unwrap();
        assert_eq!(
            spec.label("ood", "x", &key()).as_deref(),
            Some("metric=hoyer")
        );
    }

    #[test]
    fn bad_families_name_the_flag() {
        for bad in ["cell,sight", "", "cell,,step", "step=late", "colour=red"] {
            let e = FamilySpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--family"), "{bad}: {e}");
        }
    }
}

//! A sweep file read and checked: its grid expanded into cells, each cell's config resolved and
//! validated, before anything is created.

use std::fs;
use std::path::{Path, PathBuf};

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::record::{Cell, CellState, SweepRecord, bad_file};
use crate::config::{self, Config};
use crate::error::InputError;
use crate::seed::fingerprint;

/// A sweep file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    /// Sweeps land in `<out>/<name>/<sweep_id>/`.
    name: String,
    /// The base config, relative to the sweep file.
    config: PathBuf,
    /// Overrides applied to every cell.
    #[serde(default)]
    set: Ordered,
    /// Each key's list of values; the cells are their cartesian product, the first key outermost.
    grid: Ordered,
}

/// A YAML mapping in the order it was written (the grid's order names and numbers the cells).
#[derive(Debug, Default)]
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of config keys (as for --set) to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// `key=value` with the value as YAML (JSON is YAML), as `--set` takes it.
fn override_of(key: &str, value: &Value) -> String {
    format!("{key}={value}")
}

/// An override of `sweep.json` (`model.activation="silu"`) as a label: `model.activation=silu`.
pub fn override_label(spec: &str) -> String {
    match spec.split_once('=') {
        Some((key, value)) => match serde_json::from_str::<Value>(value) {
            Ok(value) => format!("{key}={}", shown(&value)),
            Err(_) => spec.to_string(),
        },
        None => spec.to_string(),
    }
}

/// A value as a cell's name (and `report`'s cell label) shows it: strings bare, everything else
/// as JSON.
pub fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `007-seed=3,model.activation=silu`, with anything but letters, digits and `-_.=,` replaced by
/// `_` so it is a safe file name.
fn cell_name(index: usize, width: usize, grid: &[(String, Value)]) -> String {
    let label: Vec<String> = grid
        .iter()
        .map(|(k, v)| format!("{k}={}", shown(v)))
        .collect();
    let label: String = label
        .join(",")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.=,".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{index:0width$}-{label}")
}

/// The cartesian product of the grid, the first key outermost.
fn product(grid: &[(String, Vec<Value>)]) -> Vec<Vec<(String, Value)>> {
    let mut cells: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for (key, values) in grid {
        cells = cells
            .into_iter()
            .flat_map(|cell| {
                values.iter().map(move |v| {
                    let mut c = cell.clone();
                    c.push((key.clone(), v.clone()));
                    c
                })
            })
            .collect()
    }
    cells
}

/// A new sweep, resolved and validated, not yet written.
pub(super) struct Plan {
    pub(super) file_text: String,
    pub(super) record: SweepRecord,
    /// Each cell's resolved config.
    pub(super) configs: Vec<Config>,
}

/// Reads and checks a sweep file and every cell's config; creates nothing.
pub(super) fn plan(file: &Path, cli_set: &[String]) -> Result<Plan, InputError> {
    let text = fs::read_to_string(file).map_err(|e| bad_file(file, format!("cannot read: {e}")))?;
    let sweep: SweepFile =
        serde_saphyr::from_str(&text).map_err(|e| bad_file(file, format!("not a sweep: {e}")))?;
    if !config::is_folder_name(&sweep.name) {
        return Err(bad_file(
            file,
            format!(
                "name: {:?} must be non-empty and use only letters, digits, '-', '_' and '.'",
                sweep.name
            ),
        ));
    }
    let mut grid: Vec<(String, Vec<Value>)> = Vec::new();
    for (key, values) in sweep.grid.0 {
        let values = match values {
            Value::Array(v) if !v.is_empty() => v,
            Value::Array(_) => {
                return Err(bad_file(file, format!("grid.{key}: the list is empty")));
            }
            other => {
                return Err(bad_file(
                    file,
                    format!("grid.{key}: expected a list of values, got {other}"),
                ));
            }
        };
        if sweep.set.0.iter().any(|(k, _)| *k == key) {
            return Err(bad_file(
                file,
                format!("grid.{key}: also in `set`; a key is either swept or fixed"),
            ));
        }
        grid.push((key, values));
    }
    if grid.is_empty() {
        return Err(bad_file(file, "grid: needs at least one key".into()));
    }
    let base = file.parent().unwrap_or(Path::new(".")).join(&sweep.config);
    let base = fs::canonicalize(&base)
        .map_err(|e| bad_file(file, format!("config: {}: {e}", base.display())))?;
    let base_text =
        fs::read_to_string(&base).map_err(|e| bad_file(&base, format!("cannot read: {e}")))?;
    let origin = base.display().to_string();
    let mut set: Vec<String> = sweep.set.0.iter().map(|(k, v)| override_of(k, v)).collect();
    set.extend(cli_set.iter().cloned());

    let cells = product(&grid);
    let width = (cells.len() - 1).to_string().len().max(3);
    let cwd = std::env::current_dir().map_err(|e| InputError::Other(e.to_string()))?;
    let mut record_cells = Vec::new();
    let mut configs = Vec::new();
    for (index, values) in cells.iter().enumerate() {
        let name = cell_name(index, width, values);
        let overrides: Vec<String> = values.iter().map(|(k, v)| override_of(k, v)).collect();
        let all: Vec<String> = set.iter().chain(&overrides).cloned().collect();
        let mut config = Config::from_yaml(&base_text, &origin, &all).map_err(|e| {
            bad_file(
                file,
                format!("cell {name} (grid {}): {e}", overrides.join(" ")),
            )
        })?;
        config.absolutize_paths(&cwd);
        let yaml = config.to_yaml();
        if let Some(same) = configs.iter().position(|c: &Config| c.to_yaml() == yaml) {
            let first: &Cell = &record_cells[same];
            return Err(bad_file(
                file,
                format!(
                    "cells {} and {name} resolve to the same config (is a grid value repeated?): \
                     a sweep's cells must differ, or the report would count one run twice",
                    first.name
                ),
            ));
        }
        configs.push(config);
        record_cells.push(Cell {
            index,
            dir: format!("cells/{name}"),
            name,
            overrides,
            state: CellState::Pending,
            exit_code: None,
            wall_seconds: None,
        });
    }
    Ok(Plan {
        record: SweepRecord {
            name: sweep.name,
            sweep_id: String::new(),
            sweep_hash: fingerprint(text.as_bytes()),
            config: base.display().to_string(),
            set,
            cells: record_cells,
        },
        file_text: text,
        configs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_labels_show_strings_bare_as_cell_names_do() {
        let spec = override_of("model.activation", &Value::from("silu"));
        assert_eq!(spec, r#"model.activation="silu""#);
        assert_eq!(override_label(&spec), "model.activation=silu");
        let spec = override_of("model.d_model", &Value::from(256));
        assert_eq!(override_label(&spec), "model.d_model=256");
        let list = serde_json::json!([1, 2]);
        assert_eq!(override_label(&override_of("k", &list)), "k=[1,2]");
    }

    #[test]
    fn the_grid_is_a_product_with_the_first_key_outermost() {
        let grid = vec![
            ("seed".to_string(), vec![Value::from(1), Value::from(2)]),
            (
                "model.activation".to_string(),
                vec![Value::from("relu"), Value::from("gelu")],
            ),
        ];
        let cells = product(&grid);
        let names: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| cell_name(i, 3, c))
            .collect();
        assert_eq!(
            names,
            [
                "000-seed=1,model.activation=relu",
                "001-seed=1,model.activation=gelu",
                "002-seed=2,model.activation=relu",
                "003-seed=2,model.activation=gelu",
            ]
        );
        assert_eq!(
            override_of("model.activation", &Value::from("relu")),
            "model.activation=\"relu\""
        );
        assert_eq!(
            cell_name(7, 3, &[("data.path".into(), Value::from("a b/c"))]),
            "007-data.path=a_b_c"
        );
    }
}

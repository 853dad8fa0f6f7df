//! `densitrace report DIR`: the answer to "is the shifted set sparser than the familiar one, from
//! which step, and how sure are we?", computed from a run's or a sweep's Parquet tables (no model
//! is run). It writes, into `DIR/report/` (or `-o`):
//!
//! ```text
//! summary.parquet   gap.parquet   ood.parquet   trend.parquet   contrast.parquet   (`tables`)
//! density-<cell>.png gap-<cell>.png auroc-<cell>.png auroc-loss-<cell>.png layers-<cell>.png
//! loss-<cell>.png
//! index.html        the figures, a table of headline numbers, and the command that made it
//! ```
//!
//! The report is built in a temporary folder beside the output and renamed into place, so a
//! stopped report never leaves half its files; an existing report is moved aside only once the
//! new one is complete, and put back if the new one cannot be renamed in (`replace`).
//!
//! A report of something incomplete says so (stderr, stdout and an "Incomplete" section at the
//! top of index.html): a single run whose manifest is not `completed` (running, interrupted,
//! killed or diverged, with the step it reached), and a run missing an evaluation that the other
//! runs of its cell have, which is left out of that step in every table
//! (`load::drop_missing_evaluations`).

mod columns;
pub mod contrast;
pub mod dist;
pub mod family;
pub mod figures;
#[cfg(test)]
mod fixtures;
mod html;
pub mod iid;
pub mod inference;
pub mod load;
pub mod stats;
pub mod tables;
pub mod trend;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error::InputError;
use crate::metrics::MetricSpec;
use crate::rundir::staged::StagedDir;
use load::{Set, Unit};
use tables::{Settings, Tables, Test};

/// The file that marks a folder as a report, so `report` only ever replaces its own output.
const MARKER: &str = ".densitrace-report";

/// What to report and how.
pub struct ReportRequest<'a> {
    pub dir: &'a Path,
    /// Default: `DIR/report`.
    pub out: Option<&'a Path>,
    /// Default: the runs' summary metric (top-5% energy if measured, else Hoyer).
    pub metric: Option<&'a str>,
    pub site: &'a str,
    pub position: &'a str,
    pub log_x: bool,
    /// Intervals, tests and their families.
    pub settings: Settings,
    /// The command line, shown in index.html.
    pub command_line: String,
}

/// What the report wrote.
pub struct ReportOutcome {
    pub dir: PathBuf,
    pub files: Vec<String>,
    /// The outputs it could not make, each with why.
    pub missing: Vec<String>,
    /// The headline table, as printed.
    pub headline: String,
}

/// The figures' and headline's selection: one metric at one site and position.
struct Selection {
    metric: String,
    site: String,
    position: String,
}

impl Selection {
    fn matches(&self, key: &load::Key) -> bool {
        key.at.metric == self.metric && key.at.site == self.site && key.at.position == self.position
    }
}

/// The across-seed AUROC rows of `cell` whose key `matches`: what the AUROC figures and the
/// headline show.
fn across_seed_auroc<'a>(
    tables: &'a Tables,
    cell: &'a str,
    matches: impl Fn(&load::Key) -> bool + 'a,
) -> impl Iterator<Item = &'a tables::OodRow> + 'a {
    tables.ood.iter().filter(move |r| {
        r.cell == cell && r.seed.is_none() && r.statistic == "auroc" && matches(&r.key)
    })
}

/// Whether `key` is the per-sample prompt loss: the baseline detector density is compared with
/// (label-free like density; `next_token_loss` includes a rule-graph answer, the label).
fn is_loss(key: &load::Key) -> bool {
    key.at.site == crate::metrics::LOGITS_SITE
        && key.at.metric == crate::metrics::LogitsMetric::PromptLoss.name()
}

pub fn report(request: &ReportRequest) -> Result<ReportOutcome> {
    let started = std::time::Instant::now();
    let mut source = load::read(request.dir)?;
    if source.units.is_empty() {
        return Err(InputError::File {
            file: request.dir.display().to_string(),
            message: format!(
                "no completed run in this sweep ({})",
                source.skipped.join("; ")
            ),
        }
        .into());
    }
    // What the report must say it is not: a run that did not finish, evaluations missing.
    let mut incomplete = source.incomplete.clone();
    incomplete.extend(load::drop_missing_evaluations(&mut source.units));
    let selection = select(request, &source.units)?;
    let out = request
        .out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| request.dir.join("report"));
    let out = resolve_output(&out)?;
    if out.exists() && !out.join(MARKER).is_file() {
        return Err(InputError::File {
            file: out.display().to_string(),
            message: format!(
                "exists and is not a densitrace report (no {MARKER}); choose another -o"
            ),
        }
        .into());
    }
    eprintln!(
        "report of {} {} ({} runs{}): {} of {} at {}; read in {:.1} s",
        source.kind,
        source.name,
        source.units.len(),
        if source.skipped.is_empty() {
            String::new()
        } else {
            format!(
                ", {} cells not completed and left out",
                source.skipped.len()
            )
        },
        selection.metric,
        selection.site,
        selection.position,
        started.elapsed().as_secs_f64()
    );

    for note in &incomplete {
        eprintln!("incomplete: {note}");
    }

    let tables = tables::compute(&source.units, &request.settings)?;
    eprintln!("statistics in {:.1} s", started.elapsed().as_secs_f64());

    // Build everything in a temporary folder beside the output, then rename it into place.
    let parent = out.parent().unwrap_or(Path::new(".")).to_path_buf();
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let staged = StagedDir::create(tmp.clone())
        .with_context(|| format!("cannot write the report: creating {}", tmp.display()))?;
    let (mut files, missing, headline) =
        build(request, &source, &selection, &tables, staged.path())?;
    if !incomplete.is_empty() {
        mark_incomplete(&staged.path().join("index.html"), &incomplete)?;
    }
    let backup = parent.join(format!(".{name}.old-{}", std::process::id()));
    staged
        .replace(&out, &backup)
        .context("cannot write the report")?;
    files.sort();
    for note in &incomplete {
        println!("incomplete: {note}");
    }
    eprintln!("report written in {:.1} s", started.elapsed().as_secs_f64());
    Ok(ReportOutcome {
        dir: out,
        files,
        missing,
        headline,
    })
}

/// `out` with its parent made absolute and free of `..` (created if need be), so that moving an
/// existing report aside never changes what the path names (`-o rep/../rep`). Errors name it.
fn resolve_output(out: &Path) -> Result<PathBuf> {
    if out.is_dir() {
        return fs::canonicalize(out).with_context(|| format!("resolving {}", out.display()));
    }
    let name = out.file_name().ok_or_else(|| InputError::File {
        file: out.display().to_string(),
        message: "-o must name a folder".into(),
    })?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent)
        .with_context(|| format!("cannot write the report: creating {}", parent.display()))?;
    let parent =
        fs::canonicalize(parent).with_context(|| format!("resolving {}", parent.display()))?;
    Ok(parent.join(name))
}

/// Adds an "Incomplete" section at the top of index.html, listing `notes`.
fn mark_incomplete(index: &Path, notes: &[String]) -> Result<()> {
    let html = fs::read_to_string(index)?;
    let mut block = String::from(
        "<h2 id=\"incomplete\">Incomplete</h2><p>This report is not of complete runs:</p><ul>",
    );
    for note in notes {
        let escaped = note
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        block.push_str(&format!("<li>{escaped}</li>"));
    }
    block.push_str("</ul>\n");
    let html = match html.find("</h1>\n") {
        Some(at) => format!("{}{block}{}", &html[..at + 6], &html[at + 6..]),
        None => format!("{block}{html}"),
    };
    crate::rundir::write_atomic(index, html.as_bytes())
}

/// The metric, site and position the figures show, checked against the density table.
fn select(request: &ReportRequest, units: &[Unit]) -> Result<Selection> {
    let metric = match request.metric {
        Some(m) => m.to_string(),
        None => MetricSpec::headline(&units[0].config.probes.metrics).to_string(),
    };
    let mut metrics = BTreeSet::new();
    let mut sites = BTreeSet::new();
    let mut positions = BTreeSet::new();
    for key in units.iter().flat_map(|u| u.tables.density.keys()) {
        metrics.insert(key.at.metric.as_str());
        sites.insert(key.at.site.as_str());
        positions.insert(key.at.position.as_str());
    }
    let check = |flag: &str, value: &str, known: &BTreeSet<&str>| -> Result<(), InputError> {
        if known.contains(value) {
            Ok(())
        } else {
            Err(InputError::Other(format!(
                "--{flag} {value}: not in the runs' density table; known: {}",
                known.iter().copied().collect::<Vec<_>>().join(", ")
            )))
        }
    };
    check("metric", &metric, &metrics)?;
    check("site", request.site, &sites)?;
    check("position", request.position, &positions)?;
    Ok(Selection {
        metric,
        site: request.site.to_string(),
        position: request.position.to_string(),
    })
}

/// Writes the tables, figures and index.html into `dir`; returns the files, what could not be
/// made (and why), and the headline table.
fn build(
    request: &ReportRequest,
    source: &load::Source,
    selection: &Selection,
    tables: &Tables,
    dir: &Path,
) -> Result<(Vec<String>, Vec<String>, String)> {
    let mut files: Vec<String> = tables.write(dir)?.into_iter().map(String::from).collect();
    let mut missing = Vec::new();
    let without_samples: Vec<String> = source
        .units
        .iter()
        .filter(|u| u.tables.samples.is_empty())
        .map(|u| u.run_id.clone())
        .collect();
    if tables.ood.is_empty() {
        missing.push(format!(
            "ood.parquet and the AUROC figures: no run has a samples/ table (probes.per_sample) \
             with a shifted set and {} at the same site and position",
            tables::reference_set(&source.units.iter().collect::<Vec<_>>())
                .map(|s| s.probe)
                .unwrap_or_else(|| "an id set (family none)".into())
        ));
    } else if !without_samples.is_empty() {
        missing.push(format!(
            "detection scores of runs without a samples/ table: {}",
            without_samples.join(", ")
        ));
    }
    if source.units.len() == 1 && !without_samples.is_empty() {
        missing.push(
            "intervals of this single run: they come from its samples/ table, which it did not \
             write (set probes.per_sample); sweep several seeds for intervals across seeds"
                .into(),
        );
    }

    let mut figures = Vec::new();
    for (cell, runs) in tables::cells(&source.units) {
        let slug = slug(&cell);
        let in_cell = |c: &str| c == cell;
        let styles = figures::Styles::new(
            tables
                .summary
                .iter()
                .filter(|r| in_cell(&r.cell) && selection.matches(&r.key))
                .map(|r| &r.key.set),
        );
        let what = format!(
            "{}, {}, {} token{}",
            selection.metric,
            selection.site,
            selection.position,
            if selection.position == "all" { "s" } else { "" }
        );
        let seeds = runs.len();
        let note: Vec<String> = if seeds >= 2 {
            vec![
                "band: 95% interval over".into(),
                format!(
                    "{seeds} seeds ({})",
                    request.settings.interval.description()
                ),
            ]
        } else if !runs[0].tables.samples.keys().any(|k| selection.matches(k)) {
            vec![
                "one seed; no band (no".into(),
                "samples/ at this site)".into(),
            ]
        } else {
            vec![
                "one seed; band: bootstrap".into(),
                "over its samples (95%)".into(),
            ]
        };
        let cell_title = if cell == load::BASE_CELL {
            source.name.clone()
        } else {
            format!("{} {cell}", source.name)
        };

        let chart = |title: String, y_desc: String, reference: Option<f64>| figures::LineChart {
            title,
            y_desc,
            log_x: request.log_x,
            reference,
            note: if reference.is_some() {
                // Gap and AUROC charts mark their significant points.
                let mut note = note.clone();
                note.extend(["dot: Holm-adjusted".into(), "p < 0.05 (--family)".into()]);
                note
            } else {
                note.clone()
            },
            styles: &styles,
        };
        let density = figures::series(
            tables
                .summary
                .iter()
                .filter(|r| in_cell(&r.cell) && selection.matches(&r.key))
                .map(|r| (&r.key, r.estimate, false)),
        );
        let file = format!("density-{slug}.png");
        chart(
            format!("{cell_title}: {what}"),
            selection.metric.clone(),
            None,
        )
        .draw(&dir.join(&file), &density)?;
        figures.push((cell.clone(), file, "density over training"));

        let gap = figures::series(
            tables
                .gap
                .iter()
                .filter(|r| in_cell(&r.cell) && selection.matches(&r.key))
                .map(|r| (&r.key, r.estimate, significant(&r.test))),
        );
        if !gap.is_empty() {
            let file = format!("gap-{slug}.png");
            chart(
                format!("{cell_title}: tested set minus its reference, {what}"),
                format!(
                    "{} gap to the reference (paired within seeds)",
                    selection.metric
                ),
                Some(0.0),
            )
            .draw(&dir.join(&file), &gap)?;
            figures.push((cell.clone(), file, "gap to the reference over training"));
        }

        let auroc = figures::series(
            across_seed_auroc(tables, &cell, |k| selection.matches(k))
                .map(|r| (&r.key, r.estimate, significant(&r.test))),
        );
        if !auroc.is_empty() {
            let file = format!("auroc-{slug}.png");
            chart(
                format!("{cell_title}: {what}, as a detector of each shifted set"),
                match selection
                    .metric
                    .parse::<MetricSpec>()
                    .ok()
                    .and_then(|m| m.sparser_when_higher())
                {
                    Some(_) => "AUROC (> 0.5: sparser means shifted)".into(),
                    None => "AUROC (> 0.5: higher means shifted)".into(),
                },
                Some(0.5),
            )
            .draw(&dir.join(&file), &auroc)?;
            figures.push((cell.clone(), file, "AUROC over training"));
        }

        let loss_auroc = figures::series(
            across_seed_auroc(tables, &cell, is_loss)
                .map(|r| (&r.key, r.estimate, significant(&r.test))),
        );
        if !loss_auroc.is_empty() {
            let file = format!("auroc-loss-{slug}.png");
            chart(
                format!("{cell_title}: the prompt's own loss (the baseline), as a detector"),
                "AUROC (> 0.5: higher prompt loss means shifted)".into(),
                Some(0.5),
            )
            .draw(&dir.join(&file), &loss_auroc)?;
            figures.push((
                cell.clone(),
                file,
                "AUROC of the loss baseline over training",
            ));
        }

        if let Some(file) = layers_figure(tables, &cell, &slug, selection, &cell_title, dir)? {
            figures.push((cell.clone(), file, "final gap at every site"));
        }

        if runs.iter().any(|u| !u.tables.train.is_empty()) {
            let file = format!("loss-{slug}.png");
            figures::draw_loss(
                &dir.join(&file),
                &format!("{cell_title}: train loss"),
                &runs,
                request.log_x,
            )?;
            figures.push((cell.clone(), file, "train loss"));
        }
    }
    files.extend(figures.iter().map(|f| f.1.clone()));

    let rows = html::headline(tables, selection);
    let headline = html::text(&rows);
    let html = html::index_html(request, source, selection, &rows, &figures, &missing);
    crate::rundir::write_atomic(&dir.join("index.html"), html.as_bytes())?;
    crate::rundir::write_atomic(&dir.join(MARKER), b"made by densitrace report\n")?;
    files.push("index.html".into());
    Ok((files, missing, headline))
}

/// The layer x site figure: the final step's gap at every site but `logits`, for each shifted
/// set, at the selection's metric and position.
fn layers_figure(
    tables: &Tables,
    cell: &str,
    slug: &str,
    selection: &Selection,
    cell_title: &str,
    dir: &Path,
) -> Result<Option<String>> {
    let rows: Vec<&tables::GapRow> = tables
        .gap
        .iter()
        .filter(|r| {
            r.cell == cell
                && r.key.at.metric == selection.metric
                && r.key.at.position == selection.position
                && r.key.at.site != crate::metrics::LOGITS_SITE
        })
        .collect();
    let Some(last) = rows.iter().map(|r| r.key.step).max() else {
        return Ok(None);
    };
    let rows: Vec<_> = rows.into_iter().filter(|r| r.key.step == last).collect();
    let sites: BTreeSet<(i32, &str)> = rows
        .iter()
        .map(|r| (r.key.at.layer, r.key.at.site.as_str()))
        .collect();
    let sets: BTreeSet<&Set> = rows.iter().map(|r| &r.key.set).collect();
    let site_names: Vec<String> = sites.iter().map(|s| s.1.to_string()).collect();
    let set_names: Vec<String> = sets.iter().map(|s| set_label(s, &sets)).collect();
    let mut gaps = BTreeMap::new();
    for r in &rows {
        let row = sites
            .iter()
            .position(|s| *s == (r.key.at.layer, r.key.at.site.as_str()));
        let column = sets.iter().position(|s| *s == &r.key.set);
        if let (Some(row), Some(column)) = (row, column) {
            gaps.insert((row, column), (r.estimate, significant(&r.test)));
        }
    }
    let file = format!("layers-{slug}.png");
    figures::draw_layers(
        &dir.join(&file),
        &format!(
            "{cell_title}: {} gap to the reference at step {last}, {} token (red: higher; *: Holm-adjusted p < 0.05)",
            selection.metric, selection.position
        ),
        &site_names,
        &set_names,
        &gaps,
    )?;
    Ok(Some(file))
}

/// Whether a row's test is significant at 0.05 after Holm's correction within its family.
fn significant(test: &Option<Test>) -> bool {
    test.as_ref().is_some_and(|t| t.p_holm < 0.05)
}

/// `corrupt 0.25`, or the probe's name alone when it has one level.
fn set_label(set: &Set, all: &BTreeSet<&Set>) -> String {
    if all.iter().filter(|s| s.probe == set.probe).count() > 1 {
        format!("{} {}", set.probe, set.level.0)
    } else {
        set.probe.clone()
    }
}

/// A cell's name as a file name part.
fn slug(cell: &str) -> String {
    cell.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

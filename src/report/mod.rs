//! `densitrace report DIR`: the answer to "is the shifted set sparser than the familiar one, from
//! which step, and how sure are we?", computed from a run's or a sweep's Parquet tables (no model
//! is run). It writes, into `DIR/report/` (or `-o`):
//!
//! ```text
//! summary.parquet   gap.parquet   ood.parquet   trend.parquet     (see `tables`)
//! density-<cell>.png gap-<cell>.png auroc-<cell>.png auroc-loss-<cell>.png layers-<cell>.png
//! loss-<cell>.png
//! index.html        the figures, a table of headline numbers, and the command that made it
//! ```
//!
//! The report is built in a temporary folder beside the output and renamed into place, so a
//! stopped report never leaves half its files.

pub mod figures;
pub mod load;
pub mod stats;
pub mod tables;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error::InputError;
use crate::metrics::MetricSpec;
use load::{Set, Unit};
use stats::{Bootstrap, Estimate};
use tables::Tables;

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
    pub bootstrap: Bootstrap,
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
    let source = load::read(request.dir)?;
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
    let selection = select(request, &source.units)?;
    let out = request
        .out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| request.dir.join("report"));
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

    let tables = tables::compute(&source.units, request.bootstrap);
    eprintln!("statistics in {:.1} s", started.elapsed().as_secs_f64());

    // Build everything in a temporary folder beside the output, then rename it into place.
    let parent = out.parent().unwrap_or(Path::new(".")).to_path_buf();
    fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let built = build(request, &source, &selection, &tables, &tmp);
    let (mut files, missing, headline) = match built {
        Ok(b) => b,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("replacing {}", out.display()))?;
    }
    fs::rename(&tmp, &out).with_context(|| format!("moving the report to {}", out.display()))?;
    files.sort();
    eprintln!("report written in {:.1} s", started.elapsed().as_secs_f64());
    Ok(ReportOutcome {
        dir: out,
        files,
        missing,
        headline,
    })
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
                format!("{seeds} seeds (bootstrap)"),
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

        let chart = |title: String, y_desc: String, reference| figures::LineChart {
            title,
            y_desc,
            log_x: request.log_x,
            reference,
            note: note.clone(),
            styles: &styles,
        };
        let density = figures::series(
            tables
                .summary
                .iter()
                .filter(|r| in_cell(&r.cell) && selection.matches(&r.key))
                .map(|r| (&r.key, r.estimate)),
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
                .map(|r| (&r.key, r.estimate)),
        );
        if !gap.is_empty() {
            let file = format!("gap-{slug}.png");
            chart(
                format!("{cell_title}: shifted minus id, {what}"),
                format!("{} gap to id (paired within seeds)", selection.metric),
                Some(0.0),
            )
            .draw(&dir.join(&file), &gap)?;
            figures.push((cell.clone(), file, "gap to id over training"));
        }

        let auroc = figures::series(
            across_seed_auroc(tables, &cell, |k| selection.matches(k))
                .map(|r| (&r.key, r.estimate)),
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
            across_seed_auroc(tables, &cell, is_loss).map(|r| (&r.key, r.estimate)),
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

    let headline = headline_table(tables, selection);
    let html = index_html(request, source, selection, &headline, &figures, &missing);
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
            gaps.insert((row, column), r.estimate);
        }
    }
    let file = format!("layers-{slug}.png");
    figures::draw_layers(
        &dir.join(&file),
        &format!(
            "{cell_title}: {} gap to id at step {last}, {} token (red: higher than id; *: interval excludes 0)",
            selection.metric, selection.position
        ),
        &site_names,
        &set_names,
        &gaps,
    )?;
    Ok(Some(file))
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

/// `+0.0012 [+0.0003, +0.0021]` (`signed`), or without signs.
fn interval_text(e: &Estimate, signed: bool) -> String {
    let f = |v: f64| {
        if signed {
            format!("{v:+.4}")
        } else {
            format!("{v:.4}")
        }
    };
    if e.lo.is_finite() && e.hi.is_finite() {
        format!("{} [{}, {}]", f(e.value), f(e.lo), f(e.hi))
    } else {
        format!("{} [no interval]", f(e.value))
    }
}

/// At each cell's last step, each shifted set: the gap to id, the AUROC of the selection and of
/// the prompt loss (the baseline), with their intervals, and the number of seeds.
fn headline_table(tables: &Tables, selection: &Selection) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<16} {:>6} {:>6}  {:<34} {:<30} {:<30}",
        "cell",
        "probe",
        "step",
        "seeds",
        "gap to id [95% interval]",
        "AUROC [95% interval]",
        "prompt-loss AUROC [95% interval]"
    );
    for (cell, rows) in tables::by_cell(&tables.gap, |r| &r.cell) {
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|r| selection.matches(&r.key))
            .collect();
        let Some(last) = rows.iter().map(|r| r.key.step).max() else {
            continue;
        };
        let sets: BTreeSet<&Set> = rows.iter().map(|r| &r.key.set).collect();
        for r in rows.iter().filter(|r| r.key.step == last) {
            let auroc_where = |matches: &dyn Fn(&load::Key) -> bool| {
                across_seed_auroc(tables, &cell, |k| {
                    k.step == r.key.step && k.set == r.key.set && matches(k)
                })
                .next()
                .map(|o| interval_text(&o.estimate, false))
                .unwrap_or_else(|| "-".into())
            };
            let _ = writeln!(
                out,
                "{:<24} {:<16} {:>6} {:>6}  {:<34} {:<30} {:<30}",
                cell,
                set_label(&r.key.set, &sets),
                last,
                r.seeds,
                interval_text(&r.estimate, true),
                auroc_where(&|k| k.at == r.key.at),
                auroc_where(&is_loss),
            );
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn index_html(
    request: &ReportRequest,
    source: &load::Source,
    selection: &Selection,
    headline: &str,
    figures: &[(String, String, &str)],
    missing: &[String],
) -> String {
    let mut html = String::new();
    let title = format!("densitrace report: {} {}", source.kind, source.name);
    let _ = write!(
        html,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto;}}pre{{background:#f4f4f4;padding:0.6em;overflow-x:auto;}}img{{max-width:100%;border:1px solid #ddd;margin:0.4em 0;}}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let seeds: BTreeSet<u64> = source.units.iter().map(|u| u.seed).collect();
    let _ = write!(
        html,
        "<p>{} runs ({} seeds) from <code>{}</code>. Figures: <b>{}</b> of <b>{}</b> at the <b>{}</b> position. Intervals are 95% percentile bootstraps ({} resamples, seed {}): over seeds where there are 2 or more, else over the run's own vectors.</p>\n",
        source.units.len(),
        seeds.len(),
        escape(&request.dir.display().to_string()),
        escape(&selection.metric),
        escape(&selection.site),
        escape(&selection.position),
        request.bootstrap.resamples,
        request.bootstrap.seed
    );
    let _ = write!(
        html,
        "<p>Made by:</p><pre>{}</pre>\n",
        escape(&request.command_line)
    );
    if seeds.len() < 5 {
        let _ = write!(
            html,
            "<p><b>Few seeds.</b> A percentile bootstrap over fewer than about 10 seeds gives intervals that are too narrow (they cover the truth less often than 95%); read them as a lower bound on the uncertainty.</p>\n"
        );
    }
    let _ = write!(
        html,
        "<h2>At the last step</h2>\n<p>Gap: shifted minus id, paired within each seed (positive: the shifted set reads higher). AUROC: the metric as a detector of the shifted set against id, oriented so that above 0.5 means sparser inputs are the shifted ones.</p>\n<pre>{}</pre>\n",
        escape(headline)
    );
    if !missing.is_empty() {
        let _ = write!(html, "<h2>Not made</h2><ul>");
        for m in missing {
            let _ = write!(html, "<li>{}</li>", escape(m));
        }
        let _ = write!(html, "</ul>\n");
    }
    if !source.skipped.is_empty() {
        let _ = write!(html, "<h2>Left out</h2><ul>");
        for s in &source.skipped {
            let _ = write!(html, "<li>{}</li>", escape(s));
        }
        let _ = write!(html, "</ul>\n");
    }
    let mut current = None;
    for (cell, file, caption) in figures {
        if current != Some(cell) {
            let _ = write!(html, "<h2>Cell {}</h2>\n", escape(cell));
            current = Some(cell);
        }
        let _ = write!(
            html,
            "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>\n",
            escape(file),
            escape(caption),
            escape(caption)
        );
    }
    let _ = write!(
        html,
        "<h2>Tables</h2><p><code>summary.parquet</code>, <code>gap.parquet</code>, <code>ood.parquet</code> and <code>trend.parquet</code> beside this page; their columns are in the README under \"Reports\".</p>\n</body></html>\n"
    );
    html
}

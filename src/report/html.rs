//! The report's headline (printed and in index.html) and its index.html page.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::load::{self, Set};
use super::stats::Estimate;
use super::tables::{self, Interval, Tables, Test};
use super::{ReportRequest, Selection, across_seed_auroc, is_loss, set_label};

/// One headline row: a tested set at its cell's last step.
pub struct HeadlineRow {
    cell: String,
    probe: String,
    reference: String,
    step: i64,
    seeds: usize,
    gap: (Estimate, Option<Test>),
    auroc: Option<(Estimate, Option<Test>)>,
    loss_auroc: Option<(Estimate, Option<Test>)>,
}

/// At each cell's last step, each tested set: the gap to its reference, the AUROC of the
/// selection and of the prompt loss (the baseline), with intervals, p and Holm-adjusted p.
pub fn headline(tables: &Tables, selection: &Selection) -> Vec<HeadlineRow> {
    let mut out = Vec::new();
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
                .map(|o| (o.estimate, o.test.clone()))
            };
            out.push(HeadlineRow {
                cell: cell.clone(),
                probe: set_label(&r.key.set, &sets),
                reference: r.reference.clone(),
                step: last,
                seeds: r.seeds,
                gap: (r.estimate, r.test.clone()),
                auroc: auroc_where(&|k| k.at == r.key.at),
                loss_auroc: auroc_where(&is_loss),
            });
        }
    }
    out
}

/// A value in 4 decimals, with its sign where `signed` (gaps) and without (levels, AUROCs).
fn value_text(v: f64, signed: bool) -> String {
    if signed {
        format!("{v:+.4}")
    } else {
        format!("{v:.4}")
    }
}

/// `+0.0012 [+0.0003, +0.0021]` (`signed`), or without signs.
pub fn interval_text(e: &Estimate, signed: bool) -> String {
    let f = |v: f64| value_text(v, signed);
    if e.lo.is_finite() && e.hi.is_finite() {
        format!("{} [{}, {}]", f(e.value), f(e.lo), f(e.hi))
    } else {
        format!("{} [no interval]", f(e.value))
    }
}

/// A p-value in 3 significant digits; `-` where there is none.
fn p_text(p: Option<f64>) -> String {
    match p {
        Some(p) if p.is_finite() => {
            if p < 0.001 {
                format!("{p:.1e}")
            } else {
                format!("{p:.3}")
            }
        }
        _ => "-".into(),
    }
}

/// The headline as plain text, as `densitrace report` prints it.
pub fn text(rows: &[HeadlineRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<16} {:<16} {:>6} {:>5}  {:<34} {:>8} {:>8}  {:<30} {:>8}  {:<30}",
        "cell",
        "probe",
        "reference",
        "step",
        "seeds",
        "gap [95% interval]",
        "p",
        "p_holm",
        "AUROC [95% interval]",
        "p_holm",
        "prompt-loss AUROC [95% interval]"
    );
    for r in rows {
        let auroc = |a: &Option<(Estimate, Option<Test>)>| {
            a.as_ref()
                .map(|(e, _)| interval_text(e, false))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            out,
            "{:<24} {:<16} {:<16} {:>6} {:>5}  {:<34} {:>8} {:>8}  {:<30} {:>8}  {:<30}",
            r.cell,
            r.probe,
            r.reference,
            r.step,
            r.seeds,
            interval_text(&r.gap.0, true),
            p_text(r.gap.1.as_ref().map(|t| t.p)),
            p_text(r.gap.1.as_ref().map(|t| t.p_holm)),
            auroc(&r.auroc),
            p_text(
                r.auroc
                    .as_ref()
                    .and_then(|a| a.1.as_ref())
                    .map(|t| t.p_holm)
            ),
            auroc(&r.loss_auroc),
        );
    }
    out
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The headline as an HTML table whose columns sort on a click (numbers as numbers).
fn html_table(rows: &[HeadlineRow]) -> String {
    let mut html = String::from("<table class=\"sortable\"><thead><tr>");
    let headers = [
        "cell",
        "probe",
        "reference",
        "step",
        "seeds",
        "gap",
        "95% interval",
        "p",
        "p (Holm)",
        "q (BH)",
        "test",
        "AUROC",
        "95% interval",
        "p (Holm)",
        "prompt-loss AUROC",
        "95% interval",
    ];
    for h in headers {
        let _ = write!(html, "<th>{}</th>", escape(h));
    }
    html.push_str("</tr></thead><tbody>\n");
    let num = |v: f64, signed: bool| -> String {
        if !v.is_finite() {
            return "<td data-v=\"\">-</td>".into();
        }
        format!("<td data-v=\"{v:e}\">{}</td>", value_text(v, signed))
    };
    let pval = |p: Option<f64>| -> String {
        match p {
            Some(p) if p.is_finite() => format!("<td data-v=\"{p:e}\">{}</td>", p_text(Some(p))),
            _ => "<td data-v=\"\">-</td>".into(),
        }
    };
    let bounds = |e: &Estimate, signed: bool| -> String {
        if e.lo.is_finite() && e.hi.is_finite() {
            format!(
                "<td data-v=\"{:e}\">[{}, {}]</td>",
                e.lo,
                value_text(e.lo, signed),
                value_text(e.hi, signed)
            )
        } else {
            "<td data-v=\"\">none</td>".into()
        }
    };
    for r in rows {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td>",
            escape(&r.cell),
            escape(&r.probe),
            escape(&r.reference),
            r.step,
            r.step,
            r.seeds,
            r.seeds
        );
        let t = r.gap.1.as_ref();
        html.push_str(&num(r.gap.0.value, true));
        html.push_str(&bounds(&r.gap.0, true));
        html.push_str(&pval(t.map(|t| t.p)));
        html.push_str(&pval(t.map(|t| t.p_holm)));
        html.push_str(&pval(t.map(|t| t.q_bh)));
        let _ = write!(html, "<td>{}</td>", escape(t.map_or("-", |t| t.name)));
        for (i, a) in [&r.auroc, &r.loss_auroc].into_iter().enumerate() {
            match a {
                Some((e, test)) => {
                    html.push_str(&num(e.value, false));
                    html.push_str(&bounds(e, false));
                    if i == 0 {
                        html.push_str(&pval(test.as_ref().map(|t| t.p_holm)));
                    }
                }
                None => {
                    html.push_str(&"<td data-v=\"\">-</td>".repeat(if i == 0 { 3 } else { 2 }));
                }
            }
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody></table>\n");
    html
}

/// Sorts a `table.sortable` by the clicked column: by `data-v` as a number where present, else
/// by text; a second click reverses.
const SORT_SCRIPT: &str = r#"<script>
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.from(body.rows);
    var dir = th.dataset.dir === 'asc' ? -1 : 1;
    th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    var key = function (row) {
      var cell = row.cells[col];
      var v = cell.dataset.v;
      return v === undefined ? cell.textContent : (v === '' ? NaN : parseFloat(v));
    };
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (typeof x === 'number' && typeof y === 'number') {
        if (isNaN(x)) return 1;
        if (isNaN(y)) return -1;
        return dir * (x - y);
      }
      return dir * String(x).localeCompare(String(y));
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
</script>
"#;

pub fn index_html(
    request: &ReportRequest,
    source: &load::Source,
    selection: &Selection,
    headline: &[HeadlineRow],
    figures: &[(String, String, &str)],
    missing: &[String],
) -> String {
    let mut html = String::new();
    let title = format!("densitrace report: {} {}", source.kind, source.name);
    let _ = write!(
        html,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n<style>body{{font-family:sans-serif;max-width:1400px;margin:2em auto;}}pre{{background:#f4f4f4;padding:0.6em;overflow-x:auto;}}img{{max-width:100%;border:1px solid #ddd;margin:0.4em 0;}}table.sortable{{border-collapse:collapse;font-size:0.85em;}}table.sortable th{{cursor:pointer;background:#eee;position:sticky;top:0;}}table.sortable th,table.sortable td{{border:1px solid #ccc;padding:0.2em 0.45em;white-space:nowrap;}}table.sortable td[data-v]{{text-align:right;}}.scroll{{overflow-x:auto;}}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let seeds: BTreeSet<u64> = source.units.iter().map(|u| u.seed).collect();
    let s = &request.settings;
    let interval = Interval::Seeds(s.interval).method();
    let _ = write!(
        html,
        "<p>{} runs ({} seeds) from <code>{}</code>. Figures: <b>{}</b> of <b>{}</b> at the <b>{}</b> position.</p>\n<p><b>Intervals</b> are 95%: over seeds where there are 2 or more, by <b>{}</b> (<code>--interval</code>; bootstraps use {} resamples, seed {}); a single run's come from a percentile bootstrap over its own vectors.</p>\n<p><b>Tests</b> are two-sided. Across seeds: exact sign flips of the per-seed values (the smallest p possible with n seeds is 2/2<sup>n</sup>: 0.0625 at 5 seeds, 0.0039 at 9), and for a trend the exact permutation test of each seed's rho over levels, combined across seeds by the exact null of the mean rho. A single run is tested over its own samples (Welch's t, Mann-Whitney, Spearman's t) and its rows say so in <code>test</code>. <b>Corrections</b>: <code>p_holm</code> (Holm, family-wise) and <code>q_bh</code> (Benjamini-Hochberg) within each family; the family here is <code>{}</code> (every table's <code>family</code> column names each row's).</p>\n",
        source.units.len(),
        seeds.len(),
        escape(&request.dir.display().to_string()),
        escape(&selection.metric),
        escape(&selection.site),
        escape(&selection.position),
        interval,
        s.boot.resamples,
        s.boot.seed,
        escape(s.family.text()),
    );
    let _ = writeln!(
        html,
        "<p>Made by:</p><pre>{}</pre>",
        escape(&request.command_line)
    );
    if (2..=5).contains(&seeds.len()) {
        let _ = writeln!(
            html,
            "<p><b>Few seeds.</b> With {} seeds no sign-flip test can reach p &lt; 0.05 and intervals are wide; add seeds for an answer.</p>",
            seeds.len()
        );
    }
    let _ = write!(
        html,
        "<h2>At the last step</h2>\n<p>Gap: the tested set minus its reference, paired within each seed (positive: the tested set reads higher). AUROC: the metric as a detector of the tested set against its reference, oriented so that above 0.5 means sparser inputs are the tested ones. Click a column to sort.</p>\n<div class=\"scroll\">{}</div>\n{}",
        html_table(headline),
        SORT_SCRIPT
    );
    if !missing.is_empty() {
        let _ = write!(html, "<h2>Not made</h2><ul>");
        for m in missing {
            let _ = write!(html, "<li>{}</li>", escape(m));
        }
        let _ = writeln!(html, "</ul>");
    }
    if !source.skipped.is_empty() {
        let _ = write!(html, "<h2>Left out</h2><ul>");
        for s in &source.skipped {
            let _ = write!(html, "<li>{}</li>", escape(s));
        }
        let _ = writeln!(html, "</ul>");
    }
    let mut current = None;
    for (cell, file, caption) in figures {
        if current != Some(cell) {
            let _ = writeln!(html, "<h2>Cell {}</h2>", escape(cell));
            current = Some(cell);
        }
        let _ = writeln!(
            html,
            "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
            escape(file),
            escape(caption),
            escape(caption)
        );
    }
    let _ = write!(
        html,
        "<h2>Tables</h2><p><code>summary.parquet</code>, <code>gap.parquet</code>, <code>ood.parquet</code>, <code>trend.parquet</code> and <code>contrast.parquet</code> beside this page; their columns are in docs/reports.md.</p>\n</body></html>\n"
    );
    html
}

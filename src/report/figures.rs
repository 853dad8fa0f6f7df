//! The report's figures, drawn in Rust (plotters, PNG; the font is embedded, so no system fonts
//! or Python are needed). Each figure is one cell's, at the report's metric, site and position:
//! - `density-<cell>.png`: the metric over training, one line per probe set and level, with its
//!   95% band;
//! - `gap-<cell>.png`: each shifted set minus id over training, with its band and a zero line;
//! - `auroc-<cell>.png`: the metric's AUROC as a detector of each shifted set (0.5: chance);
//! - `layers-<cell>.png`: the final gap at every site (rows) for every shifted set (columns);
//! - `loss-<cell>.png`: the train loss, each seed thin and their mean thick.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

use anyhow::{Result, anyhow};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::load::{Key, Set, Unit};
use super::stats::{self, Estimate};

const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (1100, 620);
/// Width of the legend column to the right of a line chart.
const LEGEND: u32 = 190;

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
/// The whole image, its plot and its legend column.
type Canvas<'a> = (Area<'a>, Area<'a>, Area<'a>);

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            include_bytes!("../../assets/DejaVuSans.ttf"),
        )
        .map_err(|_| ())
        .expect("the embedded font parses");
    });
}

/// matplotlib's tab10, for probe sets other than id (black).
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// How each probe set is drawn: one hue per probe name, lighter for lower levels.
pub struct Styles {
    styles: BTreeMap<Set, (RGBColor, String)>,
}

impl Styles {
    pub fn new<'a>(sets: impl Iterator<Item = &'a Set>) -> Styles {
        let mut by_probe: BTreeMap<&str, Vec<&Set>> = BTreeMap::new();
        for set in sets {
            let levels = by_probe.entry(&set.probe).or_default();
            if !levels.contains(&set) {
                levels.push(set);
            }
        }
        let mut styles = BTreeMap::new();
        let mut hue = 0;
        for (probe, mut levels) in by_probe {
            levels.sort();
            let is_id = levels.iter().all(|s| s.family == "none");
            let (r, g, b) = if is_id {
                (0, 0, 0)
            } else {
                hue += 1;
                PALETTE[(hue - 1) % PALETTE.len()]
            };
            let k = levels.len();
            for (i, set) in levels.iter().enumerate() {
                // Mix toward white: the highest level full strength, the lowest 55% white.
                let t = if k == 1 {
                    0.0
                } else {
                    0.55 * (k - 1 - i) as f64 / (k - 1) as f64
                };
                let mix = |c: u8| (c as f64 + (255.0 - c as f64) * t).round() as u8;
                let label = if k == 1 {
                    probe.to_string()
                } else {
                    format!("{probe} {}", set.level.0)
                };
                styles.insert((*set).clone(), (RGBColor(mix(r), mix(g), mix(b)), label));
            }
        }
        Styles { styles }
    }

    fn of(&self, set: &Set) -> (RGBColor, String) {
        self.styles
            .get(set)
            .cloned()
            .unwrap_or((BLACK, set.probe.clone()))
    }
}

/// One line with its band.
pub struct Series {
    pub set: Set,
    /// `(step, estimate, significant)` by step; a significant point is drawn as a dot.
    pub points: Vec<(i64, Estimate, bool)>,
}

/// Groups `(key, estimate, significant)` triples into one series per probe set.
pub fn series<'a>(rows: impl Iterator<Item = (&'a Key, Estimate, bool)>) -> Vec<Series> {
    let mut by_set: BTreeMap<Set, Vec<(i64, Estimate, bool)>> = BTreeMap::new();
    for (key, e, significant) in rows {
        by_set
            .entry(key.set.clone())
            .or_default()
            .push((key.step, e, significant));
    }
    by_set
        .into_iter()
        .map(|(set, mut points)| {
            points.sort_by_key(|p| p.0);
            Series { set, points }
        })
        .collect()
}

/// What a line chart shows besides its series.
pub struct LineChart<'a> {
    pub title: String,
    pub y_desc: String,
    /// Steps on a log scale (drawn at log10(step + 1)).
    pub log_x: bool,
    /// Horizontal reference lines (0 for gaps, 0.5 for AUROC).
    pub reference: Option<f64>,
    /// Lines above the legend (what the bands are).
    pub note: Vec<String>,
    pub styles: &'a Styles,
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a figure: {e:?}")
}

impl LineChart<'_> {
    fn x(&self, step: i64) -> f64 {
        if self.log_x {
            (step as f64 + 1.0).log10()
        } else {
            step as f64
        }
    }

    /// A white canvas of `SIZE` at `path`, split into the plot and the legend column.
    fn canvas(path: &Path) -> Result<Canvas<'_>> {
        register_font();
        let root = BitMapBackend::new(path, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (plot, legend) = root.split_horizontally(SIZE.0 - LEGEND);
        Ok((root, plot, legend))
    }

    /// The chart's axes over `x` (already mapped by `self.x`) and `y`, with the title, the step
    /// axis and `y_desc`; `y_digits` fixes the y labels' decimals.
    fn axes<'b, 'a: 'b>(
        &self,
        plot: &'b Area<'a>,
        (x0, x1): (f64, f64),
        (y0, y1): (f64, f64),
        y_digits: Option<usize>,
    ) -> Result<ChartContext<'b, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>>
    {
        let mut chart = ChartBuilder::on(plot)
            .caption(&self.title, (FONT, 17))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(76)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_err)?;
        let log_x = self.log_x;
        let step_label = |x: &f64| {
            let step = if log_x { 10f64.powf(*x) - 1.0 } else { *x };
            format!("{:.0}", step)
        };
        let y_label = |y: &f64| format!("{y:.*}", y_digits.unwrap_or(0));
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(WHITE.mix(0.0))
            .x_desc(if log_x {
                "training step (log scale)"
            } else {
                "training step"
            })
            .y_desc(&self.y_desc)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .x_label_formatter(&step_label);
        if y_digits.is_some() {
            mesh.y_label_formatter(&y_label);
        }
        mesh.draw().map_err(draw_err)?;
        Ok(chart)
    }

    pub fn draw(&self, path: &Path, series: &[Series]) -> Result<()> {
        let (root, plot, legend) = Self::canvas(path)?;
        let finite = |v: f64| v.is_finite().then_some(v);
        let xs = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| self.x(p.0)));
        let ys = series.iter().flat_map(|s| {
            s.points
                .iter()
                .flat_map(|p| [p.1.value, p.1.lo, p.1.hi].into_iter().filter_map(finite))
        });
        let (x0, x1) = bounds(xs, None);
        let mut chart = self.axes(&plot, (x0, x1), bounds(ys, self.reference), Some(4))?;
        if let Some(r) = self.reference {
            chart
                .draw_series(LineSeries::new(
                    [(x0, r), (x1, r)],
                    ShapeStyle::from(&BLACK.mix(0.5)).stroke_width(1),
                ))
                .map_err(draw_err)?;
        }
        for s in series {
            let (color, _) = self.styles.of(&s.set);
            let band: Vec<(f64, f64, f64)> = s
                .points
                .iter()
                .filter(|p| p.1.lo.is_finite() && p.1.hi.is_finite())
                .map(|p| (self.x(p.0), p.1.lo, p.1.hi))
                .collect();
            if band.len() >= 2 {
                let outline: Vec<(f64, f64)> = band
                    .iter()
                    .map(|b| (b.0, b.1))
                    .chain(band.iter().rev().map(|b| (b.0, b.2)))
                    .collect();
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        outline,
                        color.mix(0.15).filled(),
                    )))
                    .map_err(draw_err)?;
            }
        }
        for s in series {
            let (color, _) = self.styles.of(&s.set);
            let line = s
                .points
                .iter()
                .filter(|p| p.1.value.is_finite())
                .map(|p| (self.x(p.0), p.1.value));
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))
                .map_err(draw_err)?;
            let dots = s
                .points
                .iter()
                .filter(|p| p.2 && p.1.value.is_finite())
                .map(|p| Circle::new((self.x(p.0), p.1.value), 4, color.filled()));
            chart.draw_series(dots).map_err(draw_err)?;
        }
        let labels: Vec<(RGBColor, String)> =
            series.iter().map(|s| self.styles.of(&s.set)).collect();
        draw_legend(&legend, &self.note, &labels)?;
        root.present().map_err(draw_err)?;
        Ok(())
    }
}

/// The note's lines, then one line per label, down the legend column.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    note: &[String],
    labels: &[(RGBColor, String)],
) -> Result<()> {
    for (i, line) in note.iter().enumerate() {
        area.draw(&Text::new(
            line.clone(),
            (4, 16 + 16 * i as i32),
            (FONT, 12),
        ))
        .map_err(draw_err)?;
    }
    let top = 34 + 16 * note.len() as i32;
    for (i, (color, label)) in labels.iter().enumerate() {
        let y = top + 22 * i as i32;
        area.draw(&PathElement::new(
            vec![(4, y), (30, y)],
            color.stroke_width(3),
        ))
        .map_err(draw_err)?;
        area.draw(&Text::new(label.clone(), (36, y - 8), (FONT, 14)))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// A padded range around the values (and `include`); (0, 1) when there are none.
fn bounds(values: impl Iterator<Item = f64>, include: Option<f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.chain(include) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1e-3) * 0.05
    };
    (lo - pad, hi + pad)
}

/// The final gap at every site (rows, by layer) for every shifted set (columns), on a diverging
/// scale centred at 0. A cell whose test is significant at the adjusted level is marked `*`.
pub fn draw_layers(
    path: &Path,
    title: &str,
    rows: &[String],
    columns: &[String],
    gaps: &BTreeMap<(usize, usize), (Estimate, bool)>,
) -> Result<()> {
    register_font();
    let height = (140 + 34 * rows.len() as u32).max(320);
    let width = (260 + 96 * columns.len() as u32).max(600);
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let scale = gaps
        .values()
        .map(|(e, _)| e.value.abs())
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
        .max(1e-12);
    let (columns_n, rows_n) = (columns.len() as f64, rows.len() as f64);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(170)
        .build_cartesian_2d(0.0..columns_n, 0.0..rows_n)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(0)
        .draw()
        .map_err(draw_err)?;
    let centred = |size: u32, h: HPos| {
        (FONT, size)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(h, VPos::Center))
    };
    for (&(row, column), (e, significant)) in gaps {
        // Red where the shifted set reads higher than id, blue where lower, white at 0.
        let t = (e.value / scale).clamp(-1.0, 1.0);
        let toward = |c: u8| (255.0 - (255.0 - c as f64) * t.abs()).round() as u8;
        let color = if t >= 0.0 {
            RGBColor(toward(214), toward(39), toward(40))
        } else {
            RGBColor(toward(31), toward(119), toward(180))
        };
        let (x, y) = (column as f64, row as f64);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x, y), (x + 1.0, y + 1.0)],
                color.filled(),
            )))
            .map_err(draw_err)?;
        let mark = if *significant { "*" } else { "" };
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{:+.4}{mark}", e.value),
                (x + 0.5, y + 0.5),
                centred(12, HPos::Center),
            )))
            .map_err(draw_err)?;
    }
    // Row and column names beside the axes, in pixels (outside the plotting area).
    for (i, name) in rows.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(0.0, i as f64 + 0.5));
        root.draw(&Text::new(
            name.clone(),
            (px - 8, py),
            centred(13, HPos::Right),
        ))
        .map_err(draw_err)?;
    }
    for (i, name) in columns.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        root.draw(&Text::new(
            name.clone(),
            (px, py + 14),
            centred(13, HPos::Center),
        ))
        .map_err(draw_err)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

/// The train loss of each run (thin) and, where every run logged the step, their mean (thick).
pub fn draw_loss(path: &Path, title: &str, runs: &[&Unit], log_x: bool) -> Result<()> {
    let styles = Styles {
        styles: BTreeMap::new(),
    };
    let chart = LineChart {
        title: title.to_string(),
        y_desc: "train loss (next-token cross-entropy)".into(),
        log_x,
        reference: None,
        note: Vec::new(),
        styles: &styles,
    };
    let (root, plot, legend) = LineChart::canvas(path)?;
    let points = runs.iter().flat_map(|u| u.tables.train.iter());
    let x = bounds(points.clone().map(|p| chart.x(p.step)), None);
    let y = bounds(points.map(|p| p.loss).filter(|v| v.is_finite()), None);
    let mut c = chart.axes(&plot, x, y, None)?;
    let mut labels = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let (r, g, b) = PALETTE[i % PALETTE.len()];
        let color = RGBColor(r, g, b);
        c.draw_series(LineSeries::new(
            run.tables.train.iter().map(|p| (chart.x(p.step), p.loss)),
            color.mix(0.45).stroke_width(1),
        ))
        .map_err(draw_err)?;
        labels.push((color, format!("seed {}", run.seed)));
    }
    if runs.len() > 1 {
        let mut by_step: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for run in runs {
            for p in &run.tables.train {
                by_step.entry(p.step).or_default().push(p.loss);
            }
        }
        let mean = by_step
            .into_iter()
            .filter(|(_, v)| v.len() == runs.len())
            .map(|(step, v)| (chart.x(step), stats::mean(&v)));
        c.draw_series(LineSeries::new(mean, BLACK.stroke_width(2)))
            .map_err(draw_err)?;
        labels.push((BLACK, "mean".into()));
    }
    draw_legend(&legend, &[], &labels)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

//! Figures 8 and 9: 1D interpolations and 2D filter-normalised loss surfaces.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::style::{
    self, AXIS_SIZE, LINE_WIDTH, LegendEntry, PANEL_SIZE, PlotResult, TICK_SIZE, text,
};
use super::{Band, Figure, RunGroup, mean_band, save};
use crate::analysis::{Landscape1d, Landscape2d};

/// Loss panels use a log axis when the largest loss is at least this multiple of the
/// smallest.
const LOG_AXIS_MIN_RATIO: f64 = 4.0;

/// One line of a 1D panel: legend entry, and the (α, mean, min, max) band over seeds.
struct Line {
    entry: LegendEntry,
    points: Vec<Band>,
}

/// Figure 8: 1D linear interpolations from each run's `landscape_1d` analysis, 2 × 2 panels.
/// Left: init → solution (α = 0 the initialisation, α = 1 the solution) for each optimiser.
/// Right: from the solution of the first group (α = 0) to the solution of each other
/// optimiser with the same seed (α = 1). Top: loss (log axis), training samples solid and
/// test samples dashed; bottom: accuracy. Lines are means over seeds with min–max bands.
///
/// # Errors
/// No run with a `landscape_1d` analysis; drawing and file errors.
pub fn landscape_1d_figure(groups: &[RunGroup], title: &str, stem: &Path) -> Result<Vec<PathBuf>> {
    let with: Vec<&RunGroup> = groups
        .iter()
        .filter(|g| g.runs.iter().any(|r| r.analysis.landscape_1d.is_some()))
        .collect();
    let Some(reference) = with.first() else {
        bail!("figure 8 ({title}): no run has a 1D landscape (run `esso analyze --landscape 1d`)");
    };
    type Pick = fn(&crate::analysis::InterpolationPath) -> &Vec<f64>;
    let picks: [(Pick, bool); 4] = [
        (|p| &p.train_loss, false),
        (|p| &p.test_loss, true),
        (|p| &p.train_accuracy, false),
        (|p| &p.test_accuracy, true),
    ];
    // Init → solution, per group.
    let mut init_loss = Vec::new();
    let mut init_acc = Vec::new();
    for g in &with {
        for (idx, (pick, dashed)) in picks.iter().enumerate() {
            let per_seed: Vec<Vec<(f64, f64)>> = g
                .runs
                .iter()
                .filter_map(|r| r.analysis.landscape_1d.as_ref())
                .filter_map(|l| path_series(l, |p| p.name == "init", *pick))
                .collect();
            let line = Line {
                entry: LegendEntry { label: g.legend(), color: g.color, dashed: *dashed },
                points: mean_band(&per_seed),
            };
            if idx < 2 { init_loss.push(line) } else { init_acc.push(line) }
        }
    }
    // Reference solution → other solutions: paths of the reference group's runs, grouped
    // by the group of their end point.
    let mut cross_loss = Vec::new();
    let mut cross_acc = Vec::new();
    for g in groups.iter().filter(|g| g.label != reference.label) {
        let names: Vec<&str> = g.runs.iter().map(|r| r.record.name.as_str()).collect();
        for (idx, (pick, dashed)) in picks.iter().enumerate() {
            let per_seed: Vec<Vec<(f64, f64)>> = reference
                .runs
                .iter()
                .filter_map(|r| r.analysis.landscape_1d.as_ref())
                .filter_map(|l| path_series(l, |p| names.contains(&p.to.as_str()), *pick))
                .collect();
            if per_seed.is_empty() {
                continue;
            }
            let line = Line {
                entry: LegendEntry { label: g.legend(), color: g.color, dashed: *dashed },
                points: mean_band(&per_seed),
            };
            if idx < 2 { cross_loss.push(line) } else { cross_acc.push(line) }
        }
    }
    let mut entries: Vec<LegendEntry> = groups
        .iter()
        .map(|g| LegendEntry { label: g.legend(), color: g.color, dashed: false })
        .collect();
    entries.push(LegendEntry { label: "training samples".into(), color: BLACK, dashed: false });
    entries.push(LegendEntry { label: "test samples".into(), color: BLACK, dashed: true });
    let from = reference.display.clone();
    save(
        &Interpolations {
            title: title.to_string(),
            entries,
            panels: [
                ("Initialisation (α=0) → solution (α=1)".to_string(), init_loss, true),
                (format!("{from} (α=0) → other solutions (α=1)"), cross_loss, true),
                ("Accuracy, initialisation → solution".to_string(), init_acc, false),
                (format!("Accuracy, {from} → other solutions"), cross_acc, false),
            ],
        },
        stem,
    )
}

/// The (α, value) series of the first path matching `which`.
fn path_series(
    l: &Landscape1d,
    which: impl Fn(&crate::analysis::InterpolationPath) -> bool,
    pick: fn(&crate::analysis::InterpolationPath) -> &Vec<f64>,
) -> Option<Vec<(f64, f64)>> {
    let p = l.paths.iter().find(|p| which(p))?;
    Some(l.alpha.iter().copied().zip(pick(p).iter().copied()).collect())
}

struct Interpolations {
    title: String,
    entries: Vec<LegendEntry>,
    /// (caption, lines, is a loss panel) for the 2 × 2 grid.
    panels: [(String, Vec<Line>, bool); 4],
}

impl Figure for Interpolations {
    fn size(&self) -> (u32, u32) {
        (1700, 1300)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (areas, legend) =
            style::title_panels_legend(root, self.size(), &self.title, &self.entries, (2, 2))?;
        for (area, (caption, lines, is_loss)) in areas.iter().zip(&self.panels) {
            draw_1d_panel(area, caption, lines, *is_loss)?;
        }
        style::draw_legend(&legend, &self.entries)
    }
}

fn draw_1d_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    lines: &[Line],
    is_loss: bool,
) -> Result<()> {
    let all: Vec<&Band> = lines.iter().flat_map(|l| &l.points).collect();
    let (x_lo, x_hi) = style::finite_range(all.iter().map(|p| p.0)).unwrap_or((0.0, 1.0));
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, text(PANEL_SIZE))
        .margin(12)
        .margin_right(28)
        .x_label_area_size(58)
        .y_label_area_size(92);
    let x_range = style::padded(x_lo, x_hi);
    let positive = all.iter().flat_map(|p| [p.1, p.2, p.3]).filter(|v| *v > 0.0);
    let (y_lo, y_hi) = style::finite_range(positive).unwrap_or((0.01, 1.0));
    // A loss range of less than a factor LOG_AXIS_MIN_RATIO reads better on a linear axis.
    if is_loss && y_hi / y_lo >= LOG_AXIS_MIN_RATIO {
        let y_range = style::log_padded(y_lo, y_hi);
        let floor = y_range.start;
        let mut chart = builder.build_cartesian_2d(x_range, style::log_axis(y_range)).plot()?;
        style::mesh(&mut chart, "interpolation coefficient α", "mean loss (log)")
            .y_label_formatter(&|v| style::log_axis_label(*v))
            .draw()
            .plot()?;
        for line in lines {
            draw_line(&mut chart, line, |v| v.max(floor).log10())?;
        }
    } else {
        let (y_lo, y_hi) =
            style::finite_range(all.iter().flat_map(|p| [p.2, p.3])).unwrap_or((0.0, 1.0));
        let y_hi = if is_loss { y_hi } else { y_hi.min(1.0) };
        let mut chart = builder.build_cartesian_2d(x_range, style::padded(y_lo, y_hi)).plot()?;
        style::mesh(
            &mut chart,
            "interpolation coefficient α",
            if is_loss { "mean loss" } else { "accuracy" },
        )
        .draw()
        .plot()?;
        for line in lines {
            draw_line(&mut chart, line, |v| v)?;
        }
    }
    Ok(())
}

fn draw_line<DB: DrawingBackend, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    line: &Line,
    map: impl Fn(f64) -> f64,
) -> Result<()>
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    let points = &line.points;
    if points.is_empty() {
        return Ok(());
    }
    let color = line.entry.color;
    if points.iter().any(|p| p.3 > p.2) {
        let mut poly: Vec<(f64, f64)> = points.iter().map(|p| (p.0, map(p.3))).collect();
        poly.extend(points.iter().rev().map(|p| (p.0, map(p.2))));
        chart.draw_series(std::iter::once(Polygon::new(poly, color.mix(0.15).filled()))).plot()?;
    }
    let path: Vec<(f64, f64)> = points.iter().map(|p| (p.0, map(p.1))).collect();
    let stroke = color.stroke_width(LINE_WIDTH);
    if line.entry.dashed {
        chart.draw_series(DashedLineSeries::new(path, 10, 7, stroke)).plot()?;
    } else {
        chart.draw_series(LineSeries::new(path, stroke)).plot()?;
    }
    Ok(())
}

/// Figure 9: one panel per optimiser, the training loss on the plane θ* + x d₁ + y d₂ around
/// its solution (first seed with a `landscape_2d` analysis), as a heat map of log10(loss)
/// on one colour scale shared by all panels, with iso-loss contours at the same levels in
/// every panel and the solution marked by a cross.
///
/// # Errors
/// No run with a `landscape_2d` analysis; drawing and file errors.
pub fn landscape_2d_figure(groups: &[RunGroup], title: &str, stem: &Path) -> Result<Vec<PathBuf>> {
    let surfaces: Vec<(String, Landscape2d)> = groups
        .iter()
        .filter_map(|g| {
            let run = g.runs.iter().find(|r| r.analysis.landscape_2d.is_some())?;
            let surface = run.analysis.landscape_2d.clone()?;
            Some((format!("{} (seed {})", g.display, run.config.seed), surface))
        })
        .collect();
    if surfaces.is_empty() {
        bail!("figure 9 ({title}): no run has a 2D landscape (run `esso analyze --landscape 2d`)");
    }
    let logs = surfaces.iter().flat_map(|(_, s)| s.train_loss.iter().copied());
    let Some((lo, hi)) = style::finite_range(logs.filter(|v| *v > 0.0).map(f64::log10)) else {
        bail!("figure 9 ({title}): no positive finite loss on any surface");
    };
    save(&Surfaces { title: title.to_string(), surfaces, log_range: (lo, hi.max(lo + 1e-3)) }, stem)
}

struct Surfaces {
    title: String,
    surfaces: Vec<(String, Landscape2d)>,
    /// Shared colour scale, log10(loss).
    log_range: (f64, f64),
}

/// Number of contour levels (evenly spaced in log10(loss)).
const N_CONTOURS: usize = 12;

impl Surfaces {
    fn grid(&self) -> (usize, usize) {
        let n = self.surfaces.len().max(1);
        let cols = n.min(3);
        (n.div_ceil(cols), cols)
    }
}

impl Figure for Surfaces {
    fn size(&self) -> (u32, u32) {
        let (rows, cols) = self.grid();
        (560 * cols as u32 + 60, 560 * rows as u32 + 200)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).plot()?;
        let (w, h) = self.size();
        let (title_area, rest) = root.split_vertically(64);
        style::draw_title(&title_area, &self.title)?;
        let (body, bar) = rest.split_vertically(h - 64 - 110);
        let (lo, hi) = self.log_range;
        let levels: Vec<f64> =
            (1..=N_CONTOURS).map(|k| lo + (hi - lo) * k as f64 / (N_CONTOURS + 1) as f64).collect();
        for (area, (caption, s)) in body.split_evenly(self.grid()).iter().zip(&self.surfaces) {
            self.draw_surface(area, caption, s, &levels)?;
        }
        draw_colorbar(
            &bar,
            w,
            self.log_range,
            "training loss (log scale; lines: iso-loss contours)",
        )
    }
}

impl Surfaces {
    fn draw_surface<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        caption: &str,
        s: &Landscape2d,
        levels: &[f64],
    ) -> Result<()> {
        let (nx, ny) = s.train_loss.dim();
        if nx < 2 || ny < 2 || s.x.len() != nx || s.y.len() != ny {
            bail!("a 2D landscape needs at least 2 × 2 points and matching axes");
        }
        let (x_lo, x_hi) = (s.x[0], s.x[nx - 1]);
        let (y_lo, y_hi) = (s.y[0], s.y[ny - 1]);
        let mut chart = ChartBuilder::on(area)
            .caption(caption, text(PANEL_SIZE - 2))
            .margin(10)
            .margin_right(20)
            .x_label_area_size(52)
            .y_label_area_size(70)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
            .plot()?;
        chart
            .configure_mesh()
            .x_desc("coefficient of direction d₁")
            .y_desc("coefficient of direction d₂")
            .axis_desc_style(text(AXIS_SIZE))
            .label_style(text(TICK_SIZE))
            .disable_mesh()
            .draw()
            .plot()?;
        let (lo, hi) = self.log_range;
        let log = s.train_loss.mapv(|v| if v > 0.0 { v.log10() } else { f64::NAN });
        // Cells centred on the grid points, clipped to the axes.
        let edge = |v: &[f64], i: usize| -> (f64, f64) {
            let left = if i == 0 { v[0] } else { 0.5 * (v[i - 1] + v[i]) };
            let right = if i + 1 == v.len() { v[i] } else { 0.5 * (v[i] + v[i + 1]) };
            (left, right)
        };
        let mut cells = Vec::with_capacity(nx * ny);
        for i in 0..nx {
            let (x0, x1) = edge(&s.x, i);
            for j in 0..ny {
                let (y0, y1) = edge(&s.y, j);
                let t = (log[[i, j]] - lo) / (hi - lo);
                let color = if t.is_finite() { style::viridis(t) } else { RGBColor(90, 90, 90) };
                cells.push(Rectangle::new([(x0, y0), (x1, y1)], color.filled()));
            }
        }
        chart.draw_series(cells).plot()?;
        let segments = contour_segments(&s.x, &s.y, &log, levels);
        chart
            .draw_series(
                segments
                    .into_iter()
                    .map(|(a, b)| PathElement::new(vec![a, b], WHITE.mix(0.85).stroke_width(2))),
            )
            .plot()?;
        let origin_color = RGBColor(220, 30, 30);
        chart
            .draw_series(std::iter::once(Cross::new((0.0, 0.0), 9, origin_color.stroke_width(3))))
            .plot()?;
        Ok(())
    }
}

/// A horizontal colour bar of viridis over a log10 range, with tick labels in loss units.
fn draw_colorbar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    width: u32,
    (lo, hi): (f64, f64),
    label: &str,
) -> Result<()> {
    let (x0, x1) = (width as i32 / 5, width as i32 * 4 / 5);
    let (y0, y1) = (16, 40);
    let n = 200;
    for k in 0..n {
        let a = x0 + (x1 - x0) * k / n;
        let b = x0 + (x1 - x0) * (k + 1) / n;
        let color = style::viridis((k as f64 + 0.5) / n as f64);
        area.draw(&Rectangle::new([(a, y0), (b + 1, y1)], color.filled())).plot()?;
    }
    area.draw(&Rectangle::new([(x0, y0), (x1, y1)], BLACK.stroke_width(1))).plot()?;
    let keys = style::log_key_points(10f64.powf(lo), 10f64.powf(hi));
    let keys = if keys.len() >= 2 { keys } else { vec![lo, hi] };
    let tick_style = text(TICK_SIZE).pos(Pos::new(HPos::Center, VPos::Top));
    for v in keys {
        let x = x0 + ((v - lo) / (hi - lo) * (x1 - x0) as f64).round() as i32;
        area.draw(&PathElement::new(vec![(x, y1), (x, y1 + 6)], BLACK.stroke_width(1))).plot()?;
        area.draw(&Text::new(style::log_axis_label(v), (x, y1 + 8), tick_style.clone())).plot()?;
    }
    let label_style = text(AXIS_SIZE).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(label.to_string(), ((x0 + x1) / 2, y1 + 36), label_style)).plot()
}

/// Iso-lines of `values` (`[[i, j]]` at (x[i], y[j])) at each level, as straight segments
/// (marching squares with linear interpolation along cell edges; saddle cells are split
/// by the cell's mean value). NaN corners skip their cell.
pub(crate) fn contour_segments(
    x: &[f64],
    y: &[f64],
    values: &ndarray::Array2<f64>,
    levels: &[f64],
) -> Vec<((f64, f64), (f64, f64))> {
    let (nx, ny) = values.dim();
    let mut out = Vec::new();
    for &level in levels {
        for i in 0..nx.saturating_sub(1) {
            for j in 0..ny.saturating_sub(1) {
                // Corners counter-clockwise: (i, j), (i+1, j), (i+1, j+1), (i, j+1).
                let corners = [
                    (x[i], y[j], values[[i, j]]),
                    (x[i + 1], y[j], values[[i + 1, j]]),
                    (x[i + 1], y[j + 1], values[[i + 1, j + 1]]),
                    (x[i], y[j + 1], values[[i, j + 1]]),
                ];
                if corners.iter().any(|c| !c.2.is_finite()) {
                    continue;
                }
                let mut crossings = Vec::with_capacity(4);
                for e in 0..4 {
                    let (a, b) = (corners[e], corners[(e + 1) % 4]);
                    if (a.2 < level) != (b.2 < level) {
                        let t = (level - a.2) / (b.2 - a.2);
                        crossings.push((a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1)));
                    }
                }
                match crossings.len() {
                    2 => out.push((crossings[0], crossings[1])),
                    4 => {
                        let mean = corners.iter().map(|c| c.2).sum::<f64>() / 4.0;
                        // Edges 0..3 start at corners 0..3; pair the crossings so that the
                        // corners on the mean's side stay connected.
                        if (mean < level) == (corners[0].2 < level) {
                            out.push((crossings[0], crossings[3]));
                            out.push((crossings[1], crossings[2]));
                        } else {
                            out.push((crossings[0], crossings[1]));
                            out.push((crossings[2], crossings[3]));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contours_of_a_paraboloid_are_circles() {
        let g: Vec<f64> = (0..41).map(|k| -1.0 + k as f64 / 20.0).collect();
        let values = ndarray::Array2::from_shape_fn((41, 41), |(i, j)| g[i] * g[i] + g[j] * g[j]);
        let segments = contour_segments(&g, &g, &values, &[0.25]);
        assert!(segments.len() > 20);
        for (a, b) in segments {
            for (px, py) in [a, b] {
                let r = (px * px + py * py).sqrt();
                // Linear interpolation of r² across a 0.05 cell: within a cell's curvature.
                assert!((r - 0.5).abs() < 5e-3, "point ({px}, {py}) at radius {r}");
            }
        }
    }
}

//! Figure 4: final test accuracy of ESSO over a λ × η grid.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use esso_optim::OptimizerConfig;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::style::{self, AXIS_SIZE, PANEL_SIZE, PlotResult, TICK_SIZE, text};
use super::{Figure, Run, save};

/// One cell of the grid.
#[derive(Debug, Clone)]
struct Cell {
    /// Mean final test accuracy over the seeds that did not diverge.
    accuracy: Option<f64>,
    n_runs: usize,
    n_diverged: usize,
    /// Earliest divergence step.
    diverged_step: Option<u64>,
    /// The mean accuracy is at most [`CHANCE_FACTOR`] × chance: the run collapsed.
    collapsed: bool,
}

/// A cell whose accuracy is below this multiple of 1/classes is marked as collapsed.
const CHANCE_FACTOR: f64 = 1.5;

/// Figure 4: a heat map of the final test accuracy of ESSO runs over their (λ, η) values
/// (rows λ, columns η, both ascending), the mean over seeds written in each cell. Cells in
/// which a seed diverged are dark grey and say at which step. Non-ESSO runs are ignored.
///
/// # Errors
/// No ESSO run; drawing and file errors.
pub fn sensitivity_heatmap(runs: &[Run], title: &str, stem: &Path) -> Result<Vec<PathBuf>> {
    let points: Vec<(f64, f64, &Run)> = runs
        .iter()
        .filter_map(|r| match &r.config.optimizer {
            OptimizerConfig::Esso(c) => Some((c.lambda, c.lr, r)),
            _ => None,
        })
        .collect();
    if points.is_empty() {
        bail!("figure 4 ({title}): no ESSO runs");
    }
    let axis = |pick: fn(&(f64, f64, &Run)) -> f64| {
        let mut v: Vec<f64> = points.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    };
    let lambdas = axis(|p| p.0);
    let lrs = axis(|p| p.1);
    let mut cells = Vec::new();
    for &lambda in &lambdas {
        for &lr in &lrs {
            let here: Vec<&Run> =
                points.iter().filter(|p| p.0 == lambda && p.1 == lr).map(|p| p.2).collect();
            let finals: Vec<f64> = here
                .iter()
                .filter(|r| !r.diverged())
                .filter_map(|r| r.record.epochs.last("test_accuracy"))
                .filter(|a| a.is_finite())
                .collect();
            let diverged_step = here
                .iter()
                .filter_map(|r| match &r.record.status {
                    crate::results::RunStatus::Diverged { step, .. } => Some(*step),
                    _ => None,
                })
                .min();
            let accuracy =
                (!finals.is_empty()).then(|| finals.iter().sum::<f64>() / finals.len() as f64);
            let n_classes =
                here.first().and_then(|r| r.config.model.sizes.last().copied()).unwrap_or(2).max(2)
                    as f64;
            cells.push(Cell {
                accuracy,
                collapsed: accuracy.is_some_and(|a| a <= CHANCE_FACTOR / n_classes),
                n_runs: here.len(),
                n_diverged: here.iter().filter(|r| r.diverged()).count(),
                diverged_step,
            });
        }
    }
    save(&Heatmap { title: title.to_string(), lambdas, lrs, cells }, stem)
}

struct Heatmap {
    title: String,
    lambdas: Vec<f64>,
    lrs: Vec<f64>,
    /// Row-major: λ index × η index.
    cells: Vec<Cell>,
}

impl Figure for Heatmap {
    fn size(&self) -> (u32, u32) {
        let w = (150 * self.lrs.len() as u32 + 420).max(1100);
        let h = (105 * self.lambdas.len() as u32 + 300).max(760);
        (w, h)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).plot()?;
        let (title, rest) = root.split_vertically(64);
        style::draw_title(&title, &self.title)?;
        let (w, _) = rest.dim_in_pixel();
        let (main, bar) = rest.split_horizontally(w - 190);
        let accs = self.cells.iter().filter_map(|c| c.accuracy);
        let (lo, hi) = style::finite_range(accs).unwrap_or((0.0, 1.0));
        let (lo, hi) = if hi - lo < 0.02 { (lo - 0.01, hi + 0.01) } else { (lo, hi) };
        let (n_x, n_y) = (self.lrs.len(), self.lambdas.len());
        let x_keys: Vec<f64> = (0..n_x).map(|i| i as f64 + 0.5).collect();
        let y_keys: Vec<f64> = (0..n_y).map(|i| i as f64 + 0.5).collect();
        let lrs = self.lrs.clone();
        let lambdas = self.lambdas.clone();
        let x_fmt = move |v: &f64| {
            lrs.get(v.floor().max(0.0) as usize)
                .map(|&x| style::short_number(x))
                .unwrap_or_default()
        };
        let y_fmt = move |v: &f64| {
            lambdas
                .get(v.floor().max(0.0) as usize)
                .map(|&x| style::short_number(x))
                .unwrap_or_default()
        };
        let mut chart = ChartBuilder::on(&main)
            .caption("mean final test accuracy over seeds", text(PANEL_SIZE))
            .margin(16)
            .x_label_area_size(64)
            .y_label_area_size(92)
            .build_cartesian_2d(
                style::KeyedAxis::new(0.0..n_x as f64, x_keys),
                style::KeyedAxis::new(0.0..n_y as f64, y_keys),
            )
            .plot()?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("learning rate η")
            .y_desc("regularisation λ")
            .axis_desc_style(text(AXIS_SIZE))
            .label_style(text(TICK_SIZE + 2))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .draw()
            .plot()?;
        for (idx, cell) in self.cells.iter().enumerate() {
            let (row, col) = (idx / n_x, idx % n_x);
            let (x0, y0) = (col as f64, row as f64);
            let (fill, label) = match (cell.accuracy, cell.n_diverged) {
                (Some(a), 0) if cell.collapsed => {
                    (style::viridis((a - lo) / (hi - lo)), format!("{a:.3}\nchance level"))
                }
                (Some(a), 0) => (style::viridis((a - lo) / (hi - lo)), format!("{a:.3}")),
                (Some(a), k) => (
                    style::viridis((a - lo) / (hi - lo)),
                    format!("{a:.3}\n{k}/{} div.", cell.n_runs),
                ),
                (None, _) => (
                    RGBColor(70, 70, 70),
                    match cell.diverged_step {
                        Some(s) => format!("diverged\nat step {s}"),
                        None => "no data".to_string(),
                    },
                ),
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0 + 0.02, y0 + 0.02), (x0 + 0.98, y0 + 0.98)],
                    fill.filled(),
                )))
                .plot()?;
            let luminance = 0.299 * fill.0 as f64 + 0.587 * fill.1 as f64 + 0.114 * fill.2 as f64;
            let color = if luminance > 140.0 { BLACK } else { WHITE };
            let lines: Vec<&str> = label.lines().collect();
            let size = if lines.len() > 1 { TICK_SIZE } else { TICK_SIZE + 4 };
            for (k, line) in lines.iter().enumerate() {
                let dy = (k as f64 - (lines.len() as f64 - 1.0) / 2.0) * 0.22;
                let style = text(size).color(&color).pos(Pos::new(HPos::Center, VPos::Center));
                chart
                    .draw_series(std::iter::once(Text::new(
                        line.to_string(),
                        (x0 + 0.5, y0 + 0.5 - dy),
                        style,
                    )))
                    .plot()?;
            }
            if cell.accuracy.is_none() {
                chart
                    .draw_series([
                        PathElement::new(
                            vec![(x0 + 0.06, y0 + 0.06), (x0 + 0.94, y0 + 0.94)],
                            RGBColor(120, 120, 120).stroke_width(2),
                        ),
                        PathElement::new(
                            vec![(x0 + 0.06, y0 + 0.94), (x0 + 0.94, y0 + 0.06)],
                            RGBColor(120, 120, 120).stroke_width(2),
                        ),
                    ])
                    .plot()?;
            }
        }
        // Colour bar.
        let mut bar_chart = ChartBuilder::on(&bar)
            .margin_top(60)
            .margin_bottom(80)
            .margin_right(10)
            .y_label_area_size(100)
            .build_cartesian_2d(0.0..1.0, lo..hi)
            .plot()?;
        bar_chart
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_desc("test accuracy")
            .axis_desc_style(text(AXIS_SIZE))
            .label_style(text(TICK_SIZE))
            .y_label_formatter(&|v| format!("{v:.2}"))
            .draw()
            .plot()?;
        let n = 100;
        bar_chart
            .draw_series((0..n).map(|i| {
                let a = lo + (hi - lo) * i as f64 / n as f64;
                let b = lo + (hi - lo) * (i + 1) as f64 / n as f64;
                Rectangle::new([(0.0, a), (1.0, b)], style::viridis(i as f64 / n as f64).filled())
            }))
            .plot()?;
        Ok(())
    }
}

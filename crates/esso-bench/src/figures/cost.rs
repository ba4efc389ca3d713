//! Figure 6: wall-clock time per step against the parameter count.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{
    self, LINE_WIDTH, LegendEntry, PALETTE, PANEL_SIZE, PlotResult, TICK_SIZE, text,
};
use super::{Figure, save};
use crate::cost::{CostMethod, CostRow};

/// Figure 6: median seconds per batch-1 step against the number of parameters N, log-log,
/// one line per method (SGD, Adam, ESSO per layer, ESSO whole network, dense Hessian).
///
/// # Errors
/// No rows; drawing and file errors.
pub fn cost_figure(rows: &[CostRow], stem: &Path) -> Result<Vec<PathBuf>> {
    if rows.is_empty() {
        bail!("figure 6: no cost rows");
    }
    let colors = [PALETTE[0], PALETTE[4], RGBColor(214, 39, 40), PALETTE[3], BLACK];
    let lines: Vec<(LegendEntry, Vec<(f64, f64)>)> = CostMethod::ALL
        .iter()
        .zip(colors)
        .map(|(&m, color)| {
            let mut points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.method == m)
                .map(|r| (r.n_params as f64, r.seconds_per_step))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (LegendEntry { label: m.label().to_string(), color, dashed: false }, points)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let first = &rows[0].sizes;
    let shape = format!(
        "{}-w-w-{} tanh nets",
        first.first().copied().unwrap_or(0),
        first.last().copied().unwrap_or(0)
    );
    save(
        &Cost {
            title: format!("Cost per batch-1 step vs parameter count ({shape}, median wall-clock)"),
            lines,
        },
        stem,
    )
}

struct Cost {
    title: String,
    lines: Vec<(LegendEntry, Vec<(f64, f64)>)>,
}

impl Figure for Cost {
    fn size(&self) -> (u32, u32) {
        (1400, 1000)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).plot()?;
        let (title, body) = root.split_vertically(64);
        style::draw_title(&title, &self.title)?;
        let points = self.lines.iter().flat_map(|(_, p)| p);
        let (x_lo, x_hi) = style::finite_range(points.clone().map(|p| p.0)).unwrap_or((1.0, 10.0));
        let (y_lo, y_hi) = style::finite_range(points.map(|p| p.1)).unwrap_or((1e-6, 1.0));
        let mut chart = ChartBuilder::on(&body)
            .caption("each line: one method over the width sweep", text(PANEL_SIZE))
            .margin(16)
            .margin_right(40)
            .x_label_area_size(64)
            .y_label_area_size(100)
            .build_cartesian_2d(
                style::log_axis(style::log_padded(x_lo, x_hi)),
                style::log_axis(style::log_padded(y_lo, y_hi)),
            )
            .plot()?;
        style::mesh(&mut chart, "number of parameters N", "time per step (s)")
            .x_label_formatter(&|v| style::log_axis_label(*v))
            .y_label_formatter(&|v| style::log_axis_label(*v))
            .draw()
            .plot()?;
        for (entry, points) in &self.lines {
            let color = entry.color;
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|p| (p.0.log10(), p.1.log10())),
                    color.stroke_width(LINE_WIDTH),
                ))
                .plot()?
                .label(entry.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 30, y)], color.stroke_width(LINE_WIDTH))
                });
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|p| Circle::new((p.0.log10(), p.1.log10()), 5, color.filled())),
                )
                .plot()?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .legend_area_size(44)
            .label_font(text(TICK_SIZE + 2))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .margin(12)
            .draw()
            .plot()?;
        Ok(())
    }
}

//! Figure 10: the SLQ spectral density of the mean Hessian with the exact eigenvalues.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{self, LINE_WIDTH, LegendEntry, PANEL_SIZE, PlotResult, text};
use super::{Figure, RunGroup, save};
use crate::analysis::SpectrumResult;

/// Bins of the histogram of the exact eigenvalues.
const N_BINS: usize = 60;
/// Smallest density drawn on the log axis (values below are drawn at this floor).
const DENSITY_FLOOR: f64 = 1e-6;

/// Figure 10: one panel per optimiser (first seed with a `spectrum` analysis): the SLQ
/// estimate of the spectral density of the mean Hessian over the analysis samples (line,
/// log axis), the histogram of its exact eigenvalues normalised the same way (grey steps;
/// when the analysis computed them) with a rug of the exact eigenvalues, and the Lanczos
/// top and bottom eigenvalues as triangles.
///
/// # Errors
/// No run with a `spectrum` analysis; drawing and file errors.
pub fn spectral_density(groups: &[RunGroup], title: &str, stem: &Path) -> Result<Vec<PathBuf>> {
    let panels: Vec<(String, SpectrumResult)> = groups
        .iter()
        .filter_map(|g| {
            let run = g.runs.iter().find(|r| r.analysis.spectrum.is_some())?;
            let s = run.analysis.spectrum.clone()?;
            Some((format!("{} (seed {})", g.display, run.config.seed), s))
        })
        .collect();
    if panels.is_empty() {
        bail!(
            "figure 10 ({title}): no run has a spectrum analysis (run `esso analyze --spectrum`)"
        );
    }
    save(&Density { title: title.to_string(), panels }, stem)
}

struct Density {
    title: String,
    panels: Vec<(String, SpectrumResult)>,
}

impl Density {
    fn grid(&self) -> (usize, usize) {
        let n = self.panels.len().max(1);
        let cols = n.min(2);
        (n.div_ceil(cols), cols)
    }
}

fn entries() -> Vec<LegendEntry> {
    vec![
        LegendEntry {
            label: "SLQ density (Gaussian-smoothed)".into(),
            color: BLACK,
            dashed: false,
        },
        LegendEntry {
            label: "exact eigenvalues: histogram and rug".into(),
            color: RGBColor(120, 120, 120),
            dashed: false,
        },
        LegendEntry {
            label: "Lanczos top / bottom eigenvalues (triangles)".into(),
            color: RGBColor(213, 94, 0),
            dashed: true,
        },
    ]
}

impl Figure for Density {
    fn size(&self) -> (u32, u32) {
        let (rows, cols) = self.grid();
        (800 * cols as u32 + 60, 620 * rows as u32 + 180)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let entries = entries();
        let (areas, legend) =
            style::title_panels_legend(root, self.size(), &self.title, &entries, self.grid())?;
        for (area, (caption, s)) in areas.iter().zip(&self.panels) {
            draw_panel(area, caption, s)?;
        }
        style::draw_legend(&legend, &entries)
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    s: &SpectrumResult,
) -> Result<()> {
    let exact = s.exact_eigenvalues.as_deref().unwrap_or(&[]);
    let grid_range = style::finite_range(s.density_grid.iter().copied());
    let eig_range = style::finite_range(
        exact.iter().chain(&s.top_eigenvalues).chain(&s.bottom_eigenvalues).copied(),
    );
    let (x_lo, x_hi) = match (grid_range, eig_range) {
        (Some(a), Some(b)) => (a.0.min(b.0), a.1.max(b.1)),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => (-1.0, 1.0),
    };
    let x_range = style::padded(x_lo, x_hi);
    // Histogram of the exact eigenvalues as a density of all N of them.
    let width = (x_range.end - x_range.start) / N_BINS as f64;
    let mut hist = vec![0.0; N_BINS];
    for &e in exact {
        let idx = ((e - x_range.start) / width).floor();
        if idx.is_finite() {
            hist[(idx.max(0.0) as usize).min(N_BINS - 1)] += 1.0;
        }
    }
    // The structural zeros (outside the range of the stacked factor) are exact zeros.
    if !exact.is_empty() {
        let idx = ((0.0 - x_range.start) / width).floor();
        if idx.is_finite() {
            hist[(idx.max(0.0) as usize).min(N_BINS - 1)] += s.exact_structural_zeros as f64;
        }
    }
    let n_total = (exact.len() + s.exact_structural_zeros).max(1) as f64;
    for h in &mut hist {
        *h /= n_total * width;
    }
    let y_hi = s
        .density
        .iter()
        .chain(&hist)
        .copied()
        .filter(|v| v.is_finite())
        .fold(DENSITY_FLOOR * 10.0, f64::max);
    let y_range = style::log_padded(DENSITY_FLOOR, y_hi);
    let floor = y_range.start;
    let mut label = caption.to_string();
    if !exact.is_empty() {
        label.push_str(&format!(": N = {}", exact.len() + s.exact_structural_zeros));
    }
    let mut chart = ChartBuilder::on(area)
        .caption(label, text(PANEL_SIZE - 2))
        .margin(12)
        .margin_right(28)
        .x_label_area_size(58)
        .y_label_area_size(92)
        .build_cartesian_2d(x_range.clone(), style::log_axis(y_range))
        .plot()?;
    style::mesh(&mut chart, "eigenvalue of the mean Hessian", "spectral density (log)")
        .y_label_formatter(&|v| style::log_axis_label(*v))
        .draw()
        .plot()?;
    let ly = |v: f64| v.max(floor).log10();
    let grey = RGBColor(120, 120, 120);
    if !exact.is_empty() {
        let mut steps = Vec::with_capacity(2 * N_BINS + 2);
        steps.push((x_range.start, ly(0.0)));
        for (i, &h) in hist.iter().enumerate() {
            let x0 = x_range.start + i as f64 * width;
            steps.push((x0, ly(h)));
            steps.push((x0 + width, ly(h)));
        }
        steps.push((x_range.end, ly(0.0)));
        chart.draw_series(LineSeries::new(steps, grey.stroke_width(2))).plot()?;
        let rug_top = floor.log10() + 0.06 * (y_hi.log10() - floor.log10());
        chart
            .draw_series(exact.iter().map(|&e| {
                PathElement::new(
                    vec![(e, floor.log10()), (e, rug_top)],
                    grey.mix(0.6).stroke_width(1),
                )
            }))
            .plot()?;
    }
    let density: Vec<(f64, f64)> = s
        .density_grid
        .iter()
        .zip(&s.density)
        .filter(|(x, d)| x.is_finite() && d.is_finite())
        .map(|(&x, &d)| (x, ly(d)))
        .collect();
    chart.draw_series(LineSeries::new(density, BLACK.stroke_width(LINE_WIDTH))).plot()?;
    let marker_y = floor.log10() + 0.12 * (y_hi.log10() - floor.log10());
    let orange = RGBColor(213, 94, 0);
    chart
        .draw_series(
            s.top_eigenvalues
                .iter()
                .chain(&s.bottom_eigenvalues)
                .filter(|e| e.is_finite())
                .map(|&e| TriangleMarker::new((e, marker_y), 8, orange.filled())),
        )
        .plot()?;
    Ok(())
}

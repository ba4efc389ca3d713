//! Figures 2 and 3: the exact per-layer eigenvalues tracked during training.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{self, LINE_WIDTH, LegendEntry, PANEL_SIZE, PlotResult, symlog, text};
use super::{Band, Figure, Run, RunGroup, mean_band, save};

/// A legend entry and its mean curve with band.
type BandLine = (LegendEntry, Vec<Band>);

/// Bins of the histograms of figure 2.
const N_BINS: usize = 48;

/// The pooled eigenvalues of layer `layer_idx` at `tag` (`init` or `final`) of one run.
fn eigenvalues<'a>(run: &'a Run, layer_idx: usize, tag: &str) -> Option<&'a [f64]> {
    let path = format!("curvature/layer{layer_idx}/eigenvalues_{tag}");
    run.record.arrays.iter().find(|m| m.path == path).and_then(|m| m.values.as_slice())
}

fn n_layers(groups: &[RunGroup]) -> usize {
    groups.first().and_then(|g| g.runs.first()).map_or(0, |r| r.config.model.sizes.len() - 1)
}

/// Figure 2 for one experiment: one panel per layer, the distribution of the exact
/// non-trivial block eigenvalues ‖ã‖² μ_i (pooled over the tracking samples and seeds) at
/// initialisation (black, dashed; the same for every optimiser) and at the end of training
/// (one line per group). The x axis is symlog, s = sign(e)·log10(1 + |e|); the y axis is the
/// fraction of eigenvalues per bin.
///
/// # Errors
/// No run holds tracked eigenvalues; drawing and file errors.
pub fn eigenvalue_histograms(
    groups: &[RunGroup],
    title: &str,
    stem: &Path,
) -> Result<Vec<PathBuf>> {
    let n_layers = n_layers(groups);
    let mut layers = Vec::new();
    for layer_idx in 0..n_layers {
        let init: Vec<f64> = groups
            .first()
            .map(|g| {
                g.runs
                    .iter()
                    .filter_map(|r| eigenvalues(r, layer_idx, "init"))
                    .flatten()
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        let mut lines = vec![(
            LegendEntry { label: "initialisation".into(), color: BLACK, dashed: true },
            init,
        )];
        for g in groups {
            let values: Vec<f64> = g
                .runs
                .iter()
                .filter_map(|r| eigenvalues(r, layer_idx, "final"))
                .flatten()
                .copied()
                .collect();
            let entry = LegendEntry {
                label: format!("end: {}", g.legend()),
                color: g.color,
                dashed: false,
            };
            lines.push((entry, values));
        }
        layers.push(lines);
    }
    if layers.iter().flatten().all(|(_, v)| v.is_empty()) {
        bail!("figure 2 ({title}): no run holds tracked eigenvalues ([tracking] n_samples = 0?)");
    }
    let sizes = groups[0].runs[0].config.model.sizes.clone();
    save(&Histograms { title: title.to_string(), layers, sizes }, stem)
}

struct Histograms {
    title: String,
    /// Per layer: (legend entry, raw eigenvalues) per line.
    layers: Vec<Vec<(LegendEntry, Vec<f64>)>>,
    sizes: Vec<usize>,
}

impl Figure for Histograms {
    fn size(&self) -> (u32, u32) {
        (600 * self.layers.len().max(1) as u32 + 100, 800)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let entries: Vec<LegendEntry> = self
            .layers
            .first()
            .map(|l| l.iter().map(|(e, _)| e.clone()).collect())
            .unwrap_or_default();
        let grid = (1, self.layers.len().max(1));
        let (panels, legend) =
            style::title_panels_legend(root, self.size(), &self.title, &entries, grid)?;
        for (layer_idx, (area, lines)) in panels.iter().zip(&self.layers).enumerate() {
            let all = lines.iter().flat_map(|(_, v)| v.iter().map(|&e| symlog(e)));
            let (lo, hi) = style::finite_range(all).unwrap_or((-1.0, 1.0));
            let (lo, hi) = ((lo - 0.05).min(-0.2), (hi + 0.05).max(0.2));
            let width = (hi - lo) / N_BINS as f64;
            let hists: Vec<Vec<f64>> = lines
                .iter()
                .map(|(_, values)| {
                    let mut counts = vec![0.0; N_BINS];
                    for &e in values {
                        let idx = ((symlog(e) - lo) / width).floor();
                        if idx.is_finite() {
                            counts[(idx.max(0.0) as usize).min(N_BINS - 1)] += 1.0;
                        }
                    }
                    let total = values.len().max(1) as f64;
                    counts.iter().map(|c| c / total).collect()
                })
                .collect();
            let y_hi = hists.iter().flatten().copied().fold(0.0, f64::max).max(1e-3) * 1.08;
            let caption = format!(
                "layer {} ({} → {} units)",
                layer_idx + 1,
                self.sizes.get(layer_idx).copied().unwrap_or(0),
                self.sizes.get(layer_idx + 1).copied().unwrap_or(0)
            );
            let keys = style::symlog_key_points(lo, hi);
            let mut chart = ChartBuilder::on(area)
                .caption(caption, text(PANEL_SIZE))
                .margin(12)
                .margin_right(24)
                .x_label_area_size(58)
                .y_label_area_size(82)
                .build_cartesian_2d(style::KeyedAxis::new(lo..hi, keys), 0.0..y_hi)
                .plot()?;
            style::mesh(
                &mut chart,
                "exact eigenvalue e (symlog axis)",
                "fraction of eigenvalues per bin",
            )
            .x_label_formatter(&|s| style::symlog_label(*s))
            .draw()
            .plot()?;
            for ((entry, _), hist) in lines.iter().zip(&hists) {
                let mut steps = Vec::with_capacity(2 * N_BINS + 2);
                steps.push((lo, 0.0));
                for (i, &h) in hist.iter().enumerate() {
                    let x0 = lo + i as f64 * width;
                    steps.push((x0, h));
                    steps.push((x0 + width, h));
                }
                steps.push((hi, 0.0));
                let stroke = entry.color.stroke_width(LINE_WIDTH);
                if entry.dashed {
                    chart.draw_series(DashedLineSeries::new(steps, 8, 6, stroke)).plot()?;
                } else {
                    chart.draw_series(LineSeries::new(steps, stroke)).plot()?;
                }
            }
        }
        style::draw_legend(&legend, &entries)
    }
}

/// Figure 3 for one experiment: one panel per layer, the fraction of negative exact
/// eigenvalues among the tracked ones against epochs (mean over seeds, min–max band).
/// Reads each run's `curvature` table.
///
/// # Errors
/// No tracking points; drawing and file errors.
pub fn negative_fraction(groups: &[RunGroup], title: &str, stem: &Path) -> Result<Vec<PathBuf>> {
    let n_layers = n_layers(groups);
    let mut layers = Vec::new();
    for layer_idx in 0..n_layers {
        let column = format!("layer{layer_idx}_fraction_negative");
        let lines: Vec<BandLine> = groups
            .iter()
            .map(|g| {
                let per_seed: Vec<Vec<(f64, f64)>> = g
                    .runs
                    .iter()
                    .filter_map(|r| {
                        let t = &r.record.curvature;
                        let (x, y) = (t.column("epoch")?, t.column(&column)?);
                        Some(x.iter().copied().zip(y.iter().copied()).collect())
                    })
                    .collect();
                let entry = LegendEntry { label: g.legend(), color: g.color, dashed: false };
                (entry, mean_band(&per_seed))
            })
            .collect();
        layers.push(lines);
    }
    if layers.iter().flatten().all(|(_, p)| p.is_empty()) {
        bail!("figure 3 ({title}): no curvature tracking points in any run");
    }
    let sizes = groups[0].runs[0].config.model.sizes.clone();
    // Softmax cross-entropy: H_L = diag(p) − ppᵀ is PSD with null vector 1, so the output
    // block has no negative eigenvalue (the runner counts negatives beyond rounding).
    let output_psd = groups[0].runs[0].config.model.loss == esso_core::Loss::CrossEntropy;
    save(&NegativeFraction { title: title.to_string(), layers, sizes, output_psd }, stem)
}

struct NegativeFraction {
    title: String,
    layers: Vec<Vec<BandLine>>,
    sizes: Vec<usize>,
    output_psd: bool,
}

impl Figure for NegativeFraction {
    fn size(&self) -> (u32, u32) {
        (600 * self.layers.len().max(1) as u32 + 100, 760)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let entries: Vec<LegendEntry> = self
            .layers
            .first()
            .map(|l| l.iter().map(|(e, _)| e.clone()).collect())
            .unwrap_or_default();
        let grid = (1, self.layers.len().max(1));
        let (panels, legend) =
            style::title_panels_legend(root, self.size(), &self.title, &entries, grid)?;
        for (layer_idx, (area, lines)) in panels.iter().zip(&self.layers).enumerate() {
            let points = lines.iter().flat_map(|(_, p)| p);
            let x_hi =
                style::finite_range(points.clone().map(|p| p.0)).map_or(1.0, |r| r.1).max(1e-9);
            let y_hi = style::finite_range(points.flat_map(|p| [p.3]))
                .map_or(0.5, |r| r.1)
                .clamp(0.05, 1.0);
            let mut caption = format!(
                "layer {} ({} → {} units)",
                layer_idx + 1,
                self.sizes.get(layer_idx).copied().unwrap_or(0),
                self.sizes.get(layer_idx + 1).copied().unwrap_or(0)
            );
            if self.output_psd && layer_idx + 1 == self.layers.len() {
                caption.push_str(": PSD, no negative eigenvalue");
            }
            let mut chart = ChartBuilder::on(area)
                .caption(caption, text(PANEL_SIZE))
                .margin(12)
                .margin_right(24)
                .x_label_area_size(58)
                .y_label_area_size(82)
                .build_cartesian_2d(0.0..x_hi * 1.02, 0.0..(y_hi * 1.1).min(1.0))
                .plot()?;
            style::mesh(&mut chart, "epoch", "fraction of negative eigenvalues").draw().plot()?;
            for (entry, points) in lines {
                if points.is_empty() {
                    continue;
                }
                if points.iter().any(|p| p.3 > p.2) {
                    let mut poly: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.3)).collect();
                    poly.extend(points.iter().rev().map(|p| (p.0, p.2)));
                    chart
                        .draw_series(std::iter::once(Polygon::new(
                            poly,
                            entry.color.mix(0.18).filled(),
                        )))
                        .plot()?;
                }
                chart
                    .draw_series(LineSeries::new(
                        points.iter().map(|p| (p.0, p.1)),
                        entry.color.stroke_width(LINE_WIDTH),
                    ))
                    .plot()?;
                chart
                    .draw_series(
                        points.iter().map(|p| Circle::new((p.0, p.1), 3, entry.color.filled())),
                    )
                    .plot()?;
            }
        }
        style::draw_legend(&legend, &entries)
    }
}

//! Figure 7: sharpness against the generalisation gap, one point per run (optimiser and seed).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{self, LegendEntry, PANEL_SIZE, PlotResult, text};
use super::{Figure, RunGroup, save};
use crate::analysis::SharpnessResult;

/// A sharpness measure of the figure: (panel caption, x-axis description, value).
type Measure = (&'static str, &'static str, fn(&SharpnessResult) -> f64);

/// The four sharpness measures of the figure.
const MEASURES: [Measure; 4] = [
    ("Top eigenvalue", "λ_max of the mean Hessian (log)", |s| s.top_eigenvalue),
    ("Trace", "tr H of the mean Hessian (log)", |s| s.trace),
    ("ε-sharpness (Keskar et al.)", "ε-sharpness φ, % (log)", |s| s.epsilon_sharpness),
    ("ρ-sharpness (SAM)", "max over ‖y‖ ≤ ρ of L(θ+y) − L(θ) (log)", |s| {
        s.rho_sharpness
    }),
];

/// Figure 7: four panels (top eigenvalue, trace, ε-sharpness, ρ-sharpness of each run's
/// solution, from its `sharpness` analysis) against the generalisation gap (test loss −
/// training loss), one marker per run coloured by optimiser. Each panel's caption gives
/// Kendall's rank correlation τ_b over all runs. Sharpness axes are logarithmic when every
/// value is positive.
///
/// # Errors
/// No run with a `sharpness` analysis; drawing and file errors.
pub fn sharpness_vs_gap(groups: &[RunGroup], title: &str, stem: &Path) -> Result<Vec<PathBuf>> {
    let series: Vec<(LegendEntry, Vec<SharpnessResult>)> = groups
        .iter()
        .map(|g| {
            let points: Vec<SharpnessResult> =
                g.runs.iter().filter_map(|r| r.analysis.sharpness.clone()).collect();
            (LegendEntry { label: g.legend(), color: g.color, dashed: false }, points)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    if series.is_empty() {
        bail!(
            "figure 7 ({title}): no run has a sharpness analysis (run `esso analyze --sharpness`)"
        );
    }
    save(&SharpnessFigure { title: title.to_string(), series }, stem)
}

struct SharpnessFigure {
    title: String,
    series: Vec<(LegendEntry, Vec<SharpnessResult>)>,
}

/// Kendall's τ_b between two samples (ties handled; NaN for fewer than two points or a
/// constant sample).
pub(crate) fn kendall_tau(pairs: &[(f64, f64)]) -> f64 {
    let (mut concordant, mut discordant, mut ties_x, mut ties_y) = (0.0, 0.0, 0.0, 0.0);
    for (i, a) in pairs.iter().enumerate() {
        for b in &pairs[i + 1..] {
            let dx = (a.0 - b.0).signum() * f64::from(a.0 != b.0);
            let dy = (a.1 - b.1).signum() * f64::from(a.1 != b.1);
            match (dx == 0.0, dy == 0.0) {
                (true, true) => {}
                (true, false) => ties_x += 1.0,
                (false, true) => ties_y += 1.0,
                (false, false) if dx * dy > 0.0 => concordant += 1.0,
                (false, false) => discordant += 1.0,
            }
        }
    }
    let n_x: f64 = concordant + discordant + ties_y;
    let n_y: f64 = concordant + discordant + ties_x;
    (concordant - discordant) / (n_x * n_y).sqrt()
}

impl Figure for SharpnessFigure {
    fn size(&self) -> (u32, u32) {
        (1600, 1300)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let entries: Vec<LegendEntry> = self.series.iter().map(|(e, _)| e.clone()).collect();
        let (panels, legend) =
            style::title_panels_legend(root, self.size(), &self.title, &entries, (2, 2))?;
        let first = self.series.iter().flat_map(|(_, p)| p).next();
        let setting = |key: &str| {
            first.and_then(|s| s.settings.get(key)).and_then(|v| v.as_f64()).map_or(
                String::new(),
                |v| {
                    format!(
                        ", {key_symbol} = {}",
                        style::short_number(v),
                        key_symbol = if key == "epsilon" { "ε" } else { "ρ" }
                    )
                },
            )
        };
        for (idx, (area, (caption, x_desc, measure))) in panels.iter().zip(MEASURES).enumerate() {
            let caption = match idx {
                2 => format!("{caption}{}", setting("epsilon")),
                3 => format!("{caption}{}", setting("rho")),
                _ => caption.to_string(),
            };
            self.draw_panel(area, &caption, x_desc, measure)?;
        }
        style::draw_legend(&legend, &entries)
    }
}

impl SharpnessFigure {
    fn draw_panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        caption: &str,
        x_desc: &str,
        measure: fn(&SharpnessResult) -> f64,
    ) -> Result<()> {
        let points: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|s| (measure(s), s.generalization_gap())))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let tau = kendall_tau(&points);
        let caption = if tau.is_finite() {
            format!("{caption} (Kendall τ = {tau:.2})")
        } else {
            caption.to_string()
        };
        let (x_lo, x_hi) = style::finite_range(points.iter().map(|p| p.0)).unwrap_or((1.0, 10.0));
        let (y_lo, y_hi) = style::finite_range(points.iter().map(|p| p.1)).unwrap_or((0.0, 1.0));
        let y_range = style::padded(y_lo, y_hi);
        let log_x = x_lo > 0.0;
        let x_axis = if log_x {
            style::log_axis(style::log_padded(x_lo, x_hi))
        } else {
            let r = style::padded(x_lo, x_hi);
            let keys = linear_keys(r.start, r.end);
            style::KeyedAxis::new(r, keys)
        };
        let x_desc = if log_x { x_desc.to_string() } else { x_desc.replace(" (log)", "") };
        let mut chart = ChartBuilder::on(area)
            .caption(caption, text(PANEL_SIZE))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(58)
            .y_label_area_size(92)
            .build_cartesian_2d(x_axis, y_range)
            .plot()?;
        style::mesh(&mut chart, &x_desc, "generalisation gap (test − train loss)")
            .x_label_formatter(&|v| {
                if log_x { style::log_axis_label(*v) } else { style::short_number(round3(*v)) }
            })
            .draw()
            .plot()?;
        let to_x = |v: f64| if log_x { v.log10() } else { v };
        for (entry, results) in &self.series {
            let pts: Vec<(f64, f64)> = results
                .iter()
                .map(|s| (measure(s), s.generalization_gap()))
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_x || *x > 0.0))
                .map(|(x, y)| (to_x(x), y))
                .collect();
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 9, entry.color.filled())))
                .plot()?;
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 9, BLACK.stroke_width(1))))
                .plot()?;
        }
        Ok(())
    }
}

/// Up to about six round tick positions over [lo, hi].
pub(crate) fn linear_keys(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).abs().max(f64::MIN_POSITIVE);
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// `v` rounded to 3 significant digits (for tick labels).
pub(crate) fn round3(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let k = 10f64.powi(2 - v.abs().log10().floor() as i32);
    (v * k).round() / k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kendall_tau_of_known_orders() {
        let up: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, 2.0 * i as f64)).collect();
        assert_eq!(kendall_tau(&up), 1.0);
        let down: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, -(i as f64))).collect();
        assert_eq!(kendall_tau(&down), -1.0);
        // (1,1), (2,3), (3,2): 2 concordant, 1 discordant pair → τ = 1/3.
        let mixed = [(1.0, 1.0), (2.0, 3.0), (3.0, 2.0)];
        assert!((kendall_tau(&mixed) - 1.0 / 3.0).abs() < 1e-15);
        assert!(kendall_tau(&[(1.0, 1.0)]).is_nan());
        assert_eq!(linear_keys(0.0, 1.0), [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(round3(0.123456), 0.123);
    }
}

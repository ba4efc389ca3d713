//! Figure 11: the top Hessian eigenvalue over training with the 2/η stability line.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use esso_optim::OptimizerConfig;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{self, LINE_WIDTH, LegendEntry, PANEL_SIZE, PlotResult, text};
use super::{Band, Figure, RunGroup, mean_band, save};

/// The largest curvature a quadratic can have for the optimiser's iteration on it to stay
/// stable at learning rate `lr`: 2/η for SGD, 2(1 + μ)/η with heavy-ball momentum μ and
/// 2(1 + μ)/(η(1 + 2μ)) with Nesterov momentum. `None` for Adam, AdamW and ESSO, whose
/// steps are preconditioned (no threshold on the raw Hessian).
pub fn stability_threshold(config: &OptimizerConfig, lr: f64) -> Option<f64> {
    match config {
        OptimizerConfig::Sgd(c) if lr > 0.0 => Some(match (c.momentum, c.nesterov) {
            (mu, false) => 2.0 * (1.0 + mu) / lr,
            (mu, true) => 2.0 * (1.0 + mu) / (lr * (1.0 + 2.0 * mu)),
        }),
        _ => None,
    }
}

/// Figure 11: the top eigenvalue of the mean Hessian over the fixed tracking subset
/// (`/top_eigenvalue`, recorded during training with `[tracking] top_eigenvalue_every`),
/// against epochs, one line per optimiser (mean over seeds, min–max band), log axis; for
/// SGD-type optimisers the stability threshold 2/η (2(1 + μ)/η with momentum) at the
/// recorded learning rate as a dashed line of the same colour.
///
/// # Errors
/// No run with a top-eigenvalue series; drawing and file errors.
pub fn top_eigenvalue_over_training(
    groups: &[RunGroup],
    title: &str,
    stem: &Path,
) -> Result<Vec<PathBuf>> {
    let mut lines: Vec<(LegendEntry, Vec<Band>)> = Vec::new();
    let mut thresholds: Vec<(LegendEntry, Vec<(f64, f64)>)> = Vec::new();
    for g in groups {
        let per_seed: Vec<Vec<(f64, f64)>> = g
            .runs
            .iter()
            .filter_map(|r| {
                let t = &r.record.top_eigenvalue;
                let (x, y) = (t.column("epoch")?, t.column("top_eigenvalue")?);
                Some(x.iter().copied().zip(y.iter().copied()).collect())
            })
            .filter(|s: &Vec<(f64, f64)>| !s.is_empty())
            .collect();
        if per_seed.is_empty() {
            continue;
        }
        lines.push((
            LegendEntry { label: g.legend(), color: g.color, dashed: false },
            mean_band(&per_seed),
        ));
        let Some(run) = g.runs.first() else { continue };
        let t = &run.record.top_eigenvalue;
        let (Some(x), Some(lr)) = (t.column("epoch"), t.column("learning_rate")) else { continue };
        let line: Vec<(f64, f64)> = x
            .iter()
            .zip(lr)
            .filter_map(|(&x, &lr)| Some((x, stability_threshold(&run.config.optimizer, lr)?)))
            .filter(|(_, v)| v.is_finite())
            .collect();
        if let Some(&(_, first)) = line.first() {
            let value = style::short_number(round_sig(first));
            let label = match &run.config.optimizer {
                OptimizerConfig::Sgd(c) if c.momentum > 0.0 => {
                    format!("2(1+μ)/η = {value} ({})", g.display)
                }
                _ => format!("2/η = {value} ({})", g.display),
            };
            thresholds.push((LegendEntry { label, color: g.color, dashed: true }, line));
        }
    }
    if lines.is_empty() {
        bail!(
            "figure 11 ({title}): no run recorded the top eigenvalue over training \
             ([tracking] top_eigenvalue_every = 0?)"
        );
    }
    save(&TopEigenvalue { title: title.to_string(), lines, thresholds }, stem)
}

fn round_sig(v: f64) -> f64 {
    super::sharpness::round3(v)
}

struct TopEigenvalue {
    title: String,
    lines: Vec<(LegendEntry, Vec<Band>)>,
    thresholds: Vec<(LegendEntry, Vec<(f64, f64)>)>,
}

impl Figure for TopEigenvalue {
    fn size(&self) -> (u32, u32) {
        (1400, 950)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let entries: Vec<LegendEntry> = self
            .lines
            .iter()
            .map(|(e, _)| e.clone())
            .chain(self.thresholds.iter().map(|(e, _)| e.clone()))
            .collect();
        let (areas, legend) =
            style::title_panels_legend(root, self.size(), &self.title, &entries, (1, 1))?;
        let values = self
            .lines
            .iter()
            .flat_map(|(_, p)| p.iter().flat_map(|b| [b.2, b.3]))
            .chain(self.thresholds.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)))
            .filter(|v| *v > 0.0);
        let (y_lo, y_hi) = style::finite_range(values).unwrap_or((0.1, 10.0));
        let y_range = style::log_padded(y_lo, y_hi);
        let floor = y_range.start;
        let x_hi = style::finite_range(self.lines.iter().flat_map(|(_, p)| p.iter().map(|b| b.0)))
            .map_or(1.0, |r| r.1)
            .max(1e-9);
        let mut chart = ChartBuilder::on(&areas[0])
            .caption("Top eigenvalue of the mean Hessian on the tracking subset", text(PANEL_SIZE))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(58)
            .y_label_area_size(92)
            .build_cartesian_2d(0.0..x_hi * 1.02, style::log_axis(y_range))
            .plot()?;
        style::mesh(&mut chart, "epoch", "λ_max (log)")
            .y_label_formatter(&|v| style::log_axis_label(*v))
            .draw()
            .plot()?;
        let ly = |v: f64| v.max(floor).log10();
        for (entry, points) in &self.lines {
            if points.iter().any(|p| p.3 > p.2) {
                let mut poly: Vec<(f64, f64)> = points.iter().map(|p| (p.0, ly(p.3))).collect();
                poly.extend(points.iter().rev().map(|p| (p.0, ly(p.2))));
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        poly,
                        entry.color.mix(0.18).filled(),
                    )))
                    .plot()?;
            }
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|p| (p.0, ly(p.1))),
                    entry.color.stroke_width(LINE_WIDTH),
                ))
                .plot()?;
            chart
                .draw_series(
                    points.iter().map(|p| Circle::new((p.0, ly(p.1)), 3, entry.color.filled())),
                )
                .plot()?;
        }
        for (entry, points) in &self.thresholds {
            let mut path: Vec<(f64, f64)> = points.iter().map(|p| (p.0, ly(p.1))).collect();
            // Extend a constant threshold from the first recorded point back to epoch 0.
            if let Some(&(x0, y0)) = path.first()
                && x0 > 0.0
            {
                path.insert(0, (0.0, y0));
            }
            chart
                .draw_series(DashedLineSeries::new(
                    path,
                    12,
                    8,
                    entry.color.stroke_width(LINE_WIDTH),
                ))
                .plot()?;
        }
        style::draw_legend(&legend, &entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_of_gradient_descent_on_a_quadratic() {
        let sgd = |momentum: f64, nesterov: bool| {
            let mut c = esso_optim::SgdConfig::plain(0.1);
            c.momentum = momentum;
            c.nesterov = nesterov;
            OptimizerConfig::Sgd(c)
        };
        assert!((stability_threshold(&sgd(0.0, false), 0.1).unwrap() - 20.0).abs() < 1e-12);
        assert!((stability_threshold(&sgd(0.9, false), 0.1).unwrap() - 38.0).abs() < 1e-12);
        let nesterov = stability_threshold(&sgd(0.5, true), 0.1).unwrap();
        assert!((nesterov - 2.0 * 1.5 / (0.1 * 2.0)).abs() < 1e-12);
        // Heavy ball on f = h x²/2: x_{t+1} = x_t − η h x_t + μ (x_t − x_{t−1}) is stable iff
        // η h < 2 (1 + μ): check the iteration just inside and just outside.
        for (mu, h_factor, stable) in [(0.9, 0.99, true), (0.9, 1.01, false)] {
            let eta = 0.1;
            let h = h_factor * stability_threshold(&sgd(mu, false), eta).unwrap();
            let (mut prev, mut x) = (1.0_f64, 1.0_f64);
            for _ in 0..5000 {
                let next = x - eta * h * x + mu * (x - prev);
                prev = x;
                x = next;
            }
            assert_eq!(x.abs() < 1.0, stable, "μ = {mu}, h = {h}: |x| = {}", x.abs());
        }
    }
}

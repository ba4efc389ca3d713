//! Figure 1: training loss and test accuracy against epochs and against wall-clock time.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{self, LINE_WIDTH, LegendEntry, PANEL_SIZE, PlotResult, text};
use super::{Band, Figure, RunGroup, mean_band, save};

/// Figure 1 for one experiment: a 2 × 2 grid (training loss and test accuracy, against
/// epochs and against training seconds), one line per group (mean over seeds) with a min–max
/// band. Reads each run's `evals` table.
///
/// # Errors
/// No group with evaluations; drawing and file errors.
pub fn training_curves(groups: &[RunGroup], title: &str, stem: &Path) -> Result<Vec<PathBuf>> {
    let curves: Vec<GroupCurves> = groups.iter().map(GroupCurves::new).collect();
    if curves.iter().all(|c| c.epoch_loss.is_empty()) {
        bail!("figure 1 ({title}): no evaluations in any run");
    }
    save(&Curves { title: title.to_string(), curves }, stem)
}

struct GroupCurves {
    entry: LegendEntry,
    /// (x, mean, min, max) per panel.
    epoch_loss: Vec<Band>,
    epoch_acc: Vec<Band>,
    time_loss: Vec<Band>,
    time_acc: Vec<Band>,
}

impl GroupCurves {
    fn new(group: &RunGroup) -> Self {
        let series = |x: &str, y: &str, skip_first: bool| {
            let per_seed: Vec<Vec<(f64, f64)>> = group
                .runs
                .iter()
                .filter_map(|r| {
                    let t = &r.record.evals;
                    let (xs, ys) = (t.column(x)?, t.column(y)?);
                    Some(
                        xs.iter()
                            .zip(ys)
                            .skip(usize::from(skip_first))
                            .map(|(&a, &b)| (a, b))
                            .collect(),
                    )
                })
                .collect();
            mean_band(&per_seed)
        };
        GroupCurves {
            entry: LegendEntry { label: group.legend(), color: group.color, dashed: false },
            epoch_loss: series("epoch", "train_loss", false),
            epoch_acc: series("epoch", "test_accuracy", true),
            time_loss: series("train_seconds", "train_loss", false),
            time_acc: series("train_seconds", "test_accuracy", true),
        }
    }
}

struct Curves {
    title: String,
    curves: Vec<GroupCurves>,
}

#[derive(Clone, Copy)]
enum Panel {
    EpochLoss,
    EpochAcc,
    TimeLoss,
    TimeAcc,
}

impl Curves {
    fn points(&self, panel: Panel) -> impl Iterator<Item = (&GroupCurves, &[Band])> {
        self.curves.iter().map(move |c| {
            let p = match panel {
                Panel::EpochLoss => &c.epoch_loss,
                Panel::EpochAcc => &c.epoch_acc,
                Panel::TimeLoss => &c.time_loss,
                Panel::TimeAcc => &c.time_acc,
            };
            (c, p.as_slice())
        })
    }

    fn draw_panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        panel: Panel,
    ) -> Result<()> {
        let (caption, x_desc, y_desc, log_y) = match panel {
            Panel::EpochLoss => {
                ("Training loss vs epoch", "epoch", "training loss (cross-entropy, nats)", true)
            }
            Panel::EpochAcc => ("Test accuracy vs epoch", "epoch", "test accuracy", false),
            Panel::TimeLoss => (
                "Training loss vs wall-clock",
                "training time (s)",
                "training loss (cross-entropy, nats)",
                true,
            ),
            Panel::TimeAcc => {
                ("Test accuracy vs wall-clock", "training time (s)", "test accuracy", false)
            }
        };
        let all: Vec<&Band> = self.points(panel).flat_map(|(_, p)| p).collect();
        let (x_lo, x_hi) = style::finite_range(all.iter().map(|p| p.0)).unwrap_or((0.0, 1.0));
        let (y_lo, y_hi) =
            style::finite_range(all.iter().flat_map(|p| [p.2, p.3])).unwrap_or((0.1, 1.0));
        let x_range = 0.0..(x_hi.max(x_lo) * 1.02).max(1e-9);
        let mut builder = ChartBuilder::on(area);
        builder
            .caption(caption, text(PANEL_SIZE))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(58)
            .y_label_area_size(92);
        if log_y {
            let y_lo = all
                .iter()
                .flat_map(|p| [p.2, p.3])
                .filter(|v| *v > 0.0)
                .fold(f64::INFINITY, f64::min);
            let y_range = style::log_padded(y_lo.min(y_hi), y_hi.max(y_lo));
            let floor = y_range_floor(y_range.start);
            let keys = style::log_key_points(y_range.start, y_range.end);
            let axis = style::KeyedAxis::new(y_range.start.log10()..y_range.end.log10(), keys);
            let mut chart = builder.build_cartesian_2d(x_range, axis).plot()?;
            style::mesh(&mut chart, x_desc, y_desc)
                .y_label_formatter(&|v| style::log_label(10f64.powf(*v)))
                .draw()
                .plot()?;
            for (c, points) in self.points(panel) {
                draw_band(&mut chart, c, points, |v| v.max(floor).log10())?;
            }
        } else {
            let y_range = style::padded(y_lo, y_hi.min(1.0).max(y_lo));
            let mut chart = builder.build_cartesian_2d(x_range, y_range).plot()?;
            style::mesh(&mut chart, x_desc, y_desc).draw().plot()?;
            for (c, points) in self.points(panel) {
                draw_band(&mut chart, c, points, |v| v)?;
            }
        }
        Ok(())
    }
}

fn y_range_floor(lo: f64) -> f64 {
    if lo.is_finite() && lo > 0.0 { lo } else { f64::MIN_POSITIVE }
}

/// A min–max band (translucent polygon) and the mean line of one group.
fn draw_band<DB: DrawingBackend, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    c: &GroupCurves,
    points: &[Band],
    clamp: impl Fn(f64) -> f64,
) -> Result<()>
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    if points.is_empty() {
        return Ok(());
    }
    let color = c.entry.color;
    if points.iter().any(|p| p.3 > p.2) {
        let mut poly: Vec<(f64, f64)> = points.iter().map(|p| (p.0, clamp(p.3))).collect();
        poly.extend(points.iter().rev().map(|p| (p.0, clamp(p.2))));
        chart.draw_series(std::iter::once(Polygon::new(poly, color.mix(0.18).filled()))).plot()?;
    }
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.0, clamp(p.1))),
            color.stroke_width(LINE_WIDTH),
        ))
        .plot()?;
    chart
        .draw_series(points.iter().map(|p| Circle::new((p.0, clamp(p.1)), 3, color.filled())))
        .plot()?;
    Ok(())
}

impl Figure for Curves {
    fn size(&self) -> (u32, u32) {
        (1700, 1250)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let entries: Vec<LegendEntry> = self.curves.iter().map(|c| c.entry.clone()).collect();
        let (panels, legend) =
            style::title_panels_legend(root, self.size(), &self.title, &entries, (2, 2))?;
        for (area, panel) in
            panels.iter().zip([Panel::EpochLoss, Panel::EpochAcc, Panel::TimeLoss, Panel::TimeAcc])
        {
            self.draw_panel(area, panel)?;
        }
        style::draw_legend(&legend, &entries)
    }
}

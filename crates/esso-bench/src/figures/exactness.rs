//! Figure 5: closed-form eigenvalues against the dense finite-difference reference.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{self, AXIS_SIZE, LegendEntry, PALETTE, PANEL_SIZE, PlotResult, symlog, text};
use super::{Figure, save};
use crate::exactness::ExactnessRow;

/// Relative errors below this are drawn at this floor (exact agreement has no logarithm).
const ERROR_FLOOR: f64 = 1e-17;

/// Figure 5: left, every closed-form eigenvalue against its dense counterpart (symlog axes,
/// the diagonal is exact agreement); right, the relative error |closed − dense| / max|dense|
/// of its spectrum against the dense eigenvalue (log y). Colours tell the whole-network
/// spectrum from the per-layer blocks.
///
/// # Errors
/// No rows; drawing and file errors.
pub fn exactness_figure(rows: &[ExactnessRow], stem: &Path) -> Result<Vec<PathBuf>> {
    if rows.is_empty() {
        bail!("figure 5: no exactness rows");
    }
    let mut nets: Vec<&str> = rows.iter().map(|r| r.net.as_str()).collect();
    nets.dedup();
    let mut unique = Vec::new();
    for n in nets {
        if !unique.contains(&n) {
            unique.push(n);
        }
    }
    let worst = rows.iter().map(ExactnessRow::relative_error).fold(0.0, f64::max);
    let title = format!(
        "Exactness: closed-form vs dense finite-difference eigenvalues ({} nets, {} eigenvalues, max rel. error {:.1e})",
        unique.len(),
        rows.len(),
        worst
    );
    let points = |full: bool| -> Vec<Point> {
        rows.iter()
            .filter(|r| (r.scope == "full") == full)
            .map(|r| (r.dense, r.closed_form, r.relative_error().max(ERROR_FLOOR)))
            .collect()
    };
    let sets = vec![
        (
            LegendEntry {
                label: "whole network H = KᵀMK (§4)".into(),
                color: PALETTE[0],
                dashed: false,
            },
            points(true),
        ),
        (
            LegendEntry {
                label: "per-layer blocks B_l = (ããᵀ)⊗H_l (§3)".into(),
                color: PALETTE[1],
                dashed: false,
            },
            points(false),
        ),
    ];
    let subtitle = format!("nets: {}", unique.join("; "));
    save(&Exactness { title, subtitle, sets }, stem)
}

/// (dense eigenvalue, closed-form eigenvalue, relative error).
type Point = (f64, f64, f64);

struct Exactness {
    title: String,
    subtitle: String,
    /// (entry, (dense, closed, relative error)).
    sets: Vec<(LegendEntry, Vec<Point>)>,
}

impl Figure for Exactness {
    fn size(&self) -> (u32, u32) {
        (1800, 900)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).plot()?;
        let entries: Vec<LegendEntry> = self.sets.iter().map(|(e, _)| e.clone()).collect();
        let (title, rest) = root.split_vertically(100);
        let (t1, t2) = title.split_vertically(60);
        style::draw_title(&t1, &self.title)?;
        let (w, h) = t2.dim_in_pixel();
        t2.draw(&Text::new(
            self.subtitle.clone(),
            (w as i32 / 2, h as i32 / 2),
            text(AXIS_SIZE).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Center,
            )),
        ))
        .plot()?;
        let (body, legend) = rest.split_vertically(rest.dim_in_pixel().1 - 60);
        let panels = body.split_evenly((1, 2));

        let all =
            self.sets.iter().flat_map(|(_, p)| p.iter().flat_map(|q| [symlog(q.0), symlog(q.1)]));
        let (lo, hi) = style::finite_range(all).unwrap_or((-1.0, 1.0));
        let (lo, hi) = ((lo - 0.1).min(-0.3), (hi + 0.1).max(0.3));
        let keys = style::symlog_key_points(lo, hi);

        let mut left = ChartBuilder::on(&panels[0])
            .caption("closed form vs dense", text(PANEL_SIZE))
            .margin(14)
            .margin_right(30)
            .x_label_area_size(58)
            .y_label_area_size(90)
            .build_cartesian_2d(
                style::KeyedAxis::new(lo..hi, keys.clone()),
                style::KeyedAxis::new(lo..hi, keys.clone()),
            )
            .plot()?;
        style::mesh(
            &mut left,
            "dense eigenvalue (finite differences + faer, symlog)",
            "closed-form eigenvalue (symlog)",
        )
        .x_label_formatter(&|s| style::symlog_label(*s))
        .y_label_formatter(&|s| style::symlog_label(*s))
        .draw()
        .plot()?;
        left.draw_series(LineSeries::new(
            [(lo, lo), (hi, hi)],
            RGBColor(160, 160, 160).stroke_width(2),
        ))
        .plot()?;
        for (entry, points) in &self.sets {
            left.draw_series(points.iter().map(|p| {
                Circle::new((symlog(p.0), symlog(p.1)), 5, entry.color.mix(0.75).stroke_width(2))
            }))
            .plot()?;
        }

        let errors = self.sets.iter().flat_map(|(_, p)| p.iter().map(|q| q.2));
        let (e_lo, e_hi) = style::finite_range(errors).unwrap_or((ERROR_FLOOR, 1.0));
        let e_range = style::log_padded(e_lo, e_hi.max(e_lo * 10.0));
        let mut right = ChartBuilder::on(&panels[1])
            .caption("relative error |closed − dense| / max|dense|", text(PANEL_SIZE))
            .margin(14)
            .margin_right(30)
            .x_label_area_size(58)
            .y_label_area_size(90)
            .build_cartesian_2d(style::KeyedAxis::new(lo..hi, keys), style::log_axis(e_range))
            .plot()?;
        style::mesh(&mut right, "dense eigenvalue (symlog)", "relative error")
            .x_label_formatter(&|s| style::symlog_label(*s))
            .y_label_formatter(&|v| style::log_axis_label(*v))
            .draw()
            .plot()?;
        for (entry, points) in &self.sets {
            right
                .draw_series(points.iter().map(|p| {
                    Circle::new(
                        (symlog(p.0), p.2.log10()),
                        5,
                        entry.color.mix(0.75).stroke_width(2),
                    )
                }))
                .plot()?;
        }
        style::draw_legend(&legend, &entries)
    }
}

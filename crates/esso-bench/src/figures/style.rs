//! Shared look of the figures: fonts, colours, titles, legends, tick labels.

use anyhow::{Result, anyhow, bail};
use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The font family of every text (DejaVu Sans through fontconfig on Debian).
pub(crate) const FONT: &str = "sans-serif";
/// Figure title.
pub(crate) const TITLE_SIZE: u32 = 30;
/// Panel captions.
pub(crate) const PANEL_SIZE: u32 = 24;
/// Axis descriptions.
pub(crate) const AXIS_SIZE: u32 = 21;
/// Tick labels.
pub(crate) const TICK_SIZE: u32 = 18;
/// Legend entries.
pub(crate) const LEGEND_SIZE: u32 = 20;
/// Width of data lines, pixels.
pub(crate) const LINE_WIDTH: u32 = 3;

/// Fails with an installable hint when no sans-serif TrueType font can be loaded (plotters
/// would otherwise fail at the first text, deep inside a figure).
pub(crate) fn check_fonts() -> Result<()> {
    let font = FontDesc::new(FontFamily::SansSerif, 16.0, FontStyle::Normal);
    match font.box_size("Ag 0.5") {
        Ok((w, h)) if w > 0 && h > 0 => Ok(()),
        Ok(_) => bail!("the sans-serif font measures text as empty; install fonts-dejavu-core"),
        Err(e) => bail!(
            "no usable sans-serif TrueType font ({e:?}); install one, e.g. \
             `apt-get install fonts-dejavu-core fontconfig` (see `cargo xtask prereqs`)"
        ),
    }
}

/// Turns a plotters error into an anyhow one.
pub(crate) trait PlotResult<T> {
    /// The value, or the plotters error as text.
    fn plot(self) -> Result<T>;
}

impl<T, E: std::fmt::Display> PlotResult<T> for std::result::Result<T, E> {
    fn plot(self) -> Result<T> {
        self.map_err(|e| anyhow!("drawing: {e}"))
    }
}

/// One legend entry: a label, a colour and whether its line is dashed.
#[derive(Debug, Clone)]
pub(crate) struct LegendEntry {
    pub label: String,
    pub color: RGBColor,
    pub dashed: bool,
}

/// A text style of the figures' font.
pub(crate) fn text(size: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font())
}

/// Draws `title` centred in `area`, shrinking the font (down to 60 %) until it fits, then
/// breaking it after its first `: ` when it still does not.
pub(crate) fn draw_title<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    let fits = |size: u32, line: &str| -> Result<bool> {
        Ok(area.estimate_text_size(line, &text(size)).plot()?.0 + 40 <= w)
    };
    let mut size = TITLE_SIZE;
    while size > TITLE_SIZE * 6 / 10 && !fits(size, title)? {
        size -= 1;
    }
    let centre = Pos::new(HPos::Center, VPos::Center);
    if fits(size, title)? {
        let style = text(size).pos(centre);
        return area
            .draw(&Text::new(title.to_string(), (w as i32 / 2, h as i32 / 2), style))
            .plot();
    }
    let (first, second) = match title.split_once(": ") {
        Some((a, b)) => (format!("{a}:"), b.to_string()),
        None => (title.to_string(), String::new()),
    };
    let style = text(size).pos(centre);
    let dy = size as i32 / 2 + 2;
    area.draw(&Text::new(first, (w as i32 / 2, h as i32 / 2 - dy), style.clone())).plot()?;
    area.draw(&Text::new(second, (w as i32 / 2, h as i32 / 2 + dy), style)).plot()
}

/// Lays out a figure of `size` pixels: fills the background, draws `title` in a strip at the
/// top, reserves a legend strip at the bottom sized for `entries`, and splits the rest into
/// a `grid` = (rows, columns) of panels. Returns the panels (row-major) and the legend area.
pub(crate) fn title_panels_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    size: (u32, u32),
    title: &str,
    entries: &[LegendEntry],
    grid: (usize, usize),
) -> Result<(Vec<Area<DB>>, Area<DB>)> {
    root.fill(&WHITE).plot()?;
    let legend_h = legend_height(entries, size.0);
    let (title_area, rest) = root.split_vertically(TITLE_STRIP);
    let (body, legend) = rest.split_vertically(size.1 - TITLE_STRIP - legend_h);
    draw_title(&title_area, title)?;
    Ok((body.split_evenly(grid), legend))
}

/// A drawing area in pixel coordinates.
pub(crate) type Area<DB> = DrawingArea<DB, Shift>;

/// Height of the title strip of every figure, in pixels.
const TITLE_STRIP: u32 = 64;

/// Draws a legend centred in `area`, entries laid out left to right and wrapped.
pub(crate) fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
) -> Result<()> {
    let (w, _) = area.dim_in_pixel();
    let style = text(LEGEND_SIZE);
    let swatch = 36;
    let gap = 30;
    let mut widths = Vec::with_capacity(entries.len());
    for e in entries {
        let (tw, _) = area.estimate_text_size(&e.label, &style).plot()?;
        widths.push(swatch + 8 + tw as i32);
    }
    // Greedy rows.
    let mut rows: Vec<Vec<usize>> = vec![Vec::new()];
    let mut row_width = 0;
    for (idx, &ew) in widths.iter().enumerate() {
        let last = rows.last_mut().expect("rows start non-empty");
        if !last.is_empty() && row_width + gap + ew > w as i32 - 20 {
            rows.push(vec![idx]);
            row_width = ew;
        } else {
            row_width += if last.is_empty() { ew } else { gap + ew };
            last.push(idx);
        }
    }
    let line_height = LEGEND_SIZE as i32 + 12;
    for (row_idx, row) in rows.iter().enumerate() {
        let total: i32 = row.iter().map(|&i| widths[i]).sum::<i32>() + gap * (row.len() as i32 - 1);
        let mut x = (w as i32 - total) / 2;
        let y = 6 + line_height / 2 + row_idx as i32 * line_height;
        for &i in row {
            let e = &entries[i];
            let stroke = e.color.stroke_width(LINE_WIDTH + 1);
            if e.dashed {
                area.draw(&plotters::element::DashedPathElement::new(
                    vec![(x, y), (x + swatch, y)],
                    7,
                    5,
                    stroke,
                ))
                .plot()?;
            } else {
                area.draw(&PathElement::new(vec![(x, y), (x + swatch, y)], stroke)).plot()?;
            }
            let label_style = style.pos(Pos::new(HPos::Left, VPos::Center));
            area.draw(&Text::new(e.label.clone(), (x + swatch + 8, y), label_style)).plot()?;
            x += widths[i] + gap;
        }
    }
    Ok(())
}

/// Pixel height a legend of these entries needs at `width` pixels (an estimate).
pub(crate) fn legend_height(entries: &[LegendEntry], width: u32) -> u32 {
    let approx: u32 = entries
        .iter()
        .map(|e| 36 + 8 + e.label.chars().count() as u32 * LEGEND_SIZE * 6 / 10 + 30)
        .sum();
    let rows = approx.div_ceil(width.saturating_sub(40).max(1)).max(1);
    rows * (LEGEND_SIZE + 12) + 14
}

/// s = sign(e)·log10(1 + |e|), the x axis of the eigenvalue plots.
pub(crate) fn symlog(e: f64) -> f64 {
    e.signum() * e.abs().ln_1p() / std::f64::consts::LN_10
}

/// Tick positions for a symlog axis over [lo, hi] (symlog units): 0, ±1, ±10, ±100, …,
/// every other power of ten when there would be too many, and also ±3, ±30, … when there
/// would be too few.
pub(crate) fn symlog_key_points(lo: f64, hi: f64) -> Vec<f64> {
    let candidates = |powers: &[i32], mantissas: &[f64]| -> Vec<f64> {
        let mut points: Vec<f64> = powers
            .iter()
            .flat_map(|&k| mantissas.iter().map(move |m| m * 10f64.powi(k)))
            .flat_map(|e| [symlog(e), symlog(-e)])
            .chain([0.0])
            .filter(|s| (lo..=hi).contains(s))
            .collect();
        points.sort_by(f64::total_cmp);
        points
    };
    let mut powers: Vec<i32> = (0..=12).collect();
    while candidates(&powers, &[1.0]).len() > 9 && powers.len() > 1 {
        powers = powers.into_iter().step_by(2).collect();
    }
    let points = candidates(&powers, &[1.0]);
    if points.len() < 6 { candidates(&powers, &[1.0, 3.0]) } else { points }
}

/// The tick label of a symlog position made by [`symlog_key_points`]: `0`, `±1`, `±3`,
/// `±10`, `±30`, `±10²`, `3×10³`, …
pub(crate) fn symlog_label(s: f64) -> String {
    if s.abs() < 1e-12 {
        return "0".to_string();
    }
    let e = s.signum() * (10f64.powf(s.abs()) - 1.0);
    let sign = if e < 0.0 { "−" } else { "" };
    let k = e.abs().log10().floor() as i32;
    let mantissa = (e.abs() / 10f64.powi(k)).round();
    if (mantissa - 1.0).abs() < 1e-9 || mantissa >= 10.0 {
        let k = if mantissa >= 10.0 { k + 1 } else { k };
        format!("{sign}{}", power_of_ten(k))
    } else if k <= 1 {
        format!("{sign}{}", mantissa * 10f64.powi(k))
    } else {
        format!("{sign}{mantissa}×{}", power_of_ten(k))
    }
}

/// `1`, `10`, `10²`, `10⁻³`, …
pub(crate) fn power_of_ten(k: i32) -> String {
    match k {
        0 => "1".to_string(),
        1 => "10".to_string(),
        _ => format!("10{}", superscript(k)),
    }
}

fn superscript(k: i32) -> String {
    k.to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            _ => '⁹',
        })
        .collect()
}

/// A tick label of a log axis: plain decimals between 10⁻³ and 10⁴, powers of ten (or
/// `a×10ᵏ`) otherwise.
pub(crate) fn log_label(v: f64) -> String {
    if v <= 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let k = v.log10().floor() as i32;
    let mantissa = v / 10f64.powi(k);
    if (-2..4).contains(&k) {
        let digits = (-k).max(0) as usize;
        let s = format!("{v:.digits$}");
        return s;
    }
    if (mantissa - 1.0).abs() < 1e-6 {
        power_of_ten(k)
    } else {
        format!("{mantissa:.0}×{}", power_of_ten(k))
    }
}

/// A number for a title or legend: short, no trailing zeros (`0.001`, `3`, `1e-5`).
pub(crate) fn short_number(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) { format!("{v:e}") } else { format!("{v}") }
}

/// The viridis colour map at t ∈ [0, 1] (piecewise linear through five stops).
pub(crate) fn viridis(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let x = t * (STOPS.len() - 1) as f64;
    let idx = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - idx as f64;
    let (a, b) = (STOPS[idx], STOPS[idx + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// A fixed palette for series that are not optimisers (colour-blind friendly).
pub(crate) const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(0, 0, 0),
];

/// (min, max) of the finite values, or `None`.
pub(crate) fn finite_range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values.into_iter().filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A linear axis range around [lo, hi] with 5 % padding (a unit range around a constant).
pub(crate) fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        let pad = if lo == 0.0 { 1.0 } else { 0.05 * lo.abs() };
        return (lo - pad)..(hi + pad);
    }
    let pad = 0.05 * (hi - lo);
    (lo - pad)..(hi + pad)
}

/// A log axis range around [lo, hi] (both > 0) padded by a fraction of a decade.
pub(crate) fn log_padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let (lo, hi) = (lo.max(f64::MIN_POSITIVE), hi.max(f64::MIN_POSITIVE));
    if hi / lo < 1.5 {
        return (lo / 1.5)..(hi * 1.5);
    }
    (lo / 1.25)..(hi * 1.25)
}

/// Tick positions in log10 units for a log axis over [lo, hi] (values > 0): 1, 2, 5 × 10ᵏ,
/// thinned to powers of ten over many decades, with 3 × 10ᵏ added over less than one.
pub(crate) fn log_key_points(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let mantissas: &[f64] = match b - a {
        0..=1 => &[1.0, 2.0, 3.0, 5.0],
        2..=3 => &[1.0, 2.0, 5.0],
        _ => &[1.0],
    };
    let step = ((b - a) / 8).max(1) as usize;
    (a..=b)
        .step_by(step)
        .flat_map(|k| mantissas.iter().map(move |m| m * 10f64.powi(k)))
        .filter(|v| (lo..=hi).contains(v))
        .map(f64::log10)
        .collect()
}

/// A log axis over `range` (values > 0) as a [`KeyedAxis`] in log10 units: plot log10(v)
/// and label ticks with [`log_axis_label`].
pub(crate) fn log_axis(range: std::ops::Range<f64>) -> KeyedAxis {
    let keys = log_key_points(range.start, range.end);
    KeyedAxis::new(range.start.log10()..range.end.log10(), keys)
}

/// The tick label of a [`log_axis`] position (log10 units).
pub(crate) fn log_axis_label(v: f64) -> String {
    log_label(10f64.powf(v))
}

/// A linear f64 axis whose ticks are exactly the given key points (plotters'
/// `WithKeyPoints` loses the label formatter of f64 axes).
#[derive(Debug, Clone)]
pub(crate) struct KeyedAxis {
    lo: f64,
    hi: f64,
    keys: Vec<f64>,
}

impl KeyedAxis {
    /// The axis [lo, hi] with ticks at `keys`.
    pub(crate) fn new(range: std::ops::Range<f64>, keys: Vec<f64>) -> Self {
        KeyedAxis { lo: range.start, hi: range.end, keys }
    }
}

impl Ranged for KeyedAxis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        if self.hi == self.lo {
            return (limit.0 + limit.1) / 2;
        }
        let t = (v - self.lo) / (self.hi - self.lo);
        let t = if t.is_finite() { t.clamp(-10.0, 10.0) } else { 0.0 };
        limit.0 + ((limit.1 - limit.0) as f64 * t).round() as i32
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() { Vec::new() } else { self.keys.clone() }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// The project's mesh for a 2D chart: axis descriptions, the text sizes of every figure and
/// light grid lines. Callers add label formatters (or other settings) and call `draw()`.
pub(crate) fn mesh<'a, 'b, X, Y, XT, YT, DB>(
    chart: &'b mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    x_desc: &str,
    y_desc: &str,
) -> MeshStyle<'a, 'b, X, Y, DB>
where
    X: Ranged<ValueType = XT> + ValueFormatter<XT>,
    Y: Ranged<ValueType = YT> + ValueFormatter<YT>,
    DB: DrawingBackend,
{
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style(text(AXIS_SIZE))
        .label_style(text(TICK_SIZE))
        .light_line_style(RGBColor(238, 238, 238))
        .max_light_lines(3);
    mesh
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels() {
        assert_eq!(symlog_label(0.0), "0");
        assert_eq!(symlog_label(symlog(100.0)), "10²");
        assert_eq!(symlog_label(symlog(-1.0)), "−1");
        assert_eq!(symlog_label(symlog(-1e4)), "−10⁴");
        assert_eq!(log_label(0.01), "0.01");
        assert_eq!(log_label(0.05), "0.05");
        assert_eq!(log_label(0.001), "10⁻³");
        assert_eq!(symlog_label(symlog(30.0)), "30");
        assert_eq!(symlog_label(symlog(-3000.0)), "−3×10³");
        assert_eq!(log_label(1000.0), "1000");
        assert_eq!(log_label(1e-6), "10⁻⁶");
        assert_eq!(short_number(0.0003), "3e-4");
        assert_eq!(short_number(3.0), "3");
        let keys = symlog_key_points(-2.5, 3.2);
        assert!(keys.contains(&0.0) && keys.len() <= 9, "{keys:?}");
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
    }
}

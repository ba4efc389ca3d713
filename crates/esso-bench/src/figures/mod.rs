//! The figures of the reconstructed protocol (method.md §7), drawn with plotters as PNG and
//! SVG from run results ([`RunRecord`]) and from the CSV tables of `esso exactness` and
//! `esso cost` (docs/figures.md).
//!
//! | function | figure |
//! |---|---|
//! | [`training_curves`] | 1: training loss and test accuracy vs epoch and wall-clock |
//! | [`eigenvalue_histograms`] | 2: exact per-layer eigenvalue histograms, init and end |
//! | [`negative_fraction`] | 3: fraction of negative exact eigenvalues per layer |
//! | [`sensitivity_heatmap`] | 4: final test accuracy over λ × η |
//! | [`exactness_figure`] | 5: closed-form vs dense eigenvalues |
//! | [`cost_figure`] | 6: time per step vs parameter count |
//! | [`sharpness_vs_gap`] | 7: sharpness vs generalisation gap, one point per run |
//! | [`landscape_1d_figure`] | 8: 1D interpolations (init → solution, solution → solution) |
//! | [`landscape_2d_figure`] | 9: 2D filter-normalised loss surfaces around each solution |
//! | [`spectral_density`] | 10: SLQ spectral density with the exact eigenvalues |
//! | [`top_eigenvalue_over_training`] | 11: top Hessian eigenvalue over training and 2/η |
//!
//! Figures 7–10 read the `/analysis` sections written by `esso analyze` ([`Run::analysis`]),
//! figure 11 the `/top_eigenvalue` table written during training.
//!
//! Each takes a file stem (`…/fig1-curves-mnist`) and writes `stem.png` and `stem.svg`,
//! returning both paths. Runs of one experiment are grouped by optimiser ([`group_runs`]):
//! the seeds of one sweep point form a group, drawn as a mean with a min–max band.
//!
//! Drawing lives here, in the `esso` binary's crate, so that `cargo xtask` only orchestrates
//! and stays light (no plotters, no HDF5 in xtask).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use esso_hessian::SpectralKind;
use esso_optim::OptimizerConfig;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::analysis::RunAnalysis;
use crate::config::RunConfig;
use crate::results::{RunRecord, RunStatus};

mod cost;
mod curves;
mod density;
mod exactness;
mod landscape;
mod sensitivity;
mod sharpness;
mod spectra;
mod style;
mod top_eigenvalue;

pub use cost::cost_figure;
pub use curves::training_curves;
pub use density::spectral_density;
pub use exactness::exactness_figure;
pub use landscape::{landscape_1d_figure, landscape_2d_figure};
pub use sensitivity::sensitivity_heatmap;
pub use sharpness::sharpness_vs_gap;
pub use spectra::{eigenvalue_histograms, negative_fraction};
pub use top_eigenvalue::top_eigenvalue_over_training;

/// Checks that text can be drawn (a sans-serif TrueType font is installed).
///
/// # Errors
/// When no font can be loaded, with the package to install.
pub fn check_fonts() -> Result<()> {
    style::check_fonts()
}

/// A run with its parsed config and the analyses of `esso analyze`.
#[derive(Debug, Clone)]
pub struct Run {
    /// The results.
    pub record: RunRecord,
    /// The resolved config stored in the results file.
    pub config: RunConfig,
    /// The run's `/analysis` (empty when not analysed).
    pub analysis: RunAnalysis,
}

impl Run {
    /// Parses the config stored in `record`.
    ///
    /// # Errors
    /// When the stored config is not a valid run config.
    pub fn new(record: RunRecord) -> Result<Run> {
        let config: RunConfig = toml::from_str(&record.config_toml)
            .map_err(|e| anyhow!("run {}: stored config: {e}", record.name))?;
        Ok(Run { record, config, analysis: RunAnalysis::default() })
    }

    /// The run with these analyses.
    #[must_use]
    pub fn with_analysis(mut self, analysis: RunAnalysis) -> Run {
        self.analysis = analysis;
        self
    }

    /// The sweep label: the run name without the experiment name and the seed.
    pub fn label(&self) -> String {
        let name = &self.record.name;
        let name = name.strip_prefix(&format!("{}-", self.config.name)).unwrap_or(name);
        let suffix = format!("-seed{}", self.config.seed);
        name.strip_suffix(&suffix).unwrap_or(name).to_string()
    }

    /// Whether the run diverged.
    pub fn diverged(&self) -> bool {
        matches!(self.record.status, RunStatus::Diverged { .. })
    }
}

/// The seeds of one sweep point (one optimiser) of an experiment.
#[derive(Debug, Clone)]
pub struct RunGroup {
    /// The sweep label (e.g. `esso-abs`).
    pub label: String,
    /// A legend label with the hyperparameters (e.g. `ESSO abs (η=0.1, λ=3)`).
    pub display: String,
    /// The group's colour.
    pub color: RGBColor,
    /// The runs, one per seed.
    pub runs: Vec<Run>,
}

impl RunGroup {
    /// Number of diverged runs.
    pub fn n_diverged(&self) -> usize {
        self.runs.iter().filter(|r| r.diverged()).count()
    }

    /// The legend label with a divergence note when some seed diverged.
    pub fn legend(&self) -> String {
        match self.n_diverged() {
            0 => self.display.clone(),
            k => format!("{} [{k}/{} diverged]", self.display, self.runs.len()),
        }
    }
}

/// Legend order and colour of an optimiser: ESSO absolute, ESSO power, other ESSO, SGD,
/// SGD with momentum, Adam, AdamW.
fn category(config: &OptimizerConfig) -> (usize, RGBColor) {
    match config {
        OptimizerConfig::Esso(c) => match c.spectral {
            SpectralKind::Absolute => (0, RGBColor(214, 39, 40)),
            SpectralKind::Power { .. } => (1, RGBColor(255, 127, 14)),
            _ => (2, RGBColor(140, 86, 75)),
        },
        OptimizerConfig::Sgd(c) if c.momentum == 0.0 => (3, RGBColor(31, 119, 180)),
        OptimizerConfig::Sgd(_) => (4, RGBColor(44, 160, 44)),
        OptimizerConfig::Adam(_) => (5, RGBColor(148, 103, 189)),
        OptimizerConfig::AdamW(_) => (6, RGBColor(227, 119, 194)),
    }
}

/// A legend label for an optimiser config, with its hyperparameters.
pub fn optimizer_display(config: &OptimizerConfig) -> String {
    use style::short_number as n;
    match config {
        OptimizerConfig::Esso(c) => {
            let f = match c.spectral {
                SpectralKind::Absolute => "abs".to_string(),
                SpectralKind::Power { alpha } => format!("power α={}", n(alpha)),
                SpectralKind::Damped => "damped".to_string(),
                SpectralKind::Floor => "floor".to_string(),
            };
            let scope = match c.scope {
                esso_optim::CurvatureScope::Layerwise => "",
                esso_optim::CurvatureScope::FullNetwork => ", whole net",
            };
            format!("ESSO {f} (η={}, λ={}{scope})", n(c.lr), n(c.lambda))
        }
        OptimizerConfig::Sgd(c) if c.momentum == 0.0 => format!("SGD (η={})", n(c.lr)),
        OptimizerConfig::Sgd(c) => {
            let kind = if c.nesterov { "Nesterov" } else { "momentum" };
            format!("SGD+{kind} (η={}, μ={})", n(c.lr), n(c.momentum))
        }
        OptimizerConfig::Adam(c) => format!("Adam (η={})", n(c.lr)),
        OptimizerConfig::AdamW(c) => format!("AdamW (η={})", n(c.lr)),
    }
}

/// Groups runs by sweep label, ordered ESSO first, then SGD, momentum, Adam; seeds sorted.
pub fn group_runs(runs: Vec<Run>) -> Vec<RunGroup> {
    let mut groups: Vec<(usize, RunGroup)> = Vec::new();
    for run in runs {
        let label = run.label();
        match groups.iter_mut().find(|(_, g)| g.label == label) {
            Some((_, g)) => g.runs.push(run),
            None => {
                let (order, color) = category(&run.config.optimizer);
                let display = optimizer_display(&run.config.optimizer);
                groups.push((order, RunGroup { label, display, color, runs: vec![run] }));
            }
        }
    }
    groups.sort_by(|(a, ga), (b, gb)| a.cmp(b).then_with(|| ga.label.cmp(&gb.label)));
    // Groups of one category share a hue: the second is darker, the third lighter, the
    // fourth darker still, …
    let mut out: Vec<RunGroup> = Vec::new();
    for (order, mut g) in groups {
        let same = groups_before(&out, order);
        if same > 0 {
            let RGBColor(r, gr, b) = g.color;
            let shade = |c: u8| -> u8 {
                let c = f64::from(c);
                let v = match same % 3 {
                    1 => c * 0.55,
                    2 => c + (255.0 - c) * 0.5,
                    _ => c * 0.3,
                };
                v.round().clamp(0.0, 255.0) as u8
            };
            g.color = RGBColor(shade(r), shade(gr), shade(b));
        }
        g.runs.sort_by_key(|r| r.config.seed);
        out.push(g);
    }
    out
}

fn groups_before(out: &[RunGroup], order: usize) -> usize {
    out.iter().filter(|g| category(&g.runs[0].config.optimizer).0 == order).count()
}

/// Loads every results file (`*.h5`) directly inside `dir`, sorted by name, with its
/// analyses.
///
/// # Errors
/// An unreadable folder or results file.
pub fn load_runs(dir: &Path) -> Result<Vec<Run>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "h5"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let analysis = RunAnalysis::from_sections(&crate::results::read_analysis(&p)?)
                .with_context(|| format!("{}: /analysis", p.display()))?;
            Ok(Run::new(RunRecord::load(&p)?)?.with_analysis(analysis))
        })
        .collect()
}

/// Something drawable on any plotters backend.
trait Figure {
    /// Pixel size (PNG) and user units (SVG).
    fn size(&self) -> (u32, u32);
    /// Draws the whole figure on `root`.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Writes `stem.png` and `stem.svg`.
fn save(figure: &impl Figure, stem: &Path) -> Result<Vec<PathBuf>> {
    style::check_fonts()?;
    if let Some(parent) = stem.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating folder {}", parent.display()))?;
    }
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    {
        let root = BitMapBackend::new(&png, figure.size()).into_drawing_area();
        figure.draw(&root).with_context(|| format!("drawing {}", png.display()))?;
        root.present().map_err(|e| anyhow!("writing {}: {e}", png.display()))?;
    }
    {
        let root = SVGBackend::new(&svg, figure.size()).into_drawing_area();
        figure.draw(&root).with_context(|| format!("drawing {}", svg.display()))?;
        root.present().map_err(|e| anyhow!("writing {}: {e}", svg.display()))?;
    }
    Ok(vec![png, svg])
}

/// A point of a mean curve with its band: (x, mean, min, max).
type Band = (f64, f64, f64, f64);

/// Mean, min and max over seeds of a series per seed, index by index (truncated to the
/// shortest series): `(x mean, y mean, y min, y max)`.
fn mean_band(series: &[Vec<(f64, f64)>]) -> Vec<Band> {
    let n = series.iter().map(Vec::len).min().unwrap_or(0);
    (0..n)
        .map(|i| {
            let k = series.len() as f64;
            let x = series.iter().map(|s| s[i].0).sum::<f64>() / k;
            let ys = series.iter().map(|s| s[i].1);
            let y = ys.clone().sum::<f64>() / k;
            let lo = ys.clone().fold(f64::INFINITY, f64::min);
            let hi = ys.fold(f64::NEG_INFINITY, f64::max);
            (x, y, lo, hi)
        })
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect()
}

//! `esso figures`: draw the figures of the reconstructed protocol from a folder of runs.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use esso_bench::figures::{self, Run, RunGroup};
use esso_bench::{cost, exactness};

/// The figure names accepted by `--only` (and by `cargo xtask reproduce --only`).
pub const FIGURE_NAMES: &[&str] = &[
    "curves",
    "spectra",
    "sensitivity",
    "exactness",
    "cost",
    "sharpness",
    "landscape",
    "density",
    "top-eigenvalue",
];

/// Arguments of `esso figures`.
#[derive(Debug, clap::Args)]
pub struct FiguresArgs {
    /// Folder of one profile's runs: `<experiment>/*.h5` for each experiment, plus
    /// `exactness.csv` and `cost.csv`.
    #[arg(long, default_value = "results/runs/quick")]
    pub runs: PathBuf,
    /// Where to write the PNG and SVG files.
    #[arg(long, default_value = "results/figures/quick")]
    pub out: PathBuf,
    /// Experiments drawn as training curves and spectra (figures 1–3), one figure each.
    #[arg(long, value_delimiter = ',', default_value = "mnist,fashion-mnist")]
    pub curves: Vec<String>,
    /// The experiment of the λ × η grid (figure 4).
    #[arg(long, default_value = "sensitivity")]
    pub sensitivity: String,
    /// Experiments whose runs were analysed with `esso analyze --sharpness`: sharpness vs
    /// generalisation gap (figure 7).
    #[arg(long, value_delimiter = ',', default_value = "mnist")]
    pub sharpness: Vec<String>,
    /// Experiments analysed with `esso analyze --landscape 1d,2d` (figures 8, 9).
    #[arg(long, value_delimiter = ',', default_value = "mnist")]
    pub landscape: Vec<String>,
    /// Experiments analysed with `esso analyze --spectrum` (figure 10) and run with
    /// `[tracking] top_eigenvalue_every` (figure 11).
    #[arg(long, value_delimiter = ',', default_value = "curvature")]
    pub curvature: Vec<String>,
    /// Draw only this figure: curves (1), spectra (2, 3), sensitivity (4), exactness (5),
    /// cost (6), sharpness (7), landscape (8, 9), density (10), top-eigenvalue (11).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(FIGURE_NAMES))]
    pub only: Option<String>,
}

/// Runs `esso figures`.
pub fn run(args: FiguresArgs) -> Result<()> {
    figures::check_fonts()?;
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    let mut written: Vec<PathBuf> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();

    if wanted("curves") || wanted("spectra") {
        for experiment in &args.curves {
            let dir = args.runs.join(experiment);
            let Some(groups) = load_groups(&dir, &mut skipped)? else { continue };
            let what = describe(&groups);
            if wanted("curves") {
                written.extend(figures::training_curves(
                    &groups,
                    &format!("Training curves: {what}"),
                    &args.out.join(format!("fig1-curves-{experiment}")),
                )?);
            }
            if wanted("spectra") {
                written.extend(figures::eigenvalue_histograms(
                    &groups,
                    &format!(
                        "Exact per-layer eigenvalues at initialisation and at the end: {what}"
                    ),
                    &args.out.join(format!("fig2-histograms-{experiment}")),
                )?);
                written.extend(figures::negative_fraction(
                    &groups,
                    &format!("Fraction of negative exact eigenvalues per layer: {what}"),
                    &args.out.join(format!("fig3-negative-{experiment}")),
                )?);
            }
        }
    }
    if wanted("sensitivity") {
        let dir = args.runs.join(&args.sensitivity);
        if let Some(groups) = load_groups(&dir, &mut skipped)? {
            let runs: Vec<Run> = groups.iter().flat_map(|g| g.runs.iter().cloned()).collect();
            let what = describe(&groups);
            written.extend(figures::sensitivity_heatmap(
                &runs,
                &format!("Sensitivity of ESSO (absolute) to λ and η: {what}"),
                &args.out.join("fig4-sensitivity"),
            )?);
        }
    }
    if wanted("exactness") {
        let csv = args.runs.join("exactness.csv");
        if csv.exists() {
            let rows = exactness::read_csv(&csv)?;
            written.extend(figures::exactness_figure(&rows, &args.out.join("fig5-exactness"))?);
        } else {
            skipped.push(format!("exactness: no {}", csv.display()));
        }
    }
    if wanted("cost") {
        let csv = args.runs.join("cost.csv");
        if csv.exists() {
            let rows = cost::read_csv(&csv)?;
            written.extend(figures::cost_figure(&rows, &args.out.join("fig6-cost"))?);
        } else {
            skipped.push(format!("cost: no {}", csv.display()));
        }
    }
    if wanted("sharpness") {
        for experiment in &args.sharpness {
            let dir = args.runs.join(experiment);
            let Some(groups) = load_groups(&dir, &mut skipped)? else { continue };
            let what = describe(&groups);
            let setting =
                analysis_setting(&groups, |r| r.analysis.sharpness.as_ref().map(|s| &s.settings));
            written.extend(figures::sharpness_vs_gap(
                &groups,
                &format!("Sharpness of each solution vs generalisation gap: {what}{setting}"),
                &args.out.join(format!("fig7-sharpness-{experiment}")),
            )?);
        }
    }
    if wanted("landscape") {
        for experiment in &args.landscape {
            let dir = args.runs.join(experiment);
            let Some(groups) = load_groups(&dir, &mut skipped)? else { continue };
            let what = describe(&groups);
            written.extend(figures::landscape_1d_figure(
                &groups,
                &format!("1D loss interpolations: {what}"),
                &args.out.join(format!("fig8-landscape-1d-{experiment}")),
            )?);
            written.extend(figures::landscape_2d_figure(
                &groups,
                &format!("2D loss surfaces, filter-normalised directions: {what}"),
                &args.out.join(format!("fig9-landscape-2d-{experiment}")),
            )?);
        }
    }
    if wanted("density") || wanted("top-eigenvalue") {
        for experiment in &args.curvature {
            let dir = args.runs.join(experiment);
            let Some(groups) = load_groups(&dir, &mut skipped)? else { continue };
            let what = describe(&groups);
            if wanted("density") {
                let setting = analysis_setting(&groups, |r| {
                    r.analysis.spectrum.as_ref().map(|s| &s.settings)
                });
                written.extend(figures::spectral_density(
                    &groups,
                    &format!("Hessian spectral density at the solution: {what}{setting}"),
                    &args.out.join(format!("fig10-density-{experiment}")),
                )?);
            }
            if wanted("top-eigenvalue") {
                written.extend(figures::top_eigenvalue_over_training(
                    &groups,
                    &format!("Top Hessian eigenvalue during training: {what}"),
                    &args.out.join(format!("fig11-top-eigenvalue-{experiment}")),
                )?);
            }
        }
    }
    for path in &written {
        println!("{}", path.display());
    }
    for s in &skipped {
        eprintln!("esso figures: skipped {s}");
    }
    if written.is_empty() {
        bail!(
            "no figure drawn from {} ({}); run the experiments first (cargo xtask reproduce)",
            args.runs.display(),
            skipped.join("; ")
        );
    }
    if args.only.is_some() && !skipped.is_empty() {
        bail!("missing inputs: {}", skipped.join("; "));
    }
    eprintln!("esso figures: {} file(s) in {}", written.len(), args.out.display());
    Ok(())
}

/// The runs of `dir` grouped by optimiser, or `None` (noted in `skipped`) when there are none.
fn load_groups(dir: &Path, skipped: &mut Vec<String>) -> Result<Option<Vec<RunGroup>>> {
    if !dir.is_dir() {
        skipped.push(format!("no folder {}", dir.display()));
        return Ok(None);
    }
    let runs = figures::load_runs(dir)?;
    if runs.is_empty() {
        skipped.push(format!("no results files in {}", dir.display()));
        return Ok(None);
    }
    Ok(Some(figures::group_runs(runs)))
}

/// `, Hessian on 1000 samples` from the first analysed run's `n_samples` setting.
fn analysis_setting(
    groups: &[RunGroup],
    settings: impl Fn(&Run) -> Option<&esso_bench::analysis::Settings>,
) -> String {
    groups
        .iter()
        .flat_map(|g| &g.runs)
        .find_map(settings)
        .and_then(|s| s.get("n_samples"))
        .and_then(|v| v.as_f64())
        .map_or(String::new(), |n| format!(", analysis on {n} training samples"))
}

/// `MNIST (first 2000 training samples), 784-128-64-10 tanh, batch 1, 2 epochs, 2 seeds`.
fn describe(groups: &[RunGroup]) -> String {
    let Some(run) = groups.first().and_then(|g| g.runs.first()) else {
        return String::new();
    };
    let c = &run.config;
    let dataset = match c.data.dataset.as_str() {
        "mnist" => "MNIST".to_string(),
        "fashion-mnist" => "Fashion-MNIST".to_string(),
        "digits" => "8×8 digits".to_string(),
        other => other.to_string(),
    };
    let subset = match (c.data.train_first, c.data.train_per_class) {
        (Some(k), _) => format!(" (first {k} training samples)"),
        (None, Some(k)) => format!(" ({k} training samples per class)"),
        (None, None) => String::new(),
    };
    let sizes: Vec<String> = c.model.sizes.iter().map(usize::to_string).collect();
    let activation = serde_json::to_value(c.model.activation)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", c.model.activation).to_lowercase());
    let n_seeds = groups.iter().map(|g| g.runs.len()).max().unwrap_or(1);
    format!(
        "{dataset}{subset}, {} {activation}, batch {}, {} epoch{}, {n_seeds} seed{}",
        sizes.join("-"),
        c.train.batch_size,
        c.train.epochs,
        if c.train.epochs == 1 { "" } else { "s" },
        if n_seeds == 1 { "" } else { "s" }
    )
}

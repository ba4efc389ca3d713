//! The computations of `esso analyze` on top of esso-hessian: each takes a
//! [`FinishedRun`], its dataset and options, and returns a typed result.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use esso_data::{Dataset, Split};
use esso_hessian::batch::{BatchHessian, SymmetricOperator};
use esso_hessian::density::{self, SlqOptions};
use esso_hessian::lanczos::{self, LanczosOptions, Which};
use esso_hessian::landscape::{self, BiasMode, DirectionOptions};
use esso_hessian::sharpness::{self, EpsSharpnessOptions, RhoSharpnessOptions};
use esso_hessian::trace;

use super::sections::{
    Estimate, InterpolationPath, Landscape1d, Landscape2d, SharpnessResult, SpectrumResult,
};
use super::{FinishedRun, provenance, sample_subset, targets_of};
use crate::results::{AnalysisSection, AttrValue};

/// Progress of a long analysis: a bar on a terminal, or nothing.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// No output.
    pub fn hidden() -> Self {
        Progress { bar: None }
    }

    /// A bar in `multi`, prefixed by `prefix` (the run name).
    pub fn bar(multi: &indicatif::MultiProgress, prefix: &str) -> Self {
        let bar = multi.add(indicatif::ProgressBar::new(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:24}] {pos}/{len} {msg} ({elapsed}, ETA {eta})",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_prefix(prefix.to_string());
        Progress { bar: Some(bar) }
    }

    /// Starts a stage of `total` units described by `what`.
    pub fn stage(&self, what: &str, total: u64) {
        if let Some(bar) = &self.bar {
            bar.reset();
            bar.set_length(total.max(1));
            bar.set_position(0);
            bar.set_message(what.to_string());
        }
    }

    /// Sets the position within the stage.
    pub fn set(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
    }

    /// Advances the position by one.
    pub fn inc(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Ends the bar with a message.
    pub fn finish(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_with_message(message.to_string());
        }
    }
}

/// The analysis samples: a seeded subset of a split and the indices drawn.
#[derive(Debug, Clone)]
pub struct SampleSet {
    /// Indices into the split, ascending.
    pub indices: Vec<usize>,
    /// The selected samples.
    pub split: Split,
}

impl SampleSet {
    /// `k` samples of `split` drawn by [`sample_subset`] with `seed` (all for k = 0).
    pub fn draw(split: &Split, k: usize, seed: u64) -> SampleSet {
        let indices = sample_subset(split.n_samples(), k, seed);
        let split = split.select(&indices);
        SampleSet { indices, split }
    }
}

/// Options of [`spectrum()`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SpectrumOptions {
    /// Training samples of the Hessian (a seeded subset; 0 = all).
    pub n_samples: usize,
    /// Seed of the subset.
    pub sample_seed: u64,
    /// k of the top-k and bottom-k eigenvalues.
    pub k: usize,
    /// Largest Krylov dimension of each Lanczos run.
    pub lanczos_iterations: usize,
    /// Relative residual tolerance of a converged Ritz pair.
    pub lanczos_tol: f64,
    /// Products of each trace estimator (Hutchinson probes; Hutch++ budget).
    pub trace_probes: usize,
    /// Random probes of stochastic Lanczos quadrature.
    pub slq_probes: usize,
    /// Lanczos steps per SLQ probe.
    pub slq_steps: usize,
    /// Points of the density grid.
    pub density_points: usize,
    /// Width σ of the Gaussian kernel of the density, relative to the spectrum's range.
    pub density_sigma: f64,
    /// Compute the exact spectrum when n_samples · m is at most this (B·m of
    /// `BatchHessian::exact_spectrum`; 0 = never).
    pub exact_max_rows: usize,
    /// Seed of the Lanczos start vectors and of the probes.
    pub seed: u64,
}

impl Default for SpectrumOptions {
    fn default() -> Self {
        SpectrumOptions {
            n_samples: 1000,
            sample_seed: 0,
            k: 5,
            lanczos_iterations: 100,
            lanczos_tol: 1e-6,
            trace_probes: 30,
            slq_probes: 10,
            slq_steps: 60,
            density_points: 400,
            density_sigma: 0.01,
            exact_max_rows: 4096,
            seed: 0,
        }
    }
}

/// Options of [`sharpness()`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SharpnessOptions {
    /// Training samples of the Hessian and of the sharpness ascents (seeded subset; 0 = all).
    pub n_samples: usize,
    /// Seed of the subset.
    pub sample_seed: u64,
    /// Largest Krylov dimension of the Lanczos run for λ_max.
    pub lanczos_iterations: usize,
    /// Relative residual tolerance of λ_max.
    pub lanczos_tol: f64,
    /// ε of the ε-sharpness box |y_i| ≤ ε (|θ_i| + 1).
    pub epsilon: f64,
    /// ρ of the ρ-sharpness ball ‖y‖₂ ≤ ρ.
    pub rho: f64,
    /// Ascent steps of each sharpness maximisation.
    pub ascent_steps: usize,
    /// Seed of the Lanczos start vector and of the random-corner start of the ε ascent.
    pub seed: u64,
}

impl Default for SharpnessOptions {
    fn default() -> Self {
        SharpnessOptions {
            n_samples: 1000,
            sample_seed: 0,
            lanczos_iterations: 100,
            lanczos_tol: 1e-6,
            epsilon: 1e-3,
            rho: 0.05,
            ascent_steps: 20,
            seed: 0,
        }
    }
}

/// Options of [`landscape_1d`] and [`landscape_2d`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LandscapeOptions {
    /// Training samples evaluated at each point (seeded subset; 0 = all).
    pub n_samples: usize,
    /// Test samples evaluated at each point (seeded subset; 0 = all).
    pub n_test_samples: usize,
    /// Seed of both subsets.
    pub sample_seed: u64,
    /// 1D: points on [0, 1] along each path (α = 0 and α = 1 included), spaced
    /// h = 1/(points − 1).
    pub points_1d: usize,
    /// 1D: the path extends beyond both ends by the whole number of steps h closest to
    /// this margin (see [`interpolation_grid`]).
    pub margin_1d: f64,
    /// 2D: points per axis.
    pub points_2d: usize,
    /// 2D: both coordinates run over [−span, span].
    pub span_2d: f64,
    /// 2D: seed of the two random directions.
    pub direction_seed: u64,
    /// 2D: what the directions do with biases.
    pub bias: BiasMode,
    /// 2D: orthogonalise the second direction against the first, filter by filter.
    pub orthogonalize: bool,
}

impl Default for LandscapeOptions {
    fn default() -> Self {
        LandscapeOptions {
            n_samples: 1000,
            n_test_samples: 1000,
            sample_seed: 0,
            points_1d: 21,
            margin_1d: 0.25,
            points_2d: 25,
            span_2d: 1.0,
            direction_seed: 0,
            bias: BiasMode::Zero,
            orthogonalize: false,
        }
    }
}

fn int(v: usize) -> AttrValue {
    AttrValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

fn uint(v: u64) -> AttrValue {
    AttrValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// `n` evenly spaced values from `lo` to `hi` (both included; `[lo]` for n = 1).
pub fn linspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![lo],
        _ => (0..n).map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64).collect(),
    }
}

/// The α grid of the 1D interpolations: α_k = k/(points − 1) for k = −K, …, points − 1 + K
/// with K = round(margin · (points − 1)), so that α = 0 and α = 1 are grid points exactly.
///
/// # Examples
/// ```
/// let alpha = esso_bench::analysis::interpolation_grid(5, 0.25);
/// assert_eq!(alpha, [-0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25]);
/// ```
pub fn interpolation_grid(points: usize, margin: f64) -> Vec<f64> {
    let n = points.saturating_sub(1).max(1) as f64;
    let extra = (margin.max(0.0) * n).round() as i64;
    let last = points.saturating_sub(1) as i64 + extra;
    (-extra..=last).map(|k| k as f64 / n).collect()
}

/// The k extreme eigenvalues of `op` at one end, with a progress stage.
fn extreme_eigenvalues<O: SymmetricOperator + ?Sized>(
    op: &O,
    k: usize,
    which: Which,
    options: &LanczosOptions,
    progress: &Progress,
    what: &str,
) -> Result<lanczos::Eigenpairs> {
    progress.stage(what, options.max_iter.min(op.dim()) as u64);
    let k = k.min(op.dim());
    lanczos::eigenpairs_with_progress(op, k, which, options, &mut |p| {
        progress.set(p.iteration as u64);
    })
    .with_context(|| format!("Lanczos ({what})"))
}

/// The `spectrum` analysis of a run's solution: top-k and bottom-k eigenvalues (Lanczos),
/// the exact trace and its Hutchinson and Hutch++ estimates, the SLQ spectral density and,
/// when n_samples · m ≤ `exact_max_rows`, every eigenvalue exactly.
///
/// # Errors
/// Invalid options, numerical errors of esso-hessian (named by stage).
pub fn spectrum(
    run: &FinishedRun,
    data: &Dataset,
    options: &SpectrumOptions,
    progress: &Progress,
) -> Result<SpectrumResult> {
    let start = Instant::now();
    if options.k == 0 {
        bail!("--top-k 0: at least one eigenvalue is needed");
    }
    let samples = SampleSet::draw(data.train(), options.n_samples, options.sample_seed);
    let xs = samples.split.features();
    let hessian = BatchHessian::new(&run.solution, run.loss(), xs, targets_of(&samples.split))
        .context("the mean Hessian of the analysis samples")?;
    let lanczos_options = LanczosOptions {
        tol: options.lanczos_tol,
        max_iter: options.lanczos_iterations,
        seed: options.seed,
    };
    let top = extreme_eigenvalues(
        &hessian,
        options.k,
        Which::Largest,
        &lanczos_options,
        progress,
        "top eigenvalues",
    )?;
    let bottom = extreme_eigenvalues(
        &hessian,
        options.k,
        Which::Smallest,
        &lanczos_options,
        progress,
        "bottom eigenvalues",
    )?;
    progress.stage("exact trace", 1);
    let trace_exact = hessian.trace().context("exact trace")?;
    progress.stage("Hutchinson trace", 1);
    let hutchinson = trace::hutchinson(&hessian, options.trace_probes, options.seed)
        .context("Hutchinson trace")?;
    progress.stage("Hutch++ trace", 1);
    let hutchpp = trace::hutchpp(&hessian, options.trace_probes.max(3), options.seed)
        .context("Hutch++ trace")?;
    let (density_grid, density) = slq_density(&hessian, options, progress)?;
    let m = hessian.n_rows_k();
    let (exact_eigenvalues, exact_structural_zeros) = if options.exact_max_rows > 0
        && samples.indices.len().saturating_mul(m) <= options.exact_max_rows
    {
        progress.stage("exact spectrum", 1);
        let spectrum = hessian.exact_spectrum(false).context("exact spectrum")?;
        (Some(spectrum.eigenvalues().to_vec()), spectrum.n_structural_zeros())
    } else {
        (None, 0)
    };
    let mut section = AnalysisSection::new(super::SPECTRUM);
    provenance(&mut section, run, start.elapsed().as_secs_f64());
    let attrs = [
        ("n_samples", int(samples.indices.len())),
        ("sample_seed", uint(options.sample_seed)),
        ("k", int(options.k)),
        ("lanczos_iterations", int(options.lanczos_iterations)),
        ("lanczos_tol", AttrValue::Float(options.lanczos_tol)),
        ("top_lanczos_converged", int(usize::from(top.converged))),
        ("bottom_lanczos_converged", int(usize::from(bottom.converged))),
        ("trace_probes", int(options.trace_probes)),
        ("slq_probes", int(options.slq_probes)),
        ("slq_steps", int(options.slq_steps)),
        ("density_points", int(options.density_points)),
        ("density_sigma", AttrValue::Float(options.density_sigma)),
        ("exact_max_rows", int(options.exact_max_rows)),
        ("rows_per_sample", int(m)),
        ("seed", uint(options.seed)),
        ("loss", AttrValue::Float(hessian.loss())),
    ];
    for (k, v) in attrs {
        section.set_attr(k, v);
    }
    Ok(SpectrumResult {
        settings: section.attributes,
        n_params: hessian.dim(),
        top_eigenvalues: top.values.clone(),
        bottom_eigenvalues: bottom.values.clone(),
        top_residuals: top.residual_norms.clone(),
        bottom_residuals: bottom.residual_norms.clone(),
        trace_exact,
        trace_hutchinson: estimate(&hutchinson),
        trace_hutchpp: estimate(&hutchpp),
        density_grid,
        density,
        exact_eigenvalues,
        exact_structural_zeros,
        sample_indices: samples.indices.clone(),
    })
}

fn estimate(e: &trace::TraceEstimate) -> Estimate {
    Estimate { value: e.estimate, std_error: e.std_error.unwrap_or(f64::NAN) }
}

/// The SLQ density (`esso_hessian::density::slq`) smoothed by a Gaussian of width
/// σ = `density_sigma` · (max θ − min θ) over the Ritz nodes θ, on `density_points` points
/// from min θ − 5σ to max θ + 5σ: (grid, density).
fn slq_density(
    hessian: &BatchHessian<'_>,
    options: &SpectrumOptions,
    progress: &Progress,
) -> Result<(Vec<f64>, Vec<f64>)> {
    if !(options.density_sigma.is_finite() && options.density_sigma > 0.0) {
        bail!("--density-sigma {}: must be finite and > 0", options.density_sigma);
    }
    progress.stage("SLQ density", 1);
    let slq = density::slq(
        hessian,
        &SlqOptions {
            n_probes: options.slq_probes,
            n_steps: options.slq_steps,
            seed: options.seed,
        },
    )
    .context("SLQ density")?;
    let (lo, hi) = slq
        .nodes()
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &t| (a.min(t), b.max(t)));
    let range = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    let sigma = options.density_sigma * range;
    let grid = slq.grid(options.density_points, 5.0 * sigma).context("SLQ density grid")?;
    let values = slq.smoothed(&grid, sigma).context("SLQ density")?;
    Ok((grid, values))
}

/// The `sharpness` analysis of a run's solution: λ_max and tr H of the mean Hessian over
/// the analysis samples, ε- and ρ-sharpness on the same samples, and the losses and
/// accuracies on the run's whole training and test sets.
///
/// # Errors
/// Invalid options, numerical errors of esso-hessian (named by stage).
pub fn sharpness(
    run: &FinishedRun,
    data: &Dataset,
    options: &SharpnessOptions,
    progress: &Progress,
) -> Result<SharpnessResult> {
    let start = Instant::now();
    let samples = SampleSet::draw(data.train(), options.n_samples, options.sample_seed);
    let xs = samples.split.features();
    let targets = targets_of(&samples.split);
    let loss = run.loss();
    let hessian = BatchHessian::new(&run.solution, loss, xs, targets)
        .context("the mean Hessian of the analysis samples")?;
    let lanczos_options = LanczosOptions {
        tol: options.lanczos_tol,
        max_iter: options.lanczos_iterations,
        seed: options.seed,
    };
    let top =
        extreme_eigenvalues(&hessian, 1, Which::Largest, &lanczos_options, progress, "λ_max")?;
    progress.stage("exact trace", 1);
    let trace = hessian.trace().context("exact trace")?;
    progress.stage("ε-sharpness", 1);
    let eps = sharpness::eps_sharpness(
        &run.solution,
        loss,
        xs,
        targets,
        &EpsSharpnessOptions {
            epsilon: options.epsilon,
            steps: options.ascent_steps,
            random_corner_seed: Some(options.seed),
            ..EpsSharpnessOptions::default()
        },
    )
    .context("ε-sharpness")?;
    progress.stage("ρ-sharpness", 1);
    let rho = sharpness::rho_sharpness(
        &run.solution,
        loss,
        xs,
        targets,
        &RhoSharpnessOptions {
            rho: options.rho,
            steps: options.ascent_steps,
            ..RhoSharpnessOptions::default()
        },
    )
    .context("ρ-sharpness")?;
    progress.stage("train and test evaluation", 1);
    let (train, test) = (data.train(), data.test());
    let train_eval = run.solution.evaluate(train.features(), targets_of(train), loss)?;
    let test_eval = run.solution.evaluate(test.features(), targets_of(test), loss)?;

    let mut section = AnalysisSection::new(super::SHARPNESS);
    provenance(&mut section, run, start.elapsed().as_secs_f64());
    let attrs = [
        ("n_samples", int(samples.indices.len())),
        ("sample_seed", uint(options.sample_seed)),
        ("n_train", int(train.n_samples())),
        ("n_test", int(test.n_samples())),
        ("lanczos_iterations", int(options.lanczos_iterations)),
        ("lanczos_tol", AttrValue::Float(options.lanczos_tol)),
        ("lanczos_converged", int(usize::from(top.converged))),
        ("top_eigenvalue_residual", AttrValue::Float(top.residual_norms[0])),
        ("epsilon", AttrValue::Float(options.epsilon)),
        ("rho", AttrValue::Float(options.rho)),
        ("ascent_steps", int(options.ascent_steps)),
        ("seed", uint(options.seed)),
        ("epsilon_max_loss", AttrValue::Float(eps.max_loss)),
        ("epsilon_from_random_corner", int(usize::from(eps.from_random_corner))),
        ("rho_max_loss", AttrValue::Float(rho.max_loss)),
        ("gradient_norm", AttrValue::Float(rho.gradient_norm)),
    ];
    for (k, v) in attrs {
        section.set_attr(k, v);
    }
    Ok(SharpnessResult {
        settings: section.attributes,
        top_eigenvalue: top.values[0],
        trace,
        epsilon_sharpness: eps.sharpness,
        rho_sharpness: rho.sharpness,
        rho_sharpness_one_step: rho.one_step,
        subset_loss: hessian.loss(),
        train_loss: train_eval.mean_loss,
        train_accuracy: train_eval.accuracy.unwrap_or(f64::NAN),
        test_loss: test_eval.mean_loss,
        test_accuracy: test_eval.accuracy.unwrap_or(f64::NAN),
        sample_indices: samples.indices,
    })
}

/// The `landscape_1d` analysis: loss and accuracy along init → solution and along
/// solution → the solution of each of `others` (same architecture), on the α grid of
/// [`interpolation_grid`], on the analysis training and test samples.
///
/// # Errors
/// Invalid options, other runs of another architecture, evaluation errors.
pub fn landscape_1d(
    run: &FinishedRun,
    others: &[FinishedRun],
    data: &Dataset,
    options: &LandscapeOptions,
    progress: &Progress,
) -> Result<Landscape1d> {
    let start = Instant::now();
    if options.points_1d < 2 || !options.margin_1d.is_finite() || options.margin_1d < 0.0 {
        bail!(
            "1D landscape: need ≥ 2 points and a finite margin ≥ 0 (got {} points, margin {})",
            options.points_1d,
            options.margin_1d
        );
    }
    let train = SampleSet::draw(data.train(), options.n_samples, options.sample_seed);
    let test = SampleSet::draw(data.test(), options.n_test_samples, options.sample_seed);
    let alpha = interpolation_grid(options.points_1d, options.margin_1d);
    let loss = run.loss();
    let mut ends: Vec<(String, String, &esso_core::Mlp, &esso_core::Mlp, String)> =
        vec![("init".into(), "init".into(), &run.init, &run.solution, run.record.name.clone())];
    for other in others {
        ends.push((
            other.record.name.clone(),
            run.record.name.clone(),
            &run.solution,
            &other.solution,
            other.record.name.clone(),
        ));
    }
    progress.stage("1D interpolations", ends.len() as u64);
    let mut paths = Vec::with_capacity(ends.len());
    for (name, from, a, b, to) in ends {
        let on = |set: &SampleSet| {
            landscape::interpolate_1d(
                a,
                b,
                loss,
                set.split.features(),
                targets_of(&set.split),
                &alpha,
            )
            .with_context(|| format!("1D interpolation {from} → {to}"))
        };
        let (tr, te) = (on(&train)?, on(&test)?);
        let nan = vec![f64::NAN; alpha.len()];
        paths.push(InterpolationPath {
            name,
            from,
            to,
            train_loss: tr.losses,
            train_accuracy: tr.accuracies.unwrap_or_else(|| nan.clone()),
            test_loss: te.losses,
            test_accuracy: te.accuracies.unwrap_or(nan),
        });
        progress.inc();
    }
    let mut section = AnalysisSection::new(super::LANDSCAPE_1D);
    provenance(&mut section, run, start.elapsed().as_secs_f64());
    let attrs = [
        ("n_samples", int(train.indices.len())),
        ("n_test_samples", int(test.indices.len())),
        ("sample_seed", uint(options.sample_seed)),
        ("n_points", int(options.points_1d)),
        ("margin", AttrValue::Float(options.margin_1d)),
        ("init", AttrValue::Text("rebuilt from the run's seed and [model] config".into())),
    ];
    for (k, v) in attrs {
        section.set_attr(k, v);
    }
    Ok(Landscape1d { settings: section.attributes, alpha, paths })
}

/// The `landscape_2d` analysis: loss and accuracy on θ* + x δ + y η over
/// [−span, span]², δ and η random filter-normalised directions (Li et al. 2018), on the
/// analysis training and test samples.
///
/// # Errors
/// Invalid options, evaluation errors.
pub fn landscape_2d(
    run: &FinishedRun,
    data: &Dataset,
    options: &LandscapeOptions,
    progress: &Progress,
) -> Result<Landscape2d> {
    let start = Instant::now();
    if options.points_2d < 2 || !options.span_2d.is_finite() || options.span_2d <= 0.0 {
        bail!(
            "2D landscape: need ≥ 2 points per axis and a finite span > 0 (got {} points, \
             span {})",
            options.points_2d,
            options.span_2d
        );
    }
    let train = SampleSet::draw(data.train(), options.n_samples, options.sample_seed);
    let test = SampleSet::draw(data.test(), options.n_test_samples, options.sample_seed);
    let grid = linspace(-options.span_2d, options.span_2d, options.points_2d);
    let direction_options =
        DirectionOptions { bias: options.bias, orthogonalize: options.orthogonalize };
    let (d1, d2) = landscape::filter_normalized_directions(
        &run.solution,
        options.direction_seed,
        &direction_options,
    )
    .context("2D landscape directions")?;
    let n_points = (options.points_2d * options.points_2d) as u64;
    let loss = run.loss();
    let mut surfaces = Vec::with_capacity(2);
    for (what, set, offset) in [("training", &train, 0), ("test", &test, n_points)] {
        progress.stage("2D surface", 2 * n_points);
        let report = |done: usize, _total: usize| progress.set(offset + done as u64);
        let surface = landscape::surface_2d(
            &run.solution,
            loss,
            set.split.features(),
            targets_of(&set.split),
            (&d1, &d2),
            (&grid, &grid),
            Some(&report),
        )
        .with_context(|| format!("2D surface on the {what} samples"))?;
        surfaces.push(surface);
    }
    let test_surface = surfaces.pop().expect("two surfaces");
    let train_surface = surfaces.pop().expect("two surfaces");
    let dim = train_surface.losses.dim();
    let nan = || ndarray::Array2::from_elem(dim, f64::NAN);
    let mut section = AnalysisSection::new(super::LANDSCAPE_2D);
    provenance(&mut section, run, start.elapsed().as_secs_f64());
    let bias = match options.bias {
        BiasMode::Zero => "zero",
        BiasMode::InFilter => "in_filter",
    };
    let attrs = [
        ("n_samples", int(train.indices.len())),
        ("n_test_samples", int(test.indices.len())),
        ("sample_seed", uint(options.sample_seed)),
        ("n_points", int(options.points_2d)),
        ("span", AttrValue::Float(options.span_2d)),
        ("direction_seed", uint(options.direction_seed)),
        ("bias", AttrValue::Text(bias.into())),
        ("orthogonalize", int(usize::from(options.orthogonalize))),
        ("directions_cosine", AttrValue::Float(d1.dot(&d2) / (d1.norm() * d2.norm()))),
        ("normalization", AttrValue::Text("filter (Li et al. 2018)".into())),
    ];
    for (k, v) in attrs {
        section.set_attr(k, v);
    }
    Ok(Landscape2d {
        settings: section.attributes,
        x: grid.clone(),
        y: grid,
        train_loss: train_surface.losses,
        train_accuracy: train_surface.accuracies.unwrap_or_else(nan),
        test_loss: test_surface.losses,
        test_accuracy: test_surface.accuracies.unwrap_or_else(nan),
    })
}

//! `esso analyze`: spectrum, sharpness and loss landscapes of finished runs, written into
//! each run's results file (docs/esso-analyze.md).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use esso_bench::analysis::{
    AnalyzeRequest, FinishedRun, LandscapeOptions, Progress, SharpnessOptions, SpectrumOptions,
    analyze_footprint, analyze_run, expand_targets,
};
use esso_hessian::landscape::BiasMode;
use esso_hessian::limits::{self, parse_bytes};
use rayon::prelude::*;

/// The landscapes `--landscape` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LandscapeKind {
    /// 1D linear interpolations: init → solution, solution → other optimisers' solutions.
    #[value(name = "1d")]
    OneD,
    /// 2D surface along two random filter-normalised directions (Li et al. 2018).
    #[value(name = "2d")]
    TwoD,
}

/// What a 2D direction does with biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BiasArg {
    /// Zero on biases (Li et al. 2018).
    Zero,
    /// Each bias belongs to its neuron's filter.
    InFilter,
}

/// Arguments of `esso analyze`.
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Finished runs: results files (RUN.h5) or experiment folders (every *.h5 inside).
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// Top/bottom-k eigenvalues (Lanczos), exact and estimated traces, SLQ density, and
    /// the exact spectrum when the sample set is small enough.
    #[arg(long)]
    pub spectrum: bool,
    /// λ_max, trace, ε-sharpness, ρ-sharpness, train/test loss and accuracy, generalisation
    /// gap.
    #[arg(long)]
    pub sharpness: bool,
    /// Loss landscapes: 1d (interpolations), 2d (filter-normalised surface); repeatable or
    /// comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub landscape: Vec<LandscapeKind>,
    /// Every analysis.
    #[arg(long)]
    pub all: bool,

    /// Training samples of the Hessian, the sharpness and the landscapes: a fixed seeded
    /// subset of the run's training set (0 = all of it).
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    /// Test samples of the landscapes (seeded subset; 0 = all).
    #[arg(long, default_value_t = 1000)]
    pub test_samples: usize,
    /// Seed of the sample subsets.
    #[arg(long, default_value_t = 0)]
    pub sample_seed: u64,
    /// Seed of Lanczos start vectors, trace and SLQ probes, the ε-ascent's random corner.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Spectrum: k of the top-k and bottom-k eigenvalues.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Largest Krylov dimension of each Lanczos run.
    #[arg(long, default_value_t = 100)]
    pub lanczos_iterations: usize,
    /// Relative residual tolerance of the Lanczos eigenvalues.
    #[arg(long, default_value_t = 1e-6)]
    pub lanczos_tol: f64,
    /// Spectrum: Hessian-vector products of each trace estimator (Hutchinson, Hutch++).
    #[arg(long, default_value_t = 30)]
    pub probes: usize,
    /// Spectrum: random probes of stochastic Lanczos quadrature.
    #[arg(long, default_value_t = 10)]
    pub slq_probes: usize,
    /// Spectrum: Lanczos steps per SLQ probe.
    #[arg(long, default_value_t = 60)]
    pub slq_steps: usize,
    /// Spectrum: points of the density grid.
    #[arg(long, default_value_t = 400)]
    pub density_points: usize,
    /// Spectrum: Gaussian kernel width of the density, relative to the spectrum's range.
    #[arg(long, default_value_t = 0.01)]
    pub density_sigma: f64,
    /// Spectrum: compute every eigenvalue exactly when samples × m ≤ this (m = rows of the
    /// per-sample factor K; 0 = never).
    #[arg(long, default_value_t = 4096)]
    pub exact_max_rows: usize,

    /// Sharpness: ε of the ε-sharpness box |y_i| ≤ ε (|θ_i| + 1) (Keskar et al.).
    #[arg(long, default_value_t = 1e-3)]
    pub epsilon: f64,
    /// Sharpness: radius ρ of the ρ-sharpness ball (SAM).
    #[arg(long, default_value_t = 0.05)]
    pub rho: f64,
    /// Sharpness: ascent steps of each maximisation.
    #[arg(long, default_value_t = 20)]
    pub ascent_steps: usize,

    /// 1D landscape: points on [0, 1] along each path (α = 0 and 1 included).
    #[arg(long, default_value_t = 21)]
    pub points_1d: usize,
    /// 1D landscape: the paths extend to about −margin and 1 + margin (whole steps).
    #[arg(long, default_value_t = 0.25)]
    pub margin: f64,
    /// 2D landscape: points per axis.
    #[arg(long, default_value_t = 25)]
    pub points_2d: usize,
    /// 2D landscape: both coordinates run over [−span, span].
    #[arg(long, default_value_t = 1.0)]
    pub span: f64,
    /// 2D landscape: seed of the two random directions.
    #[arg(long, default_value_t = 0)]
    pub direction_seed: u64,
    /// 2D landscape: what the directions do with biases.
    #[arg(long, value_enum, default_value = "zero")]
    pub bias: BiasArg,
    /// 2D landscape: orthogonalise the second direction against the first, filter by filter.
    #[arg(long)]
    pub orthogonalize: bool,

    /// Analyse only the runs with these seeds, e.g. `--only-seeds 0` (default: every run).
    #[arg(long, value_delimiter = ',', value_name = "SEEDS")]
    pub only_seeds: Vec<u64>,
    /// Keep stored analyses computed with the same options (skip them).
    #[arg(long)]
    pub reuse: bool,
    /// Runs analysed in parallel.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Dataset cache folder (default: $ESSO_DATA, else ~/.cache/esso).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Print nothing but errors and the final lines.
    #[arg(long)]
    pub quiet: bool,
    /// Refuse a request whose estimated peak memory is above this size, e.g. `8GiB`
    /// (default: half the physical memory; docs/limits.md).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub max_memory: Option<u64>,
}

impl AnalyzeArgs {
    /// The request these arguments describe.
    pub fn request(&self) -> AnalyzeRequest {
        let landscape = LandscapeOptions {
            n_samples: self.samples,
            n_test_samples: self.test_samples,
            sample_seed: self.sample_seed,
            points_1d: self.points_1d,
            margin_1d: self.margin,
            points_2d: self.points_2d,
            span_2d: self.span,
            direction_seed: self.direction_seed,
            bias: match self.bias {
                BiasArg::Zero => BiasMode::Zero,
                BiasArg::InFilter => BiasMode::InFilter,
            },
            orthogonalize: self.orthogonalize,
        };
        let wants = |k| self.all || self.landscape.contains(&k);
        AnalyzeRequest {
            spectrum: (self.all || self.spectrum).then_some(SpectrumOptions {
                n_samples: self.samples,
                sample_seed: self.sample_seed,
                k: self.top_k,
                lanczos_iterations: self.lanczos_iterations,
                lanczos_tol: self.lanczos_tol,
                trace_probes: self.probes,
                slq_probes: self.slq_probes,
                slq_steps: self.slq_steps,
                density_points: self.density_points,
                density_sigma: self.density_sigma,
                exact_max_rows: self.exact_max_rows,
                seed: self.seed,
            }),
            sharpness: (self.all || self.sharpness).then_some(SharpnessOptions {
                n_samples: self.samples,
                sample_seed: self.sample_seed,
                lanczos_iterations: self.lanczos_iterations,
                lanczos_tol: self.lanczos_tol,
                epsilon: self.epsilon,
                rho: self.rho,
                ascent_steps: self.ascent_steps,
                seed: self.seed,
            }),
            landscape_1d: wants(LandscapeKind::OneD).then(|| landscape.clone()),
            landscape_2d: wants(LandscapeKind::TwoD).then(|| landscape.clone()),
            reuse: self.reuse,
        }
    }
}

/// Runs `esso analyze`.
pub fn run(args: AnalyzeArgs) -> Result<()> {
    let request = args.request();
    if request.is_empty() {
        bail!("nothing to do: choose --spectrum, --sharpness, --landscape 1d|2d or --all");
    }
    if args.jobs == 0 {
        bail!("--jobs 0: need at least one job");
    }
    let single = args.runs.len() == 1 && !args.runs[0].is_dir();
    let paths = expand_targets(&args.runs)?;
    let cache = match &args.cache {
        Some(c) => c.clone(),
        None => esso_data::default_cache_dir().context("finding the dataset cache folder")?,
    };
    // In a folder, diverged runs are data points of the experiment, not errors: skip them.
    let mut skipped = Vec::new();
    let mut todo = Vec::new();
    for path in paths {
        if !args.only_seeds.is_empty() {
            let record = esso_bench::results::RunRecord::load(&path)?;
            if !args.only_seeds.contains(&record.seed) {
                continue;
            }
        }
        if !single
            && let Ok(record) = esso_bench::results::RunRecord::load(&path)
            && let esso_bench::results::RunStatus::Diverged { step, .. } = record.status
        {
            skipped.push(format!("{}: diverged at step {step}", record.name));
            continue;
        }
        todo.push(path);
    }
    check_memory(&todo, &request, args.jobs, args.max_memory)?;
    let bars = (!args.quiet && std::io::stderr().is_terminal()).then(indicatif::MultiProgress::new);
    let quiet = args.quiet;
    let plain = bars.is_none();
    let log = move |line: &str| {
        if plain && !quiet {
            eprintln!("{line}");
        }
    };
    if !quiet {
        eprintln!("esso analyze: {} run(s), {} job(s)", todo.len(), args.jobs);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.jobs)
        .build()
        .context("starting the thread pool")?;
    let outcomes: Vec<_> = pool.install(|| {
        todo.par_iter()
            .map(|path| {
                let name =
                    path.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
                let progress = match &bars {
                    Some(multi) => Progress::bar(multi, &name),
                    None => Progress::hidden(),
                };
                (path, analyze_run(path, &request, &cache, &progress, &log))
            })
            .collect()
    });
    let mut n_failed = 0;
    for (path, outcome) in &outcomes {
        match outcome {
            Ok(sections) => {
                for s in sections {
                    println!("{}\t{}\t{}", path.display(), s.name, s.summary);
                }
            }
            Err(e) => {
                n_failed += 1;
                println!("{}\tfailed: {e:#}", path.display());
            }
        }
    }
    for s in &skipped {
        eprintln!("esso analyze: skipped {s}");
    }
    if n_failed > 0 {
        if single && let Some((_, Err(e))) = outcomes.into_iter().next() {
            return Err(e);
        }
        bail!("{n_failed} of {} run(s) failed (the others were analysed)", todo.len());
    }
    Ok(())
}

/// Refuses the request when the estimated memory of a run's analyses, times the runs analysed
/// at once, is above the limit. A run that cannot be opened is left to `analyze_run` to
/// report.
fn check_memory(
    todo: &[PathBuf],
    request: &AnalyzeRequest,
    jobs: usize,
    max_memory: Option<u64>,
) -> Result<()> {
    let limit = max_memory.unwrap_or_else(limits::default_memory_limit);
    let jobs = jobs.min(todo.len()).max(1);
    for path in todo {
        let Ok(run) = FinishedRun::open(path) else { continue };
        let sizes = run.solution.sizes();
        analyze_footprint(&sizes, request, jobs)
            .check(
                &format!(
                    "esso analyze of {} ({} network, {} parameters{})",
                    path.display(),
                    limits::describe_sizes(&sizes),
                    limits::n_params(&sizes),
                    if jobs > 1 { format!(", {jobs} runs at once") } else { String::new() }
                ),
                limit,
                "use fewer --samples, --probes, --lanczos-iterations, --slq-steps or grid points, or fewer --jobs",
                "--max-memory",
            )
            .map_err(|e| anyhow::anyhow!(e))?;
    }
    Ok(())
}

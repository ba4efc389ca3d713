//! `esso run`: run an experiment file.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use esso_bench::config::{DEFAULT_MAX_RUNS, Experiment, LoadOptions};
use esso_bench::runner::{RunOptions, RunOutcome, run_one};
use rayon::prelude::*;

/// Arguments of `esso run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Experiment config (TOML), e.g. experiments/digits-quick.toml.
    pub config: PathBuf,
    /// Override a key of the config, e.g. `--set optimizer.lr=0.1` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Apply the overrides of `[profile.NAME]` in the config (e.g. `quick`).
    #[arg(long)]
    pub profile: Option<String>,
    /// Runs executed in parallel.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Continue interrupted runs from their checkpoints and skip completed ones.
    #[arg(long)]
    pub resume: bool,
    /// Dataset cache folder (default: $ESSO_DATA, else ~/.cache/esso).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Stop each run after this many epochs, resumable with --resume (splits long runs).
    #[arg(long, value_name = "N")]
    pub stop_after_epochs: Option<usize>,
    /// Print nothing but errors and the final summary.
    #[arg(long)]
    pub quiet: bool,
    /// Only check and expand the config; list the runs.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow an experiment of up to N runs (sweep points × seeds; default 10000).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_RUNS)]
    pub max_runs: u64,
}

/// Most runs `--jobs` may execute at once: each job is a thread with its own run in memory.
pub const MAX_JOBS: usize = 256;

/// Runs `esso run`.
pub fn run(args: RunArgs) -> Result<()> {
    if args.jobs == 0 {
        bail!("--jobs 0: need at least one job");
    }
    if args.jobs > MAX_JOBS {
        bail!(
            "--jobs {}: at most {MAX_JOBS} runs can execute at once (the machine has {} \
             cores): use a smaller --jobs",
            args.jobs,
            std::thread::available_parallelism().map_or(1, usize::from)
        );
    }
    let options = LoadOptions::default().with_max_runs(args.max_runs);
    let experiment =
        Experiment::load_with(&args.config, args.profile.as_deref(), &args.set, &options)?;
    // A thread per run at most: more would only wait.
    let args = RunArgs { jobs: args.jobs.min(experiment.runs.len().max(1)), ..args };
    if args.dry_run {
        for r in &experiment.runs {
            println!("{}\t{}", r.run_name, r.results_path().display());
        }
        return Ok(());
    }
    let data_cache = match args.cache {
        Some(c) => c,
        None => esso_data::default_cache_dir().context("finding the dataset cache folder")?,
    };
    let options = RunOptions {
        data_cache,
        resume: args.resume,
        stop_after_epochs: args.stop_after_epochs,
        verbose: !args.quiet,
        bars: std::io::stderr().is_terminal().then(indicatif::MultiProgress::new),
    };
    let n_runs = experiment.runs.len();
    if !args.quiet {
        eprintln!("esso run {}: {n_runs} run(s), {} job(s)", experiment.name, args.jobs);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.jobs)
        .build()
        .context("starting the thread pool")?;
    let outcomes: Vec<_> =
        pool.install(|| experiment.runs.par_iter().map(|r| (r, run_one(r, &options))).collect());
    let mut n_failed = 0;
    for (r, outcome) in &outcomes {
        match outcome {
            Ok(RunOutcome::Completed { test_accuracy }) => {
                let acc = test_accuracy.map_or("-".to_string(), |a| format!("{a:.4}"));
                println!("{}\tcompleted\ttest_accuracy {acc}", r.run_name);
            }
            Ok(RunOutcome::Skipped) => println!("{}\tskipped (already complete)", r.run_name),
            Ok(RunOutcome::Stopped) => println!("{}\tstopped (resume with --resume)", r.run_name),
            Ok(RunOutcome::Diverged { step, message }) => {
                println!("{}\tdiverged at step {step}: {message}", r.run_name);
            }
            Err(e) => {
                n_failed += 1;
                println!("{}\tfailed: {e:#}", r.run_name);
            }
        }
    }
    if n_failed > 0 {
        bail!("{n_failed} of {n_runs} run(s) failed (the others completed)");
    }
    Ok(())
}

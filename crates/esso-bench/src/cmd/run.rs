//! `esso run`: run an experiment file.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use esso_bench::config::{DEFAULT_MAX_RUNS, Experiment, LoadOptions};
use esso_bench::footprint::sweep_footprint;
use esso_bench::runner::{RunOptions, RunOutcome, run_one};
use esso_hessian::limits::{self, parse_bytes};
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
    /// Stop each run after this many epochs (N ≥ 1), resumable with --resume (splits long
    /// runs).
    #[arg(long, value_name = "N", value_parser = at_least_one_epoch)]
    pub stop_after_epochs: Option<usize>,
    /// With --resume (implied): continue runs whose config changed since they were started,
    /// recording the change in their results files.
    #[arg(long)]
    pub resume_changed: bool,
    /// Print nothing but errors and the final summary.
    #[arg(long)]
    pub quiet: bool,
    /// Only check and expand the config; list the runs.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow an experiment of up to N runs (sweep points × seeds; default 10000).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_RUNS)]
    pub max_runs: u64,
    /// Refuse an experiment whose `--jobs` largest runs together are estimated to need more
    /// memory than this, e.g. `8GiB` (default: half the physical memory; docs/limits.md).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub max_memory: Option<u64>,
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
    let limit = args.max_memory.unwrap_or_else(limits::default_memory_limit);
    sweep_footprint(&experiment.runs, args.jobs)
        .check(
            &format!(
                "esso run {}: {} run(s) at once ({} run(s) in all)",
                args.config.display(),
                args.jobs,
                experiment.runs.len()
            ),
            limit,
            "use a smaller model, fewer --jobs or a smaller dataset subset",
            "--max-memory",
        )
        .map_err(|e| anyhow::anyhow!(e))?;
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
    let interrupt = install_signal_handlers()?;
    let options = RunOptions {
        data_cache,
        resume: args.resume || args.resume_changed,
        resume_changed: args.resume_changed,
        stop_after_epochs: args.stop_after_epochs,
        interrupt: Arc::clone(&interrupt),
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
    let (mut n_saved, mut n_not_started) = (0, 0);
    for (r, outcome) in &outcomes {
        match outcome {
            Ok(RunOutcome::Completed { test_accuracy }) => {
                let acc = test_accuracy.map_or("-".to_string(), |a| format!("{a:.4}"));
                println!("{}\tcompleted\ttest_accuracy {acc}", r.run_name);
            }
            Ok(RunOutcome::Skipped) => println!("{}\tskipped (already complete)", r.run_name),
            Ok(RunOutcome::Stopped) => println!("{}\tstopped (resume with --resume)", r.run_name),
            Ok(RunOutcome::Interrupted { step: Some(step), .. }) => {
                n_saved += 1;
                println!("{}\tinterrupted at step {step}, saved (resumable)", r.run_name);
            }
            Ok(RunOutcome::Interrupted { step: None, .. }) => {
                n_not_started += 1;
                println!("{}\tnot started (interrupted)", r.run_name);
            }
            Ok(RunOutcome::Diverged { step, message }) => {
                println!("{}\tdiverged at step {step}: {message}", r.run_name);
            }
            Err(e) => {
                n_failed += 1;
                println!("{}\tfailed: {e:#}", r.run_name);
            }
        }
    }
    let signal = interrupt.load(Ordering::SeqCst);
    if signal != 0 {
        let failed =
            if n_failed > 0 { format!(", {n_failed} failed (above)") } else { String::new() };
        return Err(Interrupted {
            signal,
            message: format!(
                "esso run: interrupted by {}: {n_saved} run(s) stopped at a step boundary with \
                 their checkpoint and results written, {n_not_started} not started{failed}; \
                 everything can be resumed with:\n  {}",
                signal_name(signal),
                resume_command()
            ),
        }
        .into());
    }
    if n_failed > 0 {
        let others = if n_failed < n_runs { " (the others completed)" } else { "" };
        bail!("{n_failed} of {n_runs} run(s) failed{others}");
    }
    Ok(())
}

/// `esso run` stopped by SIGINT or SIGTERM after saving every run: `main` prints the message
/// and exits with status 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
#[derive(Debug)]
pub struct Interrupted {
    /// The signal number.
    pub signal: usize,
    /// What was saved and the command that resumes.
    pub message: String,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Interrupted {}

impl Interrupted {
    /// The process exit status: 128 + the signal number, as a shell reports a process killed
    /// by that signal.
    pub fn exit_status(&self) -> u8 {
        u8::try_from(128 + self.signal).unwrap_or(u8::MAX)
    }
}

/// SIGINT and SIGTERM set a flag that the runs check at every step boundary; a second one
/// exits at once with 128 + its number (what was saved at the last checkpoint stays
/// resumable).
///
/// One thread receives both signals in turn (signal-hook's iterator), so two signals that
/// arrive together are still a first and a second: with a handler per signal, two threads of
/// the process could each take one and both see no earlier signal.
fn install_signal_handlers() -> Result<Arc<AtomicUsize>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let signal = Arc::new(AtomicUsize::new(0));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing the SIGINT and SIGTERM handlers")?;
    let first = Arc::clone(&signal);
    std::thread::Builder::new()
        .name("esso-signals".to_owned())
        .spawn(move || {
            for sig in signals.forever() {
                let number = usize::try_from(sig).unwrap_or(0);
                if first.compare_exchange(0, number, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                    // `_exit`: no atexit handler runs while other threads may be writing.
                    signal_hook::low_level::exit(128 + sig);
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(signal)
}

fn signal_name(signal: usize) -> String {
    match signal as i32 {
        signal_hook::consts::SIGINT => "SIGINT".to_string(),
        signal_hook::consts::SIGTERM => "SIGTERM".to_string(),
        other => format!("signal {other}"),
    }
}

/// This process's command line with `--resume` added (unless it has it), quoted for a POSIX
/// shell.
fn resume_command() -> String {
    let mut args: Vec<String> =
        std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    if !args.iter().any(|a| a == "--resume" || a == "--resume-changed") {
        args.push("--resume".to_string());
    }
    args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg.chars().all(|c| c.is_ascii_alphanumeric() || "_./=,:@%+-".contains(c));
    if plain { arg.to_string() } else { format!("'{}'", arg.replace('\'', "'\\''")) }
}

fn at_least_one_epoch(value: &str) -> std::result::Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("0 would stop before the first epoch: give N ≥ 1, or leave the option out \
                      to run every epoch"
            .to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}: give a whole number of epochs ≥ 1")),
    }
}

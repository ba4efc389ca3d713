//! `cargo xtask fuzz`: builds esso-fuzz in release and runs it (docs/fuzzing.md).
//!
//! The arguments go to `esso-fuzz run` as they are, so its options and their defaults are
//! defined once, in crates/esso-fuzz.

use std::path::Path;

use anyhow::Result;

/// Arguments of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Options of `esso-fuzz run`, passed on as they are: `--target A,B` (the targets:
    /// `cargo run -p esso-fuzz -- list`; `results-h5-forged` only runs when named, as it is
    /// known to crash inside HDF5 1.10.8), `--iterations N`, `--seed S`, `--start I`,
    /// `--hang-seconds S`, `--max-crashes N`, `--out DIR` (default target/fuzz).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "OPTIONS")]
    options: Vec<String>,
}

/// The targets `cargo xtask test` fuzzes: every target that must pass (the full run is
/// `cargo xtask fuzz --iterations 1000000`).
pub const CI_TARGETS: &str = "idx,idx-file,model-json,experiment-toml,results-h5";

/// Inputs per target in `cargo xtask test`.
pub const CI_ITERATIONS: u64 = 20_000;

/// The short fuzzing run of `cargo xtask test`.
///
/// # Errors
/// As [`run`].
pub fn run_ci(root: &Path) -> Result<()> {
    let options =
        ["--target", CI_TARGETS, "--iterations", &CI_ITERATIONS.to_string()].map(str::to_owned);
    run(root, &FuzzArgs { options: options.to_vec() })
}

/// Runs the fuzzer; fails when any target found a panic, a crash, a hang or too much memory
/// (the failing inputs are under target/fuzz/failures/).
///
/// # Errors
/// A failed build, or a fuzzing run that found a failure.
pub fn run(root: &Path, args: &FuzzArgs) -> Result<()> {
    let mut cmd = super::cargo(root);
    cmd.args(["run", "--release", "--quiet", "-p", "esso-fuzz", "--", "run"]);
    cmd.args(&args.options);
    // esso-fuzz's default folder is relative to where it runs: anchor it at the workspace.
    if !args.options.iter().any(|o| o == "--out" || o.starts_with("--out=")) {
        cmd.arg("--out").arg(root.join("target/fuzz"));
    }
    super::run(&mut cmd, "esso-fuzz (release)")
}

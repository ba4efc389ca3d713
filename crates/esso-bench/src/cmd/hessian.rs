//! `esso hessian`.

use std::path::PathBuf;

use anyhow::{Result, bail};

/// Arguments of `esso hessian`.
#[derive(Debug, clap::Args)]
pub struct HessianArgs {
    /// Model and sample, as JSON (see docs/esso-hessian-cli.md).
    pub model: PathBuf,
    /// Regularisation λ > 0.
    #[arg(long, default_value_t = 1.0)]
    pub lambda: f64,
}

/// Runs `esso hessian`.
pub fn run(args: HessianArgs) -> Result<()> {
    bail!("esso hessian {}: not built yet (issue 3)", args.model.display())
}

//! `esso fetch`.

use anyhow::{Result, bail};

/// Arguments of `esso fetch`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Dataset: mnist, fashion-mnist or all.
    pub dataset: String,
}

/// Runs `esso fetch`.
pub fn run(args: FetchArgs) -> Result<()> {
    bail!("esso fetch {}: not built yet (issue 5)", args.dataset)
}

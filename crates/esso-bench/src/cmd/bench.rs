//! `esso bench`: samples per second of each optimiser's step, and the ratio to SGD.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use esso_bench::bench::{default_cases, default_optimizers, measure, to_csv, to_markdown};

/// Arguments of `esso bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Samples per step (B > 1 runs ESSO's per-sample directions in parallel).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Seconds of timed steps per (network, optimiser).
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Only optimisers whose label contains this text (sgd, adam, esso-layerwise,
    /// esso-full-network).
    #[arg(long)]
    pub only: Option<String>,
    /// Also write the results as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

/// Runs `esso bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if !(args.seconds.is_finite() && args.seconds >= 0.0) {
        bail!("--seconds {}: must be a finite number ≥ 0", args.seconds);
    }
    if args.batch_size == 0 {
        bail!("--batch-size 0: must be ≥ 1");
    }
    if cfg!(debug_assertions) {
        eprintln!("esso bench: this is a debug build; numbers are ~100x slow (use --release)");
    }
    let mut results = Vec::new();
    for case in default_cases() {
        for (label, toml) in default_optimizers() {
            if args.only.as_deref().is_some_and(|o| !label.contains(o)) {
                continue;
            }
            let r = measure(
                &case,
                label,
                toml,
                args.batch_size,
                Duration::from_secs_f64(args.seconds),
                3,
            )
            .with_context(|| format!("{} with {label}", case.label()))?;
            eprintln!("{}: {label}: {:.0} samples/s", r.case, r.samples_per_second);
            results.push(r);
        }
    }
    print!("{}", to_markdown(&results));
    if let Some(path) = args.csv {
        std::fs::write(&path, to_csv(&results))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

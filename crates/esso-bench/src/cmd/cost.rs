//! `esso cost`: time per step vs parameter count for each method, as CSV (figure 6).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use esso_bench::cost::{CostConfig, run_sweep, to_csv};

/// Arguments of `esso cost`.
#[derive(Debug, clap::Args)]
pub struct CostArgs {
    /// Where to write the CSV.
    #[arg(long, default_value = "results/runs/cost.csv")]
    pub out: PathBuf,
    /// The quick sweep (smaller widths, shorter timing budget).
    #[arg(long)]
    pub quick: bool,
    /// Hidden widths w of the n_0-w-w-10 nets, comma separated (overrides the preset).
    #[arg(long, value_delimiter = ',')]
    pub widths: Vec<usize>,
    /// Seconds spent timing each (method, width).
    #[arg(long)]
    pub budget: Option<f64>,
}

/// Runs `esso cost`.
pub fn run(args: CostArgs) -> Result<()> {
    let mut config = CostConfig::preset(args.quick);
    if !args.widths.is_empty() {
        if args.widths.contains(&0) {
            bail!("--widths: widths must be ≥ 1");
        }
        config.widths = args.widths;
    }
    if let Some(b) = args.budget {
        if !(b.is_finite() && b >= 0.0) {
            bail!("--budget {b}: must be a number of seconds ≥ 0");
        }
        config.budget_seconds = b;
    }
    let rows = run_sweep(&config, &mut |row| {
        println!(
            "{}\t{:?}\t{} params\t{:.3e} s/step\t({} steps)",
            row.method.as_str(),
            row.sizes,
            row.n_params,
            row.seconds_per_step,
            row.n_reps
        );
    })?;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating folder {}", parent.display()))?;
    }
    std::fs::write(&args.out, to_csv(&rows))
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("esso cost: {} rows in {}", rows.len(), args.out.display());
    Ok(())
}

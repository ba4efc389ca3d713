//! `esso exactness`: closed-form vs dense eigenvalues on small nets, as CSV (figure 5).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use esso_bench::exactness::{ExactnessRow, default_cases, run_case, to_csv};

/// Arguments of `esso exactness`.
#[derive(Debug, clap::Args)]
pub struct ExactnessArgs {
    /// Where to write the CSV.
    #[arg(long, default_value = "results/runs/exactness.csv")]
    pub out: PathBuf,
    /// Fewer and smaller nets (the quick profile).
    #[arg(long)]
    pub quick: bool,
    /// Seed of weights and samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `esso exactness`.
pub fn run(args: ExactnessArgs) -> Result<()> {
    let mut rows: Vec<ExactnessRow> = Vec::new();
    for (case_idx, case) in default_cases(args.quick).iter().enumerate() {
        let case_rows = run_case(case, args.seed + case_idx as u64)
            .with_context(|| format!("exactness of {}", case.name()))?;
        let worst = case_rows.iter().map(ExactnessRow::relative_error).fold(0.0, f64::max);
        println!(
            "{}\t{} eigenvalues\tmax relative error {worst:.2e}",
            case.name(),
            case_rows.len()
        );
        rows.extend(case_rows);
    }
    if rows.is_empty() {
        bail!("no exactness cases");
    }
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating folder {}", parent.display()))?;
    }
    std::fs::write(&args.out, to_csv(&rows))
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("esso exactness: {} rows in {}", rows.len(), args.out.display());
    Ok(())
}

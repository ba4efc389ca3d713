//! `esso summarize`: a table over runs, mean ± std over seeds.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use esso_bench::results::RunRecord;
use esso_bench::summary::{find_results, summarize, to_csv, to_table};

/// Arguments of `esso summarize`.
#[derive(Debug, clap::Args)]
pub struct SummarizeArgs {
    /// Folder with results files (searched recursively for *.h5).
    pub dir: PathBuf,
    /// Where to write the CSV (default DIR/summary.csv).
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

/// Runs `esso summarize`.
pub fn run(args: SummarizeArgs) -> Result<()> {
    let paths = find_results(&args.dir)?;
    if paths.is_empty() {
        bail!("no results files (*.h5) under {}", args.dir.display());
    }
    let mut records = Vec::with_capacity(paths.len());
    let mut n_unreadable = 0;
    for path in &paths {
        match RunRecord::load(path) {
            Ok(record) => records.push(record),
            Err(err) => {
                n_unreadable += 1;
                eprintln!("esso summarize: skipping an unreadable file: {err:#}");
            }
        }
    }
    if records.is_empty() {
        bail!(
            "none of the {} results file(s) under {} could be read (errors above)",
            paths.len(),
            args.dir.display()
        );
    }
    let rows = summarize(&records);
    print!("{}", to_table(&rows));
    let csv = args.csv.unwrap_or_else(|| args.dir.join("summary.csv"));
    std::fs::write(&csv, to_csv(&rows)).with_context(|| format!("writing {}", csv.display()))?;
    eprintln!(
        "esso summarize: {} run(s), {} group(s); CSV in {}",
        records.len(),
        rows.len(),
        csv.display()
    );
    if n_unreadable > 0 {
        bail!(
            "{n_unreadable} of {} results file(s) could not be read (listed above); the summary \
             covers the other {}",
            paths.len(),
            records.len()
        );
    }
    Ok(())
}

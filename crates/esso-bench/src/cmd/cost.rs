//! `esso cost`: time per step vs parameter count for each method, as CSV (figure 6).

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use esso_bench::cost::{CostConfig, run_sweep, to_csv};
use esso_hessian::limits::{self, Footprint, parse_bytes};

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
    /// Refuse widths whose estimated peak memory is above this size, e.g. `8GiB`
    /// (default: half the physical memory; docs/limits.md).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub max_memory: Option<u64>,
}

/// An upper bound of the memory of timing every method on the n_0-w-w-n_classes net: the
/// network with its gradients and optimiser states, one sample's traces, the largest layer
/// block, the whole-network factorisation while m is within the sweep's cap, and the dense
/// Hessian with its eigendecomposition while N is within its cap.
pub fn width_footprint(config: &CostConfig, width: usize) -> Footprint {
    let sizes = [config.n_inputs, width, width, config.n_classes];
    let n = limits::n_params(&sizes);
    let layers = (0..sizes.len() - 1)
        .map(|l| limits::layer_block(&sizes, l))
        .fold(Footprint::default(), Footprint::then);
    let full = if limits::k_rows(&sizes) <= config.full_network_max_rows as u128 {
        limits::full_hessian(&sizes)
    } else {
        Footprint::default()
    };
    let dense = if n <= config.dense_max_params as u128 {
        limits::stacked_spectrum(n)
    } else {
        Footprint::default()
    };
    Footprint { bytes: 16 * 8 * n, flops: 0 }
        .plus(limits::traces(&sizes))
        .plus(layers.then(full).then(dense))
        .plus_bytes(limits::PROCESS_BYTES)
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
    let limit = args.max_memory.unwrap_or_else(limits::default_memory_limit);
    for &width in &config.widths {
        width_footprint(&config, width)
            .check(
                &format!(
                    "esso cost at width {width} ({}-{width}-{width}-{} net)",
                    config.n_inputs, config.n_classes
                ),
                limit,
                "use smaller --widths",
                "--max-memory",
            )
            .map_err(|e| anyhow!(e))?;
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

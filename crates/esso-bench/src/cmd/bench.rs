//! `esso bench`: samples per second of each optimiser's step, the ratio to SGD, and
//! `Mlp::evaluate`'s GEMM rate against the raw faer GEMMs of the same shapes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use esso_bench::bench::{
    default_cases, default_optimizers, measure_eval, measure_interleaved, to_csv, to_markdown,
};
use esso_hessian::limits::{self, Footprint, parse_bytes};

/// The optimisers of a case take turns in slices of this length (`measure_interleaved`).
const SLICE: Duration = Duration::from_millis(250);

/// Arguments of `esso bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Samples per step (B > 1 runs ESSO's per-sample directions in parallel).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Seconds of timed steps per (network, optimiser). The optimisers of a network take
    /// turns in 0.25-second slices, so that they share the host's conditions.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Only optimisers whose label contains this text, or one of several separated by commas
    /// (sgd, adam, esso-layerwise, esso-full-network; `eval` for the evaluation lines alone):
    /// `--only sgd,esso-layerwise` times those two in turns.
    #[arg(long)]
    pub only: Option<String>,
    /// Also write the results as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Samples of the evaluation lines (`Mlp::evaluate` vs the raw GEMMs, 784-128-64-10 tanh
    /// and ReLU);
    /// 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    pub eval_samples: usize,
    /// Refuse an `--eval-samples` whose estimated memory is above this size, e.g. `8GiB`
    /// (default: half the physical memory; docs/limits.md).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub max_memory: Option<u64>,
}

/// An upper bound of the memory of the evaluation lines: the samples, and for every layer
/// the activations of `Mlp::evaluate` and the output of the raw GEMM, with room for copies.
pub fn eval_footprint(n_samples: usize) -> Footprint {
    let widest_case: u128 = default_cases()
        .iter()
        .map(|c| c.sizes.iter().map(|&w| w as u128).sum::<u128>())
        .max()
        .unwrap_or(0);
    let n = n_samples as u128;
    Footprint { bytes: 8 * 4 * n * widest_case, flops: 4 * n * widest_case * widest_case }
        .plus_bytes(limits::PROCESS_BYTES + (256 << 20))
}

/// Runs `esso bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if !(args.seconds.is_finite() && args.seconds >= 0.0) {
        bail!("--seconds {}: must be a finite number ≥ 0", args.seconds);
    }
    if args.batch_size == 0 {
        bail!("--batch-size 0: must be ≥ 1");
    }
    eval_footprint(args.eval_samples)
        .check(
            &format!("esso bench --eval-samples {}", args.eval_samples),
            args.max_memory.unwrap_or_else(limits::default_memory_limit),
            "use fewer --eval-samples",
            "--max-memory",
        )
        .map_err(|e| anyhow!(e))?;
    if cfg!(debug_assertions) {
        eprintln!("esso bench: this is a debug build; numbers are ~100x slow (use --release)");
    }
    let only: Option<Vec<&str>> = args
        .only
        .as_deref()
        .map(|o| o.split(',').map(str::trim).filter(|o| !o.is_empty()).collect());
    let selected = |label: &str| only.as_ref().is_none_or(|o| o.iter().any(|o| label.contains(o)));
    let eval =
        args.eval_samples > 0 && only.as_ref().is_none_or(|o| o.iter().any(|o| "eval".contains(o)));
    let labels: Vec<&str> = default_optimizers().iter().map(|(label, _)| *label).collect();
    if !eval && !labels.iter().any(|label| selected(label)) {
        bail!(
            "--only {}: matches no optimiser ({}) and not the evaluation lines (eval)",
            args.only.as_deref().unwrap_or_default(),
            labels.join(", ")
        );
    }
    let mut results = Vec::new();
    for case in default_cases() {
        let optimizers: Vec<_> =
            default_optimizers().into_iter().filter(|(label, _)| selected(label)).collect();
        if optimizers.is_empty() {
            continue;
        }
        let seconds = Duration::from_secs_f64(args.seconds);
        let measured = measure_interleaved(&case, &optimizers, args.batch_size, seconds, 3, SLICE)
            .with_context(|| case.label())?;
        for r in measured {
            eprintln!("{}: {}: {:.0} samples/s", r.case, r.optimizer, r.samples_per_second);
            results.push(r);
        }
    }
    print!("{}", to_markdown(&results));
    if eval {
        // 784-128-64-10 with tanh and with ReLU (the activation's cost shows as the gap).
        for case in &default_cases()[..2] {
            let seconds = Duration::from_secs_f64(args.seconds);
            let eval = measure_eval(case, args.eval_samples, seconds)
                .with_context(|| format!("evaluation of {}", case.label()))?;
            println!();
            print!("{}", eval.to_markdown());
        }
    }
    if let Some(path) = args.csv {
        std::fs::write(&path, to_csv(&results))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

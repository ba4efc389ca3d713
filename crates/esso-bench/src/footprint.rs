//! What one run of `esso run` holds in memory at its peak, estimated from its config alone, so
//! that `esso run` (and `--dry-run`) can refuse a sweep that would not fit before any run
//! starts (docs/limits.md).
//!
//! Like the estimates of `esso_hessian::limits`, every term is an upper bound of what the
//! code holds: the dataset as loaded (the whole split, before any subset is taken) with its
//! copies, the network with its gradient, optimiser state and checkpoint copies, one step's
//! curvature (per-layer blocks or the whole-network factorisation, per sample of a batch),
//! the evaluation activations, the tracking and top-eigenvalue work, and the rows the results
//! file accumulates in memory.

use esso_hessian::limits::{self, Footprint};
use esso_optim::{CurvatureScope, OptimizerConfig};

use crate::config::RunConfig;

const F64: u128 = 8;

/// Bytes the mini-batch Hessian of the top-eigenvalue tracking may cache (its budget).
const TOP_EIGENVALUE_CACHE: u128 = 256 << 20;

/// An upper bound of one run's peak memory, and a rough operation count of one step.
///
/// An unknown dataset name counts no data (the config checks refuse it anyway).
pub fn run_footprint(config: &RunConfig) -> Footprint {
    let sizes = &config.model.sizes;
    let n_layers = sizes.len().saturating_sub(1);
    let n_params = limits::n_params(sizes);
    let widths: u128 = sizes.iter().map(|&n| n as u128).sum();
    let (n_features, n_train, n_test) = match config.data.dataset.parse::<esso_data::DatasetName>()
    {
        Ok(name) => {
            let info = name.info();
            (info.n_features as u128, info.n_train as u128, info.n_test as u128)
        }
        Err(_) => (0, 0, 0),
    };
    // The split as loaded and as kept (subset, standardised copy), labels or targets beside.
    let data = 2 * (F64 * n_features + 16) * (n_train + n_test);
    // The training-evaluation, tracking and top-eigenvalue subsets are copies of the split.
    let t = &config.tracking;
    let eval_train = match config.train.eval_train_samples {
        0 => n_train,
        k => (k as u128).min(n_train),
    };
    let top_samples = if t.top_eigenvalue_every > 0 {
        (t.top_eigenvalue_samples as u128).min(n_train)
    } else {
        0
    };
    let subsets =
        (F64 * n_features + 16) * (eval_train + (t.n_samples as u128).min(n_train) + top_samples);
    // Evaluation by GEMM keeps every layer's activations for the evaluated rows.
    let evaluation = F64 * widths * eval_train.max(n_test);
    // The network, its gradient and update, the optimiser's moments, and the checkpoint's
    // serialised copies (network and state, as numbers and as JSON text).
    let network = F64 * 16 * n_params + 64 * n_params;
    let batch = config.train.batch_size.max(1) as u128;
    let traces = limits::traces(sizes);
    let per_layer = (0..n_layers)
        .map(|l| limits::layer_block(sizes, l))
        .fold(Footprint::default(), Footprint::then);
    let step = match &config.optimizer {
        OptimizerConfig::Esso(esso) => {
            let curvature = match esso.scope {
                CurvatureScope::Layerwise => per_layer,
                CurvatureScope::FullNetwork => limits::full_hessian(sizes),
            };
            // Each sample of a batch keeps its traces and its direction.
            Footprint {
                bytes: batch * (traces.bytes + F64 * n_params) + curvature.bytes,
                flops: batch * (traces.flops + curvature.flops),
            }
        }
        _ => Footprint { bytes: batch * traces.bytes, flops: batch * 4 * n_params },
    };
    // Exact per-layer spectra of the tracked samples, one layer at a time.
    let tracking = if t.every > 0 { per_layer } else { Footprint::default() };
    let top = if t.top_eigenvalue_every > 0 {
        let iterations = (t.top_eigenvalue_iterations as u128).min(n_params.max(1));
        Footprint { bytes: TOP_EIGENVALUE_CACHE + F64 * (iterations + 4) * n_params, flops: 0 }
    } else {
        Footprint::default()
    };
    // Rows kept in memory until the results file is written: steps, evaluations, curvature
    // rows with their histograms.
    let total_steps = config.train.epochs as u128 * n_train.div_ceil(batch).max(1);
    let n_layers = n_layers as u128;
    let step_rows = total_steps / u128::from(config.train.log_every.max(1)) + 2;
    let eval_rows = match config.train.eval_every {
        0 => config.train.epochs as u128 + 2,
        k => total_steps / u128::from(k) + config.train.epochs as u128 + 2,
    };
    let curvature_rows = match t.every {
        0 => 2,
        k => total_steps / u128::from(k) + config.train.epochs as u128 + 3,
    };
    let rows = F64
        * (step_rows * (6 + 3 * n_layers)
            + eval_rows * 16
            + curvature_rows * (2 + n_layers * (3 + t.n_bins as u128)));
    let held = Footprint { bytes: data + subsets + network + rows, flops: 0 };
    let work = Footprint { bytes: evaluation, flops: 0 }.then(step).then(tracking).then(top);
    held.plus(work).plus_bytes(limits::PROCESS_BYTES)
}

/// What `jobs` runs of `runs` at once hold at most: the `jobs` largest footprints summed.
pub fn sweep_footprint(runs: &[RunConfig], jobs: usize) -> Footprint {
    let mut footprints: Vec<Footprint> = runs.iter().map(run_footprint).collect();
    footprints.sort_by_key(|f| std::cmp::Reverse(f.bytes));
    footprints.into_iter().take(jobs.max(1)).fold(Footprint::default(), |acc, f| Footprint {
        bytes: acc.bytes + f.bytes,
        flops: acc.flops.max(f.flops),
    })
}

//! What an `esso analyze` request costs before it is run (docs/limits.md): an upper bound of
//! the memory each run's analyses hold at their peak, from the network's sizes and the
//! options, so that a request that cannot fit is refused before anything is loaded.

use esso_hessian::batch::{DEFAULT_CACHE_BUDGET_BYTES, DEFAULT_MAX_SPECTRUM_ROWS};
use esso_hessian::limits::{self, Footprint};

use super::AnalyzeRequest;

const F64: u128 = 8;

/// An upper bound of the peak memory of one run's analyses (the dataset the run was trained
/// on excepted: it is loaded as for training), and a rough operation count.
///
/// Per section, one after the other: the per-sample cache of the mini-batch Hessian (at
/// most its budget), the Lanczos bases (N × iterations, capped at N), the Hutch++ sketch
/// and the SLQ bases, the exact stacked spectrum (twelve R × R matrices, R = samples × m,
/// when it is computed), the density grid and the landscape grids; the analysis samples
/// (copies of their features) throughout.
pub fn analysis_footprint(sizes: &[usize], request: &AnalyzeRequest) -> Footprint {
    let n = limits::n_params(sizes);
    let m = limits::k_rows(sizes);
    let n_in = sizes.first().copied().unwrap_or(0) as u128;
    let width: u128 = sizes.iter().map(|&w| w as u128).sum();
    let cache = DEFAULT_CACHE_BUDGET_BYTES as u128;
    let vectors = |count: u128| F64 * n * (count + 8);
    let samples = |k: usize| F64 * 2 * (k as u128) * (n_in + 1);
    let mut total = Footprint::default();
    if let Some(o) = &request.spectrum {
        let krylov = (o.lanczos_iterations as u128 + 2).min(n + 2);
        let probes = (o.trace_probes as u128).min(n) * 2;
        let slq = (o.slq_steps as u128 + 2).min(n + 2);
        let rows = (o.n_samples as u128) * m;
        let exact = if o.exact_max_rows > 0
            && o.n_samples > 0
            && rows <= o.exact_max_rows as u128
            && rows <= DEFAULT_MAX_SPECTRUM_ROWS as u128
        {
            limits::stacked_spectrum(rows).bytes
        } else {
            0
        };
        let bytes = cache
            + samples(o.n_samples)
            + vectors(krylov.max(probes).max(slq))
            + exact.max(F64 * 4 * o.density_points as u128);
        let hvp = F64 * n * (o.n_samples.max(1) as u128);
        let flops = hvp
            * (2 * o.lanczos_iterations as u128
                + 2 * o.trace_probes as u128
                + (o.slq_probes * o.slq_steps) as u128)
            + 30 * rows * rows * rows;
        total = total.then(Footprint { bytes, flops });
    }
    if let Some(o) = &request.sharpness {
        let krylov = (o.lanczos_iterations as u128 + 2).min(n + 2);
        let bytes = cache + samples(o.n_samples) + vectors(krylov);
        let hvp = F64 * n * (o.n_samples.max(1) as u128);
        let flops = hvp * (o.lanczos_iterations as u128 + 4 * o.ascent_steps as u128);
        total = total.then(Footprint { bytes, flops });
    }
    for o in [&request.landscape_1d, &request.landscape_2d].into_iter().flatten() {
        let k = (o.n_samples + o.n_test_samples) as u128;
        let points =
            (o.points_1d as u128).max((o.points_2d as u128).saturating_mul(o.points_2d as u128));
        // Batched evaluation: activations of every layer for every sample, twice over.
        let bytes = samples(o.n_samples + o.n_test_samples)
            + F64 * 4 * k * width
            + vectors(8)
            + F64 * 16 * points;
        let flops = points * k * 2 * n;
        total = total.then(Footprint { bytes, flops });
    }
    total.plus_bytes(F64 * 4 * n)
}

/// [`analysis_footprint`] of `jobs` runs analysed at once plus the process itself.
pub fn analyze_footprint(sizes: &[usize], request: &AnalyzeRequest, jobs: usize) -> Footprint {
    let one = analysis_footprint(sizes, request);
    Footprint { bytes: one.bytes * jobs.max(1) as u128, flops: one.flops }
        .plus_bytes(limits::PROCESS_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{SharpnessOptions, SpectrumOptions};

    #[test]
    fn the_bound_grows_with_what_the_user_asks_for() {
        let sizes = [784, 128, 64, 10];
        let base = AnalyzeRequest {
            spectrum: Some(SpectrumOptions::default()),
            sharpness: Some(SharpnessOptions::default()),
            ..AnalyzeRequest::default()
        };
        let small = analysis_footprint(&sizes, &base);
        assert!(small.bytes < 1 << 30, "{}", limits::format_bytes(small.bytes));
        let mut big = base.clone();
        if let Some(o) = big.spectrum.as_mut() {
            o.trace_probes = 10_000_000;
        }
        let big = analysis_footprint(&sizes, &big);
        // Hutch++ keeps up to N probe vectors of N entries: 110,000² × 16 bytes.
        assert!(big.bytes > 100 << 30, "{}", limits::format_bytes(big.bytes));
    }
}

//! Stochastic trace estimators on any [`SymmetricOperator`]: Hutchinson (1989) and Hutch++
//! (Meyer, Musco, Musco, Woodruff 2021); see docs/method-spectral-analysis.md.
//!
//! For the exact trace of a mini-batch Hessian use [`crate::batch::BatchHessian::trace`]
//! (closed form); these estimators are for operators without one, and the closed form is
//! how they are tested.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::batch::SymmetricOperator;
use crate::error::{HessianError, Result};
use crate::lanczos::{axpy, dot};

/// A trace estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceEstimate {
    /// The estimate of tr(A).
    pub estimate: f64,
    /// The estimated standard error of the stochastic part: s/√n from the sample standard
    /// deviation s of the n probe values (`None` with fewer than two probes).
    pub std_error: Option<f64>,
    /// Products with the operator.
    pub n_matvecs: usize,
    /// Random probes of the stochastic part.
    pub n_probes: usize,
}

/// Hutchinson's estimator with Rademacher probes z (entries ±1 with probability ½):
///
/// ```text
/// tr(A) ≈ (1/n) Σ_j z_jᵀ A z_j,   Var[zᵀ A z] = 2 (‖A‖_F² − Σ_i A_ii²)
/// ```
///
/// Probes are drawn from ChaCha8 seeded with `seed` (one bit per entry from `next_u64`,
/// platform-stable).
///
/// # Errors
/// [`HessianError::InvalidParameter`] for `n_probes = 0`;
/// [`HessianError::NonFiniteProduct`] naming the probe; errors of the operator.
pub fn hutchinson<O: SymmetricOperator + ?Sized>(
    op: &O,
    n_probes: usize,
    seed: u64,
) -> Result<TraceEstimate> {
    if n_probes == 0 {
        return Err(HessianError::InvalidParameter {
            name: "n_probes",
            value: 0.0,
            reason: "at least one probe is needed",
        });
    }
    let dim = op.dim();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut az = vec![0.0; dim];
    let mut samples = Vec::with_capacity(n_probes);
    for probe in 0..n_probes {
        let z = rademacher(dim, &mut rng);
        apply_checked(op, &z, &mut az, "Hutchinson", probe)?;
        samples.push(dot(&z, &az));
    }
    let (mean, std_error) = mean_and_std_error(&samples);
    Ok(TraceEstimate { estimate: mean, std_error, n_matvecs: n_probes, n_probes })
}

/// Hutch++ with a budget of products (Meyer, Musco, Musco & Woodruff 2021, Algorithm 1):
/// with s = ⌊budget/3⌋ sketch probes S and g = budget − 2s Rademacher probes G,
///
/// ```text
/// Q = orth(A S)                      (s products; columns of rank below 1e-12 relative dropped)
/// tr(A) ≈ tr(Qᵀ A Q) + (1/g) Σ_j z_jᵀ (I − QQᵀ) A (I − QQᵀ) z_j   (≤ s + g products)
/// ```
///
/// The first term is exact on the captured range: when rank(A) ≤ s, Q spans the range of A
/// (symmetric), the deflated operator vanishes and the estimate is exact up to rounding.
/// The standard error is that of the stochastic second term.
///
/// # Errors
/// [`HessianError::InvalidParameter`] for `budget < 3`;
/// [`HessianError::NonFiniteProduct`] naming the product; errors of the operator.
pub fn hutchpp<O: SymmetricOperator + ?Sized>(
    op: &O,
    budget: usize,
    seed: u64,
) -> Result<TraceEstimate> {
    if budget < 3 {
        return Err(HessianError::InvalidParameter {
            name: "budget",
            value: budget as f64,
            reason: "Hutch++ needs at least 3 products",
        });
    }
    let dim = op.dim();
    let n_sketch = budget / 3;
    let n_hutch = budget - 2 * n_sketch;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut n_matvecs = 0;
    // Q = orth(A S) by Gram–Schmidt twice, dropping columns that vanish.
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(n_sketch);
    let mut col_scale = 0.0f64;
    for _ in 0..n_sketch {
        let s = rademacher(dim, &mut rng);
        let mut y = vec![0.0; dim];
        apply_checked(op, &s, &mut y, "Hutch++ sketch", n_matvecs)?;
        n_matvecs += 1;
        let norm = dot(&y, &y).sqrt();
        col_scale = col_scale.max(norm);
        project_out(&q, &mut y);
        let after = dot(&y, &y).sqrt();
        if after > HUTCHPP_RANK_RTOL * col_scale && after > 0.0 {
            y.iter_mut().for_each(|v| *v /= after);
            q.push(y);
        }
    }
    // tr(Qᵀ A Q).
    let mut exact_part = 0.0;
    let mut aq = vec![0.0; dim];
    for qi in &q {
        apply_checked(op, qi, &mut aq, "Hutch++ projection", n_matvecs)?;
        n_matvecs += 1;
        exact_part += dot(qi, &aq);
    }
    // Hutchinson on (I − QQᵀ) A (I − QQᵀ).
    let mut samples = Vec::with_capacity(n_hutch);
    let mut az = vec![0.0; dim];
    for _ in 0..n_hutch {
        let mut z = rademacher(dim, &mut rng);
        project_out(&q, &mut z);
        apply_checked(op, &z, &mut az, "Hutch++ residual", n_matvecs)?;
        n_matvecs += 1;
        project_out(&q, &mut az);
        samples.push(dot(&z, &az));
    }
    let (mean, std_error) = mean_and_std_error(&samples);
    Ok(TraceEstimate { estimate: exact_part + mean, std_error, n_matvecs, n_probes: n_hutch })
}

/// A sketch column whose norm after projection is below `HUTCHPP_RANK_RTOL` times the
/// largest sketch column norm is treated as lying in span(Q) and dropped.
///
/// Reason: a column in the span comes out of two Gram–Schmidt passes with a remainder of
/// order √dim·ε relative (≲ 1e-13 for dim ≲ 10⁶); keeping it would add a random direction
/// that the first term then counts with weight ≈ 1e-13.
pub const HUTCHPP_RANK_RTOL: f64 = 1e-10;

fn apply_checked<O: SymmetricOperator + ?Sized>(
    op: &O,
    v: &[f64],
    out: &mut [f64],
    what: &'static str,
    iteration: usize,
) -> Result<()> {
    op.apply(v, out)?;
    if out.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(HessianError::NonFiniteProduct { what, iteration })
    }
}

/// v ← (I − QQᵀ)² v.
fn project_out(q: &[Vec<f64>], v: &mut [f64]) {
    for _ in 0..2 {
        for qi in q {
            let c = dot(qi, v);
            axpy(-c, qi, v);
        }
    }
}

/// A Rademacher vector: entries ±1, one random bit each (64 per `next_u64`).
pub(crate) fn rademacher(dim: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    use rand::Rng;
    let mut out = Vec::with_capacity(dim);
    let mut bits = 0u64;
    for i in 0..dim {
        if i % 64 == 0 {
            bits = rng.next_u64();
        }
        out.push(if bits & 1 == 1 { 1.0 } else { -1.0 });
        bits >>= 1;
    }
    out
}

/// Mean and s/√n (None for n < 2); (0, None) for no samples.
fn mean_and_std_error(samples: &[f64]) -> (f64, Option<f64>) {
    let n = samples.len();
    if n == 0 {
        return (0.0, None);
    }
    let mean = samples.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, None);
    }
    let var = samples.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    (mean, Some((var / n as f64).sqrt()))
}

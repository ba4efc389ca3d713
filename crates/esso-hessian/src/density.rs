//! Stochastic Lanczos quadrature (SLQ): the spectral density of a symmetric operator from
//! products alone (Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao 2019; PyHessian, Yao
//! et al. 2020). See docs/method-spectral-analysis.md.
//!
//! For a unit probe v, m Lanczos steps from v give T_m = S Θ Sᵀ and the m-point Gauss
//! quadrature of the spectral measure μ_v = Σ_i (u_iᵀ v)² δ_{λ_i}:
//!
//! ```text
//! vᵀ f(A) v = ∫ f dμ_v ≈ Σ_k τ_k² f(θ_k),   τ_k = e_1ᵀ s_k,
//! ```
//!
//! exact for polynomials of degree ≤ 2m − 1 (and for every f once the Krylov space is
//! invariant). Averaging over n_v random unit probes estimates the density
//! φ(t) = (1/n) Σ_i δ(t − λ_i), since E(v vᵀ) = I/n.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::batch::SymmetricOperator;
use crate::error::{HessianError, Result};
use crate::lanczos::{Krylov, RowsWanted, Step, tridiagonal_eigen};
use crate::trace::rademacher;

/// Options of [`slq`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlqOptions {
    /// n_v, the number of random probes (Lanczos runs).
    pub n_probes: usize,
    /// m, Lanczos steps per run (capped at the dimension; a run stops early at a breakdown).
    pub n_steps: usize,
    /// Seed of the Rademacher probes (ChaCha8, platform-stable).
    pub seed: u64,
}

impl Default for SlqOptions {
    fn default() -> Self {
        SlqOptions { n_probes: 10, n_steps: 80, seed: 0 }
    }
}

/// A discrete spectral density: nodes θ_k with weights w_k ≥ 0 summing to 1 (the average
/// of the probes' Gauss quadratures).
#[derive(Debug, Clone, PartialEq)]
pub struct SpectralDensity {
    nodes: Vec<f64>,
    weights: Vec<f64>,
    n_probes: usize,
    n_matvecs: usize,
}

impl SpectralDensity {
    /// The nodes θ_k (Ritz values of every run, run by run, ascending within a run).
    pub fn nodes(&self) -> &[f64] {
        &self.nodes
    }

    /// The weights w_k = τ_k² / n_v, same order as the nodes.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// n_v, the number of probes.
    pub fn n_probes(&self) -> usize {
        self.n_probes
    }

    /// Products with the operator.
    pub fn n_matvecs(&self) -> usize {
        self.n_matvecs
    }

    /// Σ_k w_k θ_k^p, the estimate of tr(A^p)/n.
    pub fn moment(&self, p: i32) -> f64 {
        self.nodes.iter().zip(&self.weights).map(|(t, w)| w * t.powi(p)).sum()
    }

    /// Σ_k w_k f(θ_k), the estimate of tr(f(A))/n.
    pub fn integrate(&self, f: impl Fn(f64) -> f64) -> f64 {
        self.nodes.iter().zip(&self.weights).map(|(&t, w)| w * f(t)).sum()
    }

    /// The Gaussian-smoothed density φ_σ(t) = Σ_k w_k exp(−(t − θ_k)²/2σ²)/(σ√(2π)) at each
    /// point of `grid`. It integrates to Σ w_k = 1 over ℝ.
    ///
    /// # Errors
    /// [`HessianError::InvalidParameter`] naming `sigma` when it is not finite and > 0.
    pub fn smoothed(&self, grid: &[f64], sigma: f64) -> Result<Vec<f64>> {
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(HessianError::InvalidParameter {
                name: "sigma",
                value: sigma,
                reason: "must be finite and > 0",
            });
        }
        let norm = 1.0 / (sigma * (2.0 * std::f64::consts::PI).sqrt());
        Ok(grid
            .iter()
            .map(|&t| {
                self.nodes
                    .iter()
                    .zip(&self.weights)
                    .map(|(&theta, w)| {
                        let u = (t - theta) / sigma;
                        w * norm * (-0.5 * u * u).exp()
                    })
                    .sum()
            })
            .collect())
    }

    /// An evenly spaced grid of `n_points` from min θ − `padding` to max θ + `padding`
    /// (e.g. padding = 5σ, so that the smoothed density is negligible at both ends).
    ///
    /// # Errors
    /// [`HessianError::InvalidParameter`] for fewer than 2 points or a padding that is not
    /// finite and ≥ 0.
    pub fn grid(&self, n_points: usize, padding: f64) -> Result<Vec<f64>> {
        if n_points < 2 {
            return Err(HessianError::InvalidParameter {
                name: "n_points",
                value: n_points as f64,
                reason: "must be at least 2",
            });
        }
        if !(padding.is_finite() && padding >= 0.0) {
            return Err(HessianError::InvalidParameter {
                name: "padding",
                value: padding,
                reason: "must be finite and >= 0",
            });
        }
        let lo = self.nodes.iter().copied().fold(f64::INFINITY, f64::min) - padding;
        let hi = self.nodes.iter().copied().fold(f64::NEG_INFINITY, f64::max) + padding;
        let step = (hi - lo) / (n_points - 1) as f64;
        Ok((0..n_points).map(|i| lo + step * i as f64).collect())
    }
}

/// Stochastic Lanczos quadrature with `n_probes` Rademacher probes (normalised) of
/// `n_steps` Lanczos steps each (full reorthogonalisation; a run stops exactly at a
/// breakdown).
///
/// # Errors
/// [`HessianError::InvalidParameter`] for zero probes or steps;
/// [`HessianError::NonFiniteProduct`] naming the step; errors of the operator.
pub fn slq<O: SymmetricOperator + ?Sized>(op: &O, options: &SlqOptions) -> Result<SpectralDensity> {
    if options.n_probes == 0 {
        return Err(HessianError::InvalidParameter {
            name: "n_probes",
            value: 0.0,
            reason: "at least one probe is needed",
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut density =
        SpectralDensity { nodes: Vec::new(), weights: Vec::new(), n_probes: 0, n_matvecs: 0 };
    for _ in 0..options.n_probes {
        let probe = rademacher(op.dim(), &mut rng);
        let run = gauss_quadrature(op, &probe, options.n_steps)?;
        density.nodes.extend(run.nodes);
        density.weights.extend(run.weights.iter().map(|w| w / options.n_probes as f64));
        density.n_matvecs += run.n_matvecs;
        density.n_probes += 1;
    }
    Ok(density)
}

/// The Gauss quadrature of the spectral measure of one probe: `n_steps` Lanczos steps from
/// `probe`/‖probe‖, nodes = Ritz values, weights = squared first components of the Ritz
/// vectors (summing to 1). Σ_k w_k θ_k^p = vᵀ A^p v / vᵀ v exactly for p ≤ 2·steps − 1, and
/// for every p when the run ends at a breakdown.
///
/// # Errors
/// [`HessianError::InvalidParameter`] for zero steps or a zero probe;
/// [`HessianError::Shape`] when the probe does not have `dim` entries;
/// [`HessianError::NonFiniteProduct`]; errors of the operator.
pub fn gauss_quadrature<O: SymmetricOperator + ?Sized>(
    op: &O,
    probe: &[f64],
    n_steps: usize,
) -> Result<SpectralDensity> {
    if n_steps == 0 {
        return Err(HessianError::InvalidParameter {
            name: "n_steps",
            value: 0.0,
            reason: "at least one Lanczos step is needed",
        });
    }
    let mut krylov = Krylov::new(op, probe.to_vec(), "SLQ")?;
    for _ in 0..n_steps.min(op.dim()) {
        if krylov.step()? == Step::Breakdown {
            break;
        }
    }
    let j = krylov.alpha.len();
    let eigen = tridiagonal_eigen(&krylov.alpha, &krylov.beta[..j - 1], RowsWanted::First)?;
    let weights = eigen.rows.row(0).iter().map(|t| t * t).collect();
    Ok(SpectralDensity {
        nodes: eigen.values.to_vec(),
        weights,
        n_probes: 1,
        n_matvecs: krylov.n_matvecs,
    })
}

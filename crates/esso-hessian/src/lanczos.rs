//! The Lanczos method with full reorthogonalisation on any [`SymmetricOperator`]: extreme
//! eigenpairs of a Hessian from products alone (docs/method-spectral-analysis.md).
//!
//! After j steps from a unit vector q_1, Q_j = [q_1 … q_j] is an orthonormal basis of the
//! Krylov space span{q_1, A q_1, …, A^{j−1} q_1} and
//!
//! ```text
//! A Q_j = Q_j T_j + β_j q_{j+1} e_jᵀ,   T_j = tridiag(β, α, β)
//! ```
//!
//! The eigenpairs (θ_i, s_i) of T_j give Ritz pairs (θ_i, y_i = Q_j s_i) with residual
//! ‖A y_i − θ_i y_i‖ = |β_j| |e_jᵀ s_i| (Paige). Every new vector is orthogonalised against
//! all previous ones by classical Gram–Schmidt, a second time when the first pass removed
//! much of it ("twice is enough", Kahan–Parlett), which keeps Q_j orthonormal to working
//! precision and avoids spurious copies.
//!
//! When β_j vanishes the Krylov space is invariant and its Ritz pairs are exact; if fewer
//! than k pairs are available then, the basis is extended with a fresh random vector
//! orthogonalised against Q_j (T_j then has a zero off-diagonal entry), which is how a run to
//! full dimension recovers every eigenvalue with its multiplicity.
//!
//! Limitation: a single Krylov sequence sees each distinct eigenvalue once until it breaks
//! down, so for a multiple extreme eigenvalue the top-k values may skip its copies.

use ndarray::{Array1, Array2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::batch::SymmetricOperator;
use crate::error::{HessianError, Result};
use crate::linalg::{Rows, tridiagonal_ql};

/// β_j ≤ `BREAKDOWN_RTOL` · ‖A‖ (estimated by the largest ‖A q_i‖ seen) counts as a breakdown
/// (an invariant subspace).
///
/// Reason: with full reorthogonalisation the computed β_j of an exactly invariant subspace is
/// ≈ √j·ε·‖A‖ ≲ 1e-14·‖A‖ for the j ≲ 10⁴ of this project; a genuine β_j below 1e-12·‖A‖
/// means the subspace is invariant to that accuracy, so its Ritz pairs are exact to it.
pub const BREAKDOWN_RTOL: f64 = 1e-12;

/// Which end of the spectrum [`eigenpairs`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Which {
    /// The k algebraically largest eigenvalues (descending).
    Largest,
    /// The k algebraically smallest eigenvalues (ascending).
    Smallest,
    /// The k eigenvalues of largest magnitude (|θ| descending).
    LargestMagnitude,
}

/// Options of [`eigenpairs`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LanczosOptions {
    /// A Ritz pair counts as converged when its residual estimate |β_j e_jᵀ s_i| is at most
    /// `tol` · max|θ| (relative to the spectral norm estimate of T_j).
    pub tol: f64,
    /// The largest Krylov dimension (number of products before the final residual check);
    /// capped at the operator's dimension.
    pub max_iter: usize,
    /// Seed of the start vector (standard normal entries from ChaCha8, platform-stable
    /// through [`esso_core::portable`]) and of restart vectors after a breakdown.
    pub seed: u64,
}

impl Default for LanczosOptions {
    fn default() -> Self {
        LanczosOptions { tol: 1e-10, max_iter: 300, seed: 0 }
    }
}

/// One progress report of [`eigenpairs_with_progress`], after each Lanczos step.
#[derive(Debug, Clone, PartialEq)]
pub struct LanczosProgress {
    /// Steps done (= products with the operator so far).
    pub iteration: usize,
    /// How many of the k wanted Ritz pairs have converged.
    pub n_converged: usize,
    /// The wanted Ritz values so far, in the order of the result.
    pub ritz_values: Vec<f64>,
}

/// The result of [`eigenpairs`].
#[derive(Debug, Clone, PartialEq)]
pub struct Eigenpairs {
    /// The k Ritz values: descending for [`Which::Largest`], ascending for
    /// [`Which::Smallest`], by |θ| descending for [`Which::LargestMagnitude`].
    pub values: Vec<f64>,
    /// The Ritz vectors as columns (dim × k), unit norm, same order.
    pub vectors: Array2<f64>,
    /// ‖A y_i − θ_i y_i‖ of each pair, computed with one extra product per pair.
    pub residual_norms: Vec<f64>,
    /// Lanczos steps done (the Krylov dimension).
    pub iterations: usize,
    /// Products with the operator, the final residual checks included.
    pub n_matvecs: usize,
    /// Fresh start vectors used after breakdowns.
    pub n_restarts: usize,
    /// Whether every pair met the tolerance (by its Lanczos estimate) before `max_iter`.
    pub converged: bool,
}

/// The k wanted eigenpairs of a symmetric operator by Lanczos with full reorthogonalisation.
///
/// # Errors
/// [`HessianError::InvalidParameter`] for k = 0, a tolerance that is not finite and > 0, or
/// `max_iter` < k; [`HessianError::TooManyEigenpairs`] when k > dim;
/// [`HessianError::NonFiniteProduct`] naming the iteration when a product is not finite;
/// errors of the operator; [`HessianError::EigenNoConvergence`] from the tridiagonal solver.
pub fn eigenpairs<O: SymmetricOperator + ?Sized>(
    op: &O,
    k: usize,
    which: Which,
    options: &LanczosOptions,
) -> Result<Eigenpairs> {
    eigenpairs_with_progress(op, k, which, options, &mut |_| {})
}

/// [`eigenpairs`] with a callback after each Lanczos step (for progress bars).
///
/// # Errors
/// As [`eigenpairs`].
pub fn eigenpairs_with_progress<O: SymmetricOperator + ?Sized>(
    op: &O,
    k: usize,
    which: Which,
    options: &LanczosOptions,
    progress: &mut dyn FnMut(&LanczosProgress),
) -> Result<Eigenpairs> {
    let dim = op.dim();
    if k == 0 {
        return Err(HessianError::InvalidParameter {
            name: "k",
            value: 0.0,
            reason: "at least one eigenpair must be requested",
        });
    }
    if k > dim {
        return Err(HessianError::TooManyEigenpairs { requested: k, dim });
    }
    if !(options.tol.is_finite() && options.tol > 0.0) {
        return Err(HessianError::InvalidParameter {
            name: "tol",
            value: options.tol,
            reason: "must be finite and > 0",
        });
    }
    if options.max_iter < k {
        return Err(HessianError::InvalidParameter {
            name: "max_iter",
            value: options.max_iter as f64,
            reason: "must be at least k",
        });
    }
    let max_iter = options.max_iter.min(dim);
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut krylov = Krylov::new(op, random_vector(dim, &mut rng), "Lanczos")?;
    let mut n_restarts = 0;
    let mut converged = false;
    loop {
        let step = krylov.step()?;
        let j = krylov.alpha.len();
        // Ritz values and the last components of their vectors (O(j²)).
        let ritz = tridiagonal_eigen(&krylov.alpha, &krylov.beta[..j - 1], RowsWanted::Last)?;
        let last_row = ritz.rows.row(0);
        let scale = ritz.values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let order = wanted_order(&ritz.values, which);
        let residual_coeff = krylov.beta[j - 1];
        let wanted: Vec<usize> = order.iter().take(k).copied().collect();
        let n_converged = wanted
            .iter()
            .filter(|&&i| (residual_coeff * last_row[i]).abs() <= options.tol * scale)
            .count();
        progress(&LanczosProgress {
            iteration: j,
            n_converged,
            ritz_values: wanted.iter().map(|&i| ritz.values[i]).collect(),
        });
        if j >= k && n_converged == k {
            converged = true;
            break;
        }
        if j >= max_iter {
            break;
        }
        if step == Step::Breakdown {
            // Fewer than k exact pairs in the invariant subspace: extend with a fresh vector.
            if !krylov.restart(random_vector(dim, &mut rng)) {
                // The space is exhausted (j = dim): every pair is exact.
                converged = j >= k;
                break;
            }
            n_restarts += 1;
        }
    }
    let j = krylov.alpha.len();
    let ritz = tridiagonal_eigen(&krylov.alpha, &krylov.beta[..j - 1], RowsWanted::All)?;
    let order = wanted_order(&ritz.values, which);
    let mut values = Vec::with_capacity(k);
    let mut vectors = Array2::zeros((dim, k));
    for (col, &i) in order.iter().take(k).enumerate() {
        values.push(ritz.values[i]);
        let mut y = vec![0.0; dim];
        for (q, &c) in krylov.basis.iter().zip(ritz.rows.column(i)) {
            axpy(c, q, &mut y);
        }
        let norm = dot(&y, &y).sqrt();
        y.iter_mut().for_each(|v| *v /= norm);
        vectors.column_mut(col).assign(&Array1::from(y));
    }
    let mut residual_norms = Vec::with_capacity(k);
    let mut ay = vec![0.0; dim];
    for (col, &theta) in values.iter().enumerate() {
        let y = vectors.column(col).to_vec();
        op.apply(&y, &mut ay)?;
        krylov.n_matvecs += 1;
        if !ay.iter().all(|v| v.is_finite()) {
            return Err(HessianError::NonFiniteProduct {
                what: "Lanczos residual check",
                iteration: col,
            });
        }
        axpy(-theta, &y, &mut ay);
        residual_norms.push(dot(&ay, &ay).sqrt());
    }
    Ok(Eigenpairs {
        values,
        vectors,
        residual_norms,
        iterations: j,
        n_matvecs: krylov.n_matvecs,
        n_restarts,
        converged,
    })
}

/// Indices of `values` (ascending) in the order wanted by `which`.
fn wanted_order(values: &Array1<f64>, which: Which) -> Vec<usize> {
    let n = values.len();
    match which {
        Which::Smallest => (0..n).collect(),
        Which::Largest => (0..n).rev().collect(),
        Which::LargestMagnitude => {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.sort_by(|&a, &b| values[b].abs().total_cmp(&values[a].abs()));
            idx
        }
    }
}

/// A vector of standard normal entries (platform-stable draws).
pub(crate) fn random_vector(dim: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    (0..dim).map(|_| esso_core::portable::standard_normal(rng)).collect()
}

/// Σ a_i b_i with four independent accumulators (vectorises; a fixed summation order, so
/// the same bits on every run).
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 4];
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (a4.remainder(), b4.remainder());
    for (x, y) in a4.zip(b4) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

pub(crate) fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// The result of one Lanczos step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A new basis vector q_{j+1} was added.
    Continue,
    /// β_j vanished (or the basis spans the whole space): the Krylov space is invariant.
    Breakdown,
}

/// The state of a Lanczos process with full reorthogonalisation.
pub(crate) struct Krylov<'o, O: SymmetricOperator + ?Sized> {
    op: &'o O,
    /// q_1 … q_{j(+1)}: orthonormal.
    pub(crate) basis: Vec<Vec<f64>>,
    /// α_1 … α_j.
    pub(crate) alpha: Vec<f64>,
    /// β_1 … β_j (β_j couples q_j to q_{j+1}; 0 after a breakdown).
    pub(crate) beta: Vec<f64>,
    /// Largest ‖A q_i‖ seen: an estimate of ‖A‖ from below.
    norm_estimate: f64,
    pub(crate) n_matvecs: usize,
    what: &'static str,
}

impl<'o, O: SymmetricOperator + ?Sized> Krylov<'o, O> {
    /// Starts from `start` (normalised here).
    ///
    /// # Errors
    /// [`HessianError::Shape`] when `start` does not have `dim` entries,
    /// [`HessianError::InvalidParameter`] when it is zero or not finite.
    pub(crate) fn new(op: &'o O, mut start: Vec<f64>, what: &'static str) -> Result<Self> {
        if start.len() != op.dim() {
            return Err(HessianError::Shape {
                what: "start vector",
                expected: op.dim(),
                got: start.len(),
            });
        }
        let norm = dot(&start, &start).sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return Err(HessianError::InvalidParameter {
                name: "start vector norm",
                value: norm,
                reason: "must be finite and > 0",
            });
        }
        start.iter_mut().for_each(|v| *v /= norm);
        Ok(Krylov {
            op,
            basis: vec![start],
            alpha: Vec::new(),
            beta: Vec::new(),
            norm_estimate: 0.0,
            n_matvecs: 0,
            what,
        })
    }

    /// One step: A q_j, α_j, β_j and (unless it breaks down) q_{j+1}.
    ///
    /// # Panics
    /// If called after a breakdown without [`Krylov::restart`].
    pub(crate) fn step(&mut self) -> Result<Step> {
        let j = self.alpha.len();
        assert_eq!(self.basis.len(), j + 1, "Lanczos step without a current vector");
        let dim = self.op.dim();
        let mut w = vec![0.0; dim];
        self.op.apply(&self.basis[j], &mut w)?;
        self.n_matvecs += 1;
        if !w.iter().all(|v| v.is_finite()) {
            return Err(HessianError::NonFiniteProduct { what: self.what, iteration: j });
        }
        self.norm_estimate = self.norm_estimate.max(dot(&w, &w).sqrt());
        let alpha = dot(&self.basis[j], &w);
        axpy(-alpha, &self.basis[j], &mut w);
        if j > 0 {
            axpy(-self.beta[j - 1], &self.basis[j - 1], &mut w);
        }
        self.orthogonalise(&mut w);
        self.alpha.push(alpha);
        let beta = dot(&w, &w).sqrt();
        if self.basis.len() >= dim || beta <= BREAKDOWN_RTOL * self.norm_estimate {
            self.beta.push(0.0);
            return Ok(Step::Breakdown);
        }
        self.beta.push(beta);
        w.iter_mut().for_each(|v| *v /= beta);
        self.basis.push(w);
        Ok(Step::Continue)
    }

    /// After a breakdown: continues with `fresh` orthogonalised against the basis. Returns
    /// false when nothing is left of it (the basis spans the whole space).
    pub(crate) fn restart(&mut self, mut fresh: Vec<f64>) -> bool {
        if self.basis.len() >= self.op.dim() {
            return false;
        }
        let before = dot(&fresh, &fresh).sqrt();
        self.orthogonalise(&mut fresh);
        let after = dot(&fresh, &fresh).sqrt();
        if after.is_nan() || after <= 1e-8 * before {
            return false;
        }
        fresh.iter_mut().for_each(|v| *v /= after);
        self.basis.push(fresh);
        true
    }

    /// w ← (I − Q Qᵀ) w by classical Gram–Schmidt, repeated once when the pass removed
    /// more than 1 − 1/√2 of ‖w‖ (Kahan–Parlett: "twice is enough"; a second pass after a
    /// small change would only cost memory traffic, which dominates for large N). The
    /// coefficients Qᵀw are computed in parallel (each one a fixed-order dot product), and
    /// w is updated in parallel blocks of entries, each summing over the basis in order:
    /// the same bits for any number of threads.
    fn orthogonalise(&self, w: &mut [f64]) {
        use rayon::prelude::*;
        const BLOCK: usize = 4096;
        for pass in 0..2 {
            let before = dot(w, w).sqrt();
            let w_read: &[f64] = w;
            let coeffs: Vec<f64> = self.basis.par_iter().map(|q| dot(q, w_read)).collect();
            w.par_chunks_mut(BLOCK).enumerate().for_each(|(block, w_block)| {
                let lo = block * BLOCK;
                for (q, &c) in self.basis.iter().zip(&coeffs) {
                    axpy(-c, &q[lo..lo + w_block.len()], w_block);
                }
            });
            if pass == 0 && dot(w, w).sqrt() > std::f64::consts::FRAC_1_SQRT_2 * before {
                break;
            }
        }
    }
}

/// Which rows of the eigenvector matrix of T [`tridiagonal_eigen`] accumulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowsWanted {
    /// The first row (Gauss quadrature weights).
    First,
    /// The last row (Ritz residuals).
    Last,
    /// Every row (Ritz vectors).
    All,
}

/// Eigenvalues (ascending) of a symmetric tridiagonal matrix and the requested rows of its
/// orthonormal eigenvector matrix (columns in the order of the values).
pub(crate) struct TridiagonalEigen {
    pub(crate) values: Array1<f64>,
    /// The wanted rows of S (1 × n for `First`/`Last`, n × n for `All`).
    pub(crate) rows: Array2<f64>,
}

/// The symmetric tridiagonal eigenproblem T = S Θ Sᵀ, diagonal `diag` (n) and off-diagonal
/// `off` (n − 1), by the implicit QL method with Wilkinson shifts
/// ([`crate::linalg::tridiagonal_ql`]), applying the rotations only to the wanted rows of S:
/// O(n²) for one row, O(n³) for all.
///
/// # Errors
/// [`HessianError::EigenNoConvergence`] when an eigenvalue needs more than
/// [`crate::linalg::QL_MAX_ITERATIONS`] QL iterations (not observed for finite input);
/// [`HessianError::NonFinite`] for non-finite input.
///
/// # Panics
/// If `off.len() + 1 != diag.len()` for a non-empty `diag`.
pub(crate) fn tridiagonal_eigen(
    diag: &[f64],
    off: &[f64],
    rows: RowsWanted,
) -> Result<TridiagonalEigen> {
    let n = diag.len();
    if n == 0 {
        return Ok(TridiagonalEigen { values: Array1::zeros(0), rows: Array2::zeros((0, 0)) });
    }
    assert_eq!(off.len() + 1, n, "tridiagonal off-diagonal has the wrong length");
    if !diag.iter().chain(off).all(|v| v.is_finite()) {
        return Err(HessianError::NonFinite {
            what: "the Lanczos tridiagonal matrix",
            layer_idx: None,
        });
    }
    let mut d = diag.to_vec();
    let mut e = off.to_vec();
    e.push(0.0);
    // z: the tracked rows of S (row-major), starting from the identity.
    let row_ids: Vec<usize> = match rows {
        RowsWanted::First => vec![0],
        RowsWanted::Last => vec![n - 1],
        RowsWanted::All => (0..n).collect(),
    };
    let mut z = vec![0.0; row_ids.len() * n];
    for (r, &id) in row_ids.iter().enumerate() {
        z[r * n + id] = 1.0;
    }
    tridiagonal_ql(&mut d, &mut e, &mut Rows::new(&mut z, n)).map_err(|_| {
        HessianError::EigenNoConvergence { what: "the Lanczos tridiagonal matrix", layer_idx: None }
    })?;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| d[a].total_cmp(&d[b]));
    let values = Array1::from_shape_fn(n, |i| d[order[i]]);
    let rows = Array2::from_shape_fn((row_ids.len(), n), |(r, c)| z[r * n + order[c]]);
    Ok(TridiagonalEigen { values, rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::sym_eigen;

    #[test]
    fn tridiagonal_solver_matches_the_dense_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for n in [1usize, 2, 3, 7, 20] {
            let diag = random_vector(n, &mut rng);
            let mut off = random_vector(n.saturating_sub(1), &mut rng);
            if n > 4 {
                off[2] = 0.0; // a split
            }
            let dense = Array2::from_shape_fn((n, n), |(i, j)| {
                if i == j {
                    diag[i]
                } else if i + 1 == j {
                    off[i]
                } else if j + 1 == i {
                    off[j]
                } else {
                    0.0
                }
            });
            let (values, _) = sym_eigen(&dense, false).unwrap();
            let all = tridiagonal_eigen(&diag, &off, RowsWanted::All).unwrap();
            let err = (&all.values - &values).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(err < 1e-13, "n = {n}: eigenvalues off by {err}");
            // T S = S Θ and SᵀS = I.
            let s = &all.rows;
            let lhs = dense.dot(s);
            let rhs = s * &all.values.view().insert_axis(ndarray::Axis(0));
            let err = (&lhs - &rhs).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(err < 1e-13, "n = {n}: residual {err}");
            let gram = s.t().dot(s) - Array2::<f64>::eye(n);
            assert!(gram.iter().all(|v| v.abs() < 1e-13));
            for (wanted, row) in [(RowsWanted::First, 0), (RowsWanted::Last, n - 1)] {
                let part = tridiagonal_eigen(&diag, &off, wanted).unwrap();
                assert_eq!(part.values, all.values);
                let err = (&part.rows.row(0) - &all.rows.row(row))
                    .iter()
                    .fold(0.0f64, |m, v| m.max(v.abs()));
                assert!(err < 1e-14, "{wanted:?}: {err}");
            }
        }
    }
}

//! Inertia: how many eigenvalues are negative, zero and positive.

use serde::{Deserialize, Serialize};

/// Eigenvalues with |e| ≤ `ZERO_EIGENVALUE_RTOL` · max|e| are counted as zero.
///
/// Reason: the exact zero eigenvalues of a single-sample Hessian (the null vector 1 of
/// diag(p) − p pᵀ, inactive ReLU units, the n_l·n_{l−1} trivial zeros of a block) come out of
/// an f64 eigensolver as values of order m·ε·max|e| ≈ 1e-14 for the m ≲ 1000 of this project,
/// while the genuine eigenvalues of the small random nets used in the tests sit many orders
/// of magnitude above 1e-10·max|e|. Use [`Inertia::from_eigenvalues`] to choose another.
pub const ZERO_EIGENVALUE_RTOL: f64 = 1e-10;

/// Counts of negative, zero and positive eigenvalues of a symmetric matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Inertia {
    /// Eigenvalues < −tol.
    pub negative: usize,
    /// Eigenvalues with |e| ≤ tol (including the structural zeros).
    pub zero: usize,
    /// Eigenvalues > tol.
    pub positive: usize,
}

impl Inertia {
    /// Counts `values` plus `n_structural_zeros` exact zeros, with tol = `rtol` · max|e|.
    ///
    /// When every value is zero (or there are none) everything counts as zero.
    pub fn from_eigenvalues(
        values: impl IntoIterator<Item = f64> + Clone,
        n_structural_zeros: usize,
        rtol: f64,
    ) -> Self {
        let scale = values.clone().into_iter().fold(0.0f64, |m, e| m.max(e.abs()));
        let tol = rtol * scale;
        let mut inertia = Inertia { negative: 0, zero: n_structural_zeros, positive: 0 };
        for e in values {
            if e < -tol {
                inertia.negative += 1;
            } else if e > tol {
                inertia.positive += 1;
            } else {
                inertia.zero += 1;
            }
        }
        inertia
    }

    /// negative + positive: the rank.
    pub fn rank(&self) -> usize {
        self.negative + self.positive
    }

    /// negative + zero + positive: the matrix size.
    pub fn n_total(&self) -> usize {
        self.negative + self.zero + self.positive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_with_a_relative_tolerance() {
        let i = Inertia::from_eigenvalues([-2.0, -1e-13, 0.0, 1e-12, 3.0], 4, ZERO_EIGENVALUE_RTOL);
        assert_eq!(i, Inertia { negative: 1, zero: 7, positive: 1 });
        assert_eq!((i.rank(), i.n_total()), (2, 9));
        let zeros = Inertia::from_eigenvalues([0.0, 0.0], 1, ZERO_EIGENVALUE_RTOL);
        assert_eq!(zeros, Inertia { negative: 0, zero: 3, positive: 0 });
    }
}

//! Thin wrappers around faer's dense kernels, run sequentially (`Par::Seq`): the matrices here
//! are per-sample and small, and parallelism belongs across samples (docs/stack.md).

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{self, ComputeEigenvectors, EvdError};
use faer::{Mat, MatRef, Par};
use ndarray::{Array1, Array2, ArrayRef2};

/// A dense copy of an ndarray matrix as a faer matrix.
pub(crate) fn to_faer(a: &ArrayRef2<f64>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[[i, j]])
}

/// A dense copy of a faer matrix as an ndarray matrix.
pub(crate) fn from_faer(a: MatRef<'_, f64>) -> Array2<f64> {
    Array2::from_shape_fn((a.nrows(), a.ncols()), |(i, j)| a[(i, j)])
}

/// Eigenvalues (ascending) and, when asked, eigenvectors (columns, same order) of a symmetric
/// matrix. Only the lower triangle of `a` is read.
pub(crate) fn sym_eigen(
    a: &ArrayRef2<f64>,
    with_vectors: bool,
) -> Result<(Array1<f64>, Option<Array2<f64>>), EvdError> {
    assert_eq!(a.nrows(), a.ncols(), "eigendecomposition of a non-square matrix");
    let n = a.nrows();
    if n == 0 {
        return Ok((Array1::zeros(0), with_vectors.then(|| Array2::zeros((0, 0)))));
    }
    let a = to_faer(a);
    let par = Par::Seq;
    let compute = if with_vectors { ComputeEigenvectors::Yes } else { ComputeEigenvectors::No };
    let mut s = faer::diag::Diag::<f64>::zeros(n);
    let mut u = with_vectors.then(|| Mat::<f64>::zeros(n, n));
    let mut mem =
        MemBuffer::new(evd::self_adjoint_evd_scratch::<f64>(n, compute, par, Default::default()));
    evd::self_adjoint_evd(
        a.as_ref(),
        s.as_mut(),
        u.as_mut().map(|u| u.as_mut()),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    )?;
    let values = Array1::from_shape_fn(n, |i| s[i]);
    Ok((values, u.map(|u| from_faer(u.as_ref()))))
}

/// The lower Cholesky factor L of a symmetric positive-definite matrix (A = L Lᵀ), or `None`
/// when a pivot is not positive. Only the lower triangle of `a` is read.
pub(crate) fn cholesky_lower(a: &ArrayRef2<f64>) -> Option<Array2<f64>> {
    let llt = to_faer(a).llt(faer::Side::Lower).ok()?;
    let l = from_faer(llt.L());
    l.iter().all(|v| v.is_finite()).then_some(l)
}

/// L⁻¹ B for a lower-triangular L (B overwritten in a copy).
pub(crate) fn solve_lower(l: &ArrayRef2<f64>, b: &ArrayRef2<f64>) -> Array2<f64> {
    let l = to_faer(l);
    let mut x = to_faer(b);
    faer::linalg::triangular_solve::solve_lower_triangular_in_place(
        l.as_ref(),
        x.as_mut(),
        Par::Seq,
    );
    from_faer(x.as_ref())
}

/// The solution x of A x = b by LU with partial pivoting, or `None` when it is not finite.
pub(crate) fn lu_solve(a: &ArrayRef2<f64>, b: &Array1<f64>) -> Option<Array1<f64>> {
    use faer::linalg::solvers::Solve;
    let lu = to_faer(a).partial_piv_lu();
    let rhs = Mat::from_fn(b.len(), 1, |i, _| b[i]);
    let x = lu.solve(&rhs);
    let x = Array1::from_shape_fn(b.len(), |i| x[(i, 0)]);
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// The implicit QL iteration did not converge (an eigenvalue needed more than
/// [`QL_MAX_ITERATIONS`] iterations; not observed for finite input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QlNoConvergence;

/// Iterations of [`tridiagonal_ql`] allowed per eigenvalue (EISPACK uses 30; the implicit
/// shift converges cubically, so 60 is generous).
pub(crate) const QL_MAX_ITERATIONS: usize = 60;

/// What the plane rotations of [`tridiagonal_ql`] are applied to: the QL iteration
/// computes T = Z Λ Zᵀ as a product of rotations Z = G_1 G_2 ⋯ G_K, each G_k acting on two
/// adjacent coordinates (i, i + 1) with cosine c and sine s, and hands every G_k in order to
/// its target.
pub(crate) trait RotationTarget {
    /// Receives the next rotation G = G(i, c, s).
    fn rotate(&mut self, i: usize, c: f64, s: f64);
}

/// Row-major rows of length n, each row r replaced by r G for every rotation: after the
/// iteration a row yᵀ is (Zᵀ y)ᵀ, and the rows of the identity become the rows of Z.
pub(crate) struct Rows<'a> {
    data: &'a mut [f64],
    n: usize,
}

impl<'a> Rows<'a> {
    /// The rows of `data` (row-major, `data.len() / n` rows of length `n`).
    ///
    /// # Panics
    /// If `data.len()` is not a multiple of `n`.
    pub(crate) fn new(data: &'a mut [f64], n: usize) -> Self {
        assert!(data.len().is_multiple_of(n), "row buffer is not a multiple of n");
        Rows { data, n }
    }
}

impl RotationTarget for Rows<'_> {
    #[inline]
    fn rotate(&mut self, i: usize, c: f64, s: f64) {
        for row in self.data.chunks_exact_mut(self.n) {
            let f = row[i + 1];
            row[i + 1] = s * row[i] + c * f;
            row[i] = c * row[i] - s * f;
        }
    }
}

/// The eigenvalues of a symmetric tridiagonal matrix T = Z Λ Zᵀ by the implicit QL
/// iteration with Wilkinson shifts (the `tql2`/`tqli` algorithm: Bowdler, Martin, Reinsch and
/// Wilkinson, Numer. Math. 11, 1968), without forming Z: every rotation is handed to
/// `target` ([`Rows`] to carry vectors or rows of Z).
///
/// `d` holds the diagonal (overwritten by the eigenvalues, unsorted), `e[i]` the coupling of
/// i and i + 1 (`e[n−1]` is ignored; destroyed). An off-diagonal entry counts as zero when
/// |e_m| ≤ ε (|d_m| + |d_{m+1}|) (a local test, which keeps small eigenvalues of graded
/// matrices accurate). Cost: O(n²) rotations, plus the target's cost per rotation.
///
/// # Errors
/// [`QlNoConvergence`] when an eigenvalue needs more than [`QL_MAX_ITERATIONS`] iterations
/// (also the outcome for non-finite input, which callers reject first).
///
/// # Panics
/// If `e.len() != d.len()`.
pub(crate) fn tridiagonal_ql(
    d: &mut [f64],
    e: &mut [f64],
    target: &mut impl RotationTarget,
) -> Result<(), QlNoConvergence> {
    let n = d.len();
    assert_eq!(e.len(), n, "sub-diagonal buffer has the wrong length");
    if n == 0 {
        return Ok(());
    }
    e[n - 1] = 0.0;
    for l in 0..n {
        let mut iterations = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iterations += 1;
            if iterations > QL_MAX_ITERATIONS {
                return Err(QlNoConvergence);
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = pythag(g, 1.0);
            g = d[m] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0, 1.0, 0.0);
            let mut deflated = false;
            for i in (l..m).rev() {
                let f = s * e[i];
                let b = c * e[i];
                r = pythag(f, g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    deflated = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                target.rotate(i, c, s);
            }
            if deflated {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    Ok(())
}

/// √(a² + b²): directly when the squares can neither overflow nor underflow (the common
/// case, ~5x cheaper than libm's `hypot`), else by `hypot`.
#[inline]
pub(crate) fn pythag(a: f64, b: f64) -> f64 {
    let m = a.abs().max(b.abs());
    if m > 1e-150 && m < 1e150 { (a * a + b * b).sqrt() } else { a.hypot(b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn eigen_of_a_small_matrix() {
        let a = array![[2.0, 1.0], [1.0, 2.0]];
        let (values, vectors) = sym_eigen(&a, true).unwrap();
        assert!((values[0] - 1.0).abs() < 1e-14 && (values[1] - 3.0).abs() < 1e-14);
        let u = vectors.unwrap();
        let back = u.dot(&Array2::from_diag(&values)).dot(&u.t());
        assert!((&back - &a).iter().all(|d| d.abs() < 1e-14));
        let (only, none) = sym_eigen(&a, false).unwrap();
        assert!(none.is_none());
        assert!((&only - &values).iter().all(|d| d.abs() < 1e-14));
    }

    #[test]
    fn cholesky_triangular_and_lu() {
        let a = array![[4.0, 2.0], [2.0, 3.0]];
        let l = cholesky_lower(&a).unwrap();
        assert!((l.dot(&l.t()) - &a).iter().all(|d| d.abs() < 1e-14));
        assert_eq!(l[[0, 1]], 0.0);
        let inv = solve_lower(&l, &Array2::eye(2));
        assert!((inv.dot(&l) - Array2::<f64>::eye(2)).iter().all(|d| d.abs() < 1e-14));
        assert!(cholesky_lower(&array![[1.0, 2.0], [2.0, 1.0]]).is_none());
        let x = lu_solve(&array![[0.0, 1.0], [2.0, 0.0]], &array![3.0, 4.0]).unwrap();
        assert!((x[0] - 2.0).abs() < 1e-14 && (x[1] - 3.0).abs() < 1e-14);
        assert!(lu_solve(&Array2::zeros((2, 2)), &array![1.0, 1.0]).is_none());
    }

    #[test]
    fn ql_leaves_a_diagonal_matrix_alone_and_finds_repeated_eigenvalues() {
        let mut d = vec![3.0, -1.0, 3.0, 0.0];
        let mut e = vec![0.0; 4];
        let mut row = vec![1.0, 2.0, 3.0, 4.0];
        tridiagonal_ql(&mut d, &mut e, &mut Rows::new(&mut row, 4)).unwrap();
        assert_eq!(d, vec![3.0, -1.0, 3.0, 0.0]);
        assert_eq!(row, vec![1.0, 2.0, 3.0, 4.0]);
        // tridiag(1, 2, 1) of size n: eigenvalues 2 + 2 cos(kπ/(n+1)).
        let n = 9;
        let mut d = vec![2.0; n];
        let mut e = vec![1.0; n];
        let mut z = vec![0.0; n * n];
        for i in 0..n {
            z[i * n + i] = 1.0;
        }
        tridiagonal_ql(&mut d, &mut e, &mut Rows::new(&mut z, n)).unwrap();
        let mut sorted = d.clone();
        sorted.sort_by(f64::total_cmp);
        for (k, v) in sorted.iter().enumerate() {
            let expected =
                2.0 - 2.0 * (std::f64::consts::PI * (k + 1) as f64 / (n + 1) as f64).cos();
            assert!((v - expected).abs() < 1e-14, "{k}: {v} vs {expected}");
        }
        // Non-finite input does not converge.
        let mut d = vec![f64::NAN, 1.0];
        let mut e = vec![1.0, 0.0];
        assert_eq!(
            tridiagonal_ql(&mut d, &mut e, &mut Rows::new(&mut [0.0, 0.0], 2)),
            Err(QlNoConvergence)
        );
    }
}

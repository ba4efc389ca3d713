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
}

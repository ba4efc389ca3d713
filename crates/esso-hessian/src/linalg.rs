//! Thin wrappers around faer's dense kernels, run sequentially (`Par::Seq`): the matrices here
//! are per-sample and small, and parallelism belongs across samples (docs/stack.md).
//!
//! Every buffer that grows with the square of a size (m x m, n x n, N x r) is allocated
//! through [`try_vec`], [`try_array2`] or [`try_faer`], so that a refused allocation is a
//! [`HessianError::Allocation`] naming the buffer and its size instead of an abort.

use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::evd::{self, ComputeEigenvectors, EvdError};
use faer::{Mat, MatRef, Par};
use ndarray::{Array1, Array2, ArrayRef2};

use crate::error::HessianError;

/// The error of a refused allocation of `what`, `bytes` long.
pub(crate) fn alloc_error(what: &'static str, bytes: u128) -> HessianError {
    HessianError::Allocation { what, bytes }
}

fn f64_bytes(len: u128) -> u128 {
    len * size_of::<f64>() as u128
}

/// An empty vector with room for exactly `len` f64 values, or an allocation error.
pub(crate) fn try_vec(len: usize, what: &'static str) -> Result<Vec<f64>, HessianError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| alloc_error(what, f64_bytes(len as u128)))?;
    Ok(v)
}

/// A `rows x cols` ndarray matrix (standard row-major layout) with entries `f(i, j)`, or an
/// allocation error. Same layout and values as `Array2::from_shape_fn`.
pub(crate) fn try_array2(
    rows: usize,
    cols: usize,
    what: &'static str,
    mut f: impl FnMut(usize, usize) -> f64,
) -> Result<Array2<f64>, HessianError> {
    let len = rows
        .checked_mul(cols)
        .ok_or_else(|| alloc_error(what, f64_bytes(rows as u128 * cols as u128)))?;
    let mut v = try_vec(len, what)?;
    for i in 0..rows {
        for j in 0..cols {
            v.push(f(i, j));
        }
    }
    Ok(Array2::from_shape_vec((rows, cols), v).expect("the length is rows x cols"))
}

/// A zero `rows x cols` ndarray matrix, or an allocation error.
pub(crate) fn try_zeros(
    rows: usize,
    cols: usize,
    what: &'static str,
) -> Result<Array2<f64>, HessianError> {
    try_array2(rows, cols, what, |_, _| 0.0)
}

/// A copy of `a`, or an allocation error.
pub(crate) fn try_copy(
    a: &ArrayRef2<f64>,
    what: &'static str,
) -> Result<Array2<f64>, HessianError> {
    try_array2(a.nrows(), a.ncols(), what, |i, j| a[[i, j]])
}

/// `a · b` into a new matrix, or an allocation error: ndarray's `dot` with a fallible
/// output (the same kernel and the same output layout, so the same bits).
pub(crate) fn try_dot(
    a: &ArrayRef2<f64>,
    b: &ArrayRef2<f64>,
    what: &'static str,
) -> Result<Array2<f64>, HessianError> {
    use ndarray::ShapeBuilder;
    let (rows, cols) = (a.nrows(), b.ncols());
    let len = rows
        .checked_mul(cols)
        .ok_or_else(|| alloc_error(what, f64_bytes(rows as u128 * cols as u128)))?;
    let mut v = try_vec(len, what)?;
    v.resize(len, 0.0);
    let column_major = a.strides()[0] == 1 && b.strides()[0] == 1;
    let mut c = Array2::from_shape_vec((rows, cols).set_f(column_major), v)
        .expect("the length is rows x cols");
    ndarray::linalg::general_mat_mul(1.0, a, b, 0.0, &mut c);
    Ok(c)
}

/// (A + Aᵀ)/2 of a square matrix, or an allocation error.
pub(crate) fn try_symmetrised(
    a: &ArrayRef2<f64>,
    what: &'static str,
) -> Result<Array2<f64>, HessianError> {
    try_array2(a.nrows(), a.ncols(), what, |i, j| (a[[i, j]] + a[[j, i]]) * 0.5)
}

/// A `rows x cols` faer matrix with entries `f(i, j)` (the layout of `Mat::from_fn`), or an
/// allocation error.
pub(crate) fn try_faer(
    rows: usize,
    cols: usize,
    what: &'static str,
    f: impl FnMut(usize, usize) -> f64,
) -> Result<Mat<f64>, HessianError> {
    let mut m = Mat::<f64>::new();
    m.try_reserve(rows, cols)
        .map_err(|_| alloc_error(what, f64_bytes(rows as u128 * cols as u128)))?;
    m.resize_with(rows, cols, f);
    Ok(m)
}

/// Scratch memory for a faer kernel, or an allocation error.
fn try_scratch(req: StackReq, what: &'static str) -> Result<MemBuffer, HessianError> {
    MemBuffer::try_new(req).map_err(|_| alloc_error(what, req.unaligned_bytes_required() as u128))
}

/// A dense copy of an ndarray matrix as a faer matrix, or an allocation error.
pub(crate) fn to_faer(a: &ArrayRef2<f64>, what: &'static str) -> Result<Mat<f64>, HessianError> {
    try_faer(a.nrows(), a.ncols(), what, |i, j| a[[i, j]])
}

/// A dense copy of a faer matrix as an ndarray matrix, or an allocation error.
pub(crate) fn from_faer(
    a: MatRef<'_, f64>,
    what: &'static str,
) -> Result<Array2<f64>, HessianError> {
    try_array2(a.nrows(), a.ncols(), what, |i, j| a[(i, j)])
}

/// Bytes of faer's scratch for a symmetric eigendecomposition of order n.
pub(crate) fn sym_eigen_scratch_bytes(n: usize, with_vectors: bool) -> u128 {
    let compute = if with_vectors { ComputeEigenvectors::Yes } else { ComputeEigenvectors::No };
    evd::self_adjoint_evd_scratch::<f64>(n, compute, Par::Seq, Default::default())
        .unaligned_bytes_required() as u128
}

/// Why [`sym_eigen`] failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EigenFailure {
    /// The iteration did not converge.
    NoConvergence,
    /// A buffer could not be allocated.
    Allocation(HessianError),
}

impl From<HessianError> for EigenFailure {
    fn from(e: HessianError) -> Self {
        EigenFailure::Allocation(e)
    }
}

impl From<EvdError> for EigenFailure {
    fn from(_: EvdError) -> Self {
        EigenFailure::NoConvergence
    }
}

impl EigenFailure {
    /// The library error: [`HessianError::EigenNoConvergence`] naming `what` and the layer, or
    /// the allocation error.
    pub(crate) fn into_error(self, what: &'static str, layer_idx: Option<usize>) -> HessianError {
        match self {
            EigenFailure::NoConvergence => HessianError::EigenNoConvergence { what, layer_idx },
            EigenFailure::Allocation(e) => e,
        }
    }
}

/// Eigenvalues (ascending) and, when asked, eigenvectors (columns, same order) of a symmetric
/// matrix. Only the lower triangle of `a` is read.
pub(crate) fn sym_eigen(
    a: &ArrayRef2<f64>,
    with_vectors: bool,
) -> Result<(Array1<f64>, Option<Array2<f64>>), EigenFailure> {
    assert_eq!(a.nrows(), a.ncols(), "eigendecomposition of a non-square matrix");
    let n = a.nrows();
    if n == 0 {
        return Ok((Array1::zeros(0), with_vectors.then(|| Array2::zeros((0, 0)))));
    }
    let a = to_faer(a, "a copy of the matrix to eigendecompose")?;
    let par = Par::Seq;
    let compute = if with_vectors { ComputeEigenvectors::Yes } else { ComputeEigenvectors::No };
    let mut s = faer::diag::Diag::<f64>::zeros(n);
    let mut u = match with_vectors {
        true => Some(try_faer(n, n, "the eigenvectors", |_, _| 0.0)?),
        false => None,
    };
    let mut mem = try_scratch(
        evd::self_adjoint_evd_scratch::<f64>(n, compute, par, Default::default()),
        "the eigendecomposition's workspace",
    )?;
    evd::self_adjoint_evd(
        a.as_ref(),
        s.as_mut(),
        u.as_mut().map(|u| u.as_mut()),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    )?;
    drop(mem);
    drop(a);
    let values = Array1::from_shape_fn(n, |i| s[i]);
    let vectors = match u {
        Some(u) => Some(from_faer(u.as_ref(), "the eigenvectors")?),
        None => None,
    };
    Ok((values, vectors))
}

/// The lower Cholesky factor L of a symmetric positive-definite matrix (A = L Lᵀ), `None`
/// when a pivot is not positive, or an allocation error. Only the lower triangle of `a` is
/// read. The steps of faer's `Mat::llt`, with fallible buffers.
pub(crate) fn cholesky_lower(a: &ArrayRef2<f64>) -> Result<Option<Array2<f64>>, HessianError> {
    let n = a.nrows();
    assert_eq!(n, a.ncols(), "Cholesky factorisation of a non-square matrix");
    let what = "the Cholesky factor";
    let mut l = try_faer(n, n, what, |i, j| if i >= j { a[[i, j]] } else { 0.0 })?;
    let par = faer::get_global_parallelism();
    let mut mem = try_scratch(
        faer::linalg::cholesky::llt::factor::cholesky_in_place_scratch::<f64>(
            n,
            par,
            Default::default(),
        ),
        "the Cholesky factorisation's workspace",
    )?;
    let factored = faer::linalg::cholesky::llt::factor::cholesky_in_place(
        l.as_mut(),
        Default::default(),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    );
    drop(mem);
    if factored.is_err() {
        return Ok(None);
    }
    let l = try_array2(n, n, what, |i, j| if i >= j { l[(i, j)] } else { 0.0 })?;
    Ok(l.iter().all(|v| v.is_finite()).then_some(l))
}

/// L⁻¹ B for a lower-triangular L (B overwritten in a copy), or an allocation error.
pub(crate) fn solve_lower(
    l: &ArrayRef2<f64>,
    b: &ArrayRef2<f64>,
) -> Result<Array2<f64>, HessianError> {
    let l = to_faer(l, "a copy of the Cholesky factor")?;
    let mut x = to_faer(b, "the triangular solve's right-hand side")?;
    faer::linalg::triangular_solve::solve_lower_triangular_in_place(
        l.as_ref(),
        x.as_mut(),
        Par::Seq,
    );
    drop(l);
    from_faer(x.as_ref(), "the triangular solve's solution")
}

/// The solution x of A x = b by LU with partial pivoting, `None` when it is not finite, or an
/// allocation error. (faer's `partial_piv_lu` makes one more infallible copy of A.)
pub(crate) fn lu_solve(
    a: &ArrayRef2<f64>,
    b: &Array1<f64>,
) -> Result<Option<Array1<f64>>, HessianError> {
    use faer::linalg::solvers::Solve;
    let lu = to_faer(a, "a copy of the push-through system")?.partial_piv_lu();
    let rhs = Mat::from_fn(b.len(), 1, |i, _| b[i]);
    let x = lu.solve(&rhs);
    let x = Array1::from_shape_fn(b.len(), |i| x[(i, 0)]);
    Ok(x.iter().all(|v| v.is_finite()).then_some(x))
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
        let l = cholesky_lower(&a).unwrap().unwrap();
        assert!((l.dot(&l.t()) - &a).iter().all(|d| d.abs() < 1e-14));
        assert_eq!(l[[0, 1]], 0.0);
        let inv = solve_lower(&l, &Array2::eye(2)).unwrap();
        assert!((inv.dot(&l) - Array2::<f64>::eye(2)).iter().all(|d| d.abs() < 1e-14));
        assert!(cholesky_lower(&array![[1.0, 2.0], [2.0, 1.0]]).unwrap().is_none());
        let x = lu_solve(&array![[0.0, 1.0], [2.0, 0.0]], &array![3.0, 4.0]).unwrap().unwrap();
        assert!((x[0] - 2.0).abs() < 1e-14 && (x[1] - 3.0).abs() < 1e-14);
        assert!(lu_solve(&Array2::zeros((2, 2)), &array![1.0, 1.0]).unwrap().is_none());
    }

    #[test]
    fn a_refused_allocation_is_an_error_naming_the_buffer() {
        let err = try_zeros(usize::MAX / 4, 3, "the test buffer").unwrap_err();
        assert!(matches!(err, HessianError::Allocation { what: "the test buffer", .. }), "{err}");
        let err = try_faer(1 << 40, 1 << 20, "the big one", |_, _| 0.0).unwrap_err();
        assert!(err.to_string().contains("the big one"), "{err}");
        assert!(err.to_string().contains("8.00 EiB"), "{err}");
    }

    #[test]
    fn the_fallible_helpers_match_ndarray() {
        let a = Array2::from_shape_fn((5, 3), |(i, j)| (i * 3 + j) as f64 * 0.37 - 1.0);
        let b = Array2::from_shape_fn((3, 4), |(i, j)| (i + 2 * j) as f64 * 0.11 + 0.5);
        assert_eq!(try_dot(&a, &b, "c").unwrap(), a.dot(&b));
        assert_eq!(try_copy(&a, "c").unwrap(), a);
        let s = a.t().dot(&a);
        assert_eq!(try_symmetrised(&s, "s").unwrap(), (&s + &s.t()) * 0.5);
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

//! Exact per-layer Newton factors without eigenvectors, what an optimiser needs per sample:
//! the dense route (Householder tridiagonalisation, then divide and conquer on the
//! tridiagonal, both from [`crate::kernels`] and both applied to the one vector) and the
//! reduced route for H_l = Gᵀ G (piecewise-linear activations).
//!
//! Everything here is checked against [`LayerCurvature`](crate::LayerCurvature) (dense
//! eigenvectors) in the unit tests and, through the optimiser, against the general ESSO path
//! in esso-optim's tests.
#![allow(clippy::needless_range_loop)] // index-heavy numeric kernels

use ndarray::{ArrayRef1, ArrayRef2};

use crate::error::{HessianError, Result};

use crate::kernels::householder::Tridiagonalizer;
use crate::kernels::tridiagonal::{TridiagonalEigen, TridiagonalError};
use crate::spectral::SpectralFn;

/// How [`LayerSolver::solve`] receives a layer's H_l (n × n).
#[derive(Debug, Clone, Copy)]
pub enum LayerHessian<'a> {
    /// H_l itself, symmetric n × n; only the lower triangle is read.
    Dense(&'a ArrayRef2<f64>),
    /// A factor G (r × n, r ≥ 1) with H_l = Gᵀ G, e.g. G_l = F J_l for piecewise-linear
    /// activations: the r × r Gram route, O(r² n + r³).
    Gram(&'a ArrayRef2<f64>),
}

/// A reusable workspace for one layer's Newton factor u = f(‖ã‖² H_l) δ_l and the n_l
/// non-trivial block eigenvalues ‖ã‖² μ_i, **without eigenvectors**: what the optimiser needs
/// per sample. Two exact routes:
///
/// - [`LayerHessian::Dense`], any symmetric H_l: Householder tridiagonalisation
///   H = Q T Qᵀ ([`crate::kernels::householder`]), then T = S Λ Sᵀ by divide and conquer
///   ([`crate::kernels::tridiagonal`]), with Q and S kept factored and applied to the one
///   vector, so that `u = Q S f(‖ã‖² Λ) Sᵀ Qᵀ δ`: 4/3 n³ + O(n²) flops instead of the
///   ≈ 9 n³ of an eigendecomposition with vectors ([`crate::LayerCurvature`]).
/// - [`LayerHessian::Gram`], H_l = Gᵀ G with G of r ≪ n rows (piecewise-linear
///   activations: c = 0 above the layer, H_L = Fᵀ F, G = F J_l): the non-zero eigenvalues
///   are those of the r × r Gram matrix K = G Gᵀ = V Σ² Vᵀ, the eigenvectors Gᵀ v_i / σ_i,
///   and every other eigenvalue is exactly 0, so
///
/// ```text
/// u = f(0) δ + Gᵀ Σ_i v_i (f(‖ã‖² σ_i²) − f(0)) (v_iᵀ G δ) / σ_i²
/// ```
///
/// costs O(r² n + r³). The sum over i is f-weighted K applied to one vector, so K goes
/// through the dense route's solver too (Householder and divide and conquer on the r × r
/// matrix, no eigenvectors formed). Eigenvalues σ_i² ≤ n·ε·σ_max² are rounding noise of
/// exact zeros (rank deficiency, dead units) and count as 0.
///
/// Buffers are sized for n_l at construction; nothing is allocated per call (but for the
/// r × r buffers of the reduced route, on its first call or when r changes).
///
/// # Examples
/// ```
/// use esso_hessian::{LayerCurvature, SpectralFn};
/// use esso_hessian::{LayerHessian, LayerSolver};
/// let h = ndarray::array![[2.0, 0.5], [0.5, -1.0]];
/// let delta = ndarray::array![1.0, -1.0];
/// let f = SpectralFn::absolute(1.0)?;
/// let (mut u, mut e) = ([0.0; 2], [0.0; 2]);
/// LayerSolver::new(2).solve(LayerHessian::Dense(&h), 3.0, &delta, &f, None, &mut u, &mut e)?;
/// let curv = LayerCurvature::new(&h, 3.0)?;
/// let expected = curv.direction_factor(&delta, &f);
/// assert!((u[0] - expected[0]).abs() < 1e-15 && (u[1] - expected[1]).abs() < 1e-15);
/// assert!((e[0] - curv.eigenvalues()[0]).abs() < 1e-14);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct LayerSolver {
    n: usize,
    dense: DenseSolver,
    coords: Vec<f64>,
    gram_solver: Option<DenseSolver>,
    gram: Vec<f64>,
    t: Vec<f64>,
}

impl LayerSolver {
    /// A workspace for layers of width n_l = `n`.
    pub fn new(n: usize) -> Self {
        LayerSolver {
            n,
            dense: DenseSolver::new(n),
            coords: vec![0.0; n],
            gram_solver: None,
            gram: Vec::new(),
            t: Vec::new(),
        }
    }

    /// n_l.
    pub fn n(&self) -> usize {
        self.n
    }

    /// u = f(‖ã‖² H_l) δ and the n non-trivial block eigenvalues ‖ã‖² μ (ascending), for
    /// H_l given densely or as a Gram factor ([`LayerHessian`]; routes in the type docs).
    ///
    /// # Shapes
    /// `delta`, `u` and `block_eigenvalues` have n entries; see [`LayerHessian`] for H_l.
    ///
    /// # Errors
    /// [`HessianError::NonFinite`] for a non-finite H_l (or G, reported as `H_l`) or δ,
    /// [`HessianError::InvalidParameter`] naming `a_tilde_norm_sq` unless finite and > 0,
    /// [`HessianError::EigenNoConvergence`], and [`HessianError::NonPositiveShift`] for the
    /// damped function when e_min + λ ≤ 0.
    ///
    /// # Panics
    /// If a shape differs from n.
    #[allow(clippy::too_many_arguments)]
    #[track_caller]
    pub fn solve(
        &mut self,
        hessian: LayerHessian<'_>,
        a_tilde_norm_sq: f64,
        delta: &ArrayRef1<f64>,
        f: &SpectralFn,
        layer_idx: Option<usize>,
        u: &mut [f64],
        block_eigenvalues: &mut [f64],
    ) -> Result<()> {
        let n = self.n;
        assert!(
            delta.len() == n && u.len() == n && block_eigenvalues.len() == n,
            "delta, u and the eigenvalue buffer need n = {n} entries"
        );
        if !a_tilde_norm_sq.is_finite() || a_tilde_norm_sq <= 0.0 {
            return Err(HessianError::InvalidParameter {
                name: "a_tilde_norm_sq",
                value: a_tilde_norm_sq,
                reason: "must be finite and > 0",
            });
        }
        if !delta.iter().all(|v| v.is_finite()) {
            return Err(HessianError::NonFinite { what: "delta", layer_idx });
        }
        let request = Request { a_tilde_norm_sq, delta, f, layer_idx };
        match hessian {
            LayerHessian::Dense(h) => self.solve_dense(h, &request, u, block_eigenvalues),
            LayerHessian::Gram(g) => self.solve_gram(g, &request, u, block_eigenvalues),
        }
    }

    /// The dense route of [`LayerSolver::solve`].
    #[track_caller]
    fn solve_dense(
        &mut self,
        h: &ArrayRef2<f64>,
        &Request { a_tilde_norm_sq, delta, f, layer_idx }: &Request<'_>,
        u: &mut [f64],
        block_eigenvalues: &mut [f64],
    ) -> Result<()> {
        let n = self.n;
        assert_eq!(h.dim(), (n, n), "H has the wrong shape");
        // The reduction reads the lower triangle straight from the caller's rows (a copy only
        // when H is not in standard layout).
        let h_std = h.as_standard_layout();
        let h_rows = h_std.as_slice().expect("standard layout");
        // v · 0 is 0 for finite v and NaN otherwise: a branch-free test that vectorises.
        let mut probe = [0.0f64; 4];
        for i in 0..n {
            let row = &h_rows[i * n..i * n + i + 1];
            let chunks = row.chunks_exact(4);
            for &v in chunks.remainder() {
                probe[0] += v * 0.0;
            }
            for c in chunks {
                for k in 0..4 {
                    probe[k] += c[k] * 0.0;
                }
            }
        }
        if probe.iter().sum::<f64>() != 0.0 {
            return Err(HessianError::NonFinite { what: "H_l", layer_idx });
        }
        for (x, &d) in self.coords.iter_mut().zip(delta.iter()) {
            *x = d;
        }
        let no_convergence = |_| HessianError::EigenNoConvergence { what: "H_l", layer_idx };
        let dense = &mut self.dense;
        dense.eigen_coordinates(h_rows, &mut self.coords).map_err(no_convergence)?;
        // Ascending, in the order of the coordinates.
        let values = dense.eigen.eigenvalues();
        for (slot, &mu) in block_eigenvalues.iter_mut().zip(values) {
            *slot = mu * a_tilde_norm_sq;
        }
        if let Some(&min) = block_eigenvalues.first() {
            f.check_min_eigenvalue(min, layer_idx)?;
        }
        for (w, &e) in self.coords.iter_mut().zip(block_eigenvalues.iter()) {
            *w *= f.apply(e);
        }
        dense.back_transform(&mut self.coords);
        u.copy_from_slice(&self.coords);
        Ok(())
    }

    /// The reduced route of [`LayerSolver::solve`] for H = Gᵀ G, without forming H.
    #[track_caller]
    fn solve_gram(
        &mut self,
        g: &ArrayRef2<f64>,
        &Request { a_tilde_norm_sq, delta, f, layer_idx }: &Request<'_>,
        u: &mut [f64],
        block_eigenvalues: &mut [f64],
    ) -> Result<()> {
        let n = self.n;
        let r = g.nrows();
        assert_eq!(g.ncols(), n, "G has the wrong number of columns");
        if !g.iter().all(|v| v.is_finite()) {
            return Err(HessianError::NonFinite { what: "H_l", layer_idx });
        }
        if self.gram_solver.as_ref().is_none_or(|s| s.eigen.n() != r) {
            self.gram_solver = Some(DenseSolver::new(r));
            self.gram = vec![0.0; r * r];
            self.t = vec![0.0; r];
        }
        // K = G Gᵀ (lower triangle) and t = G δ, over contiguous rows (a copy when G or δ
        // is not in standard layout).
        let g_std = g.as_standard_layout();
        let g_rows = g_std.as_slice().expect("standard layout");
        let delta_std = delta.as_standard_layout();
        let delta_s = delta_std.as_slice().expect("standard layout");
        for i in 0..r {
            let gi = &g_rows[i * n..(i + 1) * n];
            for j in 0..=i {
                self.gram[i * r + j] = crate::lanczos::dot(gi, &g_rows[j * n..(j + 1) * n]);
            }
            self.t[i] = crate::lanczos::dot(gi, delta_s);
        }
        // K = V diag(σ²) Vᵀ by the dense route's solver (Householder, then divide and
        // conquer, no eigenvectors formed): t ← Vᵀ t, in ascending order of σ².
        let solver = self.gram_solver.as_mut().expect("sized above");
        solver
            .eigen_coordinates(&self.gram, &mut self.t)
            .map_err(|_| HessianError::EigenNoConvergence { what: "H_l", layer_idx })?;
        let values = solver.eigen.eigenvalues();
        let max = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let threshold = n.max(r) as f64 * f64::EPSILON * max;
        // The non-zero eigenvalues σ² > threshold, ascending, after the n − rank zeros.
        let n_nonzero = values.iter().filter(|&&s2| s2 > threshold).count();
        let n_zero = n - n_nonzero;
        block_eigenvalues[..n_zero].fill(0.0);
        for (slot, &s2) in
            block_eigenvalues[n_zero..].iter_mut().zip(values.iter().filter(|&&s2| s2 > threshold))
        {
            *slot = s2 * a_tilde_norm_sq;
        }
        if let Some(&min) = block_eigenvalues.first() {
            f.check_min_eigenvalue(min, layer_idx)?;
        }
        let f0 = f.apply(0.0);
        // α = V β, β_i = (f(e_i) − f(0)) (v_iᵀ t) / σ_i² on the non-zero σ_i², 0 elsewhere.
        for (c, &s2) in self.t.iter_mut().zip(values) {
            *c = if s2 > threshold { (f.apply(s2 * a_tilde_norm_sq) - f0) * *c / s2 } else { 0.0 };
        }
        solver.back_transform(&mut self.t);
        let alpha = &self.t;
        // u = f(0) δ + Gᵀ α, row by row of G.
        for (u, &d) in u.iter_mut().zip(delta_s) {
            *u = f0 * d;
        }
        for (i, &a) in alpha.iter().enumerate() {
            crate::lanczos::axpy(a, &g_rows[i * n..(i + 1) * n], u);
        }
        Ok(())
    }
}

/// The arguments shared by both routes of [`LayerSolver::solve`].
struct Request<'a> {
    a_tilde_norm_sq: f64,
    delta: &'a ArrayRef1<f64>,
    f: &'a SpectralFn,
    layer_idx: Option<usize>,
}

/// The dense route of [`LayerSolver`]: f(H) δ for one symmetric n × n H without eigenvectors,
///
/// ```text
/// H = Q T Qᵀ (Householder, [`Tridiagonalizer`]),  T = S Λ Sᵀ (divide and conquer, [`TridiagonalEigen`]),
/// f(H) δ = Q S f(Λ) Sᵀ Qᵀ δ,
/// ```
///
/// with Q and S kept in factored form and applied to the one vector: 4/3 n³ + O(n²) flops.
#[derive(Debug, Clone)]
pub(crate) struct DenseSolver {
    householder: Tridiagonalizer,
    pub(crate) eigen: TridiagonalEigen,
}

impl DenseSolver {
    pub(crate) fn new(n: usize) -> Self {
        DenseSolver { householder: Tridiagonalizer::new(n), eigen: TridiagonalEigen::new(n) }
    }

    /// Reduces H (lower triangle of the row-major, finite `h`), factors T and replaces δ
    /// (in `x`) by Sᵀ Qᵀ δ, its coordinates in the eigenbasis, in the (ascending) order of
    /// `self.eigen.eigenvalues()`. Scale `x`, then call [`DenseSolver::back_transform`].
    pub(crate) fn eigen_coordinates(
        &mut self,
        h: &[f64],
        x: &mut [f64],
    ) -> std::result::Result<(), TridiagonalError> {
        self.householder.reduce(h);
        self.eigen.factor(self.householder.diagonal(), self.householder.off_diagonal())?;
        self.householder.apply_qt(x);
        self.eigen.apply_st(x);
        Ok(())
    }

    /// v ← Q S v, after [`DenseSolver::eigen_coordinates`].
    pub(crate) fn back_transform(&mut self, v: &mut [f64]) {
        self.eigen.apply_s(v);
        self.householder.apply_q(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2};

    fn sym_eigen(a: &Array2<f64>) -> (Array1<f64>, Array2<f64>) {
        let n = a.nrows();
        let c = crate::LayerCurvature::new(a, 1.0).unwrap();
        assert_eq!(c.n_outputs(), n);
        (c.hessian_eigenvalues().to_owned(), c.eigenvectors().to_owned())
    }

    fn random_symmetric(n: usize, seed: u64) -> Array2<f64> {
        let mut x = seed as f64 + 0.5;
        let mut next = || {
            x = (x * 7.31 + 0.17).sin() * 1.7;
            x
        };
        let mut a = Array2::zeros((n, n));
        for i in 0..n {
            for j in 0..=i {
                let v = next();
                a[[i, j]] = v;
                a[[j, i]] = v;
            }
        }
        a
    }

    #[test]
    fn tridiagonal_solver_applies_functions_of_the_matrix() {
        for (n, seed) in [(1, 1), (2, 2), (5, 3), (17, 4), (40, 5)] {
            let a = random_symmetric(n, seed);
            let delta: Vec<f64> = (0..n).map(|i| (i as f64 * 0.9 + 0.3).cos()).collect();
            let (values, u) = sym_eigen(&a);
            let f = |e: f64| 1.0 / (e.abs() + 0.3);
            let coords = u.t().dot(&Array1::from(delta.clone()));
            let expected = u.dot(&(&coords * &values.mapv(f)));
            let mut solver = DenseSolver::new(n);
            let mut w = delta.clone();
            solver.eigen_coordinates(a.as_slice().unwrap(), &mut w).unwrap();
            let got_values = solver.eigen.eigenvalues().to_vec();
            for (w, &e) in w.iter_mut().zip(&got_values) {
                *w *= f(e);
            }
            solver.back_transform(&mut w);
            let scale = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (g, e) in got_values.iter().zip(&values) {
                assert!((g - e).abs() < 1e-13 * scale, "n {n}: {g} vs {e}");
            }
            for (g, e) in w.iter().zip(&expected) {
                assert!((g - e).abs() < 1e-12, "n {n}: {g} vs {e}");
            }
            // The same solver again gives the same bits (buffers are reset).
            let mut again = delta.clone();
            solver.eigen_coordinates(a.as_slice().unwrap(), &mut again).unwrap();
            let mut first = delta.clone();
            DenseSolver::new(n).eigen_coordinates(a.as_slice().unwrap(), &mut first).unwrap();
            assert_eq!(again, first);
        }
    }

    #[test]
    fn tridiagonal_solver_finds_repeated_eigenvalues() {
        let a = Array2::from_shape_fn((6, 6), |(i, j)| if i == j { 2.0 } else { 1.0 });
        let mut solver = DenseSolver::new(6);
        let mut w = vec![1.0; 6];
        solver.eigen_coordinates(a.as_slice().unwrap(), &mut w).unwrap();
        let values = solver.eigen.eigenvalues();
        for (k, v) in values.iter().enumerate() {
            let expected = if k == 5 { 7.0 } else { 1.0 };
            assert!((v - expected).abs() < 1e-14, "{values:?}");
        }
    }

    #[test]
    fn layer_solver_matches_layer_curvature_on_both_routes() {
        let fns = [
            SpectralFn::absolute(0.3).unwrap(),
            SpectralFn::damped(5.0).unwrap(),
            SpectralFn::new(crate::SpectralKind::Floor, 0.2, Some(4.0)).unwrap(),
        ];
        for (n, r, seed) in [(1, 1, 1), (6, 2, 2), (13, 4, 3), (9, 9, 4), (4, 6, 5)] {
            let delta: Array1<f64> = (0..n).map(|i| (i as f64 * 0.9 + 0.3).cos()).collect();
            let norm_sq = 1.7;
            // Dense: an indefinite symmetric H. Gram: H = Gᵀ G, rank min(r, n).
            let h = random_symmetric(n, seed);
            let g = Array2::from_shape_fn((r, n), |(i, j)| ((i * n + j) as f64 * 0.71 + 0.2).sin());
            let gram = g.t().dot(&g);
            let mut solver = LayerSolver::new(n);
            assert_eq!(solver.n(), n);
            for (hessian, dense) in [(LayerHessian::Dense(&h), &h), (LayerHessian::Gram(&g), &gram)]
            {
                let curv = crate::LayerCurvature::new(dense, norm_sq).unwrap();
                let scale = curv.eigenvalues().iter().fold(1.0f64, |m, v| m.max(v.abs()));
                for f in &fns {
                    let (mut u, mut e) = (vec![0.0; n], vec![0.0; n]);
                    let got = solver.solve(hessian, norm_sq, &delta, f, Some(1), &mut u, &mut e);
                    let Ok(expected) = curv.checked_direction_factor(&delta, f) else {
                        assert!(got.is_err(), "n {n}: the damped shift must be rejected");
                        continue;
                    };
                    got.unwrap();
                    for (a, b) in u.iter().zip(&expected) {
                        assert!((a - b).abs() < 1e-12 * scale, "n {n} r {r} {f:?}: {a} vs {b}");
                    }
                    for (a, b) in e.iter().zip(curv.eigenvalues()) {
                        assert!((a - b).abs() < 1e-13 * scale, "n {n} r {r}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn layer_solver_rejects_bad_input() {
        let h = ndarray::array![[1.0, 0.0], [0.0, 2.0]];
        let delta = ndarray::array![1.0, 1.0];
        let f = SpectralFn::absolute(1.0).unwrap();
        let mut solver = LayerSolver::new(2);
        let (mut u, mut e) = ([0.0; 2], [0.0; 2]);
        let mut run = |h: &Array2<f64>, norm_sq: f64, delta: &Array1<f64>| {
            solver.solve(LayerHessian::Dense(h), norm_sq, delta, &f, Some(0), &mut u, &mut e)
        };
        assert!(matches!(run(&h, 0.0, &delta), Err(HessianError::InvalidParameter { .. })));
        assert!(matches!(run(&h, f64::NAN, &delta), Err(HessianError::InvalidParameter { .. })));
        let bad_delta = ndarray::array![1.0, f64::INFINITY];
        assert!(matches!(run(&h, 1.0, &bad_delta), Err(HessianError::NonFinite { .. })));
        let bad_h = ndarray::array![[1.0, 0.0], [f64::NAN, 2.0]];
        assert!(matches!(run(&bad_h, 1.0, &delta), Err(HessianError::NonFinite { .. })));
        let bad_g = ndarray::array![[1.0, f64::NAN]];
        let got = solver.solve(LayerHessian::Gram(&bad_g), 1.0, &delta, &f, None, &mut u, &mut e);
        assert!(matches!(got, Err(HessianError::NonFinite { .. })));
        let damped = SpectralFn::damped(0.5).unwrap();
        let neg = ndarray::array![[-1.0, 0.0], [0.0, 2.0]];
        let got =
            solver.solve(LayerHessian::Dense(&neg), 1.0, &delta, &damped, None, &mut u, &mut e);
        assert!(matches!(got, Err(HessianError::NonPositiveShift { .. })));
    }
}

//! The whole network: the exact full single-sample Hessian H = Kᵀ M K, cross-layer blocks
//! included (method.md §4).
//!
//! See [`FullHessian`] for the factorisation and how its spectrum is computed.

use std::ops::Range;

use esso_core::{ForwardTrace, Mlp, Params, SecondOrderTrace};
use ndarray::{
    Array1, Array2, ArrayRef1, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Slice,
};

use crate::error::{HessianError, Result};
use crate::inertia::{Inertia, ZERO_EIGENVALUE_RTOL};
use crate::layer::{assert_traces_fit, check_input_norm};
use crate::linalg::{
    cholesky_lower, lu_solve, solve_lower, sym_eigen, try_array2, try_copy, try_dot,
    try_symmetrised, try_zeros,
};
use crate::spectral::SpectralFn;

/// Relative rank tolerance for the equilibrated Gram matrix G′ (unit diagonal).
///
/// Reason: computed eigenvalues of G′ carry absolute errors ≈ m·ε·‖G′‖ ≲ 1e-13 for
/// m ≲ 1000, so anything below 1e-12·max is indistinguishable from zero; keeping a direction
/// with g = 1e-12·max costs at most ε/√1e-12 ≈ 2e-10 relative accuracy in its eigenvector.
/// For a valid trace G′ is provably positive definite and this fallback is not reached.
pub const GRAM_RANK_RTOL: f64 = 1e-12;

/// The exact full single-sample Hessian H = Kᵀ M K of a network at one sample, in
/// structured form: it borrows the network and the sample's traces and stores only the
/// m × m matrices G = K Kᵀ and M.
///
/// Build it with [`FullHessian::new`]; products with K, Kᵀ and H are sweeps like
/// backpropagation (O(N)); the exact spectrum ([`FullHessian::spectrum`]) costs
/// O(m³ + m² Σ n_l) plus one sweep per direction, N = parameter count.
///
/// # Parameter order
/// Every `Params` argument or result and every dense N × N matrix uses the canonical order
/// of [`Params`]. K-space vectors (length m) use the K-space layout below.
///
/// # The factorisation
/// Layers are numbered 1..L as in method.md (`layer_idx` = l − 1 in code). For a
/// perturbation D = (D_1 … D_L) of every layer:
///
/// ```text
/// r_l = D_l ã_{l−1} + W_l v_{l−1},   v_l = s_l ⊙ r_l,  v_{−1} = 0   (first-order change of z_l)
/// p_l = dW_lᵀ δ_l                     for l ≥ 2 (no bias entry)
/// ℓ''[D] = r_Lᵀ H_L r_L + Σ_{l<L} r_lᵀ diag(c_l) r_l + 2 Σ_{l≥2} p_lᵀ (s_{l−1} ⊙ r_{l−1})
/// ```
///
/// K maps D to ρ = (r_1, …, r_L, p_2, …, p_L) ∈ ℝ^m, m = Σ_l n_l + Σ_{l<L} n_l, in that
/// order (the *K-space layout*: [`FullHessian::r_range`], [`FullHessian::p_range`]); M is the
/// sparse symmetric m × m matrix with blocks H_L, diag(c_l) and diag(s_{l−1}) coupling p_l
/// with r_{l−1}.
///
/// # The exact spectrum
/// With the Gram matrix G = K Kᵀ, the non-zero eigenvalues of H are those of
/// G^{1/2} M G^{1/2}. The implementation works on the Jacobi-equilibrated Gram matrix
/// G′ = D G D, D = diag(G_ii)^{−1/2}, restricted to the rows of K that are not identically
/// zero (a p_l block vanishes exactly when δ_l = 0: a perfectly fitted sample or a dead
/// layer). On those rows G′ is positive definite (its Schur complement is ⪰ 𝒥 𝒥ᵀ with 𝒥
/// unit lower block-triangular), so G′ = L Lᵀ by Cholesky, and
///
/// ```text
/// S = Lᵀ M′ L = V Λ Vᵀ,   M′ = D⁻¹ M D⁻¹,   Φ = Kᵀ D L⁻ᵀ V   (N × r, orthonormal)
/// H = Φ Λ Φᵀ
/// ```
///
/// If the Cholesky factorisation fails or is too ill-conditioned (pivot ratio² below
/// [`GRAM_RANK_RTOL`]), the pseudo-inverse square root of G′ is used instead: eigenvalues of
/// G′ below [`GRAM_RANK_RTOL`] · max are dropped.
#[derive(Debug, Clone)]
pub struct FullHessian<'a> {
    mlp: &'a Mlp,
    forward: &'a ForwardTrace,
    second: &'a SecondOrderTrace,
    r_offsets: Vec<usize>,
    p_offsets: Vec<usize>,
    gram: Array2<f64>,
    middle: Array2<f64>,
}

impl<'a> FullHessian<'a> {
    /// The factorisation at the sample whose traces are given: builds G by the closed form
    /// below and M from (H_L, c_l, s_l).
    ///
    /// ```text
    /// T_l = W_l diag(s_{l−1})
    /// G[r_0, r_0] = ‖ã_0‖² I
    /// G[r_l, ·]   = T_l G[r_{l−1}, ·]                (columns r_{<l}, p_{<l})
    /// G[r_l, r_l] = ‖ã_l‖² I + T_l G[r_{l−1}, r_{l−1}] T_lᵀ
    /// G[r_l, p_l] = δ_l a_{l−1}ᵀ,   G[p_l, p_l] = ‖δ_l‖² I
    /// ```
    ///
    /// # Errors
    /// [`HessianError::NonFinite`] when a trace holds a NaN or infinite value (naming the
    /// quantity and the layer), [`HessianError::InputTooLarge`] when a layer input's squared
    /// norm overflows, [`HessianError::Allocation`] when the m × m matrices cannot be
    /// allocated (their size: [`crate::limits::full_hessian`]).
    ///
    /// # Panics
    /// If the traces were not built for `mlp`.
    #[track_caller]
    pub fn new(
        mlp: &'a Mlp,
        forward: &'a ForwardTrace,
        second: &'a SecondOrderTrace,
    ) -> Result<Self> {
        assert_traces_fit(mlp, forward, second);
        let n_layers = mlp.n_layers();
        for layer_idx in 0..n_layers {
            let finite = |v: &Array1<f64>| v.iter().all(|x| x.is_finite());
            let checks: [(&'static str, bool); 4] = [
                ("layer input", finite(forward.layer_input(layer_idx))),
                ("delta", finite(second.delta(layer_idx))),
                ("slope", finite(second.slope(layer_idx))),
                ("curvature", finite(second.curvature(layer_idx))),
            ];
            if let Some((what, _)) = checks.iter().find(|(_, ok)| !ok) {
                return Err(HessianError::NonFinite { what, layer_idx: Some(layer_idx) });
            }
            check_input_norm(forward, layer_idx)?;
        }
        let last = n_layers - 1;
        if !second.pre_activation_hessian(last).iter().all(|x| x.is_finite()) {
            return Err(HessianError::NonFinite { what: "H_L", layer_idx: Some(last) });
        }
        let mut r_offsets = vec![0];
        for layer in mlp.layers() {
            r_offsets.push(r_offsets[r_offsets.len() - 1] + layer.n_outputs());
        }
        let mut p_offsets = vec![r_offsets[n_layers]; 2];
        for layer in &mlp.layers()[1..] {
            p_offsets.push(p_offsets[p_offsets.len() - 1] + layer.n_inputs());
        }
        let mut full = FullHessian {
            mlp,
            forward,
            second,
            r_offsets,
            p_offsets,
            gram: Array2::zeros((0, 0)),
            middle: Array2::zeros((0, 0)),
        };
        full.gram = full.build_gram()?;
        full.middle = full.build_middle()?;
        Ok(full)
    }

    /// m = Σ_l n_l + Σ_{l<L} n_l, the number of rows of K.
    pub fn n_rows_k(&self) -> usize {
        self.p_offsets[self.p_offsets.len() - 1]
    }

    /// N, the parameter count.
    pub fn n_params(&self) -> usize {
        self.mlp.n_params()
    }

    /// The K-space index range of r_l (`layer_idx` 0-based).
    pub fn r_range(&self, layer_idx: usize) -> Range<usize> {
        self.r_offsets[layer_idx]..self.r_offsets[layer_idx + 1]
    }

    /// The K-space index range of p_l (empty for layer 0).
    pub fn p_range(&self, layer_idx: usize) -> Range<usize> {
        self.p_offsets[layer_idx]..self.p_offsets[layer_idx + 1]
    }

    /// G = K Kᵀ, m × m, symmetric positive semi-definite.
    pub fn gram(&self) -> ArrayView2<'_, f64> {
        self.gram.view()
    }

    /// M, m × m, symmetric: H = Kᵀ M K.
    pub fn middle(&self) -> ArrayView2<'_, f64> {
        self.middle.view()
    }

    /// The gradient g = Kᵀ (δ_L in the r_L slot), shaped like the network.
    pub fn gradient(&self) -> Params {
        self.second.gradient(self.forward)
    }

    /// The forward sweep ρ = K D (r_l and p_l of the module docs).
    ///
    /// # Shapes
    /// `d` is shaped like the network; the result has m entries.
    ///
    /// # Panics
    /// If `d` is not shaped like the network.
    #[track_caller]
    pub fn apply_k(&self, d: &Params) -> Array1<f64> {
        assert!(d.same_shape(self.mlp.params()), "perturbation is not shaped like the network");
        let n_layers = self.mlp.n_layers();
        let mut out = Array1::zeros(self.n_rows_k());
        let mut v_prev: Option<Array1<f64>> = None;
        for (layer_idx, (layer, dl)) in self.mlp.layers().iter().zip(d.layers()).enumerate() {
            let mut r = dl.weight().dot(self.forward.layer_input(layer_idx)) + dl.bias();
            if let Some(v) = &v_prev {
                r += &layer.weight().dot(v);
            }
            if layer_idx > 0 {
                sub1_mut(&mut out, self.p_range(layer_idx))
                    .assign(&dl.weight().t().dot(self.second.delta(layer_idx)));
            }
            if layer_idx + 1 < n_layers {
                v_prev = Some(&r * self.second.slope(layer_idx));
            }
            sub1_mut(&mut out, self.r_range(layer_idx)).assign(&r);
        }
        out
    }

    /// The backward sweep Kᵀ ρ: with λ_{L−1} = ρ_{r_{L−1}} and
    /// λ_{l−1} = ρ_{r_{l−1}} + s_{l−1} ⊙ W_lᵀ λ_l, layer l gets weight λ_l a_{l−1}ᵀ + δ_l π_lᵀ
    /// and bias λ_l (π_l = ρ_{p_l}).
    ///
    /// # Shapes
    /// `rho` has m entries; the result is shaped like the network.
    ///
    /// # Panics
    /// If `rho.len() != m`.
    #[track_caller]
    pub fn apply_k_transpose(&self, rho: &ArrayRef1<f64>) -> Params {
        assert_eq!(rho.len(), self.n_rows_k(), "K-space vector has the wrong length");
        let n_layers = self.mlp.n_layers();
        let mut out = Params::zeros_like(self.mlp.params());
        let mut lam = sub1(rho, self.r_range(n_layers - 1)).to_owned();
        for layer_idx in (0..n_layers).rev() {
            let a = self.forward.layer_input(layer_idx);
            let (mut w, mut b) = out.layers_mut()[layer_idx].weight_and_bias_mut();
            for (mut row, &l) in w.rows_mut().into_iter().zip(&lam) {
                row.scaled_add(l, a);
            }
            b.assign(&lam);
            if layer_idx > 0 {
                let pi = sub1(rho, self.p_range(layer_idx));
                for (mut row, &d) in w.rows_mut().into_iter().zip(self.second.delta(layer_idx)) {
                    row.scaled_add(d, &pi);
                }
                let mut next = self.mlp.layers()[layer_idx].weight().t().dot(&lam);
                next *= self.second.slope(layer_idx - 1);
                next += &sub1(rho, self.r_range(layer_idx - 1));
                lam = next;
            }
        }
        out
    }

    /// M ρ, using the sparsity of M (O(m + n_L²)).
    ///
    /// # Panics
    /// If `rho.len() != m`.
    #[track_caller]
    pub fn apply_middle(&self, rho: &ArrayRef1<f64>) -> Array1<f64> {
        assert_eq!(rho.len(), self.n_rows_k(), "K-space vector has the wrong length");
        let last = self.mlp.n_layers() - 1;
        let mut out = Array1::zeros(rho.len());
        let h_out = self.second.pre_activation_hessian(last);
        sub1_mut(&mut out, self.r_range(last)).assign(&h_out.dot(&sub1(rho, self.r_range(last))));
        for layer_idx in 0..last {
            let (s, c) = (self.second.slope(layer_idx), self.second.curvature(layer_idx));
            let r = sub1(rho, self.r_range(layer_idx));
            let p = sub1(rho, self.p_range(layer_idx + 1));
            sub1_mut(&mut out, self.r_range(layer_idx)).assign(&(c * &r + s * &p));
            sub1_mut(&mut out, self.p_range(layer_idx + 1)).assign(&(s * &r));
        }
        out
    }

    /// The exact Hessian-vector product H v = Kᵀ M K v: two sweeps, O(N).
    ///
    /// # Panics
    /// If `v` is not shaped like the network.
    #[track_caller]
    pub fn hvp(&self, v: &Params) -> Params {
        self.apply_k_transpose(&self.apply_middle(&self.apply_k(v)))
    }

    /// The dense N × N Hessian (canonical order), column by column from [`FullHessian::hvp`],
    /// symmetrised as (A + Aᵀ)/2. For small networks: O(N²) time and memory.
    pub fn to_dense(&self) -> Array2<f64> {
        let n = self.n_params();
        let mut dense = Array2::zeros((n, n));
        let mut unit = Params::zeros_like(self.mlp.params());
        for col_idx in 0..n {
            set_flat(&mut unit, col_idx, 1.0);
            let column = self.hvp(&unit).to_flat();
            dense.column_mut(col_idx).assign(&column);
            set_flat(&mut unit, col_idx, 0.0);
        }
        (&dense + &dense.t()) * 0.5
    }

    /// The exact eigenvalues of H on the range of Kᵀ (every non-zero eigenvalue, plus
    /// numerically zero ones whose eigenvectors lie in that range), ascending: values only.
    ///
    /// The other N − r eigenvalues are exactly zero ([`FullHessian::eigenvalues_all`]).
    ///
    /// # Errors
    /// [`HessianError::EigenNoConvergence`].
    pub fn eigenvalues(&self) -> Result<Array1<f64>> {
        let factor = self.factor()?;
        let (values, _) = sym_eigen(&factor.s_matrix, false)
            .map_err(|e| e.into_error("the whitened middle matrix", None))?;
        Ok(values)
    }

    /// All N eigenvalues of H, ascending, zeros included.
    ///
    /// # Errors
    /// [`HessianError::EigenNoConvergence`].
    pub fn eigenvalues_all(&self) -> Result<Array1<f64>> {
        Ok(merge_zeros(&self.eigenvalues()?, self.n_params()))
    }

    /// The exact eigendecomposition in implicit form (see [`FullSpectrum`]).
    ///
    /// # Errors
    /// [`HessianError::EigenNoConvergence`].
    pub fn spectrum(&self) -> Result<FullSpectrum<'_>> {
        let factor = self.factor()?;
        let (values, vectors) = sym_eigen(&factor.s_matrix, true)
            .map_err(|e| e.into_error("the whitened middle matrix", None))?;
        let v = vectors.expect("eigenvectors were requested");
        let projector = try_dot(&v.t(), &factor.whitener, "the spectral projector (r x m)")?;
        Ok(FullSpectrum { hessian: self, active: factor.active, values, projector })
    }

    /// The eigenpairs of H on the range of Kᵀ: values ascending (as
    /// [`FullHessian::eigenvalues`]) and orthonormal eigenvectors Φ as columns.
    ///
    /// # Shapes
    /// Values r, vectors N × r (canonical order).
    ///
    /// # Errors
    /// [`HessianError::EigenNoConvergence`].
    pub fn eigen(&self) -> Result<(Array1<f64>, Array2<f64>)> {
        let spectrum = self.spectrum()?;
        Ok((spectrum.values.clone(), spectrum.eigenvectors()))
    }

    /// The inertia of H with [`ZERO_EIGENVALUE_RTOL`].
    ///
    /// # Errors
    /// [`HessianError::EigenNoConvergence`].
    pub fn inertia(&self) -> Result<Inertia> {
        let values = self.eigenvalues()?;
        let n_zeros = self.n_params() - values.len();
        Ok(Inertia::from_eigenvalues(values.iter().copied(), n_zeros, ZERO_EIGENVALUE_RTOL))
    }

    /// The regularised Newton direction d = −f(H) g for a spectral function f (the absolute
    /// direction −(|H| + λI)⁻¹ g for [`crate::SpectralKind::Absolute`]); see
    /// [`FullSpectrum::direction`].
    ///
    /// # Errors
    /// [`HessianError::NonPositiveShift`] (damped, e_min + λ ≤ 0),
    /// [`HessianError::EigenNoConvergence`].
    pub fn direction(&self, f: &SpectralFn) -> Result<Params> {
        self.spectrum()?.direction(f)
    }

    /// The exact damped Newton direction d = −(H + λI)⁻¹ g without an eigendecomposition of H,
    /// by the push-through identity (on the equilibrated, active K-space rows):
    ///
    /// ```text
    /// d = −(1/λ) [g − Kᵀ M (λI + G M)⁻¹ K g]
    /// ```
    ///
    /// H + λI ≻ 0 is certified first by a Cholesky factorisation of λI + S (S = Lᵀ M′ L of the
    /// module docs), so an indefinite shift is an error, not a silent ascent direction.
    ///
    /// # Errors
    /// [`HessianError::InvalidParameter`] naming `lambda` (not finite or ≤ 0),
    /// [`HessianError::NonPositiveShift`] when H + λI is not positive definite (with the
    /// smallest eigenvalue of H), [`HessianError::Singular`] when the m × m system cannot be
    /// solved, [`HessianError::EigenNoConvergence`].
    pub fn damped_direction_push_through(&self, lambda: f64) -> Result<Params> {
        let f = SpectralFn::damped(lambda)?;
        let factor = self.factor()?;
        let mut shifted = try_copy(&factor.s_matrix, "lambda I + S (r x r)")?;
        shifted.diag_mut().mapv_inplace(|d| d + lambda);
        let definite = cholesky_lower(&shifted)?.is_some();
        drop(shifted);
        if !definite {
            let (values, _) = sym_eigen(&factor.s_matrix, false)
                .map_err(|e| e.into_error("the whitened middle matrix", None))?;
            let min = values.iter().copied().fold(0.0f64, f64::min);
            f.check_min_eigenvalue(min, None)?;
            // Cholesky failed on the border of definiteness; the eigenvalues say it is
            // (barely) definite, so carry on with the LU solve.
        }
        let g = self.gradient();
        let kg = self.apply_k(&g);
        let ma = factor.active.len();
        let kg_eq = Array1::from_shape_fn(ma, |i| kg[factor.active[i]] * factor.inv_sqrt_diag[i]);
        let mut system = try_dot(&factor.g_eq, &factor.m_eq, "the push-through system (m x m)")?;
        system.diag_mut().mapv_inplace(|d| d + lambda);
        let x = lu_solve(&system, &kg_eq)?
            .ok_or(HessianError::Singular { what: "λI + G M (push-through)" })?;
        drop(system);
        let y = factor.m_eq.dot(&x);
        let mut rho = Array1::zeros(self.n_rows_k());
        for (i, &row) in factor.active.iter().enumerate() {
            rho[row] = y[i] * factor.inv_sqrt_diag[i];
        }
        let mut d = self.apply_k_transpose(&rho);
        d.axpy(-1.0, &g);
        d.scale(1.0 / lambda);
        Ok(d)
    }

    fn build_gram(&self) -> Result<Array2<f64>> {
        let m = self.n_rows_k();
        let mut g = try_zeros(m, m, "the Gram matrix G (m x m)")?;
        for layer_idx in 0..self.mlp.n_layers() {
            let rl = self.r_range(layer_idx);
            if layer_idx > 0 {
                let prev = self.r_range(layer_idx - 1);
                let s_prev = self.second.slope(layer_idx - 1);
                let t = self.mlp.layers()[layer_idx].weight() * &s_prev.view().insert_axis(Axis(0));
                let new_rows =
                    try_dot(&t, &sub2(&g, prev.clone(), 0..m), "rows of the Gram matrix")?;
                sub2_mut(&mut g, rl.clone(), 0..m).assign(&new_rows);
                let diag = sub2(&g, rl.clone(), prev).dot(&t.t());
                let diag = (&diag + &diag.t()) * 0.5;
                sub2_mut(&mut g, rl.clone(), rl.clone()).assign(&diag);
                let delta = self.second.delta(layer_idx).view().insert_axis(Axis(1));
                let a = self.forward.layer_input(layer_idx).view().insert_axis(Axis(0));
                sub2_mut(&mut g, rl.clone(), self.p_range(layer_idx)).assign(&delta.dot(&a));
            }
            let norm_sq = self.forward.layer_input_norm_sq(layer_idx);
            for i in rl.clone() {
                g[[i, i]] += norm_sq;
            }
            let rows = try_copy(&sub2(&g, rl.clone(), 0..m), "rows of the Gram matrix")?;
            sub2_mut(&mut g, 0..m, rl).assign(&rows.t());
            if layer_idx > 0 {
                let delta = self.second.delta(layer_idx);
                let delta_norm_sq = delta.dot(delta);
                for i in self.p_range(layer_idx) {
                    g[[i, i]] = delta_norm_sq;
                }
            }
        }
        Ok(g)
    }

    fn build_middle(&self) -> Result<Array2<f64>> {
        let m = self.n_rows_k();
        let last = self.mlp.n_layers() - 1;
        let mut mid = try_zeros(m, m, "the middle matrix M (m x m)")?;
        sub2_mut(&mut mid, self.r_range(last), self.r_range(last))
            .assign(self.second.pre_activation_hessian(last));
        for layer_idx in 0..last {
            let (s, c) = (self.second.slope(layer_idx), self.second.curvature(layer_idx));
            for (k, (i, j)) in self.r_range(layer_idx).zip(self.p_range(layer_idx + 1)).enumerate()
            {
                mid[[i, i]] = c[k];
                mid[[i, j]] = s[k];
                mid[[j, i]] = s[k];
            }
        }
        Ok(mid)
    }

    /// Equilibrates G on its non-zero rows and factors it (Cholesky, else pseudo-inverse
    /// square root), and forms the whitened middle matrix S.
    fn factor(&self) -> Result<GramFactor> {
        self.factor_with(false)
    }

    fn factor_with(&self, force_pseudo_inverse: bool) -> Result<GramFactor> {
        factor_gram(&self.gram, &self.middle, force_pseudo_inverse, "the Gram matrix")
    }
}

/// Equilibrates a Gram matrix G on its non-zero rows, factors it (Cholesky with the
/// pivot-ratio check of [`GRAM_RANK_RTOL`], else — or when `force_pseudo_inverse` — the
/// pseudo-inverse square root), and forms the whitened middle matrix S. Shared by
/// [`FullHessian`] (one sample) and the stacked factorisation of a mini-batch
/// ([`crate::BatchHessian::exact_spectrum`]); `what` names G in errors.
pub(crate) fn factor_gram(
    gram: &Array2<f64>,
    middle: &Array2<f64>,
    force_pseudo_inverse: bool,
    what: &'static str,
) -> Result<GramFactor> {
    let active: Vec<usize> = (0..gram.nrows()).filter(|&i| gram[[i, i]] > 0.0).collect();
    let ma = active.len();
    let sqrt_diag: Array1<f64> = active.iter().map(|&i| gram[[i, i]].sqrt()).collect();
    let inv_sqrt_diag = sqrt_diag.mapv(f64::recip);
    let g_eq = try_array2(ma, ma, "the equilibrated Gram matrix (m x m)", |a, b| {
        gram[[active[a], active[b]]] * inv_sqrt_diag[a] * inv_sqrt_diag[b]
    })?;
    let m_eq = try_array2(ma, ma, "the equilibrated middle matrix (m x m)", |a, b| {
        middle[[active[a], active[b]]] * sqrt_diag[a] * sqrt_diag[b]
    })?;
    let cholesky = cholesky_lower(&g_eq)?.filter(|l| {
        if force_pseudo_inverse {
            return false;
        }
        let pivots = l.diag();
        let max = pivots.iter().copied().fold(0.0f64, f64::max);
        let min = pivots.iter().copied().fold(f64::INFINITY, f64::min);
        (min / max).powi(2) >= GRAM_RANK_RTOL
    });
    let (coloring, whitener) = match cholesky {
        Some(l) => {
            let diag = try_array2(ma, ma, "the whitener (m x m)", |i, j| {
                if i == j { inv_sqrt_diag[i] } else { 0.0 }
            })?;
            let whitener = solve_lower(&l, &diag)?;
            (l, whitener)
        }
        None => {
            let (values, q) = sym_eigen(&g_eq, true).map_err(|e| e.into_error(what, None))?;
            let q = q.expect("eigenvectors were requested");
            let max = values.iter().copied().fold(0.0f64, f64::max);
            let kept: Vec<usize> = (0..ma).filter(|&j| values[j] > GRAM_RANK_RTOL * max).collect();
            let coloring = try_array2(ma, kept.len(), "the Gram factor (m x r)", |i, k| {
                q[[i, kept[k]]] * values[kept[k]].sqrt()
            })?;
            let whitener = try_array2(kept.len(), ma, "the whitener (r x m)", |k, i| {
                q[[i, kept[k]]] / values[kept[k]].sqrt() * inv_sqrt_diag[i]
            })?;
            (coloring, whitener)
        }
    };
    let s = try_dot(
        &try_dot(&coloring.t(), &m_eq, "the whitened middle matrix (r x m)")?,
        &coloring,
        "the whitened middle matrix S (r x r)",
    )?;
    drop(coloring);
    let s_matrix = try_symmetrised(&s, "the whitened middle matrix S (r x r)")?;
    Ok(GramFactor { active, inv_sqrt_diag, g_eq, m_eq, whitener, s_matrix })
}

/// The factored, equilibrated Gram matrix: everything the spectrum and the push-through need.
pub(crate) struct GramFactor {
    /// K-space rows with G_ii > 0.
    pub(crate) active: Vec<usize>,
    /// D = G_ii^{−1/2} on the active rows.
    inv_sqrt_diag: Array1<f64>,
    /// G′ = D G D (active rows).
    g_eq: Array2<f64>,
    /// M′ = D⁻¹ M D⁻¹ (active rows).
    m_eq: Array2<f64>,
    /// W (r × m_a) with W G_a Wᵀ = I: Zᵀ v = W (K v)_active, Z orthonormal.
    pub(crate) whitener: Array2<f64>,
    /// S = Fᵀ M′ F, r × r, symmetric.
    pub(crate) s_matrix: Array2<f64>,
}

/// The exact eigendecomposition of a [`FullHessian`] in implicit form: the r eigenvalues on
/// the range of Kᵀ and a projector E (r × m) with Φᵀ v = E K v, so that the N × r
/// eigenvector matrix Φ is only formed on request ([`FullSpectrum::eigenvectors`]).
///
/// The remaining N − r eigenvalues are exactly zero.
#[derive(Debug, Clone)]
pub struct FullSpectrum<'h> {
    hessian: &'h FullHessian<'h>,
    active: Vec<usize>,
    values: Array1<f64>,
    projector: Array2<f64>,
}

impl FullSpectrum<'_> {
    /// r, the number of eigenpairs on the range of Kᵀ (the rank of K).
    pub fn n_range(&self) -> usize {
        self.values.len()
    }

    /// The r eigenvalues on the range of Kᵀ, ascending.
    pub fn eigenvalues(&self) -> ArrayView1<'_, f64> {
        self.values.view()
    }

    /// All N eigenvalues, ascending, zeros included.
    pub fn eigenvalues_all(&self) -> Array1<f64> {
        merge_zeros(&self.values, self.hessian.n_params())
    }

    /// The smallest eigenvalue of H (zero included when r < N).
    pub fn min_eigenvalue(&self) -> f64 {
        let min = self.values.iter().copied().fold(f64::INFINITY, f64::min);
        if self.n_range() < self.hessian.n_params() { min.min(0.0) } else { min }
    }

    /// The inertia with [`ZERO_EIGENVALUE_RTOL`].
    pub fn inertia(&self) -> Inertia {
        self.inertia_with_rtol(ZERO_EIGENVALUE_RTOL)
    }

    /// The inertia with a chosen relative zero tolerance.
    pub fn inertia_with_rtol(&self, rtol: f64) -> Inertia {
        let n_zeros = self.hessian.n_params() - self.n_range();
        Inertia::from_eigenvalues(self.values.iter().copied(), n_zeros, rtol)
    }

    /// The orthonormal eigenvectors Φ = Kᵀ D L⁻ᵀ V as columns, in the order of
    /// [`FullSpectrum::eigenvalues`]. Costs r backward sweeps and N·r memory.
    ///
    /// # Shapes
    /// N × r, canonical parameter order.
    pub fn eigenvectors(&self) -> Array2<f64> {
        let mut out = Array2::zeros((self.hessian.n_params(), self.n_range()));
        let mut unit = Array1::zeros(self.n_range());
        for col_idx in 0..self.n_range() {
            unit[col_idx] = 1.0;
            out.column_mut(col_idx).assign(&self.lift(&unit).to_flat());
            unit[col_idx] = 0.0;
        }
        out
    }

    /// Φᵀ v, the coordinates of v on the eigenvectors (r entries): one forward sweep.
    ///
    /// # Panics
    /// If `v` is not shaped like the network.
    #[track_caller]
    pub fn project(&self, v: &Params) -> Array1<f64> {
        let kv = self.hessian.apply_k(v);
        let kv_active: Array1<f64> = self.active.iter().map(|&i| kv[i]).collect();
        self.projector.dot(&kv_active)
    }

    /// Φ y, a combination of the eigenvectors: one backward sweep.
    ///
    /// # Panics
    /// If `y.len() != r`.
    #[track_caller]
    pub fn lift(&self, y: &ArrayRef1<f64>) -> Params {
        assert_eq!(y.len(), self.n_range(), "coefficient vector has the wrong length");
        let coeffs = self.projector.t().dot(y);
        let mut rho = Array1::zeros(self.hessian.n_rows_k());
        for (&row, &c) in self.active.iter().zip(&coeffs) {
            rho[row] = c;
        }
        self.hessian.apply_k_transpose(&rho)
    }

    /// f(H) v = f(0) v + Φ (f(Λ) − f(0)) Φᵀ v, exact for every v (not only the gradient).
    ///
    /// No spectrum check: see [`FullSpectrum::direction`].
    ///
    /// # Panics
    /// If `v` is not shaped like the network.
    #[track_caller]
    pub fn apply_fn(&self, f: &SpectralFn, v: &Params) -> Params {
        let f0 = f.apply(0.0);
        let mut y = self.project(v);
        for (y, &e) in y.iter_mut().zip(&self.values) {
            *y *= f.apply(e) - f0;
        }
        let mut out = self.lift(&y);
        out.axpy(f0, v);
        out
    }

    /// The regularised Newton direction d = −f(H) g (method.md §4):
    /// −(|H| + λI)⁻¹ g for [`crate::SpectralKind::Absolute`], −(H + λI)⁻¹ g for
    /// [`crate::SpectralKind::Damped`], and likewise for floor and power.
    ///
    /// # Errors
    /// [`HessianError::NonPositiveShift`] for the damped kind when clip(e_min) + λ ≤ 0.
    pub fn direction(&self, f: &SpectralFn) -> Result<Params> {
        f.check_min_eigenvalue(self.min_eigenvalue(), None)?;
        let mut d = self.apply_fn(f, &self.hessian.gradient());
        d.scale(-1.0);
        Ok(d)
    }
}

/// `values` (ascending) merged with n_total − len exact zeros, ascending.
fn merge_zeros(values: &Array1<f64>, n_total: usize) -> Array1<f64> {
    let mut all: Vec<f64> = values.to_vec();
    all.resize(n_total, 0.0);
    all.sort_by(f64::total_cmp);
    Array1::from(all)
}

fn set_flat(params: &mut Params, idx: usize, value: f64) {
    if let Some(p) = params.iter_mut().nth(idx) {
        *p = value;
    }
}

fn sub1(v: &ArrayRef1<f64>, range: Range<usize>) -> ArrayView1<'_, f64> {
    v.slice_axis(Axis(0), Slice::from(range))
}

fn sub1_mut(v: &mut ArrayRef1<f64>, range: Range<usize>) -> ArrayViewMut1<'_, f64> {
    v.slice_axis_mut(Axis(0), Slice::from(range))
}

fn sub2(a: &Array2<f64>, rows: Range<usize>, cols: Range<usize>) -> ArrayView2<'_, f64> {
    let mut view = a.view();
    view.slice_axis_inplace(Axis(0), Slice::from(rows));
    view.slice_axis_inplace(Axis(1), Slice::from(cols));
    view
}

fn sub2_mut(a: &mut Array2<f64>, rows: Range<usize>, cols: Range<usize>) -> ArrayViewMut2<'_, f64> {
    let mut view = a.view_mut();
    view.slice_axis_inplace(Axis(0), Slice::from(rows));
    view.slice_axis_inplace(Axis(1), Slice::from(cols));
    view
}

impl<'a> FullHessian<'a> {
    /// The network this Hessian was built for (for operator adaptors in `batch`).
    pub(crate) fn network(&self) -> &'a Mlp {
        self.mlp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use esso_core::{Activation, Init, Loss, Target};
    use rand::SeedableRng;

    #[test]
    fn cholesky_and_pseudo_inverse_routes_agree() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mlp =
            Mlp::new(&[3, 4, 3, 2], Activation::Softplus, Init::GlorotNormal, &mut rng).unwrap();
        let fwd = mlp.forward(&ndarray::array![0.4, -1.0, 0.7]).unwrap();
        let mut so = SecondOrderTrace::new(&mlp);
        mlp.backward_second_order_into(&fwd, Loss::CrossEntropy, Target::Class(1), &mut so)
            .unwrap();
        let full = FullHessian::new(&mlp, &fwd, &so).unwrap();
        let eigen_of = |factor: GramFactor| sym_eigen(&factor.s_matrix, false).unwrap().0;
        let chol = eigen_of(full.factor_with(false).unwrap());
        let pinv = eigen_of(full.factor_with(true).unwrap());
        assert_eq!(chol.len(), full.n_rows_k());
        assert_eq!(pinv.len(), chol.len());
        let scale = chol.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(chol.iter().zip(&pinv).all(|(a, b)| (a - b).abs() < 1e-12 * scale));
        // Whitening: W G_a Wᵀ = I on both routes.
        for force in [false, true] {
            let f = full.factor_with(force).unwrap();
            let ga = Array2::from_shape_fn((f.active.len(), f.active.len()), |(a, b)| {
                full.gram[[f.active[a], f.active[b]]]
            });
            let eye = f.whitener.dot(&ga).dot(&f.whitener.t());
            let err = (&eye - &Array2::<f64>::eye(eye.nrows()))
                .iter()
                .fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(err < 1e-12, "force {force}: {err}");
        }
    }
}

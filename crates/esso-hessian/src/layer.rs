//! One layer: the exact Hessian block B_l = (ã ãᵀ) ⊗ H_l, its exact spectrum and the
//! closed-form regularised Newton direction (method.md §3).

use esso_core::{Dense, ForwardTrace, Mlp, Params, SecondOrderTrace};
use ndarray::{Array1, Array2, ArrayRef1, ArrayRef2, ArrayView1, ArrayView2, Axis, Slice};

use crate::error::{HessianError, Result};
use crate::inertia::{Inertia, ZERO_EIGENVALUE_RTOL};
use crate::linalg::sym_eigen;
use crate::spectral::SpectralFn;

/// The eigenpairs of one layer's pre-activation Hessian H_l and ‖ã_{l−1}‖²: all the block
/// B_l = (ã ãᵀ) ⊗ H_l needs for its spectrum and its Newton direction.
///
/// With H_l = U diag(μ) Uᵀ (μ ascending), the n_l non-trivial eigenvalues of B_l are
/// ‖ã‖² μ_i (eigenvectors (ã/‖ã‖) ⊗ u_i); the other n_l·n_{l−1} are exactly zero.
///
/// # Examples
/// ```
/// use esso_hessian::{LayerCurvature, SpectralFn};
/// let h = ndarray::array![[2.0, 0.0], [0.0, -1.0]];
/// let curv = LayerCurvature::new(&h, 3.0)?;
/// assert_eq!(curv.eigenvalues().to_vec(), vec![-3.0, 6.0]);
/// // u = U f(‖ã‖²μ) Uᵀ δ, and the layer step is D_l = −u ãᵀ.
/// let u = curv.direction_factor(&ndarray::array![1.0, 1.0], &SpectralFn::absolute(1.0)?);
/// assert_eq!(u.to_vec(), vec![1.0 / 7.0, 1.0 / 4.0]);
/// # Ok::<(), esso_hessian::HessianError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LayerCurvature {
    hessian_eigenvalues: Array1<f64>,
    eigenvectors: Array2<f64>,
    block_eigenvalues: Array1<f64>,
    a_tilde_norm_sq: f64,
    n_inputs: Option<usize>,
    layer_idx: Option<usize>,
}

impl LayerCurvature {
    /// Eigendecomposes H_l (only its lower triangle is read).
    ///
    /// The input width n_{l−1} is unknown here: set it with [`LayerCurvature::with_n_inputs`]
    /// if you need [`LayerCurvature::n_zero_eigenvalues`], or use
    /// [`LayerCurvature::from_trace`].
    ///
    /// # Shapes
    /// `pre_activation_hessian` is n_l × n_l; `a_tilde_norm_sq` = ‖a_{l−1}‖² + 1.
    ///
    /// # Errors
    /// [`HessianError::Shape`] for a non-square H_l, [`HessianError::NonFinite`] for a NaN or
    /// infinite entry, [`HessianError::InvalidParameter`] naming `a_tilde_norm_sq` when it is
    /// not finite and > 0, [`HessianError::EigenNoConvergence`].
    pub fn new(pre_activation_hessian: &ArrayRef2<f64>, a_tilde_norm_sq: f64) -> Result<Self> {
        Self::build(pre_activation_hessian, a_tilde_norm_sq, None, None)
    }

    /// The curvature of layer `layer_idx` (0-based) of a sample's traces.
    ///
    /// # Errors
    /// [`HessianError::LayerOutOfRange`], and as [`LayerCurvature::new`] (with the layer
    /// index in the message).
    ///
    /// # Panics
    /// If the two traces have different numbers of layers.
    #[track_caller]
    pub fn from_trace(
        forward: &ForwardTrace,
        second: &SecondOrderTrace,
        layer_idx: usize,
    ) -> Result<Self> {
        let (h, a) = trace_layer(forward, second, layer_idx)?;
        Self::build(h, forward.layer_input_norm_sq(layer_idx), Some(a.len()), Some(layer_idx))
    }

    fn build(
        h: &ArrayRef2<f64>,
        a_tilde_norm_sq: f64,
        n_inputs: Option<usize>,
        layer_idx: Option<usize>,
    ) -> Result<Self> {
        if h.nrows() != h.ncols() {
            return Err(HessianError::Shape {
                what: "columns of H_l",
                expected: h.nrows(),
                got: h.ncols(),
            });
        }
        if !h.iter().all(|v| v.is_finite()) {
            return Err(HessianError::NonFinite { what: "H_l", layer_idx });
        }
        if !a_tilde_norm_sq.is_finite() || a_tilde_norm_sq <= 0.0 {
            return Err(HessianError::InvalidParameter {
                name: "a_tilde_norm_sq",
                value: a_tilde_norm_sq,
                reason: "must be finite and > 0",
            });
        }
        let (mu, u) = sym_eigen(h, true).map_err(|e| e.into_error("H_l", layer_idx))?;
        let u = u.expect("eigenvectors were requested");
        Ok(LayerCurvature {
            block_eigenvalues: &mu * a_tilde_norm_sq,
            hessian_eigenvalues: mu,
            eigenvectors: u,
            a_tilde_norm_sq,
            n_inputs,
            layer_idx,
        })
    }

    /// The same curvature with the input width n_{l−1} set (for the zero-eigenvalue count).
    #[must_use]
    pub fn with_n_inputs(mut self, n_inputs: usize) -> Self {
        self.n_inputs = Some(n_inputs);
        self
    }

    /// n_l.
    pub fn n_outputs(&self) -> usize {
        self.hessian_eigenvalues.len()
    }

    /// n_{l−1}, when known.
    pub fn n_inputs(&self) -> Option<usize> {
        self.n_inputs
    }

    /// The layer index, when built from a trace.
    pub fn layer_idx(&self) -> Option<usize> {
        self.layer_idx
    }

    /// ‖ã_{l−1}‖² = ‖a_{l−1}‖² + 1.
    pub fn a_tilde_norm_sq(&self) -> f64 {
        self.a_tilde_norm_sq
    }

    /// μ, the eigenvalues of H_l, ascending.
    pub fn hessian_eigenvalues(&self) -> ArrayView1<'_, f64> {
        self.hessian_eigenvalues.view()
    }

    /// U, the orthonormal eigenvectors of H_l as columns, in the order of μ.
    ///
    /// # Shapes
    /// n_l × n_l.
    pub fn eigenvectors(&self) -> ArrayView2<'_, f64> {
        self.eigenvectors.view()
    }

    /// The n_l non-trivial eigenvalues ‖ã‖² μ_i of the block B_l, ascending.
    pub fn eigenvalues(&self) -> ArrayView1<'_, f64> {
        self.block_eigenvalues.view()
    }

    /// n_l·n_{l−1}, the multiplicity of the structural zero eigenvalue of B_l; `None` when the
    /// input width is unknown (built by [`LayerCurvature::new`] without
    /// [`LayerCurvature::with_n_inputs`]).
    pub fn n_zero_eigenvalues(&self) -> Option<usize> {
        self.n_inputs.map(|n_inputs| self.n_outputs() * n_inputs)
    }

    /// Non-trivial block eigenvalues below −`ZERO_EIGENVALUE_RTOL`·max|e|: the layer's
    /// directions of negative curvature.
    pub fn n_negative_eigenvalues(&self) -> usize {
        Inertia::from_eigenvalues(self.block_eigenvalues.iter().copied(), 0, ZERO_EIGENVALUE_RTOL)
            .negative
    }

    /// The left factor u = U f(‖ã‖² μ) Uᵀ δ of the layer's Newton direction D_l = −u ãᵀ.
    ///
    /// This is −f(B_l) g_l for the layer gradient g_l = δ ãᵀ (method.md §3), exact because
    /// g_l lies in the span of the non-trivial eigenvectors. It does not check the spectrum:
    /// with [`crate::SpectralKind::Damped`] and e + λ ≤ 0 the result is not a descent
    /// direction; [`LayerCurvature::checked_direction_factor`] returns an error instead.
    ///
    /// # Shapes
    /// `delta` (δ_l) and the result have n_l entries.
    ///
    /// # Panics
    /// If `delta.len() != n_l`.
    #[track_caller]
    pub fn direction_factor(&self, delta: &ArrayRef1<f64>, f: &SpectralFn) -> Array1<f64> {
        assert_eq!(delta.len(), self.n_outputs(), "delta has the wrong length");
        let u = &self.eigenvectors;
        let mut w = u.t().dot(delta);
        for (w, &e) in w.iter_mut().zip(&self.block_eigenvalues) {
            *w *= f.apply(e);
        }
        u.dot(&w)
    }

    /// [`LayerCurvature::direction_factor`] after checking that f is defined on the block's
    /// spectrum.
    ///
    /// # Errors
    /// [`HessianError::NonPositiveShift`] for [`crate::SpectralKind::Damped`] when
    /// clip(e_min) + λ ≤ 0.
    ///
    /// # Panics
    /// If `delta.len() != n_l`.
    #[track_caller]
    pub fn checked_direction_factor(
        &self,
        delta: &ArrayRef1<f64>,
        f: &SpectralFn,
    ) -> Result<Array1<f64>> {
        // The structural zeros pass every check (λ > 0), so the non-trivial minimum decides.
        if let Some(&min) = self.block_eigenvalues.first() {
            f.check_min_eigenvalue(min, self.layer_idx)?;
        }
        Ok(self.direction_factor(delta, f))
    }
}

/// The exact single-sample Hessian block of one layer, B_l = (ã ãᵀ) ⊗ H_l, kept structured:
/// a copy of H_l (n_l × n_l), ã (n_{l−1} + 1) and the eigenpairs of H_l. Nothing of size
/// N_l = n_l (n_{l−1} + 1) is stored; [`LayerBlock::to_dense`] builds the N_l × N_l matrix.
///
/// # Parameter order
/// Everything here uses the canonical order of [`Params`]: the weight row-major (`W[i, j]` at
/// `i·n_{l−1} + j`), then the bias (`b[i]` at `n_l·n_{l−1} + i`). method.md §3 stacks
/// `vec([W b])` column-major instead; the two orders differ by a permutation, which changes no
/// eigenvalue and maps eigenvectors entry by entry. In the canonical order
///
/// ```text
/// B_l[(i, j), (k, q)] = H_l[i, k] · ã_j · ã_q      ã = [a_{l−1}; 1], j, q ∈ 0..=n_{l−1}
/// ```
///
/// # Examples
/// ```
/// use esso_hessian::LayerBlock;
/// let h = ndarray::array![[1.0, 0.5], [0.5, 2.0]];
/// let block = LayerBlock::new(&h, &ndarray::array![0.3, -1.0, 2.0])?;
/// assert_eq!(block.n_params(), 2 * 4);
/// let all = block.eigenvalues(); // 8 values, 6 of them structural zeros
/// assert_eq!(all.iter().filter(|&&e| e == 0.0).count(), 6);
/// # Ok::<(), esso_hessian::HessianError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LayerBlock {
    a_tilde: Array1<f64>,
    hessian: Array2<f64>,
    curvature: LayerCurvature,
}

impl LayerBlock {
    /// The block of a layer with pre-activation Hessian H_l and input a_{l−1} (without the
    /// bias 1).
    ///
    /// # Shapes
    /// `pre_activation_hessian` is n_l × n_l, `layer_input` has n_{l−1} entries.
    ///
    /// # Errors
    /// [`HessianError::NonFinite`] for a non-finite input, and as [`LayerCurvature::new`].
    pub fn new(
        pre_activation_hessian: &ArrayRef2<f64>,
        layer_input: &ArrayRef1<f64>,
    ) -> Result<Self> {
        Self::build(pre_activation_hessian, layer_input, None)
    }

    /// The block of layer `layer_idx` (0-based) of a sample's traces.
    ///
    /// # Errors
    /// As [`LayerCurvature::from_trace`].
    ///
    /// # Panics
    /// If the two traces have different numbers of layers.
    #[track_caller]
    pub fn from_trace(
        forward: &ForwardTrace,
        second: &SecondOrderTrace,
        layer_idx: usize,
    ) -> Result<Self> {
        let (h, a) = trace_layer(forward, second, layer_idx)?;
        Self::build(h, a, Some(layer_idx))
    }

    fn build(h: &ArrayRef2<f64>, a: &ArrayRef1<f64>, layer_idx: Option<usize>) -> Result<Self> {
        if !a.iter().all(|v| v.is_finite()) {
            return Err(HessianError::NonFinite { what: "layer input", layer_idx });
        }
        let mut a_tilde = Array1::ones(a.len() + 1);
        a_tilde.slice_axis_mut(Axis(0), Slice::from(..a.len())).assign(a);
        let norm_sq = a_tilde.dot(&a_tilde);
        let curvature = LayerCurvature::build(h, norm_sq, Some(a.len()), layer_idx)?;
        Ok(LayerBlock { a_tilde, hessian: h.to_owned(), curvature })
    }

    /// n_l.
    pub fn n_outputs(&self) -> usize {
        self.hessian.nrows()
    }

    /// n_{l−1}.
    pub fn n_inputs(&self) -> usize {
        self.a_tilde.len() - 1
    }

    /// N_l = n_l (n_{l−1} + 1), the block's size.
    pub fn n_params(&self) -> usize {
        self.n_outputs() * self.a_tilde.len()
    }

    /// ã = [a_{l−1}; 1].
    pub fn a_tilde(&self) -> ArrayView1<'_, f64> {
        self.a_tilde.view()
    }

    /// H_l, n_l × n_l.
    pub fn pre_activation_hessian(&self) -> ArrayView2<'_, f64> {
        self.hessian.view()
    }

    /// The eigenpairs of H_l and ‖ã‖².
    pub fn curvature(&self) -> &LayerCurvature {
        &self.curvature
    }

    /// All N_l eigenvalues of B_l, ascending: the n_l values ‖ã‖² μ_i merged with
    /// n_l·n_{l−1} exact zeros.
    pub fn eigenvalues(&self) -> Array1<f64> {
        self.sorted_sources().iter().map(|&(e, _)| e).collect()
    }

    /// The inertia of B_l, with [`ZERO_EIGENVALUE_RTOL`].
    pub fn inertia(&self) -> Inertia {
        Inertia::from_eigenvalues(
            self.curvature.block_eigenvalues.iter().copied(),
            self.curvature.n_outputs() * self.n_inputs(),
            ZERO_EIGENVALUE_RTOL,
        )
    }

    /// All N_l eigenpairs of B_l: eigenvalues ascending (as [`LayerBlock::eigenvalues`]) and
    /// orthonormal eigenvectors as columns, in the canonical parameter order.
    ///
    /// The non-trivial eigenvectors are u_i ãᵀ/‖ã‖; the zero eigenspace is spanned by u_k bᵀ
    /// with b running over an orthonormal basis of ã^⊥ (from a Householder reflection).
    ///
    /// # Shapes
    /// Values N_l, vectors N_l × N_l.
    pub fn eigen(&self) -> (Array1<f64>, Array2<f64>) {
        let (n_out, n_cols) = (self.n_outputs(), self.a_tilde.len());
        let norm = self.curvature.a_tilde_norm_sq.sqrt();
        let a_hat = &self.a_tilde / norm;
        // Householder P = I − 2 v vᵀ / vᵀv with v = â + sign(â_0) e_0: P e_0 ∝ â, so the
        // other columns of P are an orthonormal basis of ã^⊥.
        let mut v = a_hat.clone();
        v[0] += if a_hat[0] >= 0.0 { 1.0 } else { -1.0 };
        let vv = v.dot(&v);
        let householder_col = |j: usize| -> Array1<f64> {
            let mut col = &v * (-2.0 * v[j] / vv);
            col[j] += 1.0;
            col
        };
        let sources = self.sorted_sources();
        let mut values = Array1::zeros(sources.len());
        let mut vectors = Array2::zeros((self.n_params(), sources.len()));
        for (col_idx, &(e, source)) in sources.iter().enumerate() {
            values[col_idx] = e;
            let (k, right) = match source {
                Source::NonTrivial(i) => (i, a_hat.clone()),
                Source::Zero(k, j) => (k, householder_col(j + 1)),
            };
            let u = self.curvature.eigenvectors.column(k);
            vectors.column_mut(col_idx).assign(&flatten_outer(&u, &right, n_out, n_cols));
        }
        (values, vectors)
    }

    /// The eigenvalues tagged with where their eigenvector comes from, stably sorted.
    fn sorted_sources(&self) -> Vec<(f64, Source)> {
        let n_out = self.n_outputs();
        let n_in = self.n_inputs();
        let mut sources: Vec<(f64, Source)> = self
            .curvature
            .block_eigenvalues
            .iter()
            .enumerate()
            .map(|(i, &e)| (e, Source::NonTrivial(i)))
            .collect();
        sources.extend((0..n_out).flat_map(|k| (0..n_in).map(move |j| (0.0, Source::Zero(k, j)))));
        sources.sort_by(|a, b| a.0.total_cmp(&b.0));
        sources
    }

    /// B_l v, without forming B_l: with v read as `X = [W b]` (canonical order),
    /// `B_l[X] = H_l X ã ãᵀ`.
    ///
    /// # Shapes
    /// `v` and the result have N_l entries.
    ///
    /// # Panics
    /// If `v.len() != N_l`.
    #[track_caller]
    pub fn apply(&self, v: &ArrayRef1<f64>) -> Array1<f64> {
        assert_eq!(v.len(), self.n_params(), "vector has the wrong length");
        let (n_out, n_in) = (self.n_outputs(), self.n_inputs());
        let y = Array1::from_shape_fn(n_out, |i| {
            let row = v.slice_axis(Axis(0), Slice::from(i * n_in..(i + 1) * n_in));
            row.dot(&self.a_tilde.slice_axis(Axis(0), Slice::from(..n_in))) + v[n_out * n_in + i]
        });
        let w = self.hessian.dot(&y);
        flatten_outer(&w, &self.a_tilde, n_out, n_in + 1)
    }

    /// The dense N_l × N_l block, canonical order. For small layers (tests, inspection).
    pub fn to_dense(&self) -> Array2<f64> {
        let (n_out, n_in) = (self.n_outputs(), self.n_inputs());
        let idx = |i: usize, j: usize| if j < n_in { i * n_in + j } else { n_out * n_in + i };
        let mut dense = Array2::zeros((self.n_params(), self.n_params()));
        for i in 0..n_out {
            for j in 0..=n_in {
                for k in 0..n_out {
                    for q in 0..=n_in {
                        dense[[idx(i, j), idx(k, q)]] =
                            self.hessian[[i, k]] * self.a_tilde[j] * self.a_tilde[q];
                    }
                }
            }
        }
        dense
    }

    /// The layer's regularised Newton direction D_l = −f(B_l) g_l = −u ãᵀ for the layer
    /// gradient g_l = δ_l ãᵀ, as rank-one factors.
    ///
    /// # Shapes
    /// `delta` (δ_l) has n_l entries.
    ///
    /// # Errors
    /// As [`LayerCurvature::checked_direction_factor`].
    ///
    /// # Panics
    /// If `delta.len() != n_l`.
    #[track_caller]
    pub fn direction(&self, delta: &ArrayRef1<f64>, f: &SpectralFn) -> Result<RankOneDirection> {
        let u = self.curvature.checked_direction_factor(delta, f)?;
        Ok(RankOneDirection { u, a_tilde: self.a_tilde.clone() })
    }
}

#[derive(Debug, Clone, Copy)]
enum Source {
    /// Eigenvalue ‖ã‖² μ_i.
    NonTrivial(usize),
    /// Zero eigenvalue: u_k times the j-th basis vector of ã^⊥.
    Zero(usize, usize),
}

/// vec of the outer product u rᵀ (n_out × n_cols, last column = bias) in the canonical order.
fn flatten_outer(
    u: &ArrayRef1<f64>,
    right: &ArrayRef1<f64>,
    n_out: usize,
    n_cols: usize,
) -> Array1<f64> {
    let n_in = n_cols - 1;
    let mut out = Array1::zeros(n_out * n_cols);
    for i in 0..n_out {
        for j in 0..n_in {
            out[i * n_in + j] = u[i] * right[j];
        }
        out[n_out * n_in + i] = u[i] * right[n_in];
    }
    out
}

/// A layer step D_l = −u ãᵀ held as its rank-one factors (weight part −u a_{l−1}ᵀ, bias part
/// −u), computed from the pre-update weights.
#[derive(Debug, Clone, PartialEq)]
pub struct RankOneDirection {
    u: Array1<f64>,
    a_tilde: Array1<f64>,
}

impl RankOneDirection {
    /// u, n_l (note the sign: D_l = −u ãᵀ).
    pub fn u(&self) -> ArrayView1<'_, f64> {
        self.u.view()
    }

    /// ã = [a_{l−1}; 1], n_{l−1} + 1.
    pub fn a_tilde(&self) -> ArrayView1<'_, f64> {
        self.a_tilde.view()
    }

    /// `layer ← layer + scale · D_l`.
    ///
    /// # Panics
    /// If `layer` is not n_l × n_{l−1}.
    #[track_caller]
    pub fn add_to(&self, scale: f64, layer: &mut Dense) {
        let n_in = self.a_tilde.len() - 1;
        assert_eq!(
            (layer.n_outputs(), layer.n_inputs()),
            (self.u.len(), n_in),
            "layer has the wrong shape"
        );
        let a = self.a_tilde.slice_axis(Axis(0), Slice::from(..n_in));
        let (mut w, mut b) = layer.weight_and_bias_mut();
        for (mut row, &u) in w.rows_mut().into_iter().zip(&self.u) {
            row.scaled_add(-scale * u, &a);
        }
        b.scaled_add(-scale, &self.u);
    }

    /// D_l as a dense layer (weight −u aᵀ, bias −u).
    pub fn to_dense(&self) -> Dense {
        let mut layer = Dense::zeros(self.u.len(), self.a_tilde.len() - 1);
        self.add_to(1.0, &mut layer);
        layer
    }

    /// D_l flattened in the canonical order.
    pub fn to_flat(&self) -> Array1<f64> {
        -flatten_outer(&self.u, &self.a_tilde, self.u.len(), self.a_tilde.len())
    }
}

/// The per-layer Newton direction of every layer, D_l = −u_l ãᵀ_{l−1}, as rank-one factors
/// (each layer's block B_l alone, no cross-layer curvature; method.md §3).
///
/// # Errors
/// As [`LayerCurvature::from_trace`] and [`LayerCurvature::checked_direction_factor`].
///
/// # Panics
/// If the traces were not built for `mlp`.
#[track_caller]
pub fn layerwise_direction_factors(
    mlp: &Mlp,
    forward: &ForwardTrace,
    second: &SecondOrderTrace,
    f: &SpectralFn,
) -> Result<Vec<RankOneDirection>> {
    assert_traces_fit(mlp, forward, second);
    (0..mlp.n_layers())
        .map(|layer_idx| {
            // The curvature alone (no copy of H_l), then ã for the right factor.
            let curvature = LayerCurvature::from_trace(forward, second, layer_idx)?;
            let delta = second.delta(layer_idx);
            if !delta.iter().all(|v| v.is_finite()) {
                return Err(HessianError::NonFinite { what: "delta", layer_idx: Some(layer_idx) });
            }
            let u = curvature.checked_direction_factor(delta, f)?;
            let a = forward.layer_input(layer_idx);
            let mut a_tilde = Array1::ones(a.len() + 1);
            a_tilde.slice_axis_mut(Axis(0), Slice::from(..a.len())).assign(a);
            Ok(RankOneDirection { u, a_tilde })
        })
        .collect()
}

/// Per-layer Newton direction of every layer, dense, shaped like the network:
/// D_l = −u_l ã_{l−1}ᵀ with u_l = U_l f(‖ã‖² μ) U_lᵀ δ_l (method.md §3).
///
/// # Errors
/// As [`layerwise_direction_factors`].
///
/// # Panics
/// If the traces were not built for `mlp`.
///
/// # Examples
/// ```
/// use esso_core::{Activation, Init, Loss, Mlp, SecondOrderTrace, Target};
/// use esso_hessian::{SpectralFn, layerwise_direction};
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
/// let mlp = Mlp::new(&[3, 4, 2], Activation::Tanh, Init::GlorotUniform, &mut rng)?;
/// let fwd = mlp.forward(&ndarray::array![0.5, -0.2, 0.1])?;
/// let mut so = SecondOrderTrace::new(&mlp);
/// mlp.backward_second_order_into(&fwd, Loss::CrossEntropy, Target::Class(1), &mut so)?;
/// let step = layerwise_direction(&mlp, &fwd, &so, &SpectralFn::absolute(1.0)?)?;
/// // A descent direction: ⟨g, D⟩ < 0.
/// assert!(so.gradient(&fwd).dot(&step) < 0.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[track_caller]
pub fn layerwise_direction(
    mlp: &Mlp,
    forward: &ForwardTrace,
    second: &SecondOrderTrace,
    f: &SpectralFn,
) -> Result<Params> {
    let factors = layerwise_direction_factors(mlp, forward, second, f)?;
    let mut out = Params::zeros_like(mlp.params());
    for (layer, factor) in out.layers_mut().iter_mut().zip(&factors) {
        factor.add_to(1.0, layer);
    }
    Ok(out)
}

/// Panics unless both traces have `mlp`'s layer sizes.
#[track_caller]
pub(crate) fn assert_traces_fit(mlp: &Mlp, forward: &ForwardTrace, second: &SecondOrderTrace) {
    assert!(
        forward.n_layers() == mlp.n_layers()
            && second.n_layers() == mlp.n_layers()
            && mlp.layers().iter().enumerate().all(|(l, layer)| {
                forward.layer_input(l).len() == layer.n_inputs()
                    && forward.pre_activation(l).len() == layer.n_outputs()
                    && second.delta(l).len() == layer.n_outputs()
            }),
        "traces were built for another network"
    );
}

/// H_l and a_{l−1} of layer `layer_idx` from one sample's traces, with the layer index and
/// the input checked (shared by [`LayerCurvature::from_trace`] and [`LayerBlock::from_trace`]).
///
/// # Panics
/// If the two traces have different numbers of layers.
#[track_caller]
fn trace_layer<'t>(
    forward: &'t ForwardTrace,
    second: &'t SecondOrderTrace,
    layer_idx: usize,
) -> Result<(&'t Array2<f64>, &'t Array1<f64>)> {
    assert_eq!(forward.n_layers(), second.n_layers(), "traces of different networks");
    if layer_idx >= second.n_layers() {
        return Err(HessianError::LayerOutOfRange { layer_idx, n_layers: second.n_layers() });
    }
    let a = forward.layer_input(layer_idx);
    if !a.iter().all(|v| v.is_finite()) {
        return Err(HessianError::NonFinite { what: "layer input", layer_idx: Some(layer_idx) });
    }
    check_input_norm(forward, layer_idx)?;
    Ok((second.pre_activation_hessian(layer_idx), a))
}

/// [`HessianError::InputTooLarge`] when ‖a_{l−1}‖² + 1 of layer `layer_idx` overflows,
/// naming the largest entry in magnitude (the quantity the user controls, not ‖ã‖²).
pub(crate) fn check_input_norm(forward: &ForwardTrace, layer_idx: usize) -> Result<()> {
    if forward.layer_input_norm_sq(layer_idx).is_finite() {
        return Ok(());
    }
    let a = forward.layer_input(layer_idx);
    let (index, value) = a
        .iter()
        .copied()
        .enumerate()
        .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
        .unwrap_or((0, f64::INFINITY));
    Err(HessianError::InputTooLarge { layer_idx, index, value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::sym_eigen;
    use ndarray::array;

    fn block() -> LayerBlock {
        let h = array![[1.0, 0.5, -0.2], [0.5, -2.0, 0.1], [-0.2, 0.1, 0.3]];
        LayerBlock::new(&h, &array![0.3, -1.0]).unwrap()
    }

    #[test]
    fn dense_block_is_the_kronecker_product_in_canonical_order() {
        let b = block();
        let dense = b.to_dense();
        // W[1, 0] is at 1·2 + 0 = 2, b[2] at 3·2 + 2 = 8.
        assert_eq!(dense[[2, 8]], b.hessian[[1, 2]] * 0.3 * 1.0);
        let v = Array1::from_shape_fn(9, |i| (i as f64 * 0.7).sin());
        let diff = &dense.dot(&v) - &b.apply(&v);
        assert!(diff.iter().all(|d| d.abs() < 1e-14));
    }

    #[test]
    fn eigenpairs_reconstruct_the_block() {
        let b = block();
        let (values, vectors) = b.eigen();
        let (dense_values, _) = sym_eigen(&b.to_dense(), false).unwrap();
        assert!(
            (&values - &dense_values).iter().all(|d| d.abs() < 1e-13),
            "{values} {dense_values}"
        );
        assert_eq!(values, b.eigenvalues());
        let back = vectors.dot(&Array2::from_diag(&values)).dot(&vectors.t());
        assert!((&back - &b.to_dense()).iter().all(|d| d.abs() < 1e-13));
        let gram = vectors.t().dot(&vectors);
        assert!((&gram - &Array2::<f64>::eye(9)).iter().all(|d| d.abs() < 1e-14));
        assert_eq!(b.inertia(), Inertia { negative: 1, zero: 6, positive: 2 });
    }

    #[test]
    fn direction_is_minus_f_of_block_times_gradient() {
        let b = block();
        let delta = array![0.2, -0.4, 0.9];
        let f = SpectralFn::absolute(0.7).unwrap();
        let d = b.direction(&delta, &f).unwrap();
        let (values, vectors) = b.eigen();
        let g = flatten_outer(&delta, &b.a_tilde, 3, 3);
        let fb = vectors.dot(&Array2::from_diag(&values.mapv(|e| f.apply(e)))).dot(&vectors.t());
        let expected = -fb.dot(&g);
        assert!((&d.to_flat() - &expected).iter().all(|x| x.abs() < 1e-14));
        let dense = d.to_dense();
        let flat: Array1<f64> = dense.iter_params().copied().collect();
        assert_eq!(flat, d.to_flat());
    }

    #[test]
    fn damped_errors_on_a_non_positive_shift() {
        let b = block();
        let f = SpectralFn::damped(0.5).unwrap();
        let err = b.direction(&array![1.0, 0.0, 0.0], &f).unwrap_err();
        assert!(
            matches!(err, HessianError::NonPositiveShift { layer_idx: None, lambda, .. } if lambda == 0.5)
        );
        let curv = LayerCurvature::new(&array![[1.0]], 2.0).unwrap();
        assert!(curv.checked_direction_factor(&array![1.0], &f).is_ok());
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(matches!(
            LayerCurvature::new(&Array2::zeros((2, 3)), 1.0),
            Err(HessianError::Shape { .. })
        ));
        assert!(matches!(
            LayerCurvature::new(&array![[f64::NAN]], 1.0),
            Err(HessianError::NonFinite { what: "H_l", .. })
        ));
        assert!(matches!(
            LayerCurvature::new(&array![[1.0]], 0.0),
            Err(HessianError::InvalidParameter { name: "a_tilde_norm_sq", .. })
        ));
        let c = LayerCurvature::new(&array![[1.0, 0.0], [0.0, 1.0]], 1.0).unwrap().with_n_inputs(3);
        assert_eq!(c.n_zero_eigenvalues(), Some(6));
    }
}

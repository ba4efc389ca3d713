//! The allocation-free mini-batch engine behind the optimisers' hot paths: forward, δ_L and
//! backpropagation of B samples into reused row-major buffers, with faer's SIMD kernels
//! (`Par::Seq`: the matrices are per step and small; parallelism belongs across samples).
//!
//! Layout: for layer l (0-based) with n_in = n_{l−1} inputs and n_out = n_l outputs,
//! `inputs[l]` holds a_{l−1} (B × n_in, row per sample), `pre[l]` holds z_l (B × n_out) and
//! `deltas[l]` holds δ_l = ∂ℓ/∂z_l (B × n_out).
//!
//! The mean gradient of layer l is the sum of rank-one terms (1/B) Σ_s δ_s ã_sᵀ with
//! ã = [a; 1]: it is never materialised on the fast paths; the weights are updated in place
//! by one GEMM per layer, W ← W + α Δᵀ A.

use esso_core::{CoreError, Dense, Loss, Mlp, Params, Targets, clean_simd_state};
use faer::linalg::matmul::matmul;
use faer::traits::{ComplexField, SimdArch};
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{ArrayRef2, ArrayView1, ArrayViewMut1};

use crate::error::{NonFiniteQuantity, Result};
use crate::optimizer::diverged;

/// Largest magnitude accepted on the in-place paths: if every |θ| and every bound on |update|
/// is at most this, θ + update cannot overflow (2 × MAX/8 < MAX, with room for rounding).
pub(crate) const IN_PLACE_LIMIT: f64 = f64::MAX / 8.0;

/// Whether a bound is at most [`IN_PLACE_LIMIT`] (false for NaN).
pub(crate) fn within_limit(bound: f64) -> bool {
    bound <= IN_PLACE_LIMIT
}

/// Reusable buffers for the forward and backward passes of a mini-batch.
#[derive(Debug, Clone, Default)]
pub(crate) struct BatchEngine {
    sizes: Vec<usize>,
    n_samples: usize,
    inputs: Vec<Vec<f64>>,
    pre: Vec<Vec<f64>>,
    deltas: Vec<Vec<f64>>,
    /// W_{l+1}ᵀ δ_{l+1} for hidden layers (δ_l before the factor σ′(z_l)).
    backs: Vec<Vec<f64>>,
    losses: Vec<f64>,
    /// An upper bound on max |θ| of the network of the last forward pass when known: at
    /// B = 1 √(Σ θ²) summed on the forward pass's way, or a bound carried through a fused
    /// update; at any B a bound carried through the in-place update that produced the
    /// network ([`BatchEngine::carry_params_bound`]); NaN or ∞ when a parameter is not
    /// finite; `None` otherwise.
    params_bound: Option<f64>,
    /// The forward pass of one sample done ahead by
    /// [`BatchEngine::update_and_forward_next`]: a_{l−1} (`ahead_inputs[0]` is the sample)
    /// and z_l per layer, the bound on max |θ|, and the [`Mlp::generation`] it was computed
    /// for (`None`: nothing ahead).
    ahead_inputs: Vec<Vec<f64>>,
    ahead_pre: Vec<Vec<f64>>,
    ahead_params_bound: f64,
    ahead_generation: Option<u64>,
    /// A bound on max |θ| after an in-place update that was not fused with the next forward
    /// pass (B > 1, or no next batch announced), with the [`Mlp::generation`] of the updated
    /// network: the next forward pass of that network starts from it instead of a scan of
    /// the parameters ([`BatchEngine::carry_params_bound`]).
    carried_bound: Option<(f64, u64)>,
}

impl BatchEngine {
    /// Sizes the buffers for `mlp` and `n_samples` (reallocates only when they grow or the
    /// network changes shape).
    fn prepare(&mut self, mlp: &Mlp, n_samples: usize) {
        // Compared without allocating: n_0, then n_l of every layer.
        let same_shape = self.sizes.len() == mlp.n_layers() + 1
            && self.sizes[0] == mlp.n_inputs()
            && mlp.layers().iter().zip(&self.sizes[1..]).all(|(l, &n)| l.n_outputs() == n);
        if !same_shape {
            *self = BatchEngine { sizes: mlp.sizes(), ..BatchEngine::default() };
            let n_layers = self.sizes.len() - 1;
            self.inputs = vec![Vec::new(); n_layers];
            self.pre = vec![Vec::new(); n_layers];
            self.deltas = vec![Vec::new(); n_layers];
            self.backs = vec![Vec::new(); n_layers];
            self.ahead_inputs = vec![Vec::new(); n_layers];
            self.ahead_pre = vec![Vec::new(); n_layers];
        }
        self.n_samples = n_samples;
        for l in 0..self.sizes.len() - 1 {
            self.inputs[l].resize(n_samples * self.sizes[l], 0.0);
            self.pre[l].resize(n_samples * self.sizes[l + 1], 0.0);
            self.deltas[l].resize(n_samples * self.sizes[l + 1], 0.0);
            self.backs[l].resize(n_samples * self.sizes[l + 1], 0.0);
        }
        self.losses.resize(n_samples, 0.0);
    }

    /// Number of samples B of the last forward pass.
    #[allow(dead_code)]
    pub(crate) fn n_samples(&self) -> usize {
        self.n_samples
    }

    /// Number of layers L.
    pub(crate) fn n_layers(&self) -> usize {
        self.sizes.len() - 1
    }

    /// a_{l−1} of sample `s` (the input of layer `l`).
    pub(crate) fn input(&self, l: usize, s: usize) -> &[f64] {
        let n = self.sizes[l];
        &self.inputs[l][s * n..(s + 1) * n]
    }

    /// z_l of sample `s`.
    pub(crate) fn pre_activation(&self, l: usize, s: usize) -> &[f64] {
        let n = self.sizes[l + 1];
        &self.pre[l][s * n..(s + 1) * n]
    }

    /// δ_l of sample `s`.
    pub(crate) fn delta(&self, l: usize, s: usize) -> &[f64] {
        let n = self.sizes[l + 1];
        &self.deltas[l][s * n..(s + 1) * n]
    }

    /// W_{l+1}ᵀ δ_{l+1} of sample `s` for a hidden layer `l`.
    pub(crate) fn back(&self, l: usize, s: usize) -> &[f64] {
        let n = self.sizes[l + 1];
        &self.backs[l][s * n..(s + 1) * n]
    }

    /// Per-sample losses of the last [`BatchEngine::losses_and_deltas`].
    #[allow(dead_code)]
    pub(crate) fn losses(&self) -> &[f64] {
        &self.losses
    }

    /// Forward pass of the batch: z_l = W_l a_{l−1} + b_l, a_l = σ(z_l), one GEMM per layer.
    ///
    /// # Errors
    /// [`CoreError::BatchWidth`] when `xs` has the wrong width.
    pub(crate) fn forward(&mut self, mlp: &Mlp, xs: &ArrayRef2<f64>) -> Result<()> {
        self.load_inputs(mlp, xs)?;
        let n_layers = mlp.n_layers();
        let b = self.n_samples;
        let act = mlp.activation();
        for (l, layer) in mlp.layers().iter().enumerate() {
            let (n_out, n_in) = (layer.n_outputs(), layer.n_inputs());
            let z = &mut self.pre[l];
            let bias = slice1(layer.bias());
            for row in z.chunks_exact_mut(n_out) {
                row.copy_from_slice(bias);
            }
            matmul(
                MatMut::from_row_major_slice_mut(z, b, n_out),
                Accum::Add,
                MatRef::from_row_major_slice(&self.inputs[l], b, n_in),
                weight_ref(layer).transpose(),
                1.0,
                Par::Seq,
            );
            clean_simd_state();
            if l + 1 < n_layers {
                let (z, a) = (&self.pre[l], &mut self.inputs[l + 1]);
                act.values_into(z, a);
            }
        }
        Ok(())
    }

    /// Checks the width of `xs`, sizes the buffers and copies `xs` into a_0.
    fn load_inputs(&mut self, mlp: &Mlp, xs: &ArrayRef2<f64>) -> Result<()> {
        if xs.ncols() != mlp.n_inputs() {
            return Err(CoreError::BatchWidth { expected: mlp.n_inputs(), got: xs.ncols() }.into());
        }
        self.prepare(mlp, xs.nrows());
        self.params_bound = self
            .carried_bound
            .take()
            .and_then(|(bound, generation)| (generation == mlp.generation()).then_some(bound));
        let n_in = mlp.n_inputs();
        for (s, row) in xs.rows().into_iter().enumerate() {
            let dst = &mut self.inputs[0][s * n_in..(s + 1) * n_in];
            match row.as_slice() {
                Some(src) => dst.copy_from_slice(src),
                None => dst.iter_mut().zip(row.iter()).for_each(|(d, &x)| *d = x),
            }
        }
        Ok(())
    }

    /// The forward pass of one sample (B = 1), as [`BatchEngine::forward`] but with one
    /// matrix-vector kernel per layer instead of a faer GEMM call: four rows of W at a time,
    /// z_i = b_i + Σ_j W_ij a_j with fused multiply-adds, and Σ θ² of the whole network on
    /// the same pass over W (recorded for [`BatchEngine::params_in_place_bound`]), so that the
    /// in-place steps need no separate scan of the parameters.
    ///
    /// # Errors
    /// [`CoreError::BatchWidth`] when `xs` has the wrong width.
    pub(crate) fn forward_single(&mut self, mlp: &Mlp, xs: &ArrayRef2<f64>) -> Result<()> {
        self.load_inputs(mlp, xs)?;
        let n_layers = mlp.n_layers();
        let act = mlp.activation();
        let mut params_sq = 0.0;
        for (l, layer) in mlp.layers().iter().enumerate() {
            let (w, bias) = (slice2(layer.weight()), slice1(layer.bias()));
            let (x, z) = (&self.inputs[l], &mut self.pre[l]);
            params_sq += vectorized(
                #[inline(always)]
                || gemv_squares(w, bias, x, z),
            );
            if l + 1 < n_layers {
                let (z, a) = (&self.pre[l], &mut self.inputs[l + 1]);
                act.values_into(z, a);
            }
        }
        self.params_bound = Some(params_sq.sqrt());
        Ok(())
    }

    /// Makes the forward pass done ahead the current one when it was done for `mlp` as it is
    /// now ([`Mlp::generation`]) and for the one sample `xs` (compared entry by entry, so a
    /// NaN never matches); returns whether it did. Any call forgets what was ahead.
    pub(crate) fn take_ahead(&mut self, mlp: &Mlp, xs: &ArrayRef2<f64>) -> bool {
        let Some(generation) = self.ahead_generation.take() else {
            return false;
        };
        if generation != mlp.generation() || xs.nrows() != 1 || xs.ncols() != self.sizes[0] {
            return false;
        }
        if !xs.row(0).iter().zip(&self.ahead_inputs[0]).all(|(a, b)| a == b) {
            return false;
        }
        std::mem::swap(&mut self.inputs, &mut self.ahead_inputs);
        std::mem::swap(&mut self.pre, &mut self.ahead_pre);
        self.n_samples = 1;
        self.params_bound = Some(self.ahead_params_bound);
        true
    }

    /// The in-place update of [`BatchEngine::add_scaled_outer_to`] for one sample (B = 1,
    /// left factors `factors[l]`, or δ when `None`), fused with the forward pass of the next
    /// sample `next` through the updated network: one pass over each W_l instead of two.
    /// Row by row, W_ij ← fma(a_j, α f_i, W_ij) and then z'_i accumulates W_ij x'_j in the
    /// order of [`BatchEngine::forward_single`], so the parameters and the next forward pass
    /// are bit for bit those of the update followed by that forward pass. The next
    /// [`BatchEngine::forward_backward`] on `next` with the network unchanged takes it
    /// instead of recomputing it.
    ///
    /// `new_bound` bounds max |θ| after the update, for the next step's in-place check: the
    /// caller's in-place proof gives it as the bound before
    /// ([`BatchEngine::params_in_place_bound`]) plus a bound on every |entry| of the update
    /// (max over layers of |α| max_i |f_i| max(max_j |a_j|, 1), the bias seeing a_j = 1), as
    /// for [`BatchEngine::carry_params_bound`].
    ///
    /// Returns false, and does nothing, unless the last forward pass had one sample and
    /// `next` is one row of the network's input width.
    pub(crate) fn update_and_forward_next(
        &mut self,
        alpha: f64,
        factors: Option<&[Vec<f64>]>,
        new_bound: f64,
        mlp: &mut Mlp,
        next: &ArrayRef2<f64>,
    ) -> bool {
        self.ahead_generation = None;
        if self.n_samples != 1 || next.nrows() != 1 || next.ncols() != self.sizes[0] {
            return false;
        }
        let n_layers = self.n_layers();
        for l in 0..n_layers {
            self.ahead_inputs[l].resize(self.sizes[l], 0.0);
            self.ahead_pre[l].resize(self.sizes[l + 1], 0.0);
        }
        for (d, &x) in self.ahead_inputs[0].iter_mut().zip(next.row(0).iter()) {
            *d = x;
        }
        let act = mlp.activation();
        let factors = factors.unwrap_or(&self.deltas);
        for (l, layer) in mlp.params_mut().layers_mut().iter_mut().enumerate() {
            let (mut w, mut bias) = layer.weight_and_bias_mut();
            let w = w.as_slice_mut().expect("weights are kept in standard layout");
            let bias = bias.as_slice_mut().expect("a 1-D owned array is contiguous");
            let n_out = bias.len();
            let f = &factors[l][..n_out];
            for (p, &d) in bias.iter_mut().zip(f) {
                *p += alpha * d;
            }
            let (a, x) = (&self.inputs[l], &self.ahead_inputs[l]);
            let z = &mut self.ahead_pre[l];
            pulp::Arch::new().dispatch(UpdateGemv { w, alpha, f, a, bias, x, z });
            if l + 1 < n_layers {
                let (z, a_next) = (&self.ahead_pre[l], &mut self.ahead_inputs[l + 1]);
                act.values_into(z, a_next);
            }
        }
        self.ahead_params_bound = new_bound;
        self.ahead_generation = Some(mlp.generation());
        true
    }

    /// A bound on max |θ| of `mlp` that proves every parameter finite with
    /// |θ| ≤ [`IN_PLACE_LIMIT`], or `None`: the bound of the last forward pass when it has
    /// one (B = 1, or carried through the last in-place update) within the limit, else
    /// [`params_scan_bound`] (one pass over the parameters, |θ| ≤ √MAX). `mlp` must be the
    /// network of that pass, unchanged since.
    pub(crate) fn params_in_place_bound(&self, mlp: &Mlp) -> Option<f64> {
        match self.params_bound {
            Some(bound) if within_limit(bound) => Some(bound),
            _ => Some(params_scan_bound(mlp.params())).filter(|&bound| within_limit(bound)),
        }
    }

    /// Records `bound` (≥ max |θ|) for `mlp` as it is now, after an in-place update: the next
    /// forward pass of this network (same [`Mlp::generation`]) takes it as its bound, any
    /// other forward pass forgets it.
    pub(crate) fn carry_params_bound(&mut self, bound: f64, mlp: &Mlp) {
        self.carried_bound = Some((bound, mlp.generation()));
    }

    /// Per-sample losses and output deltas δ_L = ∂ℓ/∂z_L. Returns the mean loss, summed in
    /// sample order.
    ///
    /// # Errors
    /// Target errors of esso-core ([`CoreError::TargetCount`], class out of range, …).
    pub(crate) fn losses_and_deltas(&mut self, targets: Targets<'_>, loss: Loss) -> Result<f64> {
        let b = self.n_samples;
        if targets.len() != b {
            return Err(CoreError::TargetCount { n_samples: b, n_targets: targets.len() }.into());
        }
        let last = self.n_layers() - 1;
        let n_out = self.sizes[last + 1];
        let mut total = 0.0;
        for s in 0..b {
            let z = ArrayView1::from(&self.pre[last][s * n_out..(s + 1) * n_out]);
            let mut d = ArrayViewMut1::from(&mut self.deltas[last][s * n_out..(s + 1) * n_out]);
            let value = loss.value_and_delta(&z, targets.get(s), &mut d)?;
            self.losses[s] = value;
            total += value;
        }
        Ok(total / b as f64)
    }

    /// Backpropagation: δ_l = σ′(z_l) ⊙ (W_{l+1}ᵀ δ_{l+1}) for every hidden layer, one GEMM
    /// per layer.
    pub(crate) fn backward(&mut self, mlp: &Mlp) {
        let b = self.n_samples;
        let act = mlp.activation();
        for l in (0..mlp.n_layers() - 1).rev() {
            let next = &mlp.layers()[l + 1];
            let (n_next, n_here) = (next.n_outputs(), next.n_inputs());
            let (lower, upper) = self.deltas.split_at_mut(l + 1);
            let back = &mut self.backs[l];
            matmul(
                MatMut::from_row_major_slice_mut(back, b, n_here),
                Accum::Replace,
                MatRef::from_row_major_slice(&upper[0], b, n_next),
                weight_ref(next),
                1.0,
                Par::Seq,
            );
            clean_simd_state();
            let (z, a) = (&self.pre[l], &self.inputs[l + 1]);
            for (((d, &back), &z), &a) in lower[l].iter_mut().zip(back.iter()).zip(z).zip(a) {
                *d = back * act.derivatives(z, a).0;
            }
        }
    }

    /// Forward pass, per-sample losses and δ_L, and backpropagation of one batch (what every
    /// first-order step starts with); returns the mean loss. A single sample takes
    /// [`BatchEngine::forward_single`] (which also gives
    /// [`BatchEngine::params_in_place_bound`] for free).
    ///
    /// # Errors
    /// As [`BatchEngine::forward`] and [`BatchEngine::losses_and_deltas`], and
    /// [`OptimError::Diverged`](crate::OptimError::Diverged) with
    /// [`NonFiniteQuantity::Loss`] for step `step` when the mean loss is not finite (the
    /// backward pass is skipped then).
    pub(crate) fn forward_backward(
        &mut self,
        mlp: &Mlp,
        (xs, targets, loss): (&ArrayRef2<f64>, Targets<'_>, Loss),
        step: u64,
        last_finite_loss: Option<f64>,
    ) -> Result<f64> {
        if !self.take_ahead(mlp, xs) {
            if xs.nrows() == 1 {
                self.forward_single(mlp, xs)?;
            } else {
                self.forward(mlp, xs)?;
            }
        }
        let loss_value = self.losses_and_deltas(targets, loss)?;
        if !loss_value.is_finite() {
            return Err(diverged(step, last_finite_loss, NonFiniteQuantity::Loss));
        }
        self.backward(mlp);
        Ok(loss_value)
    }

    /// An upper bound on every |entry| of the layer's mean gradient (1/B) Σ_s δ_s ã_sᵀ: NaN
    /// or ∞ when a δ or an input is not finite.
    pub(crate) fn gradient_bound(&self, l: usize) -> f64 {
        let b = self.n_samples;
        let mut bound = 0.0;
        for s in 0..b {
            bound += max_abs(self.delta(l, s)) * max_abs(self.input(l, s)).max(1.0);
        }
        bound / b as f64
    }

    /// ‖g‖² of the layer's mean gradient, from the factors:
    /// ‖(1/B) Σ_s δ_s ã_sᵀ‖²_F = (1/B²) Σ_{s,t} (δ_s·δ_t)(ã_s·ã_t), with the inputs' Gram
    /// matrix in `gram` ([`BatchEngine::input_gram`]).
    pub(crate) fn gradient_norm_sq(&self, l: usize, gram: &mut Vec<f64>) -> f64 {
        let b = self.n_samples;
        self.input_gram(l, gram);
        let d = &self.deltas[l];
        self.gram_weighted_dot(l, d, d, gram) / (b * b) as f64
    }

    /// `out ← scale · (1/B) Σ_s δ_s ã_sᵀ` for every layer (the mean gradient, materialised).
    pub(crate) fn gradient_into(&self, scale: f64, out: &mut Params) {
        self.accumulate_outer(scale / self.n_samples as f64, Accum::Replace, &self.deltas, out);
    }

    /// In place, `W_l ← W_l + α Σ_s f_{s,l} a_sᵀ`, `b_l ← b_l + α Σ_s f_{s,l}` for left
    /// factors `factors[l]` (B × n_l, row per sample): the ESSO step with f = u.
    pub(crate) fn add_scaled_outer_to(
        &self,
        alpha: f64,
        factors: &[Vec<f64>],
        params: &mut Params,
    ) {
        self.accumulate_outer(alpha, Accum::Add, factors, params);
    }

    /// For per-sample left factors x, y of layer l (B × n_l), the three inner products
    /// ⟨X, X⟩, ⟨Y, Y⟩ and ⟨X, Y⟩ of X = Σ_s x_s ã_sᵀ and Y = Σ_t y_t ã_tᵀ without forming the
    /// matrices ([`BatchEngine::gram_weighted_dot`]), the inputs' Gram matrix computed once
    /// for the three, in `gram`.
    pub(crate) fn outer_dots(
        &self,
        l: usize,
        x: &[f64],
        y: &[f64],
        gram: &mut Vec<f64>,
    ) -> [f64; 3] {
        self.input_gram(l, gram);
        [
            self.gram_weighted_dot(l, x, x, gram),
            self.gram_weighted_dot(l, y, y, gram),
            self.gram_weighted_dot(l, x, y, gram),
        ]
    }

    /// `gram` ← the B × B Gram matrix ã_s·ã_t of layer l's inputs (ã = [a; 1]), the long dot
    /// products (n_{l−1} + 1 entries) of the factor identities below.
    pub(crate) fn input_gram(&self, l: usize, gram: &mut Vec<f64>) {
        let b = self.n_samples;
        gram.resize(b * b, 0.0);
        for s in 0..b {
            for t in 0..=s {
                // dot is symmetric bit for bit (the same products, the same order).
                let aa = dot(self.input(l, s), self.input(l, t)) + 1.0;
                gram[s * b + t] = aa;
                gram[t * b + s] = aa;
            }
        }
    }

    /// ⟨Σ_s x_s ã_sᵀ, Σ_t y_t ã_tᵀ⟩ = Σ_{s,t} (x_s·y_t)(ã_s·ã_t) for per-sample left factors
    /// x, y of layer l (B × n_l), summed over s then t, with `gram` from
    /// [`BatchEngine::input_gram`].
    pub(crate) fn gram_weighted_dot(&self, l: usize, x: &[f64], y: &[f64], gram: &[f64]) -> f64 {
        let (b, n) = (self.n_samples, self.sizes[l + 1]);
        let mut total = 0.0;
        for (s, xs) in x.chunks_exact(n).take(b).enumerate() {
            for (t, yt) in y.chunks_exact(n).take(b).enumerate() {
                total += dot(xs, yt) * gram[s * b + t];
            }
        }
        total
    }

    /// δ_l of every sample, B × n_l row-major.
    pub(crate) fn deltas(&self, l: usize) -> &[f64] {
        &self.deltas[l]
    }

    /// In place, `W_l ← W_l + α Σ_s δ_s a_sᵀ`, `b_l ← b_l + α Σ_s δ_s` for every layer: the
    /// plain SGD step with α = −η/B.
    pub(crate) fn add_scaled_gradient_to(&self, alpha: f64, params: &mut Params) {
        self.accumulate_outer(alpha, Accum::Add, &self.deltas, params);
    }

    /// `W_l ← β W_l + α Σ_s f_{s,l} ã_sᵀ` and `b_l ← β b_l + α Σ_s f_{s,l}` for every layer,
    /// with β = 0 (`Accum::Replace`) or 1 (`Accum::Add`) and left factors `factors[l]`
    /// (B × n_l, row per sample): δ for the gradient and SGD, u for ESSO.
    fn accumulate_outer(
        &self,
        alpha: f64,
        accum: Accum,
        factors: &[Vec<f64>],
        params: &mut Params,
    ) {
        let b = self.n_samples;
        for (l, layer) in params.layers_mut().iter_mut().enumerate() {
            let (n_out, n_in) = (layer.n_outputs(), layer.n_inputs());
            let (mut w, mut bias) = layer.weight_and_bias_mut();
            let w = w.as_slice_mut().expect("weights are kept in standard layout");
            if b == 1 {
                let (f, a) = (&factors[l][..n_out], &self.inputs[l][..n_in]);
                vectorized(
                    #[inline(always)]
                    || rank_one_update(w, alpha, f, a, accum),
                );
            } else {
                matmul(
                    MatMut::from_row_major_slice_mut(w, n_out, n_in),
                    accum,
                    MatRef::from_row_major_slice(&factors[l], b, n_out).transpose(),
                    MatRef::from_row_major_slice(&self.inputs[l], b, n_in),
                    alpha,
                    Par::Seq,
                );
                clean_simd_state();
            }
            let bias = bias.as_slice_mut().expect("a 1-D owned array is contiguous");
            if matches!(accum, Accum::Replace) {
                bias.fill(0.0);
            }
            for row in factors[l].chunks_exact(n_out).take(b) {
                for (p, &d) in bias.iter_mut().zip(row) {
                    *p += alpha * d;
                }
            }
        }
    }
}

/// W of a layer as a faer view (row-major).
pub(crate) fn weight_ref(layer: &Dense) -> MatRef<'_, f64> {
    MatRef::from_row_major_slice(slice2(layer.weight()), layer.n_outputs(), layer.n_inputs())
}

/// The contiguous data of a standard-layout matrix.
pub(crate) fn slice2(a: &ndarray::Array2<f64>) -> &[f64] {
    a.as_slice().expect("weights are kept in standard layout")
}

/// The contiguous data of a vector.
pub(crate) fn slice1(a: &ndarray::Array1<f64>) -> &[f64] {
    a.as_slice().expect("a 1-D owned array is contiguous")
}

/// max |x_i|, or NaN when an entry is not finite (so that a bound built from it fails
/// every `≤` test). Eight independent lanes, so that the loop vectorises.
pub(crate) fn max_abs(x: &[f64]) -> f64 {
    vectorized(
        #[inline(always)]
        || {
            let mut m = [0.0f64; 8];
            let mut nan_probe = [0.0f64; 8];
            let chunks = x.chunks_exact(8);
            for &v in chunks.remainder() {
                m[0] = if v.abs() > m[0] { v.abs() } else { m[0] };
                nan_probe[0] += v * 0.0;
            }
            for c in chunks {
                for k in 0..8 {
                    let a = c[k].abs();
                    m[k] = if a > m[k] { a } else { m[k] };
                    nan_probe[k] += c[k] * 0.0;
                }
            }
            let probe: f64 = nan_probe.iter().sum();
            if probe == 0.0 { m.iter().fold(0.0, |a: f64, &b| a.max(b)) } else { f64::NAN }
        },
    )
}

/// Σ x_i y_i.
pub(crate) fn dot(x: &[f64], y: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let (cx, cy) = (x.chunks_exact(4), y.chunks_exact(4));
    let tail: f64 = cx.remainder().iter().zip(cy.remainder()).map(|(a, b)| a * b).sum();
    for (a, b) in cx.zip(cy) {
        for k in 0..4 {
            acc[k] += a[k] * b[k];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// A bound on max |θ| by one SIMD pass of Σ θ² per parameter slice: the largest √(Σ θ²),
/// or ∞ when a parameter is not finite or a sum overflows (|θ| ≳ √MAX), so that
/// [`within_limit`] sends the caller to the checked path.
pub(crate) fn params_scan_bound(params: &Params) -> f64 {
    params.slices().fold(0.0f64, |bound, s| {
        let sq = vectorized(
            #[inline(always)]
            || sum_of_squares(s),
        );
        // A NaN or ∞ sum must not be dropped by f64::max.
        if sq.is_finite() { bound.max(sq.sqrt()) } else { f64::INFINITY }
    })
}

/// Runs `f` compiled for the SIMD instruction set faer's dispatch detects at run time (AVX2
/// and FMA on x86-64): the plain loops of the `#[inline(always)]` kernels below are
/// auto-vectorised for it, and `f64::mul_add` is one FMA instruction. `mul_add` is the
/// correctly rounded fused multiply-add on every target, so the results do not depend on the
/// instruction set. The compiler ends such code with `vzeroupper`: no AVX → SSE penalty
/// follows it (unlike faer's AVX-512 kernels, see [`clean_simd_state`]).
///
/// Pass the closure as `vectorized(#[inline(always)] || …)`: without the attribute the
/// closure body is compiled on its own, without the instruction set (and `mul_add` becomes a
/// call to the software `fma`, ≈ 20x slower).
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    SimdArch::dispatch(<f64 as ComplexField>::Arch::default(), f)
}

/// Σ x_i² (NaN or ∞ when an entry is not finite or the sum overflows), four lanes of four.
#[inline(always)]
fn sum_of_squares(x: &[f64]) -> f64 {
    let mut acc = [[0.0f64; 4]; 4];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(0.0, |t, &v| v.mul_add(v, t));
    for c in chunks {
        for r in 0..4 {
            for k in 0..4 {
                let v = c[4 * r + k];
                acc[r][k] = v.mul_add(v, acc[r][k]);
            }
        }
    }
    acc.iter().map(|a| (a[0] + a[1]) + (a[2] + a[3])).sum::<f64>() + tail
}

/// z_i = b_i + Σ_j W_ij x_j for a row-major n_out × n_in matrix W (`w`, n_in = `x.len()`),
/// and returns Σ W_ij² + Σ b_i² (NaN or ∞ when a parameter is not finite or the sum
/// overflows).
///
/// Each row sums in the order of faer's row-major matrix-vector product with 4-wide vectors
/// (AVX2), so that z is bit for bit the one of [`BatchEngine::forward`] there: lane j mod 16
/// accumulates W_ij x_j with fused multiply-adds in increasing j; lanes k, k + 4, k + 8,
/// k + 12 combine as (s_k + s_(k+4)) + (s_(k+8) + s_(k+12)) =: v_k, then
/// (v_0 + v_2) + (v_1 + v_3), then b_i + that.
#[inline(always)]
fn gemv_squares(w: &[f64], bias: &[f64], x: &[f64], z: &mut [f64]) -> f64 {
    let mut squares = sum_of_squares(bias);
    for ((row, z), &b) in w.chunks_exact(x.len()).zip(z.iter_mut()).zip(bias) {
        let mut acc = [0.0f64; 16];
        let mut sq = [0.0f64; 16];
        let (w_chunks, x_chunks) = (row.chunks_exact(16), x.chunks_exact(16));
        let (w_tail, x_tail) = (w_chunks.remainder(), x_chunks.remainder());
        for (wv, xv) in w_chunks.zip(x_chunks) {
            for k in 0..16 {
                acc[k] = wv[k].mul_add(xv[k], acc[k]);
                sq[k] = wv[k].mul_add(wv[k], sq[k]);
            }
        }
        for (k, (&wv, &xv)) in w_tail.iter().zip(x_tail).enumerate() {
            acc[k] = wv.mul_add(xv, acc[k]);
            sq[k] = wv.mul_add(wv, sq[k]);
        }
        *z = b + reduce16(&acc);
        squares += reduce16(&sq);
    }
    squares
}

/// (s_k + s_(k+4)) + (s_(k+8) + s_(k+12)) =: v_k for k < 4, then (v_0 + v_2) + (v_1 + v_3): the
/// lane reduction of [`gemv_squares`] and [`UpdateGemv`]. The four v_k pass through
/// `black_box`: when the compiler sees the two-by-two final sum it vectorises the whole
/// kernel two lanes wide instead of four (measured 1.5–2x slower).
#[inline(always)]
fn reduce16(acc: &[f64; 16]) -> f64 {
    let mut v = [0.0f64; 4];
    for k in 0..4 {
        v[k] = (acc[k] + acc[k + 4]) + (acc[k + 8] + acc[k + 12]);
    }
    let v = std::hint::black_box(v);
    (v[0] + v[2]) + (v[1] + v[3])
}

/// The fused kernel of [`BatchEngine::update_and_forward_next`] for one layer, as one
/// operation for [`pulp::Arch::dispatch`]: row by row, W_ij ← fma(a_j, α f_i, W_ij) (as
/// [`rank_one_update`]), then z_i = b_i + Σ_j W_ij x_j with the new W_ij in the lane order of
/// [`gemv_squares`] (accumulator j mod 16). `bias` must already hold the new b.
///
/// Written with explicit SIMD vectors: the same loops in plain Rust were compiled into an
/// update pass and a badly vectorised dot-product pass (≈ 1.5x slower in the SGD step).
/// Summing Σ θ² on the way too, as [`gemv_squares`] does, would need more registers than
/// AVX2 has; the caller carries a bound on max |θ| instead.
struct UpdateGemv<'a> {
    w: &'a mut [f64],
    alpha: f64,
    f: &'a [f64],
    a: &'a [f64],
    bias: &'a [f64],
    x: &'a [f64],
    z: &'a mut [f64],
}

impl pulp::WithSimd for UpdateGemv<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> Self::Output {
        let UpdateGemv { w, alpha, f, a, bias, x, z } = self;
        let n = x.len();
        let lanes = S::F64_LANES;
        // 16 accumulators in 16 / lanes vectors (every pulp f64 width divides 16).
        let n_vec = 16 / lanes;
        assert_eq!(n_vec * lanes, 16, "SIMD width {lanes} does not divide 16");
        let align = lanes * std::mem::size_of::<f64>();
        for (((row, &fi), z), &b) in w.chunks_exact_mut(n).zip(f).zip(z.iter_mut()).zip(bias) {
            let c = alpha * fi;
            let cv = simd.splat_f64s(c);
            // Accumulator m sums W_ij x_j over j ≡ m (mod 16) in increasing j. The first
            // `head` entries go one by one, so that the vector loads and stores of W are
            // aligned (a weight matrix from `mmap` starts 16 bytes past a 64-byte line:
            // split loads measured ≈ 25 % slower); the vector accumulators then hold the
            // 16 sums rotated by `head`.
            let misalign = (row.as_ptr() as usize % align) / std::mem::size_of::<f64>();
            let head = ((lanes - misalign) % lanes).min(n);
            let body = head + (n - head) / 16 * 16;
            let mut sums = [0.0f64; 16];
            for j in 0..head {
                row[j] = a[j].mul_add(c, row[j]);
                sums[j] = row[j].mul_add(x[j], sums[j]);
            }
            let mut rotated = [0.0f64; 16];
            for (k, r) in rotated.iter_mut().enumerate() {
                *r = sums[(head + k) % 16];
            }
            let mut acc = [simd.splat_f64s(0.0); 16];
            acc[..n_vec].copy_from_slice(S::as_simd_f64s(&rotated).0);
            let (w_vecs, _) = S::as_mut_simd_f64s(&mut row[head..body]);
            let (a_vecs, _) = S::as_simd_f64s(&a[head..body]);
            let (x_vecs, _) = S::as_simd_f64s(&x[head..body]);
            for ((wv, av), xv) in w_vecs
                .chunks_exact_mut(n_vec)
                .zip(a_vecs.chunks_exact(n_vec))
                .zip(x_vecs.chunks_exact(n_vec))
            {
                for k in 0..n_vec {
                    let t = simd.mul_add_e_f64s(av[k], cv, wv[k]);
                    wv[k] = t;
                    acc[k] = simd.mul_add_e_f64s(t, xv[k], acc[k]);
                }
            }
            S::as_mut_simd_f64s(&mut rotated).0.copy_from_slice(&acc[..n_vec]);
            for (k, &r) in rotated.iter().enumerate() {
                sums[(head + k) % 16] = r;
            }
            for j in body..n {
                row[j] = a[j].mul_add(c, row[j]);
                sums[j % 16] = row[j].mul_add(x[j], sums[j % 16]);
            }
            *z = b + reduce16(&sums);
        }
    }
}

/// W ← W + α f aᵀ (`Accum::Add`) or W ← α f aᵀ (`Accum::Replace`) for a row-major
/// n_out × n_in matrix W, f of length n_out and a of length n_in: W_ij = fma(a_j, α f_i, W_ij)
/// or a_j (α f_i), the arithmetic of faer's rank-one update (bit for bit).
#[inline(always)]
fn rank_one_update(w: &mut [f64], alpha: f64, f: &[f64], a: &[f64], accum: Accum) {
    for (row, &fi) in w.chunks_exact_mut(a.len()).zip(f) {
        let c = alpha * fi;
        match accum {
            Accum::Add => {
                // Through a local array: ≈ 17 % faster (microbenchmark) than
                // updating the row in place element by element.
                let mut chunks = row.chunks_exact_mut(16);
                let a_chunks = a.chunks_exact(16);
                let a_tail = a_chunks.remainder();
                for (wv, av) in (&mut chunks).zip(a_chunks) {
                    let mut t = [0.0f64; 16];
                    for k in 0..16 {
                        t[k] = av[k].mul_add(c, wv[k]);
                    }
                    wv.copy_from_slice(&t);
                }
                for (w, &a) in chunks.into_remainder().iter_mut().zip(a_tail) {
                    *w = a.mul_add(c, *w);
                }
            }
            Accum::Replace => row.iter_mut().zip(a).for_each(|(w, &a)| *w = a * c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use esso_core::{Activation, Init};
    use ndarray::Array2;
    use rand::SeedableRng;

    #[test]
    fn engine_matches_mean_gradient_for_every_activation_and_both_losses() {
        for act in Activation::all() {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
            let mlp = Mlp::new(&[5, 4, 3, 3], act, Init::GlorotUniform, &mut rng).unwrap();
            let xs = Array2::from_shape_fn((4, 5), |(i, j)| ((i * 5 + j) as f64 * 0.37).sin());
            let ts = Array2::from_shape_fn((4, 3), |(i, j)| ((i + 2 * j) as f64).cos());
            let classes = [0, 2, 1, 2];
            for (loss, targets) in [
                (Loss::CrossEntropy, Targets::Classes(&classes)),
                (Loss::Mse, Targets::Values(ts.view())),
            ] {
                let (expected_loss, expected) = mlp.mean_gradient(&xs, targets, loss).unwrap();
                let mut e = BatchEngine::default();
                e.forward(&mlp, &xs).unwrap();
                let value = e.losses_and_deltas(targets, loss).unwrap();
                e.backward(&mlp);
                assert!((value - expected_loss).abs() < 1e-14, "{act} {loss:?}");
                let mut g = Params::zeros_like(mlp.params());
                e.gradient_into(1.0, &mut g);
                for (a, b) in g.iter().zip(expected.iter()) {
                    assert!((a - b).abs() < 1e-14, "{act} {loss:?}: {a} vs {b}");
                }
                let mut gram = Vec::new();
                let norm_sq: f64 = (0..3).map(|l| e.gradient_norm_sq(l, &mut gram)).sum();
                assert!((norm_sq.sqrt() - expected.norm()).abs() < 1e-13);
                for l in 0..3 {
                    let max =
                        expected.layers()[l].iter_params().fold(0.0f64, |m, v| m.max(v.abs()));
                    assert!(e.gradient_bound(l) >= max);
                }
                let mut stepped = mlp.params().clone();
                e.add_scaled_gradient_to(-0.5 / 4.0, &mut stepped);
                let mut reference = mlp.params().clone();
                reference.axpy(-0.5, &expected);
                for (a, b) in stepped.iter().zip(reference.iter()) {
                    assert!((a - b).abs() < 1e-14);
                }
            }
        }
    }

    #[test]
    fn single_sample_forward_matches_the_batched_one_and_sums_the_squares() {
        // Widths 3, 16, 21 (= 16 + 5), 35: the 16-lane body and every tail length mix.
        for act in Activation::all() {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
            let sizes = [21, 35, 16, 3];
            let mut mlp = Mlp::new(&sizes, act, Init::GlorotUniform, &mut rng).unwrap();
            let xs = Array2::from_shape_fn((1, 21), |(_, j)| (j as f64 * 0.61).cos());
            let (mut single, mut batched) = (BatchEngine::default(), BatchEngine::default());
            single.forward_single(&mlp, &xs).unwrap();
            batched.forward(&mlp, &xs).unwrap();
            for l in 0..3 {
                for (a, b) in single.pre_activation(l, 0).iter().zip(batched.pre_activation(l, 0)) {
                    // Bit for bit where faer runs its AVX2 kernel; a few ulps otherwise.
                    assert!((a - b).abs() <= 4.0 * f64::EPSILON * b.abs(), "{act} {l}: {a} {b}");
                }
            }
            let norm_sq = mlp.params().norm().powi(2);
            let sq = single.params_bound.unwrap().powi(2);
            assert!((sq - norm_sq).abs() <= 1e-14 * norm_sq, "{act}: {sq} vs {norm_sq}");
            assert!(single.params_in_place_bound(&mlp).is_some());
            assert!(batched.params_in_place_bound(&mlp).is_some());
            assert_eq!(batched.params_bound, None);
            for (value, safe) in [(1e150, true), (1e160, false), (f64::INFINITY, false)] {
                for l in 0..3 {
                    let mut poisoned = mlp.clone();
                    poisoned.params_mut().layers_mut()[l].bias_mut()[1] = value;
                    single.forward_single(&poisoned, &xs).unwrap();
                    assert_eq!(
                        single.params_in_place_bound(&poisoned).is_some(),
                        safe,
                        "{l} {value}"
                    );
                    poisoned = mlp.clone();
                    poisoned.params_mut().layers_mut()[l].weight_mut()[[2, 15]] = -value;
                    single.forward_single(&poisoned, &xs).unwrap();
                    assert_eq!(
                        single.params_in_place_bound(&poisoned).is_some(),
                        safe,
                        "{l} {value}"
                    );
                    assert_eq!(
                        within_limit(params_scan_bound(poisoned.params())),
                        safe,
                        "{l} {value}"
                    );
                }
            }
            mlp.params_mut().layers_mut()[0].weight_mut()[[0, 0]] = f64::NAN;
            single.forward_single(&mlp, &xs).unwrap();
            assert!(single.params_in_place_bound(&mlp).is_none());
        }
    }

    #[test]
    fn a_carried_bound_is_taken_only_by_the_network_it_was_carried_for() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let mut mlp =
            Mlp::new(&[5, 4, 3], Activation::Tanh, Init::GlorotUniform, &mut rng).unwrap();
        let xs = Array2::from_shape_fn((3, 5), |(i, j)| ((i * 5 + j) as f64 * 0.3).sin());
        let mut e = BatchEngine::default();
        e.forward(&mlp, &xs).unwrap();
        assert_eq!(e.params_bound, None);
        // The scan's bound, the update's bound, the update, then the carried sum.
        let before = e.params_in_place_bound(&mlp).unwrap();
        e.losses_and_deltas(Targets::Classes(&[0, 1, 2]), Loss::CrossEntropy).unwrap();
        e.backward(&mlp);
        let g_max = (0..2).map(|l| e.gradient_bound(l)).fold(0.0f64, f64::max);
        e.add_scaled_gradient_to(-0.5 / 3.0, mlp.params_mut());
        e.carry_params_bound(before + 0.5 * g_max, &mlp);
        let max = mlp.params().iter().fold(0.0f64, |m, v| m.max(v.abs()));
        e.forward(&mlp, &xs).unwrap();
        assert_eq!(e.params_bound, Some(before + 0.5 * g_max));
        assert!(before + 0.5 * g_max >= max);
        // Taken once; a network changed after the carry does not take it.
        e.forward(&mlp, &xs).unwrap();
        assert_eq!(e.params_bound, None);
        e.carry_params_bound(1.0, &mlp);
        mlp.params_mut().layers_mut()[0].weight_mut()[[0, 0]] = 1e200;
        e.forward(&mlp, &xs).unwrap();
        assert_eq!(e.params_bound, None);
        assert_eq!(e.params_in_place_bound(&mlp), None);
    }

    #[test]
    fn bad_widths_targets_and_non_finite_values_are_caught() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let mlp = Mlp::new(&[2, 3, 2], Activation::Tanh, Init::GlorotUniform, &mut rng).unwrap();
        let mut e = BatchEngine::default();
        assert!(e.forward(&mlp, &Array2::zeros((1, 3))).is_err());
        e.forward(&mlp, &Array2::zeros((2, 2))).unwrap();
        assert!(e.losses_and_deltas(Targets::Classes(&[0]), Loss::CrossEntropy).is_err());
        assert!(e.losses_and_deltas(Targets::Classes(&[0, 5]), Loss::CrossEntropy).is_err());
        assert!(max_abs(&[1.0, f64::NAN, 3.0]).is_nan());
        assert!(max_abs(&[1.0, f64::INFINITY]).is_nan());
        assert_eq!(max_abs(&[1.0, -4.0, 3.0]), 4.0);
        let max = mlp.params().iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let bound = params_scan_bound(mlp.params());
        assert!(within_limit(bound) && bound >= max);
        let mut p = mlp.params().clone();
        p.layers_mut()[1].bias_mut()[0] = 1e200;
        assert!(!within_limit(params_scan_bound(&p)));
        p.layers_mut()[1].bias_mut()[0] = f64::NAN;
        assert!(!within_limit(params_scan_bound(&p)));
    }
}

//! Backward sweeps for one sample: the gradient (δ_l) and the exact second-order sweep
//! (δ_l, s_l, c_l, H_l) of method.md §2.

use ndarray::{Array1, Array2, linalg::general_mat_mul};

use crate::error::Result;
use crate::loss::{Loss, Target};
use crate::mlp::{ForwardTrace, Mlp};
use crate::params::Params;

/// The result of a first-order backward sweep: the loss and every δ_l = ∂ℓ/∂z_l.
///
/// The gradient of layer l is the rank-one matrix δ_l ã_{l−1}ᵀ: weight gradient δ_l a_{l−1}ᵀ,
/// bias gradient δ_l. Reuse one trace across samples.
#[derive(Debug, Clone)]
pub struct BackwardTrace {
    loss: f64,
    deltas: Vec<Array1<f64>>,
    back: Vec<Array1<f64>>,
}

impl BackwardTrace {
    /// Buffers sized for `mlp`.
    pub fn new(mlp: &Mlp) -> Self {
        BackwardTrace {
            loss: f64::NAN,
            deltas: mlp.layers().iter().map(|l| Array1::zeros(l.n_outputs())).collect(),
            back: mlp.layers().iter().map(|l| Array1::zeros(l.n_outputs())).collect(),
        }
    }

    /// The loss of the sample.
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// δ_l = ∂ℓ/∂z_l for layer `layer_idx`.
    pub fn delta(&self, layer_idx: usize) -> &Array1<f64> {
        &self.deltas[layer_idx]
    }

    /// The dense gradient, shaped like the network's parameters.
    pub fn gradient(&self, forward: &ForwardTrace) -> Params {
        let mut params = Params::zeros_like_trace(&self.deltas, forward);
        self.add_gradient_to(forward, 1.0, &mut params);
        params
    }

    /// `out ← out + scale · ∇ℓ`, from the rank-one factors.
    ///
    /// # Panics
    /// If `out` is not shaped like the network.
    pub fn add_gradient_to(&self, forward: &ForwardTrace, scale: f64, out: &mut Params) {
        add_rank_one_gradient(&self.deltas, forward, scale, out);
    }
}

fn add_rank_one_gradient(
    deltas: &[Array1<f64>],
    forward: &ForwardTrace,
    scale: f64,
    out: &mut Params,
) {
    assert_eq!(out.n_layers(), deltas.len(), "gradient buffer has the wrong number of layers");
    for (layer_idx, layer) in out.layers_mut().iter_mut().enumerate() {
        let delta = &deltas[layer_idx];
        let a = forward.layer_input(layer_idx);
        let (mut w, mut b) = layer.weight_and_bias_mut();
        assert_eq!(w.dim(), (delta.len(), a.len()), "gradient buffer has the wrong shape");
        for (mut row, &d) in w.rows_mut().into_iter().zip(delta) {
            row.scaled_add(scale * d, a);
        }
        b.scaled_add(scale, delta);
    }
}

impl Params {
    fn zeros_like_trace(deltas: &[Array1<f64>], forward: &ForwardTrace) -> Params {
        let layers = deltas
            .iter()
            .enumerate()
            .map(|(l, d)| crate::Dense::zeros(d.len(), forward.layer_input(l).len()))
            .collect();
        Params::new(layers).expect("zero layers taken from a valid trace chain")
    }
}

/// The exact per-sample second-order quantities of method.md §2, for every layer.
///
/// - δ_l = ∂ℓ/∂z_l;
/// - s_l = σ′(z_l) and c_l = σ″(z_l) ⊙ (W_{l+1}ᵀ δ_{l+1}) for hidden layers; for the output
///   layer s_L = 1 and c_L = 0 (its "activation" is the identity);
/// - H_l = ∂²ℓ/∂z_l², n_l × n_l, exact:
///
/// ```text
/// H_L = ∂²ℓ/∂z_L²   (diag(p) − p pᵀ for cross-entropy, I for MSE)
/// H_l = diag(s_l) W_{l+1}ᵀ H_{l+1} W_{l+1} diag(s_l) + diag(c_l)
/// ```
///
/// Build once per network with [`SecondOrderTrace::new`]; [`Mlp::backward_second_order_into`]
/// refills it without allocating.
#[derive(Debug, Clone)]
pub struct SecondOrderTrace {
    loss: f64,
    deltas: Vec<Array1<f64>>,
    slopes: Vec<Array1<f64>>,
    curvatures: Vec<Array1<f64>>,
    hessians: Vec<Array2<f64>>,
    /// W_{l+1}ᵀ δ_{l+1} for each hidden layer (before multiplying by s_l).
    back: Vec<Array1<f64>>,
    /// H_{l+1} W_{l+1}, n_{l+1} × n_l, scratch per hidden layer.
    scratch: Vec<Array2<f64>>,
}

impl SecondOrderTrace {
    /// Buffers sized for `mlp`.
    pub fn new(mlp: &Mlp) -> Self {
        let zeros = || mlp.layers().iter().map(|l| Array1::zeros(l.n_outputs())).collect();
        SecondOrderTrace {
            loss: f64::NAN,
            deltas: zeros(),
            slopes: zeros(),
            curvatures: zeros(),
            hessians: mlp
                .layers()
                .iter()
                .map(|l| Array2::zeros((l.n_outputs(), l.n_outputs())))
                .collect(),
            back: zeros(),
            scratch: mlp
                .layers()
                .iter()
                .map(|l| Array2::zeros((l.n_outputs(), l.n_inputs())))
                .collect(),
        }
    }

    /// The loss of the sample.
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// Number of layers.
    pub fn n_layers(&self) -> usize {
        self.deltas.len()
    }

    /// δ_l = ∂ℓ/∂z_l for layer `layer_idx`.
    pub fn delta(&self, layer_idx: usize) -> &Array1<f64> {
        &self.deltas[layer_idx]
    }

    /// s_l = σ′(z_l) for layer `layer_idx` (all ones for the output layer).
    pub fn slope(&self, layer_idx: usize) -> &Array1<f64> {
        &self.slopes[layer_idx]
    }

    /// c_l = σ″(z_l) ⊙ (W_{l+1}ᵀ δ_{l+1}) for layer `layer_idx` (zero for the output layer):
    /// the diagonal, either-signed part of H_l.
    pub fn curvature(&self, layer_idx: usize) -> &Array1<f64> {
        &self.curvatures[layer_idx]
    }

    /// H_l = ∂²ℓ/∂z_l², n_l × n_l, exactly symmetric (both triangles hold the same bits), for
    /// layer `layer_idx`.
    pub fn pre_activation_hessian(&self, layer_idx: usize) -> &Array2<f64> {
        &self.hessians[layer_idx]
    }

    /// The dense gradient, shaped like the network's parameters.
    pub fn gradient(&self, forward: &ForwardTrace) -> Params {
        let mut params = Params::zeros_like_trace(&self.deltas, forward);
        add_rank_one_gradient(&self.deltas, forward, 1.0, &mut params);
        params
    }

    /// `out ← out + scale · ∇ℓ`, from the rank-one factors.
    ///
    /// # Panics
    /// If `out` is not shaped like the network.
    pub fn add_gradient_to(&self, forward: &ForwardTrace, scale: f64, out: &mut Params) {
        add_rank_one_gradient(&self.deltas, forward, scale, out);
    }
}

impl Mlp {
    /// First-order backward sweep for one sample: the loss and every δ_l. Returns the loss.
    ///
    /// # Errors
    /// Target errors ([`crate::CoreError::ClassOutOfRange`], …).
    ///
    /// # Panics
    /// If the traces were built for a network of other sizes.
    pub fn backward_into(
        &self,
        forward: &ForwardTrace,
        loss: Loss,
        target: Target<'_>,
        trace: &mut BackwardTrace,
    ) -> Result<f64> {
        let n_layers = self.n_layers();
        assert_eq!(trace.deltas.len(), n_layers, "BackwardTrace was built for another network");
        let last = n_layers - 1;
        trace.loss = loss.value_and_delta(forward.logits(), target, &mut trace.deltas[last])?;
        for layer_idx in (0..last).rev() {
            let (lower, upper) = trace.deltas.split_at_mut(layer_idx + 1);
            let w_next = self.layers()[layer_idx + 1].weight();
            let back = &mut trace.back[layer_idx];
            ndarray::linalg::general_mat_vec_mul(1.0, &w_next.t(), &upper[0], 0.0, back);
            let act = self.activation();
            let z = forward.pre_activation(layer_idx);
            let a = forward.layer_input(layer_idx + 1);
            let delta = &mut lower[layer_idx];
            for i in 0..delta.len() {
                delta[i] = back[i] * act.derivatives(z[i], a[i]).0;
            }
        }
        Ok(trace.loss)
    }

    /// The exact second-order backward sweep for one sample (method.md §2): fills δ_l, s_l,
    /// c_l and H_l for every layer in one pass, without allocating. Returns the loss.
    ///
    /// Cost: O(Σ_l n_{l+1} n_l²) for the H_l recursion on top of backpropagation.
    ///
    /// # Errors
    /// Target errors.
    ///
    /// # Panics
    /// If the traces were built for a network of other sizes.
    ///
    /// # Examples
    /// ```
    /// # use esso_core::{Activation, Init, Loss, Mlp, SecondOrderTrace, Target};
    /// # use rand::SeedableRng;
    /// # let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    /// let mlp = Mlp::new(&[3, 4, 2], Activation::Tanh, Init::GlorotUniform, &mut rng)?;
    /// let fwd = mlp.forward(&ndarray::array![0.5, -0.2, 0.1])?;
    /// let mut so = SecondOrderTrace::new(&mlp);
    /// mlp.backward_second_order_into(&fwd, Loss::CrossEntropy, Target::Class(1), &mut so)?;
    /// // Softmax cross-entropy: H_L = diag(p) − p pᵀ has the null vector 1.
    /// let h = so.pre_activation_hessian(1);
    /// assert!((h[[0, 0]] + h[[0, 1]]).abs() < 1e-15);
    /// # Ok::<(), esso_core::CoreError>(())
    /// ```
    pub fn backward_second_order_into(
        &self,
        forward: &ForwardTrace,
        loss: Loss,
        target: Target<'_>,
        trace: &mut SecondOrderTrace,
    ) -> Result<f64> {
        let n_layers = self.n_layers();
        assert_eq!(trace.deltas.len(), n_layers, "SecondOrderTrace was built for another network");
        let last = n_layers - 1;
        let logits = forward.logits();
        trace.loss = loss.value_and_delta(logits, target, &mut trace.deltas[last])?;
        loss.output_hessian_into(logits, &mut trace.hessians[last]);
        trace.slopes[last].fill(1.0);
        trace.curvatures[last].fill(0.0);
        let act = self.activation();
        for layer_idx in (0..last).rev() {
            let w_next = self.layers()[layer_idx + 1].weight();
            // back = W_{l+1}ᵀ δ_{l+1}
            {
                let (lower, upper) = trace.deltas.split_at_mut(layer_idx + 1);
                let back = &mut trace.back[layer_idx];
                ndarray::linalg::general_mat_vec_mul(1.0, &w_next.t(), &upper[0], 0.0, back);
                let z = forward.pre_activation(layer_idx);
                let a = forward.layer_input(layer_idx + 1);
                let (delta, s, c) = (
                    &mut lower[layer_idx],
                    &mut trace.slopes[layer_idx],
                    &mut trace.curvatures[layer_idx],
                );
                for i in 0..delta.len() {
                    let (d1, d2) = act.derivatives(z[i], a[i]);
                    s[i] = d1;
                    c[i] = d2 * back[i];
                    delta[i] = d1 * back[i];
                }
            }
            // H_l = diag(s) W_{l+1}ᵀ (H_{l+1} W_{l+1}) diag(s) + diag(c)
            let (lower_h, upper_h) = trace.hessians.split_at_mut(layer_idx + 1);
            let hw = &mut trace.scratch[layer_idx + 1];
            general_mat_mul(1.0, &upper_h[0], w_next, 0.0, hw);
            let h = &mut lower_h[layer_idx];
            general_mat_mul(1.0, &w_next.t(), &*hw, 0.0, h);
            let s = &trace.slopes[layer_idx];
            let c = &trace.curvatures[layer_idx];
            // Scale by s_i s_j, add c on the diagonal, and symmetrise exactly (the GEMM
            // rounds the two triangles differently).
            let n = h.nrows();
            for i in 0..n {
                for j in 0..i {
                    let v = 0.5 * (h[[i, j]] + h[[j, i]]) * s[i] * s[j];
                    h[[i, j]] = v;
                    h[[j, i]] = v;
                }
                h[[i, i]] = h[[i, i]] * s[i] * s[i] + c[i];
            }
        }
        Ok(trace.loss)
    }
}

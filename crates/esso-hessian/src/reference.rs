//! Dense reference quantities: the oracle every closed form of this crate is tested against.
//!
//! The dense Hessian here is built independently of the K, M factorisation: symmetrised
//! central finite differences of the analytic gradient of esso-core
//! ([`esso_core::BackwardTrace`]). Everything else is a plain dense eigendecomposition.
//! All of it is O(N²) memory and O(N³) time: small networks only.

use esso_core::{BackwardTrace, Loss, Mlp, Target, Targets};
use ndarray::{Array1, Array2, ArrayRef1, ArrayRef2};

use crate::error::{HessianError, Result};
use crate::linalg::sym_eigen;
use crate::spectral::SpectralFn;

/// Default finite-difference step for [`finite_difference_hessian`].
///
/// Reason: the fourth-order central stencil has truncation error ≈ h⁴·|∇⁵ℓ|/30 and rounding
/// error ≈ ε·|∇ℓ|/h; for weights and inputs of order one both are ≈ 1e-12 at h = 1e-3
/// (the optimum is near ε^{1/5} ≈ 7e-4). The plain two-point stencil at its best step
/// (h ≈ 1e-5) only reaches ≈ 1e-10, too close to the 1e-8 tolerance of the exactness tests
/// once a direction amplifies it by (|e|/λ)².
pub const FD_STEP: f64 = 1e-3;

/// The gradient of the loss at one sample, flattened in the canonical order.
///
/// # Errors
/// Input-length and target errors from esso-core.
pub fn flat_gradient(
    mlp: &Mlp,
    x: &ArrayRef1<f64>,
    loss: Loss,
    target: Target<'_>,
) -> Result<Array1<f64>> {
    let forward = mlp.forward(x)?;
    let mut backward = BackwardTrace::new(mlp);
    mlp.backward_into(&forward, loss, target, &mut backward)?;
    Ok(backward.gradient(&forward).to_flat())
}

/// The dense N × N Hessian at one sample by fourth-order central finite differences of the
/// analytic gradient, symmetrised:
///
/// ```text
/// column j = (−∇ℓ(θ + 2h e_j) + 8∇ℓ(θ + h e_j) − 8∇ℓ(θ − h e_j) + ∇ℓ(θ − 2h e_j)) / 12h
/// H_fd     = (A + Aᵀ) / 2
/// ```
///
/// For ReLU networks, keep every hidden pre-activation farther than ≈ 2h·‖ã‖ from 0, or the
/// stencil straddles a kink.
///
/// # Errors
/// [`HessianError::InvalidParameter`] naming `step` (not finite or ≤ 0); esso-core errors.
pub fn finite_difference_hessian(
    mlp: &Mlp,
    x: &ArrayRef1<f64>,
    loss: Loss,
    target: Target<'_>,
    step: f64,
) -> Result<Array2<f64>> {
    fd_hessian_of(mlp, step, |shifted| flat_gradient(shifted, x, loss, target))
}

/// The dense N × N Hessian of the *mean* loss over a batch (one row of `xs` per sample) by
/// the same fourth-order stencil, applied to the batched analytic gradient
/// ([`Mlp::mean_gradient`]), symmetrised: the oracle for mini-batch quantities
/// ([`crate::BatchHessian`], `esso analyze`), independent of the K, M factorisation.
///
/// # Errors
/// As [`finite_difference_hessian`].
pub fn finite_difference_mean_hessian(
    mlp: &Mlp,
    loss: Loss,
    xs: &ArrayRef2<f64>,
    targets: Targets<'_>,
    step: f64,
) -> Result<Array2<f64>> {
    fd_hessian_of(mlp, step, |shifted| Ok(shifted.mean_gradient(xs, targets, loss)?.1.to_flat()))
}

/// The symmetrised fourth-order central-difference Jacobian of `gradient` at θ = `mlp`'s
/// parameters.
fn fd_hessian_of(
    mlp: &Mlp,
    step: f64,
    gradient: impl Fn(&Mlp) -> Result<Array1<f64>>,
) -> Result<Array2<f64>> {
    if !step.is_finite() || step <= 0.0 {
        return Err(HessianError::InvalidParameter {
            name: "step",
            value: step,
            reason: "must be finite and > 0",
        });
    }
    let n = mlp.n_params();
    let theta = mlp.params().to_flat();
    let mut shifted = mlp.clone();
    let mut flat = theta.to_vec();
    let mut dense = Array2::zeros((n, n));
    for j in 0..n {
        let mut column = Array1::zeros(n);
        for (offset, weight) in [(2.0, -1.0), (1.0, 8.0), (-1.0, -8.0), (-2.0, 1.0)] {
            flat[j] = theta[j] + offset * step;
            shifted.params_mut().copy_from_flat(&flat)?;
            column.scaled_add(weight, &gradient(&shifted)?);
        }
        flat[j] = theta[j];
        dense.column_mut(j).assign(&(column / (12.0 * step)));
    }
    Ok((&dense + &dense.t()) * 0.5)
}

/// All eigenvalues of a dense symmetric matrix, ascending (lower triangle read).
///
/// # Errors
/// [`HessianError::EigenNoConvergence`].
pub fn dense_eigenvalues(h: &ArrayRef2<f64>) -> Result<Array1<f64>> {
    Ok(dense_eigen_impl(h, false)?.0)
}

/// All eigenpairs of a dense symmetric matrix: values ascending, orthonormal eigenvectors as
/// columns (lower triangle read).
///
/// # Errors
/// [`HessianError::EigenNoConvergence`].
pub fn dense_eigen(h: &ArrayRef2<f64>) -> Result<(Array1<f64>, Array2<f64>)> {
    let (values, vectors) = dense_eigen_impl(h, true)?;
    Ok((values, vectors.expect("eigenvectors were requested")))
}

fn dense_eigen_impl(
    h: &ArrayRef2<f64>,
    with_vectors: bool,
) -> Result<(Array1<f64>, Option<Array2<f64>>)> {
    if h.nrows() != h.ncols() {
        return Err(HessianError::Shape { what: "columns", expected: h.nrows(), got: h.ncols() });
    }
    sym_eigen(h, with_vectors).map_err(|e| e.into_error("a dense matrix", None))
}

/// f(H) v for a dense symmetric H, by its eigendecomposition: U f(Λ) Uᵀ v.
///
/// # Errors
/// [`HessianError::EigenNoConvergence`], [`HessianError::Shape`] when `v` does not fit.
pub fn dense_spectral_apply(
    h: &ArrayRef2<f64>,
    f: &SpectralFn,
    v: &ArrayRef1<f64>,
) -> Result<Array1<f64>> {
    if v.len() != h.nrows() {
        return Err(HessianError::Shape { what: "vector", expected: h.nrows(), got: v.len() });
    }
    let (values, u) = dense_eigen(h)?;
    let mut w = u.t().dot(v);
    for (w, &e) in w.iter_mut().zip(&values) {
        *w *= f.apply(e);
    }
    Ok(u.dot(&w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use esso_core::{Activation, Dense};
    use ndarray::array;

    #[test]
    fn softmax_regression_matches_the_closed_form() {
        // One layer, 2 inputs, 3 classes: B = (x̃ x̃ᵀ) ⊗ (diag(p) − p pᵀ).
        let w = array![[0.2, -0.1], [0.4, 0.3], [-0.5, 0.1]];
        let layer = Dense::new(w, array![0.1, 0.0, -0.2]).unwrap();
        let mlp = Mlp::from_layers(vec![layer], Activation::Tanh).unwrap();
        let x = array![0.7, -1.2];
        let h = finite_difference_hessian(&mlp, &x, Loss::CrossEntropy, Target::Class(1), FD_STEP)
            .unwrap();
        let p = esso_core::softmax(mlp.forward(&x).unwrap().logits());
        let x_tilde = array![0.7, -1.2, 1.0];
        let idx = |i: usize, j: usize| if j < 2 { i * 2 + j } else { 6 + i };
        for i in 0..3 {
            for j in 0..3 {
                for k in 0..3 {
                    for q in 0..3 {
                        let hp = if i == k { p[i] - p[i] * p[k] } else { -p[i] * p[k] };
                        let exact = x_tilde[j] * x_tilde[q] * hp;
                        assert!((h[[idx(i, j), idx(k, q)]] - exact).abs() < 1e-9);
                    }
                }
            }
        }
        assert!(
            finite_difference_hessian(&mlp, &x, Loss::CrossEntropy, Target::Class(1), 0.0).is_err()
        );
    }
}

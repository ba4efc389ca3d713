//! The mini-batch Hessian operator against dense references: products, loss, gradient,
//! exact trace and exact stacked spectrum, for every activation and both losses.

#![allow(clippy::unwrap_used)]

mod batch_fixtures;

use batch_fixtures::{Batch, build_batch, rel_err, rel_err2, spectral_norm, table};
use esso_core::{Activation, Loss, Targets};
use esso_hessian::HessianError;
use esso_hessian::batch::{BatchHessian, BatchOptions, SymmetricOperator};
use esso_hessian::reference::dense_eigenvalues;
use ndarray::{Array1, Array2, Axis, concatenate};

/// Two exact routes (no finite differences): rounding only.
const EXACT_TOL: f64 = 1e-11;
/// Against the fourth-order finite-difference oracle (its own error ≈ 1e-12 relative).
const FD_TOL: f64 = 1e-8;
/// Exact stacked spectrum vs dense eigenvalues, relative to the spectral norm (issue 8).
const SPECTRUM_TOL: f64 = 1e-8;
/// max|ΦᵀΦ − I| of the lifted eigenvectors. Reason: Φ = 𝒦ᵀ W V is orthonormal to
/// ε·κ(L) with L the Cholesky factor of the equilibrated stacked Gram matrix, accepted up to
/// κ(L)² = 1/GRAM_RANK_RTOL; similar samples make it ill-conditioned (observed up to ≈1e-9).
const VECTOR_TOL: f64 = 1e-7;

fn worst(label: &str, errs: &[(String, f64)]) {
    let (case, err) = errs.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    println!("worst {label}: {err:e} on {case}");
}

#[test]
fn products_loss_and_gradient_match_the_dense_references() {
    let mut exact_errs = Vec::new();
    let mut fd_errs = Vec::new();
    for batch in table(3) {
        let h = BatchHessian::new(&batch.mlp, batch.loss, &batch.xs, batch.targets()).unwrap();
        assert_eq!((h.n_samples(), h.dim()), (3, batch.mlp.n_params()));
        let dense = h.to_dense().unwrap();
        assert_eq!(h.hvp_count(), batch.mlp.n_params());
        let full = batch.dense_from_full();
        let err = rel_err2(&dense, &full);
        assert!(err <= EXACT_TOL, "{}: vs FullHessian {err:e}", batch.label);
        exact_errs.push((batch.label.clone(), err));
        let fd = batch.dense_fd();
        let err = rel_err2(&dense, &fd);
        assert!(err <= FD_TOL, "{}: vs finite differences {err:e}", batch.label);
        fd_errs.push((batch.label.clone(), err));
        let (loss, grad) = batch.mlp.mean_gradient(&batch.xs, batch.targets(), batch.loss).unwrap();
        assert!((h.loss() - loss).abs() <= 1e-13 * loss.abs().max(1.0), "{}", batch.label);
        let grad = grad.to_flat();
        let err = rel_err(h.gradient().iter(), grad.iter());
        assert!(err <= EXACT_TOL, "{}: gradient {err:e}", batch.label);
    }
    worst("H_B vs Σ FullHessian", &exact_errs);
    worst("H_B vs finite differences", &fd_errs);
}

#[test]
fn exact_trace_matches_the_dense_diagonal() {
    let mut errs = Vec::new();
    for batch in table(3) {
        let h = BatchHessian::new(&batch.mlp, batch.loss, &batch.xs, batch.targets()).unwrap();
        let dense = batch.dense_from_full();
        let exact = dense.diag().sum();
        let scale = dense.diag().iter().map(|d| d.abs()).sum::<f64>();
        let err = (h.trace().unwrap() - exact).abs() / scale;
        assert!(err <= EXACT_TOL, "{}: trace {err:e}", batch.label);
        assert_eq!(h.hvp_count(), 0, "the closed form uses no product");
        errs.push((batch.label.clone(), err));
    }
    worst("closed-form trace", &errs);
}

#[test]
fn exact_spectrum_matches_dense_eigenvalues() {
    let (mut errs, mut orth_errs, mut res_errs) = (Vec::new(), Vec::new(), Vec::new());
    for batch in table(2).into_iter().chain(table(4)) {
        let h = BatchHessian::new(&batch.mlp, batch.loss, &batch.xs, batch.targets()).unwrap();
        let dense = h.to_dense().unwrap();
        let reference = dense_eigenvalues(&dense).unwrap();
        let norm = spectral_norm(&reference);
        let spectrum = h.exact_spectrum(true).unwrap();
        let all = spectrum.eigenvalues_all();
        assert_eq!(all.len(), dense.nrows());
        let err = rel_err(all.iter(), reference.iter()) * rel_err_scale(&reference, norm);
        assert!(err <= SPECTRUM_TOL, "{}: eigenvalues {err:e}", batch.label);
        errs.push((batch.label.clone(), err));
        // Eigenvectors: orthonormal, H φ = λ φ.
        let phi = spectrum.eigenvectors().unwrap();
        let gram = phi.t().dot(&phi) - Array2::<f64>::eye(phi.ncols());
        let orth = gram.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(orth <= VECTOR_TOL, "{}: ΦᵀΦ − I = {orth:e}", batch.label);
        orth_errs.push((batch.label.clone(), orth));
        let values = spectrum.eigenvalues();
        let residual = dense.dot(&phi) - &phi * &values.insert_axis(Axis(0));
        let res = residual.iter().fold(0.0f64, |m, v| m.max(v.abs())) / norm;
        assert!(res <= SPECTRUM_TOL, "{}: residual {res:e}", batch.label);
        res_errs.push((batch.label.clone(), res));
        // Structural zeros: N − r, and r ≤ B·m.
        assert!(spectrum.n_range() <= h.n_samples() * h.n_rows_k());
        assert_eq!(spectrum.n_structural_zeros() + spectrum.n_range(), h.dim());
    }
    worst("stacked exact spectrum", &errs);
    worst("stacked eigenvector orthonormality", &orth_errs);
    worst("stacked eigenvector residual", &res_errs);
}

/// rel_err divides by max|reference| = the spectral norm already; keep the factor explicit.
fn rel_err_scale(reference: &Array1<f64>, norm: f64) -> f64 {
    spectral_norm(reference) / norm
}

#[test]
fn rank_deficient_stacks_take_the_pseudo_inverse_route() {
    // A repeated sample makes the stacked Gram matrix singular; B·m > N makes it too.
    let base = build_batch(&[3, 4, 3], Activation::Tanh, Loss::CrossEntropy, 3, 11);
    let xs = concatenate(Axis(0), &[base.xs.view(), base.xs.slice(ndarray::s![0..1, ..])]).unwrap();
    let mut classes = base.classes.clone();
    classes.push(base.classes[0]);
    let h = BatchHessian::new(&base.mlp, base.loss, &xs, Targets::Classes(&classes)).unwrap();
    let reference = dense_eigenvalues(&h.to_dense().unwrap()).unwrap();
    let spectrum = h.exact_spectrum(false).unwrap();
    let err = rel_err(spectrum.eigenvalues_all().iter(), reference.iter());
    assert!(err <= SPECTRUM_TOL, "repeated sample: {err:e}");
    // The repeated sample adds nothing to the range: rank as for three samples.
    let three = BatchHessian::new(&base.mlp, base.loss, &base.xs, base.targets()).unwrap();
    assert_eq!(spectrum.inertia().rank(), three.exact_spectrum(false).unwrap().inertia().rank());
    // Many samples on a tiny net: B·m = 12·(4 + 3 + 4) = 132 > N = 31.
    let wide = build_batch(&[3, 4, 3], Activation::Sigmoid, Loss::Mse, 12, 12);
    let h = BatchHessian::new(&wide.mlp, wide.loss, &wide.xs, wide.targets()).unwrap();
    assert!(h.n_samples() * h.n_rows_k() > h.dim());
    let reference = dense_eigenvalues(&h.to_dense().unwrap()).unwrap();
    let spectrum = h.exact_spectrum(false).unwrap();
    let err = rel_err(spectrum.eigenvalues_all().iter(), reference.iter());
    assert!(err <= SPECTRUM_TOL, "B·m > N: {err:e}");
}

#[test]
fn single_sample_spectrum_has_the_known_inertia() {
    // method.md §5: rank 2·(hidden units) + classes − 1, (hidden units) negative.
    let batch = build_batch(&[4, 5, 3, 3], Activation::Tanh, Loss::CrossEntropy, 1, 21);
    let h = BatchHessian::new(&batch.mlp, batch.loss, &batch.xs, batch.targets()).unwrap();
    let inertia = h.exact_spectrum(false).unwrap().inertia();
    assert_eq!((inertia.negative, inertia.rank()), (8, 2 * 8 + 3 - 1));
}

fn bits(h: &BatchHessian<'_>, v: &[f64]) -> Vec<u64> {
    h.hvp(v).unwrap().iter().map(|x| x.to_bits()).collect()
}

#[test]
fn products_do_not_depend_on_threads_or_caching() {
    let batch = build_batch(&[4, 5, 3, 2], Activation::Softplus, Loss::CrossEntropy, 37, 31);
    let opts = BatchOptions { chunk_size: 4, ..BatchOptions::default() };
    let cached =
        BatchHessian::with_options(&batch.mlp, batch.loss, &batch.xs, batch.targets(), opts)
            .unwrap();
    let recompute = BatchHessian::with_options(
        &batch.mlp,
        batch.loss,
        &batch.xs,
        batch.targets(),
        BatchOptions { cache_budget_bytes: 0, ..opts },
    )
    .unwrap();
    assert!(cached.is_cached() && !recompute.is_cached());
    let v: Vec<f64> = (0..cached.dim()).map(|i| ((i * 7 % 11) as f64 - 5.0) / 3.0).collect();
    let reference = bits(&cached, &v);
    assert_eq!(bits(&recompute, &v), reference);
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        assert_eq!(pool.install(|| bits(&cached, &v)), reference, "{threads} threads");
        assert_eq!(pool.install(|| bits(&recompute, &v)), reference, "{threads} threads");
    }
    assert_eq!(cached.trace().unwrap().to_bits(), recompute.trace().unwrap().to_bits());
    assert_eq!(cached.loss().to_bits(), recompute.loss().to_bits());
    // Another chunking only changes the summation order.
    let one = BatchHessian::with_options(
        &batch.mlp,
        batch.loss,
        &batch.xs,
        batch.targets(),
        BatchOptions { chunk_size: 1, ..opts },
    )
    .unwrap();
    let a = one.hvp(&v).unwrap();
    let b = cached.hvp(&v).unwrap();
    assert!(rel_err(a.iter(), b.iter()) < 1e-13);
    assert_eq!(cached.hvp_count(), 1 + 3 + 1);
    cached.reset_hvp_count();
    assert_eq!(cached.hvp_count(), 0);
}

#[test]
fn errors_name_the_sizes() {
    let batch = build_batch(&[3, 4, 3], Activation::Tanh, Loss::CrossEntropy, 3, 41);
    let empty = Array2::<f64>::zeros((0, 3));
    let err = BatchHessian::new(&batch.mlp, batch.loss, &empty, Targets::Classes(&[])).unwrap_err();
    assert!(matches!(err, HessianError::Empty { .. }), "{err}");
    let narrow = Array2::<f64>::zeros((3, 2));
    let err = BatchHessian::new(&batch.mlp, batch.loss, &narrow, batch.targets()).unwrap_err();
    assert!(err.to_string().contains('3') && err.to_string().contains('2'), "{err}");
    let err = BatchHessian::new(&batch.mlp, batch.loss, &batch.xs, Targets::Classes(&[0, 1]))
        .unwrap_err();
    assert!(matches!(err, HessianError::Core(_)), "{err}");
    let err = BatchHessian::new(&batch.mlp, batch.loss, &batch.xs, Targets::Classes(&[0, 1, 9]))
        .unwrap_err();
    assert!(matches!(err, HessianError::Core(_)), "{err}");
    let mut bad = batch.xs.clone();
    bad[[1, 1]] = f64::NAN;
    let err = BatchHessian::new(&batch.mlp, batch.loss, &bad, batch.targets()).unwrap_err();
    assert!(matches!(err, HessianError::NonFinite { .. }), "{err}");
    let err = BatchHessian::with_options(
        &batch.mlp,
        batch.loss,
        &batch.xs,
        batch.targets(),
        BatchOptions { chunk_size: 0, ..BatchOptions::default() },
    )
    .unwrap_err();
    assert!(err.to_string().contains("chunk_size"), "{err}");

    let h = BatchHessian::with_options(
        &batch.mlp,
        batch.loss,
        &batch.xs,
        batch.targets(),
        BatchOptions { max_spectrum_rows: 20, ..BatchOptions::default() },
    )
    .unwrap();
    let err = h.exact_spectrum(false).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            HessianError::BatchTooLarge { n_samples: 3, rows_per_sample: 11, rows: 33, limit: 20 }
        ),
        "{msg}"
    );
    assert!(msg.contains("33") && msg.contains("20"), "{msg}");
    let mut out = vec![0.0; h.dim()];
    let err = h.apply(&[1.0; 5], &mut out).unwrap_err();
    assert!(err.to_string().contains('5') && err.to_string().contains(&h.dim().to_string()));
    let mut short = vec![0.0; 2];
    assert!(h.apply(&vec![0.0; h.dim()], &mut short).is_err());
    assert_eq!(h.hvp_count(), 0);
}

#[test]
fn a_single_sample_operator_is_the_full_hessian() {
    use esso_core::SecondOrderTrace;
    use esso_hessian::FullHessian;
    let batch: Batch = build_batch(&[4, 5, 3], Activation::Sigmoid, Loss::Mse, 1, 51);
    let fwd = batch.mlp.forward(&batch.xs.row(0)).unwrap();
    let mut so = SecondOrderTrace::new(&batch.mlp);
    batch.mlp.backward_second_order_into(&fwd, batch.loss, batch.target(0), &mut so).unwrap();
    let full = FullHessian::new(&batch.mlp, &fwd, &so).unwrap();
    let h = BatchHessian::new(&batch.mlp, batch.loss, &batch.xs, batch.targets()).unwrap();
    let v: Vec<f64> = (0..h.dim()).map(|i| (i as f64 * 0.37).sin()).collect();
    let mut a = vec![0.0; h.dim()];
    SymmetricOperator::apply(&full, &v, &mut a).unwrap();
    let b = h.hvp(&v).unwrap();
    assert!(rel_err(b.iter(), a.iter()) <= EXACT_TOL);
    assert_eq!(SymmetricOperator::dim(&full), h.dim());
}

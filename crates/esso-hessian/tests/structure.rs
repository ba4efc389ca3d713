//! The structural facts of method.md §5 and the exact relations between the per-layer and
//! whole-network objects.

#![allow(clippy::unwrap_used)]

mod common;

use common::{EXACT_TOL, FD_TOL, build_case, cases, rel_err2};
use esso_core::{Activation, Loss, softmax};
use esso_hessian::{FullHessian, Inertia, LayerBlock};
use ndarray::{Array1, Array2, Axis, Slice};

/// Rank 2·(active hidden units) + classes − 1 for cross-entropy (+ classes for MSE) with
/// exactly (active hidden units) negative eigenvalues, whenever every δ_l is non-zero.
#[test]
fn rank_and_negative_count_follow_the_hidden_units() {
    let mut n_checked = 0;
    for case in cases() {
        let n_layers = case.mlp.n_layers();
        if (0..n_layers).any(|l| case.second.delta(l).iter().all(|&d| d == 0.0)) {
            continue; // one class: δ = 0, covered by the degenerate tests
        }
        let n_classes = case.mlp.n_outputs();
        let active = case.n_active_hidden_units();
        if case.mlp.activation() != Activation::Relu {
            assert_eq!(active, case.n_hidden_units(), "{}", case.label);
        }
        let expected_rank = match case.loss {
            Loss::CrossEntropy => 2 * active + n_classes - 1,
            Loss::Mse => 2 * active + n_classes,
        };
        let full = FullHessian::new(&case.mlp, &case.forward, &case.second).unwrap();
        let inertia = full.inertia().unwrap();
        assert_eq!(inertia.rank(), expected_rank, "{}: {inertia:?}", case.label);
        assert_eq!(inertia.negative, active, "{}: {inertia:?}", case.label);
        assert_eq!(inertia.n_total(), case.mlp.n_params());
        // The same counts from the dense oracle's eigenvalues.
        let oracle = esso_hessian::reference::dense_eigenvalues(&case.fd).unwrap();
        let oracle_inertia = Inertia::from_eigenvalues(oracle.iter().copied(), 0, 1e-7);
        assert_eq!(oracle_inertia, inertia, "{}", case.label);
        n_checked += 1;
    }
    assert!(n_checked >= 50, "only {n_checked} cases checked");
}

#[test]
fn relu_counts_only_active_units() {
    // A wider ReLU net with some units inactive at this sample.
    let mut n_with_inactive = 0;
    for seed in 0..6 {
        let case = build_case(&[4, 9, 7, 3], Activation::Relu, Loss::CrossEntropy, 7000 + seed);
        let active = case.n_active_hidden_units();
        if active < case.n_hidden_units() {
            n_with_inactive += 1;
        }
        let inertia =
            FullHessian::new(&case.mlp, &case.forward, &case.second).unwrap().inertia().unwrap();
        assert_eq!((inertia.negative, inertia.rank()), (active, 2 * active + 2), "{}", case.label);
    }
    assert!(n_with_inactive > 0);
}

/// method.md §5: one layer (softmax regression) has exactly B_1 = (x̃ x̃ᵀ) ⊗ (diag(p) − p pᵀ).
#[test]
fn softmax_regression_block_is_the_kronecker_product() {
    for seed in 0..4 {
        let case = build_case(&[5, 4], Activation::Tanh, Loss::CrossEntropy, 8000 + seed);
        let p = softmax(case.forward.logits());
        let hp = Array2::from_diag(&p)
            - p.view().insert_axis(Axis(1)).dot(&p.view().insert_axis(Axis(0)));
        let mut x_tilde = Array1::ones(6);
        x_tilde.slice_axis_mut(Axis(0), Slice::from(..5)).assign(&case.x);
        let idx = |i: usize, j: usize| if j < 5 { i * 5 + j } else { 20 + i };
        let mut expected = Array2::zeros((24, 24));
        for i in 0..4 {
            for j in 0..6 {
                for k in 0..4 {
                    for q in 0..6 {
                        expected[[idx(i, j), idx(k, q)]] = x_tilde[j] * x_tilde[q] * hp[[i, k]];
                    }
                }
            }
        }
        let block = LayerBlock::from_trace(&case.forward, &case.second, 0).unwrap();
        assert!(rel_err2(&block.to_dense(), &expected) < EXACT_TOL);
        let full = FullHessian::new(&case.mlp, &case.forward, &case.second).unwrap();
        assert!(rel_err2(&full.to_dense(), &expected) < EXACT_TOL);
        assert!(rel_err2(&case.fd, &expected) < FD_TOL);
        // Rank classes − 1 = 3, PSD.
        let inertia = full.inertia().unwrap();
        assert_eq!(inertia, Inertia { negative: 0, zero: 21, positive: 3 });
        assert_eq!(block.inertia(), inertia);
    }
}

/// The diagonal blocks of the full Hessian are the per-layer blocks B_l.
#[test]
fn full_hessian_diagonal_blocks_are_the_layer_blocks() {
    for case in cases() {
        let dense = FullHessian::new(&case.mlp, &case.forward, &case.second).unwrap().to_dense();
        for layer_idx in 0..case.mlp.n_layers() {
            let block = LayerBlock::from_trace(&case.forward, &case.second, layer_idx).unwrap();
            let start = case.mlp.params().layer_offset(layer_idx);
            let range = Slice::from(start..start + block.n_params());
            let diag = dense.slice_axis(Axis(0), range).slice_axis(Axis(1), range).to_owned();
            assert!(rel_err2(&diag, &block.to_dense()) < EXACT_TOL, "{}", case.label);
            // B_l has as many negative eigenvalues as H_l.
            let n_neg_h =
                block.curvature().hessian_eigenvalues().iter().filter(|&&m| m < 0.0).count();
            let n_neg = block.curvature().n_negative_eigenvalues();
            assert!(n_neg <= n_neg_h && block.inertia().negative == n_neg, "{}", case.label);
        }
    }
}

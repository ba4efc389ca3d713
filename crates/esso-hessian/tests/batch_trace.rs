//! Hutchinson and Hutch++ against the exact trace of mini-batch Hessians.

#![allow(clippy::unwrap_used)]

mod batch_fixtures;

use batch_fixtures::{build_batch, table};
use esso_core::{Activation, Loss, SecondOrderTrace};
use esso_hessian::FullHessian;
use esso_hessian::HessianError;
use esso_hessian::batch::{BatchHessian, DenseOperator};
use esso_hessian::trace::{hutchinson, hutchpp};
use ndarray::Array2;

#[test]
fn hutchinson_is_within_a_few_standard_errors() {
    let mut worst_z = 0.0f64;
    for (idx, batch) in table(4).into_iter().enumerate().filter(|(i, _)| i % 4 == 0) {
        let h = BatchHessian::new(&batch.mlp, batch.loss, &batch.xs, batch.targets()).unwrap();
        let exact = h.trace().unwrap();
        let est = hutchinson(&h, 40, idx as u64).unwrap();
        assert_eq!((est.n_matvecs, est.n_probes), (40, 40));
        assert_eq!(h.hvp_count(), 40);
        let se = est.std_error.unwrap();
        let z = (est.estimate - exact).abs() / se;
        // Fixed seeds: deterministic; 4 standard errors is a ≈ 6e-5 two-sided event each.
        assert!(z <= 4.0, "{}: estimate {} exact {exact} se {se}", batch.label, est.estimate);
        worst_z = worst_z.max(z);
        // The standard error itself is sensible: Var[zᵀAz] = 2(‖A‖_F² − Σ A_ii²).
        let dense = h.to_dense().unwrap();
        let off = dense.iter().map(|v| v * v).sum::<f64>()
            - dense.diag().iter().map(|v| v * v).sum::<f64>();
        let true_se = (2.0 * off / 40.0).sqrt();
        assert!(se > 0.4 * true_se && se < 2.5 * true_se, "{}: se {se} vs {true_se}", batch.label);
    }
    println!("worst Hutchinson |error| / std error: {worst_z:.2}");
    // A diagonal matrix: Rademacher probes are exact.
    let d = Array2::from_diag(&ndarray::array![1.0, -2.0, 3.5, 0.25]);
    let est = hutchinson(&DenseOperator::new(&d).unwrap(), 3, 9).unwrap();
    assert!((est.estimate - 2.75).abs() < 1e-14 && est.std_error.unwrap() < 1e-14);
}

#[test]
fn hutchpp_is_exact_when_the_budget_covers_the_rank() {
    // method.md §5: a single-sample softmax-CE Hessian of a smooth net has rank
    // 2·(hidden units) + classes − 1.
    let mut worst = 0.0f64;
    for activation in [Activation::Tanh, Activation::Sigmoid, Activation::Softplus] {
        let batch = build_batch(&[4, 5, 3, 3], activation, Loss::CrossEntropy, 1, 90);
        let fwd = batch.mlp.forward(&batch.xs.row(0)).unwrap();
        let mut so = SecondOrderTrace::new(&batch.mlp);
        batch.mlp.backward_second_order_into(&fwd, batch.loss, batch.target(0), &mut so).unwrap();
        let full = FullHessian::new(&batch.mlp, &fwd, &so).unwrap();
        let rank = full.inertia().unwrap().rank();
        assert_eq!(rank, 2 * 8 + 3 - 1);
        let dense = full.to_dense();
        let exact = dense.diag().sum();
        let scale = dense.diag().iter().map(|v| v.abs()).sum::<f64>();
        let est = hutchpp(&full, 3 * rank + 2, 5).unwrap();
        assert!(est.n_matvecs <= 3 * rank + 2);
        let err = (est.estimate - exact).abs() / scale;
        assert!(err <= 1e-11, "{activation}: Hutch++ {} vs {exact} ({err:e})", est.estimate);
        worst = worst.max(err);
        // With a smaller budget it is an estimate, still within a few standard errors.
        let small = hutchpp(&full, 30, 6).unwrap();
        let se = small.std_error.unwrap();
        assert!((small.estimate - exact).abs() <= 4.0 * se + 1e-12 * scale, "{activation}");
    }
    println!("worst Hutch++ error at full rank budget: {worst:e}");
}

#[test]
fn hutchpp_is_exact_on_a_low_rank_batch() {
    let batch = build_batch(&[5, 6, 4], Activation::Tanh, Loss::CrossEntropy, 2, 95);
    let h = BatchHessian::new(&batch.mlp, batch.loss, &batch.xs, batch.targets()).unwrap();
    let exact = h.trace().unwrap();
    let rank = h.exact_spectrum(false).unwrap().inertia().rank();
    h.reset_hvp_count();
    let pp = hutchpp(&h, 3 * rank, 1).unwrap();
    assert_eq!(h.hvp_count(), pp.n_matvecs);
    assert!(
        (pp.estimate - exact).abs() <= 1e-10 * exact.abs().max(1.0),
        "{} vs {exact}",
        pp.estimate
    );
}

#[test]
fn invalid_inputs_are_errors() {
    let op = DenseOperator::new(&Array2::<f64>::eye(3)).unwrap();
    assert!(matches!(hutchinson(&op, 0, 0), Err(HessianError::InvalidParameter { .. })));
    assert!(matches!(hutchpp(&op, 2, 0), Err(HessianError::InvalidParameter { .. })));
    let one = hutchinson(&op, 1, 0).unwrap();
    assert_eq!(one.std_error, None);
    assert!((one.estimate - 3.0).abs() < 1e-15);
}

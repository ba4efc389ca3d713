//! Degenerate samples: a correct answer or a clear error, never NaN.

#![allow(clippy::unwrap_used)]

mod common;

use common::{FD_TOL, build_case, rel_err1};
use esso_core::{Activation, Loss, SecondOrderTrace, Target};
use esso_hessian::reference::{FD_STEP, dense_eigenvalues, finite_difference_hessian};
use esso_hessian::{FullHessian, HessianError, LayerBlock, SpectralFn, layerwise_direction};
use ndarray::Array1;

fn all_finite(values: impl IntoIterator<Item = f64>) -> bool {
    values.into_iter().all(f64::is_finite)
}

/// MSE with the target equal to the output: δ = 0 in every layer, so every p_l row of K
/// vanishes and the Hessian is the Gauss–Newton term alone.
#[test]
fn perfectly_fitted_sample() {
    for activation in Activation::all() {
        let case = build_case(&[3, 4, 2], activation, Loss::Mse, 11);
        let target = case.forward.logits().clone();
        let mut second = SecondOrderTrace::new(&case.mlp);
        case.mlp
            .backward_second_order_into(
                &case.forward,
                Loss::Mse,
                Target::Values(target.view()),
                &mut second,
            )
            .unwrap();
        assert!((0..2).all(|l| second.delta(l).iter().all(|&d| d == 0.0)));
        let full = FullHessian::new(&case.mlp, &case.forward, &second).unwrap();
        let values = full.eigenvalues_all().unwrap();
        assert!(all_finite(values.iter().copied()));
        let fd = finite_difference_hessian(
            &case.mlp,
            &case.x,
            Loss::Mse,
            Target::Values(target.view()),
            FD_STEP,
        )
        .unwrap();
        assert!(rel_err1(&values, &dense_eigenvalues(&fd).unwrap()) < FD_TOL, "{activation}");
        // Gauss–Newton only: PSD with rank n_L = 2.
        let inertia = full.inertia().unwrap();
        assert_eq!((inertia.negative, inertia.positive), (0, 2), "{activation}");
        let abs = SpectralFn::absolute(1.0).unwrap();
        for d in [
            full.direction(&abs).unwrap(),
            full.direction(&SpectralFn::damped(1.0).unwrap()).unwrap(),
            full.damped_direction_push_through(1.0).unwrap(),
            layerwise_direction(&case.mlp, &case.forward, &second, &abs).unwrap(),
        ] {
            assert!(d.is_finite() && d.norm() == 0.0, "{activation}");
        }
    }
}

/// A single class: p = 1, δ = 0 and H_L = 0, so the Hessian is exactly zero.
#[test]
fn single_class_cross_entropy_has_a_zero_hessian() {
    let case = build_case(&[2, 3, 1], Activation::Tanh, Loss::CrossEntropy, 5);
    let full = FullHessian::new(&case.mlp, &case.forward, &case.second).unwrap();
    let values = full.eigenvalues_all().unwrap();
    assert!(values.iter().all(|&e| e == 0.0));
    assert_eq!(full.inertia().unwrap().zero, case.mlp.n_params());
    let d = full.direction(&SpectralFn::absolute(1.0).unwrap()).unwrap();
    assert_eq!(d.norm(), 0.0);
}

/// A dead ReLU layer (every unit inactive): s = 0, so T_l = 0, δ vanishes below it and only
/// the layers above carry curvature.
#[test]
fn dead_relu_layer() {
    let mut case = build_case(&[3, 4, 5, 2], Activation::Relu, Loss::CrossEntropy, 21);
    for b in case.mlp.params_mut().layers_mut()[1].bias_mut().iter_mut() {
        *b = -50.0;
    }
    let forward = case.mlp.forward(&case.x).unwrap();
    let mut second = SecondOrderTrace::new(&case.mlp);
    case.mlp
        .backward_second_order_into(&forward, Loss::CrossEntropy, Target::Class(1), &mut second)
        .unwrap();
    assert!(second.slope(1).iter().all(|&s| s == 0.0));
    let full = FullHessian::new(&case.mlp, &forward, &second).unwrap();
    let values = full.eigenvalues_all().unwrap();
    let fd = finite_difference_hessian(
        &case.mlp,
        &case.x,
        Loss::CrossEntropy,
        Target::Class(1),
        FD_STEP,
    )
    .unwrap();
    assert!(rel_err1(&values, &dense_eigenvalues(&fd).unwrap()) < FD_TOL);
    // Only the output layer's block is curved: rank classes − 1 = 1, no negative eigenvalue
    // (the active units of layer 1 are cut off from the output).
    let inertia = full.inertia().unwrap();
    assert_eq!((inertia.negative, inertia.rank()), (0, 1));
    let abs = SpectralFn::absolute(0.5).unwrap();
    let d = full.direction(&abs).unwrap();
    let d_layer = layerwise_direction(&case.mlp, &forward, &second, &abs).unwrap();
    assert!(d.is_finite() && d_layer.is_finite());
    // Layers below the dead one get no gradient and no step.
    assert_eq!(d.layers()[0].weight().iter().map(|v| v.abs()).sum::<f64>(), 0.0);
}

#[test]
fn damped_steps_on_indefinite_hessians_are_errors() {
    let case = build_case(&[4, 5, 3, 3], Activation::Tanh, Loss::CrossEntropy, 3);
    let full = FullHessian::new(&case.mlp, &case.forward, &case.second).unwrap();
    let spectrum = full.spectrum().unwrap();
    let min = spectrum.min_eigenvalue();
    assert!(min < 0.0);
    let lambda = -min / 2.0;
    let err = spectrum.direction(&SpectralFn::damped(lambda).unwrap()).unwrap_err();
    assert!(
        matches!(err, HessianError::NonPositiveShift { layer_idx: None, min_eigenvalue, .. } if min_eigenvalue == min),
        "{err}"
    );
    let err = full.damped_direction_push_through(lambda).unwrap_err();
    match err {
        HessianError::NonPositiveShift { min_eigenvalue, .. } => {
            assert!((min_eigenvalue - min).abs() < 1e-12);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(matches!(
        full.damped_direction_push_through(-1.0),
        Err(HessianError::InvalidParameter { name: "lambda", .. })
    ));
    // Per layer: the first layer with a negative block eigenvalue below −λ is named.
    let blocks: Vec<f64> = (0..3)
        .map(|l| LayerBlock::from_trace(&case.forward, &case.second, l).unwrap().eigenvalues()[0])
        .collect();
    let layer_min = blocks.iter().copied().fold(0.0f64, f64::min);
    assert!(layer_min < 0.0);
    let f = SpectralFn::damped(-layer_min / 2.0).unwrap();
    let err = layerwise_direction(&case.mlp, &case.forward, &case.second, &f).unwrap_err();
    assert!(matches!(err, HessianError::NonPositiveShift { layer_idx: Some(_), .. }), "{err}");
}

#[test]
fn non_finite_traces_and_bad_indices_are_errors() {
    let case = build_case(&[3, 4, 2], Activation::Sigmoid, Loss::CrossEntropy, 9);
    let x = Array1::from_vec(vec![f64::NAN, 0.0, 1.0]);
    let forward = case.mlp.forward(&x).unwrap();
    let mut second = SecondOrderTrace::new(&case.mlp);
    case.mlp
        .backward_second_order_into(&forward, Loss::CrossEntropy, Target::Class(0), &mut second)
        .unwrap();
    assert!(matches!(
        FullHessian::new(&case.mlp, &forward, &second),
        Err(HessianError::NonFinite { layer_idx: Some(0), .. })
    ));
    let abs = SpectralFn::absolute(1.0).unwrap();
    assert!(matches!(
        layerwise_direction(&case.mlp, &forward, &second, &abs),
        Err(HessianError::NonFinite { .. })
    ));
    assert_eq!(
        LayerBlock::from_trace(&case.forward, &case.second, 2),
        Err(HessianError::LayerOutOfRange { layer_idx: 2, n_layers: 2 })
    );
}

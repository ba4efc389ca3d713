//! The fast layer-wise step (in place, eigenvector-free solvers, Gram route for
//! piecewise-linear activations) against the general path (dense eigenvectors per layer,
//! `Esso::direction`), for every activation, both losses, B = 1 and B = 3, including dead
//! ReLU units and rank-deficient layers.
#![allow(clippy::unwrap_used)]

use esso_core::{Activation, Init, Loss, Mlp, SecondOrderTrace, Targets};
use esso_hessian::LayerCurvature;
use esso_optim::{EssoConfig, Optimizer};
use ndarray::Array2;
use rand::SeedableRng;

fn mlp(sizes: &[usize], act: Activation, seed: u64) -> Mlp {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Mlp::new(sizes, act, Init::GlorotUniform, &mut rng).unwrap()
}

fn check(mut net: Mlp, xs: &Array2<f64>, loss: Loss, label: &str) {
    let classes: Vec<usize> = (0..xs.nrows()).map(|i| (i * 2 + 1) % net.n_outputs()).collect();
    let ts = Array2::from_shape_fn((xs.nrows(), net.n_outputs()), |(i, j)| {
        ((i * 3 + j) as f64 * 0.7).sin()
    });
    let targets = match loss {
        Loss::CrossEntropy => Targets::Classes(&classes),
        Loss::Mse => Targets::Values(ts.view()),
    };
    let config = EssoConfig::absolute(0.5, 0.05);
    let mut general = config.build().unwrap();
    let (_, gradient, direction) = general.direction(&net, xs, targets, loss).unwrap();
    let before = net.params().clone();
    let mut fast = config.build().unwrap();
    let report = fast.step(&mut net, xs, targets, loss).unwrap();
    assert_eq!(fast.fast_steps(), 1, "{label}: the fast path was not taken");
    let scale = direction.iter().fold(0.0f64, |m, v| m.max(v.abs())) * 0.5;
    assert!(scale > 0.0, "{label}: zero direction");
    let mut worst = 0.0f64;
    for ((new, old), d) in net.params().iter().zip(before.iter()).zip(direction.iter()) {
        worst = worst.max(((new - old) - 0.5 * d).abs());
    }
    assert!(worst <= 1e-10 * scale, "{label}: worst {worst:e} vs scale {scale:e}");
    // The report's eigenvalue summaries match the dense eigendecompositions of H_l.
    let old = Mlp::from_params(before, net.activation()).unwrap();
    for (l, summary) in report.layers.iter().enumerate() {
        let (mut min, mut max, mut negative) = (f64::INFINITY, f64::NEG_INFINITY, 0);
        for s in 0..xs.nrows() {
            let fwd = old.forward(&xs.row(s)).unwrap();
            let mut so = SecondOrderTrace::new(&old);
            old.backward_second_order_into(&fwd, loss, targets.get(s), &mut so).unwrap();
            let curv = LayerCurvature::from_trace(&fwd, &so, l).unwrap();
            let e = curv.eigenvalues();
            min = min.min(e[0]);
            max = max.max(e[e.len() - 1]);
            negative += curv.n_negative_eigenvalues();
        }
        let tol = 1e-10 * max.abs().max(min.abs()).max(1e-300);
        assert!((summary.min_eigenvalue - min).abs() <= tol, "{label} layer {l}: min");
        assert!((summary.max_eigenvalue - max).abs() <= tol, "{label} layer {l}: max");
        assert_eq!(summary.n_negative, negative, "{label} layer {l}: negatives");
    }
    // ‖g‖, ‖η d‖ and cos(−g, η d) (the update is θ ← θ + η d), from the rank-one factors on
    // the fast path, against the general path's materialised g and d (η = 0.5).
    let norm = |p: &esso_core::Params| p.iter().map(|v| v * v).sum::<f64>().sqrt();
    let (g_norm, d_norm) = (norm(&gradient), norm(&direction));
    let g_dot_d = gradient.iter().zip(direction.iter()).map(|(g, d)| g * d).sum::<f64>();
    let cos = -g_dot_d / (g_norm * d_norm);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-10 * b.abs().max(1e-300);
    assert!(close(report.grad_norm, g_norm), "{label}: ‖g‖ {} vs {g_norm}", report.grad_norm);
    assert!(
        close(report.step_norm, 0.5 * d_norm),
        "{label}: ‖η d‖ {} vs {}",
        report.step_norm,
        0.5 * d_norm
    );
    let reported = report.cos_to_neg_grad.unwrap();
    assert!((reported - cos).abs() <= 1e-10, "{label}: cos {reported} vs {cos}");
    assert!(reported > 0.0, "{label}: not a descent direction");
}

#[test]
fn fast_step_equals_the_general_path() {
    for act in Activation::all() {
        for loss in [Loss::CrossEntropy, Loss::Mse] {
            for b in [1, 3] {
                // 3 classes below hidden widths 7 and 6: the Gram route for ReLU-like layers.
                let net = mlp(&[5, 7, 6, 3], act, 11);
                let xs = Array2::from_shape_fn((b, 5), |(i, j)| ((i * 5 + j) as f64 * 0.61).cos());
                check(net, &xs, loss, &format!("{act} {loss:?} B={b}"));
                // Narrow hidden layers (r ≥ n): the dense route everywhere.
                let net = mlp(&[4, 3, 2, 4], act, 12);
                let xs = Array2::from_shape_fn((b, 4), |(i, j)| ((i + 2 * j) as f64 * 0.9).sin());
                check(net, &xs, loss, &format!("{act} {loss:?} B={b} narrow"));
                // Three hidden layers (tanh-like): H in factor form M^T diag(Σ) M twice in a
                // row (widths 12 then 4), and factor form then dense (widths 7 then 8).
                for (sizes, what) in
                    [(&[3, 4, 12, 6, 3][..], "factor"), (&[4, 8, 7, 6, 3], "dense")]
                {
                    let net = mlp(sizes, act, 13);
                    let xs = Array2::from_shape_fn((b, sizes[0]), |(i, j)| {
                        ((3 * i + j) as f64 * 0.47).cos()
                    });
                    check(net, &xs, loss, &format!("{act} {loss:?} B={b} deep, {what}"));
                }
            }
        }
    }
}

#[test]
fn dead_relu_units_and_rank_deficiency() {
    let mut net = mlp(&[4, 9, 8, 3], Activation::Relu, 5);
    // Kill four units of the first hidden layer and three of the second (b ≪ 0).
    for i in 0..4 {
        net.params_mut().layers_mut()[0].bias_mut()[i] = -50.0;
    }
    for i in 0..3 {
        net.params_mut().layers_mut()[1].bias_mut()[i] = -50.0;
    }
    let xs = Array2::from_shape_fn((2, 4), |(i, j)| ((i * 4 + j) as f64 * 0.37).sin());
    check(net.clone(), &xs, Loss::CrossEntropy, "relu dead units");
    check(net, &xs, Loss::Mse, "relu dead units mse");
}

#[test]
fn a_huge_parameter_sends_a_single_sample_step_to_the_checked_path() {
    // θ² overflows, so the fused forward pass's Σ θ² is ∞ and the in-place update is not
    // proven safe: the step must take the general path and still equal θ − η d.
    let mut net = mlp(&[4, 6, 3], Activation::Tanh, 9);
    net.params_mut().layers_mut()[0].weight_mut()[[0, 0]] = 1e200;
    let xs = Array2::from_shape_fn((1, 4), |(_, j)| (j as f64 * 0.37 + 0.1).sin());
    let classes = [1];
    let config = EssoConfig::absolute(0.5, 0.05);
    let mut general = config.build().unwrap();
    let (_, _, direction) =
        general.direction(&net, &xs, Targets::Classes(&classes), Loss::CrossEntropy).unwrap();
    let before = net.params().clone();
    let mut opt = config.build().unwrap();
    opt.step(&mut net, &xs, Targets::Classes(&classes), Loss::CrossEntropy).unwrap();
    assert_eq!(opt.fast_steps(), 0, "the fast path must refuse an unproven in-place update");
    for ((new, old), d) in net.params().iter().zip(before.iter()).zip(direction.iter()) {
        assert!(new.is_finite());
        assert!(((new - old) - 0.5 * d).abs() <= 1e-12 * old.abs().max(1.0), "{new} vs {old}");
    }
}

#[test]
fn batch_steps_do_not_depend_on_the_worker_count() {
    // The samples of a batch are handed out dynamically to one workspace per worker: the
    // result must be the same, bit for bit, whatever the pool and whichever workspace gets
    // which sample.
    let xs = Array2::from_shape_fn((7, 9), |(i, j)| ((i * 9 + j) as f64 * 0.53).sin());
    let classes: Vec<usize> = (0..7).map(|i| i % 3).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut net = mlp(&[9, 12, 8, 3], Activation::Tanh, 21);
            let mut opt = EssoConfig::absolute(0.5, 0.05).build().unwrap();
            for _ in 0..3 {
                opt.step(&mut net, &xs, Targets::Classes(&classes), Loss::CrossEntropy).unwrap();
            }
            assert_eq!(opt.fast_steps(), 3);
            net.params().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        })
    };
    let one = run(1);
    for threads in [2, 3, 4] {
        assert_eq!(run(threads), one, "{threads} workers");
    }
}

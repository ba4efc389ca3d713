//! Loss landscapes: 1D interpolation, filter-normalised directions and 2D surfaces, against
//! direct evaluations of the perturbed networks.

#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use esso_core::{Activation, Init, Loss, Mlp, Params, Targets};
use esso_hessian::HessianError;
use esso_hessian::landscape::{
    BiasMode, DirectionOptions, filter_normalize, filter_normalized_direction,
    filter_normalized_directions, interpolate_1d, surface_2d,
};
use ndarray::{Array1, Array2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

struct Data {
    xs: Array2<f64>,
    classes: Vec<usize>,
    values: Array2<f64>,
}

impl Data {
    fn new(n_samples: usize, n_in: usize, n_out: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut normal = || esso_core::standard_normal(&mut rng);
        let xs = Array2::from_shape_fn((n_samples, n_in), |_| normal());
        let values = Array2::from_shape_fn((n_samples, n_out), |_| normal());
        let classes = (0..n_samples).map(|i| (i * 7 + 3) % n_out).collect();
        Data { xs, classes, values }
    }

    fn targets(&self, loss: Loss) -> Targets<'_> {
        match loss {
            Loss::CrossEntropy => Targets::Classes(&self.classes),
            Loss::Mse => Targets::Values(self.values.view()),
        }
    }
}

fn net(sizes: &[usize], activation: Activation, seed: u64) -> Mlp {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut mlp = Mlp::new(sizes, activation, Init::GlorotNormal, &mut rng).unwrap();
    for layer in mlp.params_mut().layers_mut() {
        for b in layer.bias_mut().iter_mut() {
            *b = 0.3 * esso_core::standard_normal(&mut rng);
        }
    }
    mlp
}

/// A network with the parameters `flat`.
fn with_flat(mlp: &Mlp, flat: &Array1<f64>) -> Mlp {
    let mut out = mlp.clone();
    out.params_mut().copy_from_flat(flat.as_slice().unwrap()).unwrap();
    out
}

fn cases() -> Vec<(Activation, Loss, u64)> {
    let mut out = Vec::new();
    let mut seed = 10;
    for activation in Activation::all() {
        for loss in [Loss::CrossEntropy, Loss::Mse] {
            seed += 1;
            out.push((activation, loss, seed));
        }
    }
    out
}

#[test]
fn interpolation_matches_direct_evaluations() {
    let data = Data::new(9, 3, 4, 1);
    let alphas = [-0.5, 0.0, 0.25, 0.5, 1.0, 1.7];
    for (activation, loss, seed) in cases() {
        let a = net(&[3, 5, 4], activation, seed);
        let b = net(&[3, 5, 4], activation, seed + 1000);
        let targets = data.targets(loss);
        let line = interpolate_1d(&a, &b, loss, &data.xs, targets, &alphas).unwrap();
        assert_eq!(line.alphas, alphas);
        let (fa, fb) = (a.params().to_flat(), b.params().to_flat());
        for (k, &alpha) in alphas.iter().enumerate() {
            let flat = fa.mapv(|u| (1.0 - alpha) * u) + fb.mapv(|v| alpha * v);
            let direct = with_flat(&a, &flat).evaluate(&data.xs, targets, loss).unwrap();
            assert_eq!(line.losses[k], direct.mean_loss, "{activation} {loss} alpha {alpha}");
            assert_eq!(line.accuracies.as_ref().map(|acc| acc[k]), direct.accuracy);
        }
        // The endpoints are the networks themselves, bit for bit.
        assert_eq!(line.losses[1], a.evaluate(&data.xs, targets, loss).unwrap().mean_loss);
        assert_eq!(line.losses[4], b.evaluate(&data.xs, targets, loss).unwrap().mean_loss);
        assert_eq!(line.accuracies.is_some(), loss == Loss::CrossEntropy);
        // Two different networks: the line is not flat.
        assert_ne!(line.losses[1], line.losses[4]);
    }
}

#[test]
fn interpolation_rejects_other_architectures_and_bad_input() {
    let data = Data::new(4, 3, 4, 2);
    let loss = Loss::CrossEntropy;
    let targets = data.targets(loss);
    let a = net(&[3, 5, 4], Activation::Tanh, 1);
    let wider = net(&[3, 6, 4], Activation::Tanh, 2);
    let e = interpolate_1d(&a, &wider, loss, &data.xs, targets, &[0.5]).unwrap_err();
    assert!(matches!(e, HessianError::ArchitectureMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("[3, 5, 4]") && msg.contains("[3, 6, 4]"), "{msg}");
    let relu = net(&[3, 5, 4], Activation::Relu, 3);
    let e = interpolate_1d(&a, &relu, loss, &data.xs, targets, &[0.5]).unwrap_err();
    assert!(e.to_string().contains("tanh") && e.to_string().contains("relu"), "{e}");
    let e = interpolate_1d(&a, &a, loss, &data.xs, targets, &[0.0, f64::NAN]).unwrap_err();
    assert!(matches!(e, HessianError::InvalidParameter { name: "alpha", .. }), "{e}");
    let empty = Array2::zeros((0, 3));
    let e = interpolate_1d(&a, &a, loss, &empty, Targets::Classes(&[]), &[0.0]).unwrap_err();
    assert!(matches!(e, HessianError::Empty { .. }), "{e}");
    let e = interpolate_1d(&a, &a, loss, &data.xs, Targets::Classes(&[0]), &[0.0]).unwrap_err();
    assert!(matches!(e, HessianError::Core(_)), "{e}");
    let none = interpolate_1d(&a, &a, loss, &data.xs, targets, &[]).unwrap();
    assert!(none.losses.is_empty() && none.accuracies == Some(vec![]));
    let mse = data.targets(Loss::Mse);
    let none = interpolate_1d(&a, &a, Loss::Mse, &data.xs, mse, &[]).unwrap();
    assert!(none.losses.is_empty() && none.accuracies.is_none());
}

/// Row norms of every layer's weight, optionally with the bias.
fn filter_norms(p: &Params, with_bias: bool) -> Vec<f64> {
    p.layers()
        .iter()
        .flat_map(|l| {
            l.weight().rows().into_iter().zip(l.bias().iter()).map(move |(row, b)| {
                let sq = row.dot(&row) + if with_bias { b * b } else { 0.0 };
                sq.sqrt()
            })
        })
        .collect()
}

fn assert_filter_normalised(d: &Params, theta: &Params, bias: BiasMode, what: &str) -> f64 {
    let with_bias = bias == BiasMode::InFilter;
    let (dn, tn) = (filter_norms(d, with_bias), filter_norms(theta, with_bias));
    let mut worst: f64 = 0.0;
    for (k, (a, b)) in dn.iter().zip(&tn).enumerate() {
        let err = if *b == 0.0 { a.abs() } else { (a - b).abs() / b };
        worst = worst.max(err);
        assert!(err <= 4.0 * f64::EPSILON, "{what}: filter {k}: {a} vs {b}");
    }
    if !with_bias {
        assert!(d.layers().iter().all(|l| l.bias().iter().all(|&b| b == 0.0)), "{what}");
    }
    worst
}

#[test]
fn directions_are_filter_normalised() {
    let mut worst: f64 = 0.0;
    for (activation, _, seed) in cases() {
        let mlp = net(&[4, 6, 5, 3], activation, seed);
        let theta = mlp.params();
        for bias in [BiasMode::Zero, BiasMode::InFilter] {
            for orthogonalize in [false, true] {
                let options = DirectionOptions { bias, orthogonalize };
                let (d1, d2) = filter_normalized_directions(&mlp, seed, &options).unwrap();
                worst = worst.max(assert_filter_normalised(&d1, theta, bias, "d1"));
                worst = worst.max(assert_filter_normalised(&d2, theta, bias, "d2"));
                assert_eq!(d1, filter_normalized_direction(&mlp, seed, bias));
                let cos = d1.dot(&d2) / (d1.norm() * d2.norm());
                if orthogonalize {
                    assert!(cos.abs() <= 1e-14, "{activation} {bias:?}: cos {cos:e}");
                    // Per filter too: each filter of d₂ is orthogonal to d₁'s.
                    let with_bias = bias == BiasMode::InFilter;
                    for (l1, l2) in d1.layers().iter().zip(d2.layers()) {
                        let rows = l1.weight().rows().into_iter().zip(l2.weight().rows());
                        for (i, (r1, r2)) in rows.enumerate() {
                            let b =
                                if with_bias { (l1.bias()[i], l2.bias()[i]) } else { (0.0, 0.0) };
                            let dot = r1.dot(&r2) + b.0 * b.1;
                            let n1 = (r1.dot(&r1) + b.0 * b.0).sqrt();
                            let n2 = (r2.dot(&r2) + b.1 * b.1).sqrt();
                            assert!(
                                dot.abs() <= 1e-14 * n1 * n2,
                                "filter cos {:e}",
                                dot / (n1 * n2)
                            );
                        }
                    }
                } else {
                    assert!(cos.abs() > 1e-6, "independent draws are not orthogonal: {cos:e}");
                }
                // Random, not θ itself: some filter is not parallel to θ's.
                let parallel = d1
                    .layers()
                    .iter()
                    .zip(theta.layers())
                    .flat_map(|(d, t)| {
                        d.weight()
                            .rows()
                            .into_iter()
                            .zip(t.weight().rows())
                            .map(|(a, b)| (a.dot(&b) / (a.dot(&a) * b.dot(&b)).sqrt()).abs())
                            .collect::<Vec<_>>()
                    })
                    .fold(0.0f64, f64::max);
                assert!(parallel < 0.9999, "{activation}: d1 has a filter parallel to θ's");
            }
        }
    }
    eprintln!("filter normalisation: worst relative norm error {worst:e}");
}

#[test]
fn directions_are_seeded_and_use_the_bias_stream_identically() {
    let mlp = net(&[3, 4, 2], Activation::Tanh, 5);
    let a = filter_normalized_direction(&mlp, 1, BiasMode::Zero);
    assert_eq!(a, filter_normalized_direction(&mlp, 1, BiasMode::Zero));
    assert_ne!(a, filter_normalized_direction(&mlp, 2, BiasMode::Zero));
    // Biases are drawn in both modes, so the weight rows differ only by their scale.
    let b = filter_normalized_direction(&mlp, 1, BiasMode::InFilter);
    for (la, lb) in a.layers().iter().zip(b.layers()) {
        assert!(lb.bias().iter().all(|&v| v != 0.0));
        for (ra, rb) in la.weight().rows().into_iter().zip(lb.weight().rows()) {
            let cos = ra.dot(&rb) / (ra.dot(&ra) * rb.dot(&rb)).sqrt();
            assert!((cos - 1.0).abs() <= 1e-14, "cos {cos}");
        }
    }
}

#[test]
fn filter_normalize_handles_zero_filters_and_shapes() {
    let mut mlp = net(&[3, 4, 2], Activation::Tanh, 6);
    mlp.params_mut().layers_mut()[0].weight_mut().row_mut(2).fill(0.0);
    mlp.params_mut().layers_mut()[0].bias_mut()[2] = 0.0;
    let mut d = Params::zeros_like(mlp.params());
    for (k, v) in d.iter_mut().enumerate() {
        *v = (k as f64 - 7.5) * 0.3;
    }
    filter_normalize(&mut d, mlp.params(), BiasMode::InFilter).unwrap();
    assert!(d.layers()[0].weight().row(2).iter().all(|&v| v == 0.0));
    assert_eq!(d.layers()[0].bias()[2], 0.0);
    assert_filter_normalised(&d, mlp.params(), BiasMode::InFilter, "explicit direction");
    let mut other = Params::zeros_like(net(&[3, 5, 2], Activation::Tanh, 1).params());
    let e = filter_normalize(&mut other, mlp.params(), BiasMode::Zero).unwrap_err();
    assert!(e.to_string().contains("[3, 5, 2]") && e.to_string().contains("[3, 4, 2]"), "{e}");
}

/// A filter of dimension 1 (one input, bias excluded) cannot carry two orthogonal non-zero
/// directions: it is 0 in the orthogonalised d₂.
#[test]
fn orthogonalised_one_dimensional_filters_are_zero() {
    let mlp = net(&[1, 3, 2], Activation::Tanh, 8);
    let options = DirectionOptions { bias: BiasMode::Zero, orthogonalize: true };
    let (d1, d2) = filter_normalized_directions(&mlp, 3, &options).unwrap();
    assert!(d2.layers()[0].weight().iter().all(|&v| v == 0.0));
    assert!(d1.layers()[0].weight().iter().all(|&v| v != 0.0));
    // The output layer's filters (dimension 3) are orthogonalised and normalised.
    let out = (&d2.layers()[1], &mlp.layers()[1]);
    for (r, w) in out.0.weight().rows().into_iter().zip(out.1.weight().rows()) {
        let (nr, nw) = (r.dot(&r).sqrt(), w.dot(&w).sqrt());
        assert!((nr - nw).abs() <= 4.0 * f64::EPSILON * nw, "{nr} vs {nw}");
    }
    assert!(d1.dot(&d2).abs() <= 1e-14 * d1.norm() * d2.norm());
}

#[test]
fn surface_matches_direct_evaluations_and_interpolation() {
    let data = Data::new(7, 3, 3, 3);
    let grid_x = [-1.0, -0.25, 0.0, 0.5, 1.0];
    let grid_y = [-0.5, 0.0, 0.75];
    for (activation, loss, seed) in cases() {
        let mlp = net(&[3, 5, 3], activation, seed);
        let targets = data.targets(loss);
        let options = DirectionOptions { bias: BiasMode::InFilter, orthogonalize: true };
        let (d1, d2) = filter_normalized_directions(&mlp, seed, &options).unwrap();
        let surface =
            surface_2d(&mlp, loss, &data.xs, targets, (&d1, &d2), (&grid_x, &grid_y), None)
                .unwrap();
        assert_eq!((surface.xs.as_slice(), surface.ys.as_slice()), (&grid_x[..], &grid_y[..]));
        assert_eq!(surface.losses.dim(), (5, 3));
        assert_eq!(surface.accuracies.is_some(), loss == Loss::CrossEntropy);
        // (0, 0) is θ, exactly.
        let at_theta = mlp.evaluate(&data.xs, targets, loss).unwrap();
        assert_eq!(surface.losses[[2, 1]], at_theta.mean_loss);
        assert_eq!(surface.accuracies.as_ref().map(|a| a[[2, 1]]), at_theta.accuracy);
        // Every point is a direct evaluation of θ + x d₁ + y d₂.
        let (t, u, v) = (mlp.params().to_flat(), d1.to_flat(), d2.to_flat());
        for (i, &x) in grid_x.iter().enumerate() {
            for (j, &y) in grid_y.iter().enumerate() {
                let flat = Array1::from_shape_fn(t.len(), |k| t[k] + x * u[k] + y * v[k]);
                let direct = with_flat(&mlp, &flat).evaluate(&data.xs, targets, loss).unwrap();
                assert_eq!(surface.losses[[i, j]], direct.mean_loss, "{activation} {loss}");
                assert_eq!(surface.accuracies.as_ref().map(|a| a[[i, j]]), direct.accuracy);
            }
        }
        // The line y = 0 is the interpolation from θ towards θ + d₁ (up to the rounding of
        // (1 − x)θ + x(θ + d₁) against θ + x d₁).
        let towards = with_flat(&mlp, &(&t + &u));
        let line = interpolate_1d(&mlp, &towards, loss, &data.xs, targets, &grid_x).unwrap();
        for (i, &x) in grid_x.iter().enumerate() {
            let (a, b) = (surface.losses[[i, 1]], line.losses[i]);
            assert!(
                (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                "{activation} {loss} x {x}: {a} vs {b}"
            );
        }
        // Directions matter: the surface is not constant.
        assert!(surface.losses.iter().any(|&l| l != at_theta.mean_loss));
    }
}

#[test]
fn surface_is_deterministic_across_thread_counts_and_reports_progress() {
    let data = Data::new(6, 3, 3, 4);
    let mlp = net(&[3, 4, 3], Activation::Softplus, 9);
    let targets = data.targets(Loss::CrossEntropy);
    let (d1, d2) = filter_normalized_directions(&mlp, 1, &DirectionOptions::default()).unwrap();
    let grid: Vec<f64> = (0..7).map(|k| -1.0 + k as f64 / 3.0).collect();
    let seen = Mutex::new(Vec::new());
    let progress = |done: usize, total: usize| seen.lock().unwrap().push((done, total));
    let run = |threads: usize, progress: Option<&(dyn Fn(usize, usize) + Sync)>| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            surface_2d(
                &mlp,
                Loss::CrossEntropy,
                &data.xs,
                targets,
                (&d1, &d2),
                (&grid, &grid[..3]),
                progress,
            )
            .unwrap()
        })
    };
    let one = run(1, None);
    let two = run(2, Some(&progress));
    assert_eq!(one, two);
    let mut seen = seen.into_inner().unwrap();
    seen.sort_unstable();
    assert_eq!(seen, (1..=21).map(|k| (k, 21)).collect::<Vec<_>>());
}

#[test]
fn surface_rejects_bad_directions_and_grids() {
    let data = Data::new(4, 3, 3, 5);
    let loss = Loss::Mse;
    let targets = data.targets(loss);
    let mlp = net(&[3, 4, 3], Activation::Tanh, 10);
    let d = filter_normalized_direction(&mlp, 0, BiasMode::Zero);
    let other =
        filter_normalized_direction(&net(&[3, 2, 3], Activation::Tanh, 1), 0, BiasMode::Zero);
    let g = [0.0, 1.0];
    let e = surface_2d(&mlp, loss, &data.xs, targets, (&d, &other), (&g, &g), None).unwrap_err();
    assert!(matches!(e, HessianError::ArchitectureMismatch { .. }), "{e}");
    assert!(e.to_string().contains("[3, 2, 3]") && e.to_string().contains("[3, 4, 3]"), "{e}");
    let bad = [0.0, f64::INFINITY];
    let e = surface_2d(&mlp, loss, &data.xs, targets, (&d, &d), (&g, &bad), None).unwrap_err();
    assert!(matches!(e, HessianError::InvalidParameter { name: "y", .. }), "{e}");
    let e = surface_2d(&mlp, loss, &data.xs, targets, (&d, &d), (&bad, &g), None).unwrap_err();
    assert!(matches!(e, HessianError::InvalidParameter { name: "x", .. }), "{e}");
    let empty = Array2::zeros((0, 3));
    let no_values = Array2::zeros((0, 3));
    let e =
        surface_2d(&mlp, loss, &empty, Targets::Values(no_values.view()), (&d, &d), (&g, &g), None)
            .unwrap_err();
    assert!(matches!(e, HessianError::Empty { .. }), "{e}");
    let s = surface_2d(&mlp, loss, &data.xs, targets, (&d, &d), (&[], &g), None).unwrap();
    assert_eq!(s.losses.dim(), (0, 2));
    assert!(s.accuracies.is_none());
}

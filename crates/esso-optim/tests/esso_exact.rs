//! ESSO against dense oracles built here: descent, the one-layer closed form, the
//! whole-network direction, batch averaging and determinism, λ scaling, diagnostics,
//! validation and divergence.
#![allow(clippy::unwrap_used)]

mod common;

use esso_core::{Activation, Init, Loss, Mlp, SecondOrderTrace, Target, Targets};
use esso_hessian::SpectralKind;
use esso_optim::{
    CurvatureScope, EssoConfig, LambdaScaling, NonFiniteQuantity, OptimError, Optimizer,
    OptimizerConfig,
};
use ndarray::{Array1, Array2, array};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn random_mlp(sizes: &[usize], act: Activation, seed: u64) -> Mlp {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Mlp::new(sizes, act, Init::GlorotNormal, &mut rng).unwrap()
}

fn random_xs(n: usize, n_in: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((n, n_in), |_| 1.5 * esso_core::standard_normal(&mut rng))
}

/// The dense single-sample gradient at θ (flat, canonical order).
fn flat_gradient(mlp: &Mlp, x: &Array1<f64>, target: Target<'_>, loss: Loss) -> Vec<f64> {
    let fwd = mlp.forward(x).unwrap();
    let mut so = SecondOrderTrace::new(mlp);
    mlp.backward_second_order_into(&fwd, loss, target, &mut so).unwrap();
    so.gradient(&fwd).to_flat().to_vec()
}

/// The dense single-sample Hessian by central differences of the analytic gradient,
/// symmetrised. ε = 1e-5 gives errors ~1e-9 on these small nets.
fn fd_hessian(mlp: &Mlp, x: &Array1<f64>, target: Target<'_>, loss: Loss) -> Array2<f64> {
    let eps = 1e-5;
    let theta = mlp.params().to_flat();
    let n = theta.len();
    let mut h = Array2::zeros((n, n));
    let mut probe = mlp.clone();
    for j in 0..n {
        let mut t = theta.clone();
        t[j] += eps;
        probe.params_mut().copy_from_flat(t.as_slice().unwrap()).unwrap();
        let gp = flat_gradient(&probe, x, target, loss);
        t[j] -= 2.0 * eps;
        probe.params_mut().copy_from_flat(t.as_slice().unwrap()).unwrap();
        let gm = flat_gradient(&probe, x, target, loss);
        for i in 0..n {
            h[[i, j]] = (gp[i] - gm[i]) / (2.0 * eps);
        }
    }
    (&h + &h.t()) * 0.5
}

fn esso(config: EssoConfig) -> esso_optim::Esso {
    config.build().unwrap()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn absolute_steps_are_descent_directions() {
    let mut n_checked = 0;
    for (seed, act) in [(1, Activation::Tanh), (2, Activation::Sigmoid), (3, Activation::Relu)] {
        for (sizes, batch) in
            [(&[3usize, 5, 4][..], 1usize), (&[4, 6, 5, 3][..], 1), (&[4, 6, 5, 3][..], 7)]
        {
            let mlp = random_mlp(sizes, act, seed);
            let xs = random_xs(batch, sizes[0], seed + 10);
            let n_out = sizes[sizes.len() - 1];
            let ys: Vec<usize> = (0..batch).map(|i| (i + seed as usize) % n_out).collect();
            let ts = random_xs(batch, n_out, seed + 20);
            for (loss, targets) in [
                (Loss::CrossEntropy, Targets::Classes(&ys)),
                (Loss::Mse, Targets::Values(ts.view())),
            ] {
                for lambda in [1e-3, 0.1, 3.0] {
                    for scope in [CurvatureScope::Layerwise, CurvatureScope::FullNetwork] {
                        let mut opt =
                            esso(EssoConfig { scope, ..EssoConfig::absolute(0.1, lambda) });
                        let (_, g, d) = opt.direction(&mlp, &xs, targets, loss).unwrap();
                        let gd = g.dot(&d);
                        assert!(g.norm() > 0.0);
                        assert!(
                            gd < 0.0,
                            "{act} {sizes:?} B={batch} {loss} λ={lambda} {scope:?}: gᵀd = {gd}"
                        );
                        n_checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(n_checked, 108);
}

/// Index of W[i, j] (j < n_in) or b_i (j = n_in) in the canonical order of one layer.
fn param_idx(i: usize, j: usize, n_in: usize, n_out: usize) -> usize {
    if j < n_in { i * n_in + j } else { n_out * n_in + i }
}

#[test]
fn one_layer_step_equals_dense_absolute_newton() {
    let (n_in, n_out) = (3, 4);
    let mlp = random_mlp(&[n_in, n_out], Activation::Tanh, 5);
    let x = array![0.7, -1.2, 0.4];
    let y = 2;
    // Dense H = (x̃ x̃ᵀ) ⊗ (diag(p) − p pᵀ), in the canonical order, built by hand.
    let z = mlp.forward(&x).unwrap().logits().clone();
    let p = esso_core::softmax(&z);
    let x_tilde = [x[0], x[1], x[2], 1.0];
    let n = n_out * (n_in + 1);
    let mut h = Array2::zeros((n, n));
    for i in 0..n_out {
        for j in 0..=n_in {
            for k in 0..n_out {
                for m in 0..=n_in {
                    let hz = if i == k { p[i] - p[i] * p[i] } else { -p[i] * p[k] };
                    h[[param_idx(i, j, n_in, n_out), param_idx(k, m, n_in, n_out)]] =
                        x_tilde[j] * x_tilde[m] * hz;
                }
            }
        }
    }
    // g = (p − e_y) x̃ᵀ.
    let mut g = vec![0.0; n];
    for i in 0..n_out {
        for j in 0..=n_in {
            g[param_idx(i, j, n_in, n_out)] = (p[i] - f64::from(u8::from(i == y))) * x_tilde[j];
        }
    }
    // The hand-built H agrees with finite differences of the gradient.
    let fd = fd_hessian(&mlp, &x, Target::Class(y), Loss::CrossEntropy);
    assert!((&fd - &h).iter().all(|v| v.abs() < 1e-8));

    let xs = x.clone().insert_axis(ndarray::Axis(0));
    for (kind, lambda) in [
        (SpectralKind::Absolute, 0.05),
        (SpectralKind::Absolute, 1.0),
        (SpectralKind::Power { alpha: 0.5 }, 0.2),
        (SpectralKind::Floor, 0.01),
    ] {
        let f = |e: f64| match kind {
            SpectralKind::Absolute => 1.0 / (e.abs() + lambda),
            SpectralKind::Power { alpha } => (e.abs() + lambda).powf(-alpha),
            SpectralKind::Floor => 1.0 / e.abs().max(lambda),
            SpectralKind::Damped => 1.0 / (e + lambda),
        };
        let expected = common::dense_direction(&h, &g, f);
        let lr = 0.3;
        let config = EssoConfig { spectral: kind, ..EssoConfig::absolute(lr, lambda) };
        let mut opt = esso(config);
        let mut stepped = mlp.clone();
        let report =
            opt.step(&mut stepped, &xs, Targets::Classes(&[y]), Loss::CrossEntropy).unwrap();
        let moved: Vec<f64> =
            stepped.params().iter().zip(mlp.params().iter()).map(|(a, b)| (a - b) / lr).collect();
        let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = max_abs_diff(&moved, &expected);
        assert!(err < 1e-9 * scale.max(1.0), "{kind:?} λ={lambda}: error {err}");
        // Diagnostics: the block's eigenvalues are ‖x̃‖² × eig(diag(p) − p pᵀ) ≥ 0.
        let (dense_values, _) = common::jacobi_eigen(&h);
        let max_e = dense_values.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let spectrum = report.layers[0];
        assert!((spectrum.max_eigenvalue - max_e).abs() < 1e-12 * max_e);
        assert!(spectrum.min_eigenvalue.abs() < 1e-12, "the null vector 1 of diag(p) − ppᵀ");
        assert_eq!(spectrum.n_negative, 0);
        assert_eq!(spectrum.lambda, lambda);
        assert!(report.cos_to_neg_grad.unwrap() > 0.0);
        assert!(
            (report.step_norm - lr * expected.iter().map(|v| v * v).sum::<f64>().sqrt()).abs()
                < 1e-9
        );
    }
}

#[test]
fn layerwise_step_equals_dense_block_newton_on_a_deep_net() {
    // Each layer's block of the dense finite-difference Hessian, inverted on its own.
    let mlp = random_mlp(&[3, 4, 3, 2], Activation::Tanh, 8);
    let x = array![0.3, -0.8, 1.1];
    let target = Target::Class(1);
    let h = fd_hessian(&mlp, &x, target, Loss::CrossEntropy);
    let g = flat_gradient(&mlp, &x, target, Loss::CrossEntropy);
    let lambda = 0.1;
    let mut expected = vec![0.0; g.len()];
    let mut n_negative = Vec::new();
    for layer_idx in 0..mlp.n_layers() {
        let (start, end) =
            (mlp.params().layer_offset(layer_idx), mlp.params().layer_offset(layer_idx + 1));
        let block = h.slice_axis(ndarray::Axis(0), (start..end).into());
        let block = block.slice_axis(ndarray::Axis(1), (start..end).into()).to_owned();
        let d = common::dense_direction(&block, &g[start..end], |e| 1.0 / (e.abs() + lambda));
        expected[start..end].copy_from_slice(&d);
        let (values, _) = common::jacobi_eigen(&block);
        n_negative.push(values.iter().filter(|&&e| e < -1e-6).count());
    }
    let xs = x.insert_axis(ndarray::Axis(0));
    let mut opt = esso(EssoConfig::absolute(1.0, lambda));
    let (_, _, d) = opt.direction(&mlp, &xs, Targets::Classes(&[1]), Loss::CrossEntropy).unwrap();
    let err = max_abs_diff(d.to_flat().as_slice().unwrap(), &expected);
    assert!(err < 1e-6, "error {err}");
    let mut stepped = mlp.clone();
    let report = opt.step(&mut stepped, &xs, Targets::Classes(&[1]), Loss::CrossEntropy).unwrap();
    let got: Vec<usize> = report.layers.iter().map(|s| s.n_negative).collect();
    assert_eq!(got, n_negative);
    assert_eq!(got[2], 0, "the output block of cross-entropy is PSD");
}

#[test]
fn batch_direction_is_the_mean_of_sample_directions_for_any_thread_count() {
    let mlp = random_mlp(&[4, 6, 5, 3], Activation::Tanh, 4);
    let xs = random_xs(9, 4, 40);
    let ys: Vec<usize> = (0..9).map(|i| i % 3).collect();
    let config = EssoConfig::absolute(0.2, 0.5);
    let mut mean = vec![0.0; mlp.n_params()];
    for i in 0..9 {
        let x = xs.row(i).to_owned().insert_axis(ndarray::Axis(0));
        let (_, _, d) = esso(config)
            .direction(&mlp, &x, Targets::Classes(&ys[i..=i]), Loss::CrossEntropy)
            .unwrap();
        for (m, v) in mean.iter_mut().zip(d.iter()) {
            *m += v / 9.0;
        }
    }
    let mut runs = Vec::new();
    for n_threads in [1, 2, 5] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(n_threads).build().unwrap();
        let mut stepped = mlp.clone();
        let mut opt = esso(config);
        let (_, _, d) = pool
            .install(|| opt.direction(&mlp, &xs, Targets::Classes(&ys), Loss::CrossEntropy))
            .unwrap();
        assert!(max_abs_diff(d.to_flat().as_slice().unwrap(), &mean) < 1e-14);
        pool.install(|| opt.step(&mut stepped, &xs, Targets::Classes(&ys), Loss::CrossEntropy))
            .unwrap();
        runs.push(stepped.params().iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }
    assert_eq!(runs[0], runs[1]);
    assert_eq!(runs[0], runs[2]);
}

#[test]
fn input_norm_lambda_scaling_follows_the_documented_formula() {
    let mlp = random_mlp(&[3, 4, 2], Activation::Tanh, 6);
    let xs = random_xs(4, 3, 60);
    let ys = [0, 1, 1, 0];
    let (lambda, rho) = (0.5, 0.9);
    let config = EssoConfig {
        lambda_scaling: LambdaScaling::InputNorm { decay: rho },
        ..EssoConfig::absolute(0.1, lambda)
    };
    let mut opt = esso(config);
    let mut net = mlp.clone();
    let mut m = [0.0; 2];
    for t in 1..=3 {
        // x̄_l from the pre-step weights.
        let mut mean_norm = [0.0; 2];
        for i in 0..4 {
            let fwd = net.forward(&xs.row(i)).unwrap();
            for (l, v) in mean_norm.iter_mut().enumerate() {
                *v += fwd.layer_input_norm_sq(l) / 4.0;
            }
        }
        let report = opt.step(&mut net, &xs, Targets::Classes(&ys), Loss::CrossEntropy).unwrap();
        for l in 0..2 {
            m[l] = rho * m[l] + (1.0 - rho) * mean_norm[l];
            let expected = lambda * m[l] / (1.0 - rho.powi(t));
            assert!(
                (report.layers[l].lambda - expected).abs() < 1e-12 * expected,
                "t={t} layer {l}"
            );
        }
    }
    assert!(report_lambdas_differ(&opt));
}

fn report_lambdas_differ(opt: &esso_optim::Esso) -> bool {
    match opt.state() {
        esso_optim::OptimizerState::Esso(s) => {
            let m = s.input_norm_mean().unwrap();
            (m[0] - m[1]).abs() > 1e-6
        }
        _ => false,
    }
}

#[test]
fn bad_esso_configs_name_the_field() {
    let cases: [(&str, &str); 6] = [
        (
            "kind = \"esso\"\nlr = 0.1\nlambda = 0.0\nspectral = \"absolute\"",
            "invalid value 0 for `lambda`: must be finite and > 0",
        ),
        (
            "kind = \"esso\"\nlr = -0.1\nlambda = 1.0\nspectral = \"absolute\"",
            "invalid value -0.1 for `lr`: must be finite and >= 0",
        ),
        (
            "kind = \"esso\"\nlr = 0.1\nlambda = 1.0\nspectral = { power = { alpha = 1.5 } }",
            "invalid value 1.5 for `alpha`: must be in (0, 1]",
        ),
        (
            "kind = \"esso\"\nlr = 0.1\nlambda = 1.0\nspectral = \"floor\"\nclip = -1.0",
            "invalid value -1 for `clip`: must be finite and > 0",
        ),
        (
            "kind = \"esso\"\nlr = 0.1\nlambda = 1.0\nspectral = \"absolute\"\nlambda_scaling = { kind = \"input_norm\", decay = 1.0 }",
            "invalid value 1 for `lambda_scaling.decay`: must be in [0, 1)",
        ),
        (
            "kind = \"esso\"\nlr = 0.1\nlambda = inf\nspectral = \"absolute\"",
            "invalid value inf for `lambda`: must be finite and > 0",
        ),
    ];
    for (text, message) in cases {
        let c: OptimizerConfig = toml::from_str(text).unwrap();
        assert_eq!(c.validate().unwrap_err().to_string(), message, "{text}");
        assert!(c.build().is_err());
    }
    let c: OptimizerConfig = toml::from_str(
        "kind = \"esso\"\nlr = 0.1\nlambda = 1.0\nspectral = \"absolute\"\nscope = \"full_network\"\nlambda_scaling = { kind = \"input_norm\", decay = 0.9 }",
    )
    .unwrap();
    assert!(matches!(c.validate(), Err(OptimError::IncompatibleOptions { .. })));
    // Method hyperparameters have no defaults.
    assert!(toml::from_str::<OptimizerConfig>("kind = \"esso\"\nlr = 0.1\nlambda = 1.0").is_err());
    let ok: OptimizerConfig =
        toml::from_str("kind = \"esso\"\nlr = 0.1\nlambda = 3.0\nspectral = \"absolute\"").unwrap();
    assert_eq!(ok, OptimizerConfig::Esso(EssoConfig::absolute(0.1, 3.0)));
    assert_eq!(ok.build().unwrap().name(), "esso");
}

#[test]
fn huge_learning_rate_diverges_and_keeps_the_network() {
    let mut mlp = random_mlp(&[3, 4, 2], Activation::Identity, 9);
    let xs = random_xs(3, 3, 90);
    let ts = random_xs(3, 2, 91);
    let mut opt = esso(EssoConfig::absolute(1e250, 1e-3));
    let mut losses = Vec::new();
    let err = loop {
        let before = mlp.clone();
        let state = opt.state();
        match opt.step(&mut mlp, &xs, Targets::Values(ts.view()), Loss::Mse) {
            Ok(r) => losses.push(r.loss),
            Err(e) => {
                assert_eq!(mlp, before);
                assert_eq!(opt.state(), state);
                break e;
            }
        }
        assert!(losses.len() < 10, "did not diverge");
    };
    let OptimError::Diverged { step, last_finite_loss, quantity } = err else {
        panic!("expected divergence, got {err}");
    };
    assert_eq!(step, losses.len() as u64);
    match quantity {
        NonFiniteQuantity::Loss => assert_eq!(last_finite_loss, losses.last().copied()),
        _ => assert!(last_finite_loss.unwrap().is_finite()),
    }
}

#[test]
fn full_network_step_equals_dense_full_newton() {
    let cases: [(&[usize], Activation, Loss, u64); 3] = [
        (&[3, 4, 3], Activation::Tanh, Loss::CrossEntropy, 11),
        (&[2, 3, 3, 2], Activation::Sigmoid, Loss::Mse, 12),
        (&[3, 4, 2], Activation::Softplus, Loss::CrossEntropy, 13),
    ];
    for (sizes, act, loss, seed) in cases {
        let mlp = random_mlp(sizes, act, seed);
        let xs = random_xs(1, sizes[0], seed + 1);
        let x = xs.row(0).to_owned();
        let n_out = sizes[sizes.len() - 1];
        let ts = random_xs(1, n_out, seed + 2);
        let (target, targets) = match loss {
            Loss::CrossEntropy => (Target::Class(1), Targets::Classes(&[1])),
            Loss::Mse => (Target::Values(ts.row(0)), Targets::Values(ts.view())),
        };
        let h = fd_hessian(&mlp, &x, target, loss);
        let g = flat_gradient(&mlp, &x, target, loss);
        let (values, _) = common::jacobi_eigen(&h);
        let scale = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let dense_negative = values.iter().filter(|&&e| e < -1e-6 * scale).count();
        for lambda in [0.05, 1.0] {
            let expected = common::dense_direction(&h, &g, |e| 1.0 / (e.abs() + lambda));
            let config = EssoConfig {
                scope: CurvatureScope::FullNetwork,
                ..EssoConfig::absolute(0.5, lambda)
            };
            let mut opt = esso(config);
            let (_, _, d) = opt.direction(&mlp, &xs, targets, loss).unwrap();
            let err = max_abs_diff(d.to_flat().as_slice().unwrap(), &expected);
            let size = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(err < 1e-6 * size.max(1.0), "{sizes:?} {act} {loss} λ={lambda}: error {err}");
            // It differs from the layer-wise step (cross-layer curvature matters).
            let (_, _, d_layer) = esso(EssoConfig::absolute(0.5, lambda))
                .direction(&mlp, &xs, targets, loss)
                .unwrap();
            assert!(max_abs_diff(d_layer.to_flat().as_slice().unwrap(), &expected) > 1e-4);
            let mut stepped = mlp.clone();
            let report = opt.step(&mut stepped, &xs, targets, loss).unwrap();
            let network = report.network.unwrap();
            assert_eq!(network.n_negative, dense_negative, "{sizes:?} {act} {loss}");
            let dense_max = values.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
            assert!((network.max_eigenvalue - dense_max).abs() < 1e-6 * scale);
        }
    }
}

#[test]
fn full_scope_is_configurable() {
    let c: OptimizerConfig = toml::from_str(
        "kind = \"esso\"\nlr = 0.1\nlambda = 1.0\nspectral = \"absolute\"\nscope = \"full_network\"",
    )
    .unwrap();
    let OptimizerConfig::Esso(e) = c else { panic!("esso") };
    assert_eq!(e.scope, CurvatureScope::FullNetwork);
    assert!(c.build().is_ok());
}

#[test]
fn jacobi_reconstructs() {
    let a = ndarray::array![[2.0, 1.0, 0.5], [1.0, -1.0, 0.3], [0.5, 0.3, 0.7]];
    let (values, v) = common::jacobi_eigen(&a);
    let rebuilt = v.dot(&Array2::from_diag(&ndarray::Array1::from(values))).dot(&v.t());
    assert!((rebuilt - &a).iter().all(|x| x.abs() < 1e-12));
}

#[test]
fn schedule_scales_the_step_and_damped_refuses_a_non_positive_shift() {
    let mlp = random_mlp(&[3, 5, 3], Activation::Tanh, 21);
    let xs = random_xs(1, 3, 210);
    let config = EssoConfig {
        schedule: esso_optim::Schedule { warmup_steps: 4, decay: esso_optim::Decay::Constant },
        ..EssoConfig::absolute(0.4, 1.0)
    };
    let mut opt = esso(config);
    let mut net = mlp.clone();
    for t in 0..3u32 {
        let (_, _, d) =
            opt.direction(&net, &xs, Targets::Classes(&[0]), Loss::CrossEntropy).unwrap();
        let before = net.clone();
        let r = opt.step(&mut net, &xs, Targets::Classes(&[0]), Loss::CrossEntropy).unwrap();
        let eta = 0.4 * f64::from(t + 1) / 4.0;
        assert_eq!(r.learning_rate, eta);
        let moved: Vec<f64> =
            net.params().iter().zip(before.params().iter()).map(|(a, b)| a - b).collect();
        let expected: Vec<f64> = d.iter().map(|v| eta * v).collect();
        assert!(max_abs_diff(&moved, &expected) < 1e-15);
    }
    // The damped function needs e + λ > 0 on every block: with a tiny λ a tanh net with
    // negative curvature refuses the step and leaves the network as it was.
    let mut found = false;
    for seed in 0..20 {
        let mlp = random_mlp(&[3, 6, 3], Activation::Tanh, 300 + seed);
        let xs = random_xs(1, 3, 400 + seed);
        let config =
            EssoConfig { spectral: SpectralKind::Damped, ..EssoConfig::absolute(0.1, 1e-6) };
        let mut opt = esso(config);
        let mut net = mlp.clone();
        match opt.step(&mut net, &xs, Targets::Classes(&[2]), Loss::CrossEntropy) {
            Err(OptimError::Hessian(esso_hessian::HessianError::NonPositiveShift { .. })) => {
                assert_eq!(net, mlp);
                assert_eq!(opt.n_steps(), 0);
                found = true;
                break;
            }
            Ok(r) => assert!(r.layers.iter().all(|l| l.min_eigenvalue + 1e-6 > 0.0)),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(found, "no sample with negative curvature in 20 tries");
}

//! SGD, momentum, Nesterov, Adam and AdamW against updates computed here with plain
//! arithmetic on a one-layer linear least-squares problem.
#![allow(clippy::unwrap_used)]

use esso_core::{Activation, Dense, Loss, Mlp, Targets};
use esso_optim::{
    AdamConfig, Decay, NonFiniteQuantity, OptimError, OptimizerConfig, Schedule, SgdConfig,
};
use ndarray::{Array2, array};

/// θ = (w0, w1, b) of z = w0 x0 + w1 x1 + b; loss ½(z − t)², averaged over the batch.
type Theta = [f64; 3];

const XS: [[f64; 2]; 3] = [[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0]];
const TS: [f64; 3] = [1.0, -0.5, 0.25];
const THETA0: Theta = [0.3, -0.2, 0.1];
const N_STEPS: usize = 4;
/// Plain arithmetic and esso's loops may round differently; 1e-12 is far below any update.
const TOL: f64 = 1e-12;

fn grad(theta: Theta) -> (f64, Theta) {
    let n = XS.len() as f64;
    let (mut loss, mut g) = (0.0, [0.0; 3]);
    for (x, t) in XS.iter().zip(TS) {
        let r = theta[0] * x[0] + theta[1] * x[1] + theta[2] - t;
        loss += 0.5 * r * r / n;
        g[0] += r * x[0] / n;
        g[1] += r * x[1] / n;
        g[2] += r / n;
    }
    (loss, g)
}

fn mlp_at(theta: Theta) -> Mlp {
    let layer = Dense::new(array![[theta[0], theta[1]]], array![theta[2]]).unwrap();
    Mlp::from_layers(vec![layer], Activation::Identity).unwrap()
}

fn theta_of(mlp: &Mlp) -> Theta {
    let flat = mlp.params().to_flat();
    [flat[0], flat[1], flat[2]]
}

/// Runs `N_STEPS` steps of `config` and returns (loss before, θ after) per step.
fn run(config: &OptimizerConfig) -> Vec<(f64, Theta)> {
    let xs = Array2::from_shape_fn((3, 2), |(i, j)| XS[i][j]);
    let ts = Array2::from_shape_fn((3, 1), |(i, _)| TS[i]);
    let mut mlp = mlp_at(THETA0);
    let mut opt = config.build().unwrap();
    (0..N_STEPS)
        .map(|k| {
            let report = opt.step(&mut mlp, &xs, Targets::Values(ts.view()), Loss::Mse).unwrap();
            assert_eq!(report.step, k as u64);
            assert_eq!(report.n_samples, 3);
            (report.loss, theta_of(&mlp))
        })
        .collect()
}

fn check(config: OptimizerConfig, expected: &[(f64, Theta)]) {
    let got = run(&config);
    for (k, ((loss, theta), (loss_ref, theta_ref))) in got.iter().zip(expected).enumerate() {
        assert!((loss - loss_ref).abs() < TOL, "{config:?} step {k}: loss {loss} vs {loss_ref}");
        for i in 0..3 {
            assert!(
                (theta[i] - theta_ref[i]).abs() < TOL,
                "{config:?} step {k} θ[{i}]: {} vs {}",
                theta[i],
                theta_ref[i]
            );
        }
    }
}

fn sgd_reference(
    lr: f64,
    mu: f64,
    nesterov: bool,
    wd: f64,
    factor: impl Fn(usize) -> f64,
) -> Vec<(f64, Theta)> {
    let mut theta = THETA0;
    let mut v = [0.0; 3];
    let mut out = Vec::new();
    for k in 0..N_STEPS {
        let (loss, g) = grad(theta);
        let lr_k = lr * factor(k);
        for i in 0..3 {
            let gi = g[i] + wd * theta[i];
            v[i] = mu * v[i] + gi;
            let d = if nesterov { gi + mu * v[i] } else { v[i] };
            theta[i] -= lr_k * d;
        }
        out.push((loss, theta));
    }
    out
}

fn adam_reference(
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    wd: f64,
    decoupled: bool,
) -> Vec<(f64, Theta)> {
    let mut theta = THETA0;
    let (mut m, mut v) = ([0.0; 3], [0.0; 3]);
    let (mut b1t, mut b2t) = (1.0, 1.0);
    let mut out = Vec::new();
    for _ in 0..N_STEPS {
        let (loss, g) = grad(theta);
        b1t *= b1;
        b2t *= b2;
        let mut next = theta;
        for i in 0..3 {
            let gi = if decoupled { g[i] } else { g[i] + wd * theta[i] };
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let m_hat = m[i] / (1.0 - b1t);
            let v_hat = v[i] / (1.0 - b2t);
            next[i] -= lr * m_hat / (v_hat.sqrt() + eps);
            if decoupled {
                next[i] -= wd * theta[i];
            }
        }
        theta = next;
        out.push((loss, theta));
    }
    out
}

#[test]
fn plain_sgd_with_weight_decay_and_warmup() {
    let mut c = SgdConfig::plain(0.2);
    c.weight_decay = 0.05;
    c.schedule = Schedule { warmup_steps: 2, decay: Decay::Constant };
    let expected =
        sgd_reference(0.2, 0.0, false, 0.05, |k| if k < 2 { (k + 1) as f64 / 2.0 } else { 1.0 });
    check(OptimizerConfig::Sgd(c), &expected);
}

#[test]
fn heavy_ball_momentum() {
    let c = SgdConfig { momentum: 0.9, weight_decay: 0.01, ..SgdConfig::plain(0.1) };
    check(OptimizerConfig::Sgd(c), &sgd_reference(0.1, 0.9, false, 0.01, |_| 1.0));
}

#[test]
fn nesterov_momentum_with_step_decay() {
    let c = SgdConfig {
        momentum: 0.8,
        nesterov: true,
        schedule: Schedule { warmup_steps: 0, decay: Decay::Step { step_size: 2, gamma: 0.5 } },
        ..SgdConfig::plain(0.1)
    };
    let expected = sgd_reference(0.1, 0.8, true, 0.0, |k| if k < 2 { 1.0 } else { 0.5 });
    check(OptimizerConfig::Sgd(c), &expected);
    // Nesterov differs from heavy ball after the first step: the test can tell them apart.
    let heavy = sgd_reference(0.1, 0.8, false, 0.0, |k| if k < 2 { 1.0 } else { 0.5 });
    assert!((heavy[1].1[0] - expected[1].1[0]).abs() > 1e-4);
}

#[test]
fn adam_with_l2() {
    let c = AdamConfig { weight_decay: 0.1, ..AdamConfig::with_lr(0.05) };
    check(OptimizerConfig::Adam(c), &adam_reference(0.05, 0.9, 0.999, 1e-8, 0.1, false));
}

#[test]
fn adam_custom_betas() {
    let c = AdamConfig { beta1: 0.5, beta2: 0.9, eps: 1e-3, ..AdamConfig::with_lr(0.1) };
    check(OptimizerConfig::Adam(c), &adam_reference(0.1, 0.5, 0.9, 1e-3, 0.0, false));
}

#[test]
fn adamw_decoupled_decay() {
    let c = AdamConfig { weight_decay: 0.1, ..AdamConfig::with_lr(0.05) };
    check(OptimizerConfig::AdamW(c), &adam_reference(0.05, 0.9, 0.999, 1e-8, 0.1, true));
    // Decoupled and L2 decay give different iterates.
    let l2 = adam_reference(0.05, 0.9, 0.999, 1e-8, 0.1, false);
    let w = adam_reference(0.05, 0.9, 0.999, 1e-8, 0.1, true);
    assert!((l2[2].1[0] - w[2].1[0]).abs() > 1e-4);
}

#[test]
fn report_diagnostics_match_the_update() {
    let xs = array![[0.5, -1.0]];
    let ts = array![[1.0]];
    let mut mlp = mlp_at(THETA0);
    let mut opt = OptimizerConfig::Sgd(SgdConfig::plain(0.1)).build().unwrap();
    let r = opt.step(&mut mlp, &xs, Targets::Values(ts.view()), Loss::Mse).unwrap();
    let res: f64 = 0.3 * 0.5 + 0.2 + 0.1 - 1.0;
    let g_norm = (res * res * (0.25 + 1.0 + 1.0)).sqrt();
    assert!((r.grad_norm - g_norm).abs() < TOL);
    assert!((r.step_norm - 0.1 * g_norm).abs() < TOL);
    assert!((r.cos_to_neg_grad.unwrap() - 1.0).abs() < TOL);
    assert_eq!(r.learning_rate, 0.1);
    assert!(r.layers.is_empty());
}

#[test]
fn huge_learning_rate_diverges_and_keeps_the_network() {
    let xs = Array2::from_shape_fn((3, 2), |(i, j)| XS[i][j]);
    let ts = Array2::from_shape_fn((3, 1), |(i, _)| TS[i]);
    for config in [
        OptimizerConfig::Sgd(SgdConfig::plain(1e200)),
        OptimizerConfig::Sgd(SgdConfig { momentum: 0.9, ..SgdConfig::plain(1e200) }),
        OptimizerConfig::Adam(AdamConfig::with_lr(1e305)),
    ] {
        let mut mlp = mlp_at(THETA0);
        let mut opt = config.build().unwrap();
        let mut losses = Vec::new();
        let err = loop {
            let before = mlp.clone();
            let state_before = opt.state();
            match opt.step(&mut mlp, &xs, Targets::Values(ts.view()), Loss::Mse) {
                Ok(r) => losses.push(r.loss),
                Err(e) => {
                    assert_eq!(mlp, before, "{config:?}: network changed by the failed step");
                    assert_eq!(opt.state(), state_before, "{config:?}: state changed");
                    break e;
                }
            }
            assert!(losses.len() < 10, "{config:?} did not diverge");
        };
        match err {
            OptimError::Diverged { step, last_finite_loss, quantity } => {
                assert_eq!(step, losses.len() as u64);
                assert_eq!(opt.n_steps(), step);
                match quantity {
                    NonFiniteQuantity::Loss => assert_eq!(last_finite_loss, losses.last().copied()),
                    _ => assert!(last_finite_loss.unwrap().is_finite()),
                }
            }
            other => panic!("{config:?}: expected divergence, got {other}"),
        }
    }
}

#[test]
fn configs_parse_from_toml_and_reject_bad_values() {
    let c: OptimizerConfig = toml::from_str(
        r#"
kind = "sgd"
lr = 0.1
momentum = 0.9
nesterov = true
schedule = { warmup_steps = 10, decay = { kind = "cosine", total_steps = 100 } }
"#,
    )
    .unwrap();
    assert_eq!(c.kind(), "sgd");
    c.validate().unwrap();
    let c: OptimizerConfig =
        toml::from_str("kind = \"adamw\"\nlr = 1e-3\nweight_decay = 0.01").unwrap();
    assert_eq!(c.build().unwrap().name(), "adamw");
    assert!(toml::from_str::<OptimizerConfig>("kind = \"adam\"\nlr = 1e-3\nbeta3 = 0.5").is_err());
    for (text, message) in [
        ("kind = \"sgd\"\nlr = -0.1", "invalid value -0.1 for `lr`: must be finite and >= 0"),
        (
            "kind = \"sgd\"\nlr = 0.1\nmomentum = 1.0",
            "invalid value 1 for `momentum`: must be in [0, 1)",
        ),
        (
            "kind = \"adam\"\nlr = 0.1\nbeta2 = -0.1",
            "invalid value -0.1 for `beta2`: must be in [0, 1)",
        ),
        (
            "kind = \"adam\"\nlr = 0.1\neps = 0.0",
            "invalid value 0 for `eps`: must be finite and > 0",
        ),
        ("kind = \"adam\"\nlr = nan", "invalid value NaN for `lr`: must be finite and >= 0"),
    ] {
        let c: OptimizerConfig = toml::from_str(text).unwrap();
        assert_eq!(c.validate().unwrap_err().to_string(), message, "{text}");
        assert!(c.build().is_err());
    }
}

#[test]
fn wrong_state_kind_is_rejected() {
    let mut sgd = OptimizerConfig::Sgd(SgdConfig::plain(0.1)).build().unwrap();
    let adam = OptimizerConfig::Adam(AdamConfig::with_lr(0.1)).build().unwrap();
    assert!(matches!(sgd.load_state(adam.state()), Err(OptimError::StateMismatch { .. })));
}

/// Multi-layer networks and batch sizes 1 (the single-sample kernels: fused forward pass with
/// Σ θ², in-place rank-one SGD update, fused Adam pass) and 3 (the GEMM paths), for every
/// activation and both losses, against updates computed here from esso-core's independent
/// `Mlp::mean_gradient` with plain arithmetic. Widths 5 and 19 exercise the kernels' tails
/// (19 = 16 + 3 lanes).
mod multilayer {
    use super::*;
    use esso_core::{Init, Params};
    use esso_optim::StepReport;
    use rand::SeedableRng;

    /// Adam's per-element arithmetic with plain divisions; `None` moments are zeros.
    #[derive(Clone, Copy)]
    struct AdamRef {
        lr: f64,
        b1: f64,
        b2: f64,
        eps: f64,
        wd: f64,
        decoupled: bool,
    }

    /// Relative agreement: |a − b| ≤ tol · max(1, |b|).
    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    fn batch(
        n_in: usize,
        n_out: usize,
        b: usize,
        seed: usize,
    ) -> (Array2<f64>, Array2<f64>, Vec<usize>) {
        let xs = Array2::from_shape_fn((b, n_in), |(i, j)| {
            (((seed * 31 + i * n_in + j) as f64) * 0.731).sin() * 1.3
        });
        let ts =
            Array2::from_shape_fn((b, n_out), |(i, j)| (((seed + 3 * i + j) as f64) * 1.7).cos());
        let classes = (0..b).map(|i| (seed + 2 * i) % n_out).collect();
        (xs, ts, classes)
    }

    /// Runs 3 steps of `config` and of the reference on `sizes`; returns the largest
    /// relative differences of θ and of the reports seen.
    fn compare(
        config: &OptimizerConfig,
        adam: Option<AdamRef>,
        sgd_lr: f64,
        sizes: &[usize],
        act: Activation,
        loss: Loss,
        b: usize,
    ) -> (f64, f64) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
        let mut mlp = Mlp::new(sizes, act, Init::GlorotUniform, &mut rng).unwrap();
        let mut theta = mlp.params().to_flat().to_vec();
        let (mut m, mut v) = (vec![0.0; theta.len()], vec![0.0; theta.len()]);
        let mut opt = config.build().unwrap();
        let (mut worst_theta, mut worst_report) = (0.0f64, 0.0f64);
        for k in 0..3 {
            let (xs, ts, classes) = batch(sizes[0], *sizes.last().unwrap(), b, k);
            let targets = match loss {
                Loss::CrossEntropy => Targets::Classes(&classes),
                Loss::Mse => Targets::Values(ts.view()),
            };
            let (loss_ref, g) = mlp.mean_gradient(&xs, targets, loss).unwrap();
            let g = g.to_flat().to_vec();
            let mut update = vec![0.0; theta.len()];
            match adam {
                None => update.iter_mut().zip(&g).for_each(|(u, g)| *u = -sgd_lr * g),
                Some(a) => {
                    let t = (k + 1) as i32;
                    let (bias1, bias2) = (1.0 - a.b1.powi(t), 1.0 - a.b2.powi(t));
                    for i in 0..theta.len() {
                        let gi = if a.decoupled { g[i] } else { g[i] + a.wd * theta[i] };
                        m[i] = a.b1 * m[i] + (1.0 - a.b1) * gi;
                        v[i] = a.b2 * v[i] + (1.0 - a.b2) * gi * gi;
                        let step = a.lr * (m[i] / bias1) / ((v[i] / bias2).sqrt() + a.eps);
                        let decay = if a.decoupled { a.wd * theta[i] } else { 0.0 };
                        update[i] = -(step + decay);
                    }
                }
            }
            let report: StepReport = opt.step(&mut mlp, &xs, targets, loss).unwrap();
            let g_norm = g.iter().map(|g| g * g).sum::<f64>().sqrt();
            let u_norm = update.iter().map(|u| u * u).sum::<f64>().sqrt();
            let gu: f64 = g.iter().zip(&update).map(|(g, u)| g * u).sum();
            let diff = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-300);
            worst_report = worst_report
                .max(diff(report.loss, loss_ref))
                .max(diff(report.grad_norm, g_norm))
                .max(diff(report.step_norm, u_norm))
                .max(diff(report.cos_to_neg_grad.unwrap(), -gu / (g_norm * u_norm)));
            for (t, u) in theta.iter_mut().zip(&update) {
                *t += u;
            }
            for (got, want) in mlp.params().iter().zip(&theta) {
                worst_theta = worst_theta.max((got - want).abs() / want.abs().max(1.0));
            }
        }
        (worst_theta, worst_report)
    }

    #[test]
    fn sgd_and_adam_match_references_for_every_activation_loss_and_batch_size() {
        let adam = AdamRef { lr: 0.01, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.01, decoupled: false };
        let adamw = AdamRef { lr: 0.02, b1: 0.8, b2: 0.99, eps: 1e-6, wd: 0.05, decoupled: true };
        let cases = [
            (OptimizerConfig::Sgd(SgdConfig::plain(0.3)), None),
            (
                OptimizerConfig::Adam(AdamConfig {
                    weight_decay: 0.01,
                    ..AdamConfig::with_lr(0.01)
                }),
                Some(adam),
            ),
            (
                OptimizerConfig::AdamW(AdamConfig {
                    beta1: 0.8,
                    beta2: 0.99,
                    eps: 1e-6,
                    weight_decay: 0.05,
                    ..AdamConfig::with_lr(0.02)
                }),
                Some(adamw),
            ),
        ];
        let mut worst = (0.0f64, 0.0f64);
        for act in Activation::all() {
            for loss in [Loss::CrossEntropy, Loss::Mse] {
                for b in [1, 3] {
                    for sizes in [&[5, 7, 6, 3][..], &[19, 17, 4]] {
                        for (config, reference) in &cases {
                            let (t, r) = compare(config, *reference, 0.3, sizes, act, loss, b);
                            assert!(
                                t < 1e-14 && r < 1e-13,
                                "{config:?} {act} {loss:?} B = {b} {sizes:?}: θ {t:e}, report {r:e}"
                            );
                            worst = (worst.0.max(t), worst.1.max(r));
                        }
                    }
                }
            }
        }
        println!("largest differences: θ {:e}, report {:e} (relative)", worst.0, worst.1);
    }

    /// A network whose first weight is set to `value`.
    fn poisoned(value: f64) -> Mlp {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut mlp =
            Mlp::new(&[19, 6, 3], Activation::Tanh, Init::GlorotUniform, &mut rng).unwrap();
        mlp.params_mut().layers_mut()[0].weight_mut()[[2, 17]] = value;
        mlp
    }

    #[test]
    fn non_finite_parameters_are_a_typed_error_with_the_network_untouched() {
        let configs = [
            OptimizerConfig::Sgd(SgdConfig::plain(0.1)),
            OptimizerConfig::Sgd(SgdConfig { momentum: 0.9, ..SgdConfig::plain(0.1) }),
            OptimizerConfig::Adam(AdamConfig::with_lr(0.01)),
            OptimizerConfig::AdamW(AdamConfig { weight_decay: 0.1, ..AdamConfig::with_lr(0.01) }),
        ];
        for b in [1, 3] {
            let (xs, _, classes) = batch(19, 3, b, 1);
            for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                for config in &configs {
                    let mut mlp = poisoned(value);
                    let mut opt = config.build().unwrap();
                    let before = mlp.clone();
                    let state = opt.state();
                    let err =
                        opt.step(&mut mlp, &xs, Targets::Classes(&classes), Loss::CrossEntropy);
                    assert!(
                        matches!(err, Err(OptimError::Diverged { step: 0, .. })),
                        "{config:?} B = {b} θ = {value}: {err:?}"
                    );
                    // NaN ≠ NaN: compare the bits.
                    let bits = |p: &Params| p.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(mlp.params()), bits(before.params()), "{config:?} B = {b}");
                    assert_eq!(opt.state(), state);
                    assert_eq!(opt.n_steps(), 0);
                }
            }
        }
    }

    #[test]
    fn huge_but_finite_parameters_take_the_checked_path_with_the_same_step() {
        // Σ θ² overflows (θ = 1e200), so the in-place proof fails and the checked path runs;
        // the step is still θ − η g.
        for b in [1, 3] {
            let (xs, _, classes) = batch(19, 3, b, 2);
            let targets = Targets::Classes(&classes);
            let mut mlp = poisoned(1e200);
            let (_, g) = mlp.mean_gradient(&xs, targets, Loss::CrossEntropy).unwrap();
            let mut expected = mlp.params().clone();
            expected.axpy(-0.1, &g);
            let mut opt = OptimizerConfig::Sgd(SgdConfig::plain(0.1)).build().unwrap();
            opt.step(&mut mlp, &xs, targets, Loss::CrossEntropy).unwrap();
            for (a, e) in mlp.params().iter().zip(expected.iter()) {
                assert!(close(*a, *e, 1e-14), "B = {b}: {a} vs {e}");
            }
        }
    }

    #[test]
    fn steps_near_overflow_never_land_a_non_finite_parameter() {
        // θ = ±MAX in one weight and learning rates up to MAX: every step either succeeds
        // with finite parameters or is refused with the network untouched.
        let mut n_refused = 0;
        for b in [1, 3] {
            let (xs, ts, _) = batch(19, 3, b, 4);
            for value in [f64::MAX, -f64::MAX, 1e300, 1e150] {
                for lr in [1e-3, 1e300, 1e306, f64::MAX] {
                    for config in [
                        OptimizerConfig::Sgd(SgdConfig::plain(lr)),
                        OptimizerConfig::Adam(AdamConfig::with_lr(lr)),
                    ] {
                        let mut mlp = poisoned(value);
                        let before = mlp.clone();
                        let mut opt = config.build().unwrap();
                        match opt.step(&mut mlp, &xs, Targets::Values(ts.view()), Loss::Mse) {
                            Ok(_) => assert!(mlp.params().is_finite(), "{config:?} θ = {value}"),
                            Err(e) => {
                                assert!(e.is_divergence(), "{config:?}: {e}");
                                assert_eq!(mlp, before, "{config:?} θ = {value}");
                                n_refused += 1;
                            }
                        }
                        // Three steps told the next inputs: SGD at B = 1 fuses its update
                        // with the next forward pass, at B = 3 it updates in place; either
                        // way it carries a bound on max |θ| to the next step's in-place
                        // proof instead of summing θ².
                        let mut mlp = poisoned(value);
                        let mut opt = config.build().unwrap();
                        for k in 0..3 {
                            let before = mlp.clone();
                            let targets = Targets::Values(ts.view());
                            match opt.step_before(&mut mlp, &xs, targets, Loss::Mse, &xs) {
                                Ok(_) => assert!(mlp.params().is_finite(), "{config:?} {k}"),
                                Err(e) => {
                                    assert!(e.is_divergence(), "{config:?}: {e}");
                                    assert_eq!(mlp, before, "{config:?} θ = {value}, {k}");
                                    break;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(n_refused > 0, "no step was refused: the test does not reach overflow");
    }

    #[test]
    fn huge_learning_rate_diverges_at_batch_size_one_and_keeps_the_network() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        // Identity activation and MSE: the residual grows with θ, so the steps blow up.
        for config in [
            OptimizerConfig::Sgd(SgdConfig::plain(1e200)),
            OptimizerConfig::Adam(AdamConfig::with_lr(1e305)),
            OptimizerConfig::AdamW(AdamConfig { weight_decay: 1e300, ..AdamConfig::with_lr(1e3) }),
        ] {
            let sizes = [19, 6, 3];
            let mut mlp =
                Mlp::new(&sizes, Activation::Identity, Init::GlorotUniform, &mut rng).unwrap();
            let mut opt = config.build().unwrap();
            let mut n_ok = 0;
            let err = loop {
                let (xs, ts, _) = batch(19, 3, 1, n_ok);
                let before = mlp.clone();
                let state = opt.state();
                match opt.step(&mut mlp, &xs, Targets::Values(ts.view()), Loss::Mse) {
                    Ok(_) => n_ok += 1,
                    Err(e) => {
                        assert_eq!(mlp, before, "{config:?}");
                        assert_eq!(opt.state(), state, "{config:?}");
                        break e;
                    }
                }
                assert!(n_ok < 10, "{config:?} did not diverge");
            };
            assert!(
                matches!(err, OptimError::Diverged { step, .. } if step == n_ok as u64),
                "{config:?}: {err}"
            );
        }
    }
}

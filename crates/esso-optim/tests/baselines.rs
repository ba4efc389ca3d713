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

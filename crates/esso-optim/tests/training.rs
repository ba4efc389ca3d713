//! Training works: every optimiser reaches a stated test accuracy on seeded Gaussian blobs in a
//! few epochs, deterministically for a seed.
#![allow(clippy::unwrap_used)]

mod common;

use esso_core::{Loss, Targets};
use esso_optim::{
    AdamConfig, EssoConfig, Evaluator, LambdaScaling, OptimizerConfig, SgdConfig, TrainConfig,
    Trainer, train,
};

/// Trains a fresh 4-8-3 tanh net with `config` and returns the test accuracy per epoch.
fn accuracies(config: &OptimizerConfig, batch_size: usize, n_epochs: usize) -> Vec<f64> {
    let (tr, te) = common::train_test();
    let mut mlp = common::small_mlp(3);
    let mut opt = config.build().unwrap();
    let mut eval = Evaluator::new(&te.xs, Targets::Classes(&te.ys), Loss::CrossEntropy);
    let settings = TrainConfig { n_epochs, batch_size, seed: 5, shuffle: true };
    train(
        &mut mlp,
        opt.as_mut(),
        &tr.xs,
        Targets::Classes(&tr.ys),
        Loss::CrossEntropy,
        settings,
        &mut eval,
    )
    .unwrap();
    eval.history.iter().map(|e| e.accuracy.unwrap()).collect()
}

/// Chance is 1/3; the Bayes accuracy of these blobs is about 0.93.
const TARGET_ACCURACY: f64 = 0.85;

fn check_reaches(name: &str, config: OptimizerConfig, batch_size: usize, n_epochs: usize) {
    let acc = accuracies(&config, batch_size, n_epochs);
    let last = *acc.last().unwrap();
    eprintln!("{name}: test accuracy per epoch {acc:?}");
    assert!(last >= TARGET_ACCURACY, "{name}: final test accuracy {last} < {TARGET_ACCURACY}");
    assert_eq!(acc, accuracies(&config, batch_size, n_epochs), "{name}: not deterministic");
}

#[test]
fn sgd_trains() {
    check_reaches("sgd", OptimizerConfig::Sgd(SgdConfig::plain(0.1)), 1, 3);
}

#[test]
fn momentum_trains() {
    let c = SgdConfig { momentum: 0.9, ..SgdConfig::plain(0.05) };
    check_reaches("heavy ball", OptimizerConfig::Sgd(c), 8, 5);
    let c =
        SgdConfig { momentum: 0.9, nesterov: true, weight_decay: 1e-4, ..SgdConfig::plain(0.05) };
    check_reaches("nesterov", OptimizerConfig::Sgd(c), 8, 5);
}

#[test]
fn adam_trains() {
    check_reaches("adam", OptimizerConfig::Adam(AdamConfig::with_lr(0.01)), 8, 5);
    let c = AdamConfig { weight_decay: 1e-3, ..AdamConfig::with_lr(0.01) };
    check_reaches("adamw", OptimizerConfig::AdamW(c), 8, 5);
}

#[test]
fn trainer_counts_steps_and_partial_batches() {
    let (tr, _) = common::train_test();
    let trainer = Trainer::new(
        &tr.xs,
        Targets::Classes(&tr.ys),
        Loss::CrossEntropy,
        TrainConfig { n_epochs: 2, batch_size: 100, seed: 0, shuffle: true },
    )
    .unwrap();
    assert_eq!(trainer.n_batches_per_epoch(), 3);
    let mut mlp = common::small_mlp(0);
    let mut opt = OptimizerConfig::Sgd(SgdConfig::plain(0.1)).build().unwrap();
    let out = trainer.run(&mut mlp, opt.as_mut(), &mut esso_optim::NoObserver).unwrap();
    assert_eq!(out.progress.n_steps, 6);
    assert_eq!(opt.n_steps(), 6);
    assert!(
        Trainer::new(
            &tr.xs,
            Targets::Classes(&tr.ys[..10]),
            Loss::CrossEntropy,
            TrainConfig { n_epochs: 1, batch_size: 1, seed: 0, shuffle: false },
        )
        .is_err()
    );
}

#[test]
fn esso_absolute_batch_one_trains() {
    check_reaches("esso abs B=1", OptimizerConfig::Esso(EssoConfig::absolute(0.2, 1.0)), 1, 3);
}

#[test]
fn esso_averaged_batch_with_scaled_lambda_trains() {
    let c = EssoConfig {
        lambda_scaling: LambdaScaling::InputNorm { decay: 0.99 },
        ..EssoConfig::absolute(0.5, 0.2)
    };
    check_reaches("esso abs B=8 input-norm", OptimizerConfig::Esso(c), 8, 5);
}

#[test]
fn regression_targets_train_with_esso_and_adam() {
    // y = tanh(x · w*) for a fixed w*, learned by a 3-6-1 tanh net with the MSE loss.
    let (set, _) = common::train_test();
    let xs = set.xs.slice_axis(ndarray::Axis(1), (0..3).into()).to_owned();
    let w_star = [0.8, -0.5, 0.3];
    let ys = ndarray::Array2::from_shape_fn((xs.nrows(), 1), |(i, _)| {
        (0..3).map(|j| xs[[i, j]] * w_star[j]).sum::<f64>().tanh()
    });
    for config in [
        OptimizerConfig::Esso(EssoConfig::absolute(0.3, 1.0)),
        OptimizerConfig::Adam(AdamConfig::with_lr(0.01)),
    ] {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(2);
        let mut mlp = esso_core::Mlp::new(
            &[3, 6, 1],
            esso_core::Activation::Tanh,
            esso_core::Init::GlorotUniform,
            &mut rng,
        )
        .unwrap();
        let before = mlp.evaluate(&xs, Targets::Values(ys.view()), Loss::Mse).unwrap().mean_loss;
        let mut opt = config.build().unwrap();
        let settings = TrainConfig { n_epochs: 3, batch_size: 4, seed: 0, shuffle: true };
        let trainer = Trainer::new(&xs, Targets::Values(ys.view()), Loss::Mse, settings).unwrap();
        trainer.run(&mut mlp, opt.as_mut(), &mut esso_optim::NoObserver).unwrap();
        let after = mlp.evaluate(&xs, Targets::Values(ys.view()), Loss::Mse).unwrap().mean_loss;
        eprintln!("{}: mse {before} -> {after}", opt.name());
        assert!(after < 0.2 * before, "{}: mse {before} -> {after}", opt.name());
    }
}

#[test]
fn esso_whole_network_trains() {
    let c = EssoConfig {
        scope: esso_optim::CurvatureScope::FullNetwork,
        ..EssoConfig::absolute(0.2, 1.0)
    };
    check_reaches("esso abs full-network B=1", OptimizerConfig::Esso(c), 1, 3);
}

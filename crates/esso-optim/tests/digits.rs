//! Training on the embedded 8x8 digits (esso-data; pixels in [0, 1], the fixed file-order
//! split whose 450 test digits come from other writers): a small tanh MLP with ESSO (absolute,
//! B = 1) and the baselines. The default run uses a subset and a small net so that it stays
//! fast in a debug build; `ESSO_SLOW_TESTS=1` runs the full set with the 64-32-16-10 net of
//! the method note's sanity run.
#![allow(clippy::unwrap_used)]

use esso_core::{Activation, Init, Loss, Mlp, Targets};
use esso_optim::{
    AdamConfig, EssoConfig, Evaluator, OptimizerConfig, SgdConfig, TrainConfig, train,
};
use ndarray::Axis;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn slow() -> bool {
    std::env::var("ESSO_SLOW_TESTS").is_ok_and(|v| v == "1")
}

/// Trains and returns the test accuracy after every epoch.
fn run(
    config: &OptimizerConfig,
    sizes: &[usize],
    n_train: usize,
    batch_size: usize,
    n_epochs: usize,
) -> Vec<f64> {
    let digits = esso_data::digits().unwrap();
    let (train_set, test_set) = (digits.train(), digits.test());
    let idx: Vec<usize> = (0..n_train.min(train_set.n_samples())).collect();
    let xs = train_set.features().select(Axis(0), &idx);
    let ys: Vec<usize> = idx.iter().map(|&i| train_set.labels()[i]).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut mlp = Mlp::new(sizes, Activation::Tanh, Init::GlorotUniform, &mut rng).unwrap();
    let mut opt = config.build().unwrap();
    let mut eval = Evaluator::new(
        test_set.features(),
        Targets::Classes(test_set.labels()),
        Loss::CrossEntropy,
    );
    let settings = TrainConfig { n_epochs, batch_size, seed: 1, shuffle: true };
    train(
        &mut mlp,
        opt.as_mut(),
        &xs,
        Targets::Classes(&ys),
        Loss::CrossEntropy,
        settings,
        &mut eval,
    )
    .unwrap();
    eval.history.iter().map(|e| e.accuracy.unwrap()).collect()
}

#[test]
fn digits_training_reaches_the_stated_accuracy() {
    // (name, config, batch size, accuracy to reach fast / slow); chance is 0.1. Fast: 400
    // training digits, 64-16-10, 3 epochs. Slow: all 1347, 64-32-16-10, 10 epochs.
    let cases: [(&str, OptimizerConfig, usize, f64, f64); 4] = [
        ("esso abs B=1", OptimizerConfig::Esso(EssoConfig::absolute(0.2, 3.0)), 1, 0.80, 0.88),
        ("sgd", OptimizerConfig::Sgd(SgdConfig::plain(0.03)), 1, 0.80, 0.88),
        (
            "sgd nesterov",
            OptimizerConfig::Sgd(SgdConfig {
                momentum: 0.9,
                nesterov: true,
                ..SgdConfig::plain(0.02)
            }),
            8,
            0.80,
            0.88,
        ),
        ("adam", OptimizerConfig::Adam(AdamConfig::with_lr(0.01)), 8, 0.80, 0.88),
    ];
    let mut results = Vec::new();
    for (name, config, batch_size, fast_target, slow_target) in cases {
        let (acc, target) = if slow() {
            (run(&config, &[64, 32, 16, 10], 1347, batch_size, 10), slow_target)
        } else {
            (run(&config, &[64, 16, 10], 400, batch_size, 3), fast_target)
        };
        eprintln!("{name}: test accuracy per epoch {acc:?}");
        results.push((name, *acc.last().unwrap(), target));
    }
    for (name, last, target) in results {
        assert!(last >= target, "{name}: final test accuracy {last} < {target}");
    }
}

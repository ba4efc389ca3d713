//! Trains a small tanh MLP on seeded Gaussian blobs with ESSO (absolute Hessian, batch 1),
//! SGD with momentum and Adam, all from TOML configs, and prints the test accuracy per epoch.
//!
//! ```text
//! cargo run --release -p esso-optim --example train_blobs
//! ```
#![allow(clippy::unwrap_used)]

use esso_core::{Activation, Init, Loss, Mlp, Targets, standard_normal};
use esso_optim::{Evaluator, OptimizerConfig, TrainConfig, train};
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// `n` samples of three Gaussian blobs in 4 dimensions (centres 2·e_k, unit spread).
fn blobs(n: usize, seed: u64) -> (Array2<f64>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ys: Vec<usize> = (0..n).map(|i| i % 3).collect();
    let xs = Array2::from_shape_fn((n, 4), |(i, j)| {
        let centre = if j == ys[i] { 2.0 } else { 0.0 };
        centre + standard_normal(&mut rng)
    });
    (xs, ys)
}

const CONFIGS: [(&str, &str); 3] = [
    ("esso", "kind = \"esso\"\nlr = 0.2\nlambda = 1.0\nspectral = \"absolute\""),
    ("sgd + momentum", "kind = \"sgd\"\nlr = 0.02\nmomentum = 0.9"),
    ("adam", "kind = \"adam\"\nlr = 0.003"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (train_xs, train_ys) = blobs(600, 1);
    let (test_xs, test_ys) = blobs(300, 2);
    for (name, text) in CONFIGS {
        let config: OptimizerConfig = toml::from_str(text)?;
        let mut optimizer = config.build()?;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut mlp = Mlp::new(&[4, 16, 3], Activation::Tanh, Init::GlorotUniform, &mut rng)?;
        let mut eval = Evaluator::new(&test_xs, Targets::Classes(&test_ys), Loss::CrossEntropy);
        let settings = TrainConfig { n_epochs: 5, batch_size: 1, seed: 4, shuffle: true };
        let outcome = train(
            &mut mlp,
            optimizer.as_mut(),
            &train_xs,
            Targets::Classes(&train_ys),
            Loss::CrossEntropy,
            settings,
            &mut eval,
        )?;
        let accuracies: Vec<String> =
            eval.history.iter().map(|e| format!("{:.3}", e.accuracy.unwrap())).collect();
        println!(
            "{name:>15}: {} steps, test accuracy per epoch [{}]",
            outcome.progress.n_steps,
            accuracies.join(", ")
        );
    }
    Ok(())
}

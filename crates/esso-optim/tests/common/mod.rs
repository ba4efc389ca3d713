//! Shared test data: seeded Gaussian blobs.
#![allow(dead_code, clippy::unwrap_used)]

use esso_core::{Activation, Init, Mlp, standard_normal};
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A classification set: features (one row per sample) and class labels.
pub struct Set {
    pub xs: Array2<f64>,
    pub ys: Vec<usize>,
}

/// `n` samples of `n_classes` isotropic Gaussian blobs in `n_features` dimensions, standard
/// deviation `spread`. Class k has its centre at 2 along axis k mod n_features, signed by
/// k / n_features, so classes are separable up to the overlap `spread` creates.
pub fn blobs(n: usize, n_features: usize, n_classes: usize, spread: f64, seed: u64) -> Set {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut xs = Array2::zeros((n, n_features));
    let mut ys = Vec::with_capacity(n);
    for i in 0..n {
        let k = i % n_classes;
        ys.push(k);
        for j in 0..n_features {
            let centre = if j == k % n_features {
                if (k / n_features).is_multiple_of(2) { 2.0 } else { -2.0 }
            } else {
                0.0
            };
            xs[[i, j]] = centre + spread * standard_normal(&mut rng);
        }
    }
    Set { xs, ys }
}

/// Train and test blobs (4 features, 3 classes, spread 1): the Bayes accuracy is ≈ 0.85 (each pair of centres is 2√2 apart).
pub fn train_test() -> (Set, Set) {
    (blobs(240, 4, 3, 1.0, 1), blobs(150, 4, 3, 1.0, 2))
}

/// A seeded 4-8-3 tanh network.
pub fn small_mlp(seed: u64) -> Mlp {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Mlp::new(&[4, 8, 3], Activation::Tanh, Init::GlorotUniform, &mut rng).unwrap()
}

/// A smaller training set (60 samples) for loop-level tests.
pub fn blobs_small() -> (Set, Set) {
    (blobs(60, 4, 3, 1.0, 11), blobs(30, 4, 3, 1.0, 12))
}

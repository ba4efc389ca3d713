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

/// Train and test blobs (4 features, 3 classes, spread 0.8): the Bayes accuracy is ≈ 0.93
/// (each pair of centres is 2√2 apart, pairwise error Φ(−√2 / 0.8) ≈ 0.04).
pub fn train_test() -> (Set, Set) {
    (blobs(240, 4, 3, 0.8, 1), blobs(150, 4, 3, 0.8, 2))
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

/// Eigenvalues and eigenvectors (columns) of a symmetric matrix by cyclic Jacobi rotations:
/// an oracle independent of esso-hessian's eigensolver. Converges to ~1e-14 for the small
/// matrices of the tests.
pub fn jacobi_eigen(a: &Array2<f64>) -> (Vec<f64>, Array2<f64>) {
    let n = a.nrows();
    let mut a = a.clone();
    let mut v = Array2::<f64>::eye(n);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[[i, j]] * a[[i, j]])
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[[p, q]].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[[q, q]] - a[[p, p]]) / (2.0 * a[[p, q]]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[[k, p]], a[[k, q]]);
                    a[[k, p]] = c * akp - s * akq;
                    a[[k, q]] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[[p, k]], a[[q, k]]);
                    a[[p, k]] = c * apk - s * aqk;
                    a[[q, k]] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[[k, p]], v[[k, q]]);
                    v[[k, p]] = c * vkp - s * vkq;
                    v[[k, q]] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[[i, i]]).collect(), v)
}

/// −V f(Λ) Vᵀ g for a dense symmetric H = V Λ Vᵀ.
pub fn dense_direction(h: &Array2<f64>, g: &[f64], f: impl Fn(f64) -> f64) -> Vec<f64> {
    let (values, v) = jacobi_eigen(h);
    let n = g.len();
    let mut out = vec![0.0; n];
    for (k, &e) in values.iter().enumerate() {
        let proj: f64 = (0..n).map(|i| v[[i, k]] * g[i]).sum();
        for i in 0..n {
            out[i] -= v[[i, k]] * f(e) * proj;
        }
    }
    out
}

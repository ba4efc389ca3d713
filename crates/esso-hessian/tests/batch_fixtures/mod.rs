//! Fixtures of the batch_* suites: small random networks with a few samples, their
//! per-sample exact Hessians (FullHessian) and finite-difference oracles.

#![allow(clippy::unwrap_used, dead_code)]

use esso_core::{Activation, Init, Loss, Mlp, SecondOrderTrace, Target, Targets};
use esso_hessian::FullHessian;
use esso_hessian::reference::{FD_STEP, finite_difference_mean_hessian};
use ndarray::{Array1, Array2, ArrayRef2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Networks of the batch table (N = 43, 51, 76, 24 parameters).
pub const NETS: [&[usize]; 4] = [&[3, 4, 3], &[4, 5, 3, 2], &[3, 5, 4, 3], &[5, 4]];

/// A network and a batch of samples.
pub struct Batch {
    pub label: String,
    pub mlp: Mlp,
    pub loss: Loss,
    pub xs: Array2<f64>,
    pub classes: Vec<usize>,
    pub values: Array2<f64>,
}

impl Batch {
    pub fn targets(&self) -> Targets<'_> {
        match self.loss {
            Loss::CrossEntropy => Targets::Classes(&self.classes),
            Loss::Mse => Targets::Values(self.values.view()),
        }
    }

    pub fn target(&self, i: usize) -> Target<'_> {
        self.targets().get(i)
    }

    pub fn n_samples(&self) -> usize {
        self.xs.nrows()
    }

    /// (1/B) Σ_i FullHessian_i.to_dense(): the exact route sample by sample.
    pub fn dense_from_full(&self) -> Array2<f64> {
        let n = self.mlp.n_params();
        let mut sum = Array2::zeros((n, n));
        for i in 0..self.n_samples() {
            let fwd = self.mlp.forward(&self.xs.row(i)).unwrap();
            let mut so = SecondOrderTrace::new(&self.mlp);
            self.mlp.backward_second_order_into(&fwd, self.loss, self.target(i), &mut so).unwrap();
            sum += &FullHessian::new(&self.mlp, &fwd, &so).unwrap().to_dense();
        }
        sum / self.n_samples() as f64
    }

    /// The finite-difference Hessian of the mean loss: the independent oracle.
    pub fn dense_fd(&self) -> Array2<f64> {
        finite_difference_mean_hessian(&self.mlp, self.loss, &self.xs, self.targets(), FD_STEP)
            .unwrap()
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    esso_core::standard_normal(rng)
}

/// A seeded network with `n_samples` samples. For ReLU-like activations every sample is
/// redrawn until each hidden pre-activation is at least 0.05 from the kink (finite
/// differences never straddle it).
pub fn build_batch(
    sizes: &[usize],
    activation: Activation,
    loss: Loss,
    n_samples: usize,
    seed: u64,
) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut mlp = Mlp::new(sizes, activation, Init::GlorotNormal, &mut rng).unwrap();
    for layer in mlp.params_mut().layers_mut() {
        for b in layer.bias_mut().iter_mut() {
            *b = 0.3 * normal(&mut rng);
        }
        for w in layer.weight_mut().iter_mut() {
            *w *= 1.5;
        }
    }
    let n_out = mlp.n_outputs();
    let needs_margin = matches!(activation, Activation::Relu | Activation::LeakyRelu { .. });
    let mut xs = Array2::zeros((n_samples, mlp.n_inputs()));
    for i in 0..n_samples {
        for _ in 0..1000 {
            let x = Array1::from_shape_fn(mlp.n_inputs(), |_| normal(&mut rng));
            let fwd = mlp.forward(&x).unwrap();
            let margin = (0..mlp.n_layers() - 1)
                .flat_map(|l| fwd.pre_activation(l).to_vec())
                .fold(f64::INFINITY, |m, z| m.min(z.abs()));
            xs.row_mut(i).assign(&x);
            if !needs_margin || margin > 0.05 {
                break;
            }
        }
    }
    let classes = (0..n_samples).map(|i| (i + seed as usize) % n_out).collect();
    let values = Array2::from_shape_fn((n_samples, n_out), |_| normal(&mut rng));
    let label = format!("{sizes:?} {activation} {loss} B={n_samples} seed {seed}");
    Batch { label, mlp, loss, xs, classes, values }
}

/// Every net × activation × loss with `n_samples` samples.
pub fn table(n_samples: usize) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut seed = 7000;
    for sizes in NETS {
        for activation in Activation::all() {
            for loss in [Loss::CrossEntropy, Loss::Mse] {
                seed += 1;
                out.push(build_batch(sizes, activation, loss, n_samples, seed));
            }
        }
    }
    out
}

/// max|a − b| / max(max|b|, 1e-300).
pub fn rel_err<'a>(
    a: impl IntoIterator<Item = &'a f64>,
    b: impl IntoIterator<Item = &'a f64> + Clone,
) -> f64 {
    let scale = b.clone().into_iter().fold(1e-300f64, |m, v: &f64| m.max(v.abs()));
    a.into_iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Relative error of two matrices (max entry, relative to the reference's largest entry).
pub fn rel_err2(a: &ArrayRef2<f64>, b: &ArrayRef2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    rel_err(a.iter(), b.iter())
}

/// Spectral norm of a symmetric matrix from its eigenvalues.
pub fn spectral_norm(values: &Array1<f64>) -> f64 {
    values.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

//! Shared fixtures of the exactness suite: a seeded table of small networks × activations ×
//! losses, each with its dense finite-difference Hessian oracle.

#![allow(clippy::unwrap_used, dead_code)]

use esso_core::{Activation, ForwardTrace, Init, Loss, Mlp, SecondOrderTrace, Target};
use esso_hessian::reference::{FD_STEP, finite_difference_hessian};
use ndarray::{Array1, Array2, ArrayRef1, ArrayRef2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Relative tolerance the closed forms meet against the finite-difference oracle.
///
/// The oracle's own error is ≈ 1e-12 relative (fourth-order stencil at h = 1e-3);
/// the suite's worst observed error is printed by `worst_errors_are_reported`.
pub const FD_TOL: f64 = 1e-8;

/// Tolerance between two exact routes (no finite differences involved).
pub const EXACT_TOL: f64 = 1e-11;

/// The networks of the table: widths [n_0, …, n_L].
pub const NETS: [&[usize]; 5] = [&[4, 5, 3, 3], &[6, 8, 4], &[3, 7, 5, 4, 2], &[1, 1, 1], &[5, 4]];

/// One network at one sample with its traces and dense oracle.
pub struct Case {
    pub label: String,
    pub mlp: Mlp,
    pub loss: Loss,
    pub x: Array1<f64>,
    pub class: usize,
    pub values: Array1<f64>,
    pub forward: ForwardTrace,
    pub second: SecondOrderTrace,
    /// The symmetrised central finite-difference Hessian, N × N.
    pub fd: Array2<f64>,
}

impl Case {
    pub fn target(&self) -> Target<'_> {
        match self.loss {
            Loss::CrossEntropy => Target::Class(self.class),
            Loss::Mse => Target::Values(self.values.view()),
        }
    }

    pub fn n_hidden_units(&self) -> usize {
        self.mlp.n_hidden_units()
    }

    /// Hidden units with σ′(z) ≠ 0.
    pub fn n_active_hidden_units(&self) -> usize {
        (0..self.mlp.n_layers() - 1)
            .map(|l| self.second.slope(l).iter().filter(|&&s| s != 0.0).count())
            .sum()
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    esso_core::standard_normal(rng)
}

/// A case with a fixed seed. For ReLU-like activations the input is redrawn until every
/// hidden pre-activation is at least 0.05 from the kink, so that finite differences never
/// straddle it.
pub fn build_case(sizes: &[usize], activation: Activation, loss: Loss, seed: u64) -> Case {
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
    let class = (seed as usize) % n_out;
    let values = Array1::from_shape_fn(n_out, |_| normal(&mut rng));
    let needs_margin = matches!(activation, Activation::Relu | Activation::LeakyRelu { .. });
    let mut x = Array1::zeros(mlp.n_inputs());
    for _ in 0..1000 {
        x = Array1::from_shape_fn(mlp.n_inputs(), |_| normal(&mut rng));
        let fwd = mlp.forward(&x).unwrap();
        let margin = (0..mlp.n_layers() - 1)
            .flat_map(|l| fwd.pre_activation(l).to_vec())
            .fold(f64::INFINITY, |m, z| m.min(z.abs()));
        if !needs_margin || margin > 0.05 {
            break;
        }
    }
    let forward = mlp.forward(&x).unwrap();
    let mut second = SecondOrderTrace::new(&mlp);
    let target = match loss {
        Loss::CrossEntropy => Target::Class(class),
        Loss::Mse => Target::Values(values.view()),
    };
    mlp.backward_second_order_into(&forward, loss, target, &mut second).unwrap();
    let fd = finite_difference_hessian(&mlp, &x, loss, target, FD_STEP).unwrap();
    let label = format!("{sizes:?} {activation} {loss} seed {seed}");
    Case { label, mlp, loss, x, class, values, forward, second, fd }
}

/// The full table: every net × every activation × both losses.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let mut seed = 1000;
    for sizes in NETS {
        for activation in Activation::all() {
            for loss in [Loss::CrossEntropy, Loss::Mse] {
                seed += 1;
                out.push(build_case(sizes, activation, loss, seed));
            }
        }
    }
    out
}

/// max|a − b| / max(max|b|, floor): relative to the reference's scale.
pub fn rel_err<'a>(
    a: impl IntoIterator<Item = &'a f64>,
    b: impl IntoIterator<Item = &'a f64> + Clone,
    floor: f64,
) -> f64 {
    let scale = b.clone().into_iter().fold(floor, |m, v| m.max(v.abs()));
    a.into_iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Relative error of two matrices (max-entry, relative to the reference's largest entry).
pub fn rel_err2(a: &ArrayRef2<f64>, b: &ArrayRef2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    rel_err(a.iter(), b.iter(), 1e-12)
}

/// Relative error of two vectors.
pub fn rel_err1(a: &ArrayRef1<f64>, b: &ArrayRef1<f64>) -> f64 {
    assert_eq!(a.len(), b.len());
    rel_err(a.iter(), b.iter(), 1e-12)
}

/// Keeps the worst error seen and the case it came from.
#[derive(Default)]
pub struct Worst {
    pub err: f64,
    pub label: String,
}

impl Worst {
    /// Records `err` and asserts it is within `tol`.
    #[track_caller]
    pub fn check(&mut self, what: &str, case: &Case, err: f64, tol: f64) {
        assert!(err <= tol, "{what}: {} relative error {err:e} > {tol:e}", case.label);
        if err > self.err {
            self.err = err;
            self.label = format!("{what} on {}", case.label);
        }
    }
}

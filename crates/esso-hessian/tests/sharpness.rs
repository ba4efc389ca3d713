//! ε-sharpness and ρ-sharpness: constraints, monotonicity, the small-radius expansion
//! against the dense finite-difference Hessian, and brute-force maxima on tiny networks.

#![allow(clippy::unwrap_used)]

use esso_core::{Activation, Init, Loss, Mlp, Params, Targets};
use esso_hessian::HessianError;
use esso_hessian::reference::{FD_STEP, finite_difference_hessian};
use esso_hessian::sharpness::{
    EpsSharpnessOptions, RhoSharpnessOptions, eps_sharpness, rho_sharpness,
};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A network and a small dataset (inputs, classes and regression targets).
struct Fixture {
    label: String,
    mlp: Mlp,
    loss: Loss,
    xs: Array2<f64>,
    classes: Vec<usize>,
    values: Array2<f64>,
}

impl Fixture {
    fn targets(&self) -> Targets<'_> {
        match self.loss {
            Loss::CrossEntropy => Targets::Classes(&self.classes),
            Loss::Mse => Targets::Values(self.values.view()),
        }
    }

    fn eval(&self, params: &Params) -> f64 {
        let net = Mlp::from_params(params.clone(), self.mlp.activation()).unwrap();
        net.evaluate(&self.xs, self.targets(), self.loss).unwrap().mean_loss
    }

    /// θ + y.
    fn shifted(&self, y: &Params) -> Params {
        let mut p = self.mlp.params().clone();
        p.axpy(1.0, y);
        p
    }

    /// The mean dense Hessian (1/n) Σ H_fd(x_k).
    fn dense_hessian(&self) -> Array2<f64> {
        let n = self.mlp.n_params();
        let mut h = Array2::zeros((n, n));
        let targets = self.targets();
        for k in 0..self.xs.nrows() {
            let hk = finite_difference_hessian(
                &self.mlp,
                &self.xs.row(k),
                self.loss,
                targets.get(k),
                FD_STEP,
            )
            .unwrap();
            h += &hk;
        }
        h / self.xs.nrows() as f64
    }
}

/// A seeded fixture. For ReLU-like activations the samples are redrawn until every hidden
/// pre-activation is at least `margin` from the kink, so that small perturbations (and the
/// finite-difference stencil) stay on one linear piece.
fn fixture(
    sizes: &[usize],
    activation: Activation,
    loss: Loss,
    n_samples: usize,
    seed: u64,
) -> Fixture {
    let margin = 0.1;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut mlp = Mlp::new(sizes, activation, Init::GlorotNormal, &mut rng).unwrap();
    for layer in mlp.params_mut().layers_mut() {
        for b in layer.bias_mut().iter_mut() {
            *b = 0.3 * esso_core::standard_normal(&mut rng);
        }
    }
    let n_out = mlp.n_outputs();
    let needs_margin = matches!(activation, Activation::Relu | Activation::LeakyRelu { .. });
    let mut rows = Vec::new();
    while rows.len() < n_samples {
        let x = Array1::from_shape_fn(mlp.n_inputs(), |_| esso_core::standard_normal(&mut rng));
        let fwd = mlp.forward(&x).unwrap();
        let ok =
            (0..mlp.n_layers() - 1).all(|l| fwd.pre_activation(l).iter().all(|z| z.abs() > margin));
        if ok || !needs_margin {
            rows.push(x);
        }
    }
    let xs = Array2::from_shape_fn((n_samples, sizes[0]), |(i, j)| rows[i][j]);
    let classes = (0..n_samples).map(|i| (i + seed as usize) % n_out).collect();
    let values =
        Array2::from_shape_fn((n_samples, n_out), |_| esso_core::standard_normal(&mut rng));
    let label = format!("{sizes:?} {activation} {loss} seed {seed}");
    Fixture { label, mlp, loss, xs, classes, values }
}

/// Every activation × both losses on one architecture.
fn table(sizes: &[usize], n_samples: usize, seed0: u64) -> Vec<Fixture> {
    let mut out = Vec::new();
    let mut seed = seed0;
    for activation in Activation::all() {
        for loss in [Loss::CrossEntropy, Loss::Mse] {
            seed += 1;
            out.push(fixture(sizes, activation, loss, n_samples, seed));
        }
    }
    out
}

fn box_radius(theta: &Params, epsilon: f64) -> Vec<f64> {
    theta.iter().map(|t| epsilon * (t.abs() + 1.0)).collect()
}

#[test]
fn eps_box_holds_and_values_are_consistent() {
    for f in table(&[3, 4, 3], 6, 100) {
        for (epsilon, seed) in [(1e-3, None), (0.05, Some(7)), (0.5, Some(8))] {
            let options =
                EpsSharpnessOptions { epsilon, random_corner_seed: seed, ..Default::default() };
            let s = eps_sharpness(&f.mlp, f.loss, &f.xs, f.targets(), &options).unwrap();
            let r = box_radius(f.mlp.params(), epsilon);
            for (i, (y, r)) in s.perturbation.iter().zip(&r).enumerate() {
                assert!(y.abs() <= *r, "{}: |y_{i}| = {} > {r} (eps {epsilon})", f.label, y.abs());
            }
            // The reported losses are those of θ and θ + y, by an independent route.
            let l0 = f.eval(f.mlp.params());
            let l1 = f.eval(&f.shifted(&s.perturbation));
            assert!((s.loss - l0).abs() <= 1e-13 * (1.0 + l0), "{}", f.label);
            assert!((s.max_loss - l1).abs() <= 1e-13 * (1.0 + l1), "{}", f.label);
            assert!(s.max_loss > s.loss, "{}: no ascent at eps {epsilon}", f.label);
            let phi = 100.0 * (s.max_loss - s.loss) / (1.0 + s.loss);
            assert_eq!(s.sharpness, phi);
            assert!(s.steps >= 1 && s.steps <= options.steps, "{}", f.label);
            if seed.is_none() {
                assert_eq!(s.evaluations, 1 + s.steps, "{}", f.label);
            } else {
                // θ, then one start from 0 and one from a random corner.
                assert!(s.evaluations > s.steps && s.evaluations <= 2 + 2 * options.steps);
            }
            assert_eq!(s.epsilon, epsilon);
        }
    }
}

#[test]
fn eps_sharpness_is_deterministic_and_uses_the_random_corner() {
    let f = fixture(&[3, 5, 3], Activation::Tanh, Loss::CrossEntropy, 8, 3);
    let options =
        EpsSharpnessOptions { epsilon: 0.3, random_corner_seed: Some(11), ..Default::default() };
    let a = eps_sharpness(&f.mlp, f.loss, &f.xs, f.targets(), &options).unwrap();
    let b = eps_sharpness(&f.mlp, f.loss, &f.xs, f.targets(), &options).unwrap();
    assert_eq!(a, b);
    // The second start costs evaluations; it can only raise the result.
    let plain = EpsSharpnessOptions { random_corner_seed: None, ..options };
    let c = eps_sharpness(&f.mlp, f.loss, &f.xs, f.targets(), &plain).unwrap();
    assert!(a.evaluations > c.evaluations);
    assert!(a.max_loss >= c.max_loss);
    assert_eq!(a.from_random_corner, a.max_loss > c.max_loss);
}

/// For small ε the loss is linear in the box to first order: the maximiser is the corner
/// s = r ⊙ sign g and max − L = Σ r_i |g_i| + ½ sᵀHs + O(ε³).
#[test]
fn eps_sharpness_matches_the_corner_expansion() {
    let mut worst: f64 = 0.0;
    for f in table(&[3, 4, 3], 5, 200) {
        let h = f.dense_hessian();
        let (_, g) = f.mlp.mean_gradient(&f.xs, f.targets(), f.loss).unwrap();
        let g = g.to_flat();
        for epsilon in [1e-5, 1e-4] {
            let options = EpsSharpnessOptions { epsilon, ..Default::default() };
            let s = eps_sharpness(&f.mlp, f.loss, &f.xs, f.targets(), &options).unwrap();
            let r = box_radius(f.mlp.params(), epsilon);
            // sign(0) = 0: a parameter without gradient (a dead ReLU unit) stays at 0.
            let corner = Array1::from_shape_fn(g.len(), |i| {
                if g[i] == 0.0 { 0.0 } else { r[i] * g[i].signum() }
            });
            let linear: f64 = r.iter().zip(&g).map(|(r, g)| r * g.abs()).sum();
            let quadratic = 0.5 * corner.dot(&h.dot(&corner));
            let gain = s.max_loss - s.loss;
            let err = (gain - linear - quadratic).abs();
            // Third-order remainder (relative O(ε) to the quadratic term) plus rounding of
            // the two losses.
            let rel_quadratic = err / quadratic.abs();
            worst = worst.max(rel_quadratic);
            assert!(
                err <= 100.0 * epsilon * quadratic.abs() + 1e-14 * (1.0 + s.loss),
                "{} eps {epsilon}: gain {gain:e}, linear {linear:e}, quadratic {quadratic:e}, err {err:e}",
                f.label
            );
            let flat = s.perturbation.to_flat();
            assert_eq!(flat, corner, "{} eps {epsilon}: the ascent stops at the corner", f.label);
        }
    }
    eprintln!("eps expansion: worst |gain − linear − quadratic| / |quadratic| = {worst:e}");
}

/// The best loss over `points` perturbations of θ.
fn brute_force_max(f: &Fixture, points: impl Iterator<Item = Vec<f64>>) -> f64 {
    let mut y = Params::zeros_like(f.mlp.params());
    points.fold(f64::NEG_INFINITY, |best, flat| {
        y.copy_from_flat(&flat).unwrap();
        best.max(f.eval(&f.shifted(&y)))
    })
}

fn assert_reaches(f: &Fixture, what: &str, ascent: f64, brute: f64, steps: usize) {
    let gap = brute - ascent;
    assert!(
        gap <= 1e-12 * (1.0 + brute.abs()),
        "{} {what}: ascent {ascent} < brute force {brute} (gap {gap:e}, {steps} steps)",
        f.label
    );
}

/// On a network of 12 parameters the ascent (16 random corners) reaches at least the
/// maximum over all 4096 corners of the box and 1000 random interior points, even for ε = 0.3
/// where the box holds several local maxima.
#[test]
fn eps_sharpness_beats_exhaustive_corners() {
    for activation in Activation::all() {
        for loss in [Loss::CrossEntropy, Loss::Mse] {
            let f = fixture(&[2, 2, 2], activation, loss, 5, 300);
            let n = f.mlp.n_params();
            assert_eq!(n, 12);
            for epsilon in [1e-3, 0.05, 0.3] {
                let options = EpsSharpnessOptions {
                    epsilon,
                    random_corner_seed: Some(5),
                    random_corners: 16,
                    ..Default::default()
                };
                let s = eps_sharpness(&f.mlp, f.loss, &f.xs, f.targets(), &options).unwrap();
                let r = box_radius(f.mlp.params(), epsilon);
                let corners = (0u32..1 << n).map(|mask| {
                    r.iter()
                        .enumerate()
                        .map(|(i, &r)| if mask >> i & 1 == 1 { r } else { -r })
                        .collect()
                });
                let mut rng = ChaCha8Rng::seed_from_u64(99);
                let interior: Vec<Vec<f64>> = (0..1000)
                    .map(|_| {
                        r.iter()
                            .map(|&r| r * (2.0 * esso_core::uniform01(&mut rng) - 1.0))
                            .collect()
                    })
                    .collect();
                let brute = brute_force_max(&f, corners.chain(interior));
                assert_reaches(&f, &format!("eps {epsilon}"), s.max_loss, brute, s.steps);
            }
        }
    }
}

/// On a network of 17 parameters the plain ascent from y = 0 (no random start) reaches at
/// least the best of 3000 random corners and interior points, for ε in Keskar's range.
#[test]
fn eps_sharpness_beats_random_search() {
    for activation in Activation::all() {
        for loss in [Loss::CrossEntropy, Loss::Mse] {
            let f = fixture(&[2, 3, 2], activation, loss, 5, 300);
            assert_eq!(f.mlp.n_params(), 17);
            for epsilon in [5e-4, 1e-3, 0.01] {
                let options = EpsSharpnessOptions { epsilon, ..Default::default() };
                let s = eps_sharpness(&f.mlp, f.loss, &f.xs, f.targets(), &options).unwrap();
                let r = box_radius(f.mlp.params(), epsilon);
                let mut rng = ChaCha8Rng::seed_from_u64(99);
                let points: Vec<Vec<f64>> = (0..3000)
                    .map(|k| {
                        r.iter()
                            .map(|&r| {
                                if k % 2 == 0 {
                                    if rng.next_u64() & 1 == 1 { r } else { -r }
                                } else {
                                    r * (2.0 * esso_core::uniform01(&mut rng) - 1.0)
                                }
                            })
                            .collect()
                    })
                    .collect();
                let brute = brute_force_max(&f, points.into_iter());
                assert_reaches(&f, &format!("eps {epsilon}"), s.max_loss, brute, s.steps);
            }
        }
    }
}

#[test]
fn rho_ball_holds_and_multi_step_beats_one_step() {
    for f in table(&[3, 4, 3], 6, 400) {
        for rho in [1e-3, 0.05, 0.5, 3.0] {
            let options = RhoSharpnessOptions { rho, ..Default::default() };
            let s = rho_sharpness(&f.mlp, f.loss, &f.xs, f.targets(), &options).unwrap();
            assert!(
                s.perturbation.norm() <= rho,
                "{} rho {rho}: ‖y‖ = {}",
                f.label,
                s.perturbation.norm()
            );
            assert!(s.sharpness >= 0.0 && s.sharpness >= s.one_step, "{} rho {rho}", f.label);
            assert_eq!(s.sharpness, s.max_loss - s.loss);
            let l0 = f.eval(f.mlp.params());
            let l1 = f.eval(&f.shifted(&s.perturbation));
            assert!((s.loss - l0).abs() <= 1e-13 * (1.0 + l0), "{}", f.label);
            assert!((s.max_loss - l1).abs() <= 1e-13 * (1.0 + l1), "{}", f.label);
            // The one-step value is SAM's: y = ρ g/‖g‖.
            let (_, g) = f.mlp.mean_gradient(&f.xs, f.targets(), f.loss).unwrap();
            assert!((s.gradient_norm - g.norm()).abs() <= 1e-14 * g.norm());
            let mut sam = g.clone();
            sam.scale(rho / g.norm());
            let one = f.eval(&f.shifted(&sam)) - l0;
            assert!(
                (s.one_step - one).abs() <= 1e-12 * (1.0 + l0),
                "{} rho {rho}: one step {} vs {one}",
                f.label,
                s.one_step
            );
            assert!(s.steps <= options.steps && s.evaluations == 2 + s.steps);
        }
    }
}

/// For small ρ, S_ρ = ρ‖g‖ + ρ²/2 · ĝᵀHĝ + O(ρ³), both one-step and multi-step, with H the
/// dense finite-difference Hessian: the estimate of the quadratic coefficient
/// (S − ρ‖g‖)/(ρ²/2) converges to ĝᵀHĝ linearly in ρ.
#[test]
fn rho_sharpness_matches_the_second_order_expansion() {
    let mut worst: f64 = 0.0;
    for f in table(&[3, 4, 3], 5, 500) {
        let h = f.dense_hessian();
        let (_, g) = f.mlp.mean_gradient(&f.xs, f.targets(), f.loss).unwrap();
        let g = g.to_flat();
        let g_norm = g.dot(&g).sqrt();
        let u = &g / g_norm;
        let q = u.dot(&h.dot(&u));
        let mut previous: Option<(f64, f64)> = None;
        for rho in [4e-3, 2e-3, 1e-3] {
            let options = RhoSharpnessOptions { rho, ..Default::default() };
            let s = rho_sharpness(&f.mlp, f.loss, &f.xs, f.targets(), &options).unwrap();
            let coef_multi = (s.sharpness - rho * g_norm) / (0.5 * rho * rho);
            let coef_one = (s.one_step - rho * g_norm) / (0.5 * rho * rho);
            let (err_multi, err_one) = ((coef_multi - q).abs(), (coef_one - q).abs());
            worst = worst.max(err_multi.max(err_one) / (q.abs() + 1.0));
            // O(ρ): well below the coefficient itself at these radii.
            assert!(
                err_multi <= 0.05 * (q.abs() + 1.0) && err_one <= 0.05 * (q.abs() + 1.0),
                "{} rho {rho}: coefficient {coef_one:e} (one step), {coef_multi:e} (multi) vs ĝᵀHĝ = {q:e}",
                f.label
            );
            if let Some((prev_multi, prev_one)) = previous {
                // Halving ρ halves the error (up to rounding of the losses, ~1e-16/ρ²).
                let floor = 1e-8;
                assert!(err_multi <= 0.7 * prev_multi + floor, "{} rho {rho}", f.label);
                assert!(err_one <= 0.7 * prev_one + floor, "{} rho {rho}", f.label);
            }
            previous = Some((err_multi, err_one));
        }
    }
    eprintln!("rho expansion: worst coefficient error / (|ĝᵀHĝ| + 1) = {worst:e}");
}

/// The ascent on the ℓ2 ball reaches at least the best of many random points of the sphere.
#[test]
fn rho_sharpness_beats_brute_force() {
    for activation in Activation::all() {
        for loss in [Loss::CrossEntropy, Loss::Mse] {
            let f = fixture(&[2, 3, 2], activation, loss, 5, 600);
            for rho in [0.01, 0.2, 1.0] {
                let options = RhoSharpnessOptions { rho, ..Default::default() };
                let s = rho_sharpness(&f.mlp, f.loss, &f.xs, f.targets(), &options).unwrap();
                let mut rng = ChaCha8Rng::seed_from_u64(17);
                let points: Vec<Vec<f64>> = (0..3000)
                    .map(|_| {
                        let v: Vec<f64> = (0..f.mlp.n_params())
                            .map(|_| esso_core::standard_normal(&mut rng))
                            .collect();
                        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                        v.iter().map(|x| x * rho / norm).collect()
                    })
                    .collect();
                let brute = brute_force_max(&f, points.into_iter());
                assert_reaches(&f, &format!("rho {rho}"), s.max_loss, brute, s.steps);
            }
        }
    }
}

#[test]
fn zero_gradient_gives_zero_rho_sharpness_steps() {
    // MSE with targets equal to the outputs: g = 0 exactly, so no SAM direction exists.
    let f = fixture(&[3, 4, 2], Activation::Tanh, Loss::Mse, 4, 700);
    let values = f.mlp.logits_batch(&f.xs).unwrap();
    let s = rho_sharpness(
        &f.mlp,
        Loss::Mse,
        &f.xs,
        Targets::Values(values.view()),
        &Default::default(),
    )
    .unwrap();
    assert_eq!((s.gradient_norm, s.one_step, s.sharpness), (0.0, 0.0, 0.0));
    assert_eq!(s.perturbation, Params::zeros_like(f.mlp.params()));
}

#[test]
fn bad_options_and_data_are_errors() {
    let f = fixture(&[3, 4, 3], Activation::Tanh, Loss::CrossEntropy, 4, 800);
    for epsilon in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let options = EpsSharpnessOptions { epsilon, ..Default::default() };
        let e = eps_sharpness(&f.mlp, f.loss, &f.xs, f.targets(), &options).unwrap_err();
        assert!(matches!(e, HessianError::InvalidParameter { name: "epsilon", .. }), "{e}");
    }
    for rho in [0.0, -0.1, f64::NAN] {
        let options = RhoSharpnessOptions { rho, ..Default::default() };
        let e = rho_sharpness(&f.mlp, f.loss, &f.xs, f.targets(), &options).unwrap_err();
        assert!(matches!(e, HessianError::InvalidParameter { name: "rho", .. }), "{e}");
    }
    for step_fraction in [0.0, 2.5, f64::NAN] {
        let options = RhoSharpnessOptions { step_fraction, ..Default::default() };
        let e = rho_sharpness(&f.mlp, f.loss, &f.xs, f.targets(), &options).unwrap_err();
        assert!(matches!(e, HessianError::InvalidParameter { name: "step_fraction", .. }), "{e}");
    }
    let empty = Array2::zeros((0, 3));
    let e = eps_sharpness(&f.mlp, f.loss, &empty, Targets::Classes(&[]), &Default::default())
        .unwrap_err();
    assert!(matches!(e, HessianError::Empty { .. }), "{e}");
    let e = rho_sharpness(&f.mlp, f.loss, &f.xs, Targets::Classes(&[0]), &Default::default())
        .unwrap_err();
    assert!(matches!(e, HessianError::Core(_)), "{e}");
    let e =
        rho_sharpness(&f.mlp, f.loss, &f.xs, Targets::Classes(&[0, 1, 2, 9]), &Default::default())
            .unwrap_err();
    assert!(matches!(e, HessianError::Core(_)), "{e}");
}

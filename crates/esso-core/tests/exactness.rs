//! esso-core against finite differences: gradients and the exact pre-activation Hessians H_l,
//! for every activation × loss on small random networks (f64).
#![allow(clippy::unwrap_used)]

use esso_core::{
    Activation, BackwardTrace, Dense, ForwardTrace, Init, Loss, Mlp, Params, SecondOrderTrace,
    Target, Targets,
};
use ndarray::{Array1, Array2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Central-difference step: truncation error O(ε²·ℓ‴) ≈ 1e-10 and rounding O(u/ε) ≈ 1e-11.
const EPS: f64 = 1e-5;
/// Relative tolerance reached by central differences at EPS on these nets.
const TOL: f64 = 1e-7;

const NETS: &[&[usize]] = &[&[4, 5, 3, 3], &[3, 7, 2], &[2, 3], &[5, 4, 4, 3, 2]];

fn random_vec(n: usize, scale: f64, rng: &mut ChaCha8Rng) -> Array1<f64> {
    (0..n).map(|_| scale * esso_core::standard_normal(rng)).collect()
}

/// A net with random (non-zero) biases so that no pre-activation sits on a ReLU kink.
fn random_net(sizes: &[usize], act: Activation, rng: &mut ChaCha8Rng) -> Mlp {
    let mut mlp = Mlp::new(sizes, act, Init::GlorotNormal, rng).unwrap();
    for layer in mlp.params_mut().layers_mut() {
        for b in layer.bias_mut().iter_mut() {
            *b = 0.3 * esso_core::standard_normal(rng);
        }
    }
    mlp
}

struct Case {
    mlp: Mlp,
    loss: Loss,
    x: Array1<f64>,
    class: usize,
    t: Array1<f64>,
}

impl Case {
    fn target(&self) -> Target<'_> {
        match self.loss {
            Loss::CrossEntropy => Target::Class(self.class),
            Loss::Mse => Target::Values(self.t.view()),
        }
    }

    fn loss_at(&self, mlp: &Mlp) -> f64 {
        let fwd = mlp.forward(&self.x).unwrap();
        self.loss.value(fwd.logits(), self.target()).unwrap()
    }
}

fn cases() -> Vec<Case> {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let mut out = Vec::new();
    for sizes in NETS {
        for act in Activation::all() {
            for loss in [Loss::CrossEntropy, Loss::Mse] {
                let mlp = random_net(sizes, act, &mut rng);
                let n_out = *sizes.last().unwrap();
                out.push(Case {
                    x: random_vec(sizes[0], 1.0, &mut rng),
                    class: (rng_index(&mut rng, n_out)),
                    t: random_vec(n_out, 1.0, &mut rng),
                    mlp,
                    loss,
                });
            }
        }
    }
    out
}

fn rng_index(rng: &mut ChaCha8Rng, n: usize) -> usize {
    (esso_core::uniform01(rng) * n as f64) as usize
}

fn max_abs(v: impl IntoIterator<Item = f64>) -> f64 {
    v.into_iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn label(case: &Case) -> String {
    format!("{:?} {} {}", case.mlp.sizes(), case.mlp.activation(), case.loss)
}

#[test]
fn gradient_matches_central_differences() {
    for case in cases() {
        let fwd = case.mlp.forward(&case.x).unwrap();
        let mut bwd = BackwardTrace::new(&case.mlp);
        case.mlp.backward_into(&fwd, case.loss, case.target(), &mut bwd).unwrap();
        let grad = bwd.gradient(&fwd).to_flat();

        let theta = case.mlp.params().to_flat();
        let mut probe = case.mlp.clone();
        let fd: Vec<f64> = (0..theta.len())
            .map(|i| {
                let mut t = theta.clone();
                t[i] += EPS;
                probe.params_mut().copy_from_flat(t.as_slice().unwrap()).unwrap();
                let plus = case.loss_at(&probe);
                t[i] -= 2.0 * EPS;
                probe.params_mut().copy_from_flat(t.as_slice().unwrap()).unwrap();
                let minus = case.loss_at(&probe);
                (plus - minus) / (2.0 * EPS)
            })
            .collect();
        let scale = max_abs(fd.iter().copied()).max(1e-3);
        let err = max_abs(grad.iter().zip(&fd).map(|(a, b)| a - b));
        assert!(err / scale < TOL, "{}: gradient relative error {:e}", label(&case), err / scale);

        // The second-order sweep gives the same gradient and loss.
        let mut so = SecondOrderTrace::new(&case.mlp);
        let l2 =
            case.mlp.backward_second_order_into(&fwd, case.loss, case.target(), &mut so).unwrap();
        assert_eq!(l2, bwd.loss());
        assert_eq!(so.gradient(&fwd).to_flat(), grad);
    }
}

/// δ_l as a function of z_l: run the network from layer `layer_idx` on, analytically.
fn delta_at(case: &Case, layer_idx: usize, z: &Array1<f64>) -> Array1<f64> {
    let mlp = &case.mlp;
    let act = mlp.layer_activation(layer_idx);
    if layer_idx + 1 == mlp.n_layers() {
        let mut d = Array1::zeros(z.len());
        case.loss.value_and_delta(z, case.target(), &mut d).unwrap();
        return d;
    }
    let a = z.mapv(|v| act.value(v));
    let tail: Vec<Dense> = mlp.layers()[layer_idx + 1..].to_vec();
    let sub = Mlp::from_layers(tail, mlp.activation()).unwrap();
    let fwd = sub.forward(&a).unwrap();
    let mut bwd = BackwardTrace::new(&sub);
    sub.backward_into(&fwd, case.loss, case.target(), &mut bwd).unwrap();
    let back = sub.layers()[0].weight().t().dot(bwd.delta(0));
    Array1::from_iter(z.iter().zip(&back).map(|(&z, &b)| act.derivative(z) * b))
}

#[test]
fn pre_activation_hessians_match_finite_differences() {
    for case in cases() {
        let fwd = case.mlp.forward(&case.x).unwrap();
        let mut so = SecondOrderTrace::new(&case.mlp);
        case.mlp.backward_second_order_into(&fwd, case.loss, case.target(), &mut so).unwrap();
        for layer_idx in 0..case.mlp.n_layers() {
            let z = fwd.pre_activation(layer_idx);
            // δ_l from the sweep equals the analytic tail evaluation.
            let d0 = delta_at(&case, layer_idx, z);
            let err = max_abs(d0.iter().zip(so.delta(layer_idx)).map(|(a, b)| a - b));
            assert!(err < 1e-14, "{} layer {layer_idx}: δ differs by {err:e}", label(&case));

            let n = z.len();
            let mut fd = Array2::zeros((n, n));
            for j in 0..n {
                let (mut zp, mut zm) = (z.clone(), z.clone());
                zp[j] += EPS;
                zm[j] -= EPS;
                let col = (delta_at(&case, layer_idx, &zp) - delta_at(&case, layer_idx, &zm))
                    / (2.0 * EPS);
                fd.column_mut(j).assign(&col);
            }
            let fd_sym = (&fd + &fd.t()) * 0.5;
            let h = so.pre_activation_hessian(layer_idx);
            let scale = max_abs(fd_sym.iter().copied()).max(1e-3);
            let err = max_abs(h.iter().zip(fd_sym.iter()).map(|(a, b)| a - b));
            assert!(
                err / scale < TOL,
                "{} layer {layer_idx}: H_l relative error {:e}",
                label(&case),
                err / scale
            );
            // H_l is exactly symmetric.
            assert_eq!(h, &h.t());
        }
    }
}

#[test]
fn curvature_terms_follow_their_definitions() {
    for case in cases() {
        let fwd = case.mlp.forward(&case.x).unwrap();
        let mut so = SecondOrderTrace::new(&case.mlp);
        case.mlp.backward_second_order_into(&fwd, case.loss, case.target(), &mut so).unwrap();
        let act = case.mlp.activation();
        for layer_idx in 0..case.mlp.n_layers() - 1 {
            let z = fwd.pre_activation(layer_idx);
            let back = case.mlp.layers()[layer_idx + 1].weight().t().dot(so.delta(layer_idx + 1));
            for i in 0..z.len() {
                assert!((so.slope(layer_idx)[i] - act.derivative(z[i])).abs() < 1e-15);
                let c = act.second_derivative(z[i]) * back[i];
                assert!((so.curvature(layer_idx)[i] - c).abs() < 1e-14, "{}", label(&case));
            }
            if act.is_piecewise_linear() {
                assert!(so.curvature(layer_idx).iter().all(|&c| c == 0.0));
            }
        }
    }
}

#[test]
fn batched_forward_and_mean_gradient_equal_per_sample_results() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for act in Activation::all() {
        let mlp = random_net(&[4, 6, 3], act, &mut rng);
        let n = 7;
        let xs = Array2::from_shape_fn((n, 4), |_| esso_core::standard_normal(&mut rng));
        let classes: Vec<usize> = (0..n).map(|i| i % 3).collect();
        let logits = mlp.logits_batch(&xs).unwrap();
        let mut mean_grad = Params::zeros_like(mlp.params());
        let mut mean_loss = 0.0;
        let mut fwd = ForwardTrace::new(&mlp);
        let mut bwd = BackwardTrace::new(&mlp);
        for (i, &class) in classes.iter().enumerate() {
            mlp.forward_into(&xs.row(i), &mut fwd).unwrap();
            let err = max_abs(logits.row(i).iter().zip(fwd.logits()).map(|(a, b)| a - b));
            assert!(err < 1e-13, "{act}: batched logits differ by {err:e}");
            mean_loss += mlp
                .backward_into(&fwd, Loss::CrossEntropy, Target::Class(class), &mut bwd)
                .unwrap()
                / n as f64;
            bwd.add_gradient_to(&fwd, 1.0 / n as f64, &mut mean_grad);
        }
        let (loss, grad) =
            mlp.mean_gradient(&xs, Targets::Classes(&classes), Loss::CrossEntropy).unwrap();
        assert!((loss - mean_loss).abs() < 1e-13);
        let err = max_abs(grad.iter().zip(mean_grad.iter()).map(|(a, b)| a - b));
        assert!(err < 1e-13, "{act}: mean gradient differs by {err:e}");
        let eval = mlp.evaluate(&xs, Targets::Classes(&classes), Loss::CrossEntropy).unwrap();
        assert!((eval.mean_loss - mean_loss).abs() < 1e-13);
        let correct = (0..n).filter(|&i| esso_core::argmax(&logits.row(i)) == classes[i]).count();
        assert_eq!(eval.accuracy, Some(correct as f64 / n as f64));
    }
}

#[test]
fn wrong_inputs_are_errors() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mlp = Mlp::new(&[3, 4, 2], Activation::Tanh, Init::GlorotUniform, &mut rng).unwrap();
    let err = mlp.forward(&Array1::zeros(5)).unwrap_err();
    assert_eq!(err.to_string(), "input has 5 entries but the network expects 3");
    let fwd = mlp.forward(&Array1::zeros(3)).unwrap();
    let mut so = SecondOrderTrace::new(&mlp);
    let err = mlp.backward_second_order_into(&fwd, Loss::CrossEntropy, Target::Class(2), &mut so);
    assert_eq!(err.unwrap_err().to_string(), "class target 2 is out of range for 2 outputs");
    let err = mlp.logits_batch(&Array2::zeros((2, 4))).unwrap_err();
    assert_eq!(err.to_string(), "batch has 4 columns but the network expects 3 inputs");
    assert!(Mlp::new(&[3], Activation::Tanh, Init::GlorotUniform, &mut rng).is_err());
    assert!(Mlp::new(&[3, 0, 2], Activation::Tanh, Init::GlorotUniform, &mut rng).is_err());
}

/// The weights for a seed are pinned: a change of RNG stream or sampler shows up here, and
/// the sampler uses only IEEE basic operations, so these bits hold on every platform.
#[test]
fn seeded_initialisation_is_pinned() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mlp = Mlp::new(&[3, 2], Activation::Tanh, Init::LecunNormal, &mut rng).unwrap();
    let bits: Vec<u64> = mlp.params().iter().take(3).map(|w| w.to_bits()).collect();
    assert_eq!(bits, PINNED_BITS, "weights: {:?}", mlp.params().to_flat());
}

const PINNED_BITS: [u64; 3] = [0x3ff0e5f53bdb141b, 0x3fb6cdd3fc0b91f9, 0x3fe2fa909ed442f3];

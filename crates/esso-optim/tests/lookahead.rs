//! `Optimizer::step_before` (plain SGD at B = 1 fuses its in-place update with the next
//! sample's forward pass) gives bit for bit the networks and reports of `Optimizer::step`,
//! including when the next step gets other inputs than announced, when the network changes
//! between steps, and through the trainer.
#![allow(clippy::unwrap_used)]

use esso_core::{Activation, Init, Loss, Mlp, Params, Targets};
use esso_optim::{Observer, OptimizerConfig, SgdConfig, TrainConfig, Trainer};
use ndarray::{Array2, s};
use rand::SeedableRng;

fn bits(p: &Params) -> Vec<u64> {
    p.iter().map(|v| v.to_bits()).collect()
}

/// A stream of `n` samples: inputs, class labels and regression targets.
fn stream(n_in: usize, n_out: usize, n: usize) -> (Array2<f64>, Vec<usize>, Array2<f64>) {
    let xs = Array2::from_shape_fn((n, n_in), |(i, j)| ((i * 31 + j * 7) as f64 * 0.37).sin());
    let classes = (0..n).map(|i| (i * 5) % n_out).collect();
    let values = Array2::from_shape_fn((n, n_out), |(i, j)| ((i + 2 * j) as f64 * 0.9).cos());
    (xs, classes, values)
}

/// Plain SGD and the layer-wise ESSO step (both fuse at B = 1).
fn configs() -> Vec<OptimizerConfig> {
    let esso = "kind = \"esso\"\nlr = 0.05\nlambda = 1.0\nspectral = \"absolute\"";
    vec![OptimizerConfig::Sgd(SgdConfig::plain(0.05)), toml::from_str(esso).unwrap()]
}

#[test]
fn step_before_equals_step_bit_for_bit() {
    // Widths with every tail length mix of the 16-lane kernels (21 = 16 + 5, 35, 3).
    let n = 12;
    for act in Activation::all() {
        for loss in [Loss::CrossEntropy, Loss::Mse] {
            for sizes in [&[21, 35, 16, 3][..], &[19, 17, 4], &[32, 16, 2]] {
                let (n_in, n_out) = (sizes[0], sizes[sizes.len() - 1]);
                let (xs, classes, values) = stream(n_in, n_out, n);
                let targets = |i: usize| match loss {
                    Loss::CrossEntropy => Targets::Classes(&classes[i..=i]),
                    Loss::Mse => Targets::Values(values.slice(s![i..=i, ..])),
                };
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
                let start = Mlp::new(sizes, act, Init::GlorotUniform, &mut rng).unwrap();
                for config in configs() {
                    let (mut opt_plain, mut opt_fused) =
                        (config.build().unwrap(), config.build().unwrap());
                    let (mut plain, mut fused) = (start.clone(), start.clone());
                    for i in 0..n {
                        let x = xs.slice(s![i..=i, ..]);
                        // Announce the true next sample, except at i = 4 (a wrong one, so the
                        // work done ahead must be thrown away) and at the end (the first sample).
                        let next = if i == 4 || i + 1 == n { 0 } else { i + 1 };
                        let next_xs = xs.slice(s![next..=next, ..]);
                        let a = opt_plain.step(&mut plain, &x, targets(i), loss).unwrap();
                        let b = opt_fused.step_before(&mut fused, &x, targets(i), loss, &next_xs);
                        let label = format!("{} {act} {loss:?} {sizes:?} step {i}", config.kind());
                        assert_eq!(b.unwrap(), a, "{label}");
                        assert_eq!(bits(fused.params()), bits(plain.params()), "{label}");
                        if i == 7 {
                            // The network changes between steps: what was computed ahead for
                            // the old weights must not be used.
                            for mlp in [&mut plain, &mut fused] {
                                mlp.params_mut().layers_mut()[0].weight_mut()[[1, 2]] += 0.25;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn generation_changes_with_mutable_access_only() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut mlp = Mlp::new(&[3, 4, 2], Activation::Tanh, Init::GlorotUniform, &mut rng).unwrap();
    let g0 = mlp.generation();
    let _ = mlp.params();
    assert_eq!(mlp.generation(), g0);
    let copy = mlp.clone();
    assert_eq!(copy.generation(), g0, "a clone has the same values");
    let _ = mlp.params_mut();
    assert_ne!(mlp.generation(), g0);
    assert_eq!(mlp, copy, "the stamp is not part of equality");
    let other = Mlp::new(&[3, 4, 2], Activation::Tanh, Init::GlorotUniform, &mut rng).unwrap();
    assert_ne!(other.generation(), mlp.generation());
    let json = serde_json::to_string(&mlp).unwrap();
    let back: Mlp = serde_json::from_str(&json).unwrap();
    assert_eq!(back, mlp);
    assert_ne!(back.generation(), mlp.generation(), "a deserialised network gets a fresh stamp");
}

/// Records every network the trainer shows.
struct Record(Vec<Vec<u64>>);

impl Observer for Record {
    fn on_step(
        &mut self,
        _: &esso_optim::Progress,
        _: &esso_optim::StepReport,
        mlp: &Mlp,
    ) -> esso_optim::Control {
        self.0.push(bits(mlp.params()));
        esso_optim::Control::Continue
    }
}

#[test]
fn trainer_at_batch_size_one_matches_a_loop_of_steps() {
    let (xs, classes, _) = stream(21, 3, 10);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let start = Mlp::new(&[21, 6, 3], Activation::Tanh, Init::GlorotUniform, &mut rng).unwrap();
    let config = OptimizerConfig::Sgd(SgdConfig::plain(0.1));
    let train = TrainConfig { n_epochs: 2, batch_size: 1, seed: 0, shuffle: false };
    let trainer = Trainer::new(&xs, Targets::Classes(&classes), Loss::CrossEntropy, train).unwrap();
    let mut trained = start.clone();
    let mut record = Record(Vec::new());
    trainer.run(&mut trained, config.build().unwrap().as_mut(), &mut record).unwrap();
    let mut stepped = start;
    let mut opt = config.build().unwrap();
    let mut k = 0;
    for _ in 0..2 {
        for i in 0..10 {
            let x = xs.slice(s![i..=i, ..]);
            opt.step(&mut stepped, &x, Targets::Classes(&classes[i..=i]), Loss::CrossEntropy)
                .unwrap();
            assert_eq!(record.0[k], bits(stepped.params()), "step {k}");
            k += 1;
        }
    }
    assert_eq!(record.0.len(), 20);
}

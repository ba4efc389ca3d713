//! Checkpoint round trip: save mid-run (JSON), resume, finish: bit-identical parameters to an
//! uninterrupted run, for every optimiser.
#![allow(clippy::unwrap_used)]

mod common;

use esso_core::{Loss, Mlp, Targets};
use esso_optim::{
    AdamConfig, Checkpoint, Control, EssoConfig, LambdaScaling, NoObserver, Observer,
    OptimizerConfig, Progress, SgdConfig, StepReport, Termination, TrainConfig, Trainer,
};

/// Stops the loop after `stop_after` steps.
struct StopAfter(u64);

impl Observer for StopAfter {
    fn on_step(&mut self, progress: &Progress, _report: &StepReport, _mlp: &Mlp) -> Control {
        if progress.n_steps >= self.0 { Control::Stop } else { Control::Continue }
    }
}

fn bits(mlp: &Mlp) -> Vec<u64> {
    mlp.params().iter().map(|v| v.to_bits()).collect()
}

fn check_round_trip(config: &OptimizerConfig, batch_size: usize) {
    let (tr, _) = common::blobs_small();
    let settings = TrainConfig { n_epochs: 3, batch_size, seed: 9, shuffle: true };
    let trainer =
        Trainer::new(&tr.xs, Targets::Classes(&tr.ys), Loss::CrossEntropy, settings).unwrap();

    // Uninterrupted.
    let mut mlp_a = common::small_mlp(4);
    let mut opt_a = config.build().unwrap();
    let out_a = trainer.run(&mut mlp_a, opt_a.as_mut(), &mut NoObserver).unwrap();
    assert_eq!(out_a.termination, Termination::Completed);

    // Interrupted mid-epoch, saved to JSON, resumed by fresh objects.
    let stop_at = trainer.n_batches_per_epoch() as u64 + 3;
    let mut mlp_b = common::small_mlp(4);
    let mut opt_b = config.build().unwrap();
    let out_b = trainer.run(&mut mlp_b, opt_b.as_mut(), &mut StopAfter(stop_at)).unwrap();
    assert_eq!(out_b.termination, Termination::Stopped);
    assert_eq!(out_b.progress, Progress { epoch: 1, batch_idx: 3, n_steps: stop_at });
    let json =
        Checkpoint { mlp: mlp_b, optimizer: opt_b.state(), progress: out_b.progress }.to_json();
    let config_json = serde_json::to_string(config).unwrap();
    drop(opt_b);

    let restored = Checkpoint::from_json(&json).unwrap();
    let config_c: OptimizerConfig = serde_json::from_str(&config_json).unwrap();
    let mut mlp_c = restored.mlp;
    let mut opt_c = config_c.build().unwrap();
    opt_c.load_state(restored.optimizer).unwrap();
    assert_eq!(opt_c.n_steps(), stop_at);
    let out_c =
        trainer.resume(&mut mlp_c, opt_c.as_mut(), restored.progress, &mut NoObserver).unwrap();
    assert_eq!(out_c.termination, Termination::Completed);
    assert_eq!(out_c.progress, out_a.progress);
    assert_eq!(bits(&mlp_c), bits(&mlp_a), "{config:?}: resumed run differs");
    assert_eq!(opt_c.state(), opt_a.state(), "{config:?}: optimizer states differ");

    // The comparison can fail: one extra step changes the parameters.
    let x = tr.xs.select(ndarray::Axis(0), &[0]);
    opt_c.step(&mut mlp_c, &x, Targets::Classes(&tr.ys[..1]), Loss::CrossEntropy).unwrap();
    assert_ne!(bits(&mlp_c), bits(&mlp_a));
}

#[test]
fn sgd_momentum_round_trip() {
    let c = SgdConfig { momentum: 0.9, nesterov: true, ..SgdConfig::plain(0.05) };
    check_round_trip(&OptimizerConfig::Sgd(c), 4);
}

#[test]
fn adam_round_trip() {
    check_round_trip(&OptimizerConfig::Adam(AdamConfig::with_lr(0.01)), 4);
    let c = AdamConfig { weight_decay: 0.01, ..AdamConfig::with_lr(0.01) };
    check_round_trip(&OptimizerConfig::AdamW(c), 4);
}

#[test]
fn esso_round_trip() {
    check_round_trip(&OptimizerConfig::Esso(EssoConfig::absolute(0.2, 1.0)), 1);
    let c = EssoConfig {
        lambda_scaling: LambdaScaling::InputNorm { decay: 0.9 },
        ..EssoConfig::absolute(0.3, 0.5)
    };
    check_round_trip(&OptimizerConfig::Esso(c), 4);
}

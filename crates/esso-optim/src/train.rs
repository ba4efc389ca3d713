//! A small deterministic training loop: epochs, a seeded shuffled sample order, mini-batches,
//! observers and checkpoints.

use esso_core::{Evaluation, Loss, Mlp, Targets};
use ndarray::{Array2, ArrayRef2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};
use crate::optimizer::{Optimizer, OptimizerState, StepReport};

/// Settings of [`train`] / [`Trainer`] (serde, unknown fields rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Number of passes over the training set.
    pub n_epochs: usize,
    /// Samples per step B (≥ 1); the last batch of an epoch may be smaller.
    pub batch_size: usize,
    /// Seed of the sample order.
    pub seed: u64,
    /// Shuffle the sample order every epoch (default true); `false` visits samples in order.
    #[serde(default = "default_shuffle")]
    pub shuffle: bool,
}

fn default_shuffle() -> bool {
    true
}

/// Where a run is: the epoch, the next batch within it, and the steps taken.
///
/// Together with the network and [`Optimizer::state`] it is everything needed to resume a run
/// bit-identically (see [`Checkpoint`]), because the sample order of an epoch is a pure
/// function of the seed and the epoch index ([`epoch_order`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Progress {
    /// The current epoch (0-based).
    pub epoch: usize,
    /// The next batch to run within `epoch` (0-based).
    pub batch_idx: usize,
    /// Steps taken by this loop since the start of the run.
    pub n_steps: u64,
}

/// What an observer asks the loop to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop now; the run ends with [`Termination::Stopped`] and can be resumed from the
    /// returned [`Progress`].
    Stop,
}

/// How a run ended (divergence is the error [`OptimError::Diverged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// Every epoch ran.
    Completed,
    /// An observer returned [`Control::Stop`].
    Stopped,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// How it ended.
    pub termination: Termination,
    /// Where it ended: resume from here.
    pub progress: Progress,
    /// The loss reported by the last step, if any.
    pub last_loss: Option<f64>,
}

/// Hooks called by the loop; every method has a no-op default. Observers never change the
/// network.
pub trait Observer {
    /// After every step, with the network after the step; `progress` already counts the
    /// step, so a checkpoint taken here resumes with the next batch.
    fn on_step(&mut self, progress: &Progress, report: &StepReport, mlp: &Mlp) -> Control {
        let _ = (progress, report, mlp);
        Control::Continue
    }

    /// After every completed epoch, with the network and the optimiser at that point.
    /// `progress` already points at the start of the next epoch (`progress.epoch` is the
    /// number of completed epochs, `batch_idx` is 0), so a [`Checkpoint`] built from it,
    /// `mlp` and `optimizer.state()` resumes exactly here.
    ///
    /// # Errors
    /// Whatever the observer's evaluation returns; the run stops with it.
    fn on_epoch_end(
        &mut self,
        progress: &Progress,
        mlp: &Mlp,
        optimizer: &dyn Optimizer,
    ) -> Result<Control> {
        let _ = (progress, mlp, optimizer);
        Ok(Control::Continue)
    }
}

/// An observer that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// An observer that evaluates the network on a held-out set after every epoch.
#[derive(Debug, Clone)]
pub struct Evaluator<'a> {
    xs: &'a ArrayRef2<f64>,
    targets: Targets<'a>,
    loss: Loss,
    /// One evaluation per completed epoch, in order.
    pub history: Vec<Evaluation>,
}

impl<'a> Evaluator<'a> {
    /// Evaluates on `xs` / `targets` with `loss`.
    pub fn new(xs: &'a ArrayRef2<f64>, targets: Targets<'a>, loss: Loss) -> Self {
        Evaluator { xs, targets, loss, history: Vec::new() }
    }

    /// The last evaluation, if an epoch has completed.
    pub fn last(&self) -> Option<&Evaluation> {
        self.history.last()
    }
}

impl Observer for Evaluator<'_> {
    fn on_epoch_end(
        &mut self,
        _progress: &Progress,
        mlp: &Mlp,
        _optimizer: &dyn Optimizer,
    ) -> Result<Control> {
        self.history.push(mlp.evaluate(self.xs, self.targets, self.loss)?);
        Ok(Control::Continue)
    }
}

/// Everything needed to resume a run bit-identically: the network, the optimiser state and
/// the loop's [`Progress`] (the data, the loop settings and the optimiser config are the
/// caller's to keep).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The network.
    pub mlp: Mlp,
    /// [`Optimizer::state`].
    pub optimizer: OptimizerState,
    /// Where the loop stopped.
    pub progress: Progress,
}

impl Checkpoint {
    /// The checkpoint as JSON (floats round-trip exactly).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("checkpoints serialise to JSON")
    }

    /// A checkpoint from JSON.
    ///
    /// # Errors
    /// [`OptimError::Json`].
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| OptimError::Json { message: e.to_string() })
    }
}

/// The sample order of epoch `epoch`: a permutation of 0..n_samples.
///
/// With `shuffle`, [`esso_core::portable::epoch_permutation`]`(n_samples, seed, epoch)`, the
/// one definition of the epoch order in esso (a pure function of seed and epoch, the same on
/// every platform); without, the identity.
pub fn epoch_order(n_samples: usize, epoch: usize, seed: u64, shuffle: bool) -> Vec<usize> {
    if shuffle {
        esso_core::portable::epoch_permutation(n_samples, seed, epoch as u64)
    } else {
        (0..n_samples).collect()
    }
}

/// A mini-batch gathered from the training set.
struct Batch {
    xs: Array2<f64>,
    classes: Vec<usize>,
    values: Option<Array2<f64>>,
}

impl Batch {
    fn gather(xs: &ArrayRef2<f64>, targets: Targets<'_>, idx: &[usize]) -> Self {
        let batch_xs = xs.select(Axis(0), idx);
        match targets {
            Targets::Classes(c) => {
                Batch { xs: batch_xs, classes: idx.iter().map(|&i| c[i]).collect(), values: None }
            }
            Targets::Values(v) => {
                Batch { xs: batch_xs, classes: Vec::new(), values: Some(v.select(Axis(0), idx)) }
            }
        }
    }

    fn targets(&self) -> Targets<'_> {
        match &self.values {
            Some(v) => Targets::Values(v.view()),
            None => Targets::Classes(&self.classes),
        }
    }
}

/// The training loop (argmin's `Executor` for esso): owns epochs, the sample order,
/// mini-batching and the observer calls; the optimiser only steps.
///
/// # Examples
/// ```
/// use esso_core::{Activation, Init, Loss, Mlp, Targets};
/// use esso_optim::{Evaluator, OptimizerConfig, SgdConfig, TrainConfig, Trainer};
/// use rand::SeedableRng;
///
/// let xs = ndarray::array![[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.8]];
/// let ys = [0, 1, 0, 1];
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
/// let mut mlp = Mlp::new(&[2, 4, 2], Activation::Tanh, Init::GlorotUniform, &mut rng)?;
/// let mut opt = OptimizerConfig::Sgd(SgdConfig::plain(0.5)).build()?;
/// let config = TrainConfig { n_epochs: 20, batch_size: 2, seed: 7, shuffle: true };
/// let mut eval = Evaluator::new(&xs, Targets::Classes(&ys), Loss::CrossEntropy);
/// let trainer = Trainer::new(&xs, Targets::Classes(&ys), Loss::CrossEntropy, config)?;
/// let outcome = trainer.run(&mut mlp, opt.as_mut(), &mut eval)?;
/// assert_eq!(outcome.progress.n_steps, 40);
/// assert_eq!(eval.last().unwrap().accuracy, Some(1.0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Trainer<'a> {
    xs: &'a ArrayRef2<f64>,
    targets: Targets<'a>,
    loss: Loss,
    config: TrainConfig,
}

impl<'a> Trainer<'a> {
    /// A loop over the training set `xs` (one row per sample) with `targets`.
    ///
    /// # Errors
    /// [`OptimError::InvalidTrainSetting`] for `batch_size` = 0;
    /// [`esso_core::CoreError::TargetCount`] when targets and rows differ in number;
    /// [`OptimError::EmptyBatch`] for an empty training set.
    pub fn new(
        xs: &'a ArrayRef2<f64>,
        targets: Targets<'a>,
        loss: Loss,
        config: TrainConfig,
    ) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(OptimError::InvalidTrainSetting {
                name: "batch_size",
                value: 0,
                reason: "must be >= 1",
            });
        }
        if xs.nrows() == 0 {
            return Err(OptimError::EmptyBatch);
        }
        if targets.len() != xs.nrows() {
            return Err(esso_core::CoreError::TargetCount {
                n_samples: xs.nrows(),
                n_targets: targets.len(),
            }
            .into());
        }
        Ok(Trainer { xs, targets, loss, config })
    }

    /// Steps per epoch: ⌈n_samples / batch_size⌉.
    pub fn n_batches_per_epoch(&self) -> usize {
        self.xs.nrows().div_ceil(self.config.batch_size)
    }

    /// Runs from the start.
    ///
    /// # Errors
    /// The first error of a step ([`OptimError::Diverged`] among them: the network is then
    /// as before that step) or of an observer.
    pub fn run(
        &self,
        mlp: &mut Mlp,
        optimizer: &mut dyn Optimizer,
        observer: &mut dyn Observer,
    ) -> Result<TrainOutcome> {
        self.resume(mlp, optimizer, Progress::default(), observer)
    }

    /// Runs from `progress` (as returned by an earlier run or stored in a [`Checkpoint`]);
    /// `mlp` and `optimizer` must hold the matching network and state.
    ///
    /// # Errors
    /// As [`Trainer::run`].
    pub fn resume(
        &self,
        mlp: &mut Mlp,
        optimizer: &mut dyn Optimizer,
        mut progress: Progress,
        observer: &mut dyn Observer,
    ) -> Result<TrainOutcome> {
        let n_batches = self.n_batches_per_epoch();
        let mut last_loss = None;
        while progress.epoch < self.config.n_epochs {
            let order =
                epoch_order(self.xs.nrows(), progress.epoch, self.config.seed, self.config.shuffle);
            let chunks: Vec<&[usize]> = order.chunks(self.config.batch_size).collect();
            // The next batch is gathered before the step, so that the optimiser can start on
            // it (`Optimizer::step_before`).
            let mut ahead: Option<Batch> = None;
            while progress.batch_idx < n_batches {
                let batch = match ahead.take() {
                    Some(batch) => batch,
                    None => Batch::gather(self.xs, self.targets, chunks[progress.batch_idx]),
                };
                ahead = chunks
                    .get(progress.batch_idx + 1)
                    .map(|idx| Batch::gather(self.xs, self.targets, idx));
                let report = match &ahead {
                    Some(next) => optimizer.step_before(
                        mlp,
                        &batch.xs,
                        batch.targets(),
                        self.loss,
                        &next.xs,
                    )?,
                    None => optimizer.step(mlp, &batch.xs, batch.targets(), self.loss)?,
                };
                last_loss = Some(report.loss);
                progress.batch_idx += 1;
                progress.n_steps += 1;
                if observer.on_step(&progress, &report, mlp) == Control::Stop {
                    return Ok(TrainOutcome {
                        termination: Termination::Stopped,
                        progress,
                        last_loss,
                    });
                }
            }
            progress.epoch += 1;
            progress.batch_idx = 0;
            let control = observer.on_epoch_end(&progress, mlp, &*optimizer)?;
            if control == Control::Stop {
                return Ok(TrainOutcome { termination: Termination::Stopped, progress, last_loss });
            }
        }
        Ok(TrainOutcome { termination: Termination::Completed, progress, last_loss })
    }
}

/// Shorthand for `Trainer::new(xs, targets, loss, config)?.run(mlp, optimizer, observer)`.
///
/// # Errors
/// As [`Trainer::new`] and [`Trainer::run`].
pub fn train<'a>(
    mlp: &mut Mlp,
    optimizer: &mut dyn Optimizer,
    xs: &'a ArrayRef2<f64>,
    targets: Targets<'a>,
    loss: Loss,
    config: TrainConfig,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome> {
    Trainer::new(xs, targets, loss, config)?.run(mlp, optimizer, observer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(50, 3, 11, true);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(50, 3, 11, true));
        assert_ne!(a, epoch_order(50, 4, 11, true));
        assert_ne!(a, epoch_order(50, 3, 12, true));
        assert_eq!(epoch_order(5, 3, 11, false), vec![0, 1, 2, 3, 4]);
    }
}

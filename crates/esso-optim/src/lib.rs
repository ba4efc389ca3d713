//! # esso-optim
//!
//! Training with the exact single-sample curvature of esso (method.md §3, §4, §6) and the
//! first-order baselines it is compared with, behind one [`Optimizer`] interface that
//! experiments drive without knowing which optimiser runs.
//!
//! ## Tour
//! - [`Optimizer`]: one step on one sample or one mini-batch, returning a [`StepReport`]
//!   (loss before the step, ‖g‖, step norm, cos(step, −g), and for ESSO the exact eigenvalue
//!   summaries [`SpectrumSummary`] per layer). Per-run memory is exported and restored as an
//!   [`OptimizerState`] (serde) for bit-identical resumption.
//! - [`OptimizerConfig`]: the serde enum (`kind = "sgd" | "adam" | "adamw" | "esso"`) with
//!   `validate()` and `build()` → `Box<dyn Optimizer>`; bad values are
//!   [`OptimError::InvalidParam`] naming the field and the value.
//! - [`Esso`] ([`EssoConfig`]): the exact stochastic Newton step with a spectral function
//!   and λ from esso-hessian, [`CurvatureScope`] per layer or whole network,
//!   [`LambdaScaling`] global or by the running mean of ‖ã_{l−1}‖², and batches as averages
//!   of per-sample directions computed in parallel and reduced in a fixed order.
//! - Baselines: [`Sgd`] ([`SgdConfig`]: heavy-ball or Nesterov momentum, L2 weight decay)
//!   and [`Adam`] ([`AdamConfig`], Adam and AdamW), on [`esso_core::Mlp::mean_gradient`].
//! - [`Schedule`] ([`Decay`]): linear warm-up then constant, step or cosine decay, shared by
//!   all optimisers.
//! - [`train`] / [`Trainer`]: epochs, a seeded shuffled order ([`epoch_order`]),
//!   mini-batches, [`Observer`] hooks ([`Evaluator`] evaluates after every epoch) and
//!   [`Checkpoint`] (network + optimiser state + [`Progress`]).
//!
//! ## Divergence
//! Every step computes its update first, checks that loss, gradient, update and new
//! parameters are finite, and only then writes the network. A failure is
//! [`OptimError::Diverged`] with the step index and the last finite loss; the network and
//! the optimiser state are exactly as before the step.
//!
//! ## Reconstruction
//! The ESSO step reconstructs F. B. Mehouachi and C. Kasmi, "Exact Stochastic Second Order
//! Deep Learning", arXiv:2104.03804 (2021), from its abstract only; see
//! `docs/method-esso-optimizer.md` and `docs/baselines.md`.
//!
//! ## Example
//! ```
//! use esso_core::{Activation, Init, Loss, Mlp, Targets};
//! use esso_optim::{Evaluator, OptimizerConfig, TrainConfig, train};
//! use rand::SeedableRng;
//!
//! // Two well separated classes.
//! let xs = ndarray::array![[1.0, 0.2], [0.9, -0.1], [-1.0, 0.1], [-0.8, -0.3]];
//! let ys = [0, 0, 1, 1];
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let mut mlp = Mlp::new(&[2, 3, 2], Activation::Tanh, Init::GlorotUniform, &mut rng)?;
//!
//! let config: OptimizerConfig = toml::from_str(r#"
//!     kind = "esso"
//!     lr = 0.5
//!     lambda = 1.0
//!     spectral = "absolute"
//! "#)?;
//! let mut esso = config.build()?;
//! let mut eval = Evaluator::new(&xs, Targets::Classes(&ys), Loss::CrossEntropy);
//! let settings = TrainConfig { n_epochs: 10, batch_size: 1, seed: 1, shuffle: true };
//! train(&mut mlp, esso.as_mut(), &xs, Targets::Classes(&ys), Loss::CrossEntropy, settings, &mut eval)?;
//! assert_eq!(eval.last().unwrap().accuracy, Some(1.0));
//!
//! // A checkpoint is the network, the optimiser state and the loop's progress.
//! let state_json = esso.state().to_json();
//! let mut resumed = config.build()?;
//! resumed.load_state(esso_optim::OptimizerState::from_json(&state_json)?)?;
//! assert_eq!(resumed.n_steps(), 40);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod adam;
mod config;
mod engine;
mod error;
mod esso;
mod esso_fast;
mod optimizer;
mod schedule;
mod sgd;
mod train;

pub use adam::{Adam, AdamConfig, AdamState, WeightDecayMode};
pub use config::OptimizerConfig;
pub use error::{NonFiniteQuantity, OptimError, Result};
pub use esso::{BatchMode, CurvatureScope, Esso, EssoConfig, EssoState, LambdaScaling};
pub use optimizer::{Optimizer, OptimizerState, SpectrumSummary, StepReport};
pub use schedule::{Decay, Schedule};
pub use sgd::{Sgd, SgdConfig, SgdState};
pub use train::{
    Checkpoint, Control, Evaluator, NoObserver, Observer, Progress, Termination, TrainConfig,
    TrainOutcome, Trainer, epoch_order, train,
};

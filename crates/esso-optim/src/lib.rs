//! # esso-optim
//!
//! TODO tour.

mod adam;
mod config;
mod error;
mod esso;
mod optimizer;
mod schedule;
mod sgd;
mod train;

pub use adam::{Adam, AdamConfig, AdamState, WeightDecayMode};
pub use config::OptimizerConfig;
pub use error::{NonFiniteQuantity, OptimError, Result};
pub use esso::{EssoConfig, EssoState};
pub use optimizer::{LayerSpectrum, Optimizer, OptimizerState, StepReport};
pub use schedule::{Decay, Schedule};
pub use sgd::{Sgd, SgdConfig, SgdState};
pub use train::{
    Checkpoint, Control, Evaluator, NoObserver, Observer, Progress, Termination, TrainConfig,
    TrainOutcome, Trainer, epoch_order, train,
};

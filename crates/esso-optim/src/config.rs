//! Optimisers chosen at run time from a serde config.

use serde::{Deserialize, Serialize};

use crate::adam::{AdamConfig, WeightDecayMode};
use crate::error::Result;
use crate::esso::EssoConfig;
use crate::optimizer::Optimizer;
use crate::sgd::SgdConfig;

/// Any optimiser's hyperparameters, tagged by `kind` (snake_case), for experiment files.
///
/// ```toml
/// kind = "adamw"
/// lr = 1e-3
/// weight_decay = 1e-2
/// schedule = { warmup_steps = 100, decay = { kind = "cosine", total_steps = 10000 } }
/// ```
///
/// Kinds: `sgd` ([`SgdConfig`]), `adam` and `adamw` ([`AdamConfig`], L2 and decoupled weight
/// decay), `esso` ([`EssoConfig`]). Unknown fields are rejected.
///
/// # Examples
/// ```
/// use esso_optim::OptimizerConfig;
/// let config: OptimizerConfig = toml::from_str("kind = \"adam\"\nlr = -1.0")?;
/// let err = config.build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid value -1 for `lr`: must be finite and >= 0");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// SGD with optional momentum (heavy ball or Nesterov) and L2 weight decay.
    Sgd(SgdConfig),
    /// Adam (Kingma & Ba), weight decay as L2 in the gradient.
    Adam(AdamConfig),
    /// AdamW (Loshchilov & Hutter), decoupled weight decay.
    #[serde(rename = "adamw")]
    AdamW(AdamConfig),
    /// The exact stochastic Newton optimiser.
    Esso(EssoConfig),
}

impl OptimizerConfig {
    /// The `kind` tag: `sgd`, `adam`, `adamw` or `esso`.
    pub fn kind(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd(_) => "sgd",
            OptimizerConfig::Adam(_) => "adam",
            OptimizerConfig::AdamW(_) => "adamw",
            OptimizerConfig::Esso(_) => "esso",
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`crate::OptimError::InvalidParam`] naming the first bad field and its value, or
    /// [`crate::OptimError::IncompatibleOptions`].
    pub fn validate(&self) -> Result<()> {
        match self {
            OptimizerConfig::Sgd(c) => c.validate(),
            OptimizerConfig::Adam(c) | OptimizerConfig::AdamW(c) => c.validate(),
            OptimizerConfig::Esso(c) => c.validate(),
        }
    }

    /// A fresh optimiser (step 0, empty state).
    ///
    /// # Errors
    /// As [`OptimizerConfig::validate`].
    pub fn build(&self) -> Result<Box<dyn Optimizer>> {
        Ok(match self {
            OptimizerConfig::Sgd(c) => Box::new(c.build()?),
            OptimizerConfig::Adam(c) => Box::new(c.build(WeightDecayMode::L2)?),
            OptimizerConfig::AdamW(c) => Box::new(c.build(WeightDecayMode::Decoupled)?),
            OptimizerConfig::Esso(c) => Box::new(c.build()?),
        })
    }
}

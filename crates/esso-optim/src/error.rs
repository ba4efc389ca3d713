//! The error type of esso-optim.

use esso_core::CoreError;
use esso_hessian::HessianError;
use thiserror::Error;

/// Which quantity of a step was found non-finite (see [`OptimError::Diverged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NonFiniteQuantity {
    /// The mean loss of the step's samples, at the weights before the step.
    Loss,
    /// The mean gradient at the weights before the step.
    Gradient,
    /// The update (the direction, or an optimiser moment) computed from the gradient.
    Update,
    /// The parameters the step would have produced.
    Parameters,
    /// The exact curvature (H_l) of a sample (ESSO).
    Curvature,
}

impl NonFiniteQuantity {
    /// A lower-case name for messages: `loss`, `gradient`, `update`, `parameters`, `curvature`.
    pub fn name(self) -> &'static str {
        match self {
            NonFiniteQuantity::Loss => "loss",
            NonFiniteQuantity::Gradient => "gradient",
            NonFiniteQuantity::Update => "update",
            NonFiniteQuantity::Parameters => "parameters",
            NonFiniteQuantity::Curvature => "curvature",
        }
    }
}

impl std::fmt::Display for NonFiniteQuantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong in esso-optim.
///
/// Configuration errors name the field and the value; divergence carries the step index and
/// the last finite loss; errors of esso-core and esso-hessian are wrapped unchanged.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum OptimError {
    /// A hyperparameter outside its domain (λ ≤ 0, negative η, β ∉ [0, 1), non-finite, …).
    #[error("invalid value {value} for `{name}`: {reason}")]
    InvalidParam {
        /// The field, as spelled in the config (`lambda`, `beta1`, `schedule.gamma`, …).
        name: &'static str,
        /// The value given.
        value: f64,
        /// What the value must satisfy, e.g. "must be > 0".
        reason: &'static str,
    },
    /// Two options that cannot be combined.
    #[error("incompatible options: {reason}")]
    IncompatibleOptions {
        /// Which options and why.
        reason: &'static str,
    },
    /// A non-finite loss, gradient, update or parameter: training cannot go on.
    ///
    /// The network and the optimiser state are left exactly as they were before the step.
    #[error(
        "diverged at step {step}: non-finite {quantity} (last finite loss {})",
        last_finite_loss.map_or_else(|| "none".to_string(), |l| l.to_string())
    )]
    Diverged {
        /// Index of the failing step: the number of steps completed before it (0-based).
        step: u64,
        /// The most recent finite mean loss measured by this optimiser (the loss before the
        /// failing step when that one was finite), `None` if there was none.
        last_finite_loss: Option<f64>,
        /// What was found non-finite.
        quantity: NonFiniteQuantity,
    },
    /// A step on an empty batch.
    #[error("a step needs at least one sample")]
    EmptyBatch,
    /// The optimiser state does not fit this optimiser or network.
    #[error("optimizer state does not fit: {reason}")]
    StateMismatch {
        /// What differs.
        reason: String,
    },
    /// A training-loop setting is invalid.
    #[error("invalid training setting `{name}` = {value}: {reason}")]
    InvalidTrainSetting {
        /// The setting (`batch_size`, …).
        name: &'static str,
        /// The value given.
        value: usize,
        /// What it must satisfy.
        reason: &'static str,
    },
    /// An error of esso-core (shapes, targets).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// An error of esso-hessian (eigendecomposition, spectral function).
    #[error(transparent)]
    Hessian(#[from] HessianError),
    /// A checkpoint or state that is not valid JSON.
    #[error("checkpoint JSON: {message}")]
    Json {
        /// serde_json's message, with line and column.
        message: String,
    },
}

impl OptimError {
    /// Whether this is [`OptimError::Diverged`].
    pub fn is_divergence(&self) -> bool {
        matches!(self, OptimError::Diverged { .. })
    }
}

/// Result alias for esso-optim.
pub type Result<T> = std::result::Result<T, OptimError>;

/// Checks that `value` is finite and > 0.
pub(crate) fn positive(name: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(OptimError::InvalidParam { name, value, reason: "must be finite and > 0" })
    }
}

/// Checks that `value` is finite and ≥ 0.
pub(crate) fn non_negative(name: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(OptimError::InvalidParam { name, value, reason: "must be finite and >= 0" })
    }
}

/// Checks that `value` is in [0, 1).
pub(crate) fn unit_interval(name: &'static str, value: f64) -> Result<f64> {
    if (0.0..1.0).contains(&value) {
        Ok(value)
    } else {
        Err(OptimError::InvalidParam { name, value, reason: "must be in [0, 1)" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_field_and_value() {
        let e = positive("lambda", -1.0).unwrap_err();
        assert_eq!(e.to_string(), "invalid value -1 for `lambda`: must be finite and > 0");
        let e = unit_interval("beta1", 1.0).unwrap_err();
        assert_eq!(e.to_string(), "invalid value 1 for `beta1`: must be in [0, 1)");
        assert!(non_negative("lr", f64::NAN).is_err());
        assert!(non_negative("lr", f64::INFINITY).is_err());
        assert_eq!(non_negative("lr", 0.0), Ok(0.0));
        let d = OptimError::Diverged {
            step: 3,
            last_finite_loss: Some(0.5),
            quantity: NonFiniteQuantity::Loss,
        };
        assert_eq!(d.to_string(), "diverged at step 3: non-finite loss (last finite loss 0.5)");
        assert!(d.is_divergence());
    }
}

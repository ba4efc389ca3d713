//! Learning-rate schedules shared by every optimiser.
//!
//! A [`Schedule`] maps the 0-based step index t to a multiplier η_t ≥ 0 of the optimiser's
//! base learning rate: an optional linear warm-up, then a [`Decay`].
//!
//! ```text
//! η_t = (t + 1) / w                      for t < w (w = warmup_steps)
//! η_t = decay(t − w)                     for t ≥ w
//! constant:    decay(k) = 1
//! step decay:  decay(k) = γ^⌊k / step_size⌋
//! cosine:      decay(k) = m + (1 − m) · ½ (1 + cos(π · min(k, T) / T))   (T = total_steps, m = min_factor)
//! ```
//!
//! Schedules count optimiser steps, not epochs: with batch size B and n samples an epoch is
//! ⌈n / B⌉ steps.
//!
//! # Reference
//! Cosine annealing: I. Loshchilov and F. Hutter, "SGDR: Stochastic Gradient Descent with Warm
//! Restarts", ICLR 2017 (without restarts here). Linear warm-up: P. Goyal et al., "Accurate,
//! Large Minibatch SGD: Training ImageNet in 1 Hour", arXiv:1706.02677 (2017).

use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};

/// What follows the warm-up (see the module docs for the formulas).
///
/// Serde: internally tagged by `kind`, snake_case, e.g. in TOML
/// `decay = { kind = "step", step_size = 1000, gamma = 0.5 }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Decay {
    /// decay(k) = 1.
    #[default]
    Constant,
    /// decay(k) = γ^⌊k / step_size⌋.
    Step {
        /// Steps between two multiplications by `gamma` (> 0).
        step_size: u64,
        /// Factor applied every `step_size` steps, in (0, 1].
        gamma: f64,
    },
    /// decay(k) = m + (1 − m) · ½ (1 + cos(π · min(k, T) / T)), then m for k ≥ T.
    Cosine {
        /// T, the length of the half cosine in steps (> 0).
        total_steps: u64,
        /// m, the final multiplier, in [0, 1].
        #[serde(default)]
        min_factor: f64,
    },
}

/// A learning-rate schedule: linear warm-up over `warmup_steps` steps, then `decay`.
///
/// Serde: `schedule = { warmup_steps = 100, decay = { kind = "cosine", total_steps = 5000 } }`;
/// both fields default (no warm-up, constant), so the default schedule is constant.
///
/// # Examples
/// ```
/// use esso_optim::{Decay, Schedule};
/// let s = Schedule { warmup_steps: 2, decay: Decay::Step { step_size: 10, gamma: 0.5 } };
/// s.validate()?;
/// assert_eq!(s.factor(0), 0.5);
/// assert_eq!(s.factor(1), 1.0);
/// assert_eq!(s.factor(12), 0.5);
/// # Ok::<(), esso_optim::OptimError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Length w of the linear warm-up (0: none). Step t < w uses (t + 1) / w.
    #[serde(default)]
    pub warmup_steps: u64,
    /// The schedule after the warm-up, evaluated at t − w.
    #[serde(default)]
    pub decay: Decay,
}

impl Schedule {
    /// The constant schedule (η_t = 1).
    pub fn constant() -> Self {
        Schedule::default()
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`OptimError::InvalidParam`] naming `schedule.decay.step_size` (0),
    /// `schedule.decay.gamma` (not in (0, 1]), `schedule.decay.total_steps` (0) or
    /// `schedule.decay.min_factor` (not in [0, 1]).
    pub fn validate(&self) -> Result<()> {
        match self.decay {
            Decay::Constant => {}
            Decay::Step { step_size, gamma } => {
                if step_size == 0 {
                    return Err(OptimError::InvalidParam {
                        name: "schedule.decay.step_size",
                        value: 0.0,
                        reason: "must be > 0",
                    });
                }
                if !(gamma > 0.0 && gamma <= 1.0) {
                    return Err(OptimError::InvalidParam {
                        name: "schedule.decay.gamma",
                        value: gamma,
                        reason: "must be in (0, 1]",
                    });
                }
            }
            Decay::Cosine { total_steps, min_factor } => {
                if total_steps == 0 {
                    return Err(OptimError::InvalidParam {
                        name: "schedule.decay.total_steps",
                        value: 0.0,
                        reason: "must be > 0",
                    });
                }
                if !(0.0..=1.0).contains(&min_factor) {
                    return Err(OptimError::InvalidParam {
                        name: "schedule.decay.min_factor",
                        value: min_factor,
                        reason: "must be in [0, 1]",
                    });
                }
            }
        }
        Ok(())
    }

    /// The multiplier η_t of the base learning rate at 0-based step `step`.
    ///
    /// In [0, 1] for a valid schedule; a pure function of `step`, so resuming a run needs only
    /// the step counter.
    pub fn factor(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return (step + 1) as f64 / self.warmup_steps as f64;
        }
        let k = step - self.warmup_steps;
        match self.decay {
            Decay::Constant => 1.0,
            Decay::Step { step_size, gamma } => {
                let n_decays = k / step_size.max(1);
                gamma.powf(n_decays as f64)
            }
            Decay::Cosine { total_steps, min_factor } => {
                let t_max = total_steps.max(1);
                let progress = k.min(t_max) as f64 / t_max as f64;
                min_factor
                    + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s =
            Schedule { warmup_steps: 4, decay: Decay::Cosine { total_steps: 10, min_factor: 0.1 } };
        s.validate().unwrap();
        assert_eq!(s.factor(0), 0.25);
        assert_eq!(s.factor(3), 1.0);
        assert_eq!(s.factor(4), 1.0);
        assert!((s.factor(9) - (0.1 + 0.9 * 0.5)).abs() < 1e-15);
        assert!((s.factor(14) - 0.1).abs() < 1e-15);
        assert!((s.factor(1000) - 0.1).abs() < 1e-15);
    }

    #[test]
    fn step_decay_and_constant() {
        let s = Schedule { warmup_steps: 0, decay: Decay::Step { step_size: 3, gamma: 0.1 } };
        let f: Vec<f64> = (0..7).map(|t| s.factor(t)).collect();
        assert_eq!(f[..3], [1.0; 3]);
        assert!((f[3] - 0.1).abs() < 1e-16 && (f[6] - 0.01).abs() < 1e-16);
        assert_eq!(Schedule::constant().factor(123_456), 1.0);
    }

    #[test]
    fn invalid_values_are_named() {
        let bad = Schedule { warmup_steps: 0, decay: Decay::Step { step_size: 3, gamma: 1.5 } };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "invalid value 1.5 for `schedule.decay.gamma`: must be in (0, 1]"
        );
        let bad =
            Schedule { warmup_steps: 0, decay: Decay::Cosine { total_steps: 0, min_factor: 0.0 } };
        assert!(matches!(
            bad.validate(),
            Err(OptimError::InvalidParam { name: "schedule.decay.total_steps", .. })
        ));
    }

    #[test]
    fn serde_round_trip() {
        let s = Schedule {
            warmup_steps: 5,
            decay: Decay::Cosine { total_steps: 100, min_factor: 0.0 },
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"warmup_steps":5,"decay":{"kind":"cosine","total_steps":100,"min_factor":0.0}}"#
        );
        assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), s);
        assert_eq!(serde_json::from_str::<Schedule>("{}").unwrap(), Schedule::constant());
        assert!(serde_json::from_str::<Schedule>(r#"{"warmup":3}"#).is_err());
    }
}

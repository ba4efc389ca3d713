//! Stochastic gradient descent with heavy-ball or Nesterov momentum and L2 weight decay.

use esso_core::{Loss, Mlp, Params, Targets};
use ndarray::ArrayRef2;
use serde::{Deserialize, Serialize};

use crate::error::{Result, non_negative, unit_interval};
use crate::optimizer::{
    Optimizer, OptimizerState, StepReport, check_batch, check_buffer, check_loss_and_gradient,
    checked_update, wrong_kind,
};
use crate::schedule::Schedule;

/// Hyperparameters of [`Sgd`] (serde: `{ kind = "sgd", lr = 0.1, momentum = 0.9 }` inside
/// [`crate::OptimizerConfig`]).
///
/// With gradient g of the mean loss, μ = `momentum`, w = `weight_decay` and
/// η_t = `lr` × schedule multiplier at step t:
///
/// ```text
/// g' = g + w θ                     (L2 weight decay, coupled)
/// v  ← μ v + g'                    (v = 0 before the first step)
/// heavy ball:  θ ← θ − η_t v
/// Nesterov:    θ ← θ − η_t (g' + μ v)
/// ```
///
/// μ = 0 is plain SGD. This is the formulation of PyTorch's `torch.optim.SGD` (no
/// dampening); with a constant rate it equals Polyak's θ ← θ − η g + μ (θ − θ_prev).
///
/// # Reference
/// B. T. Polyak, "Some methods of speeding up the convergence of iteration methods", USSR
/// Computational Mathematics and Mathematical Physics 4(5), 1964 (heavy ball).
/// Y. Nesterov, "A method for solving the convex programming problem with convergence rate
/// O(1/k²)", Soviet Mathematics Doklady 27, 1983; I. Sutskever, J. Martens, G. Dahl and
/// G. Hinton, "On the importance of initialization and momentum in deep learning", ICML 2013
/// (Nesterov momentum for deep learning, in the form used here).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    /// Base learning rate η (≥ 0).
    pub lr: f64,
    /// Momentum μ in [0, 1); 0 (the default) is plain SGD.
    #[serde(default)]
    pub momentum: f64,
    /// Use Nesterov momentum instead of heavy ball (default false).
    #[serde(default)]
    pub nesterov: bool,
    /// L2 weight decay w ≥ 0 added to the gradient (default 0).
    #[serde(default)]
    pub weight_decay: f64,
    /// Learning-rate schedule (default constant).
    #[serde(default)]
    pub schedule: Schedule,
}

impl SgdConfig {
    /// Plain SGD with rate `lr`, no momentum, no decay, constant schedule.
    pub fn plain(lr: f64) -> Self {
        SgdConfig {
            lr,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            schedule: Schedule::default(),
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`crate::OptimError::InvalidParam`] naming `lr` (negative or non-finite), `momentum`
    /// (outside [0, 1)), `weight_decay` (negative or non-finite) or a schedule field.
    pub fn validate(&self) -> Result<()> {
        non_negative("lr", self.lr)?;
        unit_interval("momentum", self.momentum)?;
        non_negative("weight_decay", self.weight_decay)?;
        self.schedule.validate()
    }

    /// A fresh optimiser.
    ///
    /// # Errors
    /// As [`SgdConfig::validate`].
    pub fn build(&self) -> Result<Sgd> {
        self.validate()?;
        Ok(Sgd { config: *self, state: SgdState::default() })
    }
}

/// The per-run state of [`Sgd`]: the step counter and the velocity v.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SgdState {
    n_steps: u64,
    last_finite_loss: Option<f64>,
    velocity: Option<Params>,
}

impl SgdState {
    /// Steps completed.
    pub fn n_steps(&self) -> u64 {
        self.n_steps
    }

    /// The velocity v (`None` before the first step or without momentum).
    pub fn velocity(&self) -> Option<&Params> {
        self.velocity.as_ref()
    }
}

/// SGD with momentum and weight decay (see [`SgdConfig`] for the update).
///
/// Uses [`Mlp::mean_gradient`] (one GEMM per layer) for the mini-batch gradient.
#[derive(Debug, Clone)]
pub struct Sgd {
    config: SgdConfig,
    state: SgdState,
}

impl Sgd {
    /// The hyperparameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

impl Optimizer for Sgd {
    fn name(&self) -> &'static str {
        "sgd"
    }

    fn step(
        &mut self,
        mlp: &mut Mlp,
        xs: &ArrayRef2<f64>,
        targets: Targets<'_>,
        loss: Loss,
    ) -> Result<StepReport> {
        check_batch(xs, targets)?;
        check_buffer("velocity", self.state.velocity.as_ref(), mlp)?;
        let step = self.state.n_steps;
        let (loss_value, grad) = mlp.mean_gradient(xs, targets, loss)?;
        check_loss_and_gradient(step, self.state.last_finite_loss, loss_value, &grad)?;
        let c = &self.config;
        let lr = self.learning_rate();
        let mut g = grad.clone();
        if c.weight_decay != 0.0 {
            g.axpy(c.weight_decay, mlp.params());
        }
        let (update, velocity) = if c.momentum == 0.0 {
            let mut update = g;
            update.scale(-lr);
            (update, None)
        } else {
            let mut v = match &self.state.velocity {
                Some(v) => {
                    let mut v = v.clone();
                    v.scale(c.momentum);
                    v
                }
                None => Params::zeros_like(&g),
            };
            v.axpy(1.0, &g);
            let mut update = if c.nesterov {
                let mut d = g;
                d.axpy(c.momentum, &v);
                d
            } else {
                v.clone()
            };
            update.scale(-lr);
            (update, Some(v))
        };
        let new_params = checked_update(step, loss_value, mlp.params(), &update)?;
        *mlp.params_mut() = new_params;
        self.state = SgdState { n_steps: step + 1, last_finite_loss: Some(loss_value), velocity };
        Ok(StepReport::new(step, xs.nrows(), loss_value, &grad, &update, lr))
    }

    fn n_steps(&self) -> u64 {
        self.state.n_steps
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr * self.config.schedule.factor(self.state.n_steps)
    }

    fn state(&self) -> OptimizerState {
        OptimizerState::Sgd(self.state.clone())
    }

    fn load_state(&mut self, state: OptimizerState) -> Result<()> {
        match state {
            OptimizerState::Sgd(s) => {
                self.state = s;
                Ok(())
            }
            other => Err(wrong_kind("sgd", &other)),
        }
    }
}

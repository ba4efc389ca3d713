//! Adam and AdamW.

use esso_core::{Loss, Mlp, Params, Targets};
use ndarray::ArrayRef2;
use serde::{Deserialize, Serialize};

use crate::error::{Result, non_negative, positive, unit_interval};
use crate::optimizer::{
    Optimizer, OptimizerState, StepReport, check_batch, check_buffer, check_loss_and_gradient,
    checked_update, wrong_kind,
};
use crate::schedule::Schedule;

/// How [`Adam`] applies weight decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightDecayMode {
    /// Adam with L2 regularisation: w θ is added to the gradient before the moments
    /// (config kind `adam`).
    L2,
    /// AdamW: decay decoupled from the gradient, θ ← θ − η_t w θ (config kind `adamw`).
    Decoupled,
}

/// Hyperparameters of [`Adam`] (serde: `{ kind = "adam", lr = 1e-3 }` or
/// `{ kind = "adamw", lr = 1e-3, weight_decay = 1e-2 }` inside [`crate::OptimizerConfig`]).
///
/// With gradient g_t of the mean loss at step t = 1, 2, …, α = `lr`, η_t the schedule
/// multiplier and w = `weight_decay` (Kingma & Ba, Algorithm 1; Loshchilov & Hutter,
/// Algorithm 2):
///
/// ```text
/// Adam (L2):  g_t ← g_t + w θ_{t−1}
/// m_t = β1 m_{t−1} + (1 − β1) g_t            v_t = β2 v_{t−1} + (1 − β2) g_t²
/// m̂_t = m_t / (1 − β1^t)                     v̂_t = v_t / (1 − β2^t)
/// Adam:   θ_t = θ_{t−1} − η_t α m̂_t / (√v̂_t + ε)
/// AdamW:  θ_t = θ_{t−1} − η_t (α m̂_t / (√v̂_t + ε) + w θ_{t−1})
/// ```
///
/// As in the AdamW paper, the decoupled decay w is multiplied by the schedule multiplier η_t
/// but not by α (PyTorch's `AdamW(lr, weight_decay=w')` is w = lr · w').
///
/// # Reference
/// D. P. Kingma and J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
/// arXiv:1412.6980. I. Loshchilov and F. Hutter, "Decoupled Weight Decay Regularization",
/// ICLR 2019, arXiv:1711.05101.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    /// Step size α (≥ 0).
    pub lr: f64,
    /// β1 in [0, 1), default 0.9 (the paper's).
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// β2 in [0, 1), default 0.999 (the paper's).
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// ε > 0, default 1e-8 (the paper's).
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Weight decay w ≥ 0 (default 0): L2 for `adam`, decoupled for `adamw`.
    #[serde(default)]
    pub weight_decay: f64,
    /// Learning-rate schedule (η_t, default constant).
    #[serde(default)]
    pub schedule: Schedule,
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

impl AdamConfig {
    /// The paper's defaults (β1 0.9, β2 0.999, ε 1e-8), no weight decay, constant schedule.
    pub fn with_lr(lr: f64) -> Self {
        AdamConfig {
            lr,
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            weight_decay: 0.0,
            schedule: Schedule::default(),
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`crate::OptimError::InvalidParam`] naming `lr`, `beta1`, `beta2` (outside [0, 1)),
    /// `eps` (≤ 0), `weight_decay` or a schedule field.
    pub fn validate(&self) -> Result<()> {
        non_negative("lr", self.lr)?;
        unit_interval("beta1", self.beta1)?;
        unit_interval("beta2", self.beta2)?;
        positive("eps", self.eps)?;
        non_negative("weight_decay", self.weight_decay)?;
        self.schedule.validate()
    }

    /// A fresh optimiser with the given weight-decay mode (Adam: L2, AdamW: decoupled).
    ///
    /// # Errors
    /// As [`AdamConfig::validate`].
    pub fn build(&self, mode: WeightDecayMode) -> Result<Adam> {
        self.validate()?;
        Ok(Adam { config: *self, mode, state: AdamState::default() })
    }
}

/// The per-run state of [`Adam`]: the step counter and the moments m, v.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AdamState {
    n_steps: u64,
    last_finite_loss: Option<f64>,
    first_moment: Option<Params>,
    second_moment: Option<Params>,
}

impl AdamState {
    /// Steps completed (t of the last step).
    pub fn n_steps(&self) -> u64 {
        self.n_steps
    }

    /// m, the biased first-moment estimate (`None` before the first step).
    pub fn first_moment(&self) -> Option<&Params> {
        self.first_moment.as_ref()
    }

    /// v, the biased second raw moment estimate (`None` before the first step).
    pub fn second_moment(&self) -> Option<&Params> {
        self.second_moment.as_ref()
    }
}

/// Adam or AdamW (see [`AdamConfig`] for the update).
///
/// Uses [`Mlp::mean_gradient`] (one GEMM per layer) for the mini-batch gradient.
#[derive(Debug, Clone)]
pub struct Adam {
    config: AdamConfig,
    mode: WeightDecayMode,
    state: AdamState,
}

impl Adam {
    /// The hyperparameters.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// L2 (Adam) or decoupled (AdamW) weight decay.
    pub fn mode(&self) -> WeightDecayMode {
        self.mode
    }
}

impl Optimizer for Adam {
    fn name(&self) -> &'static str {
        match self.mode {
            WeightDecayMode::L2 => "adam",
            WeightDecayMode::Decoupled => "adamw",
        }
    }

    fn step(
        &mut self,
        mlp: &mut Mlp,
        xs: &ArrayRef2<f64>,
        targets: Targets<'_>,
        loss: Loss,
    ) -> Result<StepReport> {
        check_batch(xs, targets)?;
        check_buffer("first moment", self.state.first_moment.as_ref(), mlp)?;
        check_buffer("second moment", self.state.second_moment.as_ref(), mlp)?;
        let step = self.state.n_steps;
        let (loss_value, grad) = mlp.mean_gradient(xs, targets, loss)?;
        check_loss_and_gradient(step, self.state.last_finite_loss, loss_value, &grad)?;
        let c = &self.config;
        let factor = c.schedule.factor(step);
        let lr = c.lr * factor;
        let mut g = grad.clone();
        if self.mode == WeightDecayMode::L2 && c.weight_decay != 0.0 {
            g.axpy(c.weight_decay, mlp.params());
        }
        let mut m = self.state.first_moment.clone().unwrap_or_else(|| Params::zeros_like(&g));
        let mut v = self.state.second_moment.clone().unwrap_or_else(|| Params::zeros_like(&g));
        let t = (step + 1) as f64;
        let bias1 = 1.0 - c.beta1.powf(t);
        let bias2 = 1.0 - c.beta2.powf(t);
        let mut update = Params::zeros_like(&g);
        // Slice by slice (weight, bias of each layer): contiguous loops the compiler
        // vectorises, instead of zipping five element iterators.
        let decay = match self.mode {
            WeightDecayMode::L2 => 0.0,
            WeightDecayMode::Decoupled => c.weight_decay,
        };
        let slices = update
            .slices_mut()
            .zip(m.slices_mut())
            .zip(v.slices_mut())
            .zip(g.slices())
            .zip(mlp.params().slices());
        for ((((u, m), v), g), theta) in slices {
            for i in 0..u.len() {
                m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
                v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
                let m_hat = m[i] / bias1;
                let v_hat = v[i] / bias2;
                let adaptive = c.lr * m_hat / (v_hat.sqrt() + c.eps);
                u[i] = -factor * (adaptive + decay * theta[i]);
            }
        }
        let new_params = checked_update(step, loss_value, mlp.params(), &update)?;
        if !(m.is_finite() && v.is_finite()) {
            return Err(crate::optimizer::diverged(
                step,
                Some(loss_value),
                crate::NonFiniteQuantity::Update,
            ));
        }
        *mlp.params_mut() = new_params;
        self.state = AdamState {
            n_steps: step + 1,
            last_finite_loss: Some(loss_value),
            first_moment: Some(m),
            second_moment: Some(v),
        };
        Ok(StepReport::new(step, xs.nrows(), loss_value, &grad, &update, lr))
    }

    fn n_steps(&self) -> u64 {
        self.state.n_steps
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr * self.config.schedule.factor(self.state.n_steps)
    }

    fn state(&self) -> OptimizerState {
        OptimizerState::Adam(self.state.clone())
    }

    fn load_state(&mut self, state: OptimizerState) -> Result<()> {
        match state {
            OptimizerState::Adam(s) => {
                self.state = s;
                Ok(())
            }
            other => Err(wrong_kind("adam", &other)),
        }
    }
}

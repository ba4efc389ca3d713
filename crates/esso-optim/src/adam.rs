//! Adam and AdamW.

use esso_core::{Loss, Mlp, Params, Targets};
use ndarray::ArrayRef2;
use serde::{Deserialize, Serialize};

use crate::engine::BatchEngine;
use crate::error::{NonFiniteQuantity, Result, non_negative, positive, unit_interval};
use crate::optimizer::{
    Optimizer, OptimizerState, StepReport, add_in_place, buffer, check_batch, check_buffer,
    check_loss_and_gradient, check_update, diverged, wrong_kind,
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
        Ok(Adam {
            config: *self,
            mode,
            state: AdamState::default(),
            workspace: AdamWorkspace::default(),
        })
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
/// The mini-batch gradient comes from the same batch engine as [`crate::Sgd`] (one GEMM per
/// layer for the forward pass, backpropagation and the gradient, into reused buffers), and
/// the moments and the update are computed into reused buffers too: no step allocates
/// (after the first). Every check runs before θ and the moments change.
#[derive(Debug, Clone)]
pub struct Adam {
    config: AdamConfig,
    mode: WeightDecayMode,
    state: AdamState,
    workspace: AdamWorkspace,
}

/// Reused buffers (not part of the state: a checkpoint does not need them).
#[derive(Debug, Clone, Default)]
struct AdamWorkspace {
    engine: BatchEngine,
    grad: Option<Params>,
    update: Option<Params>,
    first_moment: Option<Params>,
    second_moment: Option<Params>,
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
        let ws = &mut self.workspace;
        let batch = (xs, targets, loss);
        let loss_value =
            ws.engine.forward_backward(mlp, batch, step, self.state.last_finite_loss)?;
        let grad = buffer(&mut ws.grad, mlp.params());
        ws.engine.gradient_into(1.0, grad);
        check_loss_and_gradient(step, self.state.last_finite_loss, loss_value, grad)?;
        let c = &self.config;
        let factor = c.schedule.factor(step);
        let lr = c.lr * factor;
        let t = (step + 1) as f64;
        let bias1 = 1.0 - c.beta1.powf(t);
        let bias2 = 1.0 - c.beta2.powf(t);
        // L2: g' = g + w θ enters the moments; decoupled: w θ enters the update.
        let (l2, decay) = match self.mode {
            WeightDecayMode::L2 => (c.weight_decay, 0.0),
            WeightDecayMode::Decoupled => (0.0, c.weight_decay),
        };
        let update = buffer(&mut ws.update, mlp.params());
        let m_new = buffer(&mut ws.first_moment, mlp.params());
        let v_new = buffer(&mut ws.second_moment, mlp.params());
        let (m_old, v_old) = (self.state.first_moment.as_ref(), self.state.second_moment.as_ref());
        // Slice by slice (weight, bias of each layer): contiguous loops the compiler
        // vectorises. Without moments yet (t = 1) they are 0.
        let slices = update
            .slices_mut()
            .zip(m_new.slices_mut())
            .zip(v_new.slices_mut())
            .zip(grad.slices())
            .zip(mlp.params().slices())
            .enumerate();
        for (idx, ((((u, m), v), g), theta)) in slices {
            match m_old.and_then(|p| p.slices().nth(idx)) {
                Some(old) => m.copy_from_slice(old),
                None => m.fill(0.0),
            }
            match v_old.and_then(|p| p.slices().nth(idx)) {
                Some(old) => v.copy_from_slice(old),
                None => v.fill(0.0),
            }
            for i in 0..u.len() {
                let g = if l2 != 0.0 { g[i] + l2 * theta[i] } else { g[i] };
                m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g;
                v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g * g;
                let m_hat = m[i] / bias1;
                let v_hat = v[i] / bias2;
                let adaptive = c.lr * m_hat / (v_hat.sqrt() + c.eps);
                u[i] = -factor * (adaptive + decay * theta[i]);
            }
        }
        check_update(step, loss_value, mlp.params(), update)?;
        if !(m_new.is_finite() && v_new.is_finite()) {
            return Err(diverged(step, Some(loss_value), NonFiniteQuantity::Update));
        }
        add_in_place(mlp.params_mut(), update);
        let report = StepReport::new(step, xs.nrows(), loss_value, grad, update, lr);
        self.state.n_steps = step + 1;
        self.state.last_finite_loss = Some(loss_value);
        for (slot, new) in
            [(&mut self.state.first_moment, m_new), (&mut self.state.second_moment, v_new)]
        {
            match slot {
                Some(old) => std::mem::swap(old, new),
                None => *slot = Some(new.clone()),
            }
        }
        Ok(report)
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

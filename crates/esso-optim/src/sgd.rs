//! Stochastic gradient descent with heavy-ball or Nesterov momentum and L2 weight decay.

use esso_core::{Loss, Mlp, Params, Targets};
use ndarray::ArrayRef2;
use serde::{Deserialize, Serialize};

use crate::engine::{BatchEngine, IN_PLACE_LIMIT};
use crate::error::{Result, non_negative, unit_interval};
use crate::optimizer::{
    Optimizer, OptimizerState, StepReport, apply_checked, buffer, check_batch, check_buffer,
    check_loss_and_gradient, wrong_kind,
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
        Ok(Sgd { config: *self, state: SgdState::default(), workspace: SgdWorkspace::default() })
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
/// One GEMM per layer for the forward pass, backpropagation and the update; plain SGD
/// updates the weights in place from the rank-one factors δ_s ã_sᵀ without materialising the
/// gradient, and no step allocates (buffers are reused).
#[derive(Debug, Clone)]
pub struct Sgd {
    config: SgdConfig,
    state: SgdState,
    workspace: SgdWorkspace,
}

/// Reused buffers (not part of the state: a checkpoint does not need them).
#[derive(Debug, Clone, Default)]
struct SgdWorkspace {
    engine: BatchEngine,
    grad: Option<Params>,
    update: Option<Params>,
    velocity: Option<Params>,
    /// The inputs' Gram matrix of [`BatchEngine::gradient_norm_sq`] (B × B).
    gram: Vec<f64>,
}

impl Sgd {
    /// The hyperparameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// [`Optimizer::step`], fusing the in-place update with the forward pass of `next_xs`
    /// when given (plain SGD, B = 1).
    fn step_impl(
        &mut self,
        mlp: &mut Mlp,
        xs: &ArrayRef2<f64>,
        targets: Targets<'_>,
        loss: Loss,
        next_xs: Option<&ArrayRef2<f64>>,
    ) -> Result<StepReport> {
        check_batch(xs, targets)?;
        check_buffer("velocity", self.state.velocity.as_ref(), mlp)?;
        let step = self.state.n_steps;
        let lr = self.learning_rate();
        let ws = &mut self.workspace;
        let batch = (xs, targets, loss);
        let loss_value =
            ws.engine.forward_backward(mlp, batch, step, self.state.last_finite_loss)?;
        let n_samples = xs.nrows();
        let c = self.config;
        if c.momentum == 0.0 && c.weight_decay == 0.0 {
            // Plain SGD in place: W ← W − (η/B) Σ_s δ_s ã_sᵀ, one GEMM per layer, when the
            // bounds prove that gradient, update and new parameters are finite.
            let n_layers = ws.engine.n_layers();
            // The largest per-layer bound on |gradient entry| (NaN when one is not finite, so
            // that the test fails).
            let g_max = (0..n_layers)
                .map(|l| ws.engine.gradient_bound(l))
                .fold(0.0f64, |m, g| if g > m || g.is_nan() { g } else { m });
            let bounds_ok = g_max <= IN_PLACE_LIMIT && lr * g_max <= IN_PLACE_LIMIT;
            let params_bound = if bounds_ok { ws.engine.params_in_place_bound(mlp) } else { None };
            if let Some(params_bound) = params_bound {
                let grad_norm_sq: f64 =
                    (0..n_layers).map(|l| ws.engine.gradient_norm_sq(l, &mut ws.gram)).sum();
                let alpha = -lr / n_samples as f64;
                let new_bound = params_bound + lr * g_max;
                let fused = next_xs.is_some_and(|next| {
                    ws.engine.update_and_forward_next(alpha, None, new_bound, mlp, next)
                });
                if !fused {
                    ws.engine.add_scaled_gradient_to(alpha, mlp.params_mut());
                    ws.engine.carry_params_bound(new_bound, mlp);
                }
                self.state.n_steps = step + 1;
                self.state.last_finite_loss = Some(loss_value);
                let grad_norm = grad_norm_sq.sqrt();
                return Ok(StepReport::from_norms(
                    step,
                    n_samples,
                    loss_value,
                    grad_norm,
                    lr * grad_norm,
                    -lr * grad_norm_sq,
                    lr,
                ));
            }
        }
        // The checked path (momentum, weight decay, or bounds too large to prove): the
        // gradient and the update in reused buffers, every check before θ changes.
        let grad = buffer(&mut ws.grad, mlp.params());
        ws.engine.gradient_into(1.0, grad);
        check_loss_and_gradient(step, self.state.last_finite_loss, loss_value, grad)?;
        let update = buffer(&mut ws.update, mlp.params());
        // update ← g' = g + w θ for now.
        for ((u, g), theta) in update.slices_mut().zip(grad.slices()).zip(mlp.params().slices()) {
            if c.weight_decay != 0.0 {
                for i in 0..u.len() {
                    u[i] = g[i] + c.weight_decay * theta[i];
                }
            } else {
                u.copy_from_slice(g);
            }
        }
        let has_velocity = c.momentum != 0.0;
        if has_velocity {
            // v_new = μ v + g'; update = g' + μ v_new (Nesterov) or v_new.
            let v_new = buffer(&mut ws.velocity, mlp.params());
            let old = self.state.velocity.as_ref();
            for (idx, (v_new, u)) in v_new.slices_mut().zip(update.slices_mut()).enumerate() {
                match old.and_then(|v| v.slices().nth(idx)) {
                    Some(v) => {
                        for i in 0..u.len() {
                            v_new[i] = c.momentum * v[i] + u[i];
                        }
                    }
                    None => {
                        for i in 0..u.len() {
                            v_new[i] = 0.0 * c.momentum + u[i];
                        }
                    }
                }
                for i in 0..u.len() {
                    u[i] = if c.nesterov { u[i] + c.momentum * v_new[i] } else { v_new[i] };
                }
            }
        }
        update.scale(-lr);
        apply_checked(step, loss_value, mlp.params_mut(), update)?;
        let report = StepReport::new(step, n_samples, loss_value, grad, update, lr);
        self.state.n_steps = step + 1;
        self.state.last_finite_loss = Some(loss_value);
        if has_velocity {
            let v_new = ws.velocity.as_mut().expect("filled above");
            match &mut self.state.velocity {
                Some(v) => std::mem::swap(v, v_new),
                None => self.state.velocity = Some(v_new.clone()),
            }
        }
        Ok(report)
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
        self.step_impl(mlp, xs, targets, loss, None)
    }

    fn step_before(
        &mut self,
        mlp: &mut Mlp,
        xs: &ArrayRef2<f64>,
        targets: Targets<'_>,
        loss: Loss,
        next_xs: &ArrayRef2<f64>,
    ) -> Result<StepReport> {
        self.step_impl(mlp, xs, targets, loss, Some(next_xs))
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

//! Adam and AdamW.

use esso_core::{Loss, Mlp, Params, Targets};
use ndarray::ArrayRef2;
use serde::{Deserialize, Serialize};

use crate::engine::{BatchEngine, vectorized};
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
/// layer for the forward pass and backpropagation, into reused buffers). The step itself is
/// one vectorised pass over (g, θ, m, v) that writes the new θ, m and v into reused buffers
/// and sums ‖g‖², ‖u‖², ⟨g, u⟩ and a finiteness probe on the way; the buffers are swapped
/// with the network's parameters and the state only when everything is finite (otherwise the
/// checked path finds and reports the first non-finite quantity), so no step allocates (after
/// the first) and a failed step changes nothing. With one sample the gradient δ aᵀ is formed
/// row by row inside the pass and never stored.
///
/// The pass multiplies by the reciprocals 1/(1 − β1^t) and 1/(1 − β2^t) instead of dividing
/// by the bias corrections: one division and one square root per parameter instead of three
/// divisions and a square root (they bound the pass), at a cost of at most ≈ 4 units in the
/// last place of α m̂/(√v̂ + ε) against the literal formula (relative ≤ 1e-15).
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
    /// θ + u of the fused pass, swapped with the network's parameters on success.
    new_params: Option<Params>,
    /// Zeros for the moments before the first step (never written).
    zeros: Option<Params>,
    /// One row of g = δ aᵀ at B = 1.
    grad_row: Vec<f64>,
}

/// The per-step constants of the fused Adam pass (see [`AdamConfig`]).
#[derive(Debug, Clone, Copy)]
struct AdamStep {
    beta1: f64,
    beta2: f64,
    one_minus_beta1: f64,
    one_minus_beta2: f64,
    /// 1 / (1 − β1^t).
    inv_bias1: f64,
    /// 1 / (1 − β2^t).
    inv_bias2: f64,
    /// α (the base rate: the schedule multiplier is `neg_factor`).
    lr: f64,
    eps: f64,
    /// −η_t.
    neg_factor: f64,
    /// w of L2 decay (0 for AdamW).
    l2: f64,
    /// w of decoupled decay (0 for Adam).
    decay: f64,
}

/// Lane sums of the fused pass: ‖g‖², ‖u‖², ⟨g, u⟩ and a probe that is 0 exactly when every
/// new θ, m and v is finite (x · 0 is NaN for ±∞ and NaN, 0 otherwise).
#[derive(Debug, Clone, Copy, Default)]
struct PassSums {
    gg: [f64; 4],
    uu: [f64; 4],
    gu: [f64; 4],
    probe: [f64; 4],
}

impl PassSums {
    /// Adds gradient `g` and `[θ + u, m, v, u]` of one parameter to lane `lane`.
    #[inline(always)]
    fn add(&mut self, lane: usize, g: f64, [t, m, v, u]: [f64; 4]) {
        self.gg[lane] = g.mul_add(g, self.gg[lane]);
        self.uu[lane] = u.mul_add(u, self.uu[lane]);
        self.gu[lane] = g.mul_add(u, self.gu[lane]);
        self.probe[lane] += (t * 0.0 + m * 0.0) + v * 0.0;
    }

    fn total(lanes: [f64; 4]) -> f64 {
        (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
    }
}

/// One parameter: returns (θ + u, m, v, u) with, for gradient g,
/// g' = g + w θ (L2), m = β1 m_old + (1 − β1) g', v = β2 v_old + (1 − β2) g'²,
/// u = −η_t (α m̂ / (√v̂ + ε) + w θ) (decoupled), m̂ = m / (1 − β1^t), v̂ = v / (1 − β2^t).
#[inline(always)]
fn adam_element(k: &AdamStep, g: f64, theta: f64, m_old: f64, v_old: f64) -> [f64; 4] {
    let g = if k.l2 != 0.0 { g + k.l2 * theta } else { g };
    let m = k.beta1 * m_old + k.one_minus_beta1 * g;
    let v = k.beta2 * v_old + k.one_minus_beta2 * g * g;
    let m_hat = m * k.inv_bias1;
    let v_hat = v * k.inv_bias2;
    let adaptive = k.lr * m_hat / (v_hat.sqrt() + k.eps);
    let u = k.neg_factor * (adaptive + k.decay * theta);
    [theta + u, m, v, u]
}

/// [`adam_element`] over one contiguous slice of parameters (`old` = θ, m, v; `new` = θ + u,
/// m, v), adding to `sums`. Blocks of 256: an element-wise loop (which the compiler
/// vectorises) writes θ + u, m, v and u (to a stack buffer), then a four-lane loop over the
/// block, still in L1, adds the sums.
#[inline(always)]
fn adam_slice(
    k: &AdamStep,
    g: &[f64],
    old: [&[f64]; 3],
    new: [&mut [f64]; 3],
    sums: &mut PassSums,
) {
    const BLOCK: usize = 256;
    let mut u_block = [0.0f64; BLOCK];
    let [theta, m_old, v_old] = old;
    let [theta_new, m_new, v_new] = new;
    let blocks = g
        .chunks(BLOCK)
        .zip(theta.chunks(BLOCK))
        .zip(m_old.chunks(BLOCK))
        .zip(v_old.chunks(BLOCK))
        .zip(theta_new.chunks_mut(BLOCK))
        .zip(m_new.chunks_mut(BLOCK))
        .zip(v_new.chunks_mut(BLOCK));
    for ((((((g, theta), m_old), v_old), theta_new), m_new), v_new) in blocks {
        let u = &mut u_block[..g.len()];
        let elements = g
            .iter()
            .zip(theta)
            .zip(m_old)
            .zip(v_old)
            .zip(theta_new.iter_mut())
            .zip(m_new.iter_mut())
            .zip(v_new.iter_mut())
            .zip(u.iter_mut());
        for (((((((&g, &theta), &m_old), &v_old), theta_new), m_new), v_new), u) in elements {
            [*theta_new, *m_new, *v_new, *u] = adam_element(k, g, theta, m_old, v_old);
        }
        let (theta_new, m_new, v_new, u) = (&*theta_new, &*m_new, &*v_new, &*u);
        let lanes = g
            .chunks_exact(4)
            .zip(u.chunks_exact(4))
            .zip(theta_new.chunks_exact(4))
            .zip(m_new.chunks_exact(4))
            .zip(v_new.chunks_exact(4));
        for ((((g, u), t), m), v) in lanes {
            for lane in 0..4 {
                sums.add(lane, g[lane], [t[lane], m[lane], v[lane], u[lane]]);
            }
        }
        for i in g.len() / 4 * 4..g.len() {
            sums.add(0, g[i], [theta_new[i], m_new[i], v_new[i], u[i]]);
        }
    }
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
        let batch = (xs, targets, loss);
        let last_finite_loss = self.state.last_finite_loss;
        let loss_value =
            self.workspace.engine.forward_backward(mlp, batch, step, last_finite_loss)?;
        if let Some(report) = self.fused_step(mlp, step, loss_value) {
            return Ok(report);
        }
        self.checked_step(mlp, step, loss_value)
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

impl Adam {
    /// The constants of step `step` (0-based; t = step + 1).
    fn step_constants(&self, step: u64) -> AdamStep {
        let c = &self.config;
        let t = (step + 1) as f64;
        let (l2, decay) = match self.mode {
            WeightDecayMode::L2 => (c.weight_decay, 0.0),
            WeightDecayMode::Decoupled => (0.0, c.weight_decay),
        };
        AdamStep {
            beta1: c.beta1,
            beta2: c.beta2,
            one_minus_beta1: 1.0 - c.beta1,
            one_minus_beta2: 1.0 - c.beta2,
            inv_bias1: 1.0 / (1.0 - c.beta1.powf(t)),
            inv_bias2: 1.0 / (1.0 - c.beta2.powf(t)),
            lr: c.lr,
            eps: c.eps,
            neg_factor: -c.schedule.factor(step),
            l2,
            decay,
        }
    }

    /// The step as one fused pass after the engine's forward and backward passes; `None`
    /// (with θ, m, v and the state untouched) when a new θ, m or v is not finite.
    fn fused_step(&mut self, mlp: &mut Mlp, step: u64, loss_value: f64) -> Option<StepReport> {
        let k = self.step_constants(step);
        let ws = &mut self.workspace;
        let params = mlp.params();
        let n_samples = ws.engine.n_samples();
        let grad = if n_samples > 1 {
            let grad = buffer(&mut ws.grad, params);
            ws.engine.gradient_into(1.0, grad);
            Some(&*grad)
        } else {
            let widest = params.layers().iter().map(|l| l.n_inputs().max(l.n_outputs())).max();
            ws.grad_row.resize(widest.unwrap_or(0), 0.0);
            None
        };
        let theta_new = buffer(&mut ws.new_params, params);
        let m_new = buffer(&mut ws.first_moment, params);
        let v_new = buffer(&mut ws.second_moment, params);
        let (m_old, v_old) = match (&self.state.first_moment, &self.state.second_moment) {
            (Some(m), Some(v)) => (m, v),
            (m, v) => {
                let zeros = &*buffer(&mut ws.zeros, params);
                (m.as_ref().unwrap_or(zeros), v.as_ref().unwrap_or(zeros))
            }
        };
        let (engine, grad_row) = (&ws.engine, &mut ws.grad_row);
        let sums = vectorized(
            #[inline(always)]
            || {
                let mut sums = PassSums::default();
                let old = params.slices().zip(m_old.slices()).zip(v_old.slices());
                let new = theta_new.slices_mut().zip(m_new.slices_mut()).zip(v_new.slices_mut());
                for (idx, (((theta, m_old), v_old), ((theta_new, m_new), v_new))) in
                    old.zip(new).enumerate()
                {
                    match grad {
                        Some(grad) => {
                            let g = grad.slices().nth(idx).unwrap_or_default();
                            let (old, new) = ([theta, m_old, v_old], [theta_new, m_new, v_new]);
                            adam_slice(&k, g, old, new, &mut sums);
                        }
                        None => {
                            // B = 1: g = δ aᵀ for the weights (a_j δ_i, as the engine's
                            // gradient), 0 + δ for the biases, one row at a time.
                            let (l, is_bias) = (idx / 2, idx % 2 == 1);
                            let (delta, a) = (engine.delta(l, 0), engine.input(l, 0));
                            if is_bias {
                                let g = &mut grad_row[..delta.len()];
                                g.iter_mut().zip(delta).for_each(|(g, &d)| *g = 0.0 + d);
                                let (old, new) = ([theta, m_old, v_old], [theta_new, m_new, v_new]);
                                adam_slice(&k, g, old, new, &mut sums);
                                continue;
                            }
                            let n_in = a.len();
                            let rows = theta
                                .chunks_exact(n_in)
                                .zip(m_old.chunks_exact(n_in))
                                .zip(v_old.chunks_exact(n_in))
                                .zip(theta_new.chunks_exact_mut(n_in))
                                .zip(m_new.chunks_exact_mut(n_in))
                                .zip(v_new.chunks_exact_mut(n_in))
                                .zip(delta);
                            for ((((((theta, m_old), v_old), theta_new), m_new), v_new), &d) in rows
                            {
                                let g = &mut grad_row[..n_in];
                                g.iter_mut().zip(a).for_each(|(g, &a)| *g = a * d);
                                let (old, new) = ([theta, m_old, v_old], [theta_new, m_new, v_new]);
                                adam_slice(&k, g, old, new, &mut sums);
                            }
                        }
                    }
                }
                sums
            },
        );
        if PassSums::total(sums.probe) != 0.0 {
            return None;
        }
        std::mem::swap(mlp.params_mut(), theta_new);
        for (slot, new) in
            [(&mut self.state.first_moment, m_new), (&mut self.state.second_moment, v_new)]
        {
            match slot {
                Some(old) => std::mem::swap(old, new),
                None => *slot = Some(new.clone()),
            }
        }
        self.state.n_steps = step + 1;
        self.state.last_finite_loss = Some(loss_value);
        let lr = self.config.lr * -k.neg_factor;
        Some(StepReport::from_norms(
            step,
            n_samples,
            loss_value,
            PassSums::total(sums.gg).sqrt(),
            PassSums::total(sums.uu).sqrt(),
            PassSums::total(sums.gu),
            lr,
        ))
    }

    /// The step with every check in the order of the [`Optimizer`] contract (gradient,
    /// update, parameters, moments), for the rare steps the fused pass refuses: it returns
    /// the divergence error naming the first non-finite quantity.
    fn checked_step(&mut self, mlp: &mut Mlp, step: u64, loss_value: f64) -> Result<StepReport> {
        let k = self.step_constants(step);
        let ws = &mut self.workspace;
        let n_samples = ws.engine.n_samples();
        let grad = buffer(&mut ws.grad, mlp.params());
        ws.engine.gradient_into(1.0, grad);
        check_loss_and_gradient(step, self.state.last_finite_loss, loss_value, grad)?;
        let lr = self.config.lr * -k.neg_factor;
        let update = buffer(&mut ws.update, mlp.params());
        let m_new = buffer(&mut ws.first_moment, mlp.params());
        let v_new = buffer(&mut ws.second_moment, mlp.params());
        let (m_old, v_old) = (self.state.first_moment.as_ref(), self.state.second_moment.as_ref());
        // Slice by slice (weight, bias of each layer), the fused pass's arithmetic. Without
        // moments yet (t = 1) they are 0.
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
                let [_, m_i, v_i, u_i] = adam_element(&k, g[i], theta[i], m[i], v[i]);
                (m[i], v[i], u[i]) = (m_i, v_i, u_i);
            }
        }
        check_update(step, loss_value, mlp.params(), update)?;
        if !(m_new.is_finite() && v_new.is_finite()) {
            return Err(diverged(step, Some(loss_value), NonFiniteQuantity::Update));
        }
        add_in_place(mlp.params_mut(), update);
        let report = StepReport::new(step, n_samples, loss_value, grad, update, lr);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use esso_core::{Activation, Init};
    use ndarray::Array2;
    use rand::SeedableRng;

    /// The fused pass (gradient rows formed inside the pass at B = 1, the materialised
    /// gradient at B > 1) and the checked path (materialised gradient, separate checks) give
    /// the same θ, m and v bit for bit, and the same report to rounding, over several steps
    /// with a warm-up schedule.
    #[test]
    fn fused_pass_equals_the_checked_path_bit_for_bit() {
        for (mode, wd) in [(WeightDecayMode::L2, 0.01), (WeightDecayMode::Decoupled, 0.05)] {
            for b in [1, 3] {
                for act in [Activation::Tanh, Activation::Relu] {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
                    let mlp = Mlp::new(&[19, 7, 5, 3], act, Init::GlorotUniform, &mut rng).unwrap();
                    let config = AdamConfig {
                        weight_decay: wd,
                        schedule: Schedule {
                            warmup_steps: 2,
                            decay: crate::schedule::Decay::Constant,
                        },
                        ..AdamConfig::with_lr(0.02)
                    };
                    let (mut fused, mut checked) =
                        (config.build(mode).unwrap(), config.build(mode).unwrap());
                    let (mut mlp_f, mut mlp_c) = (mlp.clone(), mlp);
                    for step in 0..4u64 {
                        let xs = Array2::from_shape_fn((b, 19), |(i, j)| {
                            ((step as usize * 57 + i * 19 + j) as f64 * 0.41).sin()
                        });
                        let classes: Vec<usize> = (0..b).map(|i| (i + step as usize) % 3).collect();
                        let batch = (&*xs, Targets::Classes(&classes), Loss::CrossEntropy);
                        let mut reports = Vec::new();
                        for (opt, mlp, use_fused) in
                            [(&mut fused, &mut mlp_f, true), (&mut checked, &mut mlp_c, false)]
                        {
                            let loss = opt
                                .workspace
                                .engine
                                .forward_backward(mlp, batch, step, None)
                                .unwrap();
                            reports.push(if use_fused {
                                opt.fused_step(mlp, step, loss).unwrap()
                            } else {
                                opt.checked_step(mlp, step, loss).unwrap()
                            });
                        }
                        let bits = |p: &Params| p.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(mlp_f.params()), bits(mlp_c.params()), "{mode:?} B={b}");
                        assert_eq!(fused.state, checked.state, "{mode:?} B = {b} {act}");
                        let (r, s) = (&reports[0], &reports[1]);
                        assert_eq!((r.step, r.n_samples, r.loss), (s.step, s.n_samples, s.loss));
                        assert_eq!(r.learning_rate, s.learning_rate);
                        for (x, y) in [
                            (r.grad_norm, s.grad_norm),
                            (r.step_norm, s.step_norm),
                            (r.cos_to_neg_grad.unwrap(), s.cos_to_neg_grad.unwrap()),
                        ] {
                            assert!((x - y).abs() <= 1e-14 * y.abs(), "{mode:?} B={b}: {x} {y}");
                        }
                    }
                }
            }
        }
    }
}

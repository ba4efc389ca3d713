//! The optimiser interface shared by ESSO and the baselines, its step report and its state.

use esso_core::{Loss, Mlp, Params, Targets};
use ndarray::ArrayRef2;
use serde::{Deserialize, Serialize};

use crate::adam::AdamState;
use crate::error::{NonFiniteQuantity, OptimError, Result};
use crate::esso::EssoState;
use crate::sgd::SgdState;

/// One optimiser: a step on the network for one sample or one mini-batch.
///
/// Hyperparameters are fixed at construction (see [`crate::OptimizerConfig::build`]); the
/// per-run memory (step counter, momentum, moments, running means) is owned by the
/// optimiser and can be exported with [`Optimizer::state`] and restored with
/// [`Optimizer::load_state`], so that a run resumed from a checkpoint is bit-identical to an
/// uninterrupted one.
///
/// Every step follows the same contract:
/// 1. measure the loss and gradient (and, for ESSO, the curvature) at the current weights;
/// 2. compute the update and the new state without touching the network;
/// 3. check that loss, gradient, update and new parameters are finite;
/// 4. only then write the new parameters into `mlp` and advance the state.
///
/// So after any error the network and the state are exactly as they were before the call.
///
/// # Errors
/// [`OptimError::Diverged`] when a loss, gradient, update or parameter is non-finite;
/// [`OptimError::EmptyBatch`]; [`OptimError::StateMismatch`] when a loaded state does not fit
/// the network; target and shape errors of esso-core; eigensolver errors of esso-hessian.
///
/// # Examples
/// ```
/// use esso_core::{Activation, Init, Loss, Mlp, Targets};
/// use esso_optim::{Optimizer, OptimizerConfig, SgdConfig};
/// use rand::SeedableRng;
///
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let mut mlp = Mlp::new(&[2, 3, 2], Activation::Tanh, Init::GlorotUniform, &mut rng)?;
/// let config: OptimizerConfig = toml::from_str(r#"kind = "sgd"
/// lr = 0.1
/// momentum = 0.9"#)?;
/// let mut opt = config.build()?;
/// let xs = ndarray::array![[0.5, -1.0], [1.0, 0.2]];
/// let report = opt.step(&mut mlp, &xs, Targets::Classes(&[0, 1]), Loss::CrossEntropy)?;
/// assert_eq!(report.step, 0);
/// assert_eq!(opt.n_steps(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Optimizer: Send + std::fmt::Debug {
    /// A short name (`sgd`, `adam`, `adamw`, `esso`).
    fn name(&self) -> &'static str;

    /// One step on the mini-batch `xs` (one row per sample) with its `targets`.
    ///
    /// Returns the loss measured before the step and the step's diagnostics.
    ///
    /// # Shapes
    /// `xs` is B × n_0 with B ≥ 1; `targets` has B entries.
    ///
    /// # Errors
    /// See the trait docs. On error, `mlp` and the optimiser state are unchanged.
    fn step(
        &mut self,
        mlp: &mut Mlp,
        xs: &ArrayRef2<f64>,
        targets: Targets<'_>,
        loss: Loss,
    ) -> Result<StepReport>;

    /// [`Optimizer::step`], told the inputs `next_xs` of the step that will follow: an
    /// optimiser may then do part of that step's work on its way (plain SGD and the layer-wise
    /// ESSO step at B = 1 fuse their in-place update with the forward pass of `next_xs`, one
    /// pass over the weights instead of two). The network and the report are bit for bit those of
    /// [`Optimizer::step`]; work done ahead is used only if the next step gets the same
    /// inputs and the network is unchanged ([`Mlp::generation`]), and is recomputed
    /// otherwise. The default ignores `next_xs`.
    ///
    /// # Errors
    /// As [`Optimizer::step`].
    fn step_before(
        &mut self,
        mlp: &mut Mlp,
        xs: &ArrayRef2<f64>,
        targets: Targets<'_>,
        loss: Loss,
        next_xs: &ArrayRef2<f64>,
    ) -> Result<StepReport> {
        let _ = next_xs;
        self.step(mlp, xs, targets, loss)
    }

    /// Number of steps completed (the index of the next step).
    fn n_steps(&self) -> u64;

    /// The learning rate the next step will use: base rate × schedule multiplier.
    fn learning_rate(&self) -> f64;

    /// A copy of the per-run state, for checkpoints.
    fn state(&self) -> OptimizerState;

    /// Restores a state exported by [`Optimizer::state`] of an optimiser of the same kind.
    ///
    /// # Errors
    /// [`OptimError::StateMismatch`] when the state belongs to another kind of optimiser.
    /// Shapes are checked against the network at the next step.
    fn load_state(&mut self, state: OptimizerState) -> Result<()>;
}

/// The serialisable per-run state of any optimiser (serde: tagged by `kind`).
///
/// JSON round trips are bit-exact (serde_json's `float_roundtrip`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerState {
    /// State of [`crate::Sgd`].
    Sgd(SgdState),
    /// State of [`crate::Adam`] (Adam and AdamW).
    Adam(AdamState),
    /// State of [`crate::Esso`].
    Esso(EssoState),
}

impl OptimizerState {
    /// Steps completed.
    pub fn n_steps(&self) -> u64 {
        match self {
            OptimizerState::Sgd(s) => s.n_steps(),
            OptimizerState::Adam(s) => s.n_steps(),
            OptimizerState::Esso(s) => s.n_steps(),
        }
    }

    /// The state as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("optimizer states serialise to JSON")
    }

    /// A state from JSON.
    ///
    /// # Errors
    /// [`OptimError::Json`].
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| OptimError::Json { message: e.to_string() })
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            OptimizerState::Sgd(_) => "sgd",
            OptimizerState::Adam(_) => "adam",
            OptimizerState::Esso(_) => "esso",
        }
    }
}

/// What one step measured.
///
/// Everything is computed at the weights before the step; the update is θ_new − θ_old.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Index of this step (0-based; the optimiser's step counter before the step).
    pub step: u64,
    /// Number of samples B in the step.
    pub n_samples: usize,
    /// Mean loss of the B samples before the step (without any weight-decay term).
    pub loss: f64,
    /// ‖g‖, the norm of the mean gradient g before the step.
    pub grad_norm: f64,
    /// ‖θ_new − θ_old‖, the norm of the applied update.
    pub step_norm: f64,
    /// cos(θ_new − θ_old, −g); `None` when the update or the gradient is zero.
    pub cos_to_neg_grad: Option<f64>,
    /// The learning rate used: base rate × schedule multiplier.
    pub learning_rate: f64,
    /// ESSO only (empty for the baselines): per layer, the exact eigenvalues of the
    /// single-sample Hessian block, summarised over the batch.
    pub layers: Vec<SpectrumSummary>,
    /// ESSO with [`crate::CurvatureScope::FullNetwork`] only: the exact non-zero eigenvalues
    /// of the whole single-sample Hessian (method.md §4), summarised over the batch.
    pub network: Option<SpectrumSummary>,
}

/// Summary of exact single-sample Hessian eigenvalues over the samples of a step: for a
/// layer, the n_l non-trivial eigenvalues ‖ã_{l−1}‖² μ_i of its block (method.md §3); for the
/// whole network, the eigenvalues on the range of Kᵀ (method.md §4).
///
/// Structural zero eigenvalues are not counted; a value is negative when below
/// −`esso_hessian::ZERO_EIGENVALUE_RTOL` × (largest |e| of its sample).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpectrumSummary {
    /// Smallest eigenvalue over the batch's samples.
    pub min_eigenvalue: f64,
    /// Largest eigenvalue over the batch's samples.
    pub max_eigenvalue: f64,
    /// Number of negative eigenvalues, summed over the batch's samples (for B = 1 the count
    /// of the one sample).
    pub n_negative: usize,
    /// λ used with these eigenvalues (λ_l for a layer; differs across layers only with
    /// [`crate::LambdaScaling::InputNorm`]).
    pub lambda: f64,
}

impl StepReport {
    /// A report from the gradient and the applied update.
    pub(crate) fn new(
        step: u64,
        n_samples: usize,
        loss: f64,
        grad: &Params,
        update: &Params,
        learning_rate: f64,
    ) -> Self {
        Self::from_norms(
            step,
            n_samples,
            loss,
            grad.norm(),
            update.norm(),
            grad.dot(update),
            learning_rate,
        )
    }

    /// A report from ‖g‖, ‖update‖ and ⟨g, update⟩, computed by the caller (from the
    /// rank-one factors on the in-place paths, without materialising g).
    pub(crate) fn from_norms(
        step: u64,
        n_samples: usize,
        loss: f64,
        grad_norm: f64,
        step_norm: f64,
        grad_dot_update: f64,
        learning_rate: f64,
    ) -> Self {
        let cos_to_neg_grad = (grad_norm > 0.0 && step_norm > 0.0)
            .then(|| -grad_dot_update / (grad_norm * step_norm));
        StepReport {
            step,
            n_samples,
            loss,
            grad_norm,
            step_norm,
            cos_to_neg_grad,
            learning_rate,
            layers: Vec::new(),
            network: None,
        }
    }
}

/// The divergence error for step `step`.
pub(crate) fn diverged(
    step: u64,
    last_finite_loss: Option<f64>,
    quantity: NonFiniteQuantity,
) -> OptimError {
    OptimError::Diverged { step, last_finite_loss, quantity }
}

/// Checks the measured loss and gradient; returns the last finite loss to report.
pub(crate) fn check_loss_and_gradient(
    step: u64,
    last_finite_loss: Option<f64>,
    loss: f64,
    grad: &Params,
) -> Result<()> {
    if !loss.is_finite() {
        return Err(diverged(step, last_finite_loss, NonFiniteQuantity::Loss));
    }
    if !grad.is_finite() {
        return Err(diverged(step, Some(loss), NonFiniteQuantity::Gradient));
    }
    Ok(())
}

/// θ + update, checked: returns the new parameters, or the divergence error.
pub(crate) fn checked_update(
    step: u64,
    loss: f64,
    params: &Params,
    update: &Params,
) -> Result<Params> {
    if !update.is_finite() {
        return Err(diverged(step, Some(loss), NonFiniteQuantity::Update));
    }
    let mut new_params = params.clone();
    new_params.axpy(1.0, update);
    if !new_params.is_finite() {
        return Err(diverged(step, Some(loss), NonFiniteQuantity::Parameters));
    }
    Ok(new_params)
}

/// θ ← θ + update, checked first without touching θ: the update, then every θ_i + u_i
/// (computed exactly as it will be applied). No allocation.
///
/// # Errors
/// [`OptimError::Diverged`] with [`NonFiniteQuantity::Update`] or
/// [`NonFiniteQuantity::Parameters`]; `params` is unchanged then.
pub(crate) fn apply_checked(
    step: u64,
    loss: f64,
    params: &mut Params,
    update: &Params,
) -> Result<()> {
    check_update(step, loss, params, update)?;
    add_in_place(params, update);
    Ok(())
}

/// The checks of [`apply_checked`] alone: the update is finite, and so is every θ_i + u_i.
///
/// # Errors
/// As [`apply_checked`].
pub(crate) fn check_update(step: u64, loss: f64, params: &Params, update: &Params) -> Result<()> {
    if !update.is_finite() {
        return Err(diverged(step, Some(loss), NonFiniteQuantity::Update));
    }
    assert!(params.same_shape(update), "update has other shapes than the parameters");
    let all_finite = params.slices().zip(update.slices()).all(|(p, u)| {
        let mut probe = 0.0;
        for (&p, &u) in p.iter().zip(u) {
            probe += (p + u) * 0.0;
        }
        probe == 0.0
    });
    if !all_finite {
        return Err(diverged(step, Some(loss), NonFiniteQuantity::Parameters));
    }
    Ok(())
}

/// θ ← θ + update, unchecked (after [`check_update`]).
pub(crate) fn add_in_place(params: &mut Params, update: &Params) {
    for (p, u) in params.slices_mut().zip(update.slices()) {
        for (p, &u) in p.iter_mut().zip(u) {
            *p += u;
        }
    }
}

/// A buffer shaped like `like`, reused when it already has that shape.
pub(crate) fn buffer<'a>(slot: &'a mut Option<Params>, like: &Params) -> &'a mut Params {
    if !slot.as_ref().is_some_and(|b| b.same_shape(like)) {
        *slot = Some(Params::zeros_like(like));
    }
    slot.as_mut().expect("just filled")
}

/// The error for a state of the wrong kind.
pub(crate) fn wrong_kind(expected: &'static str, got: &OptimizerState) -> OptimError {
    OptimError::StateMismatch {
        reason: format!("expected a {expected} state, got a {} state", got.kind()),
    }
}

/// Checks that a stored buffer has the network's shape.
pub(crate) fn check_buffer(name: &str, buffer: Option<&Params>, mlp: &Mlp) -> Result<()> {
    match buffer {
        Some(b) if !b.same_shape(mlp.params()) => Err(OptimError::StateMismatch {
            reason: format!("{name} has other shapes than the network"),
        }),
        _ => Ok(()),
    }
}

/// Checks B ≥ 1 and that there are as many targets as samples.
pub(crate) fn check_batch(xs: &ArrayRef2<f64>, targets: Targets<'_>) -> Result<()> {
    if xs.nrows() == 0 {
        return Err(OptimError::EmptyBatch);
    }
    if targets.len() != xs.nrows() {
        return Err(esso_core::CoreError::TargetCount {
            n_samples: xs.nrows(),
            n_targets: targets.len(),
        }
        .into());
    }
    Ok(())
}

//! ESSO: the exact stochastic (single-sample) Newton optimiser of method.md §3, §4 and §6.

use esso_core::{Dense, ForwardTrace, Loss, Mlp, Params, SecondOrderTrace, Target, Targets};
use esso_hessian::{
    FullHessian, HessianError, Inertia, LayerCurvature, SpectralFn, SpectralKind,
    ZERO_EIGENVALUE_RTOL,
};
use ndarray::{Array1, ArrayRef2, ArrayView1};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{NonFiniteQuantity, OptimError, Result, non_negative, unit_interval};
use crate::optimizer::{
    Optimizer, OptimizerState, SpectrumSummary, StepReport, checked_update, diverged, wrong_kind,
};
use crate::schedule::Schedule;

/// Which curvature the Newton direction uses.
///
/// Serde: `"layerwise"` (the default) or `"full_network"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CurvatureScope {
    /// Each layer's exact Hessian block B_l = (ã ãᵀ) ⊗ H_l on its own (method.md §3):
    /// D_l = −U f(‖ã‖² μ) Uᵀ δ_l ãᵀ, rank one, one n_l × n_l eigendecomposition per layer.
    #[default]
    Layerwise,
    /// The exact single-sample Hessian of the whole network, cross-layer blocks included
    /// (method.md §4), d = −Kᵀ G^{−1/2} V f(Λ) Vᵀ G^{−1/2} K g. Costs O(m³ + m N) per
    /// sample with m = Σ n_l + Σ_{l<L} n_l: for small and medium nets.
    FullNetwork,
}

/// How ESSO combines the B samples of a mini-batch.
///
/// Serde: `"averaged_per_sample"` (the only mode, and the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchMode {
    /// d = (1/B) Σ_i d^i: the mean of the B single-sample Newton directions, all computed at
    /// the same weights. For B = 1 this is the exact stochastic Newton step; for B > 1 it is
    /// **not** the Newton step of the batch loss (whose Hessian Σ_i H_i has no closed form).
    #[default]
    AveragedPerSample,
}

/// How λ is chosen per layer.
///
/// Serde: internally tagged by `kind`: `{ kind = "global" }` (the default) or
/// `{ kind = "input_norm", decay = 0.99 }`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LambdaScaling {
    /// λ_l = λ for every layer.
    #[default]
    Global,
    /// λ_l = λ · m̂_l, with m̂_l the bias-corrected exponential running mean of ‖ã_{l−1}‖²:
    ///
    /// ```text
    /// x̄_l(t) = mean over the step's samples of ‖ã_{l−1}‖² = ‖a_{l−1}‖² + 1   (pre-step weights)
    /// m_l(t) = ρ m_l(t−1) + (1 − ρ) x̄_l(t),   m_l(0) = 0,   t = 1, 2, …
    /// m̂_l(t) = m_l(t) / (1 − ρ^t)
    /// λ_l(t) = λ · m̂_l(t)
    /// ```
    ///
    /// The current step's samples are included, so the first step uses x̄_l(1). As the
    /// block eigenvalues are ‖ã‖² μ_i, this makes λ relative to the eigenvalues μ of H_l:
    /// for one sample f(‖ã‖² μ) with λ‖ã‖² is 1/‖ã‖² × (1/(|μ| + λ)) for the absolute
    /// function. Only with [`CurvatureScope::Layerwise`].
    InputNorm {
        /// ρ ∈ [0, 1); 0 uses the current step's mean only.
        decay: f64,
    },
}

/// Hyperparameters of [`Esso`] (serde, inside [`crate::OptimizerConfig`] as
/// `{ kind = "esso", lr = 0.1, lambda = 3.0, spectral = "absolute" }`).
///
/// The method hyperparameters `lr`, `lambda` and `spectral` have no defaults; `clip`,
/// `scope`, `lambda_scaling` and `schedule` default to none, layer-wise, global and constant.
///
/// # Reference
/// F. B. Mehouachi and C. Kasmi, "Exact Stochastic Second Order Deep Learning",
/// arXiv:2104.03804 (2021). Only the abstract is known; the algorithm here is the project's
/// reconstruction (docs/method-esso-optimizer.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EssoConfig {
    /// Base step length η ≥ 0 (θ ← θ + η_t d).
    pub lr: f64,
    /// Regularisation λ > 0 added to the curvature (λ I).
    pub lambda: f64,
    /// The spectral function f: `"absolute"` (the main method), `"damped"`, `"floor"` or
    /// `{ power = { alpha = 0.5 } }`.
    pub spectral: SpectralKind,
    /// Optional cap e_max > 0 on |e| before f (sign kept).
    #[serde(default)]
    pub clip: Option<f64>,
    /// Layer-wise (default) or whole-network curvature.
    #[serde(default)]
    pub scope: CurvatureScope,
    /// Global λ (default) or λ scaled per layer by the running mean of ‖ã_{l−1}‖².
    #[serde(default)]
    pub lambda_scaling: LambdaScaling,
    /// Schedule of η (default constant).
    #[serde(default)]
    pub schedule: Schedule,
    /// How a mini-batch is combined (default and only mode: averaged per-sample directions).
    #[serde(default)]
    pub batch_mode: BatchMode,
}

impl EssoConfig {
    /// The main method: absolute spectral function, layer-wise, global λ, constant η.
    pub fn absolute(lr: f64, lambda: f64) -> Self {
        EssoConfig {
            lr,
            lambda,
            spectral: SpectralKind::Absolute,
            clip: None,
            scope: CurvatureScope::Layerwise,
            lambda_scaling: LambdaScaling::Global,
            schedule: Schedule::default(),
            batch_mode: BatchMode::AveragedPerSample,
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`OptimError::InvalidParam`] naming `lr` (negative or non-finite), `lambda` (≤ 0 or
    /// non-finite), `alpha` (∉ (0, 1]), `clip` (≤ 0), `lambda_scaling.decay` (∉ [0, 1)) or a
    /// schedule field; [`OptimError::IncompatibleOptions`] for input-norm λ scaling with the
    /// whole-network scope.
    pub fn validate(&self) -> Result<()> {
        self.spectral_fn().map(|_| ())
    }

    fn spectral_fn(&self) -> Result<SpectralFn> {
        non_negative("lr", self.lr)?;
        let spectral =
            SpectralFn::new(self.spectral, self.lambda, self.clip).map_err(|e| match e {
                HessianError::InvalidParameter { name, value, reason } => {
                    OptimError::InvalidParam { name, value, reason }
                }
                other => other.into(),
            })?;
        if let LambdaScaling::InputNorm { decay } = self.lambda_scaling {
            unit_interval("lambda_scaling.decay", decay)?;
            if self.scope == CurvatureScope::FullNetwork {
                return Err(OptimError::IncompatibleOptions {
                    reason: "lambda_scaling = input_norm needs scope = layerwise (the whole-network Hessian has one lambda)",
                });
            }
        }
        self.schedule.validate()?;
        Ok(spectral)
    }

    /// A fresh optimiser.
    ///
    /// # Errors
    /// As [`EssoConfig::validate`].
    pub fn build(&self) -> Result<Esso> {
        let spectral = self.spectral_fn()?;
        Ok(Esso {
            config: *self,
            spectral,
            state: EssoState::default(),
            pool: Vec::new(),
            fast: Default::default(),
            fast_steps: 0,
        })
    }
}

/// The per-run state of [`Esso`]: the step counter and, with
/// [`LambdaScaling::InputNorm`], the running means m_l of ‖ã_{l−1}‖². The exact Newton step
/// itself has no memory.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EssoState {
    n_steps: u64,
    last_finite_loss: Option<f64>,
    input_norm_mean: Option<Vec<f64>>,
}

impl EssoState {
    /// Steps completed.
    pub fn n_steps(&self) -> u64 {
        self.n_steps
    }

    /// The biased running means m_l of ‖ã_{l−1}‖², one per layer (input-norm λ scaling only).
    pub fn input_norm_mean(&self) -> Option<&[f64]> {
        self.input_norm_mean.as_deref()
    }
}

/// Reusable per-sample buffers.
#[derive(Debug, Clone)]
struct Workspace {
    sizes: Vec<usize>,
    forward: ForwardTrace,
    second: SecondOrderTrace,
}

impl Workspace {
    fn new(mlp: &Mlp) -> Self {
        Workspace {
            sizes: mlp.sizes(),
            forward: ForwardTrace::new(mlp),
            second: SecondOrderTrace::new(mlp),
        }
    }
}

/// What one sample contributes, computed at the pre-step weights.
struct SampleOut {
    loss: f64,
    /// δ_l per layer.
    deltas: Vec<Array1<f64>>,
    /// a_{l−1} per layer (without the bias 1).
    inputs: Vec<Array1<f64>>,
    /// Whether loss, δ_l and a_{l−1} are all finite (curvature is skipped otherwise).
    finite: bool,
    /// The layer curvatures (empty when not finite).
    layers: Vec<LayerCurvature>,
    /// The whole-network direction and its (min, max, n_negative) eigenvalue summary
    /// ([`CurvatureScope::FullNetwork`] only).
    full_direction: Option<(Params, (f64, f64, usize))>,
    /// A curvature error, reported after the loss and gradient checks.
    error: Option<HessianError>,
}

/// The exact stochastic Newton optimiser (see [`EssoConfig`] and
/// docs/method-esso-optimizer.md).
///
/// One step on a batch of B samples, all at the same weights θ:
///
/// ```text
/// for each sample i (in parallel):  forward; exact second-order sweep (δ_l, H_l);
///     layer-wise:    D_l^i = −U_l f_l(‖ã‖² μ) U_lᵀ δ_l ã_{l−1}ᵀ   (esso_hessian::LayerCurvature)
///     whole network: d^i = −(f(H_i)) g_i                          (esso_hessian::FullHessian)
/// d = (1/B) Σ_i d^i        (summed in sample order: identical for any thread count)
/// θ ← θ + η_t d
/// ```
///
/// B = 1 is the exact stochastic Newton step with the chosen spectral function. For B > 1
/// the step averages B single-sample Newton directions ([`BatchMode::AveragedPerSample`]);
/// it is **not** the Newton step of the batch loss, whose Hessian is the sum of the
/// per-sample Hessians and has no closed form.
///
/// # Errors
/// Besides the common ones of [`Optimizer::step`]: [`OptimError::Hessian`] when an
/// eigendecomposition fails or the damped function meets e + λ ≤ 0
/// ([`HessianError::NonPositiveShift`]); a non-finite H_l is reported as
/// [`OptimError::Diverged`] with [`NonFiniteQuantity::Curvature`].
#[derive(Debug, Clone)]
pub struct Esso {
    config: EssoConfig,
    spectral: SpectralFn,
    state: EssoState,
    pool: Vec<Workspace>,
    fast: crate::esso_fast::FastWorkspace,
    fast_steps: u64,
}

impl Esso {
    /// [`Optimizer::step`]; the fast layer-wise path at B = 1 fuses its in-place update with
    /// the forward pass of `next_xs` when given.
    fn step_impl(
        &mut self,
        mlp: &mut Mlp,
        xs: &ArrayRef2<f64>,
        targets: Targets<'_>,
        loss: Loss,
        next_xs: Option<&ArrayRef2<f64>>,
    ) -> Result<StepReport> {
        let step = self.state.n_steps;
        if self.config.scope == CurvatureScope::Layerwise
            && self.config.lambda_scaling == LambdaScaling::Global
            && xs.nrows() > 0
            && targets.len() == xs.nrows()
        {
            let lr = self.learning_rate();
            let fast = crate::esso_fast::fast_step(
                &mut self.fast,
                mlp,
                xs,
                targets,
                loss,
                &self.spectral,
                lr,
                next_xs,
            );
            if let Some(out) = fast {
                self.fast_steps += 1;
                self.state.n_steps = step + 1;
                self.state.last_finite_loss = Some(out.loss);
                let mut report = StepReport::from_norms(
                    step,
                    xs.nrows(),
                    out.loss,
                    out.grad_norm,
                    out.step_norm,
                    out.grad_dot_update,
                    lr,
                );
                report.layers = out
                    .layers
                    .iter()
                    .map(|&(min_eigenvalue, max_eigenvalue, n_negative)| SpectrumSummary {
                        min_eigenvalue,
                        max_eigenvalue,
                        n_negative,
                        lambda: self.spectral.lambda(),
                    })
                    .collect();
                return Ok(report);
            }
        }
        let computed = self.compute(mlp, xs, targets, loss)?;
        let lr = self.learning_rate();
        let mut update = computed.direction;
        update.scale(lr);
        let new_params = checked_update(step, computed.loss, mlp.params(), &update)?;
        *mlp.params_mut() = new_params;
        self.state = EssoState {
            n_steps: step + 1,
            last_finite_loss: Some(computed.loss),
            input_norm_mean: computed.input_norm_mean,
        };
        let mut report =
            StepReport::new(step, xs.nrows(), computed.loss, &computed.gradient, &update, lr);
        report.layers = computed.spectra;
        report.network = computed.network;
        Ok(report)
    }

    /// The hyperparameters.
    pub fn config(&self) -> &EssoConfig {
        &self.config
    }

    /// How many steps of this optimiser took the fast path (layer-wise scope, global λ): the
    /// batched forward and backward, eigenvector-free exact solves per layer (the reduced
    /// r × r problem when H_l = Gᵀ G, tridiagonalisation otherwise) and the update applied in
    /// place. The other steps (whole-network scope, input-norm λ, or a step that must report
    /// an error) take the general path; both give the same numbers up to rounding.
    pub fn fast_steps(&self) -> u64 {
        self.fast_steps
    }

    /// The spectral function with the global λ.
    pub fn spectral_fn(&self) -> &SpectralFn {
        &self.spectral
    }

    /// The averaged direction d = (1/B) Σ_i d^i at the current weights (not scaled by η),
    /// with the batch's mean loss and mean gradient, without changing the network or the
    /// state. With [`LambdaScaling::InputNorm`] it uses the running means as
    /// [`Optimizer::step`] would at this point.
    ///
    /// # Errors
    /// As [`Optimizer::step`].
    pub fn direction(
        &mut self,
        mlp: &Mlp,
        xs: &ArrayRef2<f64>,
        targets: Targets<'_>,
        loss: Loss,
    ) -> Result<(f64, Params, Params)> {
        let computed = self.compute(mlp, xs, targets, loss)?;
        Ok((computed.loss, computed.gradient, computed.direction))
    }

    fn compute(
        &mut self,
        mlp: &Mlp,
        xs: &ArrayRef2<f64>,
        targets: Targets<'_>,
        loss: Loss,
    ) -> Result<Computed> {
        crate::optimizer::check_batch(xs, targets)?;
        let step = self.state.n_steps;
        let n_samples = xs.nrows();
        let n_layers = mlp.n_layers();
        if let Some(m) = &self.state.input_norm_mean
            && m.len() != n_layers
        {
            return Err(OptimError::StateMismatch {
                reason: format!("{} running means for a network of {n_layers} layers", m.len()),
            });
        }
        let samples = self.per_sample(mlp, xs, targets, loss)?;

        // Loss and gradient checks, in sample order.
        let scale = 1.0 / n_samples as f64;
        let mean_loss = samples.iter().map(|s| s.loss).sum::<f64>() * scale;
        if !mean_loss.is_finite() {
            return Err(diverged(step, self.state.last_finite_loss, NonFiniteQuantity::Loss));
        }
        if samples.iter().any(|s| !s.finite) {
            return Err(diverged(step, Some(mean_loss), NonFiniteQuantity::Gradient));
        }
        let mut gradient = Params::zeros_like(mlp.params());
        for s in &samples {
            for (layer_idx, layer) in gradient.layers_mut().iter_mut().enumerate() {
                add_outer(layer, scale, &s.deltas[layer_idx], &s.inputs[layer_idx]);
            }
        }
        if !gradient.is_finite() {
            return Err(diverged(step, Some(mean_loss), NonFiniteQuantity::Gradient));
        }
        for s in &samples {
            match &s.error {
                Some(HessianError::NonFinite { .. }) => {
                    return Err(diverged(step, Some(mean_loss), NonFiniteQuantity::Curvature));
                }
                Some(e) => return Err(e.clone().into()),
                None => {}
            }
        }

        // λ per layer.
        let (lambdas, input_norm_mean) = match self.config.lambda_scaling {
            LambdaScaling::Global => (vec![self.spectral.lambda(); n_layers], None),
            LambdaScaling::InputNorm { decay } => {
                let mut m =
                    self.state.input_norm_mean.clone().unwrap_or_else(|| vec![0.0; n_layers]);
                let t = (step + 1) as f64;
                let correction = 1.0 - decay.powf(t);
                let mut lambdas = Vec::with_capacity(n_layers);
                for (layer_idx, m_l) in m.iter_mut().enumerate() {
                    let mean_norm = samples
                        .iter()
                        .map(|s| s.inputs[layer_idx].iter().map(|a| a * a).sum::<f64>() + 1.0)
                        .sum::<f64>()
                        * scale;
                    *m_l = decay * *m_l + (1.0 - decay) * mean_norm;
                    lambdas.push(self.spectral.lambda() * *m_l / correction);
                }
                (lambdas, Some(m))
            }
        };

        // Directions, reduced in sample order.
        let mut direction = Params::zeros_like(mlp.params());
        match self.config.scope {
            CurvatureScope::Layerwise => {
                let fns = lambdas
                    .iter()
                    .map(|&l| self.spectral.with_lambda(l))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let factors_of = |s: &SampleOut| {
                    s.layers
                        .iter()
                        .zip(&s.deltas)
                        .zip(&fns)
                        .map(|((c, d), f)| c.checked_direction_factor(d, f))
                        .collect::<std::result::Result<Vec<_>, _>>()
                };
                let factors: Vec<_> = if samples.len() == 1 {
                    samples.iter().map(factors_of).collect()
                } else {
                    samples.par_iter().map(factors_of).collect()
                };
                for (s, u) in samples.iter().zip(factors) {
                    let u = u?;
                    for (layer_idx, layer) in direction.layers_mut().iter_mut().enumerate() {
                        add_outer(layer, -scale, &u[layer_idx], &s.inputs[layer_idx]);
                    }
                }
            }
            CurvatureScope::FullNetwork => {
                for s in &samples {
                    let (d, _) = s.full_direction.as_ref().expect("computed for the full scope");
                    direction.axpy(scale, d);
                }
            }
        }

        let spectra = (0..n_layers)
            .map(|layer_idx| {
                let mut spectrum = SpectrumSummary {
                    min_eigenvalue: f64::INFINITY,
                    max_eigenvalue: f64::NEG_INFINITY,
                    n_negative: 0,
                    lambda: lambdas[layer_idx],
                };
                for s in &samples {
                    let values = s.layers[layer_idx].eigenvalues();
                    for &e in values.iter() {
                        spectrum.min_eigenvalue = spectrum.min_eigenvalue.min(e);
                        spectrum.max_eigenvalue = spectrum.max_eigenvalue.max(e);
                    }
                    spectrum.n_negative +=
                        Inertia::from_eigenvalues(values.iter().copied(), 0, ZERO_EIGENVALUE_RTOL)
                            .negative;
                }
                spectrum
            })
            .collect();
        let network = (self.config.scope == CurvatureScope::FullNetwork).then(|| {
            let mut summary = SpectrumSummary {
                min_eigenvalue: f64::INFINITY,
                max_eigenvalue: f64::NEG_INFINITY,
                n_negative: 0,
                lambda: self.spectral.lambda(),
            };
            for s in &samples {
                let (_, (min, max, n_negative)) =
                    s.full_direction.as_ref().expect("computed for the full scope");
                summary.min_eigenvalue = summary.min_eigenvalue.min(*min);
                summary.max_eigenvalue = summary.max_eigenvalue.max(*max);
                summary.n_negative += n_negative;
            }
            summary
        });
        Ok(Computed { loss: mean_loss, gradient, direction, spectra, network, input_norm_mean })
    }

    /// Phase 1: every sample's traces and curvature, in parallel over fixed sample chunks,
    /// each chunk with its own pooled workspace. Results come back in sample order.
    fn per_sample(
        &mut self,
        mlp: &Mlp,
        xs: &ArrayRef2<f64>,
        targets: Targets<'_>,
        loss: Loss,
    ) -> Result<Vec<SampleOut>> {
        let n_samples = xs.nrows();
        let n_chunks = n_samples.min(rayon::current_num_threads()).max(1);
        let sizes = mlp.sizes();
        self.pool.retain(|ws| ws.sizes == sizes);
        while self.pool.len() < n_chunks {
            self.pool.push(Workspace::new(mlp));
        }
        let chunk_len = n_samples.div_ceil(n_chunks);
        let scope = self.config.scope;
        let spectral = self.spectral;
        let run_chunk = |(chunk_idx, ws): (usize, &mut Workspace)| {
            let start = (chunk_idx * chunk_len).min(n_samples);
            let end = ((chunk_idx + 1) * chunk_len).min(n_samples);
            (start..end)
                .map(|i| sample(mlp, xs.row(i), targets.get(i), loss, scope, &spectral, ws))
                .collect::<Vec<_>>()
        };
        let chunks: Vec<Vec<Result<SampleOut>>> = if n_chunks == 1 {
            vec![run_chunk((0, &mut self.pool[0]))]
        } else {
            self.pool[..n_chunks].par_iter_mut().enumerate().map(run_chunk).collect()
        };
        chunks.into_iter().flatten().collect()
    }
}

/// The averaged direction and what was measured with it.
struct Computed {
    loss: f64,
    gradient: Params,
    direction: Params,
    spectra: Vec<SpectrumSummary>,
    network: Option<SpectrumSummary>,
    input_norm_mean: Option<Vec<f64>>,
}

/// One sample at the current weights.
fn sample(
    mlp: &Mlp,
    x: ArrayView1<'_, f64>,
    target: Target<'_>,
    loss: Loss,
    scope: CurvatureScope,
    spectral: &SpectralFn,
    ws: &mut Workspace,
) -> Result<SampleOut> {
    mlp.forward_into(&x, &mut ws.forward)?;
    let value = mlp.backward_second_order_into(&ws.forward, loss, target, &mut ws.second)?;
    let n_layers = mlp.n_layers();
    let deltas: Vec<Array1<f64>> = (0..n_layers).map(|l| ws.second.delta(l).clone()).collect();
    let inputs: Vec<Array1<f64>> =
        (0..n_layers).map(|l| ws.forward.layer_input(l).clone()).collect();
    let finite =
        value.is_finite() && deltas.iter().chain(&inputs).all(|v| v.iter().all(|x| x.is_finite()));
    let mut out = SampleOut {
        loss: value,
        deltas,
        inputs,
        finite,
        layers: Vec::new(),
        full_direction: None,
        error: None,
    };
    if !finite {
        return Ok(out);
    }
    let curvatures = (0..n_layers)
        .map(|l| LayerCurvature::from_trace(&ws.forward, &ws.second, l))
        .collect::<std::result::Result<Vec<_>, _>>();
    match curvatures {
        Ok(c) => out.layers = c,
        Err(e) => {
            out.error = Some(e);
            return Ok(out);
        }
    }
    if scope == CurvatureScope::FullNetwork {
        match full_direction(mlp, &ws.forward, &ws.second, spectral) {
            Ok(d) => out.full_direction = Some(d),
            Err(e) => out.error = Some(e),
        }
    }
    Ok(out)
}

/// layer ← layer + scale · left ãᵀ, with ã = [right; 1] (weight += scale·left rightᵀ, bias +=
/// scale·left).
fn add_outer(layer: &mut Dense, scale: f64, left: &Array1<f64>, right: &Array1<f64>) {
    let (mut w, mut b) = layer.weight_and_bias_mut();
    for (mut row, &l) in w.rows_mut().into_iter().zip(left) {
        row.scaled_add(scale * l, right);
    }
    b.scaled_add(scale, left);
}

impl Optimizer for Esso {
    fn name(&self) -> &'static str {
        "esso"
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
        OptimizerState::Esso(self.state.clone())
    }

    fn load_state(&mut self, state: OptimizerState) -> Result<()> {
        match state {
            OptimizerState::Esso(s) => {
                self.state = s;
                Ok(())
            }
            other => Err(wrong_kind("esso", &other)),
        }
    }
}

/// The whole-network direction of one sample (method.md §4) and the summary (min, max,
/// number of negative) of the eigenvalues on the range of Kᵀ.
fn full_direction(
    mlp: &Mlp,
    forward: &ForwardTrace,
    second: &SecondOrderTrace,
    spectral: &SpectralFn,
) -> std::result::Result<(Params, (f64, f64, usize)), HessianError> {
    let hessian = FullHessian::new(mlp, forward, second)?;
    let spectrum = hessian.spectrum()?;
    let direction = spectrum.direction(spectral)?;
    let values = spectrum.eigenvalues();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Ok((direction, (min, max, spectrum.inertia().negative)))
}

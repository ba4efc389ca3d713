//! Sharpness of a point of the loss landscape: ε-sharpness (Keskar et al. 2017) and
//! ρ-sharpness (SAM, Foret et al. 2021), by projected gradient ascent on a dataset.
//!
//! Both measures are a maximum of the mean loss L over a neighbourhood C of θ,
//!
//! ```text
//! S(θ) = max_{y ∈ C} L(θ + y) − L(θ),
//! ```
//!
//! which is a non-concave maximisation: every value returned here is a **lower bound** on
//! the true maximum, attained at the returned perturbation y (which always lies in C). The
//! ascent is deterministic. The maths, the choices and the references are in
//! docs/method-sharpness-landscapes.md.
//!
//! # The ascent
//! One iteration costs one batched gradient ([`Mlp::mean_gradient`], which also gives the
//! loss). From the current point y with gradient g = ∇L(θ + y), the candidate is
//! `c = P_C(y + η · u(g))` with u(g) the steepest-ascent direction of the set's own norm
//! (the box-scaled sign r ⊙ sign g for the box, ρ g/‖g‖₂ for the ball) and P_C the Euclidean
//! projection. A candidate that raises the loss is accepted; otherwise η is halved and the
//! step retried from y. The iteration stops after `steps` candidates or when the candidate
//! equals y bit for bit (a fixed point of the projected step: a KKT point of the box or ball
//! problem). The loss of the accepted points is therefore strictly increasing, and every loss
//! reported (L(θ) included) comes from the same batched routine.

use esso_core::{Loss, Mlp, Params, Targets, portable};
use ndarray::ArrayRef2;
use serde::Serialize;

use crate::error::{HessianError, Result};

/// Tag of the random-corner stream of [`eps_sharpness`] (see [`portable::derived_rng`]).
pub const EPS_CORNER_TAG: &[u8; 16] = b"esso-eps-corner.";

/// Options of [`eps_sharpness`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EpsSharpnessOptions {
    /// ε > 0: the box is |y_i| ≤ ε (|θ_i| + 1). Keskar et al. report ε = 1e-3 and 5e-4.
    pub epsilon: f64,
    /// Maximum number of ascent candidates (gradient evaluations) per start.
    pub steps: usize,
    /// Initial step η as a fraction of the box half-widths: a step moves y_i by
    /// η ε (|θ_i| + 1). In (0, 2]; 0.5 reaches the box corner in two accepted steps.
    pub step_fraction: f64,
    /// When set, further ascents start from `random_corners` corners of the box with signs
    /// drawn from this seed (platform-stable), and the best result of all starts is kept.
    pub random_corner_seed: Option<u64>,
    /// Number of random-corner starts when `random_corner_seed` is set (default 1). For
    /// large ε the box holds several local maxima (KKT corners) and more starts raise the
    /// lower bound.
    pub random_corners: usize,
}

impl Default for EpsSharpnessOptions {
    /// ε = 1e-3 (Keskar et al.), 20 steps, η = 0.5, no random start (one random corner when
    /// a seed is set).
    fn default() -> Self {
        EpsSharpnessOptions {
            epsilon: 1e-3,
            steps: 20,
            step_fraction: 0.5,
            random_corner_seed: None,
            random_corners: 1,
        }
    }
}

/// The ε-sharpness of Keskar et al. (2017), full-space version, and how it was found.
///
/// ```text
/// C_ε = { y : |y_i| ≤ ε (|θ_i| + 1) for every parameter i }
/// φ   = 100 · (max_{y ∈ C_ε} L(θ + y) − L(θ)) / (1 + L(θ))
/// ```
///
/// `sharpness` is a lower bound on φ (the max is estimated by ascent).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpsSharpness {
    /// φ in percent, from the best loss found: 100 (max_loss − loss) / (1 + loss) ≥ 0.
    pub sharpness: f64,
    /// ε.
    pub epsilon: f64,
    /// L(θ), the mean loss at the unperturbed parameters.
    pub loss: f64,
    /// The best loss found, L(θ + y) ≥ L(θ).
    pub max_loss: f64,
    /// y, shaped like the network, with |y_i| ≤ ε (|θ_i| + 1) exactly.
    pub perturbation: Params,
    /// Ascent candidates evaluated by the start that found `max_loss`.
    pub steps: usize,
    /// Gradient evaluations in total (every start, the unperturbed point included).
    pub evaluations: usize,
    /// Whether `max_loss` came from one of the random-corner starts.
    pub from_random_corner: bool,
}

/// Options of [`rho_sharpness`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RhoSharpnessOptions {
    /// ρ > 0, the radius of the ℓ2 ball (SAM's default 0.05).
    pub rho: f64,
    /// Maximum number of ascent candidates after the SAM step.
    pub steps: usize,
    /// Initial step η as a fraction of ρ: a step is η ρ g/‖g‖₂. In (0, 2].
    pub step_fraction: f64,
}

impl Default for RhoSharpnessOptions {
    /// ρ = 0.05 (Foret et al.), 20 steps, η = 0.5.
    fn default() -> Self {
        RhoSharpnessOptions { rho: 0.05, steps: 20, step_fraction: 0.5 }
    }
}

/// The ρ-sharpness used by SAM (Foret et al. 2021), one-step and multi-step.
///
/// ```text
/// S_ρ(θ) = max_{‖y‖₂ ≤ ρ} L(θ + y) − L(θ)
/// one step (SAM): y₁ = ρ g/‖g‖₂, g = ∇L(θ)   →   L(θ + y₁) − L(θ)
/// ```
///
/// For small ρ both are ρ‖g‖ + ρ²/2 · ĝᵀHĝ + O(ρ³) with ĝ = g/‖g‖. `sharpness` is a lower
/// bound on S_ρ and is ≥ max(0, `one_step`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RhoSharpness {
    /// The multi-step value: max_loss − loss ≥ max(0, one_step).
    pub sharpness: f64,
    /// SAM's one-step value L(θ + ρ g/‖g‖) − L(θ) (0 when g = 0). May be negative for a
    /// large ρ.
    pub one_step: f64,
    /// ρ.
    pub rho: f64,
    /// L(θ).
    pub loss: f64,
    /// ‖g‖₂ = ‖∇L(θ)‖₂.
    pub gradient_norm: f64,
    /// The best loss found.
    pub max_loss: f64,
    /// The perturbation reaching `max_loss`, ‖y‖₂ ≤ ρ exactly (as computed by
    /// [`Params::norm`]).
    pub perturbation: Params,
    /// Ascent candidates evaluated after the SAM step.
    pub steps: usize,
    /// Gradient evaluations in total (θ, the SAM point and the candidates).
    pub evaluations: usize,
}

/// The ε-sharpness of `mlp` on a dataset (Keskar et al. 2017), by projected sign ascent in
/// the box C_ε (see the module docs and [`EpsSharpness`]).
///
/// The ascent starts at y = 0 and, with [`EpsSharpnessOptions::random_corner_seed`], also at
/// [`EpsSharpnessOptions::random_corners`] random corners; the first step from 0 moves every
/// coordinate by η r_i in the direction of its gradient sign, r_i = ε (|θ_i| + 1). Keskar et
/// al. used L-BFGS-B; the linear maximiser of the box, r ⊙ sign g, is reached in 1/η
/// accepted steps, so for small ε this already attains the first-order maximum. For large ε
/// the ascent stops at a local maximum (a corner where every gradient sign points outwards)
/// that need not be the global one: random corners help there.
///
/// # Errors
/// [`HessianError::InvalidParameter`] for ε or η not finite and > 0 (η ≤ 2),
/// [`HessianError::Empty`] for a dataset without samples, [`HessianError::NonFinite`] when a
/// loss or gradient along the ascent is not finite, and esso-core's batch and target errors.
pub fn eps_sharpness(
    mlp: &Mlp,
    loss: Loss,
    xs: &ArrayRef2<f64>,
    targets: Targets<'_>,
    options: &EpsSharpnessOptions,
) -> Result<EpsSharpness> {
    check_positive("epsilon", options.epsilon)?;
    check_step_fraction(options.step_fraction)?;
    let mut objective = Objective::new(mlp, loss, xs, targets)?;
    let zero = Params::zeros_like(mlp.params());
    let (loss0, grad0) = objective.at(&zero)?;
    let radius = box_radius(mlp.params(), options.epsilon);
    let constraint = Constraint::Box(&radius);

    let mut best = ascend(&mut objective, &constraint, zero, loss0, grad0, options)?;
    let mut from_random_corner = false;
    if let Some(seed) = options.random_corner_seed {
        for index in 0..options.random_corners {
            let corner = random_corner(&radius, seed, index as u64);
            let (loss_c, grad_c) = objective.at(&corner)?;
            let run = ascend(&mut objective, &constraint, corner, loss_c, grad_c, options)?;
            if run.loss > best.loss {
                best = run;
                from_random_corner = true;
            }
        }
    }
    // The start at y = 0 only accepts increases, so best.loss ≥ loss0.
    Ok(EpsSharpness {
        sharpness: 100.0 * (best.loss - loss0) / (1.0 + loss0),
        epsilon: options.epsilon,
        loss: loss0,
        max_loss: best.loss,
        perturbation: best.y,
        steps: best.steps,
        evaluations: objective.evaluations,
        from_random_corner,
    })
}

/// The ρ-sharpness of `mlp` on a dataset (SAM, Foret et al. 2021): SAM's one-step value and
/// a multi-step projected gradient ascent in the ℓ2 ball of radius ρ (see [`RhoSharpness`]).
///
/// The first step is SAM's y₁ = ρ g/‖g‖; the ascent continues from the better of 0 and y₁
/// with normalised gradient steps η ρ ĝ projected back onto the ball. When g = 0 exactly,
/// y stays 0 and both values are 0.
///
/// # Errors
/// As [`eps_sharpness`], naming `rho`.
pub fn rho_sharpness(
    mlp: &Mlp,
    loss: Loss,
    xs: &ArrayRef2<f64>,
    targets: Targets<'_>,
    options: &RhoSharpnessOptions,
) -> Result<RhoSharpness> {
    check_positive("rho", options.rho)?;
    check_step_fraction(options.step_fraction)?;
    let mut objective = Objective::new(mlp, loss, xs, targets)?;
    let zero = Params::zeros_like(mlp.params());
    let (loss0, grad0) = objective.at(&zero)?;
    let gradient_norm = grad0.norm();
    let constraint = Constraint::Ball(options.rho);

    let (start, one_step) = if gradient_norm > 0.0 {
        let sam = into_ball(grad0.clone(), gradient_norm, options.rho);
        let (loss_sam, grad_sam) = objective.at(&sam)?;
        let one_step = loss_sam - loss0;
        if loss_sam > loss0 {
            ((sam, loss_sam, grad_sam), one_step)
        } else {
            ((zero, loss0, grad0), one_step)
        }
    } else {
        ((zero, loss0, grad0), 0.0)
    };
    let (y, l, g) = start;
    let ascent = AscentSettings { steps: options.steps, step_fraction: options.step_fraction };
    let best = ascend(&mut objective, &constraint, y, l, g, &ascent)?;
    Ok(RhoSharpness {
        sharpness: best.loss - loss0,
        one_step,
        rho: options.rho,
        loss: loss0,
        gradient_norm,
        max_loss: best.loss,
        perturbation: best.y,
        steps: best.steps,
        evaluations: objective.evaluations,
    })
}

/// The box half-widths r_i = ε (|θ_i| + 1), shaped like `theta`.
fn box_radius(theta: &Params, epsilon: f64) -> Params {
    let mut r = theta.clone();
    for s in r.slices_mut() {
        for v in s {
            *v = epsilon * (v.abs() + 1.0);
        }
    }
    r
}

/// The corner y_i = ±r_i with signs from `derived_rng(seed, index, EPS_CORNER_TAG)`, one bit
/// per parameter in the canonical order.
fn random_corner(radius: &Params, seed: u64, index: u64) -> Params {
    let mut rng = portable::derived_rng(seed, index, EPS_CORNER_TAG);
    let mut y = radius.clone();
    for s in y.slices_mut() {
        for v in s {
            if rand::Rng::next_u64(&mut rng) & 1 == 1 {
                *v = -*v;
            }
        }
    }
    y
}

/// `v · ρ/‖v‖` given ‖v‖ = `norm` > 0, shrunk by a few ulp if needed so that the computed
/// norm is ≤ ρ.
fn into_ball(mut v: Params, norm: f64, rho: f64) -> Params {
    let mut factor = rho / norm;
    let original = v.clone();
    v.scale(factor);
    while v.norm() > rho {
        factor *= 1.0 - f64::EPSILON;
        v = original.clone();
        v.scale(factor);
    }
    v
}

fn check_positive(name: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(HessianError::InvalidParameter { name, value, reason: "must be finite and > 0" })
    }
}

fn check_step_fraction(value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 && value <= 2.0 {
        Ok(())
    } else {
        Err(HessianError::InvalidParameter {
            name: "step_fraction",
            value,
            reason: "must be in (0, 2]",
        })
    }
}

/// The mean loss and gradient at θ + y, on a work copy of the network.
struct Objective<'a, 't> {
    theta: &'a Params,
    work: Mlp,
    loss: Loss,
    xs: &'a ArrayRef2<f64>,
    targets: Targets<'t>,
    evaluations: usize,
}

impl<'a, 't> Objective<'a, 't> {
    fn new(mlp: &'a Mlp, loss: Loss, xs: &'a ArrayRef2<f64>, targets: Targets<'t>) -> Result<Self> {
        if xs.nrows() == 0 {
            return Err(HessianError::Empty { what: "dataset" });
        }
        Ok(Objective { theta: mlp.params(), work: mlp.clone(), loss, xs, targets, evaluations: 0 })
    }

    /// (L(θ + y), ∇L(θ + y)); an error when either is not finite.
    fn at(&mut self, y: &Params) -> Result<(f64, Params)> {
        for ((w, t), d) in
            self.work.params_mut().slices_mut().zip(self.theta.slices()).zip(y.slices())
        {
            for ((w, t), d) in w.iter_mut().zip(t).zip(d) {
                *w = t + d;
            }
        }
        self.evaluations += 1;
        let (value, grad) = self.work.mean_gradient(self.xs, self.targets, self.loss)?;
        if !value.is_finite() {
            return Err(HessianError::NonFinite { what: "loss", layer_idx: None });
        }
        if !grad.is_finite() {
            return Err(HessianError::NonFinite { what: "gradient", layer_idx: None });
        }
        Ok((value, grad))
    }
}

/// The feasible set of an ascent.
enum Constraint<'a> {
    /// |y_i| ≤ r_i.
    Box(&'a Params),
    /// ‖y‖₂ ≤ ρ.
    Ball(f64),
}

impl Constraint<'_> {
    /// P_C(y + η u(g)).
    fn step(&self, y: &Params, g: &Params, eta: f64) -> Params {
        match self {
            Constraint::Box(radius) => {
                let mut c = y.clone();
                for ((c, g), r) in c.slices_mut().zip(g.slices()).zip(radius.slices()) {
                    for ((c, &g), &r) in c.iter_mut().zip(g).zip(r) {
                        let sign = if g > 0.0 {
                            1.0
                        } else if g < 0.0 {
                            -1.0
                        } else {
                            0.0
                        };
                        *c = (*c + eta * r * sign).clamp(-r, r);
                    }
                }
                c
            }
            &Constraint::Ball(rho) => {
                let g_norm = g.norm();
                if g_norm == 0.0 {
                    return y.clone();
                }
                let mut c = y.clone();
                c.axpy(eta * rho / g_norm, g);
                let c_norm = c.norm();
                if c_norm > rho { into_ball(c, c_norm, rho) } else { c }
            }
        }
    }
}

/// The step count and initial step of an ascent.
trait Ascent {
    fn steps(&self) -> usize;
    fn step_fraction(&self) -> f64;
}

impl Ascent for EpsSharpnessOptions {
    fn steps(&self) -> usize {
        self.steps
    }
    fn step_fraction(&self) -> f64 {
        self.step_fraction
    }
}

struct AscentSettings {
    steps: usize,
    step_fraction: f64,
}

impl Ascent for AscentSettings {
    fn steps(&self) -> usize {
        self.steps
    }
    fn step_fraction(&self) -> f64 {
        self.step_fraction
    }
}

/// The best point of one ascent.
struct AscentResult {
    y: Params,
    loss: f64,
    steps: usize,
}

/// Accept-or-halve projected ascent from (y, L(θ + y), ∇L(θ + y)); see the module docs.
fn ascend(
    objective: &mut Objective<'_, '_>,
    constraint: &Constraint<'_>,
    mut y: Params,
    mut loss: f64,
    mut grad: Params,
    settings: &impl Ascent,
) -> Result<AscentResult> {
    let mut eta = settings.step_fraction();
    let mut steps = 0;
    while steps < settings.steps() {
        let candidate = constraint.step(&y, &grad, eta);
        if candidate == y {
            break;
        }
        steps += 1;
        let (loss_c, grad_c) = objective.at(&candidate)?;
        if loss_c > loss {
            (y, loss, grad) = (candidate, loss_c, grad_c);
        } else {
            eta *= 0.5;
        }
    }
    Ok(AscentResult { y, loss, steps })
}

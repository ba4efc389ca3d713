//! Loss landscapes: 1D linear interpolation between two networks (Goodfellow et al. 2015)
//! and 2D surfaces along filter-normalised random directions (Li et al. 2018).
//!
//! Every point is one batched evaluation ([`Mlp::evaluate`]: mean loss and, for class
//! targets, accuracy) of a network with perturbed parameters; points are evaluated in
//! parallel with rayon and collected in grid order, so the result does not depend on the
//! number of threads. The maths and references are in docs/method-sharpness-landscapes.md.
//!
//! # Example
//! ```
//! use esso_core::{Activation, Init, Loss, Mlp, Targets};
//! use esso_hessian::landscape::{DirectionOptions, filter_normalized_directions, surface_2d};
//! use rand::SeedableRng;
//!
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
//! let mlp = Mlp::new(&[2, 4, 3], Activation::Tanh, Init::GlorotUniform, &mut rng)?;
//! let xs = ndarray::array![[0.1, 0.2], [-0.3, 0.5], [0.7, -0.1]];
//! let classes = [0, 2, 1];
//! let (d1, d2) = filter_normalized_directions(&mlp, 7, &DirectionOptions::default())?;
//! let grid = [-1.0, 0.0, 1.0];
//! let surface = surface_2d(
//!     &mlp, Loss::CrossEntropy, &xs, Targets::Classes(&classes), (&d1, &d2), (&grid, &grid), None,
//! )?;
//! let at_theta = mlp.evaluate(&xs, Targets::Classes(&classes), Loss::CrossEntropy)?;
//! assert_eq!(surface.losses[[1, 1]], at_theta.mean_loss);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};

use esso_core::{Loss, Mlp, Params, Targets, portable};
use ndarray::{Array2, ArrayRef2, ArrayViewMut1};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{HessianError, Result};

/// Tag of the random-direction streams (see [`portable::derived_rng`]).
pub const DIRECTION_TAG: &[u8; 16] = b"esso-direction..";

/// A filter's relative size below which an orthogonalised filter counts as zero (see
/// [`DirectionOptions::orthogonalize`]).
pub const ORTHOGONAL_RESIDUAL_RTOL: f64 = 1e-8;

/// Loss and accuracy along θ(α) = (1 − α) θ_a + α θ_b (Goodfellow et al. 2015).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interpolation1d {
    /// The α values, as given (α = 0 is θ_a, α = 1 is θ_b; any finite α is allowed).
    pub alphas: Vec<f64>,
    /// Mean loss L(θ(α)) for each α.
    pub losses: Vec<f64>,
    /// Accuracy for each α; `None` for non-class targets.
    pub accuracies: Option<Vec<f64>>,
}

/// Loss and accuracy on the plane L(θ + x d₁ + y d₂) over a grid xs × ys (Li et al. 2018).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Surface2d {
    /// The x grid (coefficients of d₁).
    pub xs: Vec<f64>,
    /// The y grid (coefficients of d₂).
    pub ys: Vec<f64>,
    /// `losses[[i, j]]` = L(θ + `xs[i]` d₁ + `ys[j]` d₂), shape len(xs) × len(ys).
    pub losses: Array2<f64>,
    /// Accuracies, same layout; `None` for non-class targets.
    pub accuracies: Option<Array2<f64>>,
}

/// What a random direction does with biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum BiasMode {
    /// The direction is 0 on every bias (Li et al. 2018 zero the direction of biases and
    /// batch-norm parameters). The default.
    #[default]
    Zero,
    /// Neuron i's filter is the vector (`W_l[i, :]`, `b_l[i]`): the bias is drawn and rescaled
    /// with its row.
    InFilter,
}

/// Options of [`filter_normalized_directions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct DirectionOptions {
    /// Biases: zero (default) or part of their neuron's filter.
    pub bias: BiasMode,
    /// Orthogonalise d₂ against d₁ filter by filter before normalising it (default off:
    /// Li et al. rely on random high-dimensional vectors being nearly orthogonal).
    ///
    /// Each filter of d₂ loses its component along the same filter of d₁ and is then
    /// rescaled to the filter norm of θ, so that both directions stay exactly
    /// filter-normalised *and* d₁ · d₂ = 0 (a sum of per-filter zeros). A filter whose
    /// residual is below [`ORTHOGONAL_RESIDUAL_RTOL`] of its norm (a filter of dimension 1)
    /// becomes 0 in d₂.
    pub orthogonalize: bool,
}

/// Loss and accuracy of the networks (1 − α) θ_a + α θ_b for every α, computed entry by
/// entry as `(1 − α)·a + α·b` (so α = 0 and α = 1 give θ_a and θ_b bit for bit).
///
/// The activation is that of `a` (both must have the same).
///
/// # Errors
/// [`HessianError::ArchitectureMismatch`] naming both architectures when the sizes or
/// activations differ, [`HessianError::InvalidParameter`] naming `alpha` for a non-finite α,
/// [`HessianError::Empty`] for a dataset without samples, and esso-core's batch and target
/// errors.
pub fn interpolate_1d(
    a: &Mlp,
    b: &Mlp,
    loss: Loss,
    xs: &ArrayRef2<f64>,
    targets: Targets<'_>,
    alphas: &[f64],
) -> Result<Interpolation1d> {
    if a.sizes() != b.sizes() || a.activation() != b.activation() {
        return Err(HessianError::ArchitectureMismatch {
            what: "networks to interpolate differ in architecture",
            first: describe(a),
            second: describe(b),
        });
    }
    check_grid("alpha", alphas)?;
    check_data(xs)?;
    let points = alphas
        .par_iter()
        .map(|&alpha| {
            let mut net = a.clone();
            for ((w, u), v) in
                net.params_mut().slices_mut().zip(a.params().slices()).zip(b.params().slices())
            {
                for ((w, &u), &v) in w.iter_mut().zip(u).zip(v) {
                    *w = (1.0 - alpha) * u + alpha * v;
                }
            }
            evaluate(&net, loss, xs, targets)
        })
        .collect::<Result<Vec<_>>>()?;
    let (losses, accuracies) = split(points, targets);
    Ok(Interpolation1d { alphas: alphas.to_vec(), losses, accuracies })
}

/// Loss and accuracy of θ + x d₁ + y d₂ (θ the parameters of `mlp`) for every x in
/// `grid.0` and y in `grid.1`, each entry computed as `θ_k + x·d₁_k + y·d₂_k` (so (0, 0) is
/// θ bit for bit).
///
/// Grid points are evaluated in parallel; `progress`, when given, is called once per point
/// with (points done, total points) from the worker threads: each count 1..=total is
/// reported once, not necessarily in increasing order.
///
/// # Errors
/// [`HessianError::ArchitectureMismatch`] when a direction is not shaped like the network,
/// [`HessianError::InvalidParameter`] naming `x` or `y` for a non-finite grid value,
/// [`HessianError::Empty`] for a dataset without samples, and esso-core's batch and target
/// errors.
pub fn surface_2d(
    mlp: &Mlp,
    loss: Loss,
    xs: &ArrayRef2<f64>,
    targets: Targets<'_>,
    directions: (&Params, &Params),
    grid: (&[f64], &[f64]),
    progress: Option<&(dyn Fn(usize, usize) + Sync)>,
) -> Result<Surface2d> {
    let (d1, d2) = directions;
    check_direction(mlp, d1)?;
    check_direction(mlp, d2)?;
    let (grid_x, grid_y) = grid;
    check_grid("x", grid_x)?;
    check_grid("y", grid_y)?;
    check_data(xs)?;
    let (nx, ny) = (grid_x.len(), grid_y.len());
    let total = nx * ny;
    let done = AtomicUsize::new(0);
    let theta = mlp.params();
    let points = (0..total)
        .into_par_iter()
        .map(|k| {
            let (x, y) = (grid_x[k / ny], grid_y[k % ny]);
            let mut net = mlp.clone();
            for (((w, &t), &u), &v) in net
                .params_mut()
                .slices_mut()
                .flat_map(|s| s.iter_mut())
                .zip(theta.slices().flatten())
                .zip(d1.slices().flatten())
                .zip(d2.slices().flatten())
            {
                *w = t + x * u + y * v;
            }
            let point = evaluate(&net, loss, xs, targets);
            let count = done.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(report) = progress {
                report(count, total);
            }
            point
        })
        .collect::<Result<Vec<_>>>()?;
    let (losses, accuracies) = split(points, targets);
    let to_grid = |v: Vec<f64>| {
        Array2::from_shape_vec((nx, ny), v).map_err(|_| HessianError::Shape {
            what: "surface grid",
            expected: total,
            got: 0,
        })
    };
    Ok(Surface2d {
        xs: grid_x.to_vec(),
        ys: grid_y.to_vec(),
        losses: to_grid(losses)?,
        accuracies: accuracies.map(to_grid).transpose()?,
    })
}

/// A filter-normalised Gaussian direction for `mlp` (Li et al. 2018), from the stream
/// `derived_rng(seed, 0, DIRECTION_TAG)`: the same as d₁ of
/// [`filter_normalized_directions`] with the same seed and bias mode.
///
/// Every parameter is drawn i.i.d. N(0, 1) in the canonical order (biases included, whatever
/// the mode, so the stream does not depend on it); then see [`filter_normalize`].
pub fn filter_normalized_direction(mlp: &Mlp, seed: u64, bias: BiasMode) -> Params {
    let mut d = gaussian_direction(mlp.params(), seed, 0);
    normalize_filters(&mut d, mlp.params(), bias, None);
    d
}

/// Two filter-normalised Gaussian directions (d₁, d₂) for a 2D surface, from the streams
/// `derived_rng(seed, 0 | 1, DIRECTION_TAG)`, d₂ optionally orthogonalised against d₁ (see
/// [`DirectionOptions`]).
///
/// # Errors
/// None at present (kept fallible for future direction kinds).
pub fn filter_normalized_directions(
    mlp: &Mlp,
    seed: u64,
    options: &DirectionOptions,
) -> Result<(Params, Params)> {
    let d1 = filter_normalized_direction(mlp, seed, options.bias);
    let mut d2 = gaussian_direction(mlp.params(), seed, 1);
    normalize_filters(&mut d2, mlp.params(), options.bias, options.orthogonalize.then_some(&d1));
    Ok((d1, d2))
}

/// Rescales `direction` filter by filter to the filter norms of `reference` (Li et al. 2018).
///
/// A filter is neuron i of layer l: the row `W_l[i, :]` ([`BiasMode::Zero`], and the bias
/// entry of the direction is set to 0) or the vector (`W_l[i, :]`, `b_l[i]`)
/// ([`BiasMode::InFilter`]). Afterwards ‖d_filter‖₂ = ‖θ_filter‖₂ for every filter up to
/// rounding; a filter that is zero in either vector is 0 in the result.
///
/// # Errors
/// [`HessianError::ArchitectureMismatch`] when the shapes differ.
pub fn filter_normalize(direction: &mut Params, reference: &Params, bias: BiasMode) -> Result<()> {
    if !direction.same_shape(reference) {
        return Err(HessianError::ArchitectureMismatch {
            what: "the direction is not shaped like the network",
            first: format!("sizes {:?}", param_sizes(direction)),
            second: format!("sizes {:?}", param_sizes(reference)),
        });
    }
    normalize_filters(direction, reference, bias, None);
    Ok(())
}

/// i.i.d. N(0, 1) entries in the canonical order from `derived_rng(seed, index, DIRECTION_TAG)`.
fn gaussian_direction(shape: &Params, seed: u64, index: u64) -> Params {
    let mut rng = portable::derived_rng(seed, index, DIRECTION_TAG);
    let mut d = Params::zeros_like(shape);
    for s in d.slices_mut() {
        for v in s {
            *v = portable::standard_normal(&mut rng);
        }
    }
    d
}

/// Filter normalisation, with optional per-filter Gram–Schmidt against `against`.
///
/// Shapes are equal (checked by every caller).
fn normalize_filters(d: &mut Params, theta: &Params, bias: BiasMode, against: Option<&Params>) {
    let include_bias = bias == BiasMode::InFilter;
    for (layer_idx, (layer, reference)) in d.layers_mut().iter_mut().zip(theta.layers()).enumerate()
    {
        let (mut w, mut b) = layer.weight_and_bias_mut();
        for (i, (row, b_i)) in w.rows_mut().into_iter().zip(b.iter_mut()).enumerate() {
            if !include_bias {
                *b_i = 0.0;
            }
            let mut filter = Filter { row, bias: b_i, include_bias };
            if let Some(first) = against {
                let other = &first.layers()[layer_idx];
                let other_row = other.weight().row(i);
                let other_bias = other.bias()[i];
                let other_sq = filter_sq(other_row.iter(), other_bias, include_bias);
                let before = filter.sq_norm().sqrt();
                if other_sq > 0.0 {
                    let coef = filter.dot(other_row.iter(), other_bias) / other_sq;
                    filter.sub_scaled(coef, other_row.iter(), other_bias);
                }
                if filter.sq_norm().sqrt() <= ORTHOGONAL_RESIDUAL_RTOL * before {
                    filter.scale(0.0);
                }
            }
            let target =
                filter_sq(reference.weight().row(i).iter(), reference.bias()[i], include_bias)
                    .sqrt();
            let current = filter.sq_norm().sqrt();
            filter.scale(if current > 0.0 { target / current } else { 0.0 });
        }
    }
}

/// One neuron's filter inside a direction being normalised.
struct Filter<'a, 'b> {
    row: ArrayViewMut1<'a, f64>,
    bias: &'b mut f64,
    include_bias: bool,
}

impl Filter<'_, '_> {
    fn sq_norm(&self) -> f64 {
        filter_sq(self.row.iter(), *self.bias, self.include_bias)
    }

    fn dot<'c>(&self, other_row: impl Iterator<Item = &'c f64>, other_bias: f64) -> f64 {
        let w: f64 = self.row.iter().zip(other_row).map(|(a, b)| a * b).sum();
        if self.include_bias { w + *self.bias * other_bias } else { w }
    }

    fn sub_scaled<'c>(
        &mut self,
        coef: f64,
        other_row: impl Iterator<Item = &'c f64>,
        other_bias: f64,
    ) {
        for (a, b) in self.row.iter_mut().zip(other_row) {
            *a -= coef * b;
        }
        if self.include_bias {
            *self.bias -= coef * other_bias;
        }
    }

    fn scale(&mut self, factor: f64) {
        self.row.mapv_inplace(|v| v * factor);
        if self.include_bias {
            *self.bias *= factor;
        }
    }
}

fn filter_sq<'c>(row: impl Iterator<Item = &'c f64>, bias: f64, include_bias: bool) -> f64 {
    let w: f64 = row.map(|v| v * v).sum();
    if include_bias { w + bias * bias } else { w }
}

/// One batched evaluation: (mean loss, accuracy).
fn evaluate(
    net: &Mlp,
    loss: Loss,
    xs: &ArrayRef2<f64>,
    targets: Targets<'_>,
) -> Result<(f64, Option<f64>)> {
    let e = net.evaluate(xs, targets, loss)?;
    Ok((e.mean_loss, e.accuracy))
}

/// Losses, and accuracies exactly when the targets are classes (also for zero points).
fn split(points: Vec<(f64, Option<f64>)>, targets: Targets<'_>) -> (Vec<f64>, Option<Vec<f64>>) {
    let (losses, accuracies): (Vec<f64>, Vec<Option<f64>>) = points.into_iter().unzip();
    let accuracies = matches!(targets, Targets::Classes(_))
        .then(|| accuracies.into_iter().map(|a| a.unwrap_or(f64::NAN)).collect());
    (losses, accuracies)
}

fn check_grid(name: &'static str, values: &[f64]) -> Result<()> {
    match values.iter().find(|v| !v.is_finite()) {
        Some(&value) => {
            Err(HessianError::InvalidParameter { name, value, reason: "must be finite" })
        }
        None => Ok(()),
    }
}

fn check_data(xs: &ArrayRef2<f64>) -> Result<()> {
    if xs.nrows() == 0 { Err(HessianError::Empty { what: "dataset" }) } else { Ok(()) }
}

fn check_direction(mlp: &Mlp, d: &Params) -> Result<()> {
    if d.same_shape(mlp.params()) {
        Ok(())
    } else {
        Err(HessianError::ArchitectureMismatch {
            what: "the direction is not shaped like the network",
            first: format!("sizes {:?}", param_sizes(d)),
            second: format!("sizes {:?}", mlp.sizes()),
        })
    }
}

fn describe(mlp: &Mlp) -> String {
    format!("sizes {:?}, {}", mlp.sizes(), mlp.activation())
}

fn param_sizes(p: &Params) -> Vec<usize> {
    let mut sizes: Vec<usize> = p.layers().first().map(|l| l.n_inputs()).into_iter().collect();
    sizes.extend(p.layers().iter().map(|l| l.n_outputs()));
    sizes
}

//! The multilayer perceptron: construction, single-sample and batched forward passes.

use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{Array1, Array2, ArrayRef1, ArrayRef2, Axis, linalg::general_mat_mul};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::activation::Activation;
use crate::error::{CoreError, Result};
use crate::init::Init;
use crate::loss::{Loss, Targets};
use crate::params::{Dense, Params};
use crate::simd::clean_simd_state;

/// A multilayer perceptron: L dense layers, one hidden activation, identity output.
///
/// ```text
/// a_0 = x;  z_l = W_l a_{l−1} + b_l;  a_l = σ(z_l) for l < L;  z_L are the logits
/// ```
///
/// # Examples
/// ```
/// use esso_core::{Activation, Init, Mlp};
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let mlp = Mlp::new(&[4, 5, 3], Activation::Tanh, Init::GlorotUniform, &mut rng)?;
/// assert_eq!(mlp.n_params(), 5 * 5 + 3 * 6);
/// let trace = mlp.forward(&ndarray::array![0.1, 0.2, 0.3, 0.4])?;
/// assert_eq!(trace.logits().len(), 3);
/// # Ok::<(), esso_core::CoreError>(())
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mlp {
    activation: Activation,
    params: Params,
    /// Stamp of the parameter values (see [`Mlp::generation`]); not serialised, and not
    /// part of equality.
    #[serde(skip, default = "fresh_generation")]
    generation: u64,
}

impl PartialEq for Mlp {
    fn eq(&self, other: &Self) -> bool {
        self.activation == other.activation && self.params == other.params
    }
}

/// A stamp never handed out before in this process.
fn fresh_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Mean loss and accuracy of a network on a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean per-sample loss.
    pub mean_loss: f64,
    /// Fraction of samples whose arg-max logit is the class (cross-entropy targets only).
    pub accuracy: Option<f64>,
    /// Number of samples.
    pub n_samples: usize,
}

impl Mlp {
    /// A freshly initialised network with widths `sizes` = [n_0, n_1, …, n_L].
    ///
    /// Weights are drawn layer by layer, row-major, from `rng`; biases are zero.
    ///
    /// # Errors
    /// [`CoreError::TooFewSizes`] for fewer than two sizes, [`CoreError::ZeroSize`] for a
    /// zero width.
    pub fn new(
        sizes: &[usize],
        activation: Activation,
        init: Init,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        if sizes.len() < 2 {
            return Err(CoreError::TooFewSizes { n_sizes: sizes.len() });
        }
        if let Some(size_idx) = sizes.iter().position(|&n| n == 0) {
            return Err(CoreError::ZeroSize { size_idx });
        }
        let layers = sizes
            .windows(2)
            .map(|w| {
                let (n_in, n_out) = (w[0], w[1]);
                let mut layer = Dense::zeros(n_out, n_in);
                for v in layer.weight_mut().iter_mut() {
                    *v = init.sample(n_in, n_out, rng);
                }
                layer
            })
            .collect();
        Self::from_params(Params::new(layers)?, activation)
    }

    /// A network from existing parameters.
    ///
    /// # Errors
    /// Never for parameters built by [`Params::new`]; kept fallible for future checks.
    pub fn from_params(params: Params, activation: Activation) -> Result<Self> {
        Ok(Mlp { activation, params, generation: fresh_generation() })
    }

    /// A network from layers, checking that they chain and are finite.
    ///
    /// # Errors
    /// As [`Params::new`].
    pub fn from_layers(layers: Vec<Dense>, activation: Activation) -> Result<Self> {
        Self::from_params(Params::new(layers)?, activation)
    }

    /// The hidden activation σ.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The parameters, mutably (shapes cannot change). Gives the network a new
    /// [`Mlp::generation`].
    pub fn params_mut(&mut self) -> &mut Params {
        self.generation = fresh_generation();
        &mut self.params
    }

    /// A stamp of the parameter values: unique in the process to the last construction or
    /// [`Mlp::params_mut`] call, so equal stamps mean equal networks (a clone keeps its
    /// original's stamp until either is borrowed mutably). Caches of values computed from
    /// the parameters (such as a forward pass done ahead) are valid while it is unchanged.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The layers.
    pub fn layers(&self) -> &[Dense] {
        self.params.layers()
    }

    /// Number of layers L.
    pub fn n_layers(&self) -> usize {
        self.params.n_layers()
    }

    /// Widths [n_0, …, n_L].
    pub fn sizes(&self) -> Vec<usize> {
        let mut sizes = vec![self.n_inputs()];
        sizes.extend(self.layers().iter().map(Dense::n_outputs));
        sizes
    }

    /// n_0.
    pub fn n_inputs(&self) -> usize {
        self.layers()[0].n_inputs()
    }

    /// n_L.
    pub fn n_outputs(&self) -> usize {
        self.layers()[self.n_layers() - 1].n_outputs()
    }

    /// Total parameter count N.
    pub fn n_params(&self) -> usize {
        self.params.n_params()
    }

    /// Number of hidden units Σ_{l<L} n_l.
    pub fn n_hidden_units(&self) -> usize {
        self.layers()[..self.n_layers() - 1].iter().map(Dense::n_outputs).sum()
    }

    /// The activation applied after layer `layer_idx` (0-based): σ for hidden layers,
    /// identity for the output layer.
    pub fn layer_activation(&self, layer_idx: usize) -> Activation {
        if layer_idx + 1 == self.n_layers() { Activation::Identity } else { self.activation }
    }

    /// Forward pass of one sample into a reusable trace (no allocation).
    ///
    /// # Errors
    /// [`CoreError::InputLength`] when `x` has the wrong length.
    ///
    /// # Panics
    /// If `trace` was built for a network of other sizes.
    pub fn forward_into(&self, x: &ArrayRef1<f64>, trace: &mut ForwardTrace) -> Result<()> {
        if x.len() != self.n_inputs() {
            return Err(CoreError::InputLength { expected: self.n_inputs(), got: x.len() });
        }
        assert!(trace.fits(self), "ForwardTrace was built for another network");
        trace.inputs[0].assign(x);
        for (layer_idx, layer) in self.layers().iter().enumerate() {
            let z = &mut trace.pre_activations[layer_idx];
            z.assign(layer.bias());
            ndarray::linalg::general_mat_vec_mul(
                1.0,
                layer.weight(),
                &trace.inputs[layer_idx],
                1.0,
                z,
            );
            if layer_idx + 1 < self.n_layers() {
                let act = self.activation;
                let (z, a) = (&trace.pre_activations[layer_idx], &mut trace.inputs[layer_idx + 1]);
                match (z.as_slice(), a.as_slice_mut()) {
                    (Some(z), Some(a)) => act.values_into(z, a),
                    _ => a.zip_mut_with(z, |a, &z| *a = act.value(z)),
                }
            }
        }
        Ok(())
    }

    /// Forward pass of one sample, allocating a new trace.
    ///
    /// # Errors
    /// [`CoreError::InputLength`].
    pub fn forward(&self, x: &ArrayRef1<f64>) -> Result<ForwardTrace> {
        let mut trace = ForwardTrace::new(self);
        self.forward_into(x, &mut trace)?;
        Ok(trace)
    }

    /// Logits of a batch, one GEMM per layer.
    ///
    /// # Shapes
    /// `xs` is n_samples × n_0; the result is n_samples × n_L.
    ///
    /// # Errors
    /// [`CoreError::BatchWidth`].
    pub fn logits_batch(&self, xs: &ArrayRef2<f64>) -> Result<Array2<f64>> {
        Ok(self.forward_batch(xs)?.pop().expect("at least one layer").1)
    }

    /// Batched forward keeping every layer: (a_{l−1}, z_l) per layer, rows are samples.
    fn forward_batch(&self, xs: &ArrayRef2<f64>) -> Result<Vec<(Array2<f64>, Array2<f64>)>> {
        if xs.ncols() != self.n_inputs() {
            return Err(CoreError::BatchWidth { expected: self.n_inputs(), got: xs.ncols() });
        }
        let n = xs.nrows();
        let mut out = Vec::with_capacity(self.n_layers());
        let mut a = xs.to_owned();
        for (layer_idx, layer) in self.layers().iter().enumerate() {
            let mut z = Array2::zeros((n, layer.n_outputs()));
            z += &layer.bias().view().insert_axis(Axis(0));
            general_mat_mul(1.0, &a, &layer.weight().t(), 1.0, &mut z);
            let next = if layer_idx + 1 < self.n_layers() {
                let act = self.activation;
                let mut a = Array2::zeros(z.raw_dim());
                match (z.as_slice(), a.as_slice_mut()) {
                    (Some(z), Some(a)) => act.values_into(z, a),
                    _ => a.zip_mut_with(&z, |a, &z| *a = act.value(z)),
                }
                a
            } else {
                Array2::zeros((0, 0))
            };
            out.push((a, z));
            a = next;
        }
        Ok(out)
    }

    /// Mean loss and (for class targets) accuracy over a batch: blocks of
    /// 256 samples, one faer GEMM per layer and block
    /// (z_l = a_{l−1} W_lᵀ + 1 b_lᵀ, rows are samples) into per-thread reused buffers, blocks
    /// in parallel; the inputs are read in place (no copy of `xs` when it is row-major).
    ///
    /// ```text
    /// mean_loss = (1/N) Σ_blocks Σ_{s ∈ block} ℓ(z_L(x_s), y_s)
    /// ```
    ///
    /// summed in sample order within a block and in block order across blocks, so the result
    /// does not depend on the number of threads.
    ///
    /// # Errors
    /// [`CoreError::BatchWidth`], [`CoreError::TargetCount`] and target errors (the first
    /// failing sample's).
    pub fn evaluate(
        &self,
        xs: &ArrayRef2<f64>,
        targets: Targets<'_>,
        loss: Loss,
    ) -> Result<Evaluation> {
        use rayon::prelude::*;
        if targets.len() != xs.nrows() {
            return Err(CoreError::TargetCount { n_samples: xs.nrows(), n_targets: targets.len() });
        }
        if xs.ncols() != self.n_inputs() {
            return Err(CoreError::BatchWidth { expected: self.n_inputs(), got: xs.ncols() });
        }
        let n = xs.nrows();
        let blocks: Vec<Result<(f64, usize)>> = (0..n.div_ceil(EVAL_BLOCK))
            .into_par_iter()
            .map_init(EvalBuffers::default, |buffers, block| {
                let start = block * EVAL_BLOCK;
                let rows = start..(start + EVAL_BLOCK).min(n);
                self.evaluate_block(xs, rows, targets, loss, buffers)
            })
            .collect();
        let mut total = 0.0;
        let mut correct = 0usize;
        for block in blocks {
            let (block_total, block_correct) = block?;
            total += block_total;
            correct += block_correct;
        }
        let denom = n.max(1) as f64;
        Ok(Evaluation {
            mean_loss: total / denom,
            accuracy: matches!(targets, Targets::Classes(_)).then(|| correct as f64 / denom),
            n_samples: n,
        })
    }

    /// Σ ℓ and the number of correct predictions over the samples `rows` of `xs`.
    fn evaluate_block(
        &self,
        xs: &ArrayRef2<f64>,
        rows: std::ops::Range<usize>,
        targets: Targets<'_>,
        loss: Loss,
        buffers: &mut EvalBuffers,
    ) -> Result<(f64, usize)> {
        use faer::{Accum, MatMut, MatRef, Par, linalg::matmul::matmul};
        let b = rows.len();
        let start = rows.start;
        let block = xs.slice(ndarray::s![rows, ..]);
        let input: &[f64] = match block.as_slice() {
            Some(slice) => slice,
            None => {
                buffers.input.clear();
                buffers.input.extend(block.iter().copied());
                &buffers.input
            }
        };
        let EvalBuffers { a, z, .. } = buffers;
        for (layer_idx, layer) in self.layers().iter().enumerate() {
            let (n_out, n_in) = (layer.n_outputs(), layer.n_inputs());
            let bias = layer.bias();
            z.resize(b * n_out, 0.0);
            for row in z.chunks_exact_mut(n_out) {
                for (z, &bias) in row.iter_mut().zip(bias) {
                    *z = bias;
                }
            }
            let lhs = if layer_idx == 0 { input } else { &a[..] };
            // Weights are kept in standard layout; a copy covers any other.
            let standard = layer.weight().as_standard_layout();
            let weight = standard.as_slice().unwrap_or_default();
            matmul(
                MatMut::from_row_major_slice_mut(z, b, n_out),
                Accum::Add,
                MatRef::from_row_major_slice(lhs, b, n_in),
                MatRef::from_row_major_slice(weight, n_out, n_in).transpose(),
                1.0,
                Par::Seq,
            );
            clean_simd_state();
            if layer_idx + 1 < self.n_layers() {
                let act = self.activation;
                // Every entry is overwritten: resize without clearing.
                a.resize(z.len(), 0.0);
                act.values_into(z, a);
            }
        }
        let n_out = self.n_outputs();
        let mut total = 0.0;
        let mut correct = 0usize;
        for (i, logits) in z.chunks_exact(n_out).enumerate() {
            let logits = ndarray::ArrayView1::from(logits);
            let target = targets.get(start + i);
            total += loss.value(&logits, target)?;
            if let crate::loss::Target::Class(y) = target
                && argmax(&logits) == y
            {
                correct += 1;
            }
        }
        Ok((total, correct))
    }

    /// Mean loss and mean gradient over a mini-batch, by batched (GEMM) backpropagation.
    ///
    /// # Errors
    /// As [`Mlp::evaluate`].
    pub fn mean_gradient(
        &self,
        xs: &ArrayRef2<f64>,
        targets: Targets<'_>,
        loss: Loss,
    ) -> Result<(f64, Params)> {
        if targets.len() != xs.nrows() {
            return Err(CoreError::TargetCount { n_samples: xs.nrows(), n_targets: targets.len() });
        }
        let n = xs.nrows();
        let scale = 1.0 / n.max(1) as f64;
        let trace = self.forward_batch(xs)?;
        let logits = &trace[self.n_layers() - 1].1;
        let mut delta = Array2::zeros(logits.dim());
        let mut total = 0.0;
        for (sample_idx, (z, mut d)) in logits.rows().into_iter().zip(delta.rows_mut()).enumerate()
        {
            total += loss.value_and_delta(&z, targets.get(sample_idx), &mut d)?;
        }
        let mut grad = Params::zeros_like(&self.params);
        for layer_idx in (0..self.n_layers()).rev() {
            let (a_prev, _) = &trace[layer_idx];
            {
                let g = &mut grad.layers_mut()[layer_idx];
                let (mut gw, mut gb) = g.weight_and_bias_mut();
                general_mat_mul(scale, &delta.t(), a_prev, 0.0, &mut gw);
                gb.assign(&(delta.sum_axis(Axis(0)) * scale));
            }
            if layer_idx > 0 {
                let w = self.layers()[layer_idx].weight();
                let mut back = delta.dot(w);
                let z_prev = &trace[layer_idx - 1].1;
                let act = self.activation;
                back.zip_mut_with(z_prev, |b, &z| *b *= act.derivative(z));
                delta = back;
            }
        }
        Ok((total * scale, grad))
    }
}

/// Samples per block of [`Mlp::evaluate`]: bounds its buffers (a block of 256 samples of
/// 784-128-64-10 holds 0.4 MB) and is the unit of its parallelism.
pub(crate) const EVAL_BLOCK: usize = 256;

/// Per-thread buffers of [`Mlp::evaluate`].
#[derive(Debug, Default)]
struct EvalBuffers {
    /// A copy of the block's inputs when `xs` is not row-major.
    input: Vec<f64>,
    /// a_l of the block (row per sample).
    a: Vec<f64>,
    /// z_l of the block (row per sample).
    z: Vec<f64>,
}

/// Index of the largest entry (the first one on ties).
pub fn argmax(v: &ArrayRef1<f64>) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// What one forward pass keeps for the backward sweeps: every layer's input a_{l−1} and
/// pre-activation z_l.
///
/// Build once per network with [`ForwardTrace::new`] and reuse it across samples.
#[derive(Debug, Clone)]
pub struct ForwardTrace {
    inputs: Vec<Array1<f64>>,
    pre_activations: Vec<Array1<f64>>,
}

impl ForwardTrace {
    /// Buffers sized for `mlp`.
    pub fn new(mlp: &Mlp) -> Self {
        ForwardTrace {
            inputs: mlp.layers().iter().map(|l| Array1::zeros(l.n_inputs())).collect(),
            pre_activations: mlp.layers().iter().map(|l| Array1::zeros(l.n_outputs())).collect(),
        }
    }

    fn fits(&self, mlp: &Mlp) -> bool {
        self.inputs.len() == mlp.n_layers()
            && mlp.layers().iter().zip(&self.inputs).all(|(l, a)| l.n_inputs() == a.len())
            && mlp.layers().iter().zip(&self.pre_activations).all(|(l, z)| l.n_outputs() == z.len())
    }

    /// Number of layers.
    pub fn n_layers(&self) -> usize {
        self.inputs.len()
    }

    /// a_{l−1}, the input of layer `layer_idx` (a_0 = x for layer 0), without the bias 1.
    pub fn layer_input(&self, layer_idx: usize) -> &Array1<f64> {
        &self.inputs[layer_idx]
    }

    /// ‖ã_{l−1}‖² = ‖a_{l−1}‖² + 1 for layer `layer_idx`.
    pub fn layer_input_norm_sq(&self, layer_idx: usize) -> f64 {
        self.inputs[layer_idx].iter().map(|a| a * a).sum::<f64>() + 1.0
    }

    /// z_l, the pre-activation of layer `layer_idx`.
    pub fn pre_activation(&self, layer_idx: usize) -> &Array1<f64> {
        &self.pre_activations[layer_idx]
    }

    /// z_L, the logits.
    pub fn logits(&self) -> &Array1<f64> {
        &self.pre_activations[self.pre_activations.len() - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::Target;
    use rand::SeedableRng;

    /// Mean loss and accuracy sample by sample with the single-sample forward pass.
    fn per_sample(mlp: &Mlp, xs: &ArrayRef2<f64>, targets: Targets<'_>, loss: Loss) -> (f64, f64) {
        let (mut total, mut correct) = (0.0, 0.0);
        for (i, x) in xs.rows().into_iter().enumerate() {
            let fwd = mlp.forward(&x).unwrap();
            total += loss.value(fwd.logits(), targets.get(i)).unwrap();
            if let Target::Class(y) = targets.get(i)
                && argmax(fwd.logits()) == y
            {
                correct += 1.0;
            }
        }
        let n = xs.nrows() as f64;
        (total / n, correct / n)
    }

    #[test]
    fn blocked_evaluation_matches_the_per_sample_forward_pass() {
        for act in Activation::all() {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
            let mlp = Mlp::new(&[5, 4, 3], act, Init::GlorotUniform, &mut rng).unwrap();
            // 2.5 blocks; the transposed copy makes a column-major view (no row slices).
            let n = 2 * EVAL_BLOCK + EVAL_BLOCK / 2;
            let xs = Array2::from_shape_fn((n, 5), |(i, j)| ((i * 5 + j) as f64 * 0.37).sin());
            let xs_t = Array2::from_shape_fn((5, n), |(j, i)| xs[[i, j]]);
            let column_major = xs_t.t();
            assert!(column_major.as_slice().is_none());
            let classes: Vec<usize> = (0..n).map(|i| (i * 7) % 3).collect();
            let values = Array2::from_shape_fn((n, 3), |(i, j)| ((i + 2 * j) as f64).cos());
            for (targets, loss) in [
                (Targets::Classes(&classes), Loss::CrossEntropy),
                (Targets::Values(values.view()), Loss::Mse),
            ] {
                let (mean, accuracy) = per_sample(&mlp, &xs, targets, loss);
                for view in [xs.view(), column_major] {
                    let eval = mlp.evaluate(&view, targets, loss).unwrap();
                    assert_eq!(eval.n_samples, n);
                    let err = (eval.mean_loss - mean).abs();
                    assert!(err < 1e-14 * mean.abs().max(1.0), "{act} {loss:?}: {err:e}");
                    if loss == Loss::CrossEntropy {
                        assert_eq!(eval.accuracy, Some(accuracy));
                    } else {
                        assert_eq!(eval.accuracy, None);
                    }
                }
            }
            // The error of the first failing sample, in a later block.
            let mut bad = classes.clone();
            bad[EVAL_BLOCK + 3] = 7;
            let err = mlp.evaluate(&xs, Targets::Classes(&bad), Loss::CrossEntropy);
            assert!(matches!(err, Err(CoreError::ClassOutOfRange { .. })), "{err:?}");
            let err = mlp.evaluate(
                &xs.slice(ndarray::s![.., ..4]),
                Targets::Classes(&classes),
                Loss::CrossEntropy,
            );
            assert!(matches!(err, Err(CoreError::BatchWidth { .. })));
            let empty =
                mlp.evaluate(&Array2::zeros((0, 5)), Targets::Classes(&[]), Loss::CrossEntropy);
            assert_eq!(empty.unwrap().n_samples, 0);
        }
    }
}

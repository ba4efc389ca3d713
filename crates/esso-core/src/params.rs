//! Dense layers and parameter sets, and the one canonical flattening of parameters.

use ndarray::{Array1, Array2, ArrayViewMut1, ArrayViewMut2};
use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

/// One dense layer's parameters: z = W a + b.
///
/// # Shapes
/// `weight` is n_out × n_in (n_l × n_{l−1}), `bias` has n_out entries. The shapes are fixed
/// at construction: the mutable accessors hand out views, which cannot be resized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dense {
    weight: Array2<f64>,
    bias: Array1<f64>,
}

impl Dense {
    /// A layer from its weight and bias.
    ///
    /// # Errors
    /// [`CoreError::BiasShape`] (reported as layer 0) when the bias length differs from the
    /// weight's row count.
    pub fn new(weight: Array2<f64>, bias: Array1<f64>) -> Result<Self> {
        if bias.len() != weight.nrows() {
            return Err(CoreError::BiasShape {
                layer_idx: 0,
                bias_len: bias.len(),
                n_rows: weight.nrows(),
            });
        }
        // Standard (row-major) layout keeps the flattening order and GEMMs simple.
        let weight = if weight.is_standard_layout() {
            weight
        } else {
            weight.as_standard_layout().to_owned()
        };
        Ok(Dense { weight, bias })
    }

    /// A zero layer with `n_out` outputs and `n_in` inputs.
    pub fn zeros(n_out: usize, n_in: usize) -> Self {
        Dense { weight: Array2::zeros((n_out, n_in)), bias: Array1::zeros(n_out) }
    }

    /// W, n_out × n_in.
    pub fn weight(&self) -> &Array2<f64> {
        &self.weight
    }

    /// b, n_out.
    pub fn bias(&self) -> &Array1<f64> {
        &self.bias
    }

    /// Mutable view of W.
    pub fn weight_mut(&mut self) -> ArrayViewMut2<'_, f64> {
        self.weight.view_mut()
    }

    /// Mutable view of b.
    pub fn bias_mut(&mut self) -> ArrayViewMut1<'_, f64> {
        self.bias.view_mut()
    }

    /// Mutable views of W and b at once.
    pub fn weight_and_bias_mut(&mut self) -> (ArrayViewMut2<'_, f64>, ArrayViewMut1<'_, f64>) {
        (self.weight.view_mut(), self.bias.view_mut())
    }

    /// n_in = n_{l−1}.
    pub fn n_inputs(&self) -> usize {
        self.weight.ncols()
    }

    /// n_out = n_l.
    pub fn n_outputs(&self) -> usize {
        self.weight.nrows()
    }

    /// n_out · (n_in + 1).
    pub fn n_params(&self) -> usize {
        self.weight.len() + self.bias.len()
    }

    /// Weight entries in row-major order, then bias entries: the canonical order.
    pub fn iter_params(&self) -> impl Iterator<Item = &f64> {
        self.weight.iter().chain(self.bias.iter())
    }

    /// Mutable version of [`Dense::iter_params`], same order.
    pub fn iter_params_mut(&mut self) -> impl Iterator<Item = &mut f64> {
        self.weight.iter_mut().chain(self.bias.iter_mut())
    }

    fn weight_slice(&self) -> &[f64] {
        self.weight.as_slice().expect("weights are kept in standard layout")
    }

    fn bias_slice(&self) -> &[f64] {
        self.bias.as_slice().expect("a 1-D owned array is contiguous")
    }

    fn check_finite(&self, layer_idx: usize) -> Result<()> {
        if let Some(index) = self.weight.iter().position(|v| !v.is_finite()) {
            return Err(CoreError::NonFinite { layer_idx, what: "weight", index });
        }
        if let Some(index) = self.bias.iter().position(|v| !v.is_finite()) {
            return Err(CoreError::NonFinite { layer_idx, what: "bias", index });
        }
        Ok(())
    }
}

/// The parameters of every layer of an [`crate::Mlp`], or anything shaped like them
/// (gradients, steps, optimiser moments).
///
/// # Parameter order
/// Flattening ([`Params::to_flat`], [`Params::copy_from_flat`], [`Params::layer_offset`]) is
/// defined here once for all of esso: layer by layer; within a layer, the weight row-major
/// (index `i·n_in + j` for W[i, j]), then the bias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    layers: Vec<Dense>,
}

impl Params {
    /// Parameters from layers, checking that they chain (n_in of layer l+1 = n_out of l) and
    /// are finite.
    ///
    /// # Errors
    /// [`CoreError::NoLayers`], [`CoreError::LayersDoNotChain`], [`CoreError::NonFinite`].
    pub fn new(layers: Vec<Dense>) -> Result<Self> {
        if layers.is_empty() {
            return Err(CoreError::NoLayers);
        }
        for (layer_idx, pair) in layers.windows(2).enumerate() {
            if pair[1].n_inputs() != pair[0].n_outputs() {
                return Err(CoreError::LayersDoNotChain {
                    layer_idx: layer_idx + 1,
                    prev_idx: layer_idx,
                    n_in: pair[1].n_inputs(),
                    prev_out: pair[0].n_outputs(),
                });
            }
        }
        for (layer_idx, layer) in layers.iter().enumerate() {
            layer.check_finite(layer_idx)?;
        }
        Ok(Params { layers })
    }

    /// Zeros shaped like `other`.
    pub fn zeros_like(other: &Params) -> Self {
        Params {
            layers: other
                .layers
                .iter()
                .map(|l| Dense::zeros(l.n_outputs(), l.n_inputs()))
                .collect(),
        }
    }

    /// The layers.
    pub fn layers(&self) -> &[Dense] {
        &self.layers
    }

    /// The layers, mutably (their number and shapes cannot change).
    pub fn layers_mut(&mut self) -> &mut [Dense] {
        &mut self.layers
    }

    /// Number of layers L.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Total parameter count N.
    pub fn n_params(&self) -> usize {
        self.layers.iter().map(Dense::n_params).sum()
    }

    /// Offset of layer `layer_idx`'s first parameter in the flat vector.
    ///
    /// # Panics
    /// If `layer_idx > n_layers` (`layer_idx == n_layers` gives N).
    pub fn layer_offset(&self, layer_idx: usize) -> usize {
        self.layers[..layer_idx].iter().map(Dense::n_params).sum()
    }

    /// All parameters in the canonical order (see the type docs).
    pub fn to_flat(&self) -> Array1<f64> {
        let mut flat = Vec::with_capacity(self.n_params());
        for s in self.slices() {
            flat.extend_from_slice(s);
        }
        Array1::from(flat)
    }

    /// Overwrites every parameter from a flat vector in the canonical order.
    ///
    /// # Errors
    /// [`CoreError::ParamLength`] when `flat.len() != n_params`; nothing is written then.
    pub fn copy_from_flat(&mut self, flat: &[f64]) -> Result<()> {
        if flat.len() != self.n_params() {
            return Err(CoreError::ParamLength { expected: self.n_params(), got: flat.len() });
        }
        let mut offset = 0;
        for dst in self.slices_mut() {
            dst.copy_from_slice(&flat[offset..offset + dst.len()]);
            offset += dst.len();
        }
        Ok(())
    }

    /// Iterates every parameter in the canonical order.
    pub fn iter(&self) -> impl Iterator<Item = &f64> {
        self.layers.iter().flat_map(Dense::iter_params)
    }

    /// Mutable version of [`Params::iter`].
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut f64> {
        self.layers.iter_mut().flat_map(Dense::iter_params_mut)
    }

    /// Whether `other` has the same layer shapes.
    pub fn same_shape(&self, other: &Params) -> bool {
        self.layers.len() == other.layers.len()
            && self.layers.iter().zip(&other.layers).all(|(a, b)| a.weight.dim() == b.weight.dim())
    }

    fn assert_same_shape(&self, other: &Params) {
        assert!(self.same_shape(other), "parameter sets have different shapes");
    }

    /// self ← self + alpha · other.
    ///
    /// # Panics
    /// If the shapes differ (a caller bug).
    pub fn axpy(&mut self, alpha: f64, other: &Params) {
        self.assert_same_shape(other);
        for (a, b) in self.layers.iter_mut().zip(&other.layers) {
            a.weight.scaled_add(alpha, &b.weight);
            a.bias.scaled_add(alpha, &b.bias);
        }
    }

    /// self ← alpha · self.
    pub fn scale(&mut self, alpha: f64) {
        for l in &mut self.layers {
            l.weight *= alpha;
            l.bias *= alpha;
        }
    }

    /// Sets every entry to zero.
    pub fn fill_zero(&mut self) {
        for l in &mut self.layers {
            l.weight.fill(0.0);
            l.bias.fill(0.0);
        }
    }

    /// Σ self_i · other_i.
    ///
    /// # Panics
    /// If the shapes differ.
    pub fn dot(&self, other: &Params) -> f64 {
        self.assert_same_shape(other);
        self.slices().zip(other.slices()).map(|(a, b)| dot_slices(a, b)).sum()
    }

    /// Euclidean norm.
    pub fn norm(&self) -> f64 {
        self.slices().map(|a| dot_slices(a, a)).sum::<f64>().sqrt()
    }

    /// Whether every entry is finite.
    pub fn is_finite(&self) -> bool {
        self.slices().all(all_finite)
    }

    /// The parameters as contiguous slices in the canonical order: for each layer its
    /// weight (row-major) and then its bias. Loops over these vectorise; [`Params::iter`]
    /// is convenient but slower.
    pub fn slices(&self) -> impl Iterator<Item = &[f64]> {
        self.layers.iter().flat_map(|l| [l.weight_slice(), l.bias_slice()])
    }

    /// Mutable version of [`Params::slices`], same order.
    pub fn slices_mut(&mut self) -> impl Iterator<Item = &mut [f64]> {
        self.layers.iter_mut().flat_map(|l| {
            let Dense { weight, bias } = l;
            [
                weight.as_slice_mut().expect("weights are kept in standard layout"),
                bias.as_slice_mut().expect("a 1-D owned array is contiguous"),
            ]
        })
    }

    /// Checks finiteness, naming the first bad layer and entry.
    ///
    /// # Errors
    /// [`CoreError::NonFinite`].
    pub fn check_finite(&self) -> Result<()> {
        for (layer_idx, layer) in self.layers.iter().enumerate() {
            layer.check_finite(layer_idx)?;
        }
        Ok(())
    }
}

/// Σ a_i b_i with four independent accumulators, so that the loop vectorises.
fn dot_slices(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Whether every entry is finite: x·0 is 0 for finite x and NaN otherwise, summed in four
/// vectorisable lanes.
fn all_finite(a: &[f64]) -> bool {
    let mut acc = [0.0; 4];
    let chunks = a.chunks_exact(4);
    let tail_ok = chunks.remainder().iter().all(|v| v.is_finite());
    for x in chunks {
        for k in 0..4 {
            acc[k] += x[k] * 0.0;
        }
    }
    tail_ok && (acc[0] + acc[1] + acc[2] + acc[3]) == 0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn flattening_is_row_major_then_bias() {
        let l1 =
            Dense::new(array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], array![7.0, 8.0, 9.0]).unwrap();
        let l2 = Dense::new(array![[10.0, 11.0, 12.0]], array![13.0]).unwrap();
        let p = Params::new(vec![l1, l2]).unwrap();
        let flat = p.to_flat();
        assert_eq!(flat.to_vec(), (1..=13).map(f64::from).collect::<Vec<_>>());
        assert_eq!(p.layer_offset(1), 9);
        let mut q = Params::zeros_like(&p);
        q.copy_from_flat(flat.as_slice().unwrap()).unwrap();
        assert_eq!(p, q);
        assert_eq!(q.copy_from_flat(&[1.0]), Err(CoreError::ParamLength { expected: 13, got: 1 }));
    }

    #[test]
    fn reductions_match_plain_loops() {
        let w = Array2::from_shape_fn((3, 7), |(i, j)| (i as f64 - 1.3) * (j as f64 + 0.7));
        let b = Array1::from_shape_fn(3, |i| i as f64 - 0.5);
        let p = Params::new(vec![Dense::new(w, b).unwrap(), Dense::zeros(2, 3)]).unwrap();
        let naive: f64 = p.iter().map(|v| v * v).sum();
        assert!((p.dot(&p) - naive).abs() < 1e-12 * naive);
        assert!((p.norm() - naive.sqrt()).abs() < 1e-12);
        assert!(p.is_finite());
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for idx in [0, 5, 20, 23] {
                let mut q = p.clone();
                let mut flat = q.to_flat();
                flat[idx] = bad;
                q.copy_from_flat(flat.as_slice().unwrap()).unwrap();
                assert!(!q.is_finite(), "{bad} at {idx}");
            }
        }
    }

    #[test]
    fn column_major_weights_are_stored_row_major() {
        let w = array![[1.0, 2.0], [3.0, 4.0]].reversed_axes();
        let d = Dense::new(w, array![0.0, 0.0]).unwrap();
        assert_eq!(
            d.iter_params().copied().collect::<Vec<_>>(),
            vec![1.0, 3.0, 2.0, 4.0, 0.0, 0.0]
        );
    }

    #[test]
    fn bad_layers_are_rejected() {
        assert_eq!(
            Dense::new(Array2::zeros((2, 3)), Array1::zeros(3)),
            Err(CoreError::BiasShape { layer_idx: 0, bias_len: 3, n_rows: 2 })
        );
        let e = Params::new(vec![Dense::zeros(4, 3), Dense::zeros(2, 5)]);
        assert_eq!(
            e,
            Err(CoreError::LayersDoNotChain { layer_idx: 1, prev_idx: 0, n_in: 5, prev_out: 4 })
        );
        let mut bad = Dense::zeros(2, 2);
        bad.bias_mut()[1] = f64::NAN;
        assert_eq!(
            Params::new(vec![Dense::zeros(2, 3), bad]),
            Err(CoreError::NonFinite { layer_idx: 1, what: "bias", index: 1 })
        );
    }
}

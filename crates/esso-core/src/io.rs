//! JSON model files.
//!
//! ```text
//! {"activation": "tanh",
//!  "layers": [{"weight": [[w11, w12, …], …],   // n_out rows of n_in
//!              "bias":   [b1, …]},              // n_out
//!             …]}
//! ```
//!
//! Format documented in docs/model-format.md. Numbers are written with Rust's shortest
//! round-trip formatting, so saving then loading gives bit-identical weights.

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::activation::Activation;
use crate::error::{CoreError, Result};
use crate::mlp::Mlp;
use crate::params::Dense;

/// The serialised form of an [`Mlp`]: plain nested lists, readable by any JSON tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Hidden activation name, e.g. `"tanh"` or `"leaky_relu(0.1)"`.
    pub activation: Activation,
    /// Layers from input to output.
    pub layers: Vec<LayerFile>,
}

/// One layer of a [`ModelFile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerFile {
    /// n_out rows of n_in weights.
    pub weight: Vec<Vec<f64>>,
    /// n_out biases.
    pub bias: Vec<f64>,
}

impl ModelFile {
    /// Validates the shapes and values and builds the network.
    ///
    /// # Errors
    /// [`CoreError::NoLayers`], [`CoreError::ZeroSize`], [`CoreError::RaggedWeight`],
    /// [`CoreError::BiasShape`], [`CoreError::LayersDoNotChain`], [`CoreError::NonFinite`]:
    /// each names the layer and the sizes.
    pub fn into_mlp(self) -> Result<Mlp> {
        if self.layers.is_empty() {
            return Err(CoreError::NoLayers);
        }
        let mut layers = Vec::with_capacity(self.layers.len());
        for (layer_idx, layer) in self.layers.into_iter().enumerate() {
            let n_rows = layer.weight.len();
            let n_cols = layer.weight.first().map_or(0, Vec::len);
            if n_rows == 0 || n_cols == 0 {
                return Err(CoreError::ZeroSize { size_idx: layer_idx + usize::from(n_rows == 0) });
            }
            if let Some((row_idx, row)) =
                layer.weight.iter().enumerate().find(|(_, r)| r.len() != n_cols)
            {
                return Err(CoreError::RaggedWeight {
                    layer_idx,
                    row_idx,
                    row_len: row.len(),
                    n_cols,
                });
            }
            if layer.bias.len() != n_rows {
                return Err(CoreError::BiasShape { layer_idx, bias_len: layer.bias.len(), n_rows });
            }
            let flat: Vec<f64> = layer.weight.into_iter().flatten().collect();
            let weight = Array2::from_shape_vec((n_rows, n_cols), flat)
                .expect("rows checked to have equal lengths");
            layers.push(Dense::new(weight, Array1::from(layer.bias)).expect("bias length checked"));
        }
        Mlp::from_layers(layers, self.activation)
    }

    /// The file form of a network.
    pub fn from_mlp(mlp: &Mlp) -> Self {
        ModelFile {
            activation: mlp.activation(),
            layers: mlp
                .layers()
                .iter()
                .map(|l| LayerFile {
                    weight: l.weight().rows().into_iter().map(|r| r.to_vec()).collect(),
                    bias: l.bias().to_vec(),
                })
                .collect(),
        }
    }
}

impl Mlp {
    /// The network as pretty-printed JSON ([`ModelFile`] layout, docs/model-format.md).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&ModelFile::from_mlp(self))
            .expect("finite f64 and strings always serialise")
    }

    /// Parses and validates a JSON model.
    ///
    /// # Errors
    /// [`CoreError::Json`] for malformed JSON, missing or unknown fields (with line and
    /// column), plus the shape and value errors of [`ModelFile::into_mlp`].
    pub fn from_json(text: &str) -> Result<Mlp> {
        let file: ModelFile =
            serde_json::from_str(text).map_err(|e| CoreError::Json { message: e.to_string() })?;
        file.into_mlp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::Init;
    use rand::SeedableRng;

    #[test]
    fn json_round_trip_is_bit_exact() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for act in Activation::all().into_iter().chain([Activation::LeakyRelu { slope: 0.3 }]) {
            let mlp = Mlp::new(&[3, 7, 2], act, Init::HeNormal, &mut rng).unwrap();
            let back = Mlp::from_json(&mlp.to_json()).unwrap();
            assert_eq!(back, mlp);
        }
    }

    fn err(text: &str) -> CoreError {
        Mlp::from_json(text).unwrap_err()
    }

    #[test]
    fn malformed_files_name_the_problem() {
        assert!(matches!(err("{"), CoreError::Json { .. }));
        assert!(
            matches!(err(r#"{"layers": []}"#), CoreError::Json { message } if message.contains("activation"))
        );
        assert!(matches!(
            err(r#"{"activation": "swish", "layers": []}"#),
            CoreError::Json { message } if message.contains("swish")
        ));
        assert!(matches!(
            err(r#"{"activation": "tanh", "layers": [], "extra": 1}"#),
            CoreError::Json { message } if message.contains("extra")
        ));
        assert_eq!(err(r#"{"activation": "tanh", "layers": []}"#), CoreError::NoLayers);
        assert_eq!(
            err(r#"{"activation": "tanh", "layers": [{"weight": [[1, 2], [3]], "bias": [0, 0]}]}"#),
            CoreError::RaggedWeight { layer_idx: 0, row_idx: 1, row_len: 1, n_cols: 2 }
        );
        assert_eq!(
            err(r#"{"activation": "tanh", "layers": [{"weight": [[1, 2]], "bias": [0, 0]}]}"#),
            CoreError::BiasShape { layer_idx: 0, bias_len: 2, n_rows: 1 }
        );
        assert_eq!(
            err(r#"{"activation": "relu", "layers": [
                {"weight": [[1, 2], [3, 4]], "bias": [0, 0]},
                {"weight": [[1, 2, 3]], "bias": [0]}]}"#),
            CoreError::LayersDoNotChain { layer_idx: 1, prev_idx: 0, n_in: 3, prev_out: 2 }
        );
        // 1e999 overflows: serde_json rejects it as a number out of range.
        assert!(matches!(
            err(r#"{"activation": "tanh", "layers": [{"weight": [[1e999]], "bias": [0]}]}"#),
            CoreError::Json { .. }
        ));
    }
}

//! The error type of esso-core.

use thiserror::Error;

/// Everything that can go wrong in esso-core: bad shapes, bad targets, bad model files.
///
/// Every variant names the quantities involved so that the message alone locates the problem.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CoreError {
    /// A network needs at least an input and an output width.
    #[error("a network needs at least two layer sizes (input and output), got {n_sizes}")]
    TooFewSizes {
        /// Number of sizes given.
        n_sizes: usize,
    },
    /// A layer width of zero.
    #[error("layer size {size_idx} is zero")]
    ZeroSize {
        /// Index into the sizes list.
        size_idx: usize,
    },
    /// A network with no layers.
    #[error("a network needs at least one layer")]
    NoLayers,
    /// The bias length does not match the weight's number of rows.
    #[error("layer {layer_idx}: bias has {bias_len} entries but the weight has {n_rows} rows")]
    BiasShape {
        /// Layer index (0-based).
        layer_idx: usize,
        /// Length of the bias.
        bias_len: usize,
        /// Rows of the weight.
        n_rows: usize,
    },
    /// Rows of a weight matrix have different lengths.
    #[error("layer {layer_idx}: weight row {row_idx} has {row_len} entries, row 0 has {n_cols}")]
    RaggedWeight {
        /// Layer index (0-based).
        layer_idx: usize,
        /// Index of the offending row.
        row_idx: usize,
        /// Its length.
        row_len: usize,
        /// Length of row 0.
        n_cols: usize,
    },
    /// A layer's input width does not match the previous layer's output width.
    #[error(
        "layer {layer_idx}: weight takes {n_in} inputs but layer {prev_idx} produces {prev_out} outputs"
    )]
    LayersDoNotChain {
        /// Layer index (0-based) whose input is wrong.
        layer_idx: usize,
        /// Previous layer index.
        prev_idx: usize,
        /// Inputs the layer expects.
        n_in: usize,
        /// Outputs the previous layer produces.
        prev_out: usize,
    },
    /// A weight or bias is NaN or infinite.
    #[error("layer {layer_idx}: {what} contains a non-finite value at index {index}")]
    NonFinite {
        /// Layer index (0-based).
        layer_idx: usize,
        /// "weight" or "bias".
        what: &'static str,
        /// Flat index of the first bad value (row-major for weights).
        index: usize,
    },
    /// The input vector has the wrong length.
    #[error("input has {got} entries but the network expects {expected}")]
    InputLength {
        /// Expected length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// The batch has the wrong number of columns.
    #[error("batch has {got} columns but the network expects {expected} inputs")]
    BatchWidth {
        /// Expected width.
        expected: usize,
        /// Given width.
        got: usize,
    },
    /// The number of targets does not match the number of samples.
    #[error("{n_samples} samples but {n_targets} targets")]
    TargetCount {
        /// Samples in the batch.
        n_samples: usize,
        /// Targets given.
        n_targets: usize,
    },
    /// A class index outside `0..n_classes`.
    #[error("class target {class} is out of range for {n_classes} outputs")]
    ClassOutOfRange {
        /// The class given.
        class: usize,
        /// Number of outputs.
        n_classes: usize,
    },
    /// A regression target of the wrong length.
    #[error("regression target has {got} entries but the network has {expected} outputs")]
    TargetLength {
        /// Outputs of the network.
        expected: usize,
        /// Target length.
        got: usize,
    },
    /// A loss that needs a class target got a vector, or the reverse.
    #[error("loss {loss} needs a {expected} target")]
    TargetKind {
        /// The loss name.
        loss: &'static str,
        /// "class index" or "vector".
        expected: &'static str,
    },
    /// A flat parameter vector of the wrong length.
    #[error("flat parameter vector has {got} entries but the network has {expected} parameters")]
    ParamLength {
        /// Parameter count of the network.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// Two parameter sets with different shapes were combined.
    #[error("parameter shapes differ at layer {layer_idx}")]
    ParamShape {
        /// First layer whose shape differs.
        layer_idx: usize,
    },
    /// An activation name that is not known.
    #[error(
        "unknown activation {name:?} (expected identity, tanh, sigmoid, softplus, relu, leaky_relu or leaky_relu(SLOPE))"
    )]
    UnknownActivation {
        /// The name given.
        name: String,
    },
    /// A leaky-ReLU slope that is not finite.
    #[error("leaky_relu slope must be finite, got {slope}")]
    BadSlope {
        /// The slope.
        slope: f64,
    },
    /// An unknown loss name.
    #[error("unknown loss {name:?} (expected cross_entropy or mse)")]
    UnknownLoss {
        /// The name given.
        name: String,
    },
    /// A model file that is not valid JSON or misses a field.
    #[error("model JSON: {message}")]
    Json {
        /// serde_json's message, with line and column.
        message: String,
    },
}

/// Result alias for esso-core.
pub type Result<T> = std::result::Result<T, CoreError>;

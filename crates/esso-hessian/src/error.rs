//! The error type of esso-hessian.

use esso_core::CoreError;
use thiserror::Error;

/// Everything that can go wrong in esso-hessian.
///
/// Every variant names the quantities involved, so that the message alone locates the
/// problem. Shape mismatches between a network and its own traces are caller bugs and panic
/// instead (see each function's `# Panics`).
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum HessianError {
    /// A hyperparameter outside its domain (λ ≤ 0, α ∉ (0, 1], a non-finite value, …).
    #[error("invalid value {value} for `{name}`: {reason}")]
    InvalidParameter {
        /// The parameter's name, e.g. `lambda`.
        name: &'static str,
        /// The value given.
        value: f64,
        /// What the value must satisfy.
        reason: &'static str,
    },
    /// The damped spectral function 1/(e + λ) met an eigenvalue with e + λ ≤ 0: the damped
    /// Newton direction does not exist there (or is not a descent direction).
    #[error(
        "damped Newton step undefined{}: min eigenvalue {min_eigenvalue} + lambda {lambda} <= 0 (use the absolute spectral function or a larger lambda)",
        location(*.layer_idx)
    )]
    NonPositiveShift {
        /// The layer (0-based), or `None` for the whole network.
        layer_idx: Option<usize>,
        /// The smallest eigenvalue (after clipping), or NaN when only a failed factorisation
        /// proved that one exists.
        min_eigenvalue: f64,
        /// The shift λ.
        lambda: f64,
    },
    /// A symmetric eigendecomposition did not converge.
    #[error("eigendecomposition of {what} did not converge{}", location(*.layer_idx))]
    EigenNoConvergence {
        /// Which matrix, e.g. `H_l` or `the Gram matrix`.
        what: &'static str,
        /// The layer (0-based), or `None` for the whole network.
        layer_idx: Option<usize>,
    },
    /// A NaN or infinite value in an input quantity (trace, Hessian, vector).
    #[error("{what} contains a non-finite value{}", location(*.layer_idx))]
    NonFinite {
        /// The quantity, e.g. `H_l` or `delta`.
        what: &'static str,
        /// The layer (0-based), or `None` when not layer-specific.
        layer_idx: Option<usize>,
    },
    /// An input with the wrong shape.
    #[error("{what} has size {got}, expected {expected}")]
    Shape {
        /// The quantity, e.g. `H_l rows`.
        what: &'static str,
        /// The size required.
        expected: usize,
        /// The size given.
        got: usize,
    },
    /// A layer index past the last layer.
    #[error("layer index {layer_idx} is out of range for a network of {n_layers} layers")]
    LayerOutOfRange {
        /// The index given (0-based).
        layer_idx: usize,
        /// Number of layers.
        n_layers: usize,
    },
    /// A linear system that the exact formulas need to solve is numerically singular.
    #[error("{what} is numerically singular")]
    Singular {
        /// Which system.
        what: &'static str,
    },
    /// A product with an operator (a Hessian-vector product) returned a NaN or infinite
    /// value.
    #[error("{what}: the operator returned a non-finite value at iteration {iteration}")]
    NonFiniteProduct {
        /// The algorithm, e.g. `Lanczos` or `Hutchinson`.
        what: &'static str,
        /// The iteration (0-based) whose product was not finite.
        iteration: usize,
    },
    /// More eigenpairs were requested than the operator's dimension.
    #[error("{requested} eigenpairs requested from an operator of dimension {dim}")]
    TooManyEigenpairs {
        /// The number requested.
        requested: usize,
        /// The operator's dimension.
        dim: usize,
    },
    /// The exact mini-batch spectrum would need a stacked Gram matrix above the size limit.
    #[error(
        "the exact mini-batch spectrum needs a {rows} x {rows} Gram matrix ({n_samples} samples x {rows_per_sample} rows of K each), above the limit of {limit} rows: use fewer samples, raise the limit, or use Lanczos"
    )]
    BatchTooLarge {
        /// B, the number of samples.
        n_samples: usize,
        /// m, the rows of K per sample.
        rows_per_sample: usize,
        /// B·m.
        rows: usize,
        /// The largest B·m allowed.
        limit: usize,
    },
    /// An error from esso-core (bad input, bad target).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// Two networks, or a network and a direction, that must share an architecture do not.
    #[error("{what}: {first} vs {second}")]
    ArchitectureMismatch {
        /// What was compared, e.g. `networks to interpolate differ in architecture`.
        what: &'static str,
        /// The first architecture, e.g. `sizes [4, 5, 3], tanh`.
        first: String,
        /// The second architecture.
        second: String,
    },
    /// A buffer could not be allocated: the system refused the memory (a process limit, a
    /// full machine). Nothing was computed.
    #[error(
        "out of memory: allocating {what} ({}) failed; free memory, lower the limit of concurrent work or use a smaller model",
        crate::limits::format_bytes(*.bytes)
    )]
    Allocation {
        /// What was being allocated, e.g. `the Gram matrix G (m x m)`.
        what: &'static str,
        /// Its size in bytes.
        bytes: u128,
    },
    /// A layer input whose squared norm ‖a‖² + 1 overflows f64: an input value (layer 0) or
    /// an activation too large for the curvature formulas.
    #[error(
        "{} {index} is {value:e}: its square overflows f64 (every |value| must stay below about 1e150); scale the input down",
        if *.layer_idx == 0 { "input feature".to_string() } else { format!("the input of layer {} (activation of layer {}) at index", .layer_idx, .layer_idx - 1) }
    )]
    InputTooLarge {
        /// The layer (0-based) whose input overflows; 0 is the sample itself.
        layer_idx: usize,
        /// The index of the largest value in magnitude.
        index: usize,
        /// That value.
        value: f64,
    },
    /// An input that must hold at least one element, e.g. a dataset of zero samples.
    #[error("{what} is empty")]
    Empty {
        /// The quantity, e.g. `dataset`.
        what: &'static str,
    },
}

fn location(layer_idx: Option<usize>) -> String {
    layer_idx.map_or_else(String::new, |l| format!(" (layer {l})"))
}

/// Result alias for esso-hessian.
pub type Result<T> = std::result::Result<T, HessianError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_quantities() {
        let e =
            HessianError::InvalidParameter { name: "lambda", value: -1.0, reason: "must be > 0" };
        assert_eq!(e.to_string(), "invalid value -1 for `lambda`: must be > 0");
        let e = HessianError::NonPositiveShift {
            layer_idx: Some(2),
            min_eigenvalue: -3.0,
            lambda: 1.0,
        };
        assert!(e.to_string().contains("(layer 2)"), "{e}");
        let e = HessianError::NonFinite { what: "delta", layer_idx: None };
        assert_eq!(e.to_string(), "delta contains a non-finite value");
    }
}

//! Elementwise activations with their first and second derivatives.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::CoreError;

/// Default slope of [`Activation::LeakyRelu`] when a name gives none.
pub const DEFAULT_LEAKY_SLOPE: f64 = 0.01;

/// An elementwise activation σ, with σ′ and σ″ (method.md §1).
///
/// Names (for configs and JSON): `identity`, `tanh`, `sigmoid`, `softplus`, `relu`,
/// `leaky_relu` (slope 0.01) and `leaky_relu(0.2)`.
///
/// ReLU and leaky ReLU use the convention σ′(0) = 0 (respectively the slope) and σ″ = 0
/// everywhere, the almost-everywhere derivative.
///
/// # Examples
/// ```
/// use esso_core::Activation;
/// let act: Activation = "leaky_relu(0.2)".parse()?;
/// assert_eq!(act.value(-1.0), -0.2);
/// assert_eq!(act.to_string(), "leaky_relu(0.2)");
/// # Ok::<(), esso_core::CoreError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// σ(z) = z.
    Identity,
    /// σ(z) = tanh z; σ′ = 1 − tanh², σ″ = −2 tanh (1 − tanh²). Evaluated by
    /// [`crate::tanh::tanh`] (branch-free, vectorisable, ≤ 2 ulp).
    Tanh,
    /// σ(z) = 1 / (1 + e^−z); σ′ = σ(1 − σ), σ″ = σ(1 − σ)(1 − 2σ).
    Sigmoid,
    /// σ(z) = ln(1 + e^z); σ′ = sigmoid(z), σ″ = sigmoid(z)(1 − sigmoid(z)).
    Softplus,
    /// σ(z) = max(z, 0).
    Relu,
    /// σ(z) = z for z > 0, slope·z otherwise.
    LeakyRelu {
        /// Slope for negative inputs.
        slope: f64,
    },
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

impl Activation {
    /// σ(z).
    #[inline]
    pub fn value(self, z: f64) -> f64 {
        match self {
            Activation::Identity => z,
            Activation::Tanh => crate::tanh::tanh(z),
            Activation::Sigmoid => sigmoid(z),
            Activation::Softplus => z.max(0.0) + (-z.abs()).exp().ln_1p(),
            Activation::Relu => z.max(0.0),
            Activation::LeakyRelu { slope } => {
                if z > 0.0 {
                    z
                } else {
                    slope * z
                }
            }
        }
    }

    /// `a[i] = σ(z[i])` over the common length: bit for bit [`Activation::value`], with
    /// tanh vectorised ([`crate::tanh::tanh_into`]).
    pub fn values_into(self, z: &[f64], a: &mut [f64]) {
        match self {
            Activation::Tanh => crate::tanh::tanh_into(z, a),
            _ => {
                for (a, &z) in a.iter_mut().zip(z) {
                    *a = self.value(z);
                }
            }
        }
    }

    /// σ′(z).
    #[inline]
    pub fn derivative(self, z: f64) -> f64 {
        self.derivatives(z, self.value(z)).0
    }

    /// σ″(z).
    #[inline]
    pub fn second_derivative(self, z: f64) -> f64 {
        self.derivatives(z, self.value(z)).1
    }

    /// (σ′(z), σ″(z)) given z and the already computed a = σ(z).
    ///
    /// Passing `a` lets tanh and sigmoid reuse the forward value. `a` must equal
    /// `self.value(z)`; other values give meaningless results.
    #[inline]
    pub fn derivatives(self, z: f64, a: f64) -> (f64, f64) {
        match self {
            Activation::Identity => (1.0, 0.0),
            Activation::Tanh => {
                let d = 1.0 - a * a;
                (d, -2.0 * a * d)
            }
            Activation::Sigmoid => {
                let d = a * (1.0 - a);
                (d, d * (1.0 - 2.0 * a))
            }
            Activation::Softplus => {
                let s = sigmoid(z);
                (s, s * (1.0 - s))
            }
            Activation::Relu => (if z > 0.0 { 1.0 } else { 0.0 }, 0.0),
            Activation::LeakyRelu { slope } => (if z > 0.0 { 1.0 } else { slope }, 0.0),
        }
    }

    /// Whether σ″ is zero everywhere (identity, ReLU, leaky ReLU): then c_l = 0 and the
    /// pre-activation Hessians are pure Gauss–Newton terms.
    pub fn is_piecewise_linear(self) -> bool {
        matches!(self, Activation::Identity | Activation::Relu | Activation::LeakyRelu { .. })
    }

    /// Every activation, with leaky ReLU at the default slope: handy for test tables.
    pub fn all() -> [Activation; 6] {
        [
            Activation::Identity,
            Activation::Tanh,
            Activation::Sigmoid,
            Activation::Softplus,
            Activation::Relu,
            Activation::LeakyRelu { slope: DEFAULT_LEAKY_SLOPE },
        ]
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Activation::Identity => f.write_str("identity"),
            Activation::Tanh => f.write_str("tanh"),
            Activation::Sigmoid => f.write_str("sigmoid"),
            Activation::Softplus => f.write_str("softplus"),
            Activation::Relu => f.write_str("relu"),
            Activation::LeakyRelu { slope } if *slope == DEFAULT_LEAKY_SLOPE => {
                f.write_str("leaky_relu")
            }
            Activation::LeakyRelu { slope } => write!(f, "leaky_relu({slope})"),
        }
    }
}

impl FromStr for Activation {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        let unknown = || CoreError::UnknownActivation { name: s.to_string() };
        Ok(match name {
            "identity" | "linear" => Activation::Identity,
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            "softplus" => Activation::Softplus,
            "relu" => Activation::Relu,
            "leaky_relu" => Activation::LeakyRelu { slope: DEFAULT_LEAKY_SLOPE },
            _ => {
                let inner = name
                    .strip_prefix("leaky_relu(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .ok_or_else(unknown)?;
                let slope: f64 = inner.trim().parse().map_err(|_| unknown())?;
                if !slope.is_finite() {
                    return Err(CoreError::BadSlope { slope });
                }
                Activation::LeakyRelu { slope }
            }
        })
    }
}

impl Serialize for Activation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Activation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_finite_differences() {
        let eps = 1e-6;
        for act in Activation::all() {
            for &z in &[-3.0, -0.7, -0.1, 0.3, 1.1, 4.0] {
                let fd1 = (act.value(z + eps) - act.value(z - eps)) / (2.0 * eps);
                let fd2 = (act.derivative(z + eps) - act.derivative(z - eps)) / (2.0 * eps);
                assert!((fd1 - act.derivative(z)).abs() < 1e-8, "{act} σ′({z})");
                assert!((fd2 - act.second_derivative(z)).abs() < 1e-8, "{act} σ″({z})");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for act in Activation::all().into_iter().chain([Activation::LeakyRelu { slope: 0.25 }]) {
            let parsed: Activation = act.to_string().parse().unwrap();
            assert_eq!(parsed, act);
        }
        assert!(matches!(
            "swish".parse::<Activation>(),
            Err(CoreError::UnknownActivation { name }) if name == "swish"
        ));
        assert!("leaky_relu(x)".parse::<Activation>().is_err());
    }

    #[test]
    fn extreme_inputs_stay_finite() {
        for act in Activation::all() {
            for &z in &[-1e4, 1e4] {
                let a = act.value(z);
                let (d1, d2) = act.derivatives(z, a);
                assert!(a.is_finite() && d1.is_finite() && d2.is_finite(), "{act} at {z}");
            }
        }
    }
}

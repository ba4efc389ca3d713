//! Weight initialisation with a portable random stream.
//!
//! Same seed, same weights on every platform: the random bits come from a caller-supplied
//! [`rand::Rng`] (esso seeds `rand_chacha::ChaCha8Rng`, whose stream is specified bit for
//! bit), and the normal draws use only IEEE-754 basic operations (+, −, ×, ÷, √), with a
//! logarithm of our own ([`crate::portable::portable_ln`]) instead of the platform's libm.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::portable::{standard_normal, uniform01};

/// How the weights of a dense layer are drawn; biases always start at zero.
///
/// `fan_in` = n_{l−1}, `fan_out` = n_l.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Glorot/Xavier uniform: U(−r, r), r = √(6 / (fan_in + fan_out)).
    #[default]
    GlorotUniform,
    /// Glorot/Xavier normal: N(0, 2 / (fan_in + fan_out)).
    GlorotNormal,
    /// He (Kaiming) normal: N(0, 2 / fan_in), for ReLU nets.
    HeNormal,
    /// LeCun normal: N(0, 1 / fan_in).
    LecunNormal,
}

impl Init {
    /// Draws one weight for a layer with the given fans.
    pub fn sample(self, fan_in: usize, fan_out: usize, rng: &mut impl Rng) -> f64 {
        let (fi, fo) = (fan_in as f64, fan_out as f64);
        match self {
            Init::GlorotUniform => {
                let r = (6.0 / (fi + fo)).sqrt();
                r * (2.0 * uniform01(rng) - 1.0)
            }
            Init::GlorotNormal => (2.0 / (fi + fo)).sqrt() * standard_normal(rng),
            Init::HeNormal => (2.0 / fi).sqrt() * standard_normal(rng),
            Init::LecunNormal => (1.0 / fi).sqrt() * standard_normal(rng),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn normal_draws_have_unit_moments() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| standard_normal(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        // Standard errors: 1/√n ≈ 0.007 for the mean, √(2/n) ≈ 0.01 for the variance.
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }

    #[test]
    fn same_seed_same_draws() {
        let a: Vec<f64> = {
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            (0..5).map(|_| Init::HeNormal.sample(10, 5, &mut rng)).collect()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let b: Vec<f64> = (0..5).map(|_| Init::HeNormal.sample(10, 5, &mut rng)).collect();
        assert_eq!(a, b);
    }
}

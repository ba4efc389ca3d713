//! Weight initialisation with a portable random stream.
//!
//! Same seed, same weights on every platform: the random bits come from a caller-supplied
//! [`rand::Rng`] (esso seeds `rand_chacha::ChaCha8Rng`, whose stream is specified bit for
//! bit), and the normal draws use only IEEE-754 basic operations (+, −, ×, ÷, √), with a
//! logarithm of our own ([`portable_ln`]) instead of the platform's libm.

use rand::Rng;
use serde::{Deserialize, Serialize};

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

/// A uniform draw in [0, 1) with 53 random bits.
pub fn uniform01(rng: &mut impl Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A standard normal draw (Marsaglia's polar method), bit-identical on every IEEE-754 platform.
pub fn standard_normal(rng: &mut impl Rng) -> f64 {
    loop {
        let u = 2.0 * uniform01(rng) - 1.0;
        let v = 2.0 * uniform01(rng) - 1.0;
        let s = u * u + v * v;
        if s > 0.0 && s < 1.0 {
            return u * (-2.0 * portable_ln(s) / s).sqrt();
        }
    }
}

/// Natural logarithm of a positive, finite, normal x from basic operations only.
///
/// x = m·2^e with m in [1, 2); ln m = 2 atanh((m − 1)/(m + 1)) by its series. Agrees with
/// `f64::ln` to a few ulp; its point is to give the same bits everywhere.
pub fn portable_ln(x: f64) -> f64 {
    debug_assert!(x > 0.0 && x.is_finite());
    const LN2: f64 = std::f64::consts::LN_2;
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mantissa = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    // Centre m on 1 (m in [√½, √2)) so the series converges fast.
    let (m, e) = if mantissa > std::f64::consts::SQRT_2 {
        (mantissa * 0.5, exponent + 1)
    } else {
        (mantissa, exponent)
    };
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let mut term = t;
    let mut sum = 0.0;
    let mut k = 1.0;
    // |t| ≤ 0.172, t² ≤ 0.0295: 12 terms reach 1e-19.
    for _ in 0..12 {
        sum += term / k;
        term *= t2;
        k += 2.0;
    }
    2.0 * sum + e as f64 * LN2
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn portable_ln_agrees_with_libm() {
        for &x in &[1e-300, 1e-10, 0.001, 0.3, 0.7, 1.0, 1.5, 2.0, 3.0, 1e10] {
            let (a, b) = (portable_ln(x), x.ln());
            assert!((a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(1.0), "ln({x}): {a} vs {b}");
        }
    }

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

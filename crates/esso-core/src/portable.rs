//! Random draws and elementary functions that give the same bits on every IEEE-754 platform.
//!
//! The random bits come from a caller-supplied [`rand::Rng`] (esso uses
//! `rand_chacha::ChaCha8Rng`, whose stream is specified bit for bit) through `next_u64` only,
//! and every function here uses only the basic operations (+, −, ×, ÷, √, and the correctly
//! rounded fused multiply-add), never the platform's libm. So initialisation, shuffles, subsets and synthetic datasets are
//! reproducible everywhere. esso-data and esso-optim use this module rather than their own.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Tag of the per-epoch shuffle stream (see [`derived_rng`]).
pub const SHUFFLE_TAG: &[u8; 16] = b"esso-shuffle-v1.";

/// A ChaCha8 generator that depends only on `(seed, index, tag)`.
///
/// The 32-byte ChaCha key is `seed` (little-endian) ‖ `index` (little-endian) ‖ the 16-byte
/// `tag` naming the use, which keeps the random streams of different uses apart.
pub fn derived_rng(seed: u64, index: u64, tag: &[u8; 16]) -> ChaCha8Rng {
    let mut key = [0_u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&index.to_le_bytes());
    key[16..].copy_from_slice(tag);
    ChaCha8Rng::from_seed(key)
}

/// Shuffles `items` in place (Fisher–Yates, drawing with [`uniform_below`]).
///
/// Uses only `rng.next_u64()`, so a given generator state gives the same order on every
/// platform and with every version of `rand`.
pub fn shuffle_in_place<T>(items: &mut [T], rng: &mut impl Rng) {
    for i in (1..items.len()).rev() {
        // i < items.len() ≤ isize::MAX, so i + 1 fits in u64 and the draw fits in usize.
        let j = uniform_below(rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// The sample order of one epoch: a permutation of `0..n_samples` that depends only on
/// `(seed, epoch)`, bit-identical on every platform. The one definition of the epoch order
/// in esso (the training loop and esso-data both call it).
///
/// # Examples
/// ```
/// let order = esso_core::portable::epoch_permutation(10, 42, 0);
/// assert_eq!(order, esso_core::portable::epoch_permutation(10, 42, 0));
/// assert_ne!(order, esso_core::portable::epoch_permutation(10, 42, 1));
/// let mut sorted = order.clone();
/// sorted.sort_unstable();
/// assert_eq!(sorted, (0..10).collect::<Vec<_>>());
/// ```
pub fn epoch_permutation(n_samples: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n_samples).collect();
    shuffle_in_place(&mut order, &mut derived_rng(seed, epoch, SHUFFLE_TAG));
    order
}

/// A uniform integer in `0..bound`, exactly unbiased (Lemire's multiply-and-reject).
///
/// # Panics
/// If `bound` is zero.
pub fn uniform_below(rng: &mut impl Rng, bound: u64) -> u64 {
    assert!(bound > 0, "uniform_below needs a positive bound");
    let mut product = u128::from(rng.next_u64()) * u128::from(bound);
    let mut low = product as u64;
    if low < bound {
        let threshold = bound.wrapping_neg() % bound;
        while low < threshold {
            product = u128::from(rng.next_u64()) * u128::from(bound);
            low = product as u64;
        }
    }
    (product >> 64) as u64
}

/// A uniform draw in [0, 1) with 53 random bits.
pub fn uniform01(rng: &mut impl Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1_u64 << 53) as f64)
}

/// A standard normal draw (Marsaglia's polar method with [`portable_ln`]).
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

/// Natural logarithm of a positive, finite, normal `x` from basic operations only.
///
/// `x = m·2^e`, `ln m = 2 atanh((m − 1)/(m + 1))` by its series. Agrees with `f64::ln` to a
/// few ulp.
pub fn portable_ln(x: f64) -> f64 {
    const LN2: f64 = std::f64::consts::LN_2;
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mantissa = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
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
    // |t| ≤ 0.172, so 14 odd terms reach below 1e-17 relative.
    for _ in 0..14 {
        sum += term / k;
        term *= t2;
        k += 2.0;
    }
    2.0 * sum + e as f64 * LN2
}

/// `e^x` from basic operations only; 0 below −745 and +∞ above 709.8.
///
/// `x = k ln 2 + r` with `|r| ≤ ½ ln 2`, `e^r` by its Taylor series, `2^k` from the exponent
/// bits. Agrees with `f64::exp` to a few ulp.
pub fn portable_exp(x: f64) -> f64 {
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    if x.is_nan() {
        return x;
    }
    if x > 709.78 {
        return f64::INFINITY;
    }
    if x < -745.0 {
        return 0.0;
    }
    let k = (x / std::f64::consts::LN_2).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..=16 {
        term *= r / f64::from(n);
        sum += term;
    }
    // Split 2^k into two factors so that subnormal and near-overflow results stay exact.
    let k = k as i64;
    let k1 = k / 2;
    let k2 = k - k1;
    sum * pow2(k1) * pow2(k2)
}

/// 2^k for −1022 ≤ k ≤ 1023.
fn pow2(k: i64) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// tanh: the activation's [`crate::tanh::tanh`], which is already portable (IEEE-754 basic
/// operations, correctly rounded fused multiply-adds, rounding to integral and bit
/// manipulation only) and accurate to ≤ 2 ulp, also for small |x|.
pub fn portable_tanh(x: f64) -> f64 {
    crate::tanh::tanh(x)
}

/// `(sin x, cos x)` from basic operations only, for `|x| ≤ 10⁶` (used for spiral angles).
///
/// `x = k π/2 + r` with `|r| ≤ π/4` (two-term Cody–Waite reduction), then Taylor series.
/// Agrees with `f64::sin_cos` to about 1e-15 for moderate `|x|`.
pub fn portable_sin_cos(x: f64) -> (f64, f64) {
    const PIO2_HI: f64 = f64::from_bits(0x3ff9_21fb_5440_0000);
    const PIO2_LO: f64 = f64::from_bits(0x3dd0_b461_1a62_6331);
    let k = (x / std::f64::consts::FRAC_PI_2).round();
    let r = (x - k * PIO2_HI) - k * PIO2_LO;
    let r2 = r * r;
    let (mut s_term, mut c_term) = (r, 1.0);
    let (mut s, mut c) = (r, 1.0);
    for n in 1..=11 {
        let n = f64::from(n);
        s_term *= -r2 / ((2.0 * n) * (2.0 * n + 1.0));
        c_term *= -r2 / ((2.0 * n - 1.0) * (2.0 * n));
        s += s_term;
        c += c_term;
    }
    match (k as i64).rem_euclid(4) {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elementary_functions_agree_with_libm() {
        for i in -400..=400 {
            let x = f64::from(i) * 0.0371;
            let (s, c) = portable_sin_cos(x);
            assert!((s - x.sin()).abs() < 1e-14, "sin {x}");
            assert!((c - x.cos()).abs() < 1e-14, "cos {x}");
            assert!(((portable_exp(x) - x.exp()) / x.exp()).abs() < 1e-14, "exp {x}");
            assert!((portable_tanh(x) - x.tanh()).abs() < 1e-15, "tanh {x}");
            let y = x.abs() + 1e-3;
            assert!((portable_ln(y) - y.ln()).abs() < 1e-14, "ln {y}");
        }
        assert_eq!(portable_exp(-800.0), 0.0);
        assert_eq!(portable_exp(800.0), f64::INFINITY);
        assert!((portable_exp(-740.0) - (-740.0_f64).exp()).abs() < 1e-320);
    }

    #[test]
    fn uniform_below_stays_below_and_covers() {
        let mut rng = derived_rng(1, 0, b"esso-test----v1.");
        let mut seen = [0_usize; 7];
        for _ in 0..7000 {
            seen[uniform_below(&mut rng, 7) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800 && n < 1200), "{seen:?}");
        assert_eq!(uniform_below(&mut rng, 1), 0);
    }
}

//! Standardisation of features with training statistics.

use ndarray::ArrayRef2;

/// Per-feature mean and standard deviation of a training split, for standardisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl Standardizer {
    /// Fits the statistics on the rows of `features` (n_samples × n_features).
    ///
    /// The standard deviation is the population one (divisor n); a feature with zero
    /// variance gets 1. With no rows, the mean is 0 and the scale 1.
    pub fn fit(features: &ArrayRef2<f64>) -> Standardizer {
        let (n_samples, n_features) = features.dim();
        let mut mean = vec![0.0; n_features];
        let mut var = vec![0.0; n_features];
        if n_samples > 0 {
            let n = n_samples as f64;
            for row in features.rows() {
                for (m, x) in mean.iter_mut().zip(row) {
                    *m += x;
                }
            }
            mean.iter_mut().for_each(|m| *m /= n);
            for row in features.rows() {
                for ((v, x), m) in var.iter_mut().zip(row).zip(&mean) {
                    *v += (x - m) * (x - m);
                }
            }
            var.iter_mut().for_each(|v| *v /= n);
        }
        let std = var.iter().map(|&v| if v > 0.0 { v.sqrt() } else { 1.0 }).collect();
        Standardizer { mean, std }
    }

    /// The per-feature means.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The per-feature scales (standard deviation, or 1 for a constant feature).
    pub fn std(&self) -> &[f64] {
        &self.std
    }

    /// Applies `x ← (x − mean) / std` to every row, in place.
    ///
    /// # Panics
    /// If `features` does not have as many columns as the fitted data (a caller bug).
    #[track_caller]
    pub fn apply(&self, features: &mut ArrayRef2<f64>) {
        assert_eq!(features.ncols(), self.mean.len(), "feature count differs from the fit");
        for mut row in features.rows_mut() {
            for ((x, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *x = (*x - m) / s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn fit_is_population_statistics() {
        let stats = Standardizer::fit(&array![[1.0, 2.0], [3.0, 2.0]]);
        assert_eq!(stats.mean(), &[2.0, 2.0]);
        assert_eq!(stats.std(), &[1.0, 1.0]);
        let mut x = array![[5.0, 3.0]];
        stats.apply(&mut x);
        assert_eq!(x, array![[3.0, 1.0]]);
        let empty = Standardizer::fit(&ndarray::Array2::<f64>::zeros((0, 3)));
        assert_eq!(empty.std(), &[1.0; 3]);
    }
}

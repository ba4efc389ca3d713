//! Per-sample losses on the logits z_L, with gradient and exact Hessian.

use std::fmt;
use std::str::FromStr;

use ndarray::{Array1, ArrayRef1, ArrayRef2, ArrayView1, ArrayView2};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{CoreError, Result};

/// The target of one sample.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A class index, for [`Loss::CrossEntropy`].
    Class(usize),
    /// A target vector t, for [`Loss::Mse`].
    Values(ArrayView1<'a, f64>),
}

/// The targets of a batch of samples.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a> {
    /// One class index per sample.
    Classes(&'a [usize]),
    /// One row per sample.
    Values(ArrayView2<'a, f64>),
}

impl<'a> Targets<'a> {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes(c) => c.len(),
            Targets::Values(v) => v.nrows(),
        }
    }

    /// Whether there are no targets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The target of sample `sample_idx`.
    ///
    /// # Panics
    /// If `sample_idx >= self.len()`.
    pub fn get(&self, sample_idx: usize) -> Target<'a> {
        match self {
            Targets::Classes(c) => Target::Class(c[sample_idx]),
            Targets::Values(v) => {
                let v: ArrayView2<'a, f64> = *v;
                Target::Values(v.index_axis_move(ndarray::Axis(0), sample_idx))
            }
        }
    }
}

/// A per-sample loss ℓ(z_L) (method.md §1–§2).
///
/// Names: `cross_entropy` (softmax cross-entropy from logits, class targets) and `mse`
/// (½‖z − t‖², vector targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Loss {
    /// ℓ = logsumexp(z) − z_y; δ = p − e_y; ∂²ℓ/∂z² = diag(p) − p pᵀ with p = softmax(z).
    CrossEntropy,
    /// ℓ = ½‖z − t‖²; δ = z − t; ∂²ℓ/∂z² = I.
    Mse,
}

impl Loss {
    /// Name used in configs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Loss::CrossEntropy => "cross_entropy",
            Loss::Mse => "mse",
        }
    }

    /// Checks that `target` fits this loss and `n_outputs` outputs.
    ///
    /// # Errors
    /// [`CoreError::TargetKind`], [`CoreError::ClassOutOfRange`], [`CoreError::TargetLength`].
    pub fn check_target(self, target: Target<'_>, n_outputs: usize) -> Result<()> {
        match (self, target) {
            (Loss::CrossEntropy, Target::Class(class)) => {
                if class >= n_outputs {
                    return Err(CoreError::ClassOutOfRange { class, n_classes: n_outputs });
                }
            }
            (Loss::Mse, Target::Values(t)) => {
                if t.len() != n_outputs {
                    return Err(CoreError::TargetLength { expected: n_outputs, got: t.len() });
                }
            }
            (Loss::CrossEntropy, Target::Values(_)) => {
                return Err(CoreError::TargetKind { loss: self.name(), expected: "class index" });
            }
            (Loss::Mse, Target::Class(_)) => {
                return Err(CoreError::TargetKind { loss: self.name(), expected: "vector" });
            }
        }
        Ok(())
    }

    /// Loss value ℓ(z) for one sample. Numerically stable: logits of ±1e4 give a finite value.
    ///
    /// # Errors
    /// When the target does not fit (see [`Loss::check_target`]).
    pub fn value(self, logits: &ArrayRef1<f64>, target: Target<'_>) -> Result<f64> {
        self.check_target(target, logits.len())?;
        Ok(match (self, target) {
            (Loss::CrossEntropy, Target::Class(y)) => log_sum_exp(logits) - logits[y],
            (Loss::Mse, Target::Values(t)) => {
                0.5 * logits.iter().zip(t.iter()).map(|(z, t)| (z - t) * (z - t)).sum::<f64>()
            }
            _ => unreachable!("check_target rejected mismatched kinds"),
        })
    }

    /// Writes δ_L = ∂ℓ/∂z_L into `delta` and returns ℓ.
    ///
    /// # Errors
    /// When the target does not fit.
    ///
    /// # Panics
    /// If `delta.len() != logits.len()`.
    pub fn value_and_delta(
        self,
        logits: &ArrayRef1<f64>,
        target: Target<'_>,
        delta: &mut ArrayRef1<f64>,
    ) -> Result<f64> {
        assert_eq!(delta.len(), logits.len(), "delta buffer has the wrong length");
        self.check_target(target, logits.len())?;
        match (self, target) {
            (Loss::CrossEntropy, Target::Class(y)) => {
                let lse = log_sum_exp(logits);
                for (d, &z) in delta.iter_mut().zip(logits.iter()) {
                    *d = (z - lse).exp();
                }
                delta[y] -= 1.0;
                Ok(lse - logits[y])
            }
            (Loss::Mse, Target::Values(t)) => {
                let mut value = 0.0;
                for ((d, &z), &t) in delta.iter_mut().zip(logits.iter()).zip(t.iter()) {
                    *d = z - t;
                    value += 0.5 * (z - t) * (z - t);
                }
                Ok(value)
            }
            _ => unreachable!("check_target rejected mismatched kinds"),
        }
    }

    /// Writes the exact output Hessian H_L = ∂²ℓ/∂z_L² into `hessian` (n_L × n_L).
    ///
    /// It does not depend on the target: diag(p) − p pᵀ for cross-entropy, I for MSE.
    ///
    /// # Panics
    /// If `hessian` is not n_L × n_L.
    pub fn output_hessian_into(self, logits: &ArrayRef1<f64>, hessian: &mut ArrayRef2<f64>) {
        let n = logits.len();
        assert_eq!(hessian.dim(), (n, n), "hessian buffer has the wrong shape");
        match self {
            Loss::CrossEntropy => {
                let lse = log_sum_exp(logits);
                for i in 0..n {
                    let pi = (logits[i] - lse).exp();
                    for j in 0..n {
                        let pj = (logits[j] - lse).exp();
                        hessian[[i, j]] = if i == j { pi - pi * pi } else { -pi * pj };
                    }
                }
            }
            Loss::Mse => {
                hessian.fill(0.0);
                for i in 0..n {
                    hessian[[i, i]] = 1.0;
                }
            }
        }
    }
}

/// log Σ exp(z_i), computed stably.
pub fn log_sum_exp(z: &ArrayRef1<f64>) -> f64 {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + z.iter().map(|&v| (v - max).exp()).sum::<f64>().ln()
}

/// softmax(z), computed stably.
pub fn softmax(z: &ArrayRef1<f64>) -> Array1<f64> {
    let lse = log_sum_exp(z);
    z.mapv(|v| (v - lse).exp())
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Loss {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "cross_entropy" | "ce" | "softmax_cross_entropy" => Ok(Loss::CrossEntropy),
            "mse" => Ok(Loss::Mse),
            _ => Err(CoreError::UnknownLoss { name: s.to_string() }),
        }
    }
}

impl Serialize for Loss {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Loss {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};

    #[test]
    fn cross_entropy_is_finite_at_extreme_logits() {
        let z = array![1e4, -1e4, 0.0];
        let mut d = Array1::zeros(3);
        for y in 0..3 {
            let v = Loss::CrossEntropy.value_and_delta(&z, Target::Class(y), &mut d).unwrap();
            assert!(v.is_finite(), "loss {v}");
            assert!(d.iter().all(|x| x.is_finite()));
        }
        let v = Loss::CrossEntropy.value(&z, Target::Class(1)).unwrap();
        assert!((v - 2e4).abs() < 1e-9);
        let mut h = Array2::zeros((3, 3));
        Loss::CrossEntropy.output_hessian_into(&z, &mut h);
        assert!(h.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn delta_and_hessian_match_finite_differences() {
        let z = array![0.3, -1.2, 2.0, 0.1];
        let t = array![0.5, 0.0, -1.0, 2.0];
        let eps = 1e-6;
        for (loss, target) in
            [(Loss::CrossEntropy, Target::Class(2)), (Loss::Mse, Target::Values(t.view()))]
        {
            let mut d = Array1::zeros(4);
            loss.value_and_delta(&z, target, &mut d).unwrap();
            let mut h = Array2::zeros((4, 4));
            loss.output_hessian_into(&z, &mut h);
            for i in 0..4 {
                let mut zp = z.clone();
                zp[i] += eps;
                let mut zm = z.clone();
                zm[i] -= eps;
                let fd = (loss.value(&zp, target).unwrap() - loss.value(&zm, target).unwrap())
                    / (2.0 * eps);
                assert!((fd - d[i]).abs() < 1e-8, "{loss} delta[{i}]");
                let mut dp = Array1::zeros(4);
                let mut dm = Array1::zeros(4);
                loss.value_and_delta(&zp, target, &mut dp).unwrap();
                loss.value_and_delta(&zm, target, &mut dm).unwrap();
                for j in 0..4 {
                    let fd2 = (dp[j] - dm[j]) / (2.0 * eps);
                    assert!((fd2 - h[[j, i]]).abs() < 1e-8, "{loss} H[{j},{i}]");
                }
            }
        }
    }

    #[test]
    fn targets_are_checked() {
        let z = array![0.0, 1.0];
        assert_eq!(
            Loss::CrossEntropy.value(&z, Target::Class(2)),
            Err(CoreError::ClassOutOfRange { class: 2, n_classes: 2 })
        );
        let t = array![1.0];
        assert_eq!(
            Loss::Mse.value(&z, Target::Values(t.view())),
            Err(CoreError::TargetLength { expected: 2, got: 1 })
        );
        assert!(matches!(Loss::Mse.value(&z, Target::Class(0)), Err(CoreError::TargetKind { .. })));
    }
}

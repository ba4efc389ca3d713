//! Spectral functions f(e) that turn a curvature eigenvalue into a step scale (method.md §3).

use serde::{Deserialize, Serialize};

use crate::error::{HessianError, Result};

/// Which spectral function: how an eigenvalue e of the Hessian (block) scales the gradient
/// component along its eigenvector.
///
/// ```text
/// Damped         f(e) = 1 / (e + λ)           damped Newton, needs e + λ > 0
/// Absolute       f(e) = 1 / (|e| + λ)         absolute Hessian, saddle-free (the default)
/// Floor          f(e) = 1 / max(|e|, λ)
/// Power { α }    f(e) = (|e| + λ)^(−α)        partial preconditioning, 0 < α ≤ 1
/// ```
///
/// Serialised in snake case: `"damped"`, `"absolute"`, `"floor"`, `{"power": {"alpha": 0.5}}`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpectralKind {
    /// f(e) = 1/(e + λ): the damped Newton step −(B + λI)⁻¹ g.
    Damped,
    /// f(e) = 1/(|e| + λ): the absolute-Hessian (saddle-free) step −(|B| + λI)⁻¹ g.
    #[default]
    Absolute,
    /// f(e) = 1/max(|e|, λ).
    Floor,
    /// f(e) = (|e| + λ)^(−α), 0 < α ≤ 1 (α = 1 is [`SpectralKind::Absolute`]).
    Power {
        /// The exponent α ∈ (0, 1].
        alpha: f64,
    },
}

/// A validated spectral function: a [`SpectralKind`], the regularisation λ > 0 and an optional
/// eigenvalue clip e_max > 0 (|e| is capped at e_max, keeping its sign, before f is applied).
///
/// Large λ turns every step into SGD with rate 1/λ; λ → 0 gives the full Newton step.
///
/// # Examples
/// ```
/// use esso_hessian::{SpectralFn, SpectralKind};
/// let f = SpectralFn::new(SpectralKind::Absolute, 2.0, Some(10.0))?;
/// assert_eq!(f.apply(-3.0), 1.0 / 5.0);
/// assert_eq!(f.apply(100.0), 1.0 / 12.0); // clipped to 10
/// assert!(SpectralFn::new(SpectralKind::Power { alpha: 1.5 }, 1.0, None).is_err());
/// # Ok::<(), esso_hessian::HessianError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpectralFn {
    kind: SpectralKind,
    lambda: f64,
    clip: Option<f64>,
}

impl SpectralFn {
    /// A spectral function, validated.
    ///
    /// # Errors
    /// [`HessianError::InvalidParameter`] naming `lambda` (not finite, ≤ 0 or subnormal:
    /// f(0) = 1/λ must be finite), `alpha` (not in (0, 1]) or `clip` (not finite or ≤ 0).
    pub fn new(kind: SpectralKind, lambda: f64, clip: Option<f64>) -> Result<Self> {
        if lambda > 0.0 && lambda < f64::MIN_POSITIVE {
            return Err(HessianError::InvalidParameter {
                name: "lambda",
                value: lambda,
                reason: "must be a normal number (>= 2.2250738585072014e-308, in practice far larger): for a subnormal lambda 1/lambda overflows and directions along zero eigenvalues are infinite",
            });
        }
        if !lambda.is_finite() || lambda <= 0.0 {
            return Err(HessianError::InvalidParameter {
                name: "lambda",
                value: lambda,
                reason: "must be finite and > 0",
            });
        }
        if let SpectralKind::Power { alpha } = kind
            && !(alpha > 0.0 && alpha <= 1.0)
        {
            return Err(HessianError::InvalidParameter {
                name: "alpha",
                value: alpha,
                reason: "must be in (0, 1]",
            });
        }
        if let Some(clip) = clip
            && (!clip.is_finite() || clip <= 0.0)
        {
            return Err(HessianError::InvalidParameter {
                name: "clip",
                value: clip,
                reason: "must be finite and > 0",
            });
        }
        Ok(SpectralFn { kind, lambda, clip })
    }

    /// The absolute-Hessian function 1/(|e| + λ) without clipping: the main method.
    ///
    /// # Errors
    /// As [`SpectralFn::new`].
    pub fn absolute(lambda: f64) -> Result<Self> {
        Self::new(SpectralKind::Absolute, lambda, None)
    }

    /// The damped function 1/(e + λ) without clipping.
    ///
    /// # Errors
    /// As [`SpectralFn::new`].
    pub fn damped(lambda: f64) -> Result<Self> {
        Self::new(SpectralKind::Damped, lambda, None)
    }

    /// The kind.
    pub fn kind(&self) -> SpectralKind {
        self.kind
    }

    /// The regularisation λ > 0.
    pub fn lambda(&self) -> f64 {
        self.lambda
    }

    /// The eigenvalue clip e_max, if any.
    pub fn clip(&self) -> Option<f64> {
        self.clip
    }

    /// The same function with another λ (for per-layer scaled regularisation).
    ///
    /// # Errors
    /// [`HessianError::InvalidParameter`] naming `lambda`.
    pub fn with_lambda(&self, lambda: f64) -> Result<Self> {
        Self::new(self.kind, lambda, self.clip)
    }

    /// e with |e| capped at e_max (sign kept); e itself without a clip.
    #[inline]
    pub fn clipped(&self, e: f64) -> f64 {
        match self.clip {
            Some(c) => e.clamp(-c, c),
            None => e,
        }
    }

    /// f(e) for an eigenvalue e of the Hessian (block), after clipping.
    ///
    /// For [`SpectralKind::Damped`] with e + λ ≤ 0 the value is negative or infinite: check
    /// the spectrum first with [`SpectralFn::check_min_eigenvalue`]. The other kinds are
    /// positive and finite for every finite e.
    #[inline]
    pub fn apply(&self, e: f64) -> f64 {
        let e = self.clipped(e);
        let lambda = self.lambda;
        match self.kind {
            SpectralKind::Damped => 1.0 / (e + lambda),
            SpectralKind::Absolute => 1.0 / (e.abs() + lambda),
            SpectralKind::Floor => 1.0 / e.abs().max(lambda),
            SpectralKind::Power { alpha } => (e.abs() + lambda).powf(-alpha),
        }
    }

    /// Checks that f is a positive, finite scale on a spectrum whose smallest eigenvalue is
    /// `min_eigenvalue`: always true but for [`SpectralKind::Damped`], which needs
    /// clip(e_min) + λ > 0.
    ///
    /// # Errors
    /// [`HessianError::NonPositiveShift`] with `layer_idx`, the clipped eigenvalue and λ.
    pub fn check_min_eigenvalue(
        &self,
        min_eigenvalue: f64,
        layer_idx: Option<usize>,
    ) -> Result<()> {
        if self.kind == SpectralKind::Damped {
            let e = self.clipped(min_eigenvalue);
            if e.is_nan() || e + self.lambda <= 0.0 {
                return Err(HessianError::NonPositiveShift {
                    layer_idx,
                    min_eigenvalue: e,
                    lambda: self.lambda,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_follow_the_definitions() {
        let e = -3.0;
        let lambda = 0.5;
        let f = |kind| SpectralFn::new(kind, lambda, None).unwrap().apply(e);
        assert_eq!(f(SpectralKind::Damped), 1.0 / (e + lambda));
        assert_eq!(f(SpectralKind::Absolute), 1.0 / 3.5);
        assert_eq!(f(SpectralKind::Floor), 1.0 / 3.0);
        assert_eq!(f(SpectralKind::Power { alpha: 0.5 }), 3.5f64.powf(-0.5));
        assert_eq!(f(SpectralKind::Power { alpha: 1.0 }), f(SpectralKind::Absolute));
        let floor = SpectralFn::new(SpectralKind::Floor, 2.0, None).unwrap();
        assert_eq!(floor.apply(0.1), 0.5);
        let clipped = SpectralFn::new(SpectralKind::Damped, 1.0, Some(2.0)).unwrap();
        assert_eq!(clipped.apply(-10.0), -1.0);
        assert_eq!(clipped.apply(10.0), 1.0 / 3.0);
    }

    #[test]
    fn bad_parameters_are_named() {
        let err = |kind, lambda, clip| SpectralFn::new(kind, lambda, clip).unwrap_err();
        let name = |e: HessianError| match e {
            HessianError::InvalidParameter { name, .. } => name,
            other => panic!("unexpected {other}"),
        };
        assert_eq!(name(err(SpectralKind::Absolute, 0.0, None)), "lambda");
        assert_eq!(name(err(SpectralKind::Absolute, f64::NAN, None)), "lambda");
        assert_eq!(name(err(SpectralKind::Absolute, f64::INFINITY, None)), "lambda");
        assert_eq!(name(err(SpectralKind::Absolute, 1e-310, None)), "lambda");
        assert_eq!(name(err(SpectralKind::Damped, f64::MIN_POSITIVE / 2.0, None)), "lambda");
        assert!(SpectralFn::absolute(f64::MIN_POSITIVE).unwrap().apply(0.0).is_finite());
        assert_eq!(name(err(SpectralKind::Power { alpha: 0.0 }, 1.0, None)), "alpha");
        assert_eq!(name(err(SpectralKind::Power { alpha: f64::NAN }, 1.0, None)), "alpha");
        assert_eq!(name(err(SpectralKind::Floor, 1.0, Some(-1.0))), "clip");
        assert_eq!(
            err(SpectralKind::Absolute, -1.0, None).to_string(),
            "invalid value -1 for `lambda`: must be finite and > 0"
        );
        let f = SpectralFn::absolute(1.0).unwrap();
        assert!(f.with_lambda(-2.0).is_err());
        assert_eq!(f.with_lambda(3.0).unwrap().lambda(), 3.0);
    }

    #[test]
    fn damped_rejects_non_positive_shifts() {
        let f = SpectralFn::damped(1.0).unwrap();
        assert!(f.check_min_eigenvalue(-0.5, None).is_ok());
        assert_eq!(
            f.check_min_eigenvalue(-1.0, Some(1)),
            Err(HessianError::NonPositiveShift {
                layer_idx: Some(1),
                min_eigenvalue: -1.0,
                lambda: 1.0
            })
        );
        assert!(SpectralFn::absolute(1.0).unwrap().check_min_eigenvalue(-5.0, None).is_ok());
        let clipped = SpectralFn::new(SpectralKind::Damped, 1.0, Some(0.5)).unwrap();
        assert!(clipped.check_min_eigenvalue(-5.0, None).is_ok());
    }

    #[test]
    fn kinds_serialise_in_snake_case() {
        let json = |k: SpectralKind| serde_json::to_string(&k).unwrap();
        assert_eq!(json(SpectralKind::Absolute), "\"absolute\"");
        assert_eq!(json(SpectralKind::Power { alpha: 0.5 }), "{\"power\":{\"alpha\":0.5}}");
        let back: SpectralKind = serde_json::from_str("\"floor\"").unwrap();
        assert_eq!(back, SpectralKind::Floor);
    }
}

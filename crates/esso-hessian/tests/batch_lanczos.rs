//! Lanczos on mini-batch Hessians against dense eigenvalues.

#![allow(clippy::unwrap_used)]

mod batch_fixtures;

use batch_fixtures::{build_batch, spectral_norm, table};
use esso_core::{Activation, Loss};
use esso_hessian::HessianError;
use esso_hessian::batch::{BatchHessian, DenseOperator, SymmetricOperator};
use esso_hessian::lanczos::{LanczosOptions, Which, eigenpairs, eigenpairs_with_progress};
use esso_hessian::reference::dense_eigenvalues;
use ndarray::Array2;

/// Full-dimension Lanczos vs the dense eigensolver, relative to the spectral norm. The issue
/// asks for 1e-6; full reorthogonalisation gives rounding-level agreement.
const FULL_TOL: f64 = 1e-10;

#[test]
fn a_run_to_full_dimension_recovers_every_eigenvalue() {
    let mut worst = 0.0f64;
    for batch in table(2) {
        let h = BatchHessian::new(&batch.mlp, batch.loss, &batch.xs, batch.targets()).unwrap();
        let n = h.dim();
        let reference = dense_eigenvalues(&h.to_dense().unwrap()).unwrap();
        let norm = spectral_norm(&reference);
        let opts = LanczosOptions { max_iter: n, tol: 1e-12, seed: 3 };
        let result = eigenpairs(&h, n, Which::Smallest, &opts).unwrap();
        assert!(result.converged, "{}", batch.label);
        assert_eq!(result.iterations, n, "{}", batch.label);
        // H_B has repeated (zero) eigenvalues: the basis is completed by restarts.
        assert!(result.n_restarts > 0, "{}", batch.label);
        let err =
            result.values.iter().zip(&reference).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
                / norm;
        assert!(err <= FULL_TOL, "{}: {err:e}", batch.label);
        worst = worst.max(err);
        let res = result.residual_norms.iter().fold(0.0f64, |m, r| m.max(*r)) / norm;
        assert!(res <= 1e-9, "{}: residual {res:e}", batch.label);
    }
    println!("worst full-dimension Lanczos eigenvalue error: {worst:e}");
}

#[test]
fn top_k_converges_to_the_dense_extremes() {
    let mut worst = 0.0f64;
    for (idx, batch) in table(5).into_iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        let h = BatchHessian::new(&batch.mlp, batch.loss, &batch.xs, batch.targets()).unwrap();
        let reference = dense_eigenvalues(&h.to_dense().unwrap()).unwrap();
        let norm = spectral_norm(&reference);
        let n = reference.len();
        let k = 3;
        let tol = 1e-8;
        let opts = LanczosOptions { tol, max_iter: n, seed: idx as u64 };
        for which in [Which::Largest, Which::Smallest, Which::LargestMagnitude] {
            h.reset_hvp_count();
            let result = eigenpairs(&h, k, which, &opts).unwrap();
            assert!(result.converged, "{} {which:?}", batch.label);
            assert_eq!(h.hvp_count(), result.n_matvecs);
            // One Krylov sequence holds one copy of each distinct eigenvalue (the zero
            // eigenvalue of H_B is multiple): compare with the distinct values.
            let distinct = distinct_values(reference.as_slice().unwrap(), 1e-9 * norm);
            let expected: Vec<f64> = match which {
                Which::Largest => distinct.iter().rev().take(k).copied().collect(),
                Which::Smallest => distinct.iter().take(k).copied().collect(),
                Which::LargestMagnitude => {
                    let mut v = distinct.clone();
                    v.sort_by(|a, b| b.abs().total_cmp(&a.abs()));
                    v.into_iter().take(k).collect()
                }
            };
            for (got, want) in result.values.iter().zip(&expected) {
                let err = (got - want).abs() / norm;
                // A converged Ritz value with residual r is within r²/gap of an eigenvalue;
                // tol·‖H‖ bounds it here.
                assert!(err <= 1e-8, "{} {which:?}: {got} vs {want} ({err:e})", batch.label);
                worst = worst.max(err);
            }
            for (col, (&theta, &res)) in
                result.values.iter().zip(&result.residual_norms).enumerate()
            {
                let y = result.vectors.column(col).to_vec();
                let hy = h.hvp(&y).unwrap();
                let r = hy.iter().zip(&y).map(|(a, b)| (a - theta * b).powi(2)).sum::<f64>().sqrt();
                assert!((r - res).abs() <= 1e-12 * norm, "reported residual {res} vs {r}");
                assert!(r <= 10.0 * tol * norm, "{} {which:?}: ‖Hv − θv‖ = {r:e}", batch.label);
                assert!((y.iter().map(|v| v * v).sum::<f64>() - 1.0).abs() < 1e-12);
            }
            if which == Which::Largest {
                assert!(result.iterations < n, "top-3 should not need the whole space");
            }
        }
    }
    println!("worst top-k Lanczos eigenvalue error: {worst:e}");
}

/// Ascending values with near-equal neighbours (within `tol`) merged.
fn distinct_values(sorted: &[f64], tol: f64) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for &v in sorted {
        if out.last().is_none_or(|&last| v - last > tol) {
            out.push(v);
        }
    }
    out
}

#[test]
fn progress_is_reported_and_matches_the_result() {
    let batch = build_batch(&[4, 5, 3, 2], Activation::Tanh, Loss::CrossEntropy, 4, 77);
    let h = BatchHessian::new(&batch.mlp, batch.loss, &batch.xs, batch.targets()).unwrap();
    let mut reports = Vec::new();
    let opts = LanczosOptions { tol: 1e-10, max_iter: 200, seed: 1 };
    let result =
        eigenpairs_with_progress(&h, 2, Which::Largest, &opts, &mut |p| reports.push(p.clone()))
            .unwrap();
    assert_eq!(reports.len(), result.iterations);
    let last = reports.last().unwrap();
    assert_eq!(last.n_converged, 2);
    assert_eq!(last.ritz_values, result.values);
    assert!(reports.windows(2).all(|w| w[1].iteration == w[0].iteration + 1));
    // Same seed, same numbers.
    let again = eigenpairs(&h, 2, Which::Largest, &opts).unwrap();
    assert_eq!(again.values, result.values);
}

#[test]
fn breakdown_stops_exactly_on_an_invariant_subspace() {
    // diag(1..=6) with a start vector... the random start sees all 6 distinct values; a
    // matrix with only 2 distinct eigenvalues breaks down after 2 steps.
    let mut a = Array2::<f64>::zeros((8, 8));
    for i in 0..8 {
        a[[i, i]] = if i < 3 { 2.0 } else { -1.0 };
    }
    let op = DenseOperator::new(&a).unwrap();
    let result = eigenpairs(&op, 2, Which::Largest, &LanczosOptions::default()).unwrap();
    assert_eq!(result.iterations, 2);
    assert_eq!(result.n_restarts, 0);
    assert!(result.converged);
    assert!((result.values[0] - 2.0).abs() < 1e-14 && (result.values[1] + 1.0).abs() < 1e-14);
    assert!(result.residual_norms.iter().all(|r| *r < 1e-13));
    // Asking for every eigenvalue continues past the breakdowns with fresh vectors.
    let all = eigenpairs(&op, 8, Which::Largest, &LanczosOptions::default()).unwrap();
    let mut expected = vec![2.0; 3];
    expected.extend([-1.0; 5]);
    assert!(
        all.values.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-13),
        "{:?}",
        all.values
    );
    assert!(all.n_restarts >= 3);
}

struct NanAfter {
    inner: DenseOperator,
    calls: std::sync::atomic::AtomicUsize,
    bad_call: usize,
}

impl SymmetricOperator for NanAfter {
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn apply(&self, v: &[f64], out: &mut [f64]) -> esso_hessian::Result<()> {
        self.inner.apply(v, out)?;
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == self.bad_call {
            out[0] = f64::NAN;
        }
        Ok(())
    }
}

#[test]
fn errors_name_the_quantities() {
    let a = Array2::from_shape_fn((10, 10), |(i, j)| 1.0 / (1.0 + i as f64 + j as f64));
    let op = DenseOperator::new(&a).unwrap();
    let opts = LanczosOptions::default();
    let err = eigenpairs(&op, 11, Which::Largest, &opts).unwrap_err();
    assert_eq!(err, HessianError::TooManyEigenpairs { requested: 11, dim: 10 });
    assert!(err.to_string().contains("11") && err.to_string().contains("10"));
    assert!(eigenpairs(&op, 0, Which::Largest, &opts).is_err());
    let bad = LanczosOptions { tol: -1.0, ..opts };
    assert!(eigenpairs(&op, 1, Which::Largest, &bad).is_err());
    let bad = LanczosOptions { max_iter: 1, ..opts };
    assert!(eigenpairs(&op, 2, Which::Largest, &bad).is_err());
    let nan = NanAfter { inner: op.clone(), calls: 0.into(), bad_call: 3 };
    let err = eigenpairs(&nan, 2, Which::Largest, &opts).unwrap_err();
    assert_eq!(err, HessianError::NonFiniteProduct { what: "Lanczos", iteration: 3 });
    assert!(err.to_string().contains("iteration 3"), "{err}");
    assert!(DenseOperator::new(&Array2::zeros((2, 3))).is_err());
    // Not converged within max_iter: reported, not an error.
    let result =
        eigenpairs(&op, 1, Which::Smallest, &LanczosOptions { max_iter: 2, tol: 1e-14, seed: 0 })
            .unwrap();
    assert!(!result.converged);
    assert_eq!(result.iterations, 2);
}

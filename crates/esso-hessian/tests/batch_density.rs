//! Stochastic Lanczos quadrature: Gauss quadrature exactness and density normalisation.

#![allow(clippy::unwrap_used)]

mod batch_fixtures;

use batch_fixtures::{build_batch, spectral_norm, table};
use esso_core::{Activation, Loss};
use esso_hessian::batch::{BatchHessian, SymmetricOperator};
use esso_hessian::density::{SlqOptions, gauss_quadrature, slq};
use esso_hessian::reference::dense_eigenvalues;
use esso_hessian::trace::hutchinson;
use ndarray::{Array1, Array2};

/// vᵀ H^p v / vᵀv by repeated products with the dense matrix.
fn quadratic_moments(dense: &Array2<f64>, v: &[f64], max_p: usize) -> Vec<f64> {
    let v = Array1::from(v.to_vec());
    let vv = v.dot(&v);
    let mut w = v.clone();
    let mut out = vec![1.0];
    for _ in 1..=max_p {
        w = dense.dot(&w);
        out.push(v.dot(&w) / vv);
    }
    out
}

#[test]
fn gauss_quadrature_reproduces_moments_up_to_degree_2m_minus_1() {
    let mut worst = 0.0f64;
    let mut n_full = 0;
    for batch in table(2).into_iter().step_by(5) {
        let h = BatchHessian::new(&batch.mlp, batch.loss, &batch.xs, batch.targets()).unwrap();
        let dense = h.to_dense().unwrap();
        let norm = spectral_norm(&dense_eigenvalues(&dense).unwrap());
        let v: Vec<f64> = (0..h.dim()).map(|i| ((i * 5 % 7) as f64 - 3.0) / 2.0).collect();
        let steps = 4;
        let quad = gauss_quadrature(&h, &v, steps).unwrap();
        assert!(quad.weights().iter().all(|w| *w >= 0.0));
        let broke_down = quad.nodes().len() < steps;
        // After a breakdown every moment is exact; otherwise degree ≤ 2m − 1.
        let max_exact = if broke_down { 12 } else { 2 * steps - 1 };
        let moments = quadratic_moments(&dense, &v, max_exact + 1);
        for (p, exact) in moments.iter().enumerate().take(max_exact + 1) {
            let err = (quad.moment(p as i32) - exact).abs() / norm.powi(p as i32);
            assert!(err <= 1e-11, "{}: moment {p} off by {err:e}", batch.label);
            worst = worst.max(err);
        }
        if !broke_down {
            // Degree 2m is generally not exact.
            let p = 2 * steps;
            let err = (quad.moment(p as i32) - moments[p]).abs() / norm.powi(p as i32);
            assert!(err > 1e-9, "{}: degree 2m unexpectedly exact", batch.label);
            n_full += 1;
        }
        println!("{}: {} nodes", batch.label, quad.nodes().len());
    }
    assert!(n_full >= 4, "too few runs without breakdown: {n_full}");
    println!("worst Gauss quadrature moment error (degree < 2m): {worst:e}");
}

#[test]
fn a_run_to_breakdown_is_exact_for_every_moment() {
    let batch = build_batch(&[4, 5, 3], Activation::Tanh, Loss::CrossEntropy, 2, 3);
    let h = BatchHessian::new(&batch.mlp, batch.loss, &batch.xs, batch.targets()).unwrap();
    let dense = h.to_dense().unwrap();
    let values = dense_eigenvalues(&dense).unwrap();
    let norm = spectral_norm(&values);
    let v: Vec<f64> = (0..h.dim()).map(|i| (i as f64 * 0.7).cos()).collect();
    let quad = gauss_quadrature(&h, &v, h.dim()).unwrap();
    // Breakdown: the Krylov space is the span of the distinct eigen-components of v, fewer
    // than N (H_B has a multiple zero eigenvalue).
    assert!(quad.nodes().len() < h.dim());
    let moments = quadratic_moments(&dense, &v, 12);
    for (p, m) in moments.iter().enumerate() {
        let err = (quad.moment(p as i32) - m).abs() / norm.powi(p as i32);
        assert!(err <= 1e-11, "moment {p}: {err:e}");
    }
    // The nodes are eigenvalues of H_B.
    for node in quad.nodes() {
        let dist = values.iter().fold(f64::INFINITY, |m, e| m.min((e - node).abs()));
        assert!(dist <= 1e-10 * norm, "node {node} is {dist:e} from the spectrum");
    }
}

#[test]
fn slq_density_is_normalised_and_estimates_the_moments() {
    let batch = build_batch(&[4, 6, 3], Activation::Softplus, Loss::CrossEntropy, 6, 8);
    let h = BatchHessian::new(&batch.mlp, batch.loss, &batch.xs, batch.targets()).unwrap();
    let values = dense_eigenvalues(&h.to_dense().unwrap()).unwrap();
    let n = values.len() as f64;
    let opts = SlqOptions { n_probes: 30, n_steps: 12, seed: 4 };
    h.reset_hvp_count();
    let density = slq(&h, &opts).unwrap();
    assert_eq!(density.n_probes(), 30);
    assert_eq!(h.hvp_count(), density.n_matvecs());
    assert!(density.n_matvecs() <= 30 * 12);
    let total: f64 = density.weights().iter().sum();
    assert!((total - 1.0).abs() < 1e-13, "weights sum to {total}");
    assert_eq!(density.nodes().len(), density.weights().len());
    // The first moment is Hutchinson's estimate of tr(H)/n with the same Rademacher probes
    // (vᵀv = n), so it is unbiased and within a few of its standard errors.
    let hutch = hutchinson(&h, 30, 4).unwrap();
    assert!((density.moment(1) * n - hutch.estimate).abs() <= 1e-12 * hutch.estimate.abs());
    let exact = h.trace().unwrap();
    assert!((hutch.estimate - exact).abs() <= 4.0 * hutch.std_error.unwrap());
    // Moments of degree ≤ 2m − 1 are exact per probe, so the second one is the Hutchinson
    // estimate of tr(H²)/n: check it against the exact value loosely (it is random).
    let exact2 = values.iter().map(|e| e * e).sum::<f64>() / n;
    assert!(
        (density.moment(2) - exact2).abs() <= 0.5 * exact2,
        "{} vs {exact2}",
        density.moment(2)
    );
    // The smoothed density integrates to 1 (trapezoid rule on a padded grid).
    let sigma = 0.02 * spectral_norm(&values);
    let grid = density.grid(4001, 8.0 * sigma).unwrap();
    let phi = density.smoothed(&grid, sigma).unwrap();
    assert!(phi.iter().all(|v| *v >= 0.0));
    let dx = grid[1] - grid[0];
    let integral = dx * (phi.iter().sum::<f64>() - 0.5 * (phi[0] + phi[phi.len() - 1]));
    assert!((integral - 1.0).abs() < 1e-9, "∫φ = {integral}");
    assert!(density.smoothed(&grid, 0.0).is_err());
    assert!(density.grid(1, 1.0).is_err());
    // Same seed, same density.
    assert_eq!(slq(&h, &opts).unwrap(), density);
    assert!(slq(&h, &SlqOptions { n_probes: 0, ..opts }).is_err());
    assert!(slq(&h, &SlqOptions { n_steps: 0, ..opts }).is_err());
    assert!(gauss_quadrature(&h, &[1.0; 3], 2).is_err());
    assert!(gauss_quadrature(&h, &vec![0.0; h.dim()], 2).is_err());
    let _ = h.dim();
    let _: &dyn SymmetricOperator = &h;
}

//! The exactness suite: every closed form of esso-hessian against the dense
//! finite-difference oracle, on a seeded table of small networks × activations × losses.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Case, EXACT_TOL, FD_TOL, Worst, cases, rel_err1, rel_err2};
use esso_core::Params;
use esso_hessian::reference::{dense_eigen, dense_eigenvalues};
use esso_hessian::{FullHessian, LayerBlock, SpectralFn, SpectralKind, layerwise_direction};
use ndarray::{Array1, Array2, ArrayRef1, ArrayRef2, Axis, Slice};

fn sub_block(a: &ArrayRef2<f64>, start: usize, len: usize) -> Array2<f64> {
    a.slice_axis(Axis(0), Slice::from(start..start + len))
        .slice_axis(Axis(1), Slice::from(start..start + len))
        .to_owned()
}

/// f(A) v from a precomputed dense eigendecomposition.
fn dense_apply(
    eig: &(Array1<f64>, Array2<f64>),
    f: &SpectralFn,
    v: &ArrayRef1<f64>,
) -> Array1<f64> {
    let (values, u) = eig;
    let w = u.t().dot(v) * values.mapv(|e| f.apply(e));
    u.dot(&w)
}

/// The spectral functions every direction is checked with (λ chosen per case for damped).
fn spectral_fns(min_eigenvalue: f64) -> Vec<SpectralFn> {
    vec![
        SpectralFn::absolute(1.0).unwrap(),
        SpectralFn::absolute(0.3).unwrap(),
        SpectralFn::new(SpectralKind::Floor, 0.5, None).unwrap(),
        SpectralFn::new(SpectralKind::Power { alpha: 0.5 }, 1.0, None).unwrap(),
        SpectralFn::new(SpectralKind::Absolute, 1.0, Some(0.2)).unwrap(),
        SpectralFn::damped(1.0 - min_eigenvalue.min(0.0)).unwrap(),
    ]
}

#[test]
fn block_hessians_and_block_spectra_match_the_oracle() {
    let mut worst = Worst::default();
    for case in cases() {
        let Case { mlp, forward, second, fd, .. } = &case;
        for layer_idx in 0..mlp.n_layers() {
            let block = LayerBlock::from_trace(forward, second, layer_idx).unwrap();
            let oracle = sub_block(fd, mlp.params().layer_offset(layer_idx), block.n_params());
            worst.check("block Hessian", &case, rel_err2(&block.to_dense(), &oracle), FD_TOL);
            let values = block.eigenvalues();
            assert_eq!(values.len(), block.n_params());
            let oracle_values = dense_eigenvalues(&oracle).unwrap();
            worst.check("block eigenvalues", &case, rel_err1(&values, &oracle_values), FD_TOL);
            // Eigenpairs: orthonormal, and B U = U Λ on the oracle.
            let (values, vectors) = block.eigen();
            let eye = Array2::<f64>::eye(block.n_params());
            let ortho = rel_err2(&vectors.t().dot(&vectors), &eye);
            worst.check("block eigenvector orthonormality", &case, ortho, EXACT_TOL);
            let residual = oracle.dot(&vectors) - &vectors * &values.view().insert_axis(Axis(0));
            let scale = oracle_values.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
            let err = residual.iter().fold(0.0f64, |m, v| m.max(v.abs())) / scale;
            worst.check("block eigenvector residual", &case, err, FD_TOL);
            // Structure: n_l non-trivial values, n_l·n_{l−1} structural zeros.
            let curvature = block.curvature();
            assert_eq!(curvature.eigenvalues().len(), block.n_outputs());
            assert_eq!(curvature.n_zero_eigenvalues(), Some(block.n_outputs() * block.n_inputs()));
            // The per-layer product agrees with the dense block exactly.
            let v = Array1::from_shape_fn(block.n_params(), |i| (1.3 * i as f64).cos());
            let err = rel_err1(&block.apply(&v), &block.to_dense().dot(&v));
            worst.check("block product", &case, err, EXACT_TOL);
        }
    }
    eprintln!("worst block error {:e} ({})", worst.err, worst.label);
}

#[test]
fn full_eigenvalues_all_of_them_match_the_oracle() {
    let mut worst = Worst::default();
    for case in cases() {
        let full = FullHessian::new(&case.mlp, &case.forward, &case.second).unwrap();
        let values = full.eigenvalues_all().unwrap();
        assert_eq!(values.len(), case.mlp.n_params());
        let oracle = dense_eigenvalues(&case.fd).unwrap();
        worst.check("full eigenvalues", &case, rel_err1(&values, &oracle), FD_TOL);
        // Values-only path (Cholesky, no eigenvectors) = full path.
        let spectrum = full.spectrum().unwrap();
        let err = rel_err1(&spectrum.eigenvalues(), &full.eigenvalues().unwrap());
        worst.check("values-only vs full path", &case, err, EXACT_TOL);
        assert_eq!(spectrum.eigenvalues_all(), values);
        assert!(spectrum.n_range() <= full.n_rows_k());
    }
    eprintln!("worst full-eigenvalue error {:e} ({})", worst.err, worst.label);
}

#[test]
fn full_eigenvectors_diagonalise_the_oracle() {
    let mut worst = Worst::default();
    for case in cases() {
        let full = FullHessian::new(&case.mlp, &case.forward, &case.second).unwrap();
        let (values, phi) = full.eigen().unwrap();
        let eye = Array2::<f64>::eye(values.len());
        let ortho = rel_err2(&phi.t().dot(&phi), &eye);
        worst.check("eigenvector orthonormality", &case, ortho, EXACT_TOL * 100.0);
        let residual = case.fd.dot(&phi) - &phi * &values.view().insert_axis(Axis(0));
        let scale = values.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
        let err = residual.iter().fold(0.0f64, |m, v| m.max(v.abs())) / scale;
        worst.check("eigenvector residual", &case, err, FD_TOL);
        // Reconstruction Φ Λ Φᵀ = H (the dense closed form).
        let rebuilt = (&phi * &values.view().insert_axis(Axis(0))).dot(&phi.t());
        worst.check("Φ Λ Φᵀ = H", &case, rel_err2(&rebuilt, &full.to_dense()), EXACT_TOL * 100.0);
    }
    eprintln!("worst eigenvector error {:e} ({})", worst.err, worst.label);
}

#[test]
fn dense_materialisation_and_hessian_vector_products_match_the_oracle() {
    let mut worst = Worst::default();
    for case in cases() {
        let full = FullHessian::new(&case.mlp, &case.forward, &case.second).unwrap();
        let dense = full.to_dense();
        worst.check("dense Hessian", &case, rel_err2(&dense, &case.fd), FD_TOL);
        let n = case.mlp.n_params();
        let mut v = Params::zeros_like(case.mlp.params());
        let flat = Array1::from_shape_fn(n, |i| (0.7 * i as f64 + 0.3).sin());
        v.copy_from_flat(flat.as_slice().unwrap()).unwrap();
        let hv = full.hvp(&v).to_flat();
        worst.check("Hessian-vector product", &case, rel_err1(&hv, &case.fd.dot(&flat)), FD_TOL);
        // G = K Kᵀ (closed form) against K built column by column; M symmetric.
        let m = full.n_rows_k();
        let mut k_dense = Array2::zeros((m, n));
        let mut unit = Params::zeros_like(case.mlp.params());
        for j in 0..n {
            let mut e = Array1::zeros(n);
            e[j] = 1.0;
            unit.copy_from_flat(e.as_slice().unwrap()).unwrap();
            k_dense.column_mut(j).assign(&full.apply_k(&unit));
        }
        let gram = k_dense.dot(&k_dense.t());
        worst.check("closed-form Gram", &case, rel_err2(&full.gram(), &gram), EXACT_TOL);
        let rebuilt = k_dense.t().dot(&full.middle()).dot(&k_dense);
        worst.check("Kᵀ M K", &case, rel_err2(&rebuilt, &dense), EXACT_TOL);
        // Kᵀ is the adjoint of K.
        let rho = Array1::from_shape_fn(m, |i| (0.9 * i as f64).cos());
        let kt = full.apply_k_transpose(&rho).to_flat();
        worst.check("Kᵀ sweep", &case, rel_err1(&kt, &k_dense.t().dot(&rho)), EXACT_TOL);
        // The gradient is Kᵀ applied to δ_L in the r_L slot.
        let mut e_last = Array1::zeros(m);
        let last = case.mlp.n_layers() - 1;
        for (k, i) in full.r_range(last).enumerate() {
            e_last[i] = case.second.delta(last)[k];
        }
        let err = rel_err1(&full.apply_k_transpose(&e_last).to_flat(), &full.gradient().to_flat());
        worst.check("g = Kᵀ e", &case, err, EXACT_TOL);
    }
    eprintln!("worst dense/HVP error {:e} ({})", worst.err, worst.label);
}

#[test]
fn every_full_direction_matches_the_oracle() {
    let mut worst = Worst::default();
    for case in cases() {
        let full = FullHessian::new(&case.mlp, &case.forward, &case.second).unwrap();
        let spectrum = full.spectrum().unwrap();
        let g = full.gradient().to_flat();
        let eig = dense_eigen(&case.fd).unwrap();
        let min = eig.0[0];
        for f in spectral_fns(min) {
            let d = spectrum.direction(&f).unwrap().to_flat();
            let oracle = -dense_apply(&eig, &f, &g);
            let what = format!("full direction {:?}", f.kind());
            worst.check(&what, &case, rel_err(&d, &oracle), FD_TOL);
            if f.kind() == SpectralKind::Damped {
                let pt = full.damped_direction_push_through(f.lambda()).unwrap().to_flat();
                worst.check("push-through damped", &case, rel_err(&pt, &oracle), FD_TOL);
                worst.check("push-through vs spectral", &case, rel_err(&pt, &d), EXACT_TOL * 100.0);
            }
        }
    }
    eprintln!("worst full-direction error {:e} ({})", worst.err, worst.label);
}

/// Directions can be zero (a perfectly fitted sample): compare on the gradient's scale.
fn rel_err(a: &Array1<f64>, b: &Array1<f64>) -> f64 {
    common::rel_err(a.iter(), b.iter(), 1e-12)
}

#[test]
fn layerwise_directions_match_the_oracle_blocks() {
    let mut worst = Worst::default();
    for case in cases() {
        let g = case.second.gradient(&case.forward);
        for f in spectral_fns(0.0) {
            let blocks: Vec<LayerBlock> = (0..case.mlp.n_layers())
                .map(|l| LayerBlock::from_trace(&case.forward, &case.second, l).unwrap())
                .collect();
            let min = blocks.iter().map(|b| b.eigenvalues()[0]).fold(0.0f64, f64::min);
            let f = if f.kind() == SpectralKind::Damped {
                f.with_lambda(1.0 - min).unwrap()
            } else {
                f
            };
            let d = layerwise_direction(&case.mlp, &case.forward, &case.second, &f).unwrap();
            for (layer_idx, block) in blocks.iter().enumerate() {
                let offset = case.mlp.params().layer_offset(layer_idx);
                let oracle_block = sub_block(&case.fd, offset, block.n_params());
                let eig = dense_eigen(&oracle_block).unwrap();
                let g_l: Array1<f64> = g.layers()[layer_idx].iter_params().copied().collect();
                let oracle = -dense_apply(&eig, &f, &g_l);
                let d_l: Array1<f64> = d.layers()[layer_idx].iter_params().copied().collect();
                let what = format!("layer direction {:?}", f.kind());
                worst.check(&what, &case, rel_err(&d_l, &oracle), FD_TOL);
                // The rank-one factors give the same step.
                let factors = block.direction(case.second.delta(layer_idx), &f).unwrap();
                worst.check(
                    "rank-one factors",
                    &case,
                    rel_err(&factors.to_flat(), &d_l),
                    EXACT_TOL,
                );
            }
        }
    }
    eprintln!("worst layer-direction error {:e} ({})", worst.err, worst.label);
}

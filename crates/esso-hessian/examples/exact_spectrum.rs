//! Times the exact per-sample quantities on one random sample and prints them.
//!
//! ```text
//! cargo run --release -p esso-hessian --example exact_spectrum            # quick
//! cargo run --release -p esso-hessian --example exact_spectrum -- dense   # + dense route on 64-64-10
//! ```

use std::time::Instant;

use esso_core::{Activation, Init, Loss, Mlp, SecondOrderTrace, Target};
use esso_hessian::{FullHessian, SpectralFn, layerwise_direction, reference};
use rand::SeedableRng;

fn sample(
    sizes: &[usize],
    seed: u64,
) -> Result<(Mlp, ndarray::Array1<f64>), Box<dyn std::error::Error>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mlp = Mlp::new(sizes, Activation::Tanh, Init::GlorotUniform, &mut rng)?;
    let x = ndarray::Array1::from_shape_fn(sizes[0], |_| esso_core::uniform01(&mut rng));
    Ok((mlp, x))
}

fn best_of<T>(n_runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..n_runs {
        let start = Instant::now();
        let value = f();
        best = best.min(start.elapsed().as_secs_f64());
        out = Some(value);
    }
    (best, out.expect("at least one run"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    faer::set_global_parallelism(faer::Par::Seq);
    let with_dense = std::env::args().any(|a| a == "dense");
    let abs = SpectralFn::absolute(1.0)?;
    for sizes in [&[784, 128, 64, 10][..], &[64, 64, 10][..]] {
        let (mlp, x) = sample(sizes, 1)?;
        let fwd = mlp.forward(&x)?;
        let mut so = SecondOrderTrace::new(&mlp);
        mlp.backward_second_order_into(&fwd, Loss::CrossEntropy, Target::Class(3), &mut so)?;
        let (t_layer, _) = best_of(20, || layerwise_direction(&mlp, &fwd, &so, &abs));
        let (t_values, values) =
            best_of(5, || FullHessian::new(&mlp, &fwd, &so).and_then(|h| h.eigenvalues_all()));
        let (t_direction, _) = best_of(5, || {
            FullHessian::new(&mlp, &fwd, &so).and_then(|h| h.spectrum()?.direction(&abs))
        });
        let values = values?;
        let full = FullHessian::new(&mlp, &fwd, &so)?;
        let inertia = full.inertia()?;
        println!(
            "{sizes:?}: N = {}, m = {}, inertia {inertia:?}, λ_min {:.4e}, λ_max {:.4e}",
            mlp.n_params(),
            full.n_rows_k(),
            values[0],
            values[values.len() - 1]
        );
        println!(
            "  layer-wise abs direction {:.3} ms | exact full eigenvalues {:.3} ms | exact full abs direction {:.3} ms",
            t_layer * 1e3,
            t_values * 1e3,
            t_direction * 1e3
        );
        if with_dense && mlp.n_params() < 6000 {
            let start = Instant::now();
            let dense = full.to_dense();
            let dense_values = reference::dense_eigenvalues(&dense)?;
            let t_dense = start.elapsed().as_secs_f64();
            let err =
                dense_values.iter().zip(&values).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
                    / values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            println!(
                "  dense route (H by {} HVPs + dense eigenvalues) {:.3} s: {:.0}x slower, max relative difference {err:.2e}",
                mlp.n_params(),
                t_dense,
                t_dense / t_values
            );
        }
    }
    Ok(())
}

//! Criterion: the exact per-sample curvature of esso-hessian.
//!
//! - `layerwise`: forward, second-order sweep, per-layer eigendecompositions and the
//!   absolute-Hessian direction, on 784-128-64-10 tanh (one sample);
//! - `full_spectrum`: the exact eigenvalues of the whole-network Hessian (H = Kᵀ M K) on
//!   64-64-10 and 32-32-10;
//! - `dense_route`: building the dense Hessian and eigendecomposing it, on 32-32-10 (on
//!   64-64-10 one iteration takes ~30 s: see docs/performance.md for that figure).
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use esso_core::{Activation, ForwardTrace, Init, Loss, Mlp, SecondOrderTrace, Target};
use esso_hessian::{FullHessian, SpectralFn, layerwise_direction, reference};
use ndarray::Array1;
use rand::SeedableRng;

/// Shared settings: few samples; the slowest iteration takes ~0.5 s.
fn settings() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
}

fn sample(sizes: &[usize]) -> (Mlp, Array1<f64>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mlp = Mlp::new(sizes, Activation::Tanh, Init::GlorotUniform, &mut rng).unwrap();
    let x = Array1::from_shape_fn(sizes[0], |_| esso_core::uniform01(&mut rng));
    (mlp, x)
}

fn label(sizes: &[usize]) -> String {
    sizes.iter().map(ToString::to_string).collect::<Vec<_>>().join("-")
}

fn curvature(c: &mut Criterion) {
    let abs = SpectralFn::absolute(1.0).unwrap();
    let mut group = c.benchmark_group("hessian");
    let sizes = [784, 128, 64, 10];
    let (mlp, x) = sample(&sizes);
    let (mut fwd, mut so) = (ForwardTrace::new(&mlp), SecondOrderTrace::new(&mlp));
    group.bench_function(BenchmarkId::new("layerwise", label(&sizes)), |b| {
        b.iter(|| {
            mlp.forward_into(&x, &mut fwd).unwrap();
            mlp.backward_second_order_into(&fwd, Loss::CrossEntropy, Target::Class(3), &mut so)
                .unwrap();
            layerwise_direction(&mlp, &fwd, &so, &abs).unwrap()
        })
    });
    for sizes in [[64, 64, 10], [32, 32, 10]] {
        let (mlp, x) = sample(&sizes);
        let fwd = mlp.forward(&x).unwrap();
        let mut so = SecondOrderTrace::new(&mlp);
        mlp.backward_second_order_into(&fwd, Loss::CrossEntropy, Target::Class(3), &mut so)
            .unwrap();
        group.bench_function(BenchmarkId::new("full_spectrum", label(&sizes)), |b| {
            b.iter(|| FullHessian::new(&mlp, &fwd, &so).unwrap().eigenvalues().unwrap())
        });
        if sizes[0] == 32 {
            group.bench_function(BenchmarkId::new("dense_route", label(&sizes)), |b| {
                b.iter(|| {
                    let dense = FullHessian::new(&mlp, &fwd, &so).unwrap().to_dense();
                    reference::dense_eigenvalues(&dense).unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group! { name = benches; config = settings(); targets = curvature }
criterion_main!(benches);

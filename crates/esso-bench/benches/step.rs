//! Criterion: one optimiser step (batch 1) of SGD, Adam, ESSO per layer and ESSO whole network
//! on 784-128-64-10 (tanh, ReLU) and 64-64-10 tanh. `esso bench` prints the same as a table.
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use esso_bench::bench::{Bench, default_cases, default_optimizers};
use std::time::Duration;

/// Shared settings: few samples, the step costs up to ~100 ms for the whole network.
fn settings() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

fn step(c: &mut Criterion) {
    let mut group = c.benchmark_group("step_batch1");
    for case in default_cases() {
        for (label, toml) in default_optimizers() {
            let mut bench = Bench::new(&case, toml, 1).unwrap();
            group.bench_with_input(BenchmarkId::new(label, case.label()), &(), |b, ()| {
                b.iter(|| bench.step().unwrap())
            });
        }
    }
    group.finish();
}

criterion_group! { name = benches; config = settings(); targets = step }
criterion_main!(benches);

//! Criterion benchmark of [`esso_hessian::kernels::tridiagonal::TridiagonalEigen`]: one
//! divide-and-conquer `factor` plus one `apply_st` and one `apply_s` (what a layer solve
//! needs per sample), on the tridiagonal of a diagonal-plus-low-rank H = diag(c) + Bᵀ A B
//! (the ESSO layer's structure, as faer's Householder reduction produces it) and on a random
//! tridiagonal, for n ∈ {64, 128}; plus the parts alone and a leaf-size sweep at n = 128.
//!
//! Run with `cargo bench -p esso-hessian --bench tridiagonal`. On a shared, loaded machine set
//! `ESSO_BENCH_CLOCK=thread` to time by the benchmark thread's on-CPU time
//! (`/proc/thread-self/schedstat`, 4 ms tick granularity, so the samples are made long)
//! instead of wall-clock time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use esso_hessian::kernels::tridiagonal::TridiagonalEigen;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd;
use faer::{Mat, Par};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The tridiagonal (d, e) of H = diag(c) + Bᵀ A B: B (n/2)×n and A symmetric random, half
/// of the c_i exactly 0, a quarter tiny (≈ 1e-12), a quarter in [0, 1).
fn use_case(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = n / 2;
    let b = Mat::<f64>::from_fn(r, n, |_, _| rng.random_range(-1.0..1.0));
    let a = Mat::<f64>::from_fn(r, r, |_, _| rng.random_range(-1.0..1.0));
    let a = &a + a.transpose();
    let mut h = b.transpose() * &a * &b;
    for i in 0..n {
        h[(i, i)] += match i % 4 {
            0 | 1 => 0.0,
            2 => 1e-12 * rng.random_range(-1.0..1.0),
            _ => rng.random_range(0.0..1.0),
        };
    }
    let bs = faer::linalg::qr::no_pivoting::factor::recommended_block_size::<f64>(n, n).max(1);
    let mut householder = Mat::<f64>::zeros(bs, n - 1);
    let mut mem = MemBuffer::new(evd::tridiag::tridiag_in_place_scratch::<f64>(
        n,
        Par::Seq,
        Default::default(),
    ));
    evd::tridiag::tridiag_in_place(
        h.as_mut(),
        householder.as_mut(),
        Par::Seq,
        MemStack::new(&mut mem),
        Default::default(),
    );
    ((0..n).map(|i| h[(i, i)]).collect(), (0..n - 1).map(|i| h[(i + 1, i)]).collect())
}

/// A random tridiagonal with entries uniform in [−1, 1).
fn random(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let e = (0..n - 1).map(|_| rng.random_range(-1.0..1.0)).collect();
    (d, e)
}

/// Whether to time by on-CPU time of this thread (`ESSO_BENCH_CLOCK=thread`).
fn thread_clock() -> bool {
    std::env::var("ESSO_BENCH_CLOCK").is_ok_and(|v| v == "thread")
}

/// Nanoseconds this thread has run on a CPU, or `None` off Linux.
fn thread_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// The time of `iters` calls of `f`, by the chosen clock.
fn timed(iters: u64, thread: bool, mut f: impl FnMut()) -> Duration {
    let cpu0 = if thread { thread_ns() } else { None };
    let wall0 = Instant::now();
    for _ in 0..iters {
        f();
    }
    let wall = wall0.elapsed();
    match (cpu0, thread_ns()) {
        (Some(a), Some(b)) if thread => Duration::from_nanos(b.saturating_sub(a)),
        _ => wall,
    }
}

/// What `LayerSolver` does per sample with T: factor, then Sᵀ x and S y on one vector.
fn factor_st_s(te: &mut TridiagonalEigen, (d, e): (&[f64], &[f64]), x0: &[f64], x: &mut [f64]) {
    te.factor(black_box(d), black_box(e)).expect("finite input");
    x.copy_from_slice(x0);
    te.apply_st(x);
    te.apply_s(x);
    black_box(&x);
}

fn bench(c: &mut Criterion) {
    let thread = thread_clock();
    let mut group = c.benchmark_group("tridiagonal_dc");
    for n in [64, 128] {
        for (name, (d, e)) in [("diag_low_rank", use_case(n, 1)), ("random", random(n, 2))] {
            let mut te = TridiagonalEigen::new(n);
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let x0: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut x = x0.clone();
            group.bench_function(BenchmarkId::new(format!("factor_st_s/{name}"), n), |bch| {
                bch.iter_custom(|iters| {
                    timed(iters, thread, || factor_st_s(&mut te, (&d, &e), &x0, &mut x))
                });
            });
            group.bench_function(BenchmarkId::new(format!("factor/{name}"), n), |bch| {
                bch.iter_custom(|iters| {
                    timed(iters, thread, || {
                        te.factor(black_box(&d), black_box(&e)).expect("finite input");
                    })
                });
            });
            // Factored here too, so that `st_s` measures S and Sᵀ also when a filter skips
            // the benchmarks above.
            te.factor(&d, &e).expect("finite input");
            group.bench_function(BenchmarkId::new(format!("st_s/{name}"), n), |bch| {
                bch.iter_custom(|iters| {
                    timed(iters, thread, || {
                        x.copy_from_slice(&x0);
                        te.apply_st(&mut x);
                        te.apply_s(&mut x);
                        black_box(&x);
                    })
                });
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("tridiagonal_dc_leaf");
    let n = 128;
    let (d, e) = use_case(n, 1);
    let x0 = vec![1.0; n];
    let mut x = x0.clone();
    for leaf in [1, 2, 4, 8, 16, 32] {
        let mut te = TridiagonalEigen::with_leaf_size(n, leaf);
        group.bench_function(BenchmarkId::new("factor_st_s/diag_low_rank/128", leaf), |bch| {
            bch.iter_custom(|iters| {
                timed(iters, thread, || factor_st_s(&mut te, (&d, &e), &x0, &mut x))
            });
        });
    }
    group.finish();
}

/// Criterion settings: short runs on wall-clock time; few long samples on thread time.
fn config() -> Criterion {
    let c = Criterion::default().without_plots().warm_up_time(Duration::from_millis(500));
    if thread_clock() {
        c.sample_size(10).measurement_time(Duration::from_secs(8))
    } else {
        c.sample_size(30).measurement_time(Duration::from_secs(2))
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);

//! Criterion benchmark of [`esso_hessian::kernels::householder::Tridiagonalizer`] against
//! faer's `tridiag_in_place` (sequential, set up as `esso_hessian`'s former `TridiagonalSolver`
//! does), on the same symmetric H = diag(c) + Bᵀ A B (the ESSO layer's structure: B (n/2)×n,
//! A symmetric, half of the c_i zero), for n ∈ {64, 128}:
//!
//! - `reduce/esso/n`: copy of the lower triangle + reduction;
//! - `reduce/faer/n`: the same copy into faer's matrix + `tridiag_in_place`;
//! - `apply/esso/n`: one `apply_qt` and one `apply_q` (what a layer solve needs);
//! - `apply/faer/n`: the same with faer's blocked Householder sequence application.
//!
//! Run with `cargo bench -p esso-hessian --bench householder`.
//!
//! On a shared, loaded machine criterion's means mostly measure the neighbours; with
//! `HH_MIN_TIMES=1` in the environment the binary instead prints, per case, the minimum and
//! the 10th percentile of single-call wall times over interleaved calls (esso, faer, esso,
//! …), which are robust to preemption: `HH_MIN_TIMES=1 cargo bench -p esso-hessian --bench
//! householder`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, criterion_group};
use esso_hessian::kernels::householder::Tridiagonalizer;
use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::evd;
use faer::linalg::householder as hh;
use faer::{Mat, Par};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIZES: [usize; 2] = [64, 128];

/// Row-major H = diag(c) + Bᵀ A B, B (n/2)×n and A symmetric random, c_i = 0 for even i.
fn use_case(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = n / 2;
    let b = Mat::<f64>::from_fn(r, n, |_, _| rng.random_range(-1.0..1.0));
    let a = Mat::<f64>::from_fn(r, r, |_, _| rng.random_range(-1.0..1.0));
    let a = &a + a.transpose();
    let mut h = b.transpose() * &a * &b;
    for i in (1..n).step_by(2) {
        h[(i, i)] += rng.random_range(-1.0..1.0);
    }
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = h[(i.max(j), i.min(j))];
        }
    }
    out
}

/// faer's sequential Householder tridiagonalisation with its buffers.
struct Faer {
    n: usize,
    trid: Mat<f64>,
    householder: Mat<f64>,
    mem: MemBuffer,
    y: Mat<f64>,
}

impl Faer {
    fn new(n: usize) -> Self {
        let par = Par::Seq;
        let bs = faer::linalg::qr::no_pivoting::factor::recommended_block_size::<f64>(n, n).max(1);
        let req = StackReq::any_of(&[
            evd::tridiag::tridiag_in_place_scratch::<f64>(n, par, Default::default()),
            hh::apply_block_householder_sequence_on_the_left_in_place_scratch::<f64>(n - 1, bs, 1),
            hh::apply_block_householder_sequence_transpose_on_the_left_in_place_scratch::<f64>(
                n - 1,
                bs,
                1,
            ),
        ]);
        Faer {
            n,
            trid: Mat::zeros(n, n),
            householder: Mat::zeros(bs, n - 1),
            mem: MemBuffer::new(req),
            y: Mat::zeros(n, 1),
        }
    }

    fn reduce(&mut self, h: &[f64]) {
        let n = self.n;
        for j in 0..n {
            for i in j..n {
                self.trid[(i, j)] = h[i * n + j];
            }
        }
        evd::tridiag::tridiag_in_place(
            self.trid.as_mut(),
            self.householder.as_mut(),
            Par::Seq,
            MemStack::new(&mut self.mem),
            Default::default(),
        );
        esso_core::clean_simd_state();
    }

    /// y ← Q Qᵀ y through faer's blocked application (rows 1.., as the former `TridiagonalSolver`).
    fn apply_qt_q(&mut self, v: &mut [f64]) {
        let n = self.n;
        for (i, &x) in v.iter().enumerate() {
            self.y[(i, 0)] = x;
        }
        let essentials = self.trid.as_ref().submatrix(1, 0, n - 1, n - 1);
        hh::apply_block_householder_sequence_transpose_on_the_left_in_place_with_conj(
            essentials,
            self.householder.as_ref(),
            faer::Conj::No,
            self.y.as_mut().subrows_mut(1, n - 1),
            Par::Seq,
            MemStack::new(&mut self.mem),
        );
        hh::apply_block_householder_sequence_on_the_left_in_place_with_conj(
            essentials,
            self.householder.as_ref(),
            faer::Conj::No,
            self.y.as_mut().subrows_mut(1, n - 1),
            Par::Seq,
            MemStack::new(&mut self.mem),
        );
        esso_core::clean_simd_state();
        for (i, x) in v.iter_mut().enumerate() {
            *x = self.y[(i, 0)];
        }
    }
}

fn bench_reduce(c: &mut Criterion) {
    let mut group = c.benchmark_group("reduce");
    for n in SIZES {
        let h = use_case(n, 7);
        let mut ours = Tridiagonalizer::new(n);
        group.bench_with_input(BenchmarkId::new("esso", n), &h, |b, h| {
            b.iter(|| {
                ours.reduce(black_box(h));
                black_box(ours.diagonal()[0])
            })
        });
        let mut theirs = Faer::new(n);
        group.bench_with_input(BenchmarkId::new("faer", n), &h, |b, h| {
            b.iter(|| {
                theirs.reduce(black_box(h));
                black_box(theirs.trid[(0, 0)])
            })
        });
    }
    group.finish();
}

fn bench_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    for n in SIZES {
        let h = use_case(n, 7);
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let x: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut ours = Tridiagonalizer::new(n);
        ours.reduce(&h);
        let mut v = x.clone();
        group.bench_function(BenchmarkId::new("esso", n), |b| {
            b.iter(|| {
                ours.apply_qt(black_box(&mut v));
                ours.apply_q(black_box(&mut v));
            })
        });
        let mut theirs = Faer::new(n);
        theirs.reduce(&h);
        let mut v = x.clone();
        group.bench_function(BenchmarkId::new("faer", n), |b| {
            b.iter(|| theirs.apply_qt_q(black_box(&mut v)))
        });
    }
    group.finish();
}

/// (minimum, 10th percentile) of `times` in µs.
fn low_quantiles(times: &mut [f64]) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[0] * 1e6, times[times.len() / 10] * 1e6)
}

/// Single-call minimum and 10th-percentile times, esso and faer interleaved call by call.
fn min_times() {
    const CALLS: usize = 3000;
    for n in SIZES {
        let h = use_case(n, 7);
        let mut ours = Tridiagonalizer::new(n);
        let mut theirs = Faer::new(n);
        let mut v = vec![1.0; n];
        let (mut t_ours, mut t_theirs) = (Vec::new(), Vec::new());
        let (mut a_ours, mut a_theirs) = (Vec::new(), Vec::new());
        for _ in 0..CALLS {
            let start = Instant::now();
            ours.reduce(black_box(&h));
            t_ours.push(start.elapsed().as_secs_f64());
            let start = Instant::now();
            theirs.reduce(black_box(&h));
            t_theirs.push(start.elapsed().as_secs_f64());
            let start = Instant::now();
            ours.apply_qt(black_box(&mut v));
            ours.apply_q(black_box(&mut v));
            a_ours.push(start.elapsed().as_secs_f64());
            let start = Instant::now();
            theirs.apply_qt_q(black_box(&mut v));
            a_theirs.push(start.elapsed().as_secs_f64());
        }
        let report = |what: &str, ours: &mut [f64], theirs: &mut [f64]| {
            let (o_min, o_p10) = low_quantiles(ours);
            let (t_min, t_p10) = low_quantiles(theirs);
            println!(
                "{what}/{n}: esso min {o_min:.1} µs p10 {o_p10:.1} µs | faer min {t_min:.1} µs \
                 p10 {t_p10:.1} µs | ratio (p10) {:.2}",
                o_p10 / t_p10
            );
        };
        report("reduce", &mut t_ours, &mut t_theirs);
        report("apply_qt+apply_q", &mut a_ours, &mut a_theirs);
    }
}

criterion_group!(benches, bench_reduce, bench_apply);

fn main() {
    if std::env::var_os("HH_MIN_TIMES").is_some() {
        min_times();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

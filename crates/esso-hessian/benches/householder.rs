//! Criterion benchmark of [`esso_hessian::kernels::householder::Tridiagonalizer`] against
//! faer's `tridiag_in_place` (sequential, set up as `esso_hessian`'s `TridiagonalSolver`
//! does), on the same symmetric H = diag(c) + Bᵀ A B (the ESSO layer's structure: B (n/2)×n,
//! A symmetric, half of the c_i zero), for n ∈ {64, 128}:
//!
//! - `reduce/esso/n`: copy of the lower triangle + reduction;
//! - `reduce/faer/n`: the same copy into faer's matrix + `tridiag_in_place`;
//! - `apply/esso/n`: one `apply_qt` and one `apply_q` (what a layer solve needs);
//! - `apply/faer/n`: the same with faer's blocked Householder sequence application.
//!
//! Run with `cargo bench -p esso-hessian --bench householder`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
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

    /// y ← Q Qᵀ y through faer's blocked application (rows 1.., as `TridiagonalSolver`).
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

criterion_group!(benches, bench_reduce, bench_apply);
criterion_main!(benches);

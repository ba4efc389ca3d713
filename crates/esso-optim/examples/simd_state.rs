//! The AVX → SSE transition penalty after a faer GEMM (docs/performance.md, "The AVX-512 →
//! SSE penalty"): the cost of libm's `tanh` before any GEMM, right after one, and after one
//! followed by [`esso_core::clean_simd_state`].
//!
//! `cargo run --release -p esso-optim --example simd_state`
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};

/// Mean nanoseconds per `tanh` over `xs`.
fn tanh_ns(xs: &[f64]) -> f64 {
    let start = Instant::now();
    let mut sum = 0.0;
    for &x in xs {
        sum += black_box(x).tanh();
    }
    black_box(sum);
    start.elapsed().as_nanos() as f64 / xs.len() as f64
}

fn main() {
    // The first layer of 784-128-64-10 on a block of 256 samples.
    let (m, k, n) = (256, 784, 128);
    let a = Mat::<f64>::from_fn(m, k, |i, j| ((i * k + j) as f64 * 1e-3).sin());
    let b = Mat::<f64>::from_fn(k, n, |i, j| ((i * n + j) as f64 * 7e-4).cos());
    let mut c = Mat::<f64>::zeros(m, n);
    let xs: Vec<f64> = (0..2_000_000).map(|i| (i as f64 * 1e-5).sin()).collect();
    let mut gemm = || {
        matmul(c.as_mut(), Accum::Replace, a.as_ref(), b.as_ref(), 1.0, Par::Seq);
        black_box(c[(0, 0)]);
    };

    let before = tanh_ns(&xs);
    gemm();
    let after = tanh_ns(&xs);
    gemm();
    esso_core::clean_simd_state();
    let cleaned = tanh_ns(&xs);
    println!("tanh before any faer GEMM:               {before:6.1} ns/call");
    println!("tanh right after a faer GEMM:            {after:6.1} ns/call");
    println!("tanh after a GEMM and clean_simd_state:  {cleaned:6.1} ns/call");
    println!("penalty: {:.1}x, removed: {:.1}x", after / before, after / cleaned);
}

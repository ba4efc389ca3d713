//! The first-order steps allocate nothing after the first step: a counting global allocator
//! (per thread, so the test harness does not interfere) around steps 2..n of SGD (plain, with
//! momentum) and Adam/AdamW on a fixed batch size, B = 1 (the single-sample kernels, and
//! SGD's update fused with the next forward pass) and B = 4 (the GEMM paths).
//!
//! The only `unsafe` in the workspace: a global allocator must implement the unsafe
//! `GlobalAlloc` trait; it forwards every call to `System` unchanged.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use esso_core::{Activation, Init, Loss, Mlp, Targets};
use esso_optim::{AdamConfig, OptimizerConfig, SgdConfig};
use ndarray::Array2;
use rand::SeedableRng;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn first_order_steps_do_not_allocate_after_the_first() {
    for b in [1, 4] {
        steps_do_not_allocate(b);
    }
}

fn steps_do_not_allocate(b: usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let xs = Array2::from_shape_fn((b, 6), |(i, j)| ((i * 6 + j) as f64 * 0.37).sin());
    let classes = &[0, 2, 1, 2][..b];
    let configs = [
        OptimizerConfig::Sgd(SgdConfig::plain(0.1)),
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            weight_decay: 1e-3,
            ..SgdConfig::plain(0.1)
        }),
        OptimizerConfig::Adam(AdamConfig { weight_decay: 1e-3, ..AdamConfig::with_lr(1e-2) }),
        OptimizerConfig::AdamW(AdamConfig { weight_decay: 1e-2, ..AdamConfig::with_lr(1e-2) }),
    ];
    for config in configs {
        let mut mlp =
            Mlp::new(&[6, 5, 4, 3], Activation::Tanh, Init::GlorotUniform, &mut rng).unwrap();
        let mut opt = config.build().unwrap();
        let targets = Targets::Classes(classes);
        let first = opt.step(&mut mlp, &xs, targets, Loss::CrossEntropy).unwrap();
        // Prime the buffers of the fused path of `step_before` too.
        opt.step_before(&mut mlp, &xs, targets, Loss::CrossEntropy, &xs).unwrap();
        let before = allocations();
        let mut last = first.loss;
        for k in 0..6 {
            // Plain steps and steps told the next inputs (SGD at B = 1 fuses then).
            let report = if k % 3 == 0 {
                opt.step(&mut mlp, &xs, targets, Loss::CrossEntropy)
            } else {
                opt.step_before(&mut mlp, &xs, targets, Loss::CrossEntropy, &xs)
            };
            last = report.unwrap().loss;
        }
        let n = allocations() - before;
        assert_eq!(n, 0, "{} B = {b}: {n} allocations in 6 steps", opt.name());
        assert!(last < first.loss, "{} B = {b}: the loss did not decrease", opt.name());
    }
}

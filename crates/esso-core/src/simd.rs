//! A workaround for a CPU state penalty after faer's SIMD kernels.

/// Leaves the SIMD registers' upper halves clean after faer's AVX/AVX-512 kernels.
///
/// faer's GEMM micro-kernels return with dirty upper register state (no `vzeroupper`); every
/// legacy-SSE instruction after that (the workspace is built for baseline x86-64, and so is
/// libm's `tanh`) then pays a state-transition penalty: `f64::tanh` measured 230 ns per call
/// after a faer GEMM instead of 11–18 ns (2 vCPU Xeon, AVX-512). A faer reduction compiled
/// with AVX ends with the `vzeroupper` the compiler inserts, which cleans the state without
/// `unsafe`; it costs a few nanoseconds. Call it after a faer kernel and before scalar code
/// (activations, losses, solvers); it is harmless anywhere else.
#[inline]
pub fn clean_simd_state() {
    let zeros = [0.0f64; 8];
    let norm = faer::ColRef::from_slice(std::hint::black_box(&zeros[..])).squared_norm_l2();
    std::hint::black_box(norm);
}

//! Dense symmetric kernels for applying a function of one symmetric matrix to one vector,
//! f(H) δ = Q S f(Λ) Sᵀ Qᵀ δ, without forming eigenvectors:
//!
//! - [`householder`]: the Householder reduction H = Q T Qᵀ to a symmetric tridiagonal T, with
//!   Q and Qᵀ applied to vectors from the stored reflectors;
//! - [`tridiagonal`]: T = S Λ Sᵀ by divide and conquer, with S and Sᵀ applied to vectors from
//!   the stored merge factors.
//!
//! They serve [`crate::LayerSolver`], whose per-sample layer solves dominate the cost of an
//! ESSO step (docs/performance.md).

pub mod householder;
pub mod tridiagonal;

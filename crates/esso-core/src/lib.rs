//! # esso-core
//!
//! Dense multilayer perceptrons in f64 and everything one training sample needs for the exact
//! second-order method of esso (method.md §1–§2). It knows nothing of eigenvalues or
//! optimisers: those live in `esso-hessian` and `esso-optim`.
//!
//! ## Tour
//! - [`Activation`]: σ, σ′, σ″ for identity, tanh, sigmoid, softplus, ReLU and leaky ReLU.
//! - [`Loss`]: softmax cross-entropy from logits and ½‖z − t‖², with δ_L and the exact
//!   output Hessian; [`Target`] / [`Targets`] for one sample / a batch.
//! - [`Dense`], [`Params`]: layer parameters, and the one canonical parameter order
//!   (layer by layer, weight row-major, then bias).
//! - [`Mlp`]: construction ([`Init`], seeded), single-sample forward into a reusable
//!   [`ForwardTrace`], batched forward and evaluation (one GEMM per layer), mini-batch mean
//!   gradient, JSON save/load ([`Mlp::to_json`], [`Mlp::from_json`]).
//! - [`portable`]: random draws, shuffles and elementary functions that give the same bits
//!   on every platform (initialisation, epoch orders, synthetic data).
//! - [`BackwardTrace`]: δ_l for every layer (the rank-one gradient factors δ_l, ã_{l−1}).
//! - [`SecondOrderTrace`]: δ_l, s_l, c_l and the exact pre-activation Hessians H_l, filled by
//!   [`Mlp::backward_second_order_into`] in one allocation-free pass.
//!
//! ## Example
//! ```
//! use esso_core::{Activation, ForwardTrace, Init, Loss, Mlp, SecondOrderTrace, Target};
//! use rand::SeedableRng;
//!
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
//! let mlp = Mlp::new(&[4, 5, 3, 3], Activation::Tanh, Init::GlorotUniform, &mut rng)?;
//! let (mut fwd, mut so) = (ForwardTrace::new(&mlp), SecondOrderTrace::new(&mlp));
//! let x = ndarray::array![0.1, -0.3, 0.5, 0.2];
//! mlp.forward_into(&x, &mut fwd)?;
//! let loss = mlp.backward_second_order_into(&fwd, Loss::CrossEntropy, Target::Class(2), &mut so)?;
//! assert!(loss > 0.0);
//! assert_eq!(so.pre_activation_hessian(0).dim(), (5, 5));
//! # Ok::<(), esso_core::CoreError>(())
//! ```

mod activation;
mod backward;
mod error;
mod init;
mod io;
mod loss;
mod mlp;
mod params;
pub mod portable;
mod simd;
pub mod tanh;

pub use activation::{Activation, DEFAULT_LEAKY_SLOPE};
pub use backward::{BackwardTrace, SecondOrderTrace};
pub use error::{CoreError, Result};
pub use init::Init;
pub use io::{LayerFile, ModelFile};
pub use loss::{Loss, Target, Targets, log_sum_exp, softmax};
pub use mlp::{Evaluation, ForwardTrace, Mlp, argmax};
pub use params::{Dense, Params};
pub use portable::{portable_ln, standard_normal, uniform01};
pub use simd::clean_simd_state;

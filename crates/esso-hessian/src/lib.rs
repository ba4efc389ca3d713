//! # esso-hessian
//!
//! The exact single-sample Hessian of an MLP and the closed-form regularised Newton
//! directions of esso (method.md §3–§4), on top of esso-core's second-order sweep. This is a
//! reconstruction from the abstracts of Mehouachi & Kasmi, "Exact Stochastic Second Order
//! Deep Learning" (arXiv:2104.03804); see docs/method-exact-hessian.md.
//!
//! ## Tour
//! - [`SpectralFn`] ([`SpectralKind`]): f(e) for damped, absolute (saddle-free), floor and
//!   power directions, with λ > 0 and optional clipping, validated at construction.
//! - Per layer (§3): [`LayerCurvature`] (the eigenpairs of H_l and ‖ã‖²),
//!   [`LayerBlock`] (the structured block B_l = (ã ãᵀ) ⊗ H_l: full spectrum, eigenvectors,
//!   products, dense form), [`RankOneDirection`] and [`layerwise_direction`];
//!   [`LayerSolver`] ([`LayerHessian`]): the per-layer Newton factor f(‖ã‖² H_l) δ_l and the
//!   eigenvalues without eigenvectors, for the optimiser's hot path.
//! - Whole network (§4): [`FullHessian`] (H = Kᵀ M K: sweeps, Gram matrix, exact
//!   Hessian-vector products, push-through damped Newton, dense form) and [`FullSpectrum`]
//!   (exact eigenvalues, eigenvectors, [`Inertia`], every spectral direction).
//! - Mini-batches and datasets (issue 8, docs/method-spectral-analysis.md): [`BatchHessian`]
//!   (the exact Hessian of a mean loss as a [`SymmetricOperator`], its exact trace and its exact
//!   spectrum through the stacked factorisation), [`lanczos`] (top/bottom-k eigenpairs with full
//!   reorthogonalisation), [`trace`] (Hutchinson, Hutch++), [`density`] (stochastic Lanczos
//!   quadrature).
//! - Flat minima (docs/method-sharpness-landscapes.md): [`sharpness`] (ε-sharpness of Keskar
//!   et al., ρ-sharpness of SAM) and [`landscape`] (1D interpolation, filter-normalised
//!   directions, 2D surfaces).
//! - [`reference`](mod@reference): the dense finite-difference oracle the tests check everything against.
//!
//! ## Parameter order
//! Every flat vector and dense matrix uses the one canonical order of [`esso_core::Params`]:
//! layer by layer, the weight row-major, then the bias.
//!
//! ## Example
//! ```
//! use esso_core::{Activation, Init, Loss, Mlp, SecondOrderTrace, Target};
//! use esso_hessian::{FullHessian, SpectralFn, layerwise_direction};
//! use rand::SeedableRng;
//!
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
//! let mlp = Mlp::new(&[4, 5, 3], Activation::Tanh, Init::GlorotUniform, &mut rng)?;
//! let fwd = mlp.forward(&ndarray::array![0.1, -0.3, 0.5, 0.2])?;
//! let mut so = SecondOrderTrace::new(&mlp);
//! mlp.backward_second_order_into(&fwd, Loss::CrossEntropy, Target::Class(2), &mut so)?;
//!
//! let abs = SpectralFn::absolute(1.0)?;
//! let per_layer = layerwise_direction(&mlp, &fwd, &so, &abs)?;
//!
//! let full = FullHessian::new(&mlp, &fwd, &so)?;
//! let spectrum = full.spectrum()?;
//! // §5: rank 2·(hidden units) + classes − 1, exactly (hidden units) negative eigenvalues.
//! let inertia = spectrum.inertia();
//! assert_eq!((inertia.negative, inertia.rank()), (5, 2 * 5 + 3 - 1));
//! let step = spectrum.direction(&abs)?;
//! let g = so.gradient(&fwd);
//! assert!(g.dot(&step) < 0.0 && g.dot(&per_layer) < 0.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod batch;
pub mod density;
mod error;
mod full;
mod inertia;
pub mod kernels;
pub mod lanczos;
pub mod landscape;
mod layer;
pub mod limits;
mod linalg;
pub mod reference;
pub mod sharpness;
mod solver;
mod spectral;
pub mod trace;

pub use batch::{BatchHessian, BatchOptions, BatchSpectrum, DenseOperator, SymmetricOperator};
pub use density::{SlqOptions, SpectralDensity};
pub use error::{HessianError, Result};
pub use full::{FullHessian, FullSpectrum, GRAM_RANK_RTOL};
pub use inertia::{Inertia, ZERO_EIGENVALUE_RTOL};
pub use lanczos::{Eigenpairs, LanczosOptions, Which};
pub use layer::{
    LayerBlock, LayerCurvature, RankOneDirection, layerwise_direction, layerwise_direction_factors,
};
pub use solver::{LayerHessian, LayerSolver};
pub use spectral::{SpectralFn, SpectralKind};
pub use trace::TraceEstimate;

//! The exact Hessian of the mean loss over a set of samples (a mini-batch or a whole
//! dataset) as a matrix-free operator, its exact trace, and its exact spectrum through the
//! stacked per-sample factorisation (docs/method-spectral-analysis.md).
//!
//! ```text
//! H_B = (1/B) Σ_i H_i = (1/B) Σ_i K_iᵀ M_i K_i = 𝒦ᵀ ℳ 𝒦,
//! 𝒦 = [K_1; …; K_B]  (B·m × N),   ℳ = (1/B) blkdiag(M_1, …, M_B)
//! ```
//!
//! with K_i, M_i the single-sample factors of method.md §4 ([`crate::FullHessian`]).
//!
//! - [`SymmetricOperator`]: the interface of the iterative methods ([`crate::lanczos`],
//!   [`crate::trace`], [`crate::density`]): `dim` and `apply` on flat vectors in the canonical
//!   [`esso_core::Params`] order.
//! - [`BatchHessian`]: H_B with exact products (two batched sweeps), mean loss and gradient,
//!   exact trace ([`BatchHessian::trace`]) and exact spectrum ([`BatchHessian::exact_spectrum`]).
//! - [`DenseOperator`]: a dense symmetric matrix as an operator (tests, small problems).

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use esso_core::{CoreError, Loss, Mlp, Targets};
use ndarray::{Array1, Array2, Array3, ArrayRef2, ArrayView1, ArrayView2, Axis, s};
use rayon::prelude::*;

use crate::error::{HessianError, Result};
use crate::full::{FullHessian, factor_gram};
use crate::inertia::{Inertia, ZERO_EIGENVALUE_RTOL};
use crate::linalg::{sym_eigen, try_zeros};

/// A real symmetric linear operator A: ℝⁿ → ℝⁿ known through its products.
///
/// Vectors are flat slices; for Hessians the order is the canonical order of
/// [`esso_core::Params`]. Implementations must be deterministic: the same `v` gives the same
/// bits of `out`.
pub trait SymmetricOperator: Sync {
    /// n, the dimension.
    fn dim(&self) -> usize;

    /// out ← A v.
    ///
    /// # Errors
    /// [`HessianError::Shape`] when `v.len()` or `out.len()` differs from [`Self::dim`]
    /// (naming both sizes); implementation-specific errors otherwise.
    fn apply(&self, v: &[f64], out: &mut [f64]) -> Result<()>;
}

impl<T: SymmetricOperator + ?Sized> SymmetricOperator for &T {
    fn dim(&self) -> usize {
        (**self).dim()
    }

    fn apply(&self, v: &[f64], out: &mut [f64]) -> Result<()> {
        (**self).apply(v, out)
    }
}

/// Checks the two slice lengths of [`SymmetricOperator::apply`] against `dim`.
///
/// # Errors
/// [`HessianError::Shape`] naming the vector and both sizes.
pub fn check_apply_shapes(dim: usize, v: &[f64], out: &[f64]) -> Result<()> {
    if v.len() != dim {
        return Err(HessianError::Shape {
            what: "operator input vector",
            expected: dim,
            got: v.len(),
        });
    }
    if out.len() != dim {
        return Err(HessianError::Shape {
            what: "operator output vector",
            expected: dim,
            got: out.len(),
        });
    }
    Ok(())
}

/// The single-sample Hessian H = Kᵀ M K as an operator: one forward and one backward sweep
/// per product ([`FullHessian::hvp`]).
impl SymmetricOperator for FullHessian<'_> {
    fn dim(&self) -> usize {
        self.n_params()
    }

    fn apply(&self, v: &[f64], out: &mut [f64]) -> Result<()> {
        check_apply_shapes(self.n_params(), v, out)?;
        let mut params = esso_core::Params::zeros_like(self.network().params());
        params.copy_from_flat(v)?;
        let hv = self.hvp(&params);
        let mut offset = 0;
        for s in hv.slices() {
            out[offset..offset + s.len()].copy_from_slice(s);
            offset += s.len();
        }
        Ok(())
    }
}

/// A dense symmetric matrix as a [`SymmetricOperator`] (products by matrix-vector
/// multiplication): for tests and small problems.
#[derive(Debug, Clone)]
pub struct DenseOperator {
    matrix: Array2<f64>,
}

impl DenseOperator {
    /// Wraps a square matrix; it is symmetrised as (A + Aᵀ)/2.
    ///
    /// # Errors
    /// [`HessianError::Shape`] when it is not square, [`HessianError::NonFinite`] when an
    /// entry is not finite.
    pub fn new(matrix: &ArrayRef2<f64>) -> Result<Self> {
        if matrix.nrows() != matrix.ncols() {
            return Err(HessianError::Shape {
                what: "dense operator columns",
                expected: matrix.nrows(),
                got: matrix.ncols(),
            });
        }
        if !matrix.iter().all(|v| v.is_finite()) {
            return Err(HessianError::NonFinite { what: "dense operator", layer_idx: None });
        }
        Ok(DenseOperator { matrix: (&matrix.to_owned() + &matrix.t()) * 0.5 })
    }

    /// The (symmetrised) matrix.
    pub fn matrix(&self) -> ArrayView2<'_, f64> {
        self.matrix.view()
    }
}

impl SymmetricOperator for DenseOperator {
    fn dim(&self) -> usize {
        self.matrix.nrows()
    }

    fn apply(&self, v: &[f64], out: &mut [f64]) -> Result<()> {
        check_apply_shapes(self.dim(), v, out)?;
        let v = ArrayView1::from(v);
        for (o, row) in out.iter_mut().zip(self.matrix.rows()) {
            *o = row.dot(&v);
        }
        Ok(())
    }
}

/// Default memory budget for the per-sample quantities a [`BatchHessian`] caches: 256 MiB.
pub const DEFAULT_CACHE_BUDGET_BYTES: usize = 256 << 20;

/// Default number of samples per chunk of a [`BatchHessian`] product.
pub const DEFAULT_CHUNK_SIZE: usize = 32;

/// Default largest B·m for [`BatchHessian::exact_spectrum`].
///
/// Reason: the stacked Gram matrix is (B·m)² doubles (128 MiB at 4096) and its factorisation
/// and the eigendecomposition cost O((B·m)³) (≈ 1 minute at 4096 on this project's machines,
/// release build); beyond that Lanczos is the tool.
pub const DEFAULT_MAX_SPECTRUM_ROWS: usize = 4096;

/// Chunks whose products are computed in parallel before being added, in chunk order, to the
/// result: bounds the memory of the reduction to this many N-vectors.
const CHUNKS_PER_GROUP: usize = 8;

/// Options of a [`BatchHessian`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchOptions {
    /// Memory budget (bytes) for caching the per-sample quantities every product needs
    /// (hidden activations a_l, δ_l, s_l, c_l and H_L: 8·(Σ_{l<L} n_l + 3·Σ_l n_l + n_L²)
    /// bytes per sample). Above it they are recomputed at every product (one batched forward
    /// and first-order backward pass per product, still exact).
    pub cache_budget_bytes: usize,
    /// Samples per chunk: products are computed chunk by chunk (batched GEMMs), chunks in
    /// parallel, and the chunk results are added in chunk order, so the numbers do not depend
    /// on the number of threads.
    pub chunk_size: usize,
    /// The largest B·m [`BatchHessian::exact_spectrum`] accepts.
    pub max_spectrum_rows: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            cache_budget_bytes: DEFAULT_CACHE_BUDGET_BYTES,
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_spectrum_rows: DEFAULT_MAX_SPECTRUM_ROWS,
        }
    }
}

/// What one product needs of each sample of a chunk: rows are samples.
#[derive(Debug, Clone)]
struct ChunkRecord {
    /// a_l = σ(z_l) for the hidden layers (`hidden[l]` is the input of layer l + 1).
    hidden: Vec<Array2<f64>>,
    /// δ_l = ∂ℓ/∂z_l, every layer.
    deltas: Vec<Array2<f64>>,
    /// s_l = σ′(z_l), hidden layers.
    slopes: Vec<Array2<f64>>,
    /// c_l = σ″(z_l) ⊙ W_{l+1}ᵀ δ_{l+1}, hidden layers.
    curvatures: Vec<Array2<f64>>,
    /// H_L per sample: b × n_L × n_L.
    h_out: Array3<f64>,
    /// Σ of the losses of the chunk.
    loss_sum: f64,
}

impl ChunkRecord {
    fn n_bytes_per_sample(mlp: &Mlp) -> usize {
        let sizes = mlp.sizes();
        let n_last = sizes[sizes.len() - 1];
        let hidden: usize = sizes[1..sizes.len() - 1].iter().sum();
        let all: usize = sizes[1..].iter().sum();
        8 * (hidden + all + 2 * hidden + n_last * n_last)
    }
}

/// The exact Hessian of the mean loss over B samples,
/// H_B = (1/B) Σ_i ∇²ℓ(θ; x_i, t_i) = (1/B) Σ_i K_iᵀ M_i K_i, as an operator.
///
/// Built once per (network, samples) with [`BatchHessian::new`]; it borrows the network,
/// the inputs and the targets.
///
/// # Products
/// A product H_B v (in [`SymmetricOperator::apply`]) is, per chunk of samples, one batched
/// forward sweep ρ_i = K_i v (r_l, p_l of [`FullHessian`]), the sparse middle M_i ρ_i and one
/// batched backward sweep K_iᵀ (·), all as GEMMs over the chunk: O(B·N) work, like a
/// mini-batch gradient. Chunks run in parallel (rayon) and are added in chunk order, so the
/// result is bit-identical for every thread count.
///
/// # Memory
/// The per-sample quantities of the sweeps (hidden activations a_l, δ_l, s_l, c_l and H_L,
/// 8·(Σ_{l<L} n_l + 3·Σ_l n_l + n_L²) bytes per sample, the second-order H_l of hidden
/// layers are never formed) are cached when B times that fits in
/// [`BatchOptions::cache_budget_bytes`]; otherwise every product recomputes them chunk by
/// chunk (one extra batched forward and backward pass). Either way a product holds at most
/// 8 chunk results of N entries at a time.
#[derive(Debug)]
pub struct BatchHessian<'a> {
    mlp: &'a Mlp,
    loss: Loss,
    xs: ArrayView2<'a, f64>,
    targets: Targets<'a>,
    options: BatchOptions,
    chunks: Vec<Range<usize>>,
    cache: Option<Vec<ChunkRecord>>,
    mean_loss: f64,
    gradient: Array1<f64>,
    /// Flat offset of each layer's weight; its bias follows.
    offsets: Vec<usize>,
    r_offsets: Vec<usize>,
    p_offsets: Vec<usize>,
    hvp_count: AtomicUsize,
}

impl<'a> BatchHessian<'a> {
    /// H_B for the samples `xs` (one row per sample) with their `targets`, default options.
    ///
    /// Computes (and caches, within the budget) the per-sample quantities, the mean loss and
    /// the mean gradient.
    ///
    /// # Errors
    /// [`HessianError::Empty`] for zero samples; [`HessianError::Core`] with
    /// [`CoreError::BatchWidth`] or [`CoreError::TargetCount`] when the shapes do not fit,
    /// or a target error; [`HessianError::NonFinite`] when an input, the loss or a
    /// derivative is not finite.
    pub fn new(
        mlp: &'a Mlp,
        loss: Loss,
        xs: &'a ArrayRef2<f64>,
        targets: Targets<'a>,
    ) -> Result<Self> {
        Self::with_options(mlp, loss, xs, targets, BatchOptions::default())
    }

    /// As [`BatchHessian::new`] with explicit [`BatchOptions`].
    ///
    /// # Errors
    /// As [`BatchHessian::new`], and [`HessianError::InvalidParameter`] naming `chunk_size`
    /// when it is 0.
    pub fn with_options(
        mlp: &'a Mlp,
        loss: Loss,
        xs: &'a ArrayRef2<f64>,
        targets: Targets<'a>,
        options: BatchOptions,
    ) -> Result<Self> {
        if options.chunk_size == 0 {
            return Err(HessianError::InvalidParameter {
                name: "chunk_size",
                value: 0.0,
                reason: "must be at least 1",
            });
        }
        let n_samples = xs.nrows();
        if n_samples == 0 {
            return Err(HessianError::Empty { what: "batch" });
        }
        if xs.ncols() != mlp.n_inputs() {
            return Err(CoreError::BatchWidth { expected: mlp.n_inputs(), got: xs.ncols() }.into());
        }
        if targets.len() != n_samples {
            return Err(CoreError::TargetCount { n_samples, n_targets: targets.len() }.into());
        }
        if !xs.iter().all(|v| v.is_finite()) {
            return Err(HessianError::NonFinite { what: "batch inputs", layer_idx: None });
        }
        let chunks: Vec<Range<usize>> = (0..n_samples)
            .step_by(options.chunk_size)
            .map(|lo| lo..(lo + options.chunk_size).min(n_samples))
            .collect();
        let offsets = (0..mlp.n_layers()).map(|l| mlp.params().layer_offset(l)).collect();
        let mut r_offsets = vec![0];
        for layer in mlp.layers() {
            r_offsets.push(r_offsets[r_offsets.len() - 1] + layer.n_outputs());
        }
        let mut p_offsets = vec![r_offsets[mlp.n_layers()]; 2];
        for layer in &mlp.layers()[1..] {
            p_offsets.push(p_offsets[p_offsets.len() - 1] + layer.n_inputs());
        }
        let mut hessian = BatchHessian {
            mlp,
            loss,
            xs: xs.view(),
            targets,
            options,
            chunks,
            cache: None,
            mean_loss: f64::NAN,
            gradient: Array1::zeros(mlp.n_params()),
            offsets,
            r_offsets,
            p_offsets,
            hvp_count: AtomicUsize::new(0),
        };
        let records: Vec<ChunkRecord> = hessian
            .chunks
            .par_iter()
            .map(|rows| hessian.compute_record(rows.clone()))
            .collect::<Result<_>>()?;
        let mut loss_sum = 0.0;
        let mut grad = vec![0.0; mlp.n_params()];
        for (record, rows) in records.iter().zip(&hessian.chunks) {
            loss_sum += record.loss_sum;
            let (out_r, out_p) = hessian.gradient_rho(record);
            hessian.add_k_transpose(record, rows.clone(), &out_r, &out_p, &mut grad);
        }
        let scale = 1.0 / n_samples as f64;
        hessian.mean_loss = loss_sum * scale;
        hessian.gradient = Array1::from(grad) * scale;
        let cache_bytes = ChunkRecord::n_bytes_per_sample(mlp).saturating_mul(n_samples);
        if cache_bytes <= options.cache_budget_bytes {
            hessian.cache = Some(records);
        }
        Ok(hessian)
    }

    /// B, the number of samples.
    pub fn n_samples(&self) -> usize {
        self.xs.nrows()
    }

    /// N, the parameter count (the operator's dimension).
    pub fn dim(&self) -> usize {
        self.mlp.n_params()
    }

    /// m = Σ_l n_l + Σ_{l<L} n_l, the rows of one sample's K.
    pub fn n_rows_k(&self) -> usize {
        self.p_offsets[self.p_offsets.len() - 1]
    }

    /// The loss of the Hessian.
    pub fn loss_kind(&self) -> Loss {
        self.loss
    }

    /// The options in use.
    pub fn options(&self) -> &BatchOptions {
        &self.options
    }

    /// Whether the per-sample quantities are cached (see the type docs, *Memory*).
    pub fn is_cached(&self) -> bool {
        self.cache.is_some()
    }

    /// The mean loss (1/B) Σ_i ℓ_i.
    pub fn loss(&self) -> f64 {
        self.mean_loss
    }

    /// The mean gradient (1/B) Σ_i ∇ℓ_i, flat in the canonical order.
    pub fn gradient(&self) -> ArrayView1<'_, f64> {
        self.gradient.view()
    }

    /// The number of products H_B v computed so far (each one is B per-sample products).
    pub fn hvp_count(&self) -> usize {
        self.hvp_count.load(Ordering::Relaxed)
    }

    /// Sets the product counter back to 0.
    pub fn reset_hvp_count(&self) {
        self.hvp_count.store(0, Ordering::Relaxed);
    }

    /// H_B v as a new vector.
    ///
    /// # Errors
    /// [`HessianError::Shape`] when `v.len() != N`; trace errors in recompute mode.
    pub fn hvp(&self, v: &[f64]) -> Result<Array1<f64>> {
        let mut out = vec![0.0; self.dim()];
        self.apply(v, &mut out)?;
        Ok(Array1::from(out))
    }

    /// The dense N × N matrix H_B (canonical order), column by column from products,
    /// symmetrised as (A + Aᵀ)/2. For small networks: N products, O(N²) memory.
    ///
    /// # Errors
    /// As [`BatchHessian::hvp`].
    pub fn to_dense(&self) -> Result<Array2<f64>> {
        let n = self.dim();
        let mut dense = Array2::zeros((n, n));
        let mut unit = vec![0.0; n];
        for col in 0..n {
            unit[col] = 1.0;
            let column = self.hvp(&unit)?;
            dense.column_mut(col).assign(&column);
            unit[col] = 0.0;
        }
        Ok((&dense + &dense.t()) * 0.5)
    }

    /// The exact trace tr(H_B) = (1/B) Σ_i tr(M_i G_i), G_i = K_i K_iᵀ, in closed form.
    ///
    /// Only the diagonal r-blocks of G_i meet non-zero entries of M_i on the diagonal
    /// (G_i[r_l, p_{l+1}] = 0: r_l depends on layers ≤ l only), so
    ///
    /// ```text
    /// tr(H_i) = Σ_{l<L} Σ_a c_l[a] G_i[r_l, r_l]_aa + ⟨H_L, G_i[r_L, r_L]⟩_F,
    /// G[r_1, r_1] = ‖ã_0‖² I,   G[r_l, r_l] = ‖ã_{l−1}‖² I + T_l G[r_{l−1}, r_{l−1}] T_lᵀ,
    /// T_l = W_l diag(s_{l−1}).
    /// ```
    ///
    /// Cost O(Σ_l n_l n_{l−1} (n_l + n_{l−1})) per sample, no product with H_B.
    ///
    /// # Errors
    /// Trace errors in recompute mode.
    pub fn trace(&self) -> Result<f64> {
        let per_chunk: Vec<f64> = self
            .chunks
            .par_iter()
            .enumerate()
            .map(|(chunk_idx, rows)| {
                self.with_record(chunk_idx, |record| {
                    Ok((0..rows.len()).map(|i| self.sample_trace(record, rows.clone(), i)).sum())
                })
            })
            .collect::<Result<_>>()?;
        Ok(per_chunk.iter().sum::<f64>() / self.n_samples() as f64)
    }

    /// The exact spectrum of H_B through the stacked factorisation H_B = 𝒦ᵀ ℳ 𝒦
    /// (docs/method-spectral-analysis.md): the non-zero eigenvalues of H_B are those of
    /// 𝒢^{1/2} ℳ 𝒢^{1/2} with the cross-sample Gram matrix 𝒢 = 𝒦 𝒦ᵀ (B·m × B·m), whose
    /// blocks have closed forms: per layer k, every row of 𝒦 restricted to layer k is a
    /// rank-one matrix y zᵀ (y ∈ ℝ^{n_k}, z ∈ ℝ^{n_{k−1}+1}), so
    ///
    /// ```text
    /// 𝒢 = Σ_k (Y_k Y_kᵀ) ∘ (Z_k Z_kᵀ)
    /// r_l rows of sample i (l ≥ k): Y = T^i_l ⋯ T^i_{k+1} (rows),  Z = ã^i_{k−1}
    /// p_k rows of sample i:         Y = δ^i_k,                     Z = (e_c, 0)
    /// ```
    ///
    /// The eigenproblem is then solved as in [`FullHessian`]: Jacobi equilibration, Cholesky
    /// of 𝒢 on its non-zero rows (pseudo-inverse square root when 𝒢 is rank-deficient, e.g.
    /// repeated samples or B·m > N), S = Lᵀ ℳ′ L. Cost O((B·m)² Σ_l n_l + (B·m)³) instead of
    /// O(N³) for the dense route. With `with_vectors`, the orthonormal eigenvectors
    /// Φ = 𝒦ᵀ D L⁻ᵀ V are formed (r backward sweeps over the batch).
    ///
    /// # Errors
    /// [`HessianError::BatchTooLarge`] when B·m > [`BatchOptions::max_spectrum_rows`]
    /// (naming B, m and the limit); [`HessianError::EigenNoConvergence`]; trace errors in
    /// recompute mode.
    pub fn exact_spectrum(&self, with_vectors: bool) -> Result<BatchSpectrum> {
        let m = self.n_rows_k();
        let n_samples = self.n_samples();
        let rows = n_samples.saturating_mul(m);
        if rows > self.options.max_spectrum_rows {
            return Err(HessianError::BatchTooLarge {
                n_samples,
                rows_per_sample: m,
                rows,
                limit: self.options.max_spectrum_rows,
            });
        }
        let (gram, middle) = self.stacked_gram_and_middle()?;
        let factor = factor_gram(&gram, &middle, false, "the stacked Gram matrix")?;
        let (values, vectors) = sym_eigen(&factor.s_matrix, with_vectors)
            .map_err(|e| e.into_error("the whitened stacked middle matrix", None))?;
        let vectors = match vectors {
            Some(v) => {
                // Column j of Φ = 𝒦ᵀ ρ_j, ρ_j = (whitenerᵀ v_j) on the active rows.
                let coeffs = factor.whitener.t().dot(&v);
                let mut phi = Array2::zeros((self.dim(), values.len()));
                for col in 0..values.len() {
                    let mut rho = vec![0.0; rows];
                    for (a, &row) in factor.active.iter().enumerate() {
                        rho[row] = coeffs[[a, col]];
                    }
                    phi.column_mut(col).assign(&Array1::from(self.stacked_k_transpose(&rho)?));
                }
                Some(phi)
            }
            None => None,
        };
        Ok(BatchSpectrum { values, n_params: self.dim(), vectors })
    }

    /// 𝒦ᵀ ρ for a stacked K-space vector (B·m entries, sample-major, each sample in the
    /// K-space layout of [`FullHessian`]), flat N.
    fn stacked_k_transpose(&self, rho: &[f64]) -> Result<Vec<f64>> {
        let m = self.n_rows_k();
        let n_layers = self.mlp.n_layers();
        self.reduce_chunks(|chunk_idx, rows, out| {
            self.with_record(chunk_idx, |record| {
                let b = rows.len();
                let block = ArrayView2::from_shape((b, m), &rho[rows.start * m..rows.end * m])
                    .map_err(|_| HessianError::Shape {
                        what: "stacked K-space vector",
                        expected: self.n_samples() * m,
                        got: rho.len(),
                    })?;
                let out_r: Vec<Array2<f64>> = (0..n_layers)
                    .map(|l| {
                        block.slice(s![.., self.r_offsets[l]..self.r_offsets[l + 1]]).to_owned()
                    })
                    .collect();
                let out_p: Vec<Array2<f64>> = (0..n_layers)
                    .map(|l| {
                        block.slice(s![.., self.p_offsets[l]..self.p_offsets[l + 1]]).to_owned()
                    })
                    .collect();
                self.add_k_transpose(record, rows.clone(), &out_r, &out_p, out);
                Ok(())
            })
        })
    }

    /// The stacked Gram matrix 𝒢 = 𝒦 𝒦ᵀ and ℳ = (1/B) blkdiag(M_i).
    fn stacked_gram_and_middle(&self) -> Result<(Array2<f64>, Array2<f64>)> {
        let m = self.n_rows_k();
        let n_samples = self.n_samples();
        let rows = n_samples * m;
        let n_layers = self.mlp.n_layers();
        let last = n_layers - 1;
        let mut gram = try_zeros(rows, rows, "the stacked Gram matrix (R x R)")?;
        let mut middle = try_zeros(rows, rows, "the stacked middle matrix (R x R)")?;
        let scale = 1.0 / n_samples as f64;
        for k in 0..n_layers {
            let n_k = self.mlp.layers()[k].n_outputs();
            let n_in = self.mlp.layers()[k].n_inputs();
            let mut y = Array2::<f64>::zeros((rows, n_k));
            let mut z = Array2::<f64>::zeros((rows, n_in + 1));
            for (chunk_idx, chunk) in self.chunks.iter().enumerate() {
                self.with_record(chunk_idx, |record| {
                    for i in 0..chunk.len() {
                        let base = (chunk.start + i) * m;
                        let a_in = self.layer_input(record, chunk.clone(), k);
                        let a_in = a_in.row(i);
                        let mut u = Array2::<f64>::eye(n_k);
                        for l in k..n_layers {
                            if l > k {
                                let s_prev = record.slopes[l - 1].row(i);
                                let t =
                                    self.mlp.layers()[l].weight() * &s_prev.insert_axis(Axis(0));
                                u = t.dot(&u);
                            }
                            let r0 = base + self.r_offsets[l];
                            for a in 0..u.nrows() {
                                y.row_mut(r0 + a).assign(&u.row(a));
                                let mut zr = z.row_mut(r0 + a);
                                zr.slice_mut(s![..n_in]).assign(&a_in);
                                zr[n_in] = 1.0;
                            }
                        }
                        if k > 0 {
                            let delta = record.deltas[k].row(i);
                            let p0 = base + self.p_offsets[k];
                            for c in 0..n_in {
                                y.row_mut(p0 + c).assign(&delta);
                                z[[p0 + c, c]] = 1.0;
                            }
                        }
                        if k == 0 {
                            // ℳ block of the sample (once).
                            let (r_last, h) = (
                                base + self.r_offsets[last]..base + self.r_offsets[last + 1],
                                record.h_out.index_axis(Axis(0), i),
                            );
                            middle.slice_mut(s![r_last.clone(), r_last]).assign(&(&h * scale));
                            for l in 0..last {
                                let (s_l, c_l) =
                                    (record.slopes[l].row(i), record.curvatures[l].row(i));
                                for q in 0..s_l.len() {
                                    let ri = base + self.r_offsets[l] + q;
                                    let pi = base + self.p_offsets[l + 1] + q;
                                    middle[[ri, ri]] = c_l[q] * scale;
                                    middle[[ri, pi]] = s_l[q] * scale;
                                    middle[[pi, ri]] = s_l[q] * scale;
                                }
                            }
                        }
                    }
                    Ok(())
                })?;
            }
            let mut contribution = y.dot(&y.t());
            contribution *= &z.dot(&z.t());
            gram += &contribution;
        }
        let gram = (&gram + &gram.t()) * 0.5;
        Ok((gram, middle))
    }

    /// tr(H_i) of sample `i` of a chunk (see [`BatchHessian::trace`]).
    fn sample_trace(&self, record: &ChunkRecord, rows: Range<usize>, i: usize) -> f64 {
        let n_layers = self.mlp.n_layers();
        let last = n_layers - 1;
        let mut total = 0.0;
        let mut g_prev: Option<Array2<f64>> = None;
        for l in 0..n_layers {
            let a_in = self.layer_input(record, rows.clone(), l);
            let a_in = a_in.row(i);
            let alpha = a_in.dot(&a_in) + 1.0;
            let n_l = self.mlp.layers()[l].n_outputs();
            let mut g = match &g_prev {
                Some(gp) => {
                    let s_prev = record.slopes[l - 1].row(i);
                    let t = self.mlp.layers()[l].weight() * &s_prev.insert_axis(Axis(0));
                    t.dot(gp).dot(&t.t())
                }
                None => Array2::zeros((n_l, n_l)),
            };
            g.diag_mut().mapv_inplace(|d| d + alpha);
            if l < last {
                let c = record.curvatures[l].row(i);
                total += c.iter().zip(g.diag()).map(|(c, d)| c * d).sum::<f64>();
            } else {
                let h = record.h_out.index_axis(Axis(0), i);
                total += (&h * &g).sum();
            }
            g_prev = Some(g);
        }
        total
    }

    /// The input of layer `layer_idx` for the samples of a chunk (b × n_{l−1}).
    fn layer_input<'r>(
        &'r self,
        record: &'r ChunkRecord,
        rows: Range<usize>,
        layer_idx: usize,
    ) -> ArrayView2<'r, f64> {
        if layer_idx == 0 {
            self.xs.slice(s![rows, ..])
        } else {
            record.hidden[layer_idx - 1].view()
        }
    }

    /// Runs `f` on the record of a chunk: the cached one, or one recomputed now.
    fn with_record<T>(
        &self,
        chunk_idx: usize,
        f: impl FnOnce(&ChunkRecord) -> Result<T>,
    ) -> Result<T> {
        match &self.cache {
            Some(records) => f(&records[chunk_idx]),
            None => f(&self.compute_record(self.chunks[chunk_idx].clone())?),
        }
    }

    /// Batched forward and first-order backward pass over a chunk, plus s_l, c_l and H_L.
    fn compute_record(&self, rows: Range<usize>) -> Result<ChunkRecord> {
        let n_layers = self.mlp.n_layers();
        let last = n_layers - 1;
        let act = self.mlp.activation();
        let b = rows.len();
        let mut hidden: Vec<Array2<f64>> = Vec::with_capacity(last);
        let mut pre: Vec<Array2<f64>> = Vec::with_capacity(n_layers);
        for (l, layer) in self.mlp.layers().iter().enumerate() {
            let a_in =
                if l == 0 { self.xs.slice(s![rows.clone(), ..]) } else { hidden[l - 1].view() };
            let mut z = a_in.dot(&layer.weight().t());
            z += &layer.bias().view().insert_axis(Axis(0));
            if l < last {
                hidden.push(z.mapv(|v| act.value(v)));
            }
            pre.push(z);
        }
        let n_out = self.mlp.n_outputs();
        let mut deltas: Vec<Array2<f64>> =
            self.mlp.layers().iter().map(|l| Array2::zeros((b, l.n_outputs()))).collect();
        let mut h_out = Array3::zeros((b, n_out, n_out));
        let mut loss_sum = 0.0;
        for i in 0..b {
            let z = pre[last].row(i);
            let mut d = deltas[last].row_mut(i);
            loss_sum += self.loss.value_and_delta(&z, self.targets.get(rows.start + i), &mut d)?;
            self.loss.output_hessian_into(&z, &mut h_out.index_axis_mut(Axis(0), i));
        }
        let mut slopes = vec![Array2::zeros((0, 0)); last];
        let mut curvatures = vec![Array2::zeros((0, 0)); last];
        for l in (0..last).rev() {
            let back = deltas[l + 1].dot(self.mlp.layers()[l + 1].weight());
            let (z, a) = (&pre[l], &hidden[l]);
            let mut s_l = Array2::zeros((b, z.ncols()));
            let mut c_l = Array2::zeros((b, z.ncols()));
            let mut d_l = Array2::zeros((b, z.ncols()));
            ndarray::Zip::from(&mut s_l)
                .and(&mut c_l)
                .and(&mut d_l)
                .and(z)
                .and(a)
                .and(&back)
                .for_each(|s, c, d, &z, &a, &bk| {
                    let (d1, d2) = act.derivatives(z, a);
                    *s = d1;
                    *c = d2 * bk;
                    *d = d1 * bk;
                });
            slopes[l] = s_l;
            curvatures[l] = c_l;
            deltas[l] = d_l;
        }
        let finite =
            |arrays: &[Array2<f64>]| arrays.iter().all(|a| a.iter().all(|v| v.is_finite()));
        if !loss_sum.is_finite()
            || !finite(&deltas)
            || !finite(&slopes)
            || !finite(&curvatures)
            || !finite(&hidden)
            || !h_out.iter().all(|v| v.is_finite())
        {
            return Err(HessianError::NonFinite {
                what: "the per-sample traces of the batch",
                layer_idx: None,
            });
        }
        Ok(ChunkRecord { hidden, deltas, slopes, curvatures, h_out, loss_sum })
    }

    /// The K-space "gradient" vector: δ_L in the r_L slot, zero elsewhere (g_i = K_iᵀ that).
    fn gradient_rho(&self, record: &ChunkRecord) -> (Vec<Array2<f64>>, Vec<Array2<f64>>) {
        let n_layers = self.mlp.n_layers();
        let b = record.h_out.len_of(Axis(0));
        let mut out_r: Vec<Array2<f64>> =
            (0..n_layers).map(|l| Array2::zeros((b, self.mlp.layers()[l].n_outputs()))).collect();
        out_r[n_layers - 1] = record.deltas[n_layers - 1].clone();
        let out_p = (0..n_layers)
            .map(|l| Array2::zeros((b, if l == 0 { 0 } else { self.mlp.layers()[l].n_inputs() })))
            .collect();
        (out_r, out_p)
    }

    /// The weight and bias of layer `l` of a flat vector.
    fn layer_of<'v>(&self, v: &'v [f64], l: usize) -> (ArrayView2<'v, f64>, ArrayView1<'v, f64>) {
        let layer = &self.mlp.layers()[l];
        let (n_out, n_in) = (layer.n_outputs(), layer.n_inputs());
        let off = self.offsets[l];
        let w = ArrayView2::from_shape((n_out, n_in), &v[off..off + n_out * n_in])
            .expect("the flat layout matches the layer shapes");
        let bias = ArrayView1::from(&v[off + n_out * n_in..off + n_out * n_in + n_out]);
        (w, bias)
    }

    /// out += Σ_{i in chunk} K_iᵀ M_i K_i v.
    fn add_chunk_hvp(&self, record: &ChunkRecord, rows: Range<usize>, v: &[f64], out: &mut [f64]) {
        let n_layers = self.mlp.n_layers();
        let last = n_layers - 1;
        let b = rows.len();
        // Forward sweep: R_l = A_{l−1} V_lᵀ + 1 u_lᵀ + (S_{l−1} ⊙ R_{l−1}) W_lᵀ, P_l = Δ_l V_l.
        let mut rs: Vec<Array2<f64>> = Vec::with_capacity(n_layers);
        let mut ps: Vec<Array2<f64>> = Vec::with_capacity(n_layers);
        for (l, layer) in self.mlp.layers().iter().enumerate() {
            let (vw, vb) = self.layer_of(v, l);
            let a_in = self.layer_input(record, rows.clone(), l);
            let mut r = a_in.dot(&vw.t());
            r += &vb.insert_axis(Axis(0));
            if l > 0 {
                let v_prev = &rs[l - 1] * &record.slopes[l - 1];
                r += &v_prev.dot(&layer.weight().t());
                ps.push(record.deltas[l].dot(&vw));
            } else {
                ps.push(Array2::zeros((b, 0)));
            }
            rs.push(r);
        }
        // Middle: M ρ.
        let mut out_r: Vec<Array2<f64>> = Vec::with_capacity(n_layers);
        let mut out_p: Vec<Array2<f64>> = vec![Array2::zeros((b, 0)); n_layers];
        for l in 0..last {
            let (s_l, c_l) = (&record.slopes[l], &record.curvatures[l]);
            out_r.push(c_l * &rs[l] + s_l * &ps[l + 1]);
            out_p[l + 1] = s_l * &rs[l];
        }
        let mut top = Array2::zeros(rs[last].dim());
        for i in 0..b {
            let h = record.h_out.index_axis(Axis(0), i);
            top.row_mut(i).assign(&h.dot(&rs[last].row(i)));
        }
        out_r.push(top);
        self.add_k_transpose(record, rows, &out_r, &out_p, out);
    }

    /// out += Σ_{i in chunk} K_iᵀ ρ_i with ρ_i given by its r rows (`out_r[l]`, b × n_l) and
    /// p rows (`out_p[l]`, b × n_{l−1}, empty for l = 0): the backward sweep
    /// λ_L = ρ_{r_L}, λ_{l−1} = ρ_{r_{l−1}} + s_{l−1} ⊙ W_lᵀ λ_l, weight λ_l a_{l−1}ᵀ + δ_l π_lᵀ,
    /// bias λ_l.
    fn add_k_transpose(
        &self,
        record: &ChunkRecord,
        rows: Range<usize>,
        out_r: &[Array2<f64>],
        out_p: &[Array2<f64>],
        out: &mut [f64],
    ) {
        let n_layers = self.mlp.n_layers();
        let mut lam = out_r[n_layers - 1].clone();
        for l in (0..n_layers).rev() {
            let a_in = self.layer_input(record, rows.clone(), l);
            let mut gw = lam.t().dot(&a_in);
            if l > 0 {
                gw += &record.deltas[l].t().dot(&out_p[l]);
            }
            let gb = lam.sum_axis(Axis(0));
            let off = self.offsets[l];
            let n_w = gw.len();
            for (o, g) in out[off..off + n_w].iter_mut().zip(gw.iter()) {
                *o += g;
            }
            for (o, g) in out[off + n_w..off + n_w + gb.len()].iter_mut().zip(gb.iter()) {
                *o += g;
            }
            if l > 0 {
                let mut next = lam.dot(self.mlp.layers()[l].weight());
                next *= &record.slopes[l - 1];
                next += &out_r[l - 1];
                lam = next;
            }
        }
    }

    /// Σ over chunks of `f(chunk_idx, rows, out)` (each `f` adds into a zeroed N-vector),
    /// chunks in parallel within groups of [`CHUNKS_PER_GROUP`], added in chunk order.
    fn reduce_chunks(
        &self,
        f: impl Fn(usize, &Range<usize>, &mut [f64]) -> Result<()> + Sync,
    ) -> Result<Vec<f64>> {
        let n = self.dim();
        let mut total = vec![0.0; n];
        let indices: Vec<usize> = (0..self.chunks.len()).collect();
        for group in indices.chunks(CHUNKS_PER_GROUP) {
            let parts: Vec<Vec<f64>> = group
                .par_iter()
                .map(|&chunk_idx| {
                    let mut part = vec![0.0; n];
                    f(chunk_idx, &self.chunks[chunk_idx], &mut part)?;
                    Ok(part)
                })
                .collect::<Result<_>>()?;
            for part in &parts {
                for (t, p) in total.iter_mut().zip(part) {
                    *t += p;
                }
            }
        }
        Ok(total)
    }
}

impl SymmetricOperator for BatchHessian<'_> {
    fn dim(&self) -> usize {
        self.mlp.n_params()
    }

    /// out ← H_B v (see the type docs, *Products*); counts one product.
    fn apply(&self, v: &[f64], out: &mut [f64]) -> Result<()> {
        check_apply_shapes(self.dim(), v, out)?;
        let sum = self.reduce_chunks(|chunk_idx, rows, part| {
            self.with_record(chunk_idx, |record| {
                self.add_chunk_hvp(record, rows.clone(), v, part);
                Ok(())
            })
        })?;
        let scale = 1.0 / self.n_samples() as f64;
        for (o, s) in out.iter_mut().zip(&sum) {
            *o = s * scale;
        }
        self.hvp_count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The exact spectrum of a [`BatchHessian`] ([`BatchHessian::exact_spectrum`]).
#[derive(Debug, Clone)]
pub struct BatchSpectrum {
    values: Array1<f64>,
    n_params: usize,
    vectors: Option<Array2<f64>>,
}

impl BatchSpectrum {
    /// The r eigenvalues on the range of 𝒦ᵀ (every non-zero eigenvalue of H_B, plus
    /// numerically zero ones in that range), ascending.
    pub fn eigenvalues(&self) -> ArrayView1<'_, f64> {
        self.values.view()
    }

    /// r, the number of eigenvalues on the range of 𝒦ᵀ (the rank of 𝒦).
    pub fn n_range(&self) -> usize {
        self.values.len()
    }

    /// N − r: the eigenvalues that are exactly zero (the null space of 𝒦).
    pub fn n_structural_zeros(&self) -> usize {
        self.n_params - self.values.len()
    }

    /// All N eigenvalues, ascending, the structural zeros included.
    pub fn eigenvalues_all(&self) -> Array1<f64> {
        let mut all = self.values.to_vec();
        all.resize(self.n_params, 0.0);
        all.sort_by(f64::total_cmp);
        Array1::from(all)
    }

    /// The inertia with [`ZERO_EIGENVALUE_RTOL`].
    pub fn inertia(&self) -> Inertia {
        Inertia::from_eigenvalues(
            self.values.iter().copied(),
            self.n_structural_zeros(),
            ZERO_EIGENVALUE_RTOL,
        )
    }

    /// The orthonormal eigenvectors (N × r, columns in the order of
    /// [`BatchSpectrum::eigenvalues`]) when they were requested.
    pub fn eigenvectors(&self) -> Option<ArrayView2<'_, f64>> {
        self.vectors.as_ref().map(|v| v.view())
    }
}

//! The fast layer-wise ESSO step (issue 9): batched forward and backward on the faer engine,
//! per-sample exact curvature without eigenvectors ([`LayerSolver`]), and the update applied
//! in place by one GEMM per layer from the rank-one factors u_{s,l} ã_sᵀ.
//!
//! Per sample, the pre-activation Hessians are carried down the network in the cheapest exact
//! form:
//!
//! ```text
//! H_L = Fᵀ F        F = diag(√p)(I − 1 pᵀ) (cross-entropy: Fᵀ F = diag(p) − p pᵀ), F = I (MSE)
//! Gram form:  H_{l+1} = G_{l+1}ᵀ G_{l+1}  ⇒  G_l = G_{l+1} W_{l+1} diag(s_l),
//!             H_l = G_lᵀ G_l + diag(c_l)   (Gram form again when c_l = 0: ReLU, identity)
//! factor form: H_{l+1} = Mᵀ diag(Σ) M + diag(c_{l+1})  ⇒
//!             M_l = [M W_{l+1}; W_{l+1}] diag(s_l),  Σ_l = [Σ; c_{l+1}],
//!             H_l = M_lᵀ diag(Σ_l) M_l + diag(c_l)
//! dense form: H_l = B_lᵀ H_{l+1} B_l + diag(c_l),  B_l = W_{l+1} diag(s_l)
//! ```
//!
//! The factor form starts where the Gram form ends (M = G, Σ = 1) and is kept while its cost
//! (rows(M) n_{l+1} n_l for M W_{l+1}, plus rows(M_l) n_l² / 2 for the lower triangle of
//! H_l) is below the dense form's two GEMMs (n_{l+1}² n_l + n_l² n_{l+1} multiply-adds): for
//! 784-128-64-10 with tanh, H_1 costs 0.08 M + 74 · 128² / 2 ≈ 0.7 M instead of 1.6 M.
//!
//! A layer in Gram form with r < n_l rows is solved by the reduced r × r problem, any other
//! by tridiagonalisation. Anything unusual (a non-finite value, a curvature error, bounds that
//! do not prove the in-place update finite) makes [`fast_step`] return `None` before the
//! network is touched, and the caller takes the general path, which reports the error.
#![allow(clippy::needless_range_loop, clippy::type_complexity)] // index-heavy numeric kernels

use esso_core::{Loss, Mlp, Targets, clean_simd_state};
use esso_hessian::{Inertia, LayerHessian, LayerSolver, SpectralFn, ZERO_EIGENVALUE_RTOL};
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{ArrayRef2, ArrayView1, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use crate::engine::{BatchEngine, max_abs, weight_ref, within_limit};

/// Per-thread buffers for one sample's curvature.
#[derive(Debug, Clone)]
pub(crate) struct CurvatureWorkspace {
    sizes: Vec<usize>,
    solvers: Vec<LayerSolver>,
    /// G of the current layer (r × n), and the next one.
    g: Vec<f64>,
    g_next: Vec<f64>,
    /// Dense H of the current layer (n × n) and of the one above.
    h: Vec<f64>,
    h_above: Vec<f64>,
    /// H_{l+1} B_l scratch.
    x: Vec<f64>,
    /// c_l and s_l, and c_{l+1} of the layer above.
    c: Vec<f64>,
    c_above: Vec<f64>,
    slopes: Vec<f64>,
    /// Σ of the weighted factor form H_l − diag(c_l) = Mᵀ diag(Σ) M (M in `g`).
    sigma: Vec<f64>,
    sigma_next: Vec<f64>,
    /// Block eigenvalues of the current layer.
    eig: Vec<f64>,
}

impl CurvatureWorkspace {
    pub(crate) fn new(mlp: &Mlp) -> Self {
        let sizes = mlp.sizes();
        let max = sizes.iter().copied().max().unwrap_or(0);
        CurvatureWorkspace {
            solvers: sizes[1..].iter().map(|&n| LayerSolver::new(n)).collect(),
            g: Vec::with_capacity(max * max),
            g_next: Vec::with_capacity(max * max),
            h: Vec::with_capacity(max * max),
            h_above: Vec::with_capacity(max * max),
            x: Vec::with_capacity(max * max),
            c: vec![0.0; max],
            c_above: vec![0.0; max],
            slopes: vec![0.0; max],
            sigma: Vec::with_capacity(2 * max),
            sigma_next: Vec::with_capacity(2 * max),
            eig: vec![0.0; max],
            sizes,
        }
    }

    pub(crate) fn fits(&self, mlp: &Mlp) -> bool {
        self.sizes == mlp.sizes()
    }
}

/// (min, max, n_negative) of one layer's block eigenvalues for one sample.
pub(crate) type LayerSummary = (f64, f64, usize);

/// One sample's factors u_l (written into `u[l]`) and per-layer eigenvalue summaries, or
/// `None` when anything is not finite or a solve fails (the general path then reports it).
fn sample_curvature(
    mlp: &Mlp,
    engine: &BatchEngine,
    s: usize,
    loss: Loss,
    f: &SpectralFn,
    ws: &mut CurvatureWorkspace,
    u: &mut [&mut [f64]],
    summaries: &mut [LayerSummary],
) -> Option<()> {
    let n_layers = mlp.n_layers();
    let last = n_layers - 1;
    let act = mlp.activation();
    let layers = mlp.layers();
    let n_classes = layers[last].n_outputs();
    // F with H_L = Fᵀ F (r = C rows).
    let logits = ArrayView1::from(engine.pre_activation(last, s));
    let r = n_classes;
    ws.g.clear();
    ws.g.resize(r * r, 0.0);
    match loss {
        Loss::CrossEntropy => {
            let lse = esso_core::log_sum_exp(&logits);
            if !lse.is_finite() {
                return None;
            }
            // p = softmax(z), in the c buffer (free until the hidden layers).
            let p = &mut ws.c[..r];
            for (p, &z) in p.iter_mut().zip(logits.iter()) {
                *p = (z - lse).exp();
            }
            for i in 0..r {
                let sq = p[i].sqrt();
                for j in 0..r {
                    ws.g[i * r + j] = sq * (if i == j { 1.0 } else { 0.0 } - p[j]);
                }
            }
        }
        Loss::Mse => {
            for i in 0..r {
                ws.g[i * r + i] = 1.0;
            }
        }
    }
    // The output layer: dense H_L (exactly as the second-order sweep writes it).
    ws.h.clear();
    ws.h.resize(r * r, 0.0);
    {
        let mut h = ArrayViewMut2::from_shape((r, r), &mut ws.h[..]).ok()?;
        loss.output_hessian_into(&logits, &mut h);
    }
    solve_layer(engine, s, last, f, ws, Form::Dense, u, summaries)?;
    // Down the hidden layers.
    let mut gram = true;
    // Rows of M when H_{l+1} − diag(c_{l+1}) = Mᵀ diag(Σ) M is known (M in `g`).
    let mut factor_rows: Option<usize> = None;
    // Whether `h` holds only the lower triangle of H_{l+1} (built in factor form).
    let mut h_lower_only = false;
    for l in (0..last).rev() {
        let next = &layers[l + 1];
        let (n_above, n) = (next.n_outputs(), next.n_inputs());
        let (z, a, back) = (engine.pre_activation(l, s), engine.input(l + 1, s), engine.back(l, s));
        let mut all_c_zero = true;
        for i in 0..n {
            let (d1, d2) = act.derivatives(z[i], a[i]);
            ws.c[i] = d2 * back[i];
            all_c_zero &= ws.c[i] == 0.0;
            ws.slopes[i] = d1;
        }
        let w = weight_ref(next);
        if gram {
            // G_l = G_{l+1} W_{l+1} diag(s_l), r × n. (Here and below, buffers that a
            // product then overwrites entirely with `Accum::Replace` are resized, not cleared.)
            ws.g_next.resize(r * n, 0.0);
            matmul(
                MatMut::from_row_major_slice_mut(&mut ws.g_next, r, n),
                Accum::Replace,
                MatRef::from_row_major_slice(&ws.g, r, n_above),
                w,
                1.0,
                Par::Seq,
            );
            clean_simd_state();
            for row in ws.g_next.chunks_exact_mut(n) {
                for (v, &sl) in row.iter_mut().zip(&ws.slopes[..n]) {
                    *v *= sl;
                }
            }
            std::mem::swap(&mut ws.g, &mut ws.g_next);
            if all_c_zero && r < n {
                solve_layer(engine, s, l, f, ws, Form::Gram(r), u, summaries)?;
                continue;
            }
            // Dense from the Gram form: H_l = G_lᵀ G_l + diag(c_l); the factor form starts
            // with M = G_l, Σ = 1.
            gram = false;
            factor_rows = Some(r);
            ws.sigma.clear();
            ws.sigma.resize(r, 1.0);
            ws.h.resize(n * n, 0.0);
            let gm = MatRef::from_row_major_slice(&ws.g, r, n);
            matmul(
                MatMut::from_row_major_slice_mut(&mut ws.h, n, n),
                Accum::Replace,
                gm.transpose(),
                gm,
                1.0,
                Par::Seq,
            );
            clean_simd_state();
        } else if let Some(rf) = factor_rows.filter(|&rf| {
            // Multiply-adds: M W_{l+1} and the lower triangle, against the dense two GEMMs.
            rf * n_above * n + (rf + n_above) * n * n / 2 < n_above * n * (n_above + n)
        }) {
            // Factor form: M_l = [M W_{l+1}; W_{l+1}] diag(s_l), Σ_l = [Σ; c_{l+1}],
            // H_l = M_lᵀ diag(Σ_l) M_l + diag(c_l), lower triangle only.
            let rows = rf + n_above;
            ws.g_next.resize(rows * n, 0.0);
            let (top, bottom) = ws.g_next.split_at_mut(rf * n);
            matmul(
                MatMut::from_row_major_slice_mut(top, rf, n),
                Accum::Replace,
                MatRef::from_row_major_slice(&ws.g, rf, n_above),
                w,
                1.0,
                Par::Seq,
            );
            clean_simd_state();
            for (i, row) in bottom.chunks_exact_mut(n).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = w[(i, j)];
                }
            }
            for row in ws.g_next.chunks_exact_mut(n) {
                for (v, &sl) in row.iter_mut().zip(&ws.slopes[..n]) {
                    *v *= sl;
                }
            }
            std::mem::swap(&mut ws.g, &mut ws.g_next);
            ws.sigma_next.clear();
            ws.sigma_next.extend_from_slice(&ws.sigma);
            ws.sigma_next.extend_from_slice(&ws.c_above[..n_above]);
            std::mem::swap(&mut ws.sigma, &mut ws.sigma_next);
            factor_rows = Some(rows);
            // Σ M in x.
            ws.x.resize(rows * n, 0.0);
            for ((dst, src), &sg) in
                ws.x.chunks_exact_mut(n).zip(ws.g.chunks_exact(n)).zip(&ws.sigma[..rows])
            {
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = v * sg;
                }
            }
            // Only the lower triangle is written below and read after: the upper one may
            // keep stale values (no clearing pass).
            ws.h.resize(n * n, 0.0);
            let m = MatRef::from_row_major_slice(&ws.g, rows, n);
            triangular::matmul(
                MatMut::from_row_major_slice_mut(&mut ws.h, n, n),
                BlockStructure::TriangularLower,
                Accum::Replace,
                m.transpose(),
                BlockStructure::Rectangular,
                MatRef::from_row_major_slice(&ws.x, rows, n),
                BlockStructure::Rectangular,
                1.0,
                Par::Seq,
            );
            clean_simd_state();
            // Only the lower triangle is set: enough for the solver; the dense branch below
            // mirrors it if the next layer needs all of H_{l+1}.
            h_lower_only = true;
        } else {
            // H_l = B_lᵀ H_{l+1} B_l + diag(c_l), B_l = W_{l+1} diag(s_l).
            factor_rows = None;
            if h_lower_only {
                let m = n_above;
                for i in 0..m {
                    for j in 0..i {
                        ws.h[j * m + i] = ws.h[i * m + j];
                    }
                }
                h_lower_only = false;
            }
            std::mem::swap(&mut ws.h, &mut ws.h_above);
            ws.x.resize(n_above * n, 0.0);
            matmul(
                MatMut::from_row_major_slice_mut(&mut ws.x, n_above, n),
                Accum::Replace,
                MatRef::from_row_major_slice(&ws.h_above, n_above, n_above),
                w,
                1.0,
                Par::Seq,
            );
            clean_simd_state();
            ws.h.resize(n * n, 0.0);
            matmul(
                MatMut::from_row_major_slice_mut(&mut ws.h, n, n),
                Accum::Replace,
                w.transpose(),
                MatRef::from_row_major_slice(&ws.x, n_above, n),
                1.0,
                Par::Seq,
            );
            clean_simd_state();
            for i in 0..n {
                for j in 0..n {
                    ws.h[i * n + j] *= ws.slopes[i] * ws.slopes[j];
                }
            }
        }
        for i in 0..n {
            ws.h[i * n + i] += ws.c[i];
        }
        solve_layer(engine, s, l, f, ws, Form::Dense, u, summaries)?;
        ws.c_above[..n].copy_from_slice(&ws.c[..n]);
    }
    Some(())
}

#[derive(Clone, Copy)]
enum Form {
    Dense,
    Gram(usize),
}

#[allow(clippy::too_many_arguments)]
fn solve_layer(
    engine: &BatchEngine,
    s: usize,
    l: usize,
    f: &SpectralFn,
    ws: &mut CurvatureWorkspace,
    form: Form,
    u: &mut [&mut [f64]],
    summaries: &mut [LayerSummary],
) -> Option<()> {
    let a = engine.input(l, s);
    let norm_sq = crate::engine::dot(a, a) + 1.0;
    let delta = ArrayView1::from(engine.delta(l, s));
    let n = delta.len();
    let eig = &mut ws.eig[..n];
    let solver = &mut ws.solvers[l];
    let (rows, data) = match form {
        Form::Dense => (n, &ws.h),
        Form::Gram(r) => (r, &ws.g),
    };
    let m = ArrayView2::from_shape((rows, n), &data[..rows * n]).ok()?;
    let hessian = match form {
        Form::Dense => LayerHessian::Dense(&m),
        Form::Gram(_) => LayerHessian::Gram(&m),
    };
    solver.solve(hessian, norm_sq, &delta, f, Some(l), u[l], eig).ok()?;
    if !u[l].iter().all(|v| v.is_finite()) {
        return None;
    }
    let negative = Inertia::from_eigenvalues(eig.iter().copied(), 0, ZERO_EIGENVALUE_RTOL).negative;
    summaries[l] = (eig[0], eig[n - 1], negative);
    Some(())
}

/// Buffers of the fast step, reused across steps.
#[derive(Debug, Clone, Default)]
pub(crate) struct FastWorkspace {
    engine: BatchEngine,
    /// u_l of every sample, B × n_l per layer.
    u: Vec<Vec<f64>>,
    /// Per sample, per layer eigenvalue summaries.
    summaries: Vec<LayerSummary>,
    pool: Vec<CurvatureWorkspace>,
    /// The inputs' Gram matrix of [`BatchEngine::outer_dots`] (B × B).
    gram: Vec<f64>,
}

/// What the fast step measured.
pub(crate) struct FastOutcome {
    pub(crate) loss: f64,
    pub(crate) grad_norm: f64,
    pub(crate) step_norm: f64,
    pub(crate) grad_dot_update: f64,
    /// Per layer (min, max, n_negative summed over the batch).
    pub(crate) layers: Vec<LayerSummary>,
}

/// The layer-wise ESSO step with one global λ, in place: `None` (network untouched) when the
/// general path must run instead. At B = 1 with `next_xs`, the update is fused with the
/// forward pass of `next_xs` ([`BatchEngine::update_and_forward_next`]).
pub(crate) fn fast_step(
    ws: &mut FastWorkspace,
    mlp: &mut Mlp,
    xs: &ArrayRef2<f64>,
    targets: Targets<'_>,
    loss: Loss,
    f: &SpectralFn,
    lr: f64,
    next_xs: Option<&ArrayRef2<f64>>,
) -> Option<FastOutcome> {
    let engine = &mut ws.engine;
    if engine.take_ahead(mlp, xs) {
        // The forward pass was done by the last step's fused update.
    } else if xs.nrows() == 1 {
        // Also sums θ² on its pass over W, for the in-place check below.
        engine.forward_single(mlp, xs).ok()?;
    } else {
        engine.forward(mlp, xs).ok()?;
    }
    let mean_loss = engine.losses_and_deltas(targets, loss).ok()?;
    if !mean_loss.is_finite() {
        return None;
    }
    engine.backward(mlp);
    let n_layers = mlp.n_layers();
    let b = xs.nrows();
    for l in 0..n_layers {
        let bound = engine.gradient_bound(l);
        if !within_limit(bound) {
            return None;
        }
    }
    let sizes = mlp.sizes();
    ws.u.resize(n_layers, Vec::new());
    for (l, u) in ws.u.iter_mut().enumerate() {
        u.resize(b * sizes[l + 1], 0.0);
    }
    ws.summaries.resize(b * n_layers, (0.0, 0.0, 0));
    // One workspace per worker; the samples are handed out one at a time from a shared
    // queue, so a worker that starts late (a parked thread, a busy core) takes fewer samples
    // instead of holding up the step. Each sample's result depends only on its inputs, not
    // on which workspace computes it.
    let n_workers = b.min(rayon::current_num_threads()).max(1);
    ws.pool.retain(|p| p.fits(mlp));
    while ws.pool.len() < n_workers {
        ws.pool.push(CurvatureWorkspace::new(mlp));
    }
    // Per sample: its index, its row of u in every layer and its summaries.
    let mut u_rows: Vec<_> =
        ws.u.iter_mut().enumerate().map(|(l, u)| u.chunks_mut(sizes[l + 1])).collect();
    let items: Vec<(usize, Vec<&mut [f64]>, &mut [LayerSummary])> = ws
        .summaries
        .chunks_mut(n_layers)
        .enumerate()
        .map(|(s, summaries)| {
            let rows = u_rows.iter_mut().filter_map(Iterator::next).collect();
            (s, rows, summaries)
        })
        .collect();
    let engine = &ws.engine;
    let mlp_ref: &Mlp = mlp;
    let queue = std::sync::Mutex::new(items.into_iter());
    let work = |cws: &mut CurvatureWorkspace| -> Option<()> {
        loop {
            let next = queue.lock().ok()?.next();
            let Some((s, mut rows, summaries)) = next else {
                return Some(());
            };
            sample_curvature(mlp_ref, engine, s, loss, f, cws, &mut rows, summaries)?;
        }
    };
    let ok = if n_workers == 1 {
        work(&mut ws.pool[0]).is_some()
    } else {
        ws.pool[..n_workers]
            .par_iter_mut()
            .map(work)
            .collect::<Vec<_>>()
            .iter()
            .all(Option::is_some)
    };
    if !ok {
        return None;
    }
    // Bounds for the in-place update W ← W − (η/B) Σ_s u_s ã_sᵀ.
    let engine = &ws.engine;
    let scale = lr / b as f64;
    let mut update_bound = 0.0f64;
    for l in 0..n_layers {
        let n = sizes[l + 1];
        let mut bound = 0.0;
        for s in 0..b {
            bound += max_abs(&ws.u[l][s * n..(s + 1) * n]) * max_abs(engine.input(l, s)).max(1.0);
        }
        if !within_limit(scale * bound) {
            return None;
        }
        update_bound = update_bound.max(scale * bound);
    }
    let params_bound = engine.params_in_place_bound(mlp)?;
    let inv_b2 = 1.0 / (b * b) as f64;
    let mut grad_sq = 0.0;
    let mut step_sq = 0.0;
    let mut grad_dot_update = 0.0;
    for l in 0..n_layers {
        let (d, u) = (engine.deltas(l), &ws.u[l]);
        let [dd, uu, du] = engine.outer_dots(l, d, u, &mut ws.gram);
        grad_sq += dd * inv_b2;
        step_sq += uu * scale * scale;
        grad_dot_update -= du * scale / b as f64;
    }
    let new_bound = params_bound + update_bound;
    let fused = next_xs.is_some_and(|next| {
        ws.engine.update_and_forward_next(-scale, Some(&ws.u), new_bound, mlp, next)
    });
    if !fused {
        ws.engine.add_scaled_outer_to(-scale, &ws.u, mlp.params_mut());
        ws.engine.carry_params_bound(new_bound, mlp);
    }
    let layers = (0..n_layers)
        .map(|l| {
            let mut acc = (f64::INFINITY, f64::NEG_INFINITY, 0);
            for s in 0..b {
                let (min, max, neg) = ws.summaries[s * n_layers + l];
                acc = (acc.0.min(min), acc.1.max(max), acc.2 + neg);
            }
            acc
        })
        .collect();
    Some(FastOutcome {
        loss: mean_loss,
        grad_norm: grad_sq.sqrt(),
        step_norm: step_sq.sqrt(),
        grad_dot_update,
        layers,
    })
}

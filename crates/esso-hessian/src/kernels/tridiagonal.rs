//! Eigendecomposition T = S Λ Sᵀ of a symmetric tridiagonal matrix by Cuppen's divide and
//! conquer, with S kept in factored form so that Sᵀ x and S y cost O(n²) without ever forming
//! the n×n eigenvector matrix.
//!
//! # The method
//! T (n×n, diagonal d, couplings e) is first scaled by its largest entry (as LAPACK's
//! `dstedc` does), then split recursively at the middle into a binary tree whose leaves
//! (size ≤ [`DEFAULT_LEAF_SIZE`]) are solved densely by the implicit QL iteration. At a node
//! of size m = m₁ + m₂ with coupling β between its halves,
//!
//! T = diag(T₁', T₂') + ρ v vᵀ,  ρ = |β|,  v = [e_{m₁}; sign(β) e_1],
//!
//! where T₁' and T₂' are the halves with their adjacent diagonal entries reduced by ρ. With the
//! children's T_i' = S_i Λ_i S_iᵀ,
//!
//! T = diag(S₁, S₂) (D + ρ z zᵀ) diag(S₁, S₂)ᵀ,  D = diag(Λ₁, Λ₂),
//! z = [last row of S₁; sign(β) first row of S₂].
//!
//! The merge (LAPACK `dlaed2`/`dlaed3`/`dlaed4`) normalises z (ρ ← ρ‖z‖²), sorts D, and
//! *deflates*: a component with ρ|z_i| ≤ tol leaves d_i an eigenvalue with eigenvector e_i,
//! and two close poles with |(d_j − d_i) c s| ≤ tol are rotated by a Givens rotation G so
//! that one z component vanishes (tol = 8 ε max(max|d|, max|z|), an absolute perturbation of
//! the scaled T). The k remaining eigenvalues are the roots of the secular equation
//!
//! w(λ) = 1/ρ + Σ_i z_i² / (d_i − λ) = 0,  d_j < λ_j < d_{j+1}  (λ_k < d_k + ρ‖z‖²),
//!
//! found with an origin shift to the nearer pole (so that every d_i − λ_j is known to high
//! relative accuracy as (d_i − d_origin) − τ) by the "middle way" rational interpolation of
//! `dlaed4`, safeguarded by a bracket and bisection. The eigenvectors of D + ρ z zᵀ are then
//! built by the Gu–Eisenstat formula from the *computed* roots,
//!
//! ẑ_i² = Π_j (λ_j − d_i) / Π_{j≠i} (d_j − d_i),  u_j = (ẑ_i / (d_i − λ_j))_i / ‖·‖,
//!
//! which makes U = [u_1 … u_k] orthogonal to working precision however close the roots are.
//! Each node therefore stores the rotations, the permutation separating non-deflated and
//! deflated coordinates, the k×k matrix U and the final sort of its eigenvalues; S is the
//! product of the node factors along the tree, and Sᵀ x is evaluated bottom-up (leaves first),
//! S y top-down. A node also keeps the first and last rows of its own S (the next z costs
//! O(m)).
//!
//! Cost for n = 128: the secular solves and U dominate `factor` (O(Σ k²) per level), an
//! application of S or Sᵀ is Σ over nodes of k² multiply-adds (≈ n² (1 + ½ + ¼ + …)),
//! SIMD-dispatched, with Uᵀx four columns at a time (four independent accumulators). The
//! merges are small (k ≤ 128), so the secular solver works *across roots*: L roots at once
//! (L = 4 f64 lanes with AVX2), one per SIMD lane, each lane running exactly the scalar
//! iteration's arithmetic with its branches as lane masks (bit-identical to the one-lane
//! solver); an evaluation then needs no horizontal reduction, and the per-iteration model,
//! bracket and convergence logic is shared by L roots. On the n = 128 use case a group of
//! four roots takes ≈ 5.8 evaluations (it runs until its slowest lane stops; ≈ 82 % of the
//! lane evaluations are needed ones). The divisions bound an evaluation, so the reciprocals
//! r_i = 1/(d_i − λ) come in pairs from one division, 1/x₀ = x₁/(x₀x₁) and 1/x₁ = x₀/(x₀x₁)
//! (≤ 1.5 ulp instead of 0.5; two divisions where the product would underflow or overflow):
//! half the divisions, `factor` 5–21 % faster (docs/performance.md). The leaves' QL
//! iterations are most of the rest of `factor`.

use crate::linalg::{RotationTarget, pythag, tridiagonal_ql};

/// The default largest leaf of the divide-and-conquer tree (leaves are solved by the QL
/// iteration with their eigenvector matrix formed explicitly).
pub const DEFAULT_LEAF_SIZE: usize = 8;

/// Iterations of the rational-interpolation root finder per secular root before the solver
/// falls back to pure bisection.
const MODEL_ITERATIONS: usize = 40;

/// Total iterations (model and bisection) allowed per secular root.
const MAX_SECULAR_ITERATIONS: usize = 400;

/// The widest SIMD register (in f64 lanes) the lane-parallel secular solver handles: the
/// size of its per-lane stack buffers and of the reciprocal scratch (`n` × this). Wider
/// registers (none of pulp's f64 vectors is) fall back to one root at a time.
const MAX_LANES: usize = 8;

/// Why [`TridiagonalEigen::factor`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TridiagonalError {
    /// The diagonal or the couplings contain a NaN or an infinity.
    #[error("the tridiagonal matrix has a non-finite entry")]
    NonFinite,
    /// The implicit QL iteration on a leaf block did not converge.
    #[error("the QL iteration on a leaf block of the divide and conquer did not converge")]
    LeafNoConvergence,
    /// The root finder of a secular equation did not converge.
    #[error("a root of the secular equation did not converge")]
    SecularNoConvergence,
}

/// A Givens rotation of coordinates (p, q) recorded at a deflation: Sᵀ applies
/// x_p ← c x_p + s x_q, x_q ← c x_q − s x_p.
#[derive(Debug, Clone, Copy, Default)]
struct Rot {
    p: usize,
    q: usize,
    c: f64,
    s: f64,
}

/// One node of the divide-and-conquer tree, covering rows lo..lo+m of T.
#[derive(Debug, Clone, Copy)]
struct Node {
    lo: usize,
    m: usize,
    /// The size of the left child (0 for a leaf).
    m1: usize,
    left: usize,
    right: usize,
    /// Offset of the node's matrix in `Factors::mats` (capacity m²): a leaf's eigenvector
    /// matrix, a merge's U (k×k), both stored column after column.
    mat: usize,
    /// The order of the stored matrix (m for a leaf, the non-deflated count for a merge).
    k: usize,
    /// Offset of the node's rotations in `Factors::rots` (capacity m).
    rot: usize,
    /// Number of deflation rotations.
    nrot: usize,
    /// Offset in `Factors::sel` and `Factors::out_src` (capacity m).
    idx: usize,
    /// Offset of the node's first row of S (m entries) then last row (m entries) in `rows`.
    rows: usize,
}

impl Node {
    fn is_leaf(&self) -> bool {
        self.m1 == 0
    }
}

/// The stored factors of S.
#[derive(Debug, Clone, Default)]
struct Factors {
    mats: Vec<f64>,
    rots: Vec<Rot>,
    /// Per merge node: the m child-order coordinates, non-deflated first (in the order of the
    /// poles of the secular equation), then deflated.
    sel: Vec<usize>,
    /// Per merge node: output position q (ascending eigenvalue) ← slot (0..k: roots,
    /// k..m: deflated).
    out_src: Vec<usize>,
}

/// Scratch vectors of length n.
#[derive(Debug, Clone, Default)]
struct Scratch {
    z: Vec<f64>,
    dmod: Vec<f64>,
    dl: Vec<f64>,
    zl: Vec<f64>,
    vals: Vec<f64>,
    dd: Vec<f64>,
    g: Vec<f64>,
    t1: Vec<f64>,
    t2: Vec<f64>,
    seg: Vec<f64>,
    /// The lane-parallel secular solver's reciprocals 1/(d_i − λ_j), k × lanes, i-major.
    lanes: Vec<f64>,
    perm: Vec<usize>,
    defl: Vec<usize>,
    /// Leaf QL: diagonal, couplings, row-major eigenvector matrix, sort order.
    leaf_d: Vec<f64>,
    leaf_e: Vec<f64>,
    leaf_z: Vec<f64>,
    leaf_order: Vec<usize>,
}

/// Reusable workspace for T = S Λ Sᵀ of a symmetric tridiagonal T of size n, by divide and
/// conquer, with S stored in factored form (see the [module docs](self)).
///
/// All buffers are allocated by [`TridiagonalEigen::new`]; [`factor`](Self::factor),
/// [`apply_st`](Self::apply_st) and [`apply_s`](Self::apply_s) do not allocate. Before the
/// first successful `factor` (or after a failed one) the workspace represents the zero matrix:
/// eigenvalues 0 and S = I.
#[derive(Debug, Clone)]
pub struct TridiagonalEigen {
    n: usize,
    leaf: usize,
    /// The tree in post-order (children before parents; the root is last).
    nodes: Vec<Node>,
    f: Factors,
    rows: Vec<f64>,
    /// Eigenvalues of the scaled T (node-local, ascending per node during `factor`).
    lam: Vec<f64>,
    /// Eigenvalues of T, ascending.
    values: Vec<f64>,
    /// The scaled and rank-one-modified diagonal and couplings.
    d: Vec<f64>,
    e: Vec<f64>,
    s: Scratch,
    factored: bool,
}

impl TridiagonalEigen {
    /// A workspace for matrices of size `n` with leaves of at most [`DEFAULT_LEAF_SIZE`].
    pub fn new(n: usize) -> Self {
        Self::with_leaf_size(n, DEFAULT_LEAF_SIZE)
    }

    /// A workspace for matrices of size `n` whose divide-and-conquer tree stops splitting at
    /// blocks of at most `leaf` rows (`leaf` is clamped to at least 1; `leaf ≥ n` is the plain
    /// QL iteration with explicit eigenvectors).
    pub fn with_leaf_size(n: usize, leaf: usize) -> Self {
        let leaf = leaf.max(1);
        let mut nodes = Vec::new();
        let mut sizes = Sizes::default();
        if n > 0 {
            build(0, n, leaf, &mut nodes, &mut sizes);
        }
        let lm = leaf.min(n);
        TridiagonalEigen {
            n,
            leaf,
            nodes,
            f: Factors {
                mats: vec![0.0; sizes.mats],
                rots: vec![Rot::default(); sizes.rots],
                sel: vec![0; sizes.idx],
                out_src: vec![0; sizes.idx],
            },
            rows: vec![0.0; sizes.rows],
            lam: vec![0.0; n],
            values: vec![0.0; n],
            d: vec![0.0; n],
            e: vec![0.0; n],
            s: Scratch {
                z: vec![0.0; n],
                dmod: vec![0.0; n],
                dl: vec![0.0; n],
                zl: vec![0.0; n],
                vals: vec![0.0; n],
                dd: vec![0.0; n],
                g: vec![0.0; n],
                t1: vec![0.0; n],
                t2: vec![0.0; n],
                seg: vec![0.0; n],
                lanes: vec![0.0; n * MAX_LANES],
                perm: vec![0; n],
                defl: vec![0; n],
                leaf_d: vec![0.0; lm],
                leaf_e: vec![0.0; lm],
                leaf_z: vec![0.0; lm * lm],
                leaf_order: vec![0; lm],
            },
            factored: false,
        }
    }

    /// The matrix size n.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The largest leaf block of the divide-and-conquer tree.
    pub fn leaf_size(&self) -> usize {
        self.leaf
    }

    /// Computes T = S Λ Sᵀ for the symmetric tridiagonal T with diagonal `d` (length n) and
    /// couplings `e`, `e[i]` = T_{i,i+1} = T_{i+1,i} (length n − 1, or n with `e[n−1]`
    /// ignored). The eigenvalues are accurate to a small multiple of ε ‖T‖ and S is orthogonal
    /// to working precision.
    ///
    /// # Errors
    /// [`TridiagonalError::NonFinite`] for a NaN or infinite entry;
    /// [`TridiagonalError::LeafNoConvergence`] or [`TridiagonalError::SecularNoConvergence`]
    /// if an iteration fails (not observed for finite input). On error the workspace
    /// represents the zero matrix.
    ///
    /// # Panics
    /// If `d.len() != n`, or `e.len()` is neither n − 1 nor n (0 when n = 0).
    pub fn factor(&mut self, d: &[f64], e: &[f64]) -> Result<(), TridiagonalError> {
        let n = self.n;
        assert_eq!(d.len(), n, "diagonal has the wrong length");
        assert!(
            e.len() == n || e.len() + 1 == n,
            "couplings must have length n − 1 or n (got {} for n = {n})",
            e.len()
        );
        self.factored = false;
        self.values.fill(0.0);
        if n == 0 {
            self.factored = true;
            return Ok(());
        }
        let ne = n - 1;
        if d.iter().chain(&e[..ne]).any(|v| !v.is_finite()) {
            return Err(TridiagonalError::NonFinite);
        }
        let scale = d.iter().chain(&e[..ne]).fold(0.0f64, |a, v| a.max(v.abs()));
        if scale == 0.0 {
            // The zero matrix: Λ = 0, S = I.
            self.set_identity();
            self.factored = true;
            return Ok(());
        }
        for (dst, src) in self.d.iter_mut().zip(d) {
            *dst = src / scale;
        }
        for (dst, src) in self.e[..ne].iter_mut().zip(e) {
            *dst = src / scale;
        }
        self.e[ne] = 0.0;
        // Rank-one tearing at every split point.
        for node in &self.nodes {
            if !node.is_leaf() {
                let split = node.lo + node.m1;
                let rho = self.e[split - 1].abs();
                self.d[split - 1] -= rho;
                self.d[split] -= rho;
            }
        }
        let root = self.nodes.len() - 1;
        for ni in 0..self.nodes.len() {
            let result = if self.nodes[ni].is_leaf() {
                self.solve_leaf(ni, ni == root)
            } else {
                self.merge(ni, ni == root)
            };
            if let Err(err) = result {
                self.values.fill(0.0);
                return Err(err);
            }
        }
        for (v, l) in self.values.iter_mut().zip(&self.lam) {
            *v = l * scale;
        }
        self.factored = true;
        Ok(())
    }

    /// The eigenvalues of the last factored T in ascending order (zeros before the first
    /// successful [`factor`](Self::factor)).
    pub fn eigenvalues(&self) -> &[f64] {
        &self.values
    }

    /// x ← Sᵀ x: the coordinates of x in the eigenbasis, in the order of
    /// [`eigenvalues`](Self::eigenvalues).
    ///
    /// # Panics
    /// If `x.len() != n`.
    pub fn apply_st(&mut self, x: &mut [f64]) {
        assert_eq!(x.len(), self.n, "vector has the wrong length");
        if !self.factored || self.n == 0 {
            return;
        }
        let Scratch { t1, t2, .. } = &mut self.s;
        let (nodes, f) = (&self.nodes[..], &self.f);
        pulp::Arch::new().dispatch(ApplyFactors { nodes, f, t1, t2, x, transpose: true });
    }

    /// y ← S y: the vector whose eigenbasis coordinates (in the order of
    /// [`eigenvalues`](Self::eigenvalues)) are y.
    ///
    /// # Panics
    /// If `y.len() != n`.
    pub fn apply_s(&mut self, y: &mut [f64]) {
        assert_eq!(y.len(), self.n, "vector has the wrong length");
        if !self.factored || self.n == 0 {
            return;
        }
        let Scratch { t1, t2, .. } = &mut self.s;
        let (nodes, f) = (&self.nodes[..], &self.f);
        pulp::Arch::new().dispatch(ApplyFactors { nodes, f, t1, t2, x: y, transpose: false });
    }

    /// The factors of S = I (every leaf matrix the identity, no deflation rotations, every
    /// merge fully deflated in order) and Λ = 0.
    fn set_identity(&mut self) {
        for node in &mut self.nodes {
            let m = node.m;
            if node.is_leaf() {
                let mat = &mut self.f.mats[node.mat..node.mat + m * m];
                mat.fill(0.0);
                for i in 0..m {
                    mat[i * m + i] = 1.0;
                }
            } else {
                node.k = 0;
                node.nrot = 0;
                for i in 0..m {
                    self.f.sel[node.idx + i] = i;
                    self.f.out_src[node.idx + i] = i;
                }
            }
        }
        self.lam.fill(0.0);
        self.values.fill(0.0);
    }

    /// Dense eigendecomposition of a leaf block by the QL iteration.
    fn solve_leaf(&mut self, ni: usize, is_root: bool) -> Result<(), TridiagonalError> {
        let node = self.nodes[ni];
        let (lo, m) = (node.lo, node.m);
        let sc = &mut self.s;
        let (ld, le) = (&mut sc.leaf_d[..m], &mut sc.leaf_e[..m]);
        ld.copy_from_slice(&self.d[lo..lo + m]);
        le.copy_from_slice(&self.e[lo..lo + m]);
        le[m - 1] = 0.0;
        let zb = &mut sc.leaf_z[..m * m];
        zb.fill(0.0);
        for i in 0..m {
            zb[i * m + i] = 1.0;
        }
        tridiagonal_ql(ld, le, &mut TransposedRows { data: zb, m })
            .map_err(|_| TridiagonalError::LeafNoConvergence)?;
        let order = &mut sc.leaf_order[..m];
        for (i, o) in order.iter_mut().enumerate() {
            *o = i;
        }
        order.sort_unstable_by(|&a, &b| ld[a].total_cmp(&ld[b]));
        let mat = &mut self.f.mats[node.mat..node.mat + m * m];
        for (jj, &col) in order.iter().enumerate() {
            self.lam[lo + jj] = ld[col];
            mat[jj * m..(jj + 1) * m].copy_from_slice(&zb[col * m..(col + 1) * m]);
        }
        if !is_root {
            let rows = &mut self.rows[node.rows..node.rows + 2 * m];
            for (jj, &col) in order.iter().enumerate() {
                rows[jj] = zb[col * m];
                rows[m + jj] = zb[col * m + m - 1];
            }
        }
        Ok(())
    }

    /// Merges the two children of node `ni`: deflation, secular equation, Gu–Eisenstat
    /// eigenvectors, final sort, and (below the root) the first and last rows of S.
    fn merge(&mut self, ni: usize, is_root: bool) -> Result<(), TridiagonalError> {
        let node = self.nodes[ni];
        let (lo, m, m1) = (node.lo, node.m, node.m1);
        let m2 = m - m1;
        let (left, right) = (self.nodes[node.left], self.nodes[node.right]);
        let beta = self.e[lo + m1 - 1];
        let mut rho = beta.abs();
        let sign = if beta < 0.0 { -1.0 } else { 1.0 };
        let sc = &mut self.s;

        // z = [last row of S₁; sign(β) first row of S₂], D = [Λ₁; Λ₂].
        let z = &mut sc.z[..m];
        z[..m1].copy_from_slice(&self.rows[left.rows + m1..left.rows + 2 * m1]);
        for (dst, src) in z[m1..].iter_mut().zip(&self.rows[right.rows..right.rows + m2]) {
            *dst = sign * src;
        }
        let dmod = &mut sc.dmod[..m];
        dmod.copy_from_slice(&self.lam[lo..lo + m]);

        // Merge the two ascending lists.
        let perm = &mut sc.perm[..m];
        let (mut i, mut j) = (0, m1);
        for p in perm.iter_mut() {
            if j >= m || (i < m1 && dmod[i] <= dmod[j]) {
                *p = i;
                i += 1;
            } else {
                *p = j;
                j += 1;
            }
        }

        // Normalise z (‖z‖² = 2 up to rounding): ρ z zᵀ is unchanged with ρ ← ρ ‖z‖².
        let zz: f64 = z.iter().map(|v| v * v).sum();
        let nz = zz.sqrt();
        for v in z.iter_mut() {
            *v /= nz;
        }
        rho *= zz;

        // Deflation (dlaed2).
        let dmax = dmod.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let zmax = z.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let tol = 8.0 * f64::EPSILON * dmax.max(zmax);
        let sel = &mut self.f.sel[node.idx..node.idx + m];
        let rots = &mut self.f.rots[node.rot..node.rot + m];
        let defl = &mut sc.defl[..m];
        let (mut k, mut nd, mut nrot) = (0, 0, 0);
        let mut prev: Option<usize> = None;
        for &q in perm.iter() {
            if rho * z[q].abs() <= tol {
                defl[nd] = q;
                nd += 1;
                continue;
            }
            let Some(p) = prev else {
                prev = Some(q);
                continue;
            };
            let tau = pythag(z[p], z[q]);
            let c = z[q] / tau;
            let s = -z[p] / tau;
            let t = dmod[q] - dmod[p];
            if (t * c * s).abs() <= tol {
                z[q] = tau;
                z[p] = 0.0;
                rots[nrot] = Rot { p, q, c, s };
                nrot += 1;
                let (c2, s2) = (c * c, s * s);
                let dp = dmod[p] * c2 + dmod[q] * s2;
                dmod[q] = dmod[p] * s2 + dmod[q] * c2;
                dmod[p] = dp;
                defl[nd] = p;
                nd += 1;
            } else {
                sel[k] = p;
                k += 1;
            }
            prev = Some(q);
        }
        if let Some(p) = prev {
            sel[k] = p;
            k += 1;
        }
        sel[k..].copy_from_slice(&defl[..nd]);
        debug_assert_eq!(k + nd, m);
        self.nodes[ni].k = k;
        self.nodes[ni].nrot = nrot;

        // The non-deflated secular problem.
        let dl = &mut sc.dl[..k];
        let zl = &mut sc.zl[..k];
        for ((dv, zv), &q) in dl.iter_mut().zip(zl.iter_mut()).zip(sel[..k].iter()) {
            *dv = dmod[q];
            *zv = z[q];
        }
        let zzl: f64 = zl.iter().map(|v| v * v).sum();
        let vals = &mut sc.vals[..m];
        let u = &mut self.f.mats[node.mat..node.mat + k * k];
        // Runtime SIMD dispatch (AVX2 + FMA where available) of the O(k²) work.
        pulp::Arch::new().dispatch(SecularMerge {
            d: dl,
            z: zl,
            rho,
            zz: zzl,
            u,
            roots: &mut vals[..k],
            dd: &mut sc.dd[..k],
            h: &mut sc.g[..k],
            lanes: &mut sc.lanes[..k * MAX_LANES],
        })?;

        // Final order: roots and deflated values, ascending.
        for (v, &q) in vals[k..].iter_mut().zip(&sel[k..]) {
            *v = dmod[q];
        }
        let out = &mut self.f.out_src[node.idx..node.idx + m];
        for (i, o) in out.iter_mut().enumerate() {
            *o = i;
        }
        out.sort_unstable_by(|&a, &b| vals[a].total_cmp(&vals[b]));
        for (l, &src) in self.lam[lo..lo + m].iter_mut().zip(out.iter()) {
            *l = vals[src];
        }

        if !is_root {
            let node = self.nodes[ni];
            let seg = &mut sc.seg[..m];
            seg.fill(0.0);
            seg[..m1].copy_from_slice(&self.rows[left.rows..left.rows + m1]);
            let (f, t1, t2) = (&self.f, &mut sc.t1[..], &mut sc.t2[..]);
            pulp::Arch::new().dispatch(NodeSt { node: &node, f, x: seg, t1, t2 });
            self.rows[node.rows..node.rows + m].copy_from_slice(seg);
            seg.fill(0.0);
            seg[m1..].copy_from_slice(&self.rows[right.rows + m2..right.rows + 2 * m2]);
            let (f, t1, t2) = (&self.f, &mut sc.t1[..], &mut sc.t2[..]);
            pulp::Arch::new().dispatch(NodeSt { node: &node, f, x: seg, t1, t2 });
            self.rows[node.rows + m..node.rows + 2 * m].copy_from_slice(seg);
        }
        Ok(())
    }
}

/// Sᵀ x (`transpose`: the nodes bottom-up) or S x (top-down) from the stored factors, as one
/// operation for [`pulp::Arch::dispatch`] (the O(k²) products vectorised for AVX2 + FMA where
/// available; [`mat_t_vec`] sums in a different order with and without, so the last bits of
/// the results depend on the CPU).
struct ApplyFactors<'a> {
    nodes: &'a [Node],
    f: &'a Factors,
    t1: &'a mut [f64],
    t2: &'a mut [f64],
    x: &'a mut [f64],
    transpose: bool,
}

impl pulp::WithSimd for ApplyFactors<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let ApplyFactors { nodes, f, t1, t2, x, transpose } = self;
        if transpose {
            for node in nodes {
                let seg = &mut x[node.lo..node.lo + node.m];
                if node.is_leaf() {
                    leaf_st(simd, node, f, seg, t1);
                } else {
                    node_st(simd, node, f, seg, t1, t2);
                }
            }
        } else {
            for node in nodes.iter().rev() {
                let seg = &mut x[node.lo..node.lo + node.m];
                if node.is_leaf() {
                    leaf_s(node, f, seg, t1);
                } else {
                    node_s(node, f, seg, t1, t2);
                }
            }
        }
    }
}

/// [`node_st`] of one merge node, as one operation for [`pulp::Arch::dispatch`].
struct NodeSt<'a> {
    node: &'a Node,
    f: &'a Factors,
    x: &'a mut [f64],
    t1: &'a mut [f64],
    t2: &'a mut [f64],
}

impl pulp::WithSimd for NodeSt<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        node_st(simd, self.node, self.f, self.x, self.t1, self.t2);
    }
}

/// The roots of a merge's secular equation and its eigenvector matrix U (column j in
/// `u[j k..(j + 1) k]`), as one operation for [`pulp::Arch::dispatch`].
struct SecularMerge<'a> {
    d: &'a [f64],
    z: &'a [f64],
    rho: f64,
    zz: f64,
    u: &'a mut [f64],
    roots: &'a mut [f64],
    dd: &'a mut [f64],
    h: &'a mut [f64],
    lanes: &'a mut [f64],
}

impl pulp::WithSimd for SecularMerge<'_> {
    type Output = Result<(), TridiagonalError>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> Self::Output {
        secular_roots(
            simd, self.d, self.z, self.rho, self.zz, self.u, self.roots, self.dd, self.lanes,
        )?;
        gu_eisenstat(self.d, self.z, self.u, self.h);
        Ok(())
    }
}

/// Storage sizes of the factors.
#[derive(Debug, Default)]
struct Sizes {
    mats: usize,
    rots: usize,
    idx: usize,
    rows: usize,
}

/// Appends the subtree of rows lo..lo+m in post-order; returns its root's index.
fn build(lo: usize, m: usize, leaf: usize, nodes: &mut Vec<Node>, sizes: &mut Sizes) -> usize {
    let (m1, left, right) = if m <= leaf {
        (0, 0, 0)
    } else {
        let m1 = m / 2;
        let left = build(lo, m1, leaf, nodes, sizes);
        let right = build(lo + m1, m - m1, leaf, nodes, sizes);
        (m1, left, right)
    };
    let node = Node {
        lo,
        m,
        m1,
        left,
        right,
        mat: sizes.mats,
        k: m,
        rot: sizes.rots,
        nrot: 0,
        idx: sizes.idx,
        rows: sizes.rows,
    };
    sizes.mats += m * m;
    sizes.rows += 2 * m;
    if m1 > 0 {
        sizes.rots += m;
        sizes.idx += m;
    }
    nodes.push(node);
    nodes.len() - 1
}

/// Σ a_i b_i with four independent accumulators (vectorisable).
#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ac, bc) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ar.iter().zip(br) {
        tail += x * y;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// out ← Σ_j t_j c_j for the columns c_j of a column-major k×k matrix (one pass over `out`
/// per column: measured faster than four columns per pass; vectorised by the compiler inside
/// [`ApplyFactors`]'s dispatch).
#[inline(always)]
fn mat_vec(cols: &[f64], k: usize, t: &[f64], out: &mut [f64]) {
    let out = &mut out[..k];
    out.fill(0.0);
    for (col, &tj) in cols.chunks_exact(k).zip(t) {
        for (o, c) in out.iter_mut().zip(col) {
            *o += tj * c;
        }
    }
}

/// out_j ← c_jᵀ x for the columns c_j of a column-major k×k matrix, four columns at a time
/// (four independent accumulators sharing the loads of x; one accumulator chain per column
/// would bound the loop by the latency of its additions).
#[inline(always)]
fn mat_t_vec<S: pulp::Simd>(simd: S, cols: &[f64], k: usize, x: &[f64], out: &mut [f64]) {
    let x = &x[..k];
    let (xh, xt) = S::as_simd_f64s(x);
    let blocks = cols[..k * k].chunks_exact(4 * k);
    let rest = blocks.remainder();
    let mut j = 0;
    for blk in blocks {
        let (c0, r) = blk.split_at(k);
        let (c1, r) = r.split_at(k);
        let (c2, c3) = r.split_at(k);
        let ((h0, t0), (h1, t1)) = (S::as_simd_f64s(c0), S::as_simd_f64s(c1));
        let ((h2, t2), (h3, t3)) = (S::as_simd_f64s(c2), S::as_simd_f64s(c3));
        let n = xh.len();
        let (h0, h1, h2, h3) = (&h0[..n], &h1[..n], &h2[..n], &h3[..n]);
        let zero = simd.splat_f64s(0.0);
        let mut a = [zero; 4];
        for (i, &xv) in xh.iter().enumerate() {
            a[0] = simd.mul_add_e_f64s(h0[i], xv, a[0]);
            a[1] = simd.mul_add_e_f64s(h1[i], xv, a[1]);
            a[2] = simd.mul_add_e_f64s(h2[i], xv, a[2]);
            a[3] = simd.mul_add_e_f64s(h3[i], xv, a[3]);
        }
        let mut sum = a.map(|a| simd.reduce_sum_f64s(a));
        for (i, &xv) in xt.iter().enumerate() {
            sum[0] += t0[i] * xv;
            sum[1] += t1[i] * xv;
            sum[2] += t2[i] * xv;
            sum[3] += t3[i] * xv;
        }
        out[j..j + 4].copy_from_slice(&sum);
        j += 4;
    }
    for col in rest.chunks_exact(k) {
        out[j] = dot(col, x);
        j += 1;
    }
}

/// Leaf: x ← Zᵀ x.
#[inline(always)]
fn leaf_st<S: pulp::Simd>(simd: S, node: &Node, f: &Factors, x: &mut [f64], t1: &mut [f64]) {
    let m = node.m;
    mat_t_vec(simd, &f.mats[node.mat..node.mat + m * m], m, x, t1);
    x.copy_from_slice(&t1[..m]);
}

/// Leaf: y ← Z y.
#[inline(always)]
fn leaf_s(node: &Node, f: &Factors, y: &mut [f64], t1: &mut [f64]) {
    let m = node.m;
    mat_vec(&f.mats[node.mat..node.mat + m * m], m, y, t1);
    y.copy_from_slice(&t1[..m]);
}

/// Merge node: x ← Mᵀ x, where the node's S = diag(S₁, S₂) M and x holds child coordinates.
#[inline(always)]
fn node_st<S: pulp::Simd>(
    simd: S,
    node: &Node,
    f: &Factors,
    x: &mut [f64],
    t1: &mut [f64],
    t2: &mut [f64],
) {
    let (m, k) = (node.m, node.k);
    for r in &f.rots[node.rot..node.rot + node.nrot] {
        let (a, b) = (x[r.p], x[r.q]);
        x[r.p] = r.c * a + r.s * b;
        x[r.q] = r.c * b - r.s * a;
    }
    let (t1, t2) = (&mut t1[..m], &mut t2[..m]);
    for (t, &i) in t1.iter_mut().zip(&f.sel[node.idx..node.idx + m]) {
        *t = x[i];
    }
    if k > 0 {
        mat_t_vec(simd, &f.mats[node.mat..node.mat + k * k], k, t1, t2);
    }
    t2[k..].copy_from_slice(&t1[k..]);
    for (v, &src) in x.iter_mut().zip(&f.out_src[node.idx..node.idx + m]) {
        *v = t2[src];
    }
}

/// Merge node: y ← M y (the inverse of [`node_st`]).
#[inline(always)]
fn node_s(node: &Node, f: &Factors, y: &mut [f64], t1: &mut [f64], t2: &mut [f64]) {
    let (m, k) = (node.m, node.k);
    let (t1, t2) = (&mut t1[..m], &mut t2[..m]);
    for (v, &src) in y.iter().zip(&f.out_src[node.idx..node.idx + m]) {
        t2[src] = *v;
    }
    if k > 0 {
        mat_vec(&f.mats[node.mat..node.mat + k * k], k, t2, t1);
    }
    t1[k..].copy_from_slice(&t2[k..]);
    for (t, &i) in t1.iter().zip(&f.sel[node.idx..node.idx + m]) {
        y[i] = *t;
    }
    for r in f.rots[node.rot..node.rot + node.nrot].iter().rev() {
        let (a, b) = (y[r.p], y[r.q]);
        y[r.p] = r.c * a - r.s * b;
        y[r.q] = r.s * a + r.c * b;
    }
}

/// Pair products |x_i x_j| below this are not inverted (two divisions instead): 2⁻¹⁰⁰⁰.
const PAIR_MIN: f64 = f64::from_bits((1023 - 1000) << 52);
/// Pair products |x_i x_j| above this are not inverted (two divisions instead): 2¹⁰⁰⁰.
const PAIR_MAX: f64 = f64::from_bits((1023 + 1000) << 52);

/// The reciprocals of two numbers from one division: with q = 1/(x₀ x₁), 1/x₀ = q x₁ and
/// 1/x₁ = q x₀, each within 1.5 ulp + O(ε²) (three roundings: the product, the quotient and
/// the last product) instead of the 0.5 ulp of a division, for half the divisions, which
/// bound the secular evaluations. Also returns |x₀ x₁|: the pair is valid when it lies in
/// [`PAIR_MIN`], [`PAIR_MAX`] (no underflow or overflow in the product or its reciprocal);
/// [`recip_pair_checked`] falls back to two divisions otherwise.
#[inline(always)]
fn recip_pair<S: pulp::Simd>(simd: S, x0: S::f64s, x1: S::f64s) -> (S::f64s, S::f64s, S::f64s) {
    let prod = simd.mul_f64s(x0, x1);
    let q = simd.div_f64s(simd.splat_f64s(1.0), prod);
    (simd.mul_f64s(q, x1), simd.mul_f64s(q, x0), simd.abs_f64s(prod))
}

/// [`recip_pair`] where the pair is valid, two divisions where it is not (per lane).
#[inline(always)]
fn recip_pair_checked<S: pulp::Simd>(simd: S, x0: S::f64s, x1: S::f64s) -> (S::f64s, S::f64s) {
    let (r0, r1, mag) = recip_pair(simd, x0, x1);
    let valid = simd.and_m64s(
        simd.greater_than_or_equal_f64s(mag, simd.splat_f64s(PAIR_MIN)),
        simd.less_than_or_equal_f64s(mag, simd.splat_f64s(PAIR_MAX)),
    );
    let one = simd.splat_f64s(1.0);
    (
        simd.select_f64s(valid, r0, simd.div_f64s(one, x0)),
        simd.select_f64s(valid, r1, simd.div_f64s(one, x1)),
    )
}

/// Sets r_i = 1/(dd_i − τ) and returns (Σ z_i² r_i, Σ (z_i r_i)²) over i ≤ p and over i > p,
/// in SIMD registers of `simd`.
///
/// The reciprocals come in pairs from one division ([`recip_pair_checked`]): with L the
/// lanes of `S::f64s`, the SIMD vectors of `dd` are taken two at a time, pairing entry i with
/// entry i + L; an odd last vector and the entries past the last whole vector are divided
/// directly. With `pulp::Scalar` (L = 1) the pairs are (0, 1), (2, 3), …, as in
/// [`group_eval`], so that the lane-parallel solver reproduces this one bit for bit.
#[inline(always)]
fn secular_eval<S: pulp::Simd>(
    simd: S,
    tau: f64,
    dd: &[f64],
    z: &[f64],
    r: &mut [f64],
    p: usize,
) -> [f64; 4] {
    {
        let (dh, dt) = S::as_simd_f64s(dd);
        let (rh, rt) = S::as_mut_simd_f64s(r);
        let (one, vtau) = (simd.splat_f64s(1.0), simd.splat_f64s(tau));
        let mut pairs = dh.chunks_exact(2);
        let mut rpairs = rh.chunks_exact_mut(2);
        for (dv, rv) in (&mut pairs).zip(&mut rpairs) {
            let x0 = simd.sub_f64s(dv[0], vtau);
            let x1 = simd.sub_f64s(dv[1], vtau);
            (rv[0], rv[1]) = recip_pair_checked(simd, x0, x1);
        }
        for (dv, rv) in pairs.remainder().iter().zip(rpairs.into_remainder()) {
            *rv = simd.div_f64s(one, simd.sub_f64s(*dv, vtau));
        }
        for (dv, rv) in dt.iter().zip(rt) {
            *rv = 1.0 / (dv - tau);
        }
    }
    #[inline(always)]
    fn part<S: pulp::Simd>(simd: S, z: &[f64], r: &[f64]) -> (f64, f64) {
        let (zh, zt) = S::as_simd_f64s(z);
        let (rh, rt) = S::as_simd_f64s(r);
        let (mut s, mut ds) = (simd.splat_f64s(0.0), simd.splat_f64s(0.0));
        for (&zv, &ri) in zh.iter().zip(rh) {
            let t = simd.mul_f64s(zv, ri);
            s = simd.mul_add_f64s(zv, t, s);
            ds = simd.mul_add_f64s(t, t, ds);
        }
        let (mut st, mut dst) = (simd.reduce_sum_f64s(s), simd.reduce_sum_f64s(ds));
        for (&zv, &ri) in zt.iter().zip(rt) {
            let t = zv * ri;
            st += zv * t;
            dst += t * t;
        }
        (st, dst)
    }
    let (psi, dpsi) = part(simd, &z[..=p], &r[..=p]);
    let (phi, dphi) = part(simd, &z[p + 1..], &r[p + 1..]);
    [psi, dpsi, phi, dphi]
}

/// The j-th root (ascending, 0-based) of w(λ) = 1/ρ + Σ_i z_i²/(d_i − λ) for strictly
/// increasing `d` (length k ≥ 1), z_i ≠ 0 and ρ > 0; `zz` = Σ z_i². On return
/// `recip[i]` = 1/(d_i − λ_j), where d_i − λ_j is computed as (d_i − d_o) − τ with d_o the
/// pole nearer the root and λ_j = d_o + τ, so that every difference has a small relative
/// error. `dd` is scratch of length k.
///
/// This follows LAPACK's `dlaed4`: one evaluation at the middle of the root's interval picks
/// the origin d_o and the half-interval bracket, and gives the initial guess (the root of the
/// two nearest poles' terms plus the rest as a constant); then the "middle way" iteration —
/// ψ = Σ_{i≤p} and φ = Σ_{i>p} (p = j, or k − 2 for the last root) each replaced by a
/// constant plus one pole at d_p or d_{p+1}, matching value and derivative, and the model's
/// root taken — with a step in the wrong direction replaced by a Newton step and a step
/// leaving the bracket by bisection (pure bisection after [`MODEL_ITERATIONS`]). It stops
/// when |w| ≤ ε (8 (|ψ| + |φ|) + 2/ρ + |τ| w'), the rounding level of w, or when the bracket has
/// collapsed to adjacent floating-point numbers.
#[inline(always)]
fn secular_root<S: pulp::Simd>(
    simd: S,
    j: usize,
    d: &[f64],
    z: &[f64],
    rho: f64,
    zz: f64,
    recip: &mut [f64],
    dd: &mut [f64],
) -> Result<f64, TridiagonalError> {
    let k = d.len();
    if k == 1 {
        let tau = rho * z[0] * z[0];
        recip[0] = -1.0 / tau;
        return Ok(d[0] + tau);
    }
    let eps = f64::EPSILON;
    let rhoinv = 1.0 / rho;
    let p = j.min(k - 2);
    let last = j == k - 1;
    let (origin, mut lo, mut hi, mut tau);
    if last {
        // λ ∈ (d_{k−1}, d_{k−1} + ρ‖z‖²].
        origin = k - 1;
        for (x, &di) in dd.iter_mut().zip(d) {
            *x = di - d[origin];
        }
        (lo, hi) = (0.0, rho * zz * (1.0 + 4.0 * eps));
        let mid = 0.5 * hi;
        let [psi, _, phi, _] = secular_eval(simd, mid, dd, z, recip, p);
        let w = rhoinv + psi + phi;
        let (za, zb) = (z[k - 2] * z[k - 2], z[k - 1] * z[k - 1]);
        let del = -dd[k - 2];
        let c = w - za / (dd[k - 2] - mid) + zb / mid;
        if w <= 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
        tau = hi;
        if c > 0.0 {
            // c − z_a²/(δ + τ) − z_b²/τ = 0: c τ² − a τ − b = 0, positive root.
            let a = -c * del + za + zb;
            let b = zb * del;
            let disc = (a * a + 4.0 * b * c).abs().sqrt();
            tau = if a < 0.0 { 2.0 * b / (disc - a) } else { (a + disc) / (2.0 * c) };
        }
        if !(tau > lo && tau <= hi) {
            tau = lo + 0.5 * (hi - lo);
        }
    } else {
        // λ ∈ (d_j, d_{j+1}); the sign of w at the midpoint gives the nearer pole.
        let del = d[j + 1] - d[j];
        let mid = 0.5 * del;
        for (x, &di) in dd.iter_mut().zip(d) {
            *x = di - d[j];
        }
        let [psi, _, phi, _] = secular_eval(simd, mid, dd, z, recip, p);
        let w = rhoinv + psi + phi;
        let (za, zb) = (z[j] * z[j], z[j + 1] * z[j + 1]);
        let c = w + za / mid - zb / (del - mid);
        if w >= 0.0 {
            origin = j;
            (lo, hi) = (0.0, mid);
            // c − z_a²/τ + z_b²/(δ − τ) = 0: c τ² − a τ + b = 0, root in (0, δ).
            let a = c * del + za + zb;
            let b = za * del;
            let disc = (a * a - 4.0 * b * c).abs().sqrt();
            tau = if a > 0.0 { 2.0 * b / (a + disc) } else { (a - disc) / (2.0 * c) };
        } else {
            origin = j + 1;
            for (x, &di) in dd.iter_mut().zip(d) {
                *x = di - d[origin];
            }
            (lo, hi) = (-mid, 0.0);
            // c − z_a²/(δ + τ) − z_b²/τ = 0: c τ² − a τ − b = 0, root in (−δ, 0).
            let a = -c * del + za + zb;
            let b = zb * del;
            let disc = (a * a + 4.0 * b * c).abs().sqrt();
            tau = if a > 0.0 { -2.0 * b / (a + disc) } else { (a - disc) / (2.0 * c) };
        }
        if !(tau > lo && tau < hi) {
            tau = lo + 0.5 * (hi - lo);
        }
    }
    let mut sums = secular_eval(simd, tau, dd, z, recip, p);
    let mut iterations = 0;
    loop {
        let [psi, dpsi, phi, dphi] = sums;
        let w = rhoinv + psi + phi;
        let dw = dpsi + dphi;
        let erretm = 8.0 * (psi.abs() + phi.abs()) + 2.0 * rhoinv + tau.abs() * dw;
        if w.abs() <= eps * erretm {
            break;
        }
        if w > 0.0 {
            hi = tau;
        } else {
            lo = tau;
        }
        if hi - lo <= 2.0 * eps * lo.abs().max(hi.abs()) {
            break;
        }
        iterations += 1;
        if iterations > MAX_SECULAR_ITERATIONS {
            return Err(TridiagonalError::SecularNoConvergence);
        }
        let mut eta = f64::NAN;
        if iterations <= MODEL_ITERATIONS {
            let (d1, d2) = (dd[p] - tau, dd[p + 1] - tau);
            let c = w - d1 * dpsi - d2 * dphi;
            let a = (d1 + d2) * w - d1 * d2 * dw;
            let b = d1 * d2 * w;
            let disc = (a * a - 4.0 * b * c).abs().sqrt();
            eta = if !last {
                if a <= 0.0 { (a - disc) / (2.0 * c) } else { 2.0 * b / (a + disc) }
            } else if c <= 0.0 {
                -w / dw
            } else if a >= 0.0 {
                (a + disc) / (2.0 * c)
            } else {
                2.0 * b / (a - disc)
            };
            if w * eta >= 0.0 {
                eta = -w / dw;
            }
        }
        let mut next = tau + eta;
        if !(next > lo && next < hi) {
            next = lo + 0.5 * (hi - lo);
        }
        if next == tau {
            break;
        }
        tau = next;
        sums = secular_eval(simd, tau, dd, z, recip, p);
    }
    Ok(d[origin] + tau)
}

/// All k roots of w(λ) = 1/ρ + Σ_i z_i²/(d_i − λ) (the conditions of [`secular_root`]):
/// `roots[j]` = λ_j and row j of the k×k buffer `u` (`u[j k..(j + 1) k]`) = (1/(d_i − λ_j))_i,
/// exactly as [`secular_root`] leaves them. `dd` is scratch of length k, `lanes` of length
/// k × [`MAX_LANES`].
///
/// The roots j < k − 1 are found L at a time, one per SIMD lane (L = lanes of `S::f64s`), by
/// [`secular_group`]; the last root (bracket (0, ρ‖z‖²]) by [`secular_root`]. Every lane runs
/// the same operations in the same order as [`secular_root`] with `pulp::Scalar` (each lane's
/// sums ψ and φ accumulate i = 0, 1, … one fused multiply-add at a time), so the results are
/// those of the scalar solver bit for bit, whatever the instruction set.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn secular_roots<S: pulp::Simd>(
    simd: S,
    d: &[f64],
    z: &[f64],
    rho: f64,
    zz: f64,
    u: &mut [f64],
    roots: &mut [f64],
    dd: &mut [f64],
    lanes: &mut [f64],
) -> Result<(), TridiagonalError> {
    let k = d.len();
    let l = S::F64_LANES;
    // Roots 0..grouped go lane-parallel.
    let grouped = if k >= 2 && l <= MAX_LANES { k - 1 } else { 0 };
    let mut lam = [0.0; MAX_LANES];
    for j0 in (0..grouped).step_by(l.max(1)) {
        let scratch = &mut lanes[..k * l];
        let (r, _) = S::as_mut_simd_f64s(scratch);
        let v = secular_group(simd, j0, d, z, rho, r)?;
        S::as_mut_simd_f64s(&mut lam[..l]).0[0] = v;
        let width = l.min(grouped - j0);
        roots[j0..j0 + width].copy_from_slice(&lam[..width]);
        for (lane, row) in u[j0 * k..(j0 + width) * k].chunks_exact_mut(k).enumerate() {
            for (dst, src) in row.iter_mut().zip(scratch.chunks_exact(l)) {
                *dst = src[lane];
            }
        }
    }
    for j in grouped..k {
        roots[j] = secular_root(simd, j, d, z, rho, zz, &mut u[j * k..(j + 1) * k], dd)?;
    }
    Ok(())
}

/// One evaluation of the secular sums for a group of roots, one root per lane: lane l has
/// origin d_o (`origin`), offset τ (`tau`) and split index p (`p`, as f64); sets
/// `r[i]` = 1/((d_i − d_o) − τ) and returns (Σ_{i≤p} z_i² r_i, Σ_{i≤p} (z_i r_i)²,
/// Σ_{i>p} z_i² r_i, Σ_{i>p} (z_i r_i)²) per lane. `pmin..=pmax` spans the lanes' p, so
/// only the pairs that reach into it need a per-lane choice between ψ and φ.
///
/// The reciprocals come in pairs (0, 1), (2, 3), … from one division each
/// ([`recip_pair`]), the last alone when k is odd, exactly as [`secular_eval`] forms them
/// with `pulp::Scalar`. The fast pass assumes every pair valid and checks afterwards; in the
/// (never observed) case that a product left [`PAIR_MIN`], [`PAIR_MAX`] the evaluation is
/// redone with [`recip_pair_checked`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn group_eval<S: pulp::Simd>(
    simd: S,
    d: &[f64],
    z: &[f64],
    origin: S::f64s,
    tau: S::f64s,
    p: S::f64s,
    range: (usize, usize),
    r: &mut [S::f64s],
) -> [S::f64s; 4] {
    let (sums, lo, hi) = group_eval_with::<S, false>(simd, d, z, origin, tau, p, range, r);
    if simd.reduce_min_f64s(lo) >= PAIR_MIN && simd.reduce_max_f64s(hi) <= PAIR_MAX {
        sums
    } else {
        group_eval_with::<S, true>(simd, d, z, origin, tau, p, range, r).0
    }
}

/// [`group_eval`]'s pass, with every pair inverted by [`recip_pair`] (`CHECKED = false`;
/// also returns the smallest and the largest |x_i x_{i+1}| per lane) or by
/// [`recip_pair_checked`] (`CHECKED = true`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn group_eval_with<S: pulp::Simd, const CHECKED: bool>(
    simd: S,
    d: &[f64],
    z: &[f64],
    origin: S::f64s,
    tau: S::f64s,
    p: S::f64s,
    (pmin, pmax): (usize, usize),
    r: &mut [S::f64s],
) -> ([S::f64s; 4], S::f64s, S::f64s) {
    /// (d_i − d_o) − τ per lane.
    #[inline(always)]
    fn x<S: pulp::Simd>(simd: S, di: f64, origin: S::f64s, tau: S::f64s) -> S::f64s {
        simd.sub_f64s(simd.sub_f64s(simd.splat_f64s(di), origin), tau)
    }
    /// Sets r_i and r_{i+1}, tracking the smallest and largest pair product.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn pair<S: pulp::Simd, const CHECKED: bool>(
        simd: S,
        i: usize,
        d: &[f64],
        origin: S::f64s,
        tau: S::f64s,
        r: &mut [S::f64s],
        lo: &mut S::f64s,
        hi: &mut S::f64s,
    ) {
        let (x0, x1) = (x(simd, d[i], origin, tau), x(simd, d[i + 1], origin, tau));
        if CHECKED {
            (r[i], r[i + 1]) = recip_pair_checked(simd, x0, x1);
        } else {
            let mag;
            (r[i], r[i + 1], mag) = recip_pair(simd, x0, x1);
            *lo = simd.min_f64s(*lo, mag);
            *hi = simd.max_f64s(*hi, mag);
        }
    }
    let k = r.len();
    let (d, z) = (&d[..k], &z[..k]);
    let (mut lo, mut hi) = (simd.splat_f64s(f64::INFINITY), simd.splat_f64s(0.0));
    let zero = simd.splat_f64s(0.0);
    let (mut psi, mut dpsi, mut phi, mut dphi) = (zero, zero, zero, zero);
    let npairs = k / 2;
    // Pairs 0..left have both entries below pmin; pairs right.. both above pmax.
    let left = pmin / 2;
    let right = (pmax / 2 + 1).min(npairs);
    for m in 0..left {
        let i = 2 * m;
        pair::<S, CHECKED>(simd, i, d, origin, tau, r, &mut lo, &mut hi);
        for (&zi, &ri) in z[i..i + 2].iter().zip(&r[i..i + 2]) {
            let (zv, t) = (simd.splat_f64s(zi), simd.mul_f64s(simd.splat_f64s(zi), ri));
            psi = simd.mul_add_f64s(zv, t, psi);
            dpsi = simd.mul_add_f64s(t, t, dpsi);
        }
    }
    for m in left..right {
        let i = 2 * m;
        pair::<S, CHECKED>(simd, i, d, origin, tau, r, &mut lo, &mut hi);
        for (j, (&zi, &ri)) in z[i..i + 2].iter().zip(&r[i..i + 2]).enumerate() {
            let (zv, t) = (simd.splat_f64s(zi), simd.mul_f64s(simd.splat_f64s(zi), ri));
            let below = simd.less_than_or_equal_f64s(simd.splat_f64s((i + j) as f64), p);
            psi = simd.select_f64s(below, simd.mul_add_f64s(zv, t, psi), psi);
            dpsi = simd.select_f64s(below, simd.mul_add_f64s(t, t, dpsi), dpsi);
            phi = simd.select_f64s(below, phi, simd.mul_add_f64s(zv, t, phi));
            dphi = simd.select_f64s(below, dphi, simd.mul_add_f64s(t, t, dphi));
        }
    }
    for m in right..npairs {
        let i = 2 * m;
        pair::<S, CHECKED>(simd, i, d, origin, tau, r, &mut lo, &mut hi);
        for (&zi, &ri) in z[i..i + 2].iter().zip(&r[i..i + 2]) {
            let (zv, t) = (simd.splat_f64s(zi), simd.mul_f64s(simd.splat_f64s(zi), ri));
            phi = simd.mul_add_f64s(zv, t, phi);
            dphi = simd.mul_add_f64s(t, t, dphi);
        }
    }
    if k % 2 == 1 {
        // The last index is above every lane's p (p ≤ k − 2).
        let i = k - 1;
        let ri = simd.div_f64s(simd.splat_f64s(1.0), x(simd, d[i], origin, tau));
        r[i] = ri;
        let (zv, t) = (simd.splat_f64s(z[i]), simd.mul_f64s(simd.splat_f64s(z[i]), ri));
        phi = simd.mul_add_f64s(zv, t, phi);
        dphi = simd.mul_add_f64s(t, t, dphi);
    }
    ([psi, dpsi, phi, dphi], lo, hi)
}

/// Whether every lane of `m` is set.
#[inline(always)]
fn all_lanes<S: pulp::Simd>(simd: S, m: S::m64s) -> bool {
    let ones = simd.select_f64s(m, simd.splat_f64s(1.0), simd.splat_f64s(0.0));
    simd.reduce_min_f64s(ones) == 1.0
}

/// The roots j0, j0 + 1, …, j0 + L − 1 (L = lanes of `S::f64s`; indices past k − 2 are
/// clamped to k − 2, a duplicate of that root) of the secular equation of [`secular_root`],
/// k ≥ 2 and j0 ≤ k − 2, one per lane: the same `dlaed4` iteration as [`secular_root`] for a
/// non-last root, its branches turned into lane masks and selects. The lanes iterate together
/// until all have stopped; a lane that has stopped keeps its τ (so re-evaluating it
/// reproduces its reciprocals exactly). On return `r[i]` holds 1/(d_i − λ_j) per lane and
/// the result is λ_j per lane.
#[inline(always)]
fn secular_group<S: pulp::Simd>(
    simd: S,
    j0: usize,
    d: &[f64],
    z: &[f64],
    rho: f64,
    r: &mut [S::f64s],
) -> Result<S::f64s, TridiagonalError> {
    let k = d.len();
    let l = S::F64_LANES;
    let (pmin, pmax) = (j0, (j0 + l - 1).min(k - 2));
    let gather = |f: &dyn Fn(usize) -> f64| {
        let mut buf = [0.0; MAX_LANES];
        for (lane, b) in buf[..l].iter_mut().enumerate() {
            *b = f((j0 + lane).min(k - 2));
        }
        S::as_simd_f64s(&buf[..l]).0[0]
    };
    let dj = gather(&|j| d[j]);
    let dj1 = gather(&|j| d[j + 1]);
    let za = gather(&|j| z[j] * z[j]);
    let zb = gather(&|j| z[j + 1] * z[j + 1]);
    let p = gather(&|j| j as f64);
    let splat = |v: f64| simd.splat_f64s(v);
    let (zero, half, two, four, eight) =
        (splat(0.0), splat(0.5), splat(2.0), splat(4.0), splat(8.0));
    let eps = f64::EPSILON;
    let rhoinv = splat(1.0 / rho);
    let range = (pmin, pmax);

    // λ ∈ (d_j, d_{j+1}); the sign of w at the midpoint gives the nearer pole.
    let del = simd.sub_f64s(dj1, dj);
    let mid = simd.mul_f64s(half, del);
    let [psi, _, phi, _] = group_eval(simd, d, z, dj, mid, p, range, r);
    let w = simd.add_f64s(simd.add_f64s(rhoinv, psi), phi);
    let c = simd.sub_f64s(
        simd.add_f64s(w, simd.div_f64s(za, mid)),
        simd.div_f64s(zb, simd.sub_f64s(del, mid)),
    );
    let left = simd.greater_than_or_equal_f64s(w, zero);
    // Origin d_j: c τ² − a τ + b = 0, root in (0, δ).
    let a = simd.add_f64s(simd.add_f64s(simd.mul_f64s(c, del), za), zb);
    let b = simd.mul_f64s(za, del);
    let disc = simd.sqrt_f64s(
        simd.abs_f64s(simd.sub_f64s(simd.mul_f64s(a, a), simd.mul_f64s(simd.mul_f64s(four, b), c))),
    );
    let tau_left = simd.select_f64s(
        simd.greater_than_f64s(a, zero),
        simd.div_f64s(simd.mul_f64s(two, b), simd.add_f64s(a, disc)),
        simd.div_f64s(simd.sub_f64s(a, disc), simd.mul_f64s(two, c)),
    );
    // Origin d_{j+1}: c τ² − a τ − b = 0, root in (−δ, 0).
    let a = simd.add_f64s(simd.add_f64s(simd.mul_f64s(simd.neg_f64s(c), del), za), zb);
    let b = simd.mul_f64s(zb, del);
    let disc = simd.sqrt_f64s(
        simd.abs_f64s(simd.add_f64s(simd.mul_f64s(a, a), simd.mul_f64s(simd.mul_f64s(four, b), c))),
    );
    let tau_right = simd.select_f64s(
        simd.greater_than_f64s(a, zero),
        simd.div_f64s(simd.mul_f64s(splat(-2.0), b), simd.add_f64s(a, disc)),
        simd.div_f64s(simd.sub_f64s(a, disc), simd.mul_f64s(two, c)),
    );
    let origin = simd.select_f64s(left, dj, dj1);
    let mut lo = simd.select_f64s(left, zero, simd.neg_f64s(mid));
    let mut hi = simd.select_f64s(left, mid, zero);
    let mut tau = simd.select_f64s(left, tau_left, tau_right);
    let bisect =
        |lo: S::f64s, hi: S::f64s| simd.add_f64s(lo, simd.mul_f64s(half, simd.sub_f64s(hi, lo)));
    let inside = simd.and_m64s(simd.greater_than_f64s(tau, lo), simd.less_than_f64s(tau, hi));
    tau = simd.select_f64s(inside, tau, bisect(lo, hi));
    // dd_p and dd_{p+1} relative to the origin.
    let ddp = simd.sub_f64s(dj, origin);
    let ddp1 = simd.sub_f64s(dj1, origin);

    let mut sums = group_eval(simd, d, z, origin, tau, p, range, r);
    let mut done = simd.less_than_f64s(zero, zero);
    let mut iterations = 0;
    loop {
        let [psi, dpsi, phi, dphi] = sums;
        let w = simd.add_f64s(simd.add_f64s(rhoinv, psi), phi);
        let dw = simd.add_f64s(dpsi, dphi);
        let erretm = simd.add_f64s(
            simd.add_f64s(
                simd.mul_f64s(eight, simd.add_f64s(simd.abs_f64s(psi), simd.abs_f64s(phi))),
                simd.mul_f64s(two, rhoinv),
            ),
            simd.mul_f64s(simd.abs_f64s(tau), dw),
        );
        let converged =
            simd.less_than_or_equal_f64s(simd.abs_f64s(w), simd.mul_f64s(splat(eps), erretm));
        done = simd.or_m64s(done, converged);
        let active = simd.not_m64s(done);
        let wpos = simd.greater_than_f64s(w, zero);
        hi = simd.select_f64s(simd.and_m64s(active, wpos), tau, hi);
        lo = simd.select_f64s(simd.and_m64s(active, simd.not_m64s(wpos)), tau, lo);
        let width = simd.sub_f64s(hi, lo);
        let scale = simd.max_f64s(simd.abs_f64s(lo), simd.abs_f64s(hi));
        let collapsed = simd.less_than_or_equal_f64s(width, simd.mul_f64s(splat(2.0 * eps), scale));
        done = simd.or_m64s(done, collapsed);
        if all_lanes(simd, done) {
            break;
        }
        iterations += 1;
        if iterations > MAX_SECULAR_ITERATIONS {
            return Err(TridiagonalError::SecularNoConvergence);
        }
        let mut eta = splat(f64::NAN);
        if iterations <= MODEL_ITERATIONS {
            let d1 = simd.sub_f64s(ddp, tau);
            let d2 = simd.sub_f64s(ddp1, tau);
            let d12 = simd.mul_f64s(d1, d2);
            let c =
                simd.sub_f64s(simd.sub_f64s(w, simd.mul_f64s(d1, dpsi)), simd.mul_f64s(d2, dphi));
            let a = simd.sub_f64s(simd.mul_f64s(simd.add_f64s(d1, d2), w), simd.mul_f64s(d12, dw));
            let b = simd.mul_f64s(d12, w);
            let disc = simd.sqrt_f64s(simd.abs_f64s(
                simd.sub_f64s(simd.mul_f64s(a, a), simd.mul_f64s(simd.mul_f64s(four, b), c)),
            ));
            eta = simd.select_f64s(
                simd.less_than_or_equal_f64s(a, zero),
                simd.div_f64s(simd.sub_f64s(a, disc), simd.mul_f64s(two, c)),
                simd.div_f64s(simd.mul_f64s(two, b), simd.add_f64s(a, disc)),
            );
            let wrong = simd.greater_than_or_equal_f64s(simd.mul_f64s(w, eta), zero);
            eta = simd.select_f64s(wrong, simd.div_f64s(simd.neg_f64s(w), dw), eta);
        }
        let mut next = simd.add_f64s(tau, eta);
        let inside = simd.and_m64s(simd.greater_than_f64s(next, lo), simd.less_than_f64s(next, hi));
        next = simd.select_f64s(inside, next, bisect(lo, hi));
        done = simd.or_m64s(done, simd.equal_f64s(next, tau));
        if all_lanes(simd, done) {
            break;
        }
        tau = simd.select_f64s(done, tau, next);
        sums = group_eval(simd, d, z, origin, tau, p, range, r);
    }
    Ok(simd.add_f64s(origin, tau))
}

/// Turns the rows `u[j]` = (1/(d_i − λ_j))_i of a k×k buffer into the normalised
/// eigenvectors u_j = (ẑ_i/(d_i − λ_j))_i / ‖·‖ of diag(d) + ρ z zᵀ, with the Gu–Eisenstat
/// ẑ_i = sign(z_i) √(−(d_i − λ_i) Π_{j≠i} (d_i − λ_j)/(d_i − d_j)) (`dlaed3`), evaluated as
/// ẑ_i = sign(z_i) / √(−h_i), h_i = (d_i − λ_i)⁻¹ Π_{j≠i} (d_i − d_j)/(d_i − λ_j), from the
/// stored reciprocals (no division in the O(k²) loops).
#[inline(always)]
fn gu_eisenstat(d: &[f64], z: &[f64], u: &mut [f64], h: &mut [f64]) {
    let k = d.len();
    if k == 0 {
        return;
    }
    if k == 1 {
        u[0] = 1.0;
        return;
    }
    let h = &mut h[..k];
    for (i, hi) in h.iter_mut().enumerate() {
        *hi = u[i * k + i];
    }
    for (j, row) in u.chunks_exact(k).enumerate() {
        let dj = d[j];
        for ((hi, &r), &di) in h[..j].iter_mut().zip(&row[..j]).zip(&d[..j]) {
            *hi *= r * (di - dj);
        }
        for ((hi, &r), &di) in h[j + 1..].iter_mut().zip(&row[j + 1..]).zip(&d[j + 1..]) {
            *hi *= r * (di - dj);
        }
    }
    for (hi, &zi) in h.iter_mut().zip(z) {
        *hi = (1.0 / (-*hi).sqrt()).copysign(zi);
    }
    for row in u.chunks_exact_mut(k) {
        for (r, &zh) in row.iter_mut().zip(h.iter()) {
            *r *= zh;
        }
        let inv = 1.0 / dot(row, row).sqrt();
        for r in row.iter_mut() {
            *r *= inv;
        }
    }
}

/// The transposed eigenvector matrix Zᵀ (row-major m×m) as a QL rotation target: the rotation
/// of columns i, i + 1 of Z is a rotation of the contiguous rows i, i + 1 of Zᵀ.
struct TransposedRows<'a> {
    data: &'a mut [f64],
    m: usize,
}

impl RotationTarget for TransposedRows<'_> {
    #[inline]
    fn rotate(&mut self, i: usize, c: f64, s: f64) {
        let m = self.m;
        let (a, b) = self.data[i * m..(i + 2) * m].split_at_mut(m);
        for (x, y) in a.iter_mut().zip(b.iter_mut()) {
            let f = *y;
            *y = s * *x + c * f;
            *x = c * *x - s * f;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::sym_eigen;
    use ndarray::{Array1, Array2};
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Measured errors of one case.
    #[derive(Debug, Default, Clone, Copy)]
    struct Errors {
        /// max |λ − λ_ref| / ‖T‖.
        eig: f64,
        /// ‖S Sᵀ − I‖_max.
        orth: f64,
        /// ‖S Sᵀ x − x‖_∞ / ‖x‖_∞.
        round: f64,
        /// ‖S Λ Sᵀ x − T x‖_∞ / (‖T‖ ‖x‖_∞).
        resid: f64,
        /// ‖S f(Λ) Sᵀ x − V f(Λ) Vᵀ x‖_∞ / ‖V f(Λ) Vᵀ x‖_∞.
        func: f64,
    }

    impl Errors {
        fn max(self, o: Errors) -> Errors {
            Errors {
                eig: self.eig.max(o.eig),
                orth: self.orth.max(o.orth),
                round: self.round.max(o.round),
                resid: self.resid.max(o.resid),
                func: self.func.max(o.func),
            }
        }
    }

    fn dense(d: &[f64], e: &[f64]) -> Array2<f64> {
        let n = d.len();
        let mut t = Array2::zeros((n, n));
        for i in 0..n {
            t[[i, i]] = d[i];
            if i + 1 < n {
                t[[i, i + 1]] = e[i];
                t[[i + 1, i]] = e[i];
            }
        }
        t
    }

    fn inf_norm(v: &[f64]) -> f64 {
        v.iter().fold(0.0f64, |a, x| a.max(x.abs()))
    }

    /// Factors T with the given leaf size, compares with the dense reference and asserts
    /// the tolerances; returns the measured errors.
    fn check_leaf(name: &str, d: &[f64], e: &[f64], leaf: usize) -> Errors {
        let n = d.len();
        let t = dense(d, e);
        let (ref_values, ref_vectors) = sym_eigen(&t, true).unwrap();
        let v = ref_vectors.unwrap();
        let norm = ref_values.iter().fold(0.0f64, |a, x| a.max(x.abs()));
        let mut te = TridiagonalEigen::with_leaf_size(n, leaf);
        te.factor(d, e).unwrap_or_else(|err| panic!("{name}: {err}"));
        let lam = te.eigenvalues().to_vec();
        assert_eq!(lam.len(), n);
        assert!(lam.windows(2).all(|w| w[0] <= w[1]), "{name}: eigenvalues not ascending");
        let mut err = Errors::default();
        for (a, b) in lam.iter().zip(&ref_values) {
            err.eig = err.eig.max((a - b).abs());
        }
        if norm > 0.0 {
            err.eig /= norm;
        }
        assert!(err.eig <= 1e-13, "{name}: eigenvalue error {:e}", err.eig);
        // SᵀS − I from Sᵀ applied to the columns of I.
        let mut st = Array2::<f64>::zeros((n, n));
        for i in 0..n {
            let mut col = vec![0.0; n];
            col[i] = 1.0;
            te.apply_st(&mut col);
            for (r, c) in col.iter().enumerate() {
                st[[r, i]] = *c;
            }
        }
        let gram = st.dot(&st.t());
        for i in 0..n {
            for j in 0..n {
                let target = if i == j { 1.0 } else { 0.0 };
                err.orth = err.orth.max((gram[[i, j]] - target).abs());
            }
        }
        assert!(err.orth <= 1e-13 * (n as f64).max(1.0), "{name}: orthogonality {:e}", err.orth);
        let mut rng = ChaCha8Rng::seed_from_u64(n as u64 + 17);
        for _ in 0..2 {
            let x: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let xn = inf_norm(&x).max(f64::MIN_POSITIVE);
            // Round trip.
            let mut y = x.clone();
            te.apply_st(&mut y);
            let mut back = y.clone();
            te.apply_s(&mut back);
            let diff: Vec<f64> = back.iter().zip(&x).map(|(a, b)| a - b).collect();
            err.round = err.round.max(inf_norm(&diff) / xn);
            // S Λ Sᵀ x = T x.
            let mut sl: Vec<f64> = y.iter().zip(&lam).map(|(a, l)| a * l).collect();
            te.apply_s(&mut sl);
            let tx = t.dot(&Array1::from(x.clone()));
            let diff: Vec<f64> = sl.iter().zip(tx.iter()).map(|(a, b)| a - b).collect();
            if norm > 0.0 {
                err.resid = err.resid.max(inf_norm(&diff) / (norm * xn));
            } else {
                assert!(inf_norm(&diff) == 0.0);
            }
            // f(T) x with f(μ) = 1/(|μ| + 0.1 ‖T‖) (scale-invariant form of 1/(|μ| + 0.1)).
            let shift = 0.1 * if norm > 0.0 { norm } else { 1.0 };
            let f = |mu: f64| 1.0 / (mu.abs() + shift);
            let mut fx: Vec<f64> = y.iter().zip(&lam).map(|(a, l)| a * f(*l)).collect();
            te.apply_s(&mut fx);
            let xa = Array1::from(x.clone());
            let vx = v.t().dot(&xa);
            let fvx = Array1::from_shape_fn(n, |i| vx[i] * f(ref_values[i]));
            let expected = v.dot(&fvx);
            let diff: Vec<f64> = fx.iter().zip(expected.iter()).map(|(a, b)| a - b).collect();
            let en = inf_norm(expected.as_slice().unwrap()).max(f64::MIN_POSITIVE);
            err.func = err.func.max(inf_norm(&diff) / en);
        }
        assert!(err.round <= 1e-14 * (n as f64).max(1.0), "{name}: round trip {:e}", err.round);
        assert!(err.resid <= 1e-13, "{name}: residual {:e}", err.resid);
        assert!(err.func <= 1e-11, "{name}: f(T) x error {:e}", err.func);
        err
    }

    /// [`check_leaf`] for several leaf sizes (pure divide and conquer down to 1×1, the
    /// default, and small leaves).
    fn check(name: &str, d: &[f64], e: &[f64]) -> Errors {
        let mut worst = Errors::default();
        for leaf in [1, 3, DEFAULT_LEAF_SIZE] {
            worst = worst.max(check_leaf(name, d, e, leaf));
        }
        worst
    }

    fn random(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let e = (0..n.saturating_sub(1)).map(|_| rng.random_range(-1.0..1.0)).collect();
        (d, e)
    }

    #[test]
    fn random_matrices_of_all_sizes() {
        let mut worst = Errors::default();
        for n in [0, 1, 2, 3, 5, 16, 17, 33, 64, 100, 128, 200] {
            let (d, e) = random(n, 100 + n as u64);
            worst = worst.max(check(&format!("random {n}"), &d, &e));
        }
        eprintln!("random: {worst:?}");
    }

    #[test]
    fn couplings_of_length_n_ignore_the_last_entry() {
        let (d, e) = random(40, 3);
        let mut te = TridiagonalEigen::new(40);
        te.factor(&d, &e).unwrap();
        let lam = te.eigenvalues().to_vec();
        let mut e2 = e.clone();
        e2.push(123.0);
        te.factor(&d, &e2).unwrap();
        assert_eq!(lam, te.eigenvalues());
    }

    #[test]
    fn wilkinson_matrices() {
        let mut worst = Errors::default();
        for m in [10, 50] {
            let d: Vec<f64> = (0..=2 * m).map(|i| (i as f64 - m as f64).abs()).collect();
            let e = vec![1.0; 2 * m];
            worst = worst.max(check(&format!("W+{}", 2 * m + 1), &d, &e));
        }
        eprintln!("wilkinson: {worst:?}");
    }

    #[test]
    fn toeplitz_121_has_its_known_eigenvalues() {
        for n in [7, 64, 128] {
            let d = vec![2.0; n];
            let e = vec![1.0; n - 1];
            check(&format!("toeplitz {n}"), &d, &e);
            let mut te = TridiagonalEigen::new(n);
            te.factor(&d, &e).unwrap();
            for (k, v) in te.eigenvalues().iter().enumerate() {
                let exact =
                    2.0 - 2.0 * (std::f64::consts::PI * (k + 1) as f64 / (n + 1) as f64).cos();
                assert!((v - exact).abs() <= 4e-15 * 4.0, "toeplitz {n}, {k}: {v} vs {exact}");
            }
        }
    }

    #[test]
    fn zero_couplings_zero_matrix_and_diagonal_matrices() {
        let (d, mut e) = random(100, 7);
        for (i, v) in e.iter_mut().enumerate() {
            if i % 7 == 3 || i == 49 {
                *v = 0.0;
            }
        }
        check("zero couplings", &d, &e);
        check("zero matrix", &[0.0; 20], &[0.0; 19]);
        let diag: Vec<f64> = (0..33).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
        check("diagonal with repeats", &diag, &[0.0; 32]);
        check("constant", &[1.5; 40], &[0.0; 39]);
        let mut te = TridiagonalEigen::new(20);
        te.factor(&[0.0; 20], &[0.0; 19]).unwrap();
        assert!(te.eigenvalues().iter().all(|v| *v == 0.0));
        let mut x: Vec<f64> = (0..20).map(|i| i as f64).collect();
        let x0 = x.clone();
        te.apply_st(&mut x);
        assert_eq!(x, x0);
    }

    #[test]
    fn tiny_and_huge_couplings() {
        let (d, e) = random(64, 11);
        let tiny: Vec<f64> = e.iter().map(|v| v * 1e-300).collect();
        let huge: Vec<f64> = e.iter().map(|v| v * 1e300).collect();
        let w1 = check("tiny couplings", &d, &tiny);
        let w2 = check("huge couplings", &d, &huge);
        // A tiny and a huge matrix altogether.
        let dt: Vec<f64> = d.iter().map(|v| v * 1e-300).collect();
        let w3 = check("tiny matrix", &dt, &tiny);
        let dh: Vec<f64> = d.iter().map(|v| v * 1e300).collect();
        let w4 = check("huge matrix", &dh, &huge);
        eprintln!("tiny/huge: {:?}", w1.max(w2).max(w3).max(w4));
    }

    #[test]
    fn heavy_deflation_and_graded_matrices() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let n = 100;
        for scale in [1e-6, 1e-10, 1e-15, 1e-17] {
            let e: Vec<f64> = (0..n - 1).map(|_| scale * rng.random_range(-1.0..1.0)).collect();
            check(&format!("constant diagonal, e ~ {scale:e}"), &[1.0; 100], &e);
        }
        let d: Vec<f64> = (0..n).map(|i| 10f64.powf(-(i as f64) / 4.0)).collect();
        let e: Vec<f64> = (0..n - 1).map(|i| 0.5 * 10f64.powf(-(i as f64 + 0.5) / 4.0)).collect();
        let w1 = check("graded", &d, &e);
        let rev_d: Vec<f64> = d.iter().rev().copied().collect();
        let rev_e: Vec<f64> = e.iter().rev().copied().collect();
        let w2 = check("graded reversed", &rev_d, &rev_e);
        eprintln!("graded: {:?}", w1.max(w2));
    }

    #[test]
    fn glued_blocks() {
        // Copies of W+21 and of a random block, glued by 1e-10 couplings.
        let w: Vec<f64> = (0..21).map(|i| (i as f64 - 10.0).abs()).collect();
        let (rd, re) = random(10, 9);
        let mut worst = Errors::default();
        for (bd, be, copies) in [(&w, vec![1.0; 20], 6), (&rd, re, 12)] {
            let mut d = Vec::new();
            let mut e = Vec::new();
            for c in 0..copies {
                if c > 0 {
                    e.push(1e-10);
                }
                d.extend_from_slice(bd);
                e.extend_from_slice(&be);
            }
            worst = worst.max(check(&format!("glued x{copies}"), &d, &e));
        }
        eprintln!("glued: {worst:?}");
    }

    /// The tridiagonal of H = diag(c) + Bᵀ A B (n = 128, B 64×128, A symmetric 64×64, many
    /// c_i exactly 0 or tiny), as faer's Householder reduction produces it.
    pub(super) fn use_case(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
        use faer::dyn_stack::{MemBuffer, MemStack};
        use faer::linalg::evd;
        use faer::{Mat, Par};
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let r = n / 2;
        let b = Mat::<f64>::from_fn(r, n, |_, _| rng.random_range(-1.0..1.0));
        let mut a = Mat::<f64>::from_fn(r, r, |_, _| rng.random_range(-1.0..1.0));
        a = &a + a.transpose();
        let c: Vec<f64> = (0..n)
            .map(|i| match i % 4 {
                0 | 1 => 0.0,
                2 => 1e-12 * rng.random_range(-1.0..1.0),
                _ => rng.random_range(0.0..1.0),
            })
            .collect();
        let mut h = b.transpose() * &a * &b;
        for i in 0..n {
            h[(i, i)] += c[i];
        }
        let bs = faer::linalg::qr::no_pivoting::factor::recommended_block_size::<f64>(n, n);
        let mut hh = Mat::<f64>::zeros(bs.max(1), n - 1);
        let mut mem = MemBuffer::new(evd::tridiag::tridiag_in_place_scratch::<f64>(
            n,
            Par::Seq,
            Default::default(),
        ));
        evd::tridiag::tridiag_in_place(
            h.as_mut(),
            hh.as_mut(),
            Par::Seq,
            MemStack::new(&mut mem),
            Default::default(),
        );
        let d = (0..n).map(|i| h[(i, i)]).collect();
        let e = (0..n - 1).map(|i| h[(i + 1, i)]).collect();
        (d, e)
    }

    #[test]
    fn diagonal_plus_low_rank_use_case() {
        let mut worst = Errors::default();
        for (n, seed) in [(128, 1), (128, 2), (64, 3)] {
            let (d, e) = use_case(n, seed);
            worst = worst.max(check(&format!("use case {n}/{seed}"), &d, &e));
        }
        eprintln!("use case: {worst:?}");
    }

    #[test]
    fn non_finite_input_is_an_error_and_resets() {
        let mut te = TridiagonalEigen::new(5);
        let (d, e) = random(5, 1);
        te.factor(&d, &e).unwrap();
        let mut bad = d.clone();
        bad[2] = f64::NAN;
        assert_eq!(te.factor(&bad, &e), Err(TridiagonalError::NonFinite));
        assert!(te.eigenvalues().iter().all(|v| *v == 0.0));
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 5.0];
        te.apply_s(&mut x);
        assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let mut bad_e = e.clone();
        bad_e[0] = f64::INFINITY;
        assert_eq!(te.factor(&d, &bad_e), Err(TridiagonalError::NonFinite));
        // e[n-1] is ignored, even when not finite.
        let mut long_e = e.clone();
        long_e.push(f64::NAN);
        te.factor(&d, &long_e).unwrap();
    }

    #[test]
    #[should_panic(expected = "couplings")]
    fn wrong_coupling_length_panics() {
        let mut te = TridiagonalEigen::new(5);
        let _ = te.factor(&[0.0; 5], &[0.0; 2]);
    }

    #[test]
    fn secular_roots_interlace_and_vectors_are_orthonormal() {
        // A merge problem with close poles, checked directly.
        let d = [0.0, 1e-9, 0.5, 0.5 + 1e-12, 2.0];
        let z = [0.3, 0.5, 0.4, 0.6, 0.37];
        let zz: f64 = z.iter().map(|v| v * v).sum();
        let rho = 0.7;
        let k = d.len();
        let mut u = vec![0.0; k * k];
        let mut dd = vec![0.0; k];
        let mut roots = vec![0.0; k];
        for j in 0..k {
            roots[j] = secular_root(
                pulp::Scalar::new(),
                j,
                &d,
                &z,
                rho,
                zz,
                &mut u[j * k..(j + 1) * k],
                &mut dd,
            )
            .unwrap();
            assert!(roots[j] > d[j]);
            if j + 1 < k {
                assert!(roots[j] < d[j + 1]);
            }
            for i in 0..k {
                let scale = d[i].abs().max(roots[j].abs());
                let diff = 1.0 / u[j * k + i];
                assert!((diff - (d[i] - roots[j])).abs() <= 2.0 * f64::EPSILON * scale);
            }
        }
        let mut g = vec![0.0; k];
        gu_eisenstat(&d, &z, &mut u, &mut g);
        // Dense check: (D + ρ z zᵀ) u_j = λ_j u_j and UᵀU = I.
        for j in 0..k {
            let col = &u[j * k..(j + 1) * k];
            let zu: f64 = z.iter().zip(col).map(|(a, b)| a * b).sum();
            for i in 0..k {
                let lhs = d[i] * col[i] + rho * z[i] * zu;
                assert!((lhs - roots[j] * col[i]).abs() < 1e-14, "root {j}, row {i}");
            }
            for l in 0..k {
                let ip: f64 = col.iter().zip(&u[l * k..(l + 1) * k]).map(|(a, b)| a * b).sum();
                let target = if l == j { 1.0 } else { 0.0 };
                assert!((ip - target).abs() < 1e-14, "{j} {l}: {ip}");
            }
        }
    }

    /// [`secular_roots`] under the run-time dispatched instruction set.
    struct DispatchedRoots<'a> {
        d: &'a [f64],
        z: &'a [f64],
        rho: f64,
        u: &'a mut [f64],
        roots: &'a mut [f64],
        /// Call [`secular_root`] for each root instead (its SIMD sums run across i).
        one_at_a_time: bool,
    }

    impl pulp::WithSimd for DispatchedRoots<'_> {
        type Output = (usize, Result<(), TridiagonalError>);

        fn with_simd<S: pulp::Simd>(self, simd: S) -> Self::Output {
            let k = self.d.len();
            let zz = self.z.iter().map(|v| v * v).sum();
            let (mut dd, mut lanes) = (vec![0.0; k], vec![0.0; k * MAX_LANES]);
            if self.one_at_a_time {
                for (j, (row, root)) in self.u.chunks_exact_mut(k).zip(self.roots).enumerate() {
                    match secular_root(simd, j, self.d, self.z, self.rho, zz, row, &mut dd) {
                        Ok(v) => *root = v,
                        Err(e) => return (S::F64_LANES, Err(e)),
                    }
                }
                return (S::F64_LANES, Ok(()));
            }
            let result = secular_roots(
                simd, self.d, self.z, self.rho, zz, self.u, self.roots, &mut dd, &mut lanes,
            );
            (S::F64_LANES, result)
        }
    }

    /// A secular problem of size k: strictly increasing d (with clusters of close poles when
    /// `close`), unit z with some tiny components, ρ in [0.05, 5).
    fn merge_problem(k: usize, seed: u64, close: bool) -> (Vec<f64>, Vec<f64>, f64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut d: Vec<f64> = (0..k).map(|_| rng.random_range(-1.0..1.0)).collect();
        d.sort_by(f64::total_cmp);
        if close {
            // Every third pole within 1e-9 (or 1e-13) of its predecessor.
            for i in (1..k).step_by(3) {
                let gap = if i % 2 == 0 { 1e-9 } else { 1e-13 };
                d[i] = d[i - 1] + gap * (1.0 + d[i - 1].abs());
            }
            d.sort_by(f64::total_cmp);
        }
        assert!(d.windows(2).all(|w| w[0] < w[1]), "poles must be distinct");
        let mut z: Vec<f64> = (0..k)
            .map(|i| {
                let v = rng.random_range(0.1..1.0) * if rng.random_bool(0.5) { -1.0 } else { 1.0 };
                if i % 5 == 2 { v * 1e-7 } else { v }
            })
            .collect();
        let nz = z.iter().map(|v| v * v).sum::<f64>().sqrt();
        for v in &mut z {
            *v /= nz;
        }
        (d, z, rng.random_range(0.05..5.0))
    }

    #[test]
    fn reciprocal_pairs_whose_product_underflows_fall_back_to_divisions() {
        // Poles 1e-200 apart: near those roots both entries of a pair are ≈ 1e-200, their
        // product underflows, and the reciprocals must come from divisions.
        let d = [0.0, 1e-200, 3e-200, 0.5, 0.5 + 1e-12, 1.0, 2.0];
        let z: Vec<f64> =
            [0.3, 0.5, 0.4, 0.6, 0.37, 0.2, 0.25].iter().map(|v| v / 1.0954).collect();
        let rho = 0.7;
        let k = d.len();
        let zz: f64 = z.iter().map(|v| v * v).sum();
        for lanes in [false, true] {
            let (mut u, mut roots) = (vec![0.0; k * k], vec![0.0; k]);
            if lanes {
                let mut scratch = (vec![0.0; k], vec![0.0; k * MAX_LANES]);
                secular_roots(
                    pulp::Scalar::new(),
                    &d,
                    &z,
                    rho,
                    zz,
                    &mut u,
                    &mut roots,
                    &mut scratch.0,
                    &mut scratch.1,
                )
                .unwrap();
                let (mut u_disp, mut roots_disp) = (vec![0.0; k * k], vec![0.0; k]);
                pulp::Arch::new()
                    .dispatch(DispatchedRoots {
                        d: &d,
                        z: &z,
                        rho,
                        u: &mut u_disp,
                        roots: &mut roots_disp,
                        one_at_a_time: false,
                    })
                    .1
                    .unwrap();
                assert_eq!(roots[..k - 1], roots_disp[..k - 1], "dispatched lanes");
                assert_eq!(u[..(k - 1) * k], u_disp[..(k - 1) * k], "dispatched lanes");
            } else {
                let mut dd = vec![0.0; k];
                for j in 0..k {
                    let row = &mut u[j * k..(j + 1) * k];
                    roots[j] = secular_root(pulp::Scalar::new(), j, &d, &z, rho, zz, row, &mut dd)
                        .unwrap();
                }
            }
            for j in 0..k {
                assert!(roots[j] > d[j] && (j + 1 == k || roots[j] < d[j + 1]), "root {j}");
                for i in 0..k {
                    let scale = d[i].abs().max(roots[j].abs());
                    let diff = 1.0 / u[j * k + i];
                    assert!(
                        (diff - (d[i] - roots[j])).abs() <= 4.0 * f64::EPSILON * scale,
                        "lanes {lanes}, root {j}, pole {i}: 1/r = {diff:e}, d − λ = {:e}",
                        d[i] - roots[j]
                    );
                }
            }
        }
    }

    #[test]
    fn lane_parallel_secular_roots_equal_the_scalar_solver_bit_for_bit() {
        let mut problems = Vec::new();
        for k in (1..=13).chain([16, 17, 23, 31, 32, 33, 40]) {
            for (s, close) in [(0, false), (1, true)] {
                problems.push(merge_problem(k, 1000 + 10 * k as u64 + s, close));
            }
        }
        // The hand-made close-pole problem.
        let z = [0.3, 0.5, 0.4, 0.6, 0.37];
        let nz = z.iter().map(|v| v * v).sum::<f64>().sqrt();
        problems.push((
            vec![0.0, 1e-9, 0.5, 0.5 + 1e-12, 2.0],
            z.iter().map(|v| v / nz).collect(),
            0.7,
        ));
        // Poles 1e-200 apart: reciprocal pairs fall back to divisions, in every solver alike.
        let z = [0.3, 0.5, 0.4, 0.6, 0.37, 0.2, 0.25];
        let nz = z.iter().map(|v| v * v).sum::<f64>().sqrt();
        problems.push((
            vec![0.0, 1e-200, 3e-200, 0.5, 0.5 + 1e-12, 1.0, 2.0],
            z.iter().map(|v| v / nz).collect(),
            0.7,
        ));
        let mut lanes_seen = 0;
        let (mut worst_roots, mut worst_recip) = (0.0f64, 0.0f64);
        for (pi, (d, z, rho)) in problems.iter().enumerate() {
            let k = d.len();
            let zz: f64 = z.iter().map(|v| v * v).sum();
            // Reference: one root at a time, pulp::Scalar.
            let (mut u_ref, mut roots_ref, mut dd) = (vec![0.0; k * k], vec![0.0; k], vec![0.0; k]);
            for j in 0..k {
                roots_ref[j] = secular_root(
                    pulp::Scalar::new(),
                    j,
                    d,
                    z,
                    *rho,
                    zz,
                    &mut u_ref[j * k..(j + 1) * k],
                    &mut dd,
                )
                .unwrap();
            }
            // Lane-parallel, pulp::Scalar (one lane).
            let (mut u, mut roots) = (vec![0.0; k * k], vec![0.0; k]);
            let mut lanes = vec![0.0; k * MAX_LANES];
            secular_roots(
                pulp::Scalar::new(),
                d,
                z,
                *rho,
                zz,
                &mut u,
                &mut roots,
                &mut dd,
                &mut lanes,
            )
            .unwrap();
            assert_eq!(roots, roots_ref, "problem {pi}: scalar roots");
            assert_eq!(u, u_ref, "problem {pi}: scalar reciprocals");
            // One root at a time under the dispatched instruction set (its sums run across i
            // in SIMD registers, another summation order).
            let (mut u_disp, mut roots_disp) = (vec![0.0; k * k], vec![0.0; k]);
            pulp::Arch::new()
                .dispatch(DispatchedRoots {
                    d,
                    z,
                    rho: *rho,
                    u: &mut u_disp,
                    roots: &mut roots_disp,
                    one_at_a_time: true,
                })
                .1
                .unwrap();
            // Lane-parallel, dispatched (4 lanes with AVX2): roots 0..k − 1 equal the scalar
            // solver's bit for bit, the last (solved by `secular_root` with the same SIMD
            // type) the dispatched one-at-a-time solver's.
            let (mut u, mut roots) = (vec![0.0; k * k], vec![0.0; k]);
            let (l, result) = pulp::Arch::new().dispatch(DispatchedRoots {
                d,
                z,
                rho: *rho,
                u: &mut u,
                roots: &mut roots,
                one_at_a_time: false,
            });
            result.unwrap();
            lanes_seen = lanes_seen.max(l);
            for j in 0..k {
                let (r_ref, u_ref) =
                    if j + 1 < k { (&roots_ref, &u_ref) } else { (&roots_disp, &u_disp) };
                assert_eq!(
                    roots[j].to_bits(),
                    r_ref[j].to_bits(),
                    "problem {pi} (k = {k}, {l} lanes): root {j} {} vs {}",
                    roots[j],
                    r_ref[j]
                );
                for i in 0..k {
                    assert_eq!(
                        u[j * k + i].to_bits(),
                        u_ref[j * k + i].to_bits(),
                        "problem {pi} (k = {k}, {l} lanes): reciprocal ({j}, {i})"
                    );
                }
                // λ_j = d_o + τ may round onto a pole 1e-13 away (τ itself is in the bracket).
                assert!(roots[j] >= d[j], "problem {pi}: root {j} below its pole");
                if j + 1 < k {
                    assert!(roots[j] <= d[j + 1], "problem {pi}: root {j} above the next pole");
                }
            }
            // Against the summation order of the one-root-at-a-time SIMD sums.
            let scale = d.iter().fold(*rho, |m, v| m.max(v.abs()));
            for (a, b) in roots.iter().zip(&roots_disp) {
                worst_roots = worst_roots.max((a - b).abs() / scale / f64::EPSILON);
            }
            for (a, b) in u.iter().zip(&u_disp) {
                worst_recip = worst_recip.max(((a - b) / b).abs() / f64::EPSILON);
            }
        }
        assert!(lanes_seen >= 1);
        // Other summation order: the roots move by rounding only (in units of ε max(|d|, ρ)),
        // the reciprocals by a few ulps of the roots' distance to the poles.
        assert!(worst_roots <= 4.0 && worst_recip <= 64.0, "{worst_roots} {worst_recip}");
        eprintln!(
            "lane-parallel secular roots ({lanes_seen} lanes) vs one root at a time with the \
             dispatched SIMD sums: roots {worst_roots} ε max(|d|, ρ), reciprocals {worst_recip} ε \
             (relative)"
        );
    }
}

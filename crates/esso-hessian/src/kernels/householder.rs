//! Householder tridiagonalisation H = Q T Qᵀ of a small dense symmetric matrix (n ≲ 256),
//! with Q and Qᵀ applied to vectors from the stored reflectors.
//!
//! ## Algorithm
//! The unblocked reduction of LAPACK's `dsytd2` with `UPLO = 'U'`, working from the
//! bottom-right corner. For i = n−1, n−2, …, 2 the reflector
//!
//! ```text
//! H_i = I − τ_i v_i v_iᵀ,   v_i ∈ ℝⁿ supported on 0..i,  v_i[i−1] = 1,
//! ```
//!
//! maps x = A[0..i, i] (the part of column i above the diagonal of the current matrix) to
//! β_i e_{i−1}, and the leading i × i block B is updated as
//!
//! ```text
//! p = τ B v,   w = p − ½ τ (pᵀv) v,   B ← H_i B H_i = B − v wᵀ − w vᵀ.
//! ```
//!
//! After the last step, A = Q T Qᵀ with
//!
//! ```text
//! Q = H_{n−1} H_{n−2} ⋯ H_2,      T = tridiag(e; d; e),
//! ```
//!
//! d the diagonal, `e[i]` = β_{i+1} the entry coupling i and i+1 (`e[0]` is the final `A[1, 0]`).
//! Q fixes the last basis vector (Q e_{n−1} = e_{n−1}).
//!
//! The reflector follows LAPACK's `dlarfg`: with x = (x₂, α) and ‖·‖ the Euclidean norm,
//! β = −sign(α) ‖x‖ (sign(0) = +1), τ = (β − α)/β ∈ [1, 2], v = (x₂/(α − β), 1); when
//! ‖x₂‖ = 0 the reflector is the identity (τ = 0, β = α). Off-diagonal entries of T may
//! therefore be negative; any sign pattern is a valid T (the tridiagonal of a symmetric
//! matrix is unique only up to the signs of e once Q e_{n−1} is fixed).
//!
//! ## Layout and speed
//! The working copy is the lower triangle in row-major order (row r holds columns 0..=r
//! contiguously), which is also where the input's lower triangle is read from: the column to
//! reduce at step i is the contiguous row i, and the trailing block stays in rows 0..i. The
//! rank-2 update of step i+1 is fused with the symmetric matrix–vector product of step i:
//! one pass over the rows of the trailing block updates row r, then adds its contribution
//! to p by a dot product (`p[r]`) and an axpy (`p[0..r]`, by symmetry). Row i itself is updated
//! first to build the new reflector. The whole reduction runs inside one
//! [`pulp::Arch::dispatch`] (AVX2 + FMA where available, SSE2 otherwise), 4/3 n³ + O(n²)
//! flops. Norms are plain sums of squares, rescaled only when the result leaves
//! [2⁻⁹⁶⁰, 2⁹⁶⁰] (overflow or underflow of the squares).
//!
//! ## Accuracy
//! Backward stable like `dsytd2`: the computed T and the exactly orthogonal Q of the stored
//! reflectors satisfy Q T Qᵀ = H + E with ‖E‖ = O(n ε ‖H‖). Entries of x₂ whose squares
//! underflow to zero while α is normal-sized (|x₂,ⱼ| < 1.5·10⁻¹⁶² ≪ ε·|α|) are treated as
//! zero. Subnormal inputs lose relative accuracy, as any floating-point computation on them.
//!
//! ## Non-finite input
//! Not checked (the caller's job, e.g. [`crate::LayerSolver`] checks while copying): NaN and
//! ±∞ propagate into the results and never cause a panic. Finite inputs with
//! ‖H‖_F ≲ 10³⁰⁰ reduce without overflow.

use pulp::{Arch, Simd, WithSimd};

/// Squared norms below this are recomputed with scaling (underflow of the squares): 2⁻⁹⁶⁰.
const SUMSQ_MIN: f64 = f64::from_bits((1023 - 960) << 52);
/// Squared norms above this are recomputed with scaling (overflow of the squares): 2⁹⁶⁰.
const SUMSQ_MAX: f64 = f64::from_bits((1023 + 960) << 52);

/// Reusable workspace for H = Q T Qᵀ of a symmetric n × n matrix (see the
/// [module documentation](self) for the algorithm and the conventions).
///
/// All buffers are allocated by [`Tridiagonalizer::new`]; [`reduce`](Self::reduce),
/// [`apply_qt`](Self::apply_qt) and [`apply_q`](Self::apply_q) do not allocate.
///
/// # Examples
/// ```
/// use esso_hessian::kernels::householder::Tridiagonalizer;
///
/// // H = [[2, 1, 1], [1, 2, 1], [1, 1, 2]] (row-major; only the lower triangle is read).
/// let h = [2.0, 0.0, 0.0, 1.0, 2.0, 0.0, 1.0, 1.0, 2.0];
/// let mut t = Tridiagonalizer::new(3);
/// t.reduce(&h);
/// // Traces agree: tr T = tr H.
/// assert!((t.diagonal().iter().sum::<f64>() - 6.0).abs() < 1e-14);
/// // Qᵀ followed by Q is the identity.
/// let mut x = [1.0, -2.0, 0.5];
/// t.apply_qt(&mut x);
/// t.apply_q(&mut x);
/// assert!((x[0] - 1.0).abs() + (x[1] + 2.0).abs() + (x[2] - 0.5).abs() < 1e-14);
/// ```
#[derive(Debug, Clone)]
pub struct Tridiagonalizer {
    n: usize,
    /// Row stride of the working matrix: n rounded up to a multiple of 8 (64-byte rows).
    ld: usize,
    /// Start of the working matrix in `a`, chosen at each reduction so that it is 64-byte
    /// aligned (a clone keeps the same offset, hence stays correct, only maybe unaligned).
    offset: usize,
    /// Row-major n × n at `a[offset..]` with stride `ld`; the lower triangle is the working
    /// matrix, and after [`Tridiagonalizer::reduce`] row i (columns 0..i) holds v_i for i ≥ 2.
    a: Vec<f64>,
    /// τ_i at index i (0 for i < 2 and for identity reflectors).
    tau: Vec<f64>,
    d: Vec<f64>,
    e: Vec<f64>,
    /// Matrix–vector product B v of the current step.
    p: Vec<f64>,
    /// w of the previous step's rank-2 update.
    w: Vec<f64>,
    arch: Arch,
}

impl Tridiagonalizer {
    /// A workspace for n × n matrices (allocates about 5n + n² numbers).
    pub fn new(n: usize) -> Self {
        let ld = n.div_ceil(8) * 8;
        Tridiagonalizer {
            n,
            ld,
            offset: 0,
            a: vec![0.0; n * ld + 8],
            tau: vec![0.0; n],
            d: vec![0.0; n],
            e: vec![0.0; n.saturating_sub(1)],
            p: vec![0.0; n],
            w: vec![0.0; n],
            arch: Arch::new(),
        }
    }

    /// The dimension n.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Reduces H = Q T Qᵀ given row-major n × n `h`; only the lower triangle (`h[i * n + j]`,
    /// j ≤ i) is read. Afterwards [`diagonal`](Self::diagonal) and
    /// [`off_diagonal`](Self::off_diagonal) hold T, and [`apply_q`](Self::apply_q) and
    /// [`apply_qt`](Self::apply_qt) apply Q and Qᵀ.
    ///
    /// NaN or ±∞ in the lower triangle propagate into T and Q (no panic).
    ///
    /// # Panics
    /// If `h.len() != n * n`.
    pub fn reduce(&mut self, h: &[f64]) {
        let n = self.n;
        assert_eq!(h.len(), n * n, "Tridiagonalizer::reduce: h must be n × n");
        let ld = self.ld;
        // Elements to skip so that the matrix starts on a 64-byte boundary.
        self.offset = (64 - self.a.as_ptr() as usize % 64) % 64 / size_of::<f64>();
        let a = &mut self.a[self.offset..self.offset + n * ld];
        for i in 0..n {
            a[i * ld..i * ld + i + 1].copy_from_slice(&h[i * n..i * n + i + 1]);
        }
        self.tau.fill(0.0);
        self.arch.dispatch(Reduce {
            n,
            ld,
            a,
            tau: &mut self.tau,
            d: &mut self.d,
            e: &mut self.e,
            p: &mut self.p,
            w: &mut self.w,
        });
    }

    /// Diagonal of T (n entries).
    pub fn diagonal(&self) -> &[f64] {
        &self.d
    }

    /// Off-diagonal of T: entry i couples i and i + 1 (n − 1 entries, none for n ≤ 1).
    pub fn off_diagonal(&self) -> &[f64] {
        &self.e
    }

    /// x ← Qᵀ x = H_2 ⋯ H_{n−1} x (H_{n−1} applied first), O(n²).
    ///
    /// # Panics
    /// If `x.len() != n`.
    pub fn apply_qt(&self, x: &mut [f64]) {
        let n = self.n;
        assert_eq!(x.len(), n, "Tridiagonalizer::apply_qt: x must have n entries");
        self.arch.dispatch(Apply {
            ld: self.ld,
            a: &self.a[self.offset..],
            tau: &self.tau,
            x,
            transpose: true,
        });
    }

    /// y ← Q y = H_{n−1} ⋯ H_2 y (H_2 applied first), O(n²).
    ///
    /// # Panics
    /// If `y.len() != n`.
    pub fn apply_q(&self, y: &mut [f64]) {
        let n = self.n;
        assert_eq!(y.len(), n, "Tridiagonalizer::apply_q: y must have n entries");
        self.arch.dispatch(Apply {
            ld: self.ld,
            a: &self.a[self.offset..],
            tau: &self.tau,
            x: y,
            transpose: false,
        });
    }
}

/// The reduction, as one SIMD-dispatched operation.
struct Reduce<'a> {
    n: usize,
    ld: usize,
    a: &'a mut [f64],
    tau: &'a mut [f64],
    d: &'a mut [f64],
    e: &'a mut [f64],
    p: &'a mut [f64],
    w: &'a mut [f64],
}

impl WithSimd for Reduce<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Reduce { n, ld, a, tau, d, e, p, w } = self;
        // Row index of the reflector whose rank-2 update (with `w`) is still pending on the
        // leading block.
        let mut prev: Option<usize> = None;
        for i in (0..n).rev() {
            let (block, rest) = a.split_at_mut(i * ld);
            let (row_i, after) = rest.split_at_mut(ld.min(rest.len()));
            let row_i = &mut row_i[..=i];
            // Row j > i of `a` starts at after[(j − i − 1) ld].
            let prev_v = prev.map(|j| &after[(j - i - 1) * ld..(j - i - 1) * ld + j]);
            if let Some(vp) = prev_v {
                rank2_row(simd, row_i, vp, w);
            }
            d[i] = row_i[i];
            if i == 0 {
                break;
            }
            if i == 1 {
                // Nothing to annihilate; the pending update (if any) still applies to row 0.
                e[0] = row_i[0];
                continue;
            }
            let (t, beta) = make_reflector(simd, &mut row_i[..i]);
            tau[i] = t;
            e[i - 1] = beta;
            let v = &row_i[..i];
            if t == 0.0 {
                if let Some(vp) = prev_v {
                    for r in 0..i {
                        rank2_row(simd, &mut block[r * ld..r * ld + r + 1], vp, w);
                    }
                }
                prev = None;
                continue;
            }
            let p = &mut p[..i];
            p.fill(0.0);
            match prev_v {
                Some(vp) => fused_pass::<S, true>(simd, block, ld, i, vp, w, v, p),
                None => fused_pass::<S, false>(simd, block, ld, i, v, w, v, p),
            }
            // p ← τ B v; w = p − ½ τ (pᵀv) v.
            let pv = dot(simd, p, v);
            let alpha = -0.5 * t * t * pv;
            for ((w, &p), &v) in w[..i].iter_mut().zip(p.iter()).zip(v) {
                *w = t * p + alpha * v;
            }
            prev = Some(i);
        }
    }
}

/// The fused pass over rows 0..m of the leading block (row r at `block[r ld..]`, columns
/// 0..=r): applies the pending rank-2 update (`vp`, `wp`) when `UPDATE` and sets p = B vn
/// (`p` zero on entry), two rows at a time.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn fused_pass<S: Simd, const UPDATE: bool>(
    simd: S,
    block: &mut [f64],
    ld: usize,
    m: usize,
    vp: &[f64],
    wp: &[f64],
    vn: &[f64],
    p: &mut [f64],
) {
    let mut r = 0;
    while r + 1 < m {
        let (row0, row1) = block[r * ld..].split_at_mut(ld);
        let (acc0, acc1) =
            fused_pair::<S, UPDATE>(simd, &mut row0[..=r], &mut row1[..r + 2], vp, wp, vn, p);
        p[r] = acc0;
        p[r + 1] = acc1;
        r += 2;
    }
    if r < m {
        p[r] = fused_row::<S, UPDATE>(simd, &mut block[r * ld..r * ld + r + 1], vp, wp, vn, p);
    }
}

/// Q or Qᵀ applied to one vector, as one SIMD-dispatched operation.
struct Apply<'a> {
    ld: usize,
    a: &'a [f64],
    tau: &'a [f64],
    x: &'a mut [f64],
    transpose: bool,
}

impl WithSimd for Apply<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Apply { ld, a, tau, x, transpose } = self;
        let n = x.len();
        if transpose {
            for i in (2..n).rev() {
                reflect(simd, &a[i * ld..i * ld + i], tau[i], x);
            }
        } else {
            for i in 2..n {
                reflect(simd, &a[i * ld..i * ld + i], tau[i], x);
            }
        }
    }
}

/// x[0..m] ← (I − τ v vᵀ) x[0..m], m = `v.len()` (nothing when τ = 0).
#[inline(always)]
fn reflect<S: Simd>(simd: S, v: &[f64], tau: f64, x: &mut [f64]) {
    if tau != 0.0 {
        let x = &mut x[..v.len()];
        let s = tau * dot(simd, v, x);
        axpy(simd, -s, v, x);
    }
}

/// Builds the reflector of x = (x₂, α) in place (`dlarfg`): overwrites x with v = (x₂/(α − β), 1)
/// and returns (τ, β); returns (0, α) and v = e_last when ‖x₂‖ = 0. `x.len() ≥ 1`.
#[inline(always)]
fn make_reflector<S: Simd>(simd: S, x: &mut [f64]) -> (f64, f64) {
    let m = x.len();
    let (x2, last) = x.split_at_mut(m - 1);
    let alpha = last[0];
    last[0] = 1.0;
    let ss = dot(simd, x2, x2);
    let total = alpha * alpha + ss;
    // NaN stays on the plain path and propagates.
    let (xnorm, bnorm) = if (SUMSQ_MIN..=SUMSQ_MAX).contains(&total) || total.is_nan() {
        (ss.sqrt(), total.sqrt())
    } else {
        let scale = x2.iter().fold(alpha.abs(), |m, &x| m.max(x.abs()));
        if scale > 0.0 {
            let s: f64 = x2.iter().map(|&x| (x / scale) * (x / scale)).sum();
            let a = alpha / scale;
            (scale * s.sqrt(), scale * (a * a + s).sqrt())
        } else {
            (0.0, 0.0)
        }
    };
    if xnorm == 0.0 {
        x2.fill(0.0);
        return (0.0, alpha);
    }
    let beta = if alpha >= 0.0 { -bnorm } else { bnorm };
    let tau = (beta - alpha) / beta;
    // |α − β| = |α| + ‖x‖ ≥ ‖x₂‖ > 0: no cancellation.
    let denom = alpha - beta;
    if denom.abs() >= f64::MIN_POSITIVE {
        scale_in_place(simd, 1.0 / denom, x2);
    } else {
        for x in x2.iter_mut() {
            *x /= denom;
        }
    }
    (tau, beta)
}

/// Σ xᵢ yᵢ over `x.len()` entries (two SIMD accumulators).
#[inline(always)]
fn dot<S: Simd>(simd: S, x: &[f64], y: &[f64]) -> f64 {
    let y = &y[..x.len()];
    let (xh, xt) = S::as_simd_f64s(x);
    let (yh, yt) = S::as_simd_f64s(y);
    let k = xh.len();
    let yh = &yh[..k];
    let mut acc0 = simd.splat_f64s(0.0);
    let mut acc1 = simd.splat_f64s(0.0);
    let mut j = 0;
    while j + 1 < k {
        acc0 = simd.mul_add_e_f64s(xh[j], yh[j], acc0);
        acc1 = simd.mul_add_e_f64s(xh[j + 1], yh[j + 1], acc1);
        j += 2;
    }
    if j < k {
        acc0 = simd.mul_add_e_f64s(xh[j], yh[j], acc0);
    }
    let mut s = simd.reduce_sum_f64s(simd.add_f64s(acc0, acc1));
    for (&x, &y) in xt.iter().zip(yt) {
        s += x * y;
    }
    s
}

/// y ← y + α x over `x.len()` entries.
#[inline(always)]
fn axpy<S: Simd>(simd: S, alpha: f64, x: &[f64], y: &mut [f64]) {
    let y = &mut y[..x.len()];
    let (xh, xt) = S::as_simd_f64s(x);
    let (yh, yt) = S::as_mut_simd_f64s(y);
    let sa = simd.splat_f64s(alpha);
    for (y, &x) in yh.iter_mut().zip(xh) {
        *y = simd.mul_add_e_f64s(sa, x, *y);
    }
    for (y, &x) in yt.iter_mut().zip(xt) {
        *y += alpha * x;
    }
}

/// x ← α x.
#[inline(always)]
fn scale_in_place<S: Simd>(simd: S, alpha: f64, x: &mut [f64]) {
    let (xh, xt) = S::as_mut_simd_f64s(x);
    let sa = simd.splat_f64s(alpha);
    for x in xh.iter_mut() {
        *x = simd.mul_f64s(sa, *x);
    }
    for x in xt.iter_mut() {
        *x *= alpha;
    }
}

/// Row r of the pending rank-2 update, r = `row.len() − 1`:
/// row[c] ← row[c] − v[r] w[c] − w[r] v[c] for c ≤ r.
#[inline(always)]
fn rank2_row<S: Simd>(simd: S, row: &mut [f64], v: &[f64], w: &[f64]) {
    let len = row.len();
    let (v, w) = (&v[..len], &w[..len]);
    let (nvr, nwr) = (-v[len - 1], -w[len - 1]);
    let (rh, rt) = S::as_mut_simd_f64s(row);
    let (vh, vt) = S::as_simd_f64s(v);
    let (wh, wt) = S::as_simd_f64s(w);
    let (snv, snw) = (simd.splat_f64s(nvr), simd.splat_f64s(nwr));
    for ((a, &v), &w) in rh.iter_mut().zip(vh).zip(wh) {
        *a = simd.mul_add_e_f64s(snw, v, simd.mul_add_e_f64s(snv, w, *a));
    }
    for ((a, &v), &w) in rt.iter_mut().zip(vt).zip(wt) {
        *a = *a + nvr * w + nwr * v;
    }
}

/// Rows r = `row0.len() − 1` and r + 1 of the fused pass (see [`fused_row`]), sharing the
/// loads of `vp`, `wp`, `vn` and `p`. `p[r]` and `p[r + 1]` must be zero on entry; returns
/// their final values (row r's dot product plus row r + 1's term at column r, and row
/// r + 1's dot product).
#[inline(always)]
fn fused_pair<S: Simd, const UPDATE: bool>(
    simd: S,
    row0: &mut [f64],
    row1: &mut [f64],
    vp: &[f64],
    wp: &[f64],
    vn: &[f64],
    p: &mut [f64],
) -> (f64, f64) {
    let len = row0.len();
    let r = len - 1;
    let (row1, diag1) = row1.split_at_mut(len);
    let (nv0, nw0, nv1, nw1) = (-vp[r], -wp[r], -vp[r + 1], -wp[r + 1]);
    let (vn0, vn1) = (vn[r], vn[r + 1]);
    let (vp1, wp1) = (vp[r + 1], wp[r + 1]);
    let (vp, wp, vn, p) = (&vp[..len], &wp[..len], &vn[..len], &mut p[..len]);
    let (r0h, r0t) = S::as_mut_simd_f64s(row0);
    let (r1h, r1t) = S::as_mut_simd_f64s(row1);
    let (vph, vpt) = S::as_simd_f64s(vp);
    let (wph, wpt) = S::as_simd_f64s(wp);
    let (vnh, vnt) = S::as_simd_f64s(vn);
    let (ph, pt) = S::as_mut_simd_f64s(p);
    let k = r0h.len();
    let (r1h, vph, wph, vnh, ph) = (&mut r1h[..k], &vph[..k], &wph[..k], &vnh[..k], &mut ph[..k]);
    let (snv0, snw0) = (simd.splat_f64s(nv0), simd.splat_f64s(nw0));
    let (snv1, snw1) = (simd.splat_f64s(nv1), simd.splat_f64s(nw1));
    let (svn0, svn1) = (simd.splat_f64s(vn0), simd.splat_f64s(vn1));
    let zero = simd.splat_f64s(0.0);
    let (mut acc0a, mut acc0b, mut acc1a, mut acc1b) = (zero, zero, zero, zero);
    let mut j = 0;
    while j + 1 < k {
        let (mut a0, mut b0) = (r0h[j], r0h[j + 1]);
        let (mut a1, mut b1) = (r1h[j], r1h[j + 1]);
        if UPDATE {
            let (va, vb, wa, wb) = (vph[j], vph[j + 1], wph[j], wph[j + 1]);
            a0 = simd.mul_add_e_f64s(snw0, va, simd.mul_add_e_f64s(snv0, wa, a0));
            b0 = simd.mul_add_e_f64s(snw0, vb, simd.mul_add_e_f64s(snv0, wb, b0));
            a1 = simd.mul_add_e_f64s(snw1, va, simd.mul_add_e_f64s(snv1, wa, a1));
            b1 = simd.mul_add_e_f64s(snw1, vb, simd.mul_add_e_f64s(snv1, wb, b1));
            r0h[j] = a0;
            r0h[j + 1] = b0;
            r1h[j] = a1;
            r1h[j + 1] = b1;
        }
        let (na, nb) = (vnh[j], vnh[j + 1]);
        acc0a = simd.mul_add_e_f64s(a0, na, acc0a);
        acc0b = simd.mul_add_e_f64s(b0, nb, acc0b);
        acc1a = simd.mul_add_e_f64s(a1, na, acc1a);
        acc1b = simd.mul_add_e_f64s(b1, nb, acc1b);
        ph[j] = simd.mul_add_e_f64s(a1, svn1, simd.mul_add_e_f64s(a0, svn0, ph[j]));
        ph[j + 1] = simd.mul_add_e_f64s(b1, svn1, simd.mul_add_e_f64s(b0, svn0, ph[j + 1]));
        j += 2;
    }
    if j < k {
        let (mut a0, mut a1) = (r0h[j], r1h[j]);
        if UPDATE {
            a0 = simd.mul_add_e_f64s(snw0, vph[j], simd.mul_add_e_f64s(snv0, wph[j], a0));
            a1 = simd.mul_add_e_f64s(snw1, vph[j], simd.mul_add_e_f64s(snv1, wph[j], a1));
            r0h[j] = a0;
            r1h[j] = a1;
        }
        acc0a = simd.mul_add_e_f64s(a0, vnh[j], acc0a);
        acc1a = simd.mul_add_e_f64s(a1, vnh[j], acc1a);
        ph[j] = simd.mul_add_e_f64s(a1, svn1, simd.mul_add_e_f64s(a0, svn0, ph[j]));
    }
    let mut acc0 = simd.reduce_sum_f64s(simd.add_f64s(acc0a, acc0b));
    let mut acc1 = simd.reduce_sum_f64s(simd.add_f64s(acc1a, acc1b));
    for (((((a0, a1), &vp), &wp), &vn), p) in
        r0t.iter_mut().zip(r1t.iter_mut()).zip(vpt).zip(wpt).zip(vnt).zip(pt)
    {
        let (mut b0, mut b1) = (*a0, *a1);
        if UPDATE {
            b0 = b0 + nv0 * wp + nw0 * vp;
            b1 = b1 + nv1 * wp + nw1 * vp;
            *a0 = b0;
            *a1 = b1;
        }
        acc0 += b0 * vn;
        acc1 += b1 * vn;
        *p += b0 * vn0 + b1 * vn1;
    }
    // Diagonal of row r + 1.
    let mut dg = diag1[0];
    if UPDATE {
        dg = dg + nv1 * wp1 + nw1 * vp1;
        diag1[0] = dg;
    }
    acc1 += dg * vn1;
    // p[r] holds B[r, r] vn0 + B[r + 1, r] vn1 from the axpy; row r's term is its dot product.
    (acc0 + row1[r] * vn1, acc1)
}

/// One row r = `row.len() − 1` of the fused pass: applies the pending rank-2 update (with
/// `vp`, `wp`) when `UPDATE`, then accumulates the symmetric product B v with the new
/// reflector `vn`: p[c] += B[r, c] vn[r] for c ≤ r, and returns Σ_{c ≤ r} B[r, c] vn[c] (the
/// caller stores it in p[r], replacing the diagonal term the axpy added).
#[inline(always)]
fn fused_row<S: Simd, const UPDATE: bool>(
    simd: S,
    row: &mut [f64],
    vp: &[f64],
    wp: &[f64],
    vn: &[f64],
    p: &mut [f64],
) -> f64 {
    let len = row.len();
    let (vp, wp, vn, p) = (&vp[..len], &wp[..len], &vn[..len], &mut p[..len]);
    let (nvr, nwr) = (-vp[len - 1], -wp[len - 1]);
    let vnr = vn[len - 1];
    let (rh, rt) = S::as_mut_simd_f64s(row);
    let (vph, vpt) = S::as_simd_f64s(vp);
    let (wph, wpt) = S::as_simd_f64s(wp);
    let (vnh, vnt) = S::as_simd_f64s(vn);
    let (ph, pt) = S::as_mut_simd_f64s(p);
    let k = rh.len();
    let (vph, wph, vnh, ph) = (&vph[..k], &wph[..k], &vnh[..k], &mut ph[..k]);
    let (snv, snw, svn) = (simd.splat_f64s(nvr), simd.splat_f64s(nwr), simd.splat_f64s(vnr));
    let mut acc0 = simd.splat_f64s(0.0);
    let mut acc1 = simd.splat_f64s(0.0);
    let mut j = 0;
    while j + 1 < k {
        let mut a0 = rh[j];
        let mut a1 = rh[j + 1];
        if UPDATE {
            a0 = simd.mul_add_e_f64s(snw, vph[j], simd.mul_add_e_f64s(snv, wph[j], a0));
            a1 = simd.mul_add_e_f64s(snw, vph[j + 1], simd.mul_add_e_f64s(snv, wph[j + 1], a1));
            rh[j] = a0;
            rh[j + 1] = a1;
        }
        acc0 = simd.mul_add_e_f64s(a0, vnh[j], acc0);
        acc1 = simd.mul_add_e_f64s(a1, vnh[j + 1], acc1);
        ph[j] = simd.mul_add_e_f64s(a0, svn, ph[j]);
        ph[j + 1] = simd.mul_add_e_f64s(a1, svn, ph[j + 1]);
        j += 2;
    }
    if j < k {
        let mut a0 = rh[j];
        if UPDATE {
            a0 = simd.mul_add_e_f64s(snw, vph[j], simd.mul_add_e_f64s(snv, wph[j], a0));
            rh[j] = a0;
        }
        acc0 = simd.mul_add_e_f64s(a0, vnh[j], acc0);
        ph[j] = simd.mul_add_e_f64s(a0, svn, ph[j]);
    }
    let mut acc = simd.reduce_sum_f64s(simd.add_f64s(acc0, acc1));
    for ((((a, &vp), &wp), &vn), p) in rt.iter_mut().zip(vpt).zip(wpt).zip(vnt).zip(pt) {
        let mut b = *a;
        if UPDATE {
            b = b + nvr * wp + nwr * vp;
            *a = b;
        }
        acc += b * vn;
        *p += b * vnr;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::sym_eigen;
    use esso_core::portable::{standard_normal, uniform01};
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::evd;
    use faer::{Mat, Par};
    use ndarray::Array2;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const SIZES: [usize; 10] = [0, 1, 2, 3, 7, 16, 33, 64, 128, 150];

    /// Row-major symmetric n × n with standard normal entries.
    fn random_symmetric(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let x = standard_normal(rng);
                h[i * n + j] = x;
                h[j * n + i] = x;
            }
        }
        h
    }

    /// H = diag(c) + Bᵀ A B with B k × n, A symmetric k × k, and about half of the c_i zero:
    /// the shape of a layer Hessian.
    fn diag_plus_low_rank(n: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let b: Vec<f64> = (0..k * n).map(|_| standard_normal(rng)).collect();
        let a = random_symmetric(k, rng);
        let mut ab = vec![0.0; k * n];
        for r in 0..k {
            for s in 0..k {
                for j in 0..n {
                    ab[r * n + j] += a[r * k + s] * b[s * n + j];
                }
            }
        }
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = (0..k).map(|r| b[r * n + i] * ab[r * n + j]).sum();
            }
        }
        for i in 0..n {
            if uniform01(rng) < 0.5 {
                h[i * n + i] += standard_normal(rng);
            }
        }
        // Exact symmetry (the products above are symmetric only up to rounding).
        for i in 0..n {
            for j in 0..i {
                h[j * n + i] = h[i * n + j];
            }
        }
        h
    }

    fn frobenius(h: &[f64]) -> f64 {
        h.iter().map(|x| x * x).sum::<f64>().sqrt()
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    /// Dense Q, column j = Q e_j, row-major.
    fn dense_q(t: &Tridiagonalizer) -> Vec<f64> {
        let n = t.n();
        let mut q = vec![0.0; n * n];
        let mut col = vec![0.0; n];
        for j in 0..n {
            col.fill(0.0);
            col[j] = 1.0;
            t.apply_q(&mut col);
            for r in 0..n {
                q[r * n + j] = col[r];
            }
        }
        q
    }

    fn dense_t(t: &Tridiagonalizer) -> Vec<f64> {
        let n = t.n();
        let mut m = vec![0.0; n * n];
        for (i, &d) in t.diagonal().iter().enumerate() {
            m[i * n + i] = d;
        }
        for (i, &e) in t.off_diagonal().iter().enumerate() {
            m[(i + 1) * n + i] = e;
            m[i * n + i + 1] = e;
        }
        m
    }

    /// faer's tridiagonal (diagonal, subdiagonal) of the lower triangle of row-major `h`.
    fn faer_tridiagonal(h: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
        if n == 0 {
            return (vec![], vec![]);
        }
        let par = Par::Seq;
        let bs = faer::linalg::qr::no_pivoting::factor::recommended_block_size::<f64>(n, n).max(1);
        let mut mem = MemBuffer::new(evd::tridiag::tridiag_in_place_scratch::<f64>(
            n,
            par,
            Default::default(),
        ));
        let mut trid = Mat::<f64>::from_fn(n, n, |i, j| if j <= i { h[i * n + j] } else { 0.0 });
        let mut householder = Mat::<f64>::zeros(bs, n - 1);
        evd::tridiag::tridiag_in_place(
            trid.as_mut(),
            householder.as_mut(),
            par,
            MemStack::new(&mut mem),
            Default::default(),
        );
        ((0..n).map(|i| trid[(i, i)]).collect(), (0..n - 1).map(|i| trid[(i + 1, i)]).collect())
    }

    /// Errors of one reduction, each relative to its natural scale.
    #[derive(Debug)]
    struct Errors {
        /// max |Q T Qᵀ − H| / ‖H‖_F.
        reconstruction: f64,
        /// max |QᵀQ − I|.
        orthogonality: f64,
        /// max |Q Qᵀ x − x| / max |x| and max |Qᵀ x − (dense Q)ᵀ x| / max |x|.
        round_trip: f64,
        /// max |λ(T) − λ(H)| / ‖H‖_F.
        eigenvalues: f64,
        /// max over k of |d − d_faer| and ||e| − |e_faer|| / ‖H‖_F (faer on J H J, J the
        /// reversal, whose tridiagonal is ours reversed: both fix the same basis vector).
        faer: f64,
    }

    /// Reduces H (strict upper triangle poisoned with NaN, which must not be read) and
    /// measures every error.
    fn reduce_and_measure(h: &[f64], n: usize) -> (Tridiagonalizer, Errors) {
        reduce_and_measure_with(h, n, Arch::new())
    }

    /// [`reduce_and_measure`] with the given instruction set.
    fn reduce_and_measure_with(h: &[f64], n: usize, arch: Arch) -> (Tridiagonalizer, Errors) {
        let mut input = h.to_vec();
        for i in 0..n {
            for j in i + 1..n {
                input[i * n + j] = f64::NAN;
            }
        }
        let mut t = Tridiagonalizer::new(n);
        t.arch = arch;
        t.reduce(&input);
        assert_eq!((t.diagonal().len(), t.off_diagonal().len()), (n, n.saturating_sub(1)));
        // Measure on H / s and T / s, s a power of two near max |H| (exact), so that the
        // oracle (norms, products, faer) neither overflows nor underflows.
        let hmax = h.iter().fold(0.0, |m: f64, x| m.max(x.abs()));
        let s = if hmax > 0.0 {
            let e = (hmax.log2().floor() as i64).clamp(-1022, 1023);
            f64::from_bits(((1023 + e) as u64) << 52)
        } else {
            1.0
        };
        let h: Vec<f64> = h.iter().map(|x| x / s).collect();
        let h = &h[..];
        let d: Vec<f64> = t.diagonal().iter().map(|x| x / s).collect();
        let e: Vec<f64> = t.off_diagonal().iter().map(|x| x / s).collect();
        let norm = frobenius(h);
        let rel = |x: f64| if norm > 0.0 { x / norm } else { x };

        let q = dense_q(&t);
        let tm: Vec<f64> = dense_t(&t).iter().map(|x| x / s).collect();
        let mut qtq = vec![0.0; n * n];
        let mut qt = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                qtq[i * n + j] = (0..n).map(|r| q[r * n + i] * q[r * n + j]).sum::<f64>()
                    - if i == j { 1.0 } else { 0.0 };
                let lo = j.saturating_sub(1);
                let hi = (j + 2).min(n);
                qt[i * n + j] = (lo..hi).map(|r| q[i * n + r] * tm[r * n + j]).sum();
            }
        }
        let mut qtqt = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                qtqt[i * n + j] = (0..n).map(|r| qt[i * n + r] * q[j * n + r]).sum();
            }
        }
        let reconstruction = rel(max_abs_diff(&qtqt, h));
        let orthogonality = qtq.iter().fold(0.0, |m: f64, x| m.max(x.abs()));

        let mut rng = ChaCha8Rng::seed_from_u64(n as u64 + 1000);
        let x: Vec<f64> = (0..n).map(|_| standard_normal(&mut rng)).collect();
        let xmax = x.iter().fold(0.0, |m: f64, v| m.max(v.abs()));
        let mut y = x.clone();
        t.apply_qt(&mut y);
        let dense_qtx: Vec<f64> =
            (0..n).map(|j| (0..n).map(|r| q[r * n + j] * x[r]).sum()).collect();
        let qt_err = max_abs_diff(&y, &dense_qtx);
        t.apply_q(&mut y);
        let round_trip = if n > 0 { max_abs_diff(&y, &x).max(qt_err) / xmax } else { 0.0 };

        let hm = Array2::from_shape_vec((n, n), h.to_vec()).expect("n × n");
        let tmm = Array2::from_shape_vec((n, n), tm).expect("n × n");
        let (lh, _) = sym_eigen(&hm, false).expect("eigenvalues of H");
        let (lt, _) = sym_eigen(&tmm, false).expect("eigenvalues of T");
        let eigenvalues = rel(max_abs_diff(
            lh.as_slice().expect("contiguous"),
            lt.as_slice().expect("contiguous"),
        ));

        let mut reversed = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                reversed[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
            }
        }
        let (fd, fe) = faer_tridiagonal(&reversed, n);
        let mut faer = 0.0f64;
        for k in 0..n {
            faer = faer.max((d[k] - fd[n - 1 - k]).abs());
        }
        for k in 0..n.saturating_sub(1) {
            faer = faer.max((e[k].abs() - fe[n - 2 - k].abs()).abs());
        }
        let faer = rel(faer);
        (t, Errors { reconstruction, orthogonality, round_trip, eigenvalues, faer })
    }

    /// Asserts the brief's tolerances, scaled with n.
    fn assert_accurate(errors: &Errors, n: usize, what: &str) {
        let nf = n.max(1) as f64;
        let ok = errors.reconstruction <= 1e-15 * nf
            && errors.orthogonality <= 1e-15 * nf
            && errors.round_trip <= 1e-15 * nf
            && errors.eigenvalues <= 1e-14
            && errors.faer <= 1e-13;
        assert!(ok, "{what}, n = {n}: {errors:?}");
    }

    #[test]
    fn random_symmetric_matrices_of_every_size() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for n in SIZES {
            let h = random_symmetric(n, &mut rng);
            let (_, errors) = reduce_and_measure(&h, n);
            assert_accurate(&errors, n, "random symmetric");
        }
    }

    #[test]
    fn diagonal_plus_low_rank_like_a_layer_hessian() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for (n, k) in [(7, 2), (33, 8), (128, 64)] {
            let h = diag_plus_low_rank(n, k, &mut rng);
            let (_, errors) = reduce_and_measure(&h, n);
            assert_accurate(&errors, n, "diag + low rank");
        }
    }

    #[test]
    fn tridiagonal_and_diagonal_inputs_are_returned_exactly_with_q_the_identity() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for n in SIZES {
            for diagonal_only in [false, true] {
                let mut h = vec![0.0; n * n];
                for i in 0..n {
                    h[i * n + i] = standard_normal(&mut rng);
                    if i > 0 && !diagonal_only {
                        let x = standard_normal(&mut rng);
                        h[i * n + i - 1] = x;
                        h[(i - 1) * n + i] = x;
                    }
                }
                let (t, errors) = reduce_and_measure(&h, n);
                assert_accurate(&errors, n, "tridiagonal");
                for i in 0..n {
                    assert_eq!(t.diagonal()[i], h[i * n + i]);
                    if i > 0 {
                        assert_eq!(t.off_diagonal()[i - 1], h[i * n + i - 1]);
                    }
                }
                assert!(t.tau.iter().all(|&tau| tau == 0.0), "identity reflectors");
                let identity: Vec<f64> =
                    (0..n * n).map(|k| if k / n == k % n { 1.0 } else { 0.0 }).collect();
                assert_eq!(dense_q(&t), identity);
            }
        }
    }

    #[test]
    fn zero_matrix_gives_zero_t_and_identity_q() {
        for n in SIZES {
            let (t, errors) = reduce_and_measure(&vec![0.0; n * n], n);
            assert_eq!(
                (errors.reconstruction, errors.orthogonality, errors.eigenvalues),
                (0.0, 0.0, 0.0)
            );
            assert!(t.diagonal().iter().chain(t.off_diagonal()).all(|&x| x == 0.0));
        }
    }

    #[test]
    fn columns_already_reduced_at_some_steps() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for n in [3, 7, 16, 33, 64] {
            // Block diagonal diag(B1, B2): the step at the block boundary has nothing to
            // annihilate while the previous step's update is still pending.
            for m in [1, n / 2, n - 1] {
                let mut h = random_symmetric(n, &mut rng);
                for i in m..n {
                    for j in 0..m {
                        h[i * n + j] = 0.0;
                        h[j * n + i] = 0.0;
                    }
                }
                let (t, errors) = reduce_and_measure(&h, n);
                assert_accurate(&errors, n, "block diagonal");
                if m >= 1 {
                    assert_eq!(t.off_diagonal()[m - 1], 0.0, "decoupled at the block boundary");
                }
            }
            // The last row already reduced (first reflector the identity), and every
            // third row too.
            let mut h = random_symmetric(n, &mut rng);
            for i in (2..n).rev().step_by(3) {
                for j in 0..i - 1 {
                    h[i * n + j] = 0.0;
                    h[j * n + i] = 0.0;
                }
            }
            let (t, errors) = reduce_and_measure(&h, n);
            assert_accurate(&errors, n, "rows already reduced");
            assert_eq!(t.tau[n - 1], 0.0);
        }
    }

    #[test]
    fn huge_tiny_and_unbalanced_scalings() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for n in [2, 3, 16, 33, 128] {
            let base = random_symmetric(n, &mut rng);
            for scale in [1e150, 1e-150, 1e-300, 1e200] {
                let h: Vec<f64> = base.iter().map(|x| x * scale).collect();
                let (t, errors) = reduce_and_measure(&h, n);
                assert_accurate(&errors, n, &format!("scaled by {scale:e}"));
                assert!(t.diagonal().iter().chain(t.off_diagonal()).all(|x| x.is_finite()));
            }
            // Rows and columns of very different sizes (D H D with D spanning 1e±10).
            let d: Vec<f64> =
                (0..n).map(|i| 10f64.powf(20.0 * i as f64 / n as f64 - 10.0)).collect();
            let h: Vec<f64> = (0..n * n).map(|k| base[k] * d[k / n] * d[k % n]).collect();
            let (_, errors) = reduce_and_measure(&h, n);
            assert_accurate(&errors, n, "graded");
        }
    }

    #[test]
    fn reflector_entries_below_the_underflow_of_their_squares() {
        // alpha of order one, the rest of the column around 1e-170 (squares underflow):
        // dropping them is an error far below ε ‖H‖.
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let n = 16;
        let mut h = random_symmetric(n, &mut rng);
        for j in 0..n - 2 {
            h[(n - 1) * n + j] *= 1e-170;
            h[j * n + n - 1] *= 1e-170;
        }
        let (_, errors) = reduce_and_measure(&h, n);
        assert_accurate(&errors, n, "underflowing squares");
    }

    #[test]
    fn reuse_matches_a_fresh_workspace_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 33;
        let h1 = random_symmetric(n, &mut rng);
        let mut h2 = random_symmetric(n, &mut rng);
        // An identity reflector in h2 where h1 has a real one: stale τ must not survive.
        for j in 0..n - 2 {
            h2[(n - 1) * n + j] = 0.0;
        }
        let mut reused = Tridiagonalizer::new(n);
        reused.reduce(&h1);
        reused.reduce(&h2);
        let mut fresh = Tridiagonalizer::new(n);
        fresh.reduce(&h2);
        assert_eq!(reused.diagonal(), fresh.diagonal());
        assert_eq!(reused.off_diagonal(), fresh.off_diagonal());
        let x: Vec<f64> = (0..n).map(|_| standard_normal(&mut rng)).collect();
        let (mut a, mut b) = (x.clone(), x);
        reused.apply_qt(&mut a);
        fresh.apply_qt(&mut b);
        assert_eq!(a, b);
        reused.apply_q(&mut a);
        fresh.apply_q(&mut b);
        assert_eq!(a, b);
        let cloned = fresh.clone();
        assert_eq!(cloned.diagonal(), fresh.diagonal());
    }

    #[test]
    fn non_finite_input_propagates_without_panicking() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let n = 16;
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for (i, j) in [(n - 1, 0), (n - 1, n - 2), (5, 3), (0, 0), (n / 2, n / 2)] {
                let mut h = random_symmetric(n, &mut rng);
                h[i * n + j] = bad;
                let mut t = Tridiagonalizer::new(n);
                t.reduce(&h);
                let poisoned = t.diagonal().iter().chain(t.off_diagonal()).any(|x| !x.is_finite());
                assert!(poisoned, "{bad} at ({i}, {j}) must show in T");
                let mut x = vec![1.0; n];
                t.apply_qt(&mut x);
                t.apply_q(&mut x);
            }
        }
    }

    #[test]
    fn scalar_fallback_is_as_accurate_and_agrees_with_the_simd_path() {
        // The same reduction without SIMD (what a machine without AVX2/FMA runs).
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for n in [2, 3, 7, 16, 33, 64] {
            let h = diag_plus_low_rank(n, n / 2, &mut rng);
            let (scalar, errors) = reduce_and_measure_with(&h, n, Arch::Scalar);
            assert_accurate(&errors, n, "scalar fallback");
            let mut simd = Tridiagonalizer::new(n);
            simd.reduce(&h);
            let norm = frobenius(&h);
            assert!(max_abs_diff(simd.diagonal(), scalar.diagonal()) <= 1e-13 * norm);
            let abs = |t: &Tridiagonalizer| -> Vec<f64> {
                t.off_diagonal().iter().map(|x| x.abs()).collect()
            };
            assert!(max_abs_diff(&abs(&simd), &abs(&scalar)) <= 1e-13 * norm, "n = {n}");
        }
    }

    #[test]
    #[should_panic(expected = "h must be n × n")]
    fn reduce_rejects_a_wrong_length() {
        Tridiagonalizer::new(3).reduce(&[0.0; 8]);
    }

    #[test]
    #[should_panic(expected = "x must have n entries")]
    fn apply_qt_rejects_a_wrong_length() {
        Tridiagonalizer::new(3).apply_qt(&mut [0.0; 2]);
    }

    #[test]
    #[should_panic(expected = "y must have n entries")]
    fn apply_q_rejects_a_wrong_length() {
        Tridiagonalizer::new(3).apply_q(&mut [0.0; 4]);
    }
}

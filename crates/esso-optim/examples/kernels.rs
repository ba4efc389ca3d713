//! Development probe: faer kernel timings for the 784-128 layer shapes.
#![allow(clippy::unwrap_used, missing_docs)]
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use std::time::Instant;

fn time(name: &str, mut f: impl FnMut()) {
    for _ in 0..100 {
        f();
    }
    let n = 5000;
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    println!("{name}: {:.2} us", t.elapsed().as_secs_f64() / n as f64 * 1e6);
}

fn main() {
    let (o, i) = (128, 784);
    let mut w: Vec<f64> = (0..o * i).map(|k| (k as f64 * 0.001).sin()).collect();
    let a: Vec<f64> = (0..i).map(|k| (k as f64 * 0.01).cos()).collect();
    let mut z = vec![0.0; o];
    let d: Vec<f64> = (0..o).map(|k| (k as f64 * 0.1).cos() * 1e-6).collect();
    time("matvec z = W a (row-major as A W^T)", || {
        matmul(
            MatMut::from_row_major_slice_mut(&mut z, 1, o),
            Accum::Replace,
            MatRef::from_row_major_slice(&a, 1, i),
            MatRef::from_row_major_slice(&w, o, i).transpose(),
            1.0,
            Par::Seq,
        )
    });
    time("matvec z = W a (col vec)", || {
        matmul(
            MatMut::from_column_major_slice_mut(&mut z, o, 1),
            Accum::Replace,
            MatRef::from_row_major_slice(&w, o, i),
            MatRef::from_column_major_slice(&a, i, 1),
            1.0,
            Par::Seq,
        )
    });
    time("manual dots", || {
        for (r, zr) in w.chunks_exact(i).zip(z.iter_mut()) {
            let mut acc = [0.0; 4];
            for (x, y) in r.chunks_exact(4).zip(a.chunks_exact(4)) {
                for k in 0..4 {
                    acc[k] += x[k] * y[k];
                }
            }
            *zr = acc.iter().sum();
        }
    });
    time("rank1 W += d a^T (gemm k=1)", || {
        matmul(
            MatMut::from_row_major_slice_mut(&mut w, o, i),
            Accum::Add,
            MatRef::from_row_major_slice(&d, 1, o).transpose(),
            MatRef::from_row_major_slice(&a, 1, i),
            -1.0,
            Par::Seq,
        )
    });
    time("manual rank1 rows", || {
        for (r, &dr) in w.chunks_exact_mut(i).zip(&d) {
            for (x, &y) in r.iter_mut().zip(&a) {
                *x -= dr * y;
            }
        }
    });
    time("squared norm", || {
        std::hint::black_box(faer::ColRef::from_slice(&w).squared_norm_l2());
    });
    let mut q: Vec<f64> = (0..128 * 128).map(|k| ((k * 7 % 13) as f64).sin()).collect();
    for r in 0..128 {
        for c in 0..r {
            q[r * 128 + c] = q[c * 128 + r];
        }
    }
    let qm = MatRef::from_row_major_slice(&q, 128, 128);
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::evd;
    for n in [128usize, 64] {
        let qm = qm.submatrix(0, 0, n, n);
        let mut s = faer::diag::Diag::<f64>::zeros(n);
        let mut u = faer::Mat::<f64>::zeros(n, n);
        let mut mem = MemBuffer::new(evd::self_adjoint_evd_scratch::<f64>(
            n,
            evd::ComputeEigenvectors::Yes,
            Par::Seq,
            Default::default(),
        ));
        time(&format!("evd {n} with vectors"), || {
            evd::self_adjoint_evd(
                qm,
                s.as_mut(),
                Some(u.as_mut()),
                Par::Seq,
                MemStack::new(&mut mem),
                Default::default(),
            )
            .unwrap()
        });
        time(&format!("evd {n} values only"), || {
            evd::self_adjoint_evd(
                qm,
                s.as_mut(),
                None,
                Par::Seq,
                MemStack::new(&mut mem),
                Default::default(),
            )
            .unwrap()
        });
        let mut t = faer::Mat::<f64>::zeros(n, n);
        let mut h = faer::Mat::<f64>::zeros(
            1.max(faer::linalg::qr::no_pivoting::factor::recommended_block_size::<f64>(n, n)),
            n - 1,
        );
        let mut mem2 = MemBuffer::new(evd::tridiag::tridiag_in_place_scratch::<f64>(
            n,
            Par::Seq,
            Default::default(),
        ));
        time(&format!("tridiag {n}"), || {
            t.copy_from(qm);
            evd::tridiag::tridiag_in_place(
                t.as_mut(),
                h.as_mut(),
                Par::Seq,
                MemStack::new(&mut mem2),
                Default::default(),
            );
        });
        let b = faer::Mat::<f64>::from_fn(64, n, |i, j| ((i * 3 + j) as f64).sin());
        let hh = faer::Mat::<f64>::from_fn(64, 64, |i, j| ((i + j) as f64).cos());
        let mut x = faer::Mat::<f64>::zeros(64, n);
        let mut y = faer::Mat::<f64>::zeros(n, n);
        time(&format!("H B then B^T X, 64 -> {n}"), || {
            matmul(x.as_mut(), Accum::Replace, hh.as_ref(), b.as_ref(), 1.0, Par::Seq);
            matmul(y.as_mut(), Accum::Replace, b.transpose(), x.as_ref(), 1.0, Par::Seq);
        });
    }
}

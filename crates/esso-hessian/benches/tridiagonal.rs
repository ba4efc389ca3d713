//! Criterion benchmark of the tridiagonal kernel (work in progress).

fn main() {}

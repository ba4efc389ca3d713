//! Criterion benchmark of the householder kernel (work in progress).

fn main() {}

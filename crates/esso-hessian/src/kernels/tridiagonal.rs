//! Divide and conquer for symmetric tridiagonal matrices (work in progress).

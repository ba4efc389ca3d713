//! Householder tridiagonalisation (work in progress).

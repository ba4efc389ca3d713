//! esso-hessian

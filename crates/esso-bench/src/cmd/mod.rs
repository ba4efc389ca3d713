//! One module per `esso` subcommand.

pub mod fetch;
pub mod hessian;

//! One module per `esso` subcommand.

pub mod fetch;
pub mod hessian;
pub mod run;
pub mod summarize;

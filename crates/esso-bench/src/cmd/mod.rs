//! One module per `esso` subcommand.

pub mod bench;
pub mod fetch;
pub mod hessian;
pub mod run;
pub mod summarize;

//! One module per `esso` subcommand.

pub mod analyze;
pub mod bench;
pub mod cost;
pub mod exactness;
pub mod fetch;
pub mod figures;
pub mod hessian;
pub mod run;
pub mod summarize;

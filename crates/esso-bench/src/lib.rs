//! # esso-bench
//!
//! Experiments from config files, results in HDF5, the `esso` command line and the
//! benchmarks. The only crate that writes results files.

pub mod analysis;
pub mod bench;
pub mod config;
pub mod cost;
pub mod exactness;
pub mod figures;
pub mod footprint;
pub mod results;
pub mod runner;
pub mod summary;
pub mod tomlpath;

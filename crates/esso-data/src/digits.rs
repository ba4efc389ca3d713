//! The embedded 8x8 digits (UCI optdigits, as packaged by scikit-learn): no download needed.

use std::io::Read;

use flate2::read::GzDecoder;
use ndarray::Array2;

use crate::dataset::{Dataset, Split};
use crate::error::{DataError, Result};

/// The embedded file: scikit-learn 1.9.1's `sklearn/datasets/data/digits.csv.gz`, unchanged.
///
/// 1797 lines of 65 integers: 64 pixel counts in `0..=16` (8x8, row-major), then the label.
/// Provenance and licences (data CC BY 4.0, UCI; packaging BSD-3, scikit-learn) are in
/// `crates/esso-data/data/LICENSE.md`.
pub const DIGITS_CSV_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");

/// sha256 of [`DIGITS_CSV_GZ`] (checked by a test).
pub const DIGITS_CSV_GZ_SHA256: &str =
    "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22";

/// Number of samples in the digits set.
pub const DIGITS_N_SAMPLES: usize = 1797;

/// Number of training samples: the first 1347 lines (75 %) are the training split and the
/// last 450 the test split.
pub const DIGITS_N_TRAIN: usize = 1347;

/// Pixels per digit image (8x8).
pub const DIGITS_N_FEATURES: usize = 64;

/// Largest pixel count; pixels are divided by it to lie in [0, 1].
const DIGITS_MAX_PIXEL: f64 = 16.0;

/// The 8x8 digits with the fixed split, pixels scaled to [0, 1] (divided by 16).
///
/// The split is by file order: samples `0..1347` train, `1347..1797` test, with class counts
/// train `[135, 136, 134, 136, 133, 137, 134, 134, 133, 135]` and test
/// `[43, 46, 43, 47, 48, 45, 47, 45, 41, 45]`. The name is `"digits"`, 10 classes.
///
/// # Errors
/// [`DataError::EmbeddedCsv`] if the embedded file does not parse (never expected: a test
/// checks it).
///
/// # Examples
/// ```
/// let digits = esso_data::digits()?;
/// assert_eq!(digits.train().features().dim(), (1347, 64));
/// assert_eq!(digits.test().n_samples(), 450);
/// # Ok::<(), esso_data::DataError>(())
/// ```
pub fn digits() -> Result<Dataset> {
    let mut text = String::new();
    GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .map_err(|e| DataError::EmbeddedCsv { line_idx: 0, reason: e.to_string() })?;
    let mut pixels = Vec::with_capacity(DIGITS_N_SAMPLES * DIGITS_N_FEATURES);
    let mut labels = Vec::with_capacity(DIGITS_N_SAMPLES);
    for (line_idx, line) in text.lines().enumerate() {
        let bad = |reason: String| DataError::EmbeddedCsv { line_idx, reason };
        let values: Vec<u8> = line
            .split(',')
            .map(|v| v.trim().parse::<u8>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let Some((&label, row)) = values.split_last() else {
            return Err(bad("empty line".to_owned()));
        };
        if row.len() != DIGITS_N_FEATURES {
            return Err(bad(format!("{} pixels", row.len())));
        }
        pixels.extend(row.iter().map(|&p| f64::from(p) / DIGITS_MAX_PIXEL));
        labels.push(usize::from(label));
    }
    if labels.len() != DIGITS_N_SAMPLES {
        return Err(DataError::EmbeddedCsv {
            line_idx: labels.len(),
            reason: format!("{} samples, expected {DIGITS_N_SAMPLES}", labels.len()),
        });
    }
    let features = Array2::from_shape_vec((DIGITS_N_SAMPLES, DIGITS_N_FEATURES), pixels)
        .map_err(|e| DataError::EmbeddedCsv { line_idx: 0, reason: e.to_string() })?;
    let all = Split::new(features, labels, None)?;
    let train = all.select(&(0..DIGITS_N_TRAIN).collect::<Vec<_>>());
    let test = all.select(&(DIGITS_N_TRAIN..DIGITS_N_SAMPLES).collect::<Vec<_>>());
    Dataset::new("digits", 10, train, test)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn embedded_file_has_the_documented_hash() {
        let hash = crate::fetch::hex(&Sha256::digest(DIGITS_CSV_GZ));
        assert_eq!(hash, DIGITS_CSV_GZ_SHA256);
    }

    #[test]
    fn digits_have_the_documented_shapes_counts_and_range() {
        let ds = digits().unwrap();
        assert_eq!(ds.name(), "digits");
        assert_eq!(ds.n_classes(), 10);
        assert_eq!(ds.train().features().dim(), (1347, 64));
        assert_eq!(ds.test().features().dim(), (450, 64));
        assert!(ds.train().targets().is_none());
        assert_eq!(ds.train().class_counts(10), [135, 136, 134, 136, 133, 137, 134, 134, 133, 135]);
        assert_eq!(ds.test().class_counts(10), [43, 46, 43, 47, 48, 45, 47, 45, 41, 45]);
        assert_eq!(&ds.train().labels()[..12], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
        let all = ds.train().features().iter().chain(ds.test().features());
        let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        assert_eq!((lo, hi), (0.0, 1.0));
        // First row of the file: 0,0,5,13,9,1,0,0,…
        assert_eq!(ds.train().features()[[0, 2]], 5.0 / 16.0);
        assert_eq!(ds.train().features()[[0, 3]], 13.0 / 16.0);
    }
}

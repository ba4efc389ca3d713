//! Synthetic datasets for tests and small experiments: Gaussian blobs, two spirals, and a
//! teacher network for regression.
//!
//! Each generator takes a config struct (no `Default`: every number is a choice) and is a
//! pure function of it, bit-identical on every platform (see [`crate::portable`]). Train and
//! test samples are drawn from the same stream, train first.

use ndarray::Array2;

use crate::dataset::{Dataset, Split};
use crate::error::{DataError, Result};
use esso_core::portable::{
    derived_rng, portable_sin_cos, portable_tanh, standard_normal, uniform01,
};

/// Tag of the synthetic-data streams.
const SYNTHETIC_TAG: &[u8; 16] = b"esso-synth---v1.";

/// Index of each generator's random stream (the seed is the config's).
const BLOBS_STREAM: u64 = 1;
const SPIRALS_STREAM: u64 = 2;
const TEACHER_STREAM: u64 = 3;

fn invalid(name: &'static str, value: impl std::fmt::Display, reason: &'static str) -> DataError {
    DataError::InvalidParam { name, value: value.to_string(), reason }
}

fn check_finite_nonneg(name: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(name, value, "must be finite and >= 0"))
    }
}

/// Parameters of [`blobs`]: isotropic Gaussian clusters, one per class.
#[derive(Debug, Clone, PartialEq)]
pub struct BlobsConfig {
    /// Number of classes (clusters), at least 1.
    pub n_classes: usize,
    /// Dimension of the samples, at least 1.
    pub n_features: usize,
    /// Training samples per class.
    pub n_train_per_class: usize,
    /// Test samples per class.
    pub n_test_per_class: usize,
    /// Cluster centres are uniform in `[−center_box, center_box]^n_features`.
    pub center_box: f64,
    /// Standard deviation of every coordinate around its centre.
    pub std: f64,
    /// Seed of the draw.
    pub seed: u64,
}

impl BlobsConfig {
    /// The set `load("blobs")` returns: 3 classes in 2-D, 200 train and 100 test samples per
    /// class, centres in [−5, 5]², std 1, seed 0.
    pub fn standard() -> Self {
        BlobsConfig {
            n_classes: 3,
            n_features: 2,
            n_train_per_class: 200,
            n_test_per_class: 100,
            center_box: 5.0,
            std: 1.0,
            seed: 0,
        }
    }
}

/// Gaussian blobs: class `c` is `N(μ_c, std² I)` with centres `μ_c` drawn uniformly in the box.
///
/// Samples cycle through the classes (sample `i` has class `i mod n_classes`). The name is
/// `"blobs"`; there are no regression targets.
///
/// # Errors
/// [`DataError::InvalidParam`] for zero classes or features, or a negative or non-finite
/// `center_box` or `std`.
///
/// # Examples
/// ```
/// let cfg = esso_data::BlobsConfig { n_classes: 4, ..esso_data::BlobsConfig::standard() };
/// let ds = esso_data::blobs(&cfg)?;
/// assert_eq!(ds.train().features().dim(), (800, 2));
/// assert_eq!(ds.test().class_counts(4), [100; 4]);
/// # Ok::<(), esso_data::DataError>(())
/// ```
pub fn blobs(cfg: &BlobsConfig) -> Result<Dataset> {
    if cfg.n_classes == 0 {
        return Err(invalid("n_classes", 0, "must be at least 1"));
    }
    if cfg.n_features == 0 {
        return Err(invalid("n_features", 0, "must be at least 1"));
    }
    check_finite_nonneg("center_box", cfg.center_box)?;
    check_finite_nonneg("std", cfg.std)?;
    let mut rng = derived_rng(cfg.seed, BLOBS_STREAM, SYNTHETIC_TAG);
    let centers = Array2::from_shape_simple_fn((cfg.n_classes, cfg.n_features), || {
        cfg.center_box * (2.0 * uniform01(&mut rng) - 1.0)
    });
    let mut make = |n_per_class: usize| {
        let n = n_per_class * cfg.n_classes;
        let labels: Vec<usize> = (0..n).map(|i| i % cfg.n_classes).collect();
        let mut features = Array2::zeros((n, cfg.n_features));
        for (mut row, &label) in features.rows_mut().into_iter().zip(&labels) {
            for (x, &mu) in row.iter_mut().zip(centers.row(label)) {
                *x = mu + cfg.std * standard_normal(&mut rng);
            }
        }
        Split::new(features, labels, None)
    };
    let train = make(cfg.n_train_per_class)?;
    let test = make(cfg.n_test_per_class)?;
    Dataset::new("blobs", cfg.n_classes, train, test)
}

/// Parameters of [`spirals`]: two interleaved spirals in the plane.
#[derive(Debug, Clone, PartialEq)]
pub struct SpiralsConfig {
    /// Training samples per class (2 classes).
    pub n_train_per_class: usize,
    /// Test samples per class.
    pub n_test_per_class: usize,
    /// Number of turns of each spiral, > 0.
    pub turns: f64,
    /// Standard deviation of the Gaussian noise added to each coordinate.
    pub noise: f64,
    /// Seed of the draw.
    pub seed: u64,
}

impl SpiralsConfig {
    /// The set `load("spirals")` returns: 200 train and 100 test samples per class,
    /// 1.5 turns, noise 0.05, seed 0.
    pub fn standard() -> Self {
        SpiralsConfig {
            n_train_per_class: 200,
            n_test_per_class: 100,
            turns: 1.5,
            noise: 0.05,
            seed: 0,
        }
    }
}

/// Two spirals: with `t ~ U(0, 1)`, `θ = 2π · turns · t + π c` and radius `t`, sample
/// `(t cos θ, t sin θ) + noise`, class `c ∈ {0, 1}`.
///
/// Samples alternate classes (sample `i` has class `i mod 2`); all points lie within radius
/// `1 + O(noise)`. The name is `"spirals"`; there are no regression targets.
///
/// # Errors
/// [`DataError::InvalidParam`] for non-positive or non-finite `turns`, or a negative or
/// non-finite `noise`.
pub fn spirals(cfg: &SpiralsConfig) -> Result<Dataset> {
    if !(cfg.turns.is_finite() && cfg.turns > 0.0) {
        return Err(invalid("turns", cfg.turns, "must be finite and > 0"));
    }
    check_finite_nonneg("noise", cfg.noise)?;
    let mut rng = derived_rng(cfg.seed, SPIRALS_STREAM, SYNTHETIC_TAG);
    let mut make = |n_per_class: usize| {
        let n = 2 * n_per_class;
        let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
        let mut features = Array2::zeros((n, 2));
        for (mut row, &label) in features.rows_mut().into_iter().zip(&labels) {
            let t = uniform01(&mut rng);
            let theta = std::f64::consts::TAU * cfg.turns * t + std::f64::consts::PI * label as f64;
            let (sin, cos) = portable_sin_cos(theta);
            row[0] = t * cos + cfg.noise * standard_normal(&mut rng);
            row[1] = t * sin + cfg.noise * standard_normal(&mut rng);
        }
        Split::new(features, labels, None)
    };
    let train = make(cfg.n_train_per_class)?;
    let test = make(cfg.n_test_per_class)?;
    Dataset::new("spirals", 2, train, test)
}

/// Parameters of [`teacher`]: a random tanh network that labels Gaussian inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherConfig {
    /// Layer widths from input to output, at least two entries, none zero
    /// (e.g. `[8, 16, 3]`).
    pub sizes: Vec<usize>,
    /// Training samples.
    pub n_train: usize,
    /// Test samples.
    pub n_test: usize,
    /// Standard deviation of Gaussian noise added to the targets.
    pub noise: f64,
    /// Seed of the draw (weights, inputs and noise).
    pub seed: u64,
}

impl TeacherConfig {
    /// The set `load("teacher")` returns: sizes `[8, 16, 3]`, 1000 train and 500 test
    /// samples, noise 0, seed 0.
    pub fn standard() -> Self {
        TeacherConfig { sizes: vec![8, 16, 3], n_train: 1000, n_test: 500, noise: 0.0, seed: 0 }
    }
}

/// Regression data from a teacher network: inputs `x ~ N(0, I)`, targets
/// `y = f(x) + noise · N(0, I)` where `f` is an MLP with tanh hidden layers and a linear
/// output, weights `N(0, 1/fan_in)` and biases `N(0, 0.1²)`.
///
/// The labels are `argmax f(x)` (without noise), so `n_classes` is the output width and the
/// set doubles as a classification task. The name is `"teacher"`.
///
/// # Shapes
/// features: n × `sizes[0]`; targets: n × `sizes[last]`.
///
/// # Errors
/// [`DataError::InvalidParam`] for fewer than two sizes, a zero size, or a negative or
/// non-finite `noise`.
///
/// # Examples
/// ```
/// let ds = esso_data::teacher(&esso_data::TeacherConfig::standard())?;
/// assert_eq!(ds.train().targets().map(|t| t.dim()), Some((1000, 3)));
/// # Ok::<(), esso_data::DataError>(())
/// ```
pub fn teacher(cfg: &TeacherConfig) -> Result<Dataset> {
    if cfg.sizes.len() < 2 {
        return Err(invalid("sizes", format!("{:?}", cfg.sizes), "needs at least two widths"));
    }
    if cfg.sizes.contains(&0) {
        return Err(invalid("sizes", format!("{:?}", cfg.sizes), "widths must be at least 1"));
    }
    check_finite_nonneg("noise", cfg.noise)?;
    let mut rng = derived_rng(cfg.seed, TEACHER_STREAM, SYNTHETIC_TAG);
    let layers: Vec<(Array2<f64>, Vec<f64>)> = cfg
        .sizes
        .windows(2)
        .map(|w| {
            let scale = (1.0 / w[0] as f64).sqrt();
            let weight =
                Array2::from_shape_simple_fn((w[1], w[0]), || scale * standard_normal(&mut rng));
            let bias = (0..w[1]).map(|_| 0.1 * standard_normal(&mut rng)).collect();
            (weight, bias)
        })
        .collect();
    let n_in = cfg.sizes[0];
    let n_out = cfg.sizes[cfg.sizes.len() - 1];
    let mut make = |n: usize| {
        let mut features = Array2::zeros((n, n_in));
        let mut targets = Array2::zeros((n, n_out));
        let mut labels = Vec::with_capacity(n);
        for (mut x_row, mut y_row) in features.rows_mut().into_iter().zip(targets.rows_mut()) {
            x_row.iter_mut().for_each(|x| *x = standard_normal(&mut rng));
            let mut a: Vec<f64> = x_row.to_vec();
            for (layer_idx, (weight, bias)) in layers.iter().enumerate() {
                let hidden = layer_idx + 1 < layers.len();
                // Plain loops in a fixed order: the same bits on every platform.
                a = weight
                    .rows()
                    .into_iter()
                    .zip(bias)
                    .map(|(w_row, b)| {
                        let z = w_row.iter().zip(&a).fold(*b, |acc, (w, x)| acc + w * x);
                        if hidden { portable_tanh(z) } else { z }
                    })
                    .collect();
            }
            labels.push(argmax(&a));
            for (y, f) in y_row.iter_mut().zip(&a) {
                *y = f + cfg.noise * standard_normal(&mut rng);
            }
        }
        Split::new(features, labels, Some(targets))
    };
    let train = make(cfg.n_train)?;
    let test = make(cfg.n_test)?;
    Dataset::new("teacher", n_out, train, test)
}

/// Index of the largest value (the first on ties; 0 for an empty slice).
fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_separated_and_reproducible() {
        let cfg = BlobsConfig { std: 0.1, ..BlobsConfig::standard() };
        let a = blobs(&cfg).unwrap();
        assert_eq!(a, blobs(&cfg).unwrap());
        assert_ne!(a, blobs(&BlobsConfig { seed: 1, ..cfg.clone() }).unwrap());
        assert_eq!(a.train().class_counts(3), [200; 3]);
        // With std 0.1 every sample is nearest to its own class's train mean.
        let means: Vec<Vec<f64>> = (0..3)
            .map(|c| {
                let rows: Vec<usize> = (0..a.train().n_samples()).filter(|i| i % 3 == c).collect();
                let sel = a.train().select(&rows);
                sel.features().mean_axis(ndarray::Axis(0)).unwrap().to_vec()
            })
            .collect();
        for (row, &label) in a.test().features().rows().into_iter().zip(a.test().labels()) {
            let d = |m: &Vec<f64>| row.iter().zip(m).map(|(x, y)| (x - y) * (x - y)).sum::<f64>();
            let nearest = (0..3).min_by(|&i, &j| d(&means[i]).total_cmp(&d(&means[j]))).unwrap();
            assert_eq!(nearest, label);
        }
    }

    #[test]
    fn spirals_lie_in_the_unit_disc_without_noise() {
        let cfg = SpiralsConfig { noise: 0.0, ..SpiralsConfig::standard() };
        let ds = spirals(&cfg).unwrap();
        assert_eq!(ds.train().features().dim(), (400, 2));
        for row in ds.train().features().rows() {
            assert!(row[0].hypot(row[1]) <= 1.0 + 1e-12);
        }
        assert!(matches!(
            spirals(&SpiralsConfig { turns: 0.0, ..cfg }),
            Err(DataError::InvalidParam { name: "turns", .. })
        ));
    }

    #[test]
    fn teacher_targets_match_labels_and_reject_bad_sizes() {
        let ds = teacher(&TeacherConfig::standard()).unwrap();
        let targets = ds.train().targets().unwrap();
        for (row, &label) in targets.rows().into_iter().zip(ds.train().labels()) {
            assert_eq!(argmax(&row.to_vec()), label);
        }
        let counts = ds.train().class_counts(3);
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
        let bad = TeacherConfig { sizes: vec![3], ..TeacherConfig::standard() };
        assert!(matches!(teacher(&bad), Err(DataError::InvalidParam { name: "sizes", .. })));
        let bad = TeacherConfig { sizes: vec![3, 0, 1], ..TeacherConfig::standard() };
        assert!(matches!(teacher(&bad), Err(DataError::InvalidParam { name: "sizes", .. })));
    }
}

//! `esso analyze`: curvature, sharpness and loss landscapes of finished runs
//! (docs/esso-analyze.md).
//!
//! A finished run's results file holds its final weights and its resolved config, from
//! which the dataset and the initial weights are rebuilt exactly ([`FinishedRun::open`]
//! checks both against the losses the run recorded). Each analysis works on a fixed
//! seeded subset of the training set ([`sample_subset`]) and returns a typed result that
//! converts to and from an [`AnalysisSection`] (`/analysis/<name>` in the run's file):
//!
//! | analysis | result | section |
//! |---|---|---|
//! | spectrum | [`SpectrumResult`] | `spectrum` |
//! | sharpness | [`SharpnessResult`] | `sharpness` |
//! | 1D interpolation | [`Landscape1d`] | `landscape_1d` |
//! | 2D surface | [`Landscape2d`] | `landscape_2d` |
//!
//! Every setting is stored as an attribute of its section, with the esso version, the git
//! revision, the sample subset and the wall-clock seconds the analysis took.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use esso_core::{Loss, Mlp, Targets};
use esso_data::{Dataset, Split};

use crate::config::RunConfig;
use crate::results::{AnalysisSection, AttrValue, RunRecord, RunStatus};

mod compute;
mod driver;
mod footprint;
mod sections;

pub use compute::*;
pub use driver::*;
pub use footprint::*;
pub use sections::*;

/// Tag of the random stream that draws analysis subsets (see [`sample_subset`]).
pub const SUBSET_TAG: &[u8; 16] = b"esso-analysis-s.";

/// Relative tolerance when checking that the rebuilt dataset and weights reproduce the
/// losses the run recorded: both sides are the same GEMMs on the same bits, so anything
/// beyond rounding noise means another dataset (or changed code).
pub const REPRODUCTION_RTOL: f64 = 1e-9;

/// The first `k` indices of a seeded permutation of `0..n`, sorted ascending (all of them
/// when `k` is 0 or ≥ n). Depends only on `(n, k, seed)`, bit for bit on every platform
/// (`esso_core::portable`), so every run of an experiment is analysed on the same samples.
///
/// # Examples
/// ```
/// let a = esso_bench::analysis::sample_subset(100, 10, 7);
/// assert_eq!(a, esso_bench::analysis::sample_subset(100, 10, 7));
/// assert_eq!(a.len(), 10);
/// assert!(a.windows(2).all(|w| w[0] < w[1]) && a[9] < 100);
/// assert_eq!(esso_bench::analysis::sample_subset(5, 0, 1), [0, 1, 2, 3, 4]);
/// ```
pub fn sample_subset(n: usize, k: usize, seed: u64) -> Vec<usize> {
    if k == 0 || k >= n {
        return (0..n).collect();
    }
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = esso_core::portable::derived_rng(seed, n as u64, SUBSET_TAG);
    esso_core::portable::shuffle_in_place(&mut order, &mut rng);
    let mut first: Vec<usize> = order[..k].to_vec();
    first.sort_unstable();
    first
}

/// The targets of a split: class labels, or regression rows when it has them.
pub fn targets_of(split: &Split) -> Targets<'_> {
    match split.targets() {
        Some(t) => Targets::Values(t.view()),
        None => Targets::Classes(split.labels()),
    }
}

/// A finished run ready to analyse: its record, config, data, final and initial networks.
#[derive(Debug, Clone)]
pub struct FinishedRun {
    /// The results file.
    pub path: PathBuf,
    /// Its contents.
    pub record: RunRecord,
    /// The resolved config stored in it.
    pub config: RunConfig,
    /// The network at the end of training (the stored final weights).
    pub solution: Mlp,
    /// The network at initialisation, rebuilt from the config's seed.
    pub init: Mlp,
}

impl FinishedRun {
    /// Reads the results file at `path` and rebuilds the run's networks.
    ///
    /// # Errors
    /// A missing file, a file that is not an esso results file, a run that is still running
    /// (or was interrupted) or that diverged, and stored weights that do not fit the stored
    /// config; each message names the file.
    pub fn open(path: &Path) -> Result<FinishedRun> {
        if !path.exists() {
            bail!("no run at {}: the file does not exist", path.display());
        }
        if path.is_dir() {
            bail!("{} is a folder, not a run's results file (RUN.h5)", path.display());
        }
        let record = RunRecord::load(path).with_context(|| {
            format!("{} is not an esso results file (written by `esso run`)", path.display())
        })?;
        match &record.status {
            RunStatus::Completed => {}
            RunStatus::Running => bail!(
                "run {} ({}) is unfinished (status `running`: still running or interrupted); \
                 finish it with `esso run CONFIG --resume` first",
                record.name,
                path.display()
            ),
            RunStatus::Diverged { step, message } => bail!(
                "run {} ({}) diverged at step {step} ({message}); its weights are the last \
                 finite ones, not a solution to analyse",
                record.name,
                path.display()
            ),
        }
        let config: RunConfig = toml::from_str(&record.config_toml).map_err(|e| {
            anyhow!("{}: the stored config is not a run config: {e}", path.display())
        })?;
        let solution = mlp_from_weights(&record, &config)
            .with_context(|| format!("{}: final weights", path.display()))?;
        let init = crate::runner::build_model(&config)
            .with_context(|| format!("{}: rebuilding the initial weights", path.display()))?;
        Ok(FinishedRun { path: path.to_path_buf(), record, config, solution, init })
    }

    /// Loads the run's dataset (from `cache`, fetching when missing) with the run's subsets
    /// and standardisation, and checks that it reproduces the training losses the run
    /// recorded at initialisation and at the end (to [`REPRODUCTION_RTOL`]): the weights
    /// belong to this data.
    ///
    /// # Errors
    /// Data errors, and a dataset that does not reproduce the recorded losses, naming the
    /// file and both values.
    pub fn load_data(&self, cache: &Path, verbose: bool) -> Result<Dataset> {
        let dataset = crate::runner::prepare_data(&self.config, cache, verbose)
            .with_context(|| format!("{}: loading its dataset", self.path.display()))?;
        let train = dataset.train();
        let n_eval = match self.config.train.eval_train_samples {
            0 => train.n_samples(),
            k => k.min(train.n_samples()),
        };
        let eval = train.select(&(0..n_eval).collect::<Vec<_>>());
        let epochs = &self.record.epochs;
        let recorded = |row: usize| epochs.column("train_loss").and_then(|c| c.get(row).copied());
        let last = epochs.n_rows().checked_sub(1);
        for (what, mlp, row) in [("initial", &self.init, Some(0)), ("final", &self.solution, last)]
        {
            let Some(expected) = row.and_then(recorded) else { continue };
            let got = mlp
                .evaluate(eval.features(), targets_of(&eval), self.config.model.loss)
                .with_context(|| format!("{}: evaluating the {what} weights", self.path.display()))?
                .mean_loss;
            if !expected.is_finite() {
                continue;
            }
            let scale = expected.abs().max(got.abs()).max(f64::MIN_POSITIVE);
            if (got - expected).abs() > REPRODUCTION_RTOL * scale {
                bail!(
                    "{}: the {what} weights give training loss {got} on dataset {} but the run \
                     recorded {expected}: wrong dataset (or a changed data cache / esso \
                     version) for this run",
                    self.path.display(),
                    self.config.data.dataset
                );
            }
        }
        Ok(dataset)
    }

    /// The run's loss.
    pub fn loss(&self) -> Loss {
        self.config.model.loss
    }
}

/// The network holding a record's stored weights, checked against the config's sizes.
///
/// # Errors
/// Missing weights or shapes that differ from `[model] sizes`.
pub fn mlp_from_weights(record: &RunRecord, config: &RunConfig) -> Result<Mlp> {
    let sizes = &config.model.sizes;
    if record.weights.len() + 1 != sizes.len() {
        bail!(
            "{} weight layers stored, the config's sizes {sizes:?} need {}",
            record.weights.len(),
            sizes.len() - 1
        );
    }
    let mut layers = Vec::with_capacity(record.weights.len());
    for (layer_idx, (w, b)) in record.weights.iter().enumerate() {
        let expected = (sizes[layer_idx + 1], sizes[layer_idx]);
        if w.dim() != expected || b.len() != expected.0 {
            bail!(
                "layer {layer_idx}: stored weight {:?} and bias {} do not fit sizes {sizes:?}",
                w.dim(),
                b.len()
            );
        }
        layers.push(esso_core::Dense::new(w.clone(), b.clone())?);
    }
    Ok(Mlp::from_layers(layers, config.model.activation)?)
}

/// Finished runs in the same folder as `run` with the same seed and data but another
/// optimiser (other sweep points of the experiment), sorted by name: the other ends of the
/// solution-to-solution interpolations. Unfinished, diverged or unreadable siblings are
/// skipped.
pub fn sibling_solutions(run: &FinishedRun) -> Vec<FinishedRun> {
    let Some(dir) = run.path.parent() else { return Vec::new() };
    let Ok(entries) =
        std::fs::read_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })
    else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "h5") && *p != run.path)
        .collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| FinishedRun::open(p).ok())
        .filter(|other| {
            other.config.name == run.config.name
                && other.config.seed == run.config.seed
                && other.config.data == run.config.data
                && other.config.model == run.config.model
                && other.record.name != run.record.name
        })
        .collect()
}

/// Provenance attributes common to every section.
pub(crate) fn provenance(section: &mut AnalysisSection, run: &FinishedRun, seconds: f64) {
    section.set_attr("run", AttrValue::Text(run.record.name.clone()));
    section.set_attr("esso_version", AttrValue::Text(env!("CARGO_PKG_VERSION").to_string()));
    section.set_attr("git_revision", AttrValue::Text(crate::runner::git_revision()));
    section.set_attr("seconds", AttrValue::Float(seconds));
}

//! Running experiments: data, model, optimiser, the training loop with evaluation,
//! curvature tracking and checkpoints, and the results file (docs/results-format.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use esso_core::{ForwardTrace, Loss, Mlp, SecondOrderTrace, Targets};
use esso_data::{Dataset, DatasetName, Split, Subset};
use esso_hessian::LayerCurvature;
use esso_hessian::batch::BatchHessian;
use esso_hessian::lanczos::{self, LanczosOptions, Which};
use esso_optim::{
    Checkpoint, Control, Observer, OptimError, Optimizer, Progress, StepReport, Termination,
    TrainConfig, Trainer,
};
use ndarray::{Array2, s};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::results::{
    Matrix, RunLock, RunRecord, RunStatus, Table, failpoint, remove_stale_temporaries,
    replace_atomically,
};

/// Largest |symlog(e)| = log10(1 + |e|) covered by the curvature histograms (|e| ≤ 1e6);
/// values beyond land in the outermost bins.
pub const SYMLOG_RANGE: f64 = 6.0;

/// The evaluation columns of `/epochs` and `/evals`.
pub const EVAL_COLUMNS: &[&str] = &[
    "step",
    "epoch",
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "train_seconds",
];

/// The columns of `/top_eigenvalue` (`[tracking] top_eigenvalue_every`).
pub const TOP_EIGENVALUE_COLUMNS: &[&str] =
    &["step", "epoch", "top_eigenvalue", "residual_norm", "lanczos_iterations", "learning_rate"];

/// Relative residual tolerance of the Lanczos runs of the top-eigenvalue tracking.
pub const TOP_EIGENVALUE_TOL: f64 = 1e-8;

/// Seconds between progress lines when stderr is not a terminal.
const PRINT_INTERVAL_SECS: f64 = 10.0;
/// Seconds between progress updates on a terminal.
const TTY_PRINT_INTERVAL_SECS: f64 = 0.5;

/// Options of a batch of runs that are not part of the experiment config.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Dataset cache folder.
    pub data_cache: PathBuf,
    /// Continue interrupted runs from their checkpoint and skip completed ones. A run whose
    /// stored config differs from the current one (keys other than `output`) is refused.
    pub resume: bool,
    /// With `resume`: continue a run even though its config changed, recording the change
    /// in the results file (`config_changes`).
    pub resume_changed: bool,
    /// Stop every run after this many epochs (at least 1), as an interruption would (for
    /// tests and for splitting long runs); the run stays resumable.
    pub stop_after_epochs: Option<usize>,
    /// A signal number set by a signal handler (0: none). Once it is non-zero, running runs
    /// stop at the next step boundary with their checkpoint and results written
    /// ([`RunOutcome::Interrupted`]) and runs not yet started do not start.
    pub interrupt: Arc<AtomicUsize>,
    /// Print progress to stderr.
    pub verbose: bool,
    /// Progress bars, one per run, on a terminal; `None` prints a plain line every few
    /// seconds instead (CI, pipes).
    pub bars: Option<indicatif::MultiProgress>,
}

impl RunOptions {
    /// Fresh runs (no resume, no early stop) that print nothing, with datasets cached in
    /// `data_cache`: what library users and tests usually want.
    pub fn quiet(data_cache: impl Into<PathBuf>) -> Self {
        RunOptions {
            data_cache: data_cache.into(),
            resume: false,
            resume_changed: false,
            stop_after_epochs: None,
            interrupt: Arc::new(AtomicUsize::new(0)),
            verbose: false,
            bars: None,
        }
    }
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// Every epoch ran.
    Completed {
        /// Final test accuracy (classification only).
        test_accuracy: Option<f64>,
    },
    /// Already complete on disk (with `resume`): not run again.
    Skipped,
    /// Stopped by `stop_after_epochs`; resumable.
    Stopped,
    /// Stopped by [`RunOptions::interrupt`]; resumable.
    Interrupted {
        /// The signal number.
        signal: usize,
        /// The step at which the run stopped, its checkpoint written; `None` when the run
        /// had not started (nothing written).
        step: Option<u64>,
    },
    /// A non-finite quantity stopped the run.
    Diverged {
        /// Step index.
        step: u64,
        /// The optimiser's message.
        message: String,
    },
}

/// What a checkpoint file holds: the optimiser's checkpoint, the training time so far, the
/// run's config and the learning rate of the last step (recorded with the final top
/// eigenvalue, so a run resumed at its very end writes what an uninterrupted one does).
#[derive(Debug, Serialize, Deserialize)]
struct SavedCheckpoint {
    checkpoint: Checkpoint,
    train_seconds: f64,
    #[serde(default)]
    config_toml: Option<String>,
    #[serde(default)]
    learning_rate: Option<f64>,
}

/// Keys of a run's config that may differ on resume: the folder the run is found in.
pub const RESUME_IGNORED_KEYS: &[&str] = &["output"];

/// The differences between a stored run config (TOML text from a results file or a
/// checkpoint) and `config`, one line per key (`key: stored → now`, `(absent)` for a key on
/// one side only), keys in order; [`RESUME_IGNORED_KEYS`] do not count.
///
/// The two are compared as parsed TOML tables, key by key, after filling the defaults of the
/// stored one, so formatting and keys left at their defaults do not count.
///
/// # Errors
/// A stored config that is not TOML.
pub fn config_differences(stored: &str, config: &RunConfig) -> Result<Vec<String>> {
    let raw: toml::Table =
        stored.parse().map_err(|e| anyhow!("the stored config is not valid TOML: {e}"))?;
    let stored_table = toml::from_str::<RunConfig>(stored)
        .ok()
        .and_then(|c| toml::Table::try_from(c).ok())
        .unwrap_or(raw);
    let current = toml::Table::try_from(config).context("serialising the current config")?;
    let (mut old, mut new) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &stored_table, &mut old);
    flatten("", &current, &mut new);
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let show = |v: Option<&toml::Value>| v.map_or("(absent)".to_string(), |v| v.to_string());
    Ok(keys
        .into_iter()
        .filter(|k| !RESUME_IGNORED_KEYS.contains(&k.as_str()))
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| format!("{k}: {} → {}", show(old.get(k)), show(new.get(k))))
        .collect())
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(t) => flatten(&path, t, out),
            other => {
                out.insert(path, other.clone());
            }
        }
    }
}

/// Loads the run's dataset (fetching MNIST / Fashion-MNIST into the cache when missing),
/// applies subsets and standardisation, and checks it against the model sizes.
///
/// # Errors
/// Data and fetch errors, and size mismatches naming `[model] sizes`.
pub fn prepare_data(config: &RunConfig, cache: &Path, verbose: bool) -> Result<Dataset> {
    let name: DatasetName = config
        .data
        .dataset
        .parse()
        .map_err(|e| anyhow!("[data] dataset = {:?}: {e}", config.data.dataset))?;
    let mut dataset = esso_data::load_or_fetch(name.as_str(), cache, &mut |event| {
        if verbose {
            eprintln!("  {event}");
        }
    })
    .with_context(|| {
        format!(
            "loading dataset {0} (a missing one is fetched into {1}; or fetch it yourself: \
             `esso fetch {0} --from DIR`)",
            name.as_str(),
            cache.display()
        )
    })?;
    let d = &config.data;
    let train_rule = match (d.train_first, d.train_per_class) {
        (Some(k), _) => Subset::First(k),
        (None, Some(k)) => Subset::PerClass { k, seed: d.subset_seed },
        (None, None) => Subset::All,
    };
    let test_rule = d.test_first.map_or(Subset::All, Subset::First);
    if !matches!((train_rule, test_rule), (Subset::All, Subset::All)) {
        dataset = dataset.subset(train_rule, test_rule).context("[data] subset")?;
    }
    if d.standardize {
        dataset.standardize();
    }
    let sizes = &config.model.sizes;
    if sizes[0] != dataset.n_features() {
        bail!(
            "[model] sizes[0] = {} but dataset {} has {} features per sample",
            sizes[0],
            dataset.name(),
            dataset.n_features()
        );
    }
    let n_out = sizes[sizes.len() - 1];
    if config.model.loss == Loss::CrossEntropy && n_out != dataset.n_classes() {
        bail!(
            "[model] the last size is {n_out} but dataset {} has {} classes",
            dataset.name(),
            dataset.n_classes()
        );
    }
    Ok(dataset)
}

/// The run's initial network: weights from the run's seed, on a ChaCha stream of their own
/// so that they do not share random bits with the sample order drawn from the same seed.
///
/// # Errors
/// Model errors of esso-core.
pub fn build_model(config: &RunConfig) -> Result<Mlp> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    rng.set_stream(u64::MAX);
    Mlp::new(&config.model.sizes, config.model.activation, config.model.init, &mut rng)
        .context("[model]")
}

fn targets_of(split: &Split) -> Targets<'_> {
    match split.targets() {
        Some(t) => Targets::Values(t.view()),
        None => Targets::Classes(split.labels()),
    }
}

fn first_k(split: &Split, k: usize) -> Split {
    split.select(&(0..k.min(split.n_samples())).collect::<Vec<_>>())
}

/// The step-diagnostics columns for a network with `n_layers` layers.
pub fn step_columns(n_layers: usize) -> Vec<String> {
    let mut cols: Vec<String> =
        ["step", "loss", "grad_norm", "step_norm", "cos_to_neg_grad", "learning_rate"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    for l in 0..n_layers {
        cols.push(format!("layer{l}_min_eigenvalue"));
        cols.push(format!("layer{l}_max_eigenvalue"));
        cols.push(format!("layer{l}_n_negative"));
    }
    cols
}

/// The curvature-tracking columns for a network with `n_layers` layers.
pub fn curvature_columns(n_layers: usize) -> Vec<String> {
    let mut cols = vec!["step".to_string(), "epoch".to_string()];
    for l in 0..n_layers {
        cols.push(format!("layer{l}_min"));
        cols.push(format!("layer{l}_max"));
        cols.push(format!("layer{l}_fraction_negative"));
    }
    cols
}

fn table(names: &[String]) -> Table {
    Table::new(&names.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `git rev-parse --short=12 HEAD` of the working folder, or `unknown`.
pub(crate) fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

fn new_record(config: &RunConfig, n_layers: usize) -> RunRecord {
    RunRecord {
        name: config.run_name.clone(),
        config_toml: config.to_toml(),
        seed: config.seed,
        esso_version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision: git_revision(),
        status: RunStatus::Running,
        epochs: Table::new(EVAL_COLUMNS),
        evals: Table::new(EVAL_COLUMNS),
        steps: table(&step_columns(n_layers)),
        curvature: table(&curvature_columns(n_layers)),
        top_eigenvalue: Table::new(TOP_EIGENVALUE_COLUMNS),
        arrays: vec![Matrix {
            path: "curvature/histogram_edges".into(),
            values: histogram_edges(config.tracking.n_bins).insert_axis(ndarray::Axis(0)),
        }],
        weights: Vec::new(),
        config_changes: Vec::new(),
    }
}

/// Edges of the curvature histograms in symlog units s = sign(e)·log10(1 + |e|):
/// `n_bins + 1` evenly spaced values over [−SYMLOG_RANGE, SYMLOG_RANGE].
pub fn histogram_edges(n_bins: usize) -> ndarray::Array1<f64> {
    ndarray::Array1::linspace(-SYMLOG_RANGE, SYMLOG_RANGE, n_bins + 1)
}

/// sign(e)·log10(1 + |e|).
pub fn symlog(e: f64) -> f64 {
    e.signum() * e.abs().ln_1p() / std::f64::consts::LN_10
}

fn weights_of(mlp: &Mlp) -> Vec<(Array2<f64>, ndarray::Array1<f64>)> {
    mlp.layers().iter().map(|l| (l.weight().clone(), l.bias().clone())).collect()
}

/// Writes `text` to a temporary sibling unique to this writer and renames it to `path`;
/// the temporary is removed when either fails.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    replace_atomically(path, "checkpoint-tmp", |tmp| {
        std::fs::write(tmp, text).with_context(|| {
            format!(
                "writing checkpoint {} (is the disk full or the folder read-only?)",
                tmp.display()
            )
        })
    })?;
    failpoint("checkpoint-rename");
    Ok(())
}

fn remove_checkpoint(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            failpoint("checkpoint-remove");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            Err(anyhow::Error::new(e).context(format!("removing checkpoint {}", path.display())))
        }
    }
}

fn signal_of(options: &RunOptions) -> Option<usize> {
    match options.interrupt.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Runs one run to its end (or to `stop_after_epochs`, or to an interruption), writing its
/// results file after every epoch and its checkpoint beside it, under the run's
/// [`RunLock`].
///
/// With `resume`, a run whose results file says `completed` or `diverged` is never touched
/// again (a leftover checkpoint beside it is removed) and an interrupted one continues from
/// its checkpoint; both refuse a config that differs from the stored one unless
/// `resume_changed`. Without `resume`, the run starts over.
///
/// # Errors
/// Setup errors (data, config, files), a run locked by another writer, a changed config on
/// resume. Divergence is not an error: it is recorded in the results file and returned as
/// [`RunOutcome::Diverged`].
pub fn run_one(config: &RunConfig, options: &RunOptions) -> Result<RunOutcome> {
    let results_path = config.results_path();
    let checkpoint_path = config.checkpoint_path();
    if options.stop_after_epochs == Some(0) {
        bail!(
            "stop after 0 epochs would stop before the first epoch: give at least 1, or none to \
             run every epoch"
        );
    }
    if let Some(signal) = signal_of(options) {
        return Ok(RunOutcome::Interrupted { signal, step: None });
    }
    std::fs::create_dir_all(&config.output)
        .with_context(|| format!("creating output folder {}", config.output.display()))?;
    let _lock = RunLock::acquire(&results_path)?;
    remove_stale_temporaries(&results_path);
    remove_stale_temporaries(&checkpoint_path);
    let mut saved = None;
    let mut config_change = None;
    if options.resume && results_path.exists() {
        let record = RunRecord::load(&results_path).with_context(|| {
            format!(
                "run {} cannot be resumed: move {} away, or run without --resume to start the \
                 run over",
                config.run_name,
                results_path.display()
            )
        })?;
        let refuse = |stored_in: &Path, diffs: &[String]| {
            anyhow!(
                "run {}: the config differs from the one stored in {}: {}; run with \
                 --resume-changed to continue under the new config (the change is recorded in \
                 the results file), or without --resume to start the run over",
                config.run_name,
                stored_in.display(),
                diffs.join("; ")
            )
        };
        let diffs = config_differences(&record.config_toml, config)
            .with_context(|| format!("results file {}", results_path.display()))?;
        if record.status != RunStatus::Running {
            if !diffs.is_empty() {
                bail!(
                    "run {} is {} under another config ({}: {}); a finished run is never \
                     changed: run without --resume to run it again from the start (this \
                     replaces the file), or give the new config another name or output",
                    config.run_name,
                    record.status.name(),
                    results_path.display(),
                    diffs.join("; ")
                );
            }
            // A kill between the final write and the checkpoint's removal leaves it behind.
            remove_checkpoint(&checkpoint_path)?;
            return Ok(RunOutcome::Skipped);
        }
        if checkpoint_path.exists() {
            let text = std::fs::read_to_string(&checkpoint_path)
                .with_context(|| format!("reading checkpoint {}", checkpoint_path.display()))?;
            let checkpoint: SavedCheckpoint = serde_json::from_str(&text).with_context(|| {
                format!(
                    "checkpoint {} is corrupt: remove it to start the run over",
                    checkpoint_path.display()
                )
            })?;
            let (stored, stored_in) = match &checkpoint.config_toml {
                Some(c) => (c.as_str(), checkpoint_path.as_path()),
                None => (record.config_toml.as_str(), results_path.as_path()),
            };
            let diffs = config_differences(stored, config)
                .with_context(|| format!("checkpoint {}", stored_in.display()))?;
            if !diffs.is_empty() {
                if !options.resume_changed {
                    return Err(refuse(stored_in, &diffs));
                }
                config_change = Some(diffs);
            }
            saved = Some((checkpoint, record));
        } else if !diffs.is_empty() && !options.resume_changed {
            return Err(refuse(&results_path, &diffs));
        }
    }
    if saved.is_none() {
        // Starting over: a checkpoint of an earlier run must not pair with the new file.
        remove_checkpoint(&checkpoint_path)?;
    }
    let dataset = prepare_data(config, &options.data_cache, options.verbose)?;
    if let Some(signal) = signal_of(options) {
        // Interrupted while the data was loading (a fetch): nothing of this session written.
        return Ok(RunOutcome::Interrupted { signal, step: None });
    }
    let train = dataset.train();
    let loss = config.model.loss;
    let mut mlp = build_model(config)?;
    let mut optimizer = config.optimizer.build().context("[optimizer]")?;
    let train_config = TrainConfig {
        n_epochs: config.train.epochs,
        batch_size: config.train.batch_size,
        seed: config.seed,
        shuffle: config.train.shuffle,
    };
    let trainer = Trainer::new(train.features(), targets_of(train), loss, train_config)
        .context("setting up the training loop")?;
    let n_eval_train = match config.train.eval_train_samples {
        0 => train.n_samples(),
        k => k,
    };
    let mut recorder = Recorder {
        config,
        record: new_record(config, mlp.n_layers()),
        eval_train: first_k(train, n_eval_train),
        test: dataset.test(),
        tracking: first_k(train, config.tracking.n_samples),
        top_subset: (config.tracking.top_eigenvalue_every > 0).then(|| {
            let t = &config.tracking;
            train.select(&crate::analysis::sample_subset(
                train.n_samples(),
                t.top_eigenvalue_samples,
                t.top_eigenvalue_seed,
            ))
        }),
        learning_rate: f64::NAN,
        loss,
        n_batches: trainer.n_batches_per_epoch(),
        train_seconds: 0.0,
        segment_start: Instant::now(),
        last_print: None,
        loss_ema: None,
        stop_after_epochs: options.stop_after_epochs,
        epochs_this_session: 0,
        checkpoint_path: checkpoint_path.clone(),
        results_path: results_path.clone(),
        verbose: options.verbose,
        bar: None,
        failure: None,
        n_steps_done: 0,
        interrupt: Arc::clone(&options.interrupt),
        stop_signal: None,
        saved_at: None,
    };

    let mut progress = Progress::default();
    if let Some((saved, record)) = saved {
        if saved.checkpoint.mlp.sizes() != config.model.sizes {
            bail!(
                "checkpoint {} holds a network of sizes {:?}, the config says {:?}",
                checkpoint_path.display(),
                saved.checkpoint.mlp.sizes(),
                config.model.sizes
            );
        }
        mlp = saved.checkpoint.mlp;
        optimizer
            .load_state(saved.checkpoint.optimizer)
            .with_context(|| format!("checkpoint {}", checkpoint_path.display()))?;
        progress = saved.checkpoint.progress;
        recorder.n_steps_done = progress.n_steps;
        recorder.train_seconds = saved.train_seconds;
        recorder.learning_rate = saved.learning_rate.unwrap_or(f64::NAN);
        recorder.saved_at = Some(progress.n_steps);
        recorder.record = record;
        recorder.rollback_to(progress.n_steps);
        if let Some(diffs) = config_change {
            recorder.record.config_toml = config.to_toml();
            recorder.record.config_changes.push(format!(
                "resumed at step {}: {}",
                progress.n_steps,
                diffs.join("; ")
            ));
        }
        if options.verbose {
            eprintln!(
                "{}: resuming at epoch {} (step {})",
                config.run_name, progress.epoch, progress.n_steps
            );
        }
    } else {
        recorder.evaluate(&mlp, 0, true)?;
        recorder.track_curvature(&mlp, 0, Some("init"))?;
        recorder.track_top_eigenvalue(&mlp, 0, true)?;
    }

    if options.verbose
        && let Some(multi) = &options.bars
    {
        let total = (config.train.epochs * recorder.n_batches) as u64;
        let bar = multi.add(indicatif::ProgressBar::new(total));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:24}] {pos}/{len} steps {msg} ETA {eta}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_prefix(config.run_name.clone());
        bar.set_position(progress.n_steps);
        recorder.bar = Some(bar);
    }
    recorder.segment_start = Instant::now();
    let result = trainer.resume(&mut mlp, optimizer.as_mut(), progress, &mut recorder);
    if let Some(err) = recorder.failure.take() {
        return Err(err.context(format!("run {}", config.run_name)));
    }
    match result {
        Ok(outcome) if outcome.termination == Termination::Stopped => {
            let Some(signal) = recorder.stop_signal else { return Ok(RunOutcome::Stopped) };
            let step = outcome.progress.n_steps;
            if recorder.saved_at != Some(step) {
                recorder
                    .save_checkpoint(&outcome.progress, &mlp, optimizer.as_ref())
                    .with_context(|| {
                        format!("run {}: saving at the interruption", config.run_name)
                    })?;
            }
            if let Some(bar) = &recorder.bar {
                bar.abandon_with_message(format!("interrupted at step {step} (resumable)"));
            } else if options.verbose {
                eprintln!("{}: interrupted at step {step}, saved (resumable)", config.run_name);
            }
            Ok(RunOutcome::Interrupted { signal, step: Some(step) })
        }
        Ok(outcome) => {
            recorder.track_curvature(&mlp, outcome.progress.n_steps, Some("final"))?;
            recorder.track_top_eigenvalue(&mlp, outcome.progress.n_steps, true)?;
            recorder.record.status = RunStatus::Completed;
            recorder.record.weights = weights_of(&mlp);
            recorder.record.save(&results_path)?;
            failpoint("final-write");
            remove_checkpoint(&checkpoint_path)?;
            recorder.finish_line("done");
            Ok(RunOutcome::Completed {
                test_accuracy: recorder
                    .record
                    .epochs
                    .last("test_accuracy")
                    .filter(|a| a.is_finite()),
            })
        }
        Err(err) => {
            // A non-finite quantity, or a curvature the step cannot use (the damped spectral
            // function with e + λ ≤ 0), ends the run as a data point; anything else is an
            // error of the setup.
            let step = match &err {
                OptimError::Diverged { step, .. } => *step,
                OptimError::Hessian(_) => recorder.n_steps_done,
                _ => {
                    return Err(anyhow::Error::new(err).context(format!("run {}", config.run_name)));
                }
            };
            let message = err.to_string();
            recorder.record.status = RunStatus::Diverged { step, message: message.clone() };
            recorder.record.weights = weights_of(&mlp);
            recorder.record.save(&results_path)?;
            failpoint("final-write");
            remove_checkpoint(&checkpoint_path)?;
            recorder.finish_line("diverged");
            Ok(RunOutcome::Diverged { step, message })
        }
    }
}

/// The observer that records everything a run writes.
struct Recorder<'a> {
    config: &'a RunConfig,
    record: RunRecord,
    eval_train: Split,
    test: &'a Split,
    tracking: Split,
    /// The fixed seeded subset of the top-eigenvalue tracking (when on).
    top_subset: Option<Split>,
    /// The learning rate of the last step (NaN before the first).
    learning_rate: f64,
    loss: Loss,
    n_batches: usize,
    /// Training time so far, excluding evaluation, tracking and file writes.
    train_seconds: f64,
    segment_start: Instant,
    last_print: Option<Instant>,
    loss_ema: Option<f64>,
    stop_after_epochs: Option<usize>,
    epochs_this_session: usize,
    checkpoint_path: PathBuf,
    results_path: PathBuf,
    verbose: bool,
    bar: Option<indicatif::ProgressBar>,
    failure: Option<anyhow::Error>,
    /// Steps completed so far (the index of the step being taken when an error ends the run).
    n_steps_done: u64,
    /// Set by a signal handler: stop at the next step boundary.
    interrupt: Arc<AtomicUsize>,
    /// The signal that stopped the run.
    stop_signal: Option<usize>,
    /// The step of the last checkpoint written or loaded.
    saved_at: Option<u64>,
}

impl Recorder<'_> {
    fn pause_clock(&mut self) {
        self.train_seconds += self.segment_start.elapsed().as_secs_f64();
    }

    fn resume_clock(&mut self) {
        self.segment_start = Instant::now();
    }

    /// Drops rows recorded after step `n_steps` (a crash between the results file and the
    /// checkpoint can leave the file ahead of the checkpoint).
    fn rollback_to(&mut self, n_steps: u64) {
        // The other tables count steps taken (the row of step k is written after k steps);
        // `/steps` numbers each step from 0, so its row k belongs to the (k+1)-th step.
        let limit = n_steps as f64;
        let tables = [
            (&mut self.record.epochs, false),
            (&mut self.record.evals, false),
            (&mut self.record.steps, true),
            (&mut self.record.curvature, false),
            (&mut self.record.top_eigenvalue, false),
        ];
        for (t, zero_based) in tables {
            let kept = |s: f64| if zero_based { s < limit } else { s <= limit };
            let keep = t.column("step").map_or(0, |c| c.iter().take_while(|&&s| kept(s)).count());
            t.truncate(keep);
        }
        let n_points = self.record.curvature.n_rows();
        for m in &mut self.record.arrays {
            if m.path.ends_with("/histogram") && m.values.nrows() > n_points {
                m.values = m.values.slice(s![..n_points, ..]).to_owned();
            }
        }
        self.record.arrays.retain(|m| !m.path.ends_with("eigenvalues_final"));
        self.record.status = RunStatus::Running;
    }

    fn evaluate(&mut self, mlp: &Mlp, n_steps: u64, epoch_end: bool) -> Result<()> {
        let train =
            mlp.evaluate(self.eval_train.features(), targets_of(&self.eval_train), self.loss)?;
        let test = mlp.evaluate(self.test.features(), targets_of(self.test), self.loss)?;
        let row = [
            n_steps as f64,
            n_steps as f64 / self.n_batches as f64,
            train.mean_loss,
            train.accuracy.unwrap_or(f64::NAN),
            test.mean_loss,
            test.accuracy.unwrap_or(f64::NAN),
            self.train_seconds,
        ];
        self.record.evals.push(&row);
        if epoch_end {
            self.record.epochs.push(&row);
        }
        Ok(())
    }

    /// Exact per-layer block eigenvalues pooled over the tracking samples.
    fn track_curvature(&mut self, mlp: &Mlp, n_steps: u64, tag: Option<&str>) -> Result<()> {
        let n = self.tracking.n_samples();
        if n == 0 {
            return Ok(());
        }
        let every = self.config.tracking.every;
        let due = tag.is_some() || (every > 0 && n_steps.is_multiple_of(every));
        if !due {
            return Ok(());
        }
        let n_layers = mlp.n_layers();
        let mut pooled: Vec<Vec<f64>> = vec![Vec::new(); n_layers];
        let mut n_negative = vec![0_usize; n_layers];
        let mut fwd = ForwardTrace::new(mlp);
        let mut so = SecondOrderTrace::new(mlp);
        let targets = targets_of(&self.tracking);
        for sample_idx in 0..n {
            mlp.forward_into(&self.tracking.features().row(sample_idx), &mut fwd)?;
            mlp.backward_second_order_into(&fwd, self.loss, targets.get(sample_idx), &mut so)?;
            for (layer_idx, pool) in pooled.iter_mut().enumerate() {
                let curv = LayerCurvature::from_trace(&fwd, &so, layer_idx)
                    .with_context(|| format!("curvature of layer {layer_idx} at step {n_steps}"))?;
                // Negative beyond rounding: the exact zeros (e.g. the null vector 1 of the
                // softmax Hessian) come out of the eigensolver as ±1e-17-sized values.
                n_negative[layer_idx] += curv.n_negative_eigenvalues();
                pool.extend(curv.eigenvalues().iter());
            }
        }
        let mut row = vec![n_steps as f64, n_steps as f64 / self.n_batches as f64];
        let n_bins = self.config.tracking.n_bins;
        for (layer_idx, pool) in pooled.iter().enumerate() {
            let min = pool.iter().copied().fold(f64::INFINITY, f64::min);
            let max = pool.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let frac_neg = n_negative[layer_idx] as f64 / pool.len() as f64;
            row.extend([min, max, frac_neg]);
            let mut counts = vec![0.0; n_bins];
            for &e in pool {
                let t = (symlog(e) + SYMLOG_RANGE) / (2.0 * SYMLOG_RANGE) * n_bins as f64;
                counts[(t.max(0.0) as usize).min(n_bins - 1)] += 1.0;
            }
            self.append_row(&format!("curvature/layer{layer_idx}/histogram"), &counts);
            if let Some(tag) = tag {
                let path = format!("curvature/layer{layer_idx}/eigenvalues_{tag}");
                self.record.arrays.retain(|m| m.path != path);
                let values = Array2::from_shape_vec((1, pool.len()), pool.clone())
                    .expect("one row of pool.len() values");
                self.record.arrays.push(Matrix { path, values });
            }
        }
        self.record.curvature.push(&row);
        Ok(())
    }

    /// λ_max of the mean Hessian over the fixed tracking subset (Lanczos), every
    /// `[tracking] top_eigenvalue_every` steps, and at initialisation and the end (`force`;
    /// not twice for one step).
    fn track_top_eigenvalue(&mut self, mlp: &Mlp, n_steps: u64, force: bool) -> Result<()> {
        let every = self.config.tracking.top_eigenvalue_every;
        let Some(subset) = &self.top_subset else { return Ok(()) };
        let due = force || (every > 0 && n_steps.is_multiple_of(every));
        let done = self.record.top_eigenvalue.last("step") == Some(n_steps as f64);
        if !due || done {
            return Ok(());
        }
        let hessian = BatchHessian::new(mlp, self.loss, subset.features(), targets_of(subset))
            .with_context(|| {
                format!("the Hessian of the top-eigenvalue subset at step {n_steps}")
            })?;
        let options = LanczosOptions {
            tol: TOP_EIGENVALUE_TOL,
            max_iter: self.config.tracking.top_eigenvalue_iterations,
            seed: self.config.tracking.top_eigenvalue_seed,
        };
        let top = lanczos::eigenpairs(&hessian, 1, Which::Largest, &options)
            .with_context(|| format!("Lanczos for the top eigenvalue at step {n_steps}"))?;
        self.record.top_eigenvalue.push(&[
            n_steps as f64,
            n_steps as f64 / self.n_batches as f64,
            top.values[0],
            top.residual_norms[0],
            top.iterations as f64,
            self.learning_rate,
        ]);
        Ok(())
    }

    fn append_row(&mut self, path: &str, row: &[f64]) {
        let new_row = ndarray::ArrayView2::from_shape((1, row.len()), row).expect("one row");
        match self.record.arrays.iter_mut().find(|m| m.path == path) {
            Some(m) => {
                m.values = ndarray::concatenate(ndarray::Axis(0), &[m.values.view(), new_row])
                    .expect("histogram rows have n_bins columns");
            }
            None => self
                .record
                .arrays
                .push(Matrix { path: path.to_string(), values: new_row.to_owned() }),
        }
    }

    fn save_checkpoint(
        &mut self,
        progress: &Progress,
        mlp: &Mlp,
        optimizer: &dyn Optimizer,
    ) -> Result<()> {
        self.record.weights = weights_of(mlp);
        self.record.save(&self.results_path)?;
        failpoint("results-rename");
        let saved = SavedCheckpoint {
            checkpoint: Checkpoint {
                mlp: mlp.clone(),
                optimizer: optimizer.state(),
                progress: *progress,
            },
            train_seconds: self.train_seconds,
            config_toml: Some(self.record.config_toml.clone()),
            learning_rate: Some(self.learning_rate).filter(|r| r.is_finite()),
        };
        let text = serde_json::to_string(&saved).context("serialising the checkpoint")?;
        write_atomic(&self.checkpoint_path, &text)?;
        self.saved_at = Some(progress.n_steps);
        Ok(())
    }

    /// The signal that asks the run to stop, if one arrived.
    fn interrupted(&mut self) -> bool {
        match self.interrupt.load(Ordering::SeqCst) {
            0 => false,
            s => {
                self.stop_signal = Some(s);
                true
            }
        }
    }

    fn print_progress(&mut self, progress: &Progress, force: bool) {
        if !self.verbose {
            return;
        }
        let interval =
            if self.bar.is_some() { TTY_PRINT_INTERVAL_SECS } else { PRINT_INTERVAL_SECS };
        let now = Instant::now();
        if !force && self.last_print.is_some_and(|t| now.duration_since(t).as_secs_f64() < interval)
        {
            return;
        }
        self.last_print = Some(now);
        let total_steps = (self.config.train.epochs * self.n_batches) as f64;
        let done = progress.n_steps as f64;
        let rate = done * self.config.train.batch_size as f64 / self.train_seconds.max(1e-9);
        let eta = (total_steps - done) * self.train_seconds.max(1e-9) / done.max(1.0);
        let epoch = (progress.epoch + 1).min(self.config.train.epochs);
        let loss = self.loss_ema.unwrap_or(f64::NAN);
        if let Some(bar) = &self.bar {
            bar.set_position(progress.n_steps);
            bar.set_message(format!(
                "epoch {epoch}/{} loss {loss:.4} {rate:.0} samples/s",
                self.config.train.epochs
            ));
            return;
        }
        eprintln!(
            "{}: epoch {epoch}/{} step {}/{} loss {loss:.4} {rate:.0} samples/s ETA {eta:.0}s",
            self.config.run_name, self.config.train.epochs, progress.n_steps, total_steps as u64,
        );
    }

    fn finish_line(&mut self, what: &str) {
        if !self.verbose {
            return;
        }
        let acc = self.record.epochs.last("test_accuracy").unwrap_or(f64::NAN);
        let message =
            format!("{what} after {:.1}s of training, test accuracy {acc:.4}", self.train_seconds);
        match &self.bar {
            Some(bar) => bar.finish_with_message(message),
            None => eprintln!("{}: {message}", self.config.run_name),
        }
    }

    fn fail(&mut self, err: anyhow::Error) -> Control {
        self.failure = Some(err);
        Control::Stop
    }
}

impl Observer for Recorder<'_> {
    fn on_step(&mut self, progress: &Progress, report: &StepReport, mlp: &Mlp) -> Control {
        self.pause_clock();
        self.n_steps_done = progress.n_steps;
        self.loss_ema = Some(match self.loss_ema {
            None => report.loss,
            Some(ema) => 0.99 * ema + 0.01 * report.loss,
        });
        if report.step.is_multiple_of(self.config.train.log_every) {
            let mut row = vec![
                report.step as f64,
                report.loss,
                report.grad_norm,
                report.step_norm,
                report.cos_to_neg_grad.unwrap_or(f64::NAN),
                report.learning_rate,
            ];
            for layer_idx in 0..mlp.n_layers() {
                match report.layers.get(layer_idx) {
                    Some(l) => {
                        row.extend([l.min_eigenvalue, l.max_eigenvalue, l.n_negative as f64])
                    }
                    None => row.extend([f64::NAN; 3]),
                }
            }
            self.record.steps.push(&row);
        }
        let n_steps = progress.n_steps;
        let end_of_epoch = progress.batch_idx == self.n_batches;
        let every = self.config.train.eval_every;
        if every > 0
            && n_steps.is_multiple_of(every)
            && !end_of_epoch
            && let Err(e) = self.evaluate(mlp, n_steps, false)
        {
            return self.fail(e);
        }
        if !end_of_epoch && let Err(e) = self.track_curvature(mlp, n_steps, None) {
            return self.fail(e);
        }
        self.learning_rate = report.learning_rate;
        if let Err(e) = self.track_top_eigenvalue(mlp, n_steps, false) {
            return self.fail(e);
        }
        self.print_progress(progress, false);
        self.resume_clock();
        if failpoint("step") {
            // The signal thread records a signal shortly after it arrives: wait for it, so
            // that the hook interrupts at exactly this step.
            let start = Instant::now();
            while self.interrupt.load(Ordering::SeqCst) == 0
                && start.elapsed() < std::time::Duration::from_secs(10)
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        // At an epoch's last step the epoch end (evaluation, checkpoint) comes first.
        if !end_of_epoch && self.interrupted() {
            return Control::Stop;
        }
        Control::Continue
    }

    fn on_epoch_end(
        &mut self,
        progress: &Progress,
        mlp: &Mlp,
        optimizer: &dyn Optimizer,
    ) -> esso_optim::Result<Control> {
        self.pause_clock();
        let n_steps = progress.n_steps;
        let result = self
            .evaluate(mlp, n_steps, true)
            .and_then(|()| {
                let last = progress.epoch == self.config.train.epochs;
                if last { Ok(()) } else { self.track_curvature(mlp, n_steps, None) }
            })
            .and_then(|()| self.save_checkpoint(progress, mlp, optimizer));
        if let Err(e) = result {
            return Ok(self.fail(e));
        }
        self.epochs_this_session += 1;
        self.print_progress(progress, true);
        self.resume_clock();
        if progress.epoch < self.config.train.epochs && self.interrupted() {
            return Ok(Control::Stop);
        }
        if self.stop_after_epochs.is_some_and(|k| self.epochs_this_session >= k)
            && progress.epoch < self.config.train.epochs
        {
            if let Some(bar) = &self.bar {
                bar.abandon_with_message("stopped (resume with --resume)");
            }
            return Ok(Control::Stop);
        }
        Ok(Control::Continue)
    }
}

//! Experiment configs: TOML files under `experiments/`, `--set` overrides, sweeps and
//! validation (docs/experiments.md).
//!
//! ```toml
//! name = "digits-esso"
//! seeds = [0, 1]
//!
//! [data]
//! dataset = "digits"
//!
//! [model]
//! sizes = [64, 32, 16, 10]
//! activation = "tanh"
//!
//! [train]
//! epochs = 3
//!
//! [optimizer]
//! kind = "sgd"
//! lr = 0.05
//!
//! [sweep]
//! "optimizer.lr" = [0.01, 0.05]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use esso_core::{Activation, Init, Loss};
use esso_optim::OptimizerConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::tomlpath;

/// The `[data]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `digits`, `mnist`, `fashion-mnist`, `blobs`, `spirals` or `teacher`.
    pub dataset: String,
    /// Keep the first k training samples.
    #[serde(default)]
    pub train_first: Option<usize>,
    /// Keep k random training samples per class (seeded by `subset_seed`).
    #[serde(default)]
    pub train_per_class: Option<usize>,
    /// Keep the first k test samples.
    #[serde(default)]
    pub test_first: Option<usize>,
    /// Seed of the per-class draw (fixed across runs so every run sees the same data).
    #[serde(default)]
    pub subset_seed: u64,
    /// Standardise features with training statistics.
    #[serde(default)]
    pub standardize: bool,
}

/// The `[model]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Layer widths [n_0, …, n_L]; n_0 must equal the dataset's features and n_L its classes.
    pub sizes: Vec<usize>,
    /// Hidden activation.
    pub activation: Activation,
    /// Weight initialisation.
    #[serde(default)]
    pub init: Init,
    /// Loss (`cross_entropy` or `mse`).
    #[serde(default = "default_loss")]
    pub loss: Loss,
}

fn default_loss() -> Loss {
    Loss::CrossEntropy
}

/// The `[train]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per step.
    #[serde(default = "one")]
    pub batch_size: usize,
    /// Reshuffle every epoch.
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Steps between evaluations inside an epoch; 0 = at epoch ends only.
    #[serde(default)]
    pub eval_every: u64,
    /// Training loss and accuracy are measured on the first k training samples (0 = all).
    #[serde(default = "default_eval_train")]
    pub eval_train_samples: usize,
    /// Steps between rows of optimiser diagnostics (1 = every step).
    #[serde(default = "default_log_every")]
    pub log_every: u64,
}

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn default_eval_train() -> usize {
    10_000
}
fn default_log_every() -> u64 {
    100
}

/// The `[tracking]` table: exact per-layer curvature statistics during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    /// Steps between tracking points; 0 = only at initialisation and at the end.
    #[serde(default)]
    pub every: u64,
    /// Training samples (the first k) whose exact block eigenvalues are pooled; 0 = off.
    #[serde(default)]
    pub n_samples: usize,
    /// Histogram bins over sign(e)·log10(1 + |e|).
    #[serde(default = "default_bins")]
    pub n_bins: usize,
    /// Steps between measurements of the top eigenvalue of the mean Hessian over a fixed
    /// seeded training subset (Lanczos); 0 = off. Also measured at initialisation and at
    /// the end when on.
    #[serde(default)]
    pub top_eigenvalue_every: u64,
    /// Size of that subset (a seeded draw of the training set, the same for every run of
    /// the experiment, see [`crate::analysis::sample_subset`]; 0 = the whole training set).
    #[serde(default = "default_top_samples")]
    pub top_eigenvalue_samples: usize,
    /// Lanczos iterations per measurement.
    #[serde(default = "default_top_iterations")]
    pub top_eigenvalue_iterations: usize,
    /// Seed of the subset draw and of the Lanczos start vector.
    #[serde(default)]
    pub top_eigenvalue_seed: u64,
}

fn default_bins() -> usize {
    60
}
fn default_top_samples() -> usize {
    256
}
fn default_top_iterations() -> usize {
    20
}

impl Default for TrackingConfig {
    fn default() -> Self {
        TrackingConfig {
            every: 0,
            n_samples: 0,
            n_bins: default_bins(),
            top_eigenvalue_every: 0,
            top_eigenvalue_samples: default_top_samples(),
            top_eigenvalue_iterations: default_top_iterations(),
            top_eigenvalue_seed: 0,
        }
    }
}

/// One fully resolved run: an experiment file with its sweep values and one seed applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Experiment name.
    pub name: String,
    /// This run's name: the experiment name, sweep values and seed.
    pub run_name: String,
    /// Output folder of the experiment.
    pub output: PathBuf,
    /// The seed of initialisation and sample order.
    pub seed: u64,
    /// `[data]`.
    pub data: DataConfig,
    /// `[model]`.
    pub model: ModelConfig,
    /// `[train]`.
    pub train: TrainSection,
    /// `[tracking]`.
    #[serde(default)]
    pub tracking: TrackingConfig,
    /// `[optimizer]`.
    pub optimizer: OptimizerConfig,
}

impl RunConfig {
    /// The run's resolved config as TOML (stored in the results file).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# could not serialise: {e}"))
    }

    /// `<output>/<run_name>.h5`.
    pub fn results_path(&self) -> PathBuf {
        self.output.join(format!("{}.h5", self.run_name))
    }

    /// `<output>/<run_name>.checkpoint.json`.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.output.join(format!("{}.checkpoint.json", self.run_name))
    }
}

const TOP_KEYS: &[&str] = &[
    "name",
    "seeds",
    "output",
    "data",
    "model",
    "train",
    "tracking",
    "optimizer",
    "sweep",
    "profile",
];

/// The tables a sweep may vary (a key inside one, or the whole table).
const SWEEPABLE: &[&str] = &["data", "model", "train", "tracking", "optimizer"];

/// Largest experiment config file, in bytes: a config is a page of TOML, so anything much
/// larger is the wrong file and is refused before it is read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Most runs one experiment (sweep points × seeds) may expand to unless
/// [`LoadOptions::with_max_runs`] (`esso run --max-runs N`) raises the limit.
pub const DEFAULT_MAX_RUNS: u64 = 10_000;

/// Longest run name, in bytes: its files (`<run>.checkpoint.json` and the temporary and lock
/// names beside it) must fit in the 255 bytes a file name may have.
pub const MAX_RUN_NAME_BYTES: usize = 200;

/// Most `[profile.*]` tables in one file: every one is expanded and checked at load, so
/// their number bounds the work of loading (with [`DEFAULT_MAX_RUNS`] runs each).
pub const MAX_PROFILES: usize = 64;

/// Most bins of a curvature histogram (`[tracking] n_bins`).
pub const MAX_BINS: usize = 100_000;

/// How [`Experiment::load_with`] treats what is not in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Refuse an experiment of more runs than this (counted before anything is expanded).
    pub max_runs: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { max_runs: DEFAULT_MAX_RUNS }
    }
}

impl LoadOptions {
    /// The same options with another run limit.
    pub fn with_max_runs(mut self, max_runs: u64) -> Self {
        self.max_runs = max_runs;
        self
    }
}

/// An experiment file parsed, overridden and expanded into its runs.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// The experiment name.
    pub name: String,
    /// The runs, in a fixed order: sweep points (keys sorted, values in file order), then
    /// seeds.
    pub runs: Vec<RunConfig>,
}

impl Experiment {
    /// Reads `path`, applies the overrides of `[profile.NAME]` (when `profile` is given) and
    /// then `overrides` (`key=value`), expands sweeps and seeds, validates, with the default
    /// [`LoadOptions`].
    ///
    /// # Errors
    /// A message naming the file, the table, the key and the value at fault.
    pub fn load(path: &Path, profile: Option<&str>, overrides: &[String]) -> Result<Experiment> {
        Self::load_with(path, profile, overrides, &LoadOptions::default())
    }

    /// As [`Experiment::load`] with explicit options. A file above [`MAX_CONFIG_BYTES`] is
    /// refused before it is read.
    ///
    /// # Errors
    /// As [`Experiment::load`].
    pub fn load_with(
        path: &Path,
        profile: Option<&str>,
        overrides: &[String],
        options: &LoadOptions,
    ) -> Result<Experiment> {
        let text = read_config(path)?;
        Self::parse_with_options(&text, path, profile, overrides, options)
    }

    /// As [`Experiment::load`], from text; `path` is used in messages and for the default
    /// output folder's name only.
    ///
    /// # Errors
    /// As [`Experiment::load`].
    pub fn parse(text: &str, path: &Path, overrides: &[String]) -> Result<Experiment> {
        Self::parse_with_profile(text, path, None, overrides)
    }

    /// As [`Experiment::load`], from text.
    ///
    /// A profile is a table of dotted keys and values under `[profile.NAME]`, e.g.
    /// `[profile.quick]` with `"train.epochs" = 1`; its runs go to
    /// `results/runs/NAME/<experiment>` unless `output` is set.
    ///
    /// # Errors
    /// As [`Experiment::load`], and an unknown profile name.
    pub fn parse_with_profile(
        text: &str,
        path: &Path,
        profile: Option<&str>,
        overrides: &[String],
    ) -> Result<Experiment> {
        Self::parse_with_options(text, path, profile, overrides, &LoadOptions::default())
    }

    /// As [`Experiment::parse_with_profile`] with explicit options.
    ///
    /// Every variant of the file is checked, not only the one asked for: the file without a
    /// profile and with each `[profile.*]` (each with `overrides` applied last), so a broken
    /// profile is found before a long run of another. A variant not selected that exceeds
    /// the run limit has only its first run checked.
    ///
    /// # Errors
    /// As [`Experiment::load`]; a selected variant of more than `options.max_runs` runs,
    /// naming the count; run names that repeat (duplicate seeds, duplicate sweep values or
    /// sweep labels that read alike), that are too long for a file name, or that could leave
    /// the output folder.
    pub fn parse_with_options(
        text: &str,
        path: &Path,
        profile: Option<&str>,
        overrides: &[String],
        options: &LoadOptions,
    ) -> Result<Experiment> {
        let file = path.display().to_string();
        let mut table: Table = text.parse().map_err(|e| anyhow!("{file}: invalid TOML: {e}"))?;
        let profiles = match table.remove("profile") {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(other) => {
                bail!("{file}: `profile` must be a table of profiles, got a {}", other.type_str())
            }
        };
        if profiles.len() > MAX_PROFILES {
            bail!(
                "{file}: {} [profile.*] tables, more than the {MAX_PROFILES} a config may have",
                profiles.len()
            );
        }
        for (name, entries) in &profiles {
            if !entries.is_table() {
                bail!("{file}: [profile.{name}] must be a table of \"dotted.key\" = value");
            }
        }
        if let Some(profile) = profile
            && !profiles.contains_key(profile)
        {
            let names: Vec<&str> = profiles.keys().map(String::as_str).collect();
            bail!(
                "{file}: no [profile.{profile}] (profiles here: {})",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            );
        }
        let variant = Variant { base: &table, profiles: &profiles, path, file: &file, overrides };
        let experiment = variant.expand(profile, options, true)?;
        let others = std::iter::once(None)
            .chain(profiles.keys().map(|p| Some(p.as_str())))
            .filter(|&p| p != profile);
        for other in others {
            variant.expand(other, options, false)?;
        }
        Ok(experiment)
    }
}

/// Reads an experiment config, refusing one above [`MAX_CONFIG_BYTES`] before reading it
/// (and, for a device or a file that grows, after reading one byte more).
fn read_config(path: &Path) -> Result<String> {
    use std::io::Read;
    let shown = path.display();
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read experiment config {shown}"))?;
    let too_big = |size: String| {
        anyhow!(
            "experiment config {shown} holds {size}: a config may have at most \
             {MAX_CONFIG_BYTES} bytes; is it the right file?"
        )
    };
    let len =
        file.metadata().with_context(|| format!("cannot read experiment config {shown}"))?.len();
    if len > MAX_CONFIG_BYTES {
        return Err(too_big(format!("{len} bytes")));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read experiment config {shown}"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big(format!("more than {MAX_CONFIG_BYTES} bytes")));
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "experiment config {shown} is not UTF-8 text (invalid byte at offset {}): is it \
             the right file?",
            e.utf8_error().valid_up_to()
        )
    })
}

/// One file with its profiles and the command line's overrides, from which each variant
/// (no profile, or one profile) is expanded.
struct Variant<'a> {
    base: &'a Table,
    profiles: &'a Table,
    path: &'a Path,
    file: &'a str,
    overrides: &'a [String],
}

impl Variant<'_> {
    /// The runs of the file under `profile`. With `selected` false the result is only a
    /// check: a variant above the run limit has just its first run resolved.
    fn expand(
        &self,
        profile: Option<&str>,
        options: &LoadOptions,
        selected: bool,
    ) -> Result<Experiment> {
        let file = match profile {
            Some(p) => format!("{} [profile.{p}]", self.file),
            None => self.file.to_string(),
        };
        let file = file.as_str();
        let mut table = self.base.clone();
        if let Some(profile) = profile
            && let Some(Value::Table(entries)) = self.profiles.get(profile)
        {
            for (key, value) in entries {
                tomlpath::set(&mut table, key, value.clone())
                    .with_context(|| format!("{file}: {}", tomlpath::shorten(key)))?;
            }
        }
        for assignment in self.overrides {
            let (key, value) = tomlpath::split_assignment(assignment)?;
            tomlpath::set(&mut table, key, value)
                .with_context(|| format!("{file}: --set {}", tomlpath::shorten(assignment)))?;
        }
        if table.contains_key("profile") {
            bail!("{file}: profiles cannot be set by --set or by another profile");
        }
        for key in table.keys() {
            if !TOP_KEYS.contains(&key.as_str()) {
                let hint = suggestion(key, TOP_KEYS.iter().copied());
                bail!("{file}: unknown top-level key `{key}`{hint}");
            }
        }
        let name = match table.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(other) => {
                bail!("{file}: `name` must be a non-empty string, got a {}", other.type_str())
            }
            None => self
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .ok_or_else(|| anyhow!("{file}: no `name` and no file name to take it from"))?,
        };
        check_file_name(&name, "name", file)?;
        let seeds: Vec<u64> = match table.get("seeds") {
            None => vec![0],
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e| anyhow!("{file}: `seeds` must be a list of integers ≥ 0: {e}"))?,
        };
        if seeds.is_empty() {
            bail!("{file}: `seeds` is empty");
        }
        if let Some(seed) = first_repeat(&seeds) {
            bail!("{file}: `seeds` lists seed {seed} more than once: remove the repeat");
        }
        let output = match table.get("output") {
            None => match profile {
                Some(p) => PathBuf::from("results/runs").join(p).join(&name),
                None => PathBuf::from("results/runs").join(&name),
            },
            Some(Value::String(s)) => PathBuf::from(s),
            Some(other) => bail!("{file}: `output` must be a path string, got {other}"),
        };
        let sweep: BTreeMap<String, Vec<Value>> = match table.get("sweep") {
            None => BTreeMap::new(),
            Some(Value::Table(t)) => t
                .iter()
                .map(|(k, v)| match v {
                    Value::Array(values) if !values.is_empty() => Ok((k.clone(), values.clone())),
                    _ => Err(anyhow!("{file}: [sweep] `{k}` must be a non-empty list of values")),
                })
                .collect::<Result<_>>()?,
            Some(other) => bail!("{file}: `sweep` must be a table, got {other}"),
        };
        // Keys are checked against the schema (by resolving the runs), not against the keys
        // the file happens to spell out: a key left at its default can be swept.
        for (key, values) in &sweep {
            let top = key.split('.').next().unwrap_or(key);
            if !SWEEPABLE.contains(&top) {
                bail!(
                    "{file}: [sweep] `{}` cannot be swept: sweep keys are in [{}]{}",
                    tomlpath::shorten(key),
                    SWEEPABLE.join("], ["),
                    if top == "seeds" { " (list the seeds in `seeds`)" } else { "" }
                );
            }
            if let Some(value) = first_repeat(values) {
                bail!("{file}: [sweep] `{key}` lists {value} more than once: remove the repeat");
            }
        }

        let n_points =
            sweep.values().try_fold(1_u64, |n, values| n.checked_mul(values.len() as u64));
        let n_runs = n_points.and_then(|n| n.checked_mul(seeds.len() as u64));
        let over_limit = n_runs.is_none_or(|n| n > options.max_runs);
        if over_limit && selected {
            let count = match n_runs {
                Some(n) => n.to_string(),
                None => "more than 2^64".to_string(),
            };
            bail!(
                "{file}: the sweep and seeds make {count} runs ({}), more than the limit of {}: \
                 shrink the sweep, or raise the limit with --max-runs N",
                sweep
                    .iter()
                    .map(|(k, v)| format!("{} {k}", v.len()))
                    .chain(std::iter::once(format!("{} seeds", seeds.len())))
                    .collect::<Vec<_>>()
                    .join(" × "),
                options.max_runs
            );
        }
        let n_checked = if over_limit { 1 } else { n_runs.unwrap_or(1) };

        let mut base = table;
        for key in ["sweep", "seeds", "name", "output"] {
            base.remove(key);
        }
        let ctx = RunContext { file, name: &name, output: &output };
        let mut runs = Vec::with_capacity(usize::try_from(n_checked).unwrap_or(1));
        for index in 0..n_checked {
            let seed = seeds[(index % seeds.len() as u64) as usize];
            let point = sweep_point(&sweep, index / seeds.len() as u64);
            runs.push(ctx.run(&base, &point, seed)?);
        }
        check_unique(&runs, file)?;
        Ok(Experiment { name, runs })
    }
}

/// What every run of one variant shares.
struct RunContext<'a> {
    file: &'a str,
    name: &'a str,
    output: &'a Path,
}

impl RunContext<'_> {
    /// One run: the sweep point's values set into the base table, named, resolved.
    fn run(&self, base: &Table, point: &[(&str, &Value)], seed: u64) -> Result<RunConfig> {
        let file = self.file;
        let mut run_table = base.clone();
        let mut label = self.name.to_string();
        for &(key, value) in point {
            let (value, segment) = match value {
                // A table (e.g. a whole optimiser) is named by its `label` (removed
                // before validation) or else its `kind`.
                Value::Table(t) => {
                    let mut t = t.clone();
                    let tag = match t.remove("label") {
                        Some(Value::String(l)) => l,
                        Some(other) => {
                            bail!("{file}: [sweep] `{key}`: label must be a string, got {other}")
                        }
                        None => t
                            .get("kind")
                            .and_then(Value::as_str)
                            .map_or_else(|| key.replace('.', "_"), str::to_string),
                    };
                    (Value::Table(t), value_label(&Value::String(tag)))
                }
                other => {
                    let short = key.rsplit('.').next().unwrap_or(key);
                    (other.clone(), format!("{short}{}", value_label(other)))
                }
            };
            tomlpath::set(&mut run_table, key, value)
                .with_context(|| format!("{file}: [sweep] `{}`", tomlpath::shorten(key)))?;
            label.push('-');
            label.push_str(&segment);
        }
        let run_name = format!("{label}-seed{seed}");
        check_file_name(&run_name, "run name", file)?;
        resolve(&run_table, file, self.name, &run_name, self.output, seed)
    }
}

/// The sweep point at `index` of the cartesian product (keys in sorted order, the first key
/// varying slowest), without building the product.
fn sweep_point(sweep: &BTreeMap<String, Vec<Value>>, mut index: u64) -> Vec<(&str, &Value)> {
    let mut point: Vec<(&str, &Value)> = sweep
        .iter()
        .rev()
        .map(|(key, values)| {
            let n = values.len() as u64;
            let value = &values[(index % n) as usize];
            index /= n;
            (key.as_str(), value)
        })
        .collect();
    point.reverse();
    point
}

/// The first value that appears twice, compared by how it is written (a list may be as long
/// as a config file allows, so no pairwise comparison).
fn first_repeat<T: std::fmt::Display>(values: &[T]) -> Option<&T> {
    let mut seen = std::collections::HashSet::with_capacity(values.len());
    values.iter().find(|v| !seen.insert(v.to_string()))
}

/// Refuses a name that cannot be a file name in the output folder: too long, hidden (which
/// covers `..`), with a path separator or a control character.
fn check_file_name(name: &str, what: &str, file: &str) -> Result<()> {
    let fix = "use letters, digits, `-`, `_` and `.`";
    if name.len() > MAX_RUN_NAME_BYTES {
        bail!(
            "{file}: {what} {:?}… is {} bytes, more than the {MAX_RUN_NAME_BYTES} a run's \
             file names leave room for: shorten `name` or the sweep labels",
            name.chars().take(40).collect::<String>(),
            name.len()
        );
    }
    // With no separator and no leading `.`, no part of the name can be `..`.
    if name.contains(['/', '\\']) {
        bail!("{file}: {what} {name:?} could name a file outside the output folder: {fix}");
    }
    if name.starts_with('.') {
        bail!("{file}: {what} {name:?} starts with `.`, which hides its files: {fix}");
    }
    if name.chars().any(char::is_control) {
        bail!("{file}: {what} {name:?} holds a control character: {fix}");
    }
    Ok(())
}

/// Refuses runs whose names repeat, also up to case (their files would collide on a
/// case-insensitive file system).
fn check_unique(runs: &[RunConfig], file: &str) -> Result<()> {
    let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    let mut repeats: Vec<String> = Vec::new();
    for run in runs {
        if let Some(first) = seen.insert(run.run_name.to_lowercase(), &run.run_name) {
            if first == run.run_name {
                repeats.push(format!("`{first}`"));
            } else {
                repeats.push(format!("`{first}` and `{}`", run.run_name));
            }
        }
    }
    if !repeats.is_empty() {
        let n = repeats.len();
        repeats.truncate(5);
        bail!(
            "{file}: {n} run name(s) repeat, so their results would overwrite each other: {}{} \
             (sweep labels that read alike, or values that differ only in case or in \
             characters a name cannot hold): give each sweep value a distinct label",
            repeats.join(", "),
            if n > 5 { ", …" } else { "" }
        );
    }
    Ok(())
}

fn value_label(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
    .chars()
    .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' { c } else { '_' })
    .collect()
}

fn suggestion<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    tomlpath::closest(name, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// Rewrites serde's "unknown field `x`, expected one of `a`, `b`" (and unknown variants) with
/// a "did you mean" when a candidate is close.
fn improve_message(message: &str) -> String {
    let message = message.trim().trim_end_matches('\n').to_string();
    for marker in ["unknown field `", "unknown variant `"] {
        let Some(start) = message.find(marker) else { continue };
        let rest = &message[start + marker.len()..];
        let Some(end) = rest.find('`') else { continue };
        let unknown = &rest[..end];
        let candidates: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
        return format!("{message}{}", suggestion(unknown, candidates));
    }
    message
}

fn section<T: DeserializeOwned>(table: &Table, name: &str, file: &str) -> Result<T> {
    let value =
        table.get(name).cloned().ok_or_else(|| anyhow!("{file}: missing table [{name}]"))?;
    value.try_into().map_err(|e: toml::de::Error| {
        anyhow!("{file}: [{name}] {}", improve_message(&e.to_string()))
    })
}

fn resolve(
    table: &Table,
    file: &str,
    name: &str,
    run_name: &str,
    output: &Path,
    seed: u64,
) -> Result<RunConfig> {
    let data: DataConfig = section(table, "data", file)?;
    let model: ModelConfig = section(table, "model", file)?;
    let train: TrainSection = section(table, "train", file)?;
    let tracking: TrackingConfig = match table.get("tracking") {
        None => TrackingConfig::default(),
        Some(_) => section(table, "tracking", file)?,
    };
    let optimizer: OptimizerConfig = section(table, "optimizer", file)?;
    optimizer.validate().map_err(|e| anyhow!("{file}: [optimizer] {e}"))?;

    if esso_data::DatasetName::ALL.iter().all(|d| d.as_str() != data.dataset) {
        let names: Vec<&str> = esso_data::DatasetName::ALL.iter().map(|d| d.as_str()).collect();
        bail!(
            "{file}: [data] dataset = {:?} is not one of {}{}",
            data.dataset,
            names.join(", "),
            suggestion(&data.dataset, names.iter().copied())
        );
    }
    if data.train_first.is_some() && data.train_per_class.is_some() {
        bail!("{file}: [data] train_first and train_per_class exclude each other");
    }
    for (key, v) in [
        ("train_first", data.train_first),
        ("train_per_class", data.train_per_class),
        ("test_first", data.test_first),
    ] {
        if v == Some(0) {
            bail!("{file}: [data] {key} = 0 leaves no samples");
        }
    }
    if model.sizes.len() < 2 {
        bail!(
            "{file}: [model] sizes = {:?} needs at least an input and an output width",
            model.sizes
        );
    }
    if let Some(idx) = model.sizes.iter().position(|&n| n == 0) {
        bail!("{file}: [model] sizes[{idx}] = 0: widths must be ≥ 1");
    }
    if train.epochs == 0 {
        bail!("{file}: [train] epochs = 0: nothing would run");
    }
    if train.batch_size == 0 {
        bail!("{file}: [train] batch_size = 0: must be ≥ 1");
    }
    if train.log_every == 0 {
        bail!("{file}: [train] log_every = 0: must be ≥ 1");
    }
    if tracking.n_bins < 2 {
        bail!("{file}: [tracking] n_bins = {} must be ≥ 2", tracking.n_bins);
    }
    if tracking.top_eigenvalue_every > 0 && tracking.top_eigenvalue_iterations < 2 {
        bail!(
            "{file}: [tracking] top_eigenvalue_iterations = {} must be ≥ 2",
            tracking.top_eigenvalue_iterations
        );
    }
    if tracking.n_bins > MAX_BINS {
        bail!("{file}: [tracking] n_bins = {} is more than {MAX_BINS}", tracking.n_bins);
    }
    check_against_dataset(&data, &model, &train, file)?;

    Ok(RunConfig {
        name: name.to_string(),
        run_name: run_name.to_string(),
        output: output.to_path_buf(),
        seed,
        data,
        model,
        train,
        tracking,
        optimizer,
    })
}

/// The checks that need the dataset's shape ([`esso_data::DatasetInfo`]) but not its data:
/// what `prepare_data` and the first evaluation would otherwise find after the run started.
fn check_against_dataset(
    data: &DataConfig,
    model: &ModelConfig,
    train: &TrainSection,
    file: &str,
) -> Result<()> {
    let dataset: esso_data::DatasetName =
        data.dataset.parse().map_err(|e| anyhow!("{file}: [data] dataset: {e}"))?;
    let info = dataset.info();
    let sizes = &model.sizes;
    if sizes[0] != info.n_features {
        bail!(
            "{file}: [model] sizes[0] = {} but dataset {dataset} has {} features per sample: \
             make the first size {}",
            sizes[0],
            info.n_features,
            info.n_features
        );
    }
    let last = sizes.len() - 1;
    let n_out = sizes[last];
    // The runner trains against regression targets whenever the dataset has them, and
    // against class labels otherwise; each loss takes one kind only.
    match (model.loss, info.targets) {
        (Loss::CrossEntropy, esso_data::TargetKind::Classes) if n_out != info.n_classes => bail!(
            "{file}: [model] sizes[{last}] = {n_out} but dataset {dataset} has {} classes: make \
             the last size {}",
            info.n_classes,
            info.n_classes
        ),
        (Loss::CrossEntropy, esso_data::TargetKind::Values { width }) => bail!(
            "{file}: [model] loss = \"cross_entropy\" but dataset {dataset} has regression \
             targets ({width} per sample): set loss = \"mse\""
        ),
        (Loss::Mse, esso_data::TargetKind::Classes) => bail!(
            "{file}: [model] loss = \"mse\" needs regression targets but dataset {dataset} has \
             class labels only: set loss = \"cross_entropy\" (or use dataset = \"teacher\")"
        ),
        (Loss::Mse, esso_data::TargetKind::Values { width }) if n_out != width => bail!(
            "{file}: [model] sizes[{last}] = {n_out} but dataset {dataset} has {width} targets \
             per sample: make the last size {width}"
        ),
        _ => {}
    }
    let too_many = |key: &str, k: usize, what: String| {
        anyhow!("{file}: [data] {key} = {k} but dataset {dataset} has {what}: use at most that")
    };
    if let Some(k) = data.train_first
        && k > info.n_train
    {
        return Err(too_many("train_first", k, format!("{} training samples", info.n_train)));
    }
    if let Some(k) = data.test_first
        && k > info.n_test
    {
        return Err(too_many("test_first", k, format!("{} test samples", info.n_test)));
    }
    if let Some(k) = data.train_per_class
        && k > info.min_train_class_count
    {
        let what = format!("{} training samples in its rarest class", info.min_train_class_count);
        return Err(too_many("train_per_class", k, what));
    }
    let n_train = match (data.train_first, data.train_per_class) {
        (Some(k), _) => k,
        (None, Some(k)) => k.saturating_mul(info.n_classes),
        (None, None) => info.n_train,
    };
    let n_batches = n_train.div_ceil(train.batch_size);
    if train.epochs.checked_mul(n_batches).is_none_or(|n| u64::try_from(n).is_err()) {
        bail!(
            "{file}: [train] epochs = {} of {n_batches} steps each is more steps than can be \
             counted: use fewer epochs",
            train.epochs
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "t"
seeds = [0, 1]
[data]
dataset = "digits"
[model]
sizes = [64, 8, 10]
activation = "tanh"
[train]
epochs = 1
[optimizer]
kind = "sgd"
lr = 0.1
"#;

    fn parse(text: &str, overrides: &[&str]) -> Result<Experiment> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Experiment::parse(text, Path::new("exp.toml"), &overrides)
    }

    fn err(text: &str, overrides: &[&str]) -> String {
        format!("{:#}", parse(text, overrides).unwrap_err())
    }

    #[test]
    fn seeds_and_sweeps_expand_in_a_fixed_order() {
        let text =
            format!("{BASE}\n[sweep]\n\"optimizer.lr\" = [0.1, 0.3]\n\"train.epochs\" = [1, 2]\n");
        let exp = parse(&text, &[]).unwrap();
        let names: Vec<&str> = exp.runs.iter().map(|r| r.run_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "t-lr0.1-epochs1-seed0",
                "t-lr0.1-epochs1-seed1",
                "t-lr0.1-epochs2-seed0",
                "t-lr0.1-epochs2-seed1",
                "t-lr0.3-epochs1-seed0",
                "t-lr0.3-epochs1-seed1",
                "t-lr0.3-epochs2-seed0",
                "t-lr0.3-epochs2-seed1",
            ]
        );
        assert_eq!(exp.runs[7].train.epochs, 2);
        assert_eq!(exp.runs[0].output, PathBuf::from("results/runs/t"));
    }

    #[test]
    fn whole_tables_can_be_swept_and_profiles_override() {
        let text = format!(
            "{BASE}\n[sweep]\noptimizer = [{{ label = \"plain\", kind = \"sgd\", lr = 0.1 }}, \
             {{ kind = \"adam\", lr = 0.001 }}]\n[profile.quick]\n\"train.epochs\" = 5\n"
        );
        let exp =
            Experiment::parse_with_profile(&text, Path::new("e.toml"), Some("quick"), &[]).unwrap();
        let names: Vec<&str> = exp.runs.iter().map(|r| r.run_name.as_str()).collect();
        assert_eq!(names, ["t-plain-seed0", "t-plain-seed1", "t-adam-seed0", "t-adam-seed1"]);
        assert_eq!(exp.runs[2].optimizer.kind(), "adam");
        assert!(exp.runs.iter().all(|r| r.train.epochs == 5));
        assert_eq!(exp.runs[0].output, PathBuf::from("results/runs/quick/t"));
        let e = Experiment::parse_with_profile(&text, Path::new("e.toml"), Some("full"), &[])
            .unwrap_err();
        assert_eq!(e.to_string(), "e.toml: no [profile.full] (profiles here: quick)");
    }

    #[test]
    fn overrides_apply_before_validation() {
        let exp = parse(BASE, &["train.epochs=3", "model.activation=relu", "seeds=[5]"]).unwrap();
        assert_eq!(exp.runs.len(), 1);
        assert_eq!(exp.runs[0].seed, 5);
        assert_eq!(exp.runs[0].train.epochs, 3);
        assert_eq!(exp.runs[0].model.activation, Activation::Relu);
    }

    #[test]
    fn unknown_keys_are_named_with_their_table_and_a_suggestion() {
        let e = err(BASE, &["train.epoch=3"]);
        assert!(e.contains("exp.toml: [train] unknown field `epoch`"), "{e}");
        assert!(e.contains("did you mean `epochs`?"), "{e}");
        let e = err(BASE, &["optimzer.lr=1"]);
        assert_eq!(e, "exp.toml: unknown top-level key `optimzer` (did you mean `optimizer`?)");
        let e = err(BASE, &["optimizer.kind=adm"]);
        assert!(e.contains("[optimizer]") && e.contains("did you mean `adam`?"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = err(BASE, &["optimizer.lr=-1"]);
        assert!(
            e.starts_with("exp.toml: [optimizer]") && e.contains("-1") && e.contains("lr"),
            "{e}"
        );
        let e = err(BASE, &["data.dataset=mnsit"]);
        assert!(e.contains("dataset = \"mnsit\"") && e.contains("did you mean `mnist`?"), "{e}");
        assert!(err(BASE, &["model.sizes=[64]"]).contains("[model] sizes = [64]"));
        assert!(err(BASE, &["model.sizes=[64, 0, 10]"]).contains("sizes[1] = 0"));
        assert!(err(BASE, &["train.batch_size=0"]).contains("[train] batch_size = 0"));
        assert!(err(BASE, &["seeds=[]"]).contains("`seeds` is empty"));
        assert!(err("x = [", &[]).starts_with("exp.toml: invalid TOML"));
        assert!(err(BASE, &["sweep.\"model.depth\"=[1]"]).contains("[sweep]"));
        let e = err(BASE, &["tracking.top_eigenvalue_evry=10"]);
        assert!(
            e.contains("[tracking]") && e.contains("did you mean `top_eigenvalue_every`?"),
            "{e}"
        );
        let e = err(
            BASE,
            &["tracking.top_eigenvalue_every=10", "tracking.top_eigenvalue_iterations=1"],
        );
        assert!(e.contains("[tracking] top_eigenvalue_iterations = 1"), "{e}");
    }

    #[test]
    fn the_model_and_loss_are_checked_against_the_dataset() {
        let e = err(BASE, &["model.sizes=[63, 8, 10]"]);
        assert!(e.contains("[model] sizes[0] = 63") && e.contains("64 features"), "{e}");
        let e = err(BASE, &["model.sizes=[64, 8, 9]"]);
        assert!(e.contains("sizes[2] = 9") && e.contains("10 classes"), "{e}");
        let e = err(BASE, &["model.loss=mse"]);
        assert!(e.contains("loss = \"mse\"") && e.contains("class labels only"), "{e}");
        let teacher = ["data.dataset=teacher", "model.sizes=[8, 3]"];
        let e = err(BASE, &teacher);
        assert!(e.contains("cross_entropy") && e.contains("regression targets"), "{e}");
        let e = err(BASE, &[teacher[0], "model.sizes=[8, 4]", "model.loss=mse"]);
        assert!(e.contains("sizes[1] = 4") && e.contains("3 targets"), "{e}");
        parse(BASE, &[teacher[0], teacher[1], "model.loss=mse"]).unwrap();
        for (name, info) in esso_data::DatasetName::ALL.iter().map(|d| (d.as_str(), d.info())) {
            let last = match info.targets {
                esso_data::TargetKind::Values { width } => width,
                _ => info.n_classes,
            };
            let loss =
                if last == info.n_classes && name != "teacher" { "cross_entropy" } else { "mse" };
            let sizes = format!("model.sizes=[{}, 4, {last}]", info.n_features);
            let dataset = format!("data.dataset={name}");
            let loss = format!("model.loss={loss}");
            parse(BASE, &[&dataset, &sizes, &loss]).unwrap();
        }
    }

    #[test]
    fn subsets_larger_than_the_split_are_refused() {
        let e = err(BASE, &["data.train_first=1348"]);
        assert!(e.contains("train_first = 1348") && e.contains("1347 training samples"), "{e}");
        let e = err(BASE, &["data.test_first=451"]);
        assert!(e.contains("test_first = 451") && e.contains("450 test samples"), "{e}");
        let e = err(BASE, &["data.train_per_class=134"]);
        assert!(e.contains("train_per_class = 134") && e.contains("rarest class"), "{e}");
        parse(BASE, &["data.train_first=1347", "data.test_first=450"]).unwrap();
        parse(BASE, &["data.train_per_class=133"]).unwrap();
        let e =
            err(BASE, &["data.dataset=mnist", "model.sizes=[784, 10]", "data.train_first=60001"]);
        assert!(e.contains("60000 training samples"), "{e}");
        let e = err(BASE, &["train.epochs=100000000000000000"]);
        assert!(e.contains("[train] epochs = 100000000000000000"), "{e}");
        let e = err(BASE, &["tracking.n_bins=100000000000"]);
        assert!(e.contains("[tracking] n_bins = 100000000000"), "{e}");
    }

    #[test]
    fn run_names_stay_inside_the_output_folder_and_fit_a_file_name() {
        // Literal TOML strings ('…') keep the backslash; the last one is a TOML escape.
        let cases = [
            ("'../../x'", "outside the output folder"),
            ("'a/b'", "outside the output folder"),
            ("'a\\b'", "outside the output folder"),
            ("'..'", "starts with `.`"),
            ("'.hidden'", "starts with `.`"),
            ("\"a\\u0007b\"", "control character"),
        ];
        for (bad, reason) in cases {
            let e = err(BASE, &[&format!("name={bad}")]);
            assert!(e.starts_with("exp.toml: name ") && e.contains(reason), "{bad}: {e}");
        }
        let long = "n".repeat(MAX_RUN_NAME_BYTES);
        let e = err(BASE, &[&format!("name={long}")]);
        assert!(e.contains("bytes") && e.contains(&MAX_RUN_NAME_BYTES.to_string()), "{e}");
        // The run name adds `-seed0`: the check is on what becomes the file name.
        let fits = "n".repeat(MAX_RUN_NAME_BYTES - "-seed1".len());
        parse(BASE, &[&format!("name={fits}")]).unwrap();
        // Sweep labels lose their separators: `../x` becomes the harmless `.._x`.
        let text = format!(
            "{BASE}[sweep]\noptimizer = [{{ label = \"../x\", kind = \"sgd\", lr = 0.1 }}]\n"
        );
        let exp = parse(&text, &[]).unwrap();
        assert_eq!(exp.runs[0].results_path(), PathBuf::from("results/runs/t/t-.._x-seed0.h5"));
    }

    #[test]
    fn duplicate_runs_are_an_error_naming_them() {
        let e = err(BASE, &["seeds=[0, 1, 0]"]);
        assert!(e.contains("`seeds` lists seed 0 more than once"), "{e}");
        // Long lists are checked in linear time and not echoed back.
        let many: Vec<String> = (0..100_000).map(|i| (i % 50_000).to_string()).collect();
        let e = err(BASE, &[&format!("seeds=[{}]", many.join(","))]);
        assert!(e.ends_with("lists seed 0 more than once: remove the repeat") && e.len() < 200);
        let e = err(&format!("{BASE}[sweep]\n\"optimizer.lr\" = [0.1, 0.2, 0.1]\n"), &[]);
        assert!(e.contains("`optimizer.lr` lists 0.1 more than once"), "{e}");
        let alike = format!(
            "{BASE}[sweep]\noptimizer = [{{ label = \"a b\", kind = \"sgd\", lr = 0.1 }}, \
             {{ label = \"a_b\", kind = \"sgd\", lr = 0.2 }}]\n"
        );
        let e = err(&alike, &[]);
        assert!(e.contains("repeat") && e.contains("`t-a_b-seed0`"), "{e}");
        let case = format!(
            "{BASE}[sweep]\noptimizer = [{{ label = \"A\", kind = \"sgd\", lr = 0.1 }}, \
             {{ label = \"a\", kind = \"sgd\", lr = 0.2 }}]\n"
        );
        let e = err(&case, &[]);
        assert!(e.contains("`t-A-seed0` and `t-a-seed0`"), "{e}");
    }

    #[test]
    fn keys_left_at_their_default_can_be_swept() {
        let text = format!(
            "{BASE}[sweep]\n\"train.shuffle\" = [true, false]\n\"tracking.n_bins\" = [10]\n"
        );
        let exp = parse(&text, &[]).unwrap();
        assert_eq!(exp.runs.len(), 4);
        assert!(!exp.runs[2].train.shuffle);
        assert_eq!(exp.runs[0].tracking.n_bins, 10);
        let e = err(&format!("{BASE}[sweep]\n\"train.shufle\" = [true]\n"), &[]);
        assert!(e.contains("did you mean `shuffle`?"), "{e}");
        let e = err(&format!("{BASE}[sweep]\nseeds = [[1], [2]]\n"), &[]);
        assert!(e.contains("`seeds` cannot be swept"), "{e}");
    }

    fn huge_sweep(n_keys: usize) -> String {
        let keys = ["train.log_every", "train.eval_every", "tracking.every", "data.subset_seed"];
        let mut text = format!("{BASE}[sweep]\n");
        for i in 0..n_keys {
            // Distinct keys: numbered copies of a few real ones are not needed to count.
            let key = keys[i % keys.len()];
            let key = if i < keys.len() { key.to_string() } else { format!("{key}{i}") };
            text.push_str(&format!("\"{key}\" = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"));
        }
        text
    }

    #[test]
    fn sweeps_are_counted_before_they_are_expanded() {
        let start = std::time::Instant::now();
        let e = err(&huge_sweep(7), &[]);
        assert!(e.contains("make 20000000 runs") && e.contains("--max-runs"), "{e}");
        let e = err(&huge_sweep(30), &[]);
        assert!(e.contains("more than 2^64 runs"), "{e}");
        // No expansion: counting is instant even in a debug build.
        assert!(start.elapsed().as_secs_f64() < 2.0, "{:?}", start.elapsed());
        let text = huge_sweep(1);
        let small = LoadOptions::default().with_max_runs(19);
        let e = Experiment::parse_with_options(&text, Path::new("e.toml"), None, &[], &small)
            .unwrap_err();
        assert!(e.to_string().contains("make 20 runs"), "{e}");
        let exact = LoadOptions::default().with_max_runs(20);
        let exp =
            Experiment::parse_with_options(&text, Path::new("e.toml"), None, &[], &exact).unwrap();
        assert_eq!(exp.runs.len(), 20);
    }

    #[test]
    fn every_profile_is_checked_not_only_the_selected_one() {
        let text = format!(
            "{BASE}[profile.quick]\n\"train.epochs\" = 1\n[profile.broken]\n\"data.train_first\" = 99999\n"
        );
        for profile in [None, Some("quick")] {
            let e = Experiment::parse_with_profile(&text, Path::new("e.toml"), profile, &[])
                .unwrap_err();
            let e = format!("{e:#}");
            assert!(e.starts_with("e.toml [profile.broken]: [data] train_first = 99999"), "{e}");
        }
        let many: String =
            (0..=MAX_PROFILES).map(|i| format!("[profile.p{i}]\n\"train.epochs\" = 1\n")).collect();
        let e = err(&format!("{BASE}{many}"), &[]);
        assert!(e.contains("65 [profile.*] tables, more than the 64"), "{e}");
        let e = err(&format!("{BASE}[profile.typo]\n\"train.epoch\" = 1\n"), &[]);
        assert!(e.contains("[profile.typo]") && e.contains("did you mean `epochs`?"), "{e}");
        // The file without a profile is checked when a profile is selected.
        let text = format!("{BASE}[profile.quick]\n\"data.train_first\" = 10\n");
        let e = Experiment::parse_with_profile(
            &text,
            Path::new("e.toml"),
            Some("quick"),
            &["data.test_first=20".to_string()],
        )
        .unwrap();
        assert_eq!(e.runs[0].data.train_first, Some(10));
        let broken_base = text.replace("sizes = [64, 8, 10]", "sizes = [64, 8, 11]");
        assert!(
            Experiment::parse_with_profile(&broken_base, Path::new("e.toml"), Some("quick"), &[])
                .is_err()
        );
        // A variant above the run limit that is not selected does not need --max-runs.
        let text = format!(
            "{}[profile.quick]\nsweep = {{ \"optimizer.lr\" = [0.1, 0.2] }}\n",
            huge_sweep(4)
        );
        let e = Experiment::parse_with_profile(&text, Path::new("e.toml"), None, &[]).unwrap_err();
        assert!(e.to_string().contains("make 20000 runs"), "{e}");
        let exp =
            Experiment::parse_with_profile(&text, Path::new("e.toml"), Some("quick"), &[]).unwrap();
        assert_eq!(exp.runs.len(), 4);
    }

    #[test]
    fn oversized_config_files_are_refused_before_they_are_read() {
        let dir = std::env::temp_dir().join(format!("esso-config-size-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.toml");
        let file = std::fs::File::create(&big).unwrap();
        // Sparse: the size is what is refused, before a byte is read.
        file.set_len(50_000_000).unwrap();
        let e = format!("{:#}", Experiment::load(&big, None, &[]).unwrap_err());
        assert!(
            e.contains("big.toml holds 50000000 bytes: a config may have at most 1048576"),
            "{e}"
        );
        // A device reports no size: it is read up to one byte past the limit.
        let zero = Path::new("/dev/zero");
        if zero.exists() {
            let e = format!("{:#}", Experiment::load(zero, None, &[]).unwrap_err());
            assert!(e.contains("/dev/zero holds more than 1048576 bytes"), "{e}");
        }
        let binary = dir.join("bin.toml");
        std::fs::write(&binary, [b'a', 0xff, b'b']).unwrap();
        let e = format!("{:#}", Experiment::load(&binary, None, &[]).unwrap_err());
        assert!(e.contains("not UTF-8") && e.contains("offset 1"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

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
    /// then `overrides` (`key=value`), expands sweeps and seeds, validates.
    ///
    /// # Errors
    /// A message naming the file, the table, the key and the value at fault.
    pub fn load(path: &Path, profile: Option<&str>, overrides: &[String]) -> Result<Experiment> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read experiment config {}", path.display()))?;
        Self::parse_with_profile(&text, path, profile, overrides)
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
        let file = path.display();
        let mut table: Table = text.parse().map_err(|e| anyhow!("{file}: invalid TOML: {e}"))?;
        let profiles = match table.remove("profile") {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(other) => bail!("{file}: `profile` must be a table of profiles, got {other}"),
        };
        if let Some(profile) = profile {
            let Some(entries) = profiles.get(profile) else {
                let names: Vec<&str> = profiles.keys().map(String::as_str).collect();
                bail!(
                    "{file}: no [profile.{profile}] (profiles here: {})",
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                );
            };
            let Value::Table(entries) = entries else {
                bail!("{file}: [profile.{profile}] must be a table of \"dotted.key\" = value");
            };
            for (key, value) in entries {
                tomlpath::set(&mut table, key, value.clone())
                    .with_context(|| format!("{file}: [profile.{profile}] {key}"))?;
            }
        }
        for assignment in overrides {
            let (key, value) = tomlpath::split_assignment(assignment)?;
            tomlpath::set(&mut table, key, value).with_context(|| format!("--set {assignment}"))?;
        }
        for key in table.keys() {
            if !TOP_KEYS.contains(&key.as_str()) {
                let hint = suggestion(key, TOP_KEYS.iter().copied());
                bail!("{file}: unknown top-level key `{key}`{hint}");
            }
        }
        let name = match table.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(other) => bail!("{file}: `name` must be a non-empty string, got {other}"),
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .ok_or_else(|| anyhow!("{file}: no `name` and no file name to take it from"))?,
        };
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
        for key in sweep.keys() {
            if tomlpath::get(&table, key).is_none() && !key.starts_with("optimizer.") {
                bail!("{file}: [sweep] `{key}` is not a key of this config");
            }
        }

        let mut runs = Vec::new();
        for point in sweep_points(&sweep) {
            for &seed in &seeds {
                let mut run_table = table.clone();
                for key in ["sweep", "seeds", "name", "output"] {
                    run_table.remove(key);
                }
                let mut label = name.clone();
                for (key, value) in &point {
                    let (value, segment) = match value {
                        // A table (e.g. a whole optimiser) is named by its `label` (removed
                        // before validation) or else its `kind`.
                        Value::Table(t) => {
                            let mut t = t.clone();
                            let tag = match t.remove("label") {
                                Some(Value::String(l)) => l,
                                Some(other) => bail!(
                                    "{file}: [sweep] `{key}`: label must be a string, got {other}"
                                ),
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
                    tomlpath::set(&mut run_table, key, value)?;
                    label.push('-');
                    label.push_str(&segment);
                }
                let run_name = format!("{label}-seed{seed}");
                let run = resolve(&run_table, &file.to_string(), &name, &run_name, &output, seed)?;
                runs.push(run);
            }
        }
        Ok(Experiment { name, runs })
    }
}

/// The cartesian product of the sweep, keys in sorted order.
fn sweep_points(sweep: &BTreeMap<String, Vec<Value>>) -> Vec<Vec<(String, Value)>> {
    let mut points: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for (key, values) in sweep {
        points = points
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push((key.clone(), v.clone()));
                    q
                })
            })
            .collect();
    }
    points
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
}
